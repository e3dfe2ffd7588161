"""Host files the caller holds open for writing reach a container only
through a pipe, which the caller copies into the file.

A regular file open for writing in the caller -- pytest's output sent to a
file (`pytest > ci.log`, the saved stdout of its capture), a `--log-file`,
`hermetic run ... > out.txt` -- would otherwise be that very host file in
the container, and root there has CAP_FOWNER, CAP_CHOWN and
CAP_DAC_OVERRIDE: `fchmod(fd, 0o4755)` after writing a program into a
root-owned log makes a setuid-root program on the host; `fchown`,
`ftruncate`, or a reopen through /proc/self/fd for reading reach it too.
Docker hands a container's output to its daemon through pipes for the
same reason.

So the caller makes one pipe per such descriptor before the fork
(`FileRelay.of`), the child puts the pipe's write end in the descriptor's
place (`descriptors.seal`), and the caller copies what comes through into
its own descriptor: same open file, so O_APPEND and the shared offset hold.
A descriptor the relay did not make a pipe for (opened meanwhile) is
/dev/null in the container instead.

Who copies: a caller that waits on its container in a loop of its own
(the pytest plugin, while a test runs) copies there (`pumped=False`:
`read_ends`, `copy`), so pytest gets no thread (a thread in a process that
forks makes Python 3.12+ warn at every later `os.fork`); for everyone else
one thread of the process does (`_Pump`).

In the container the descriptor is a pipe: writes reach the file in
order; seeking, reading or truncating it fail (ESPIPE, EBADF, EINVAL).
A pipe keeps a write whole up to PIPE_BUF (4 KiB), and a pipe is emptied
before the copier turns to another (`_copy_out`), so such a write reaches
the file whole beside other containers' writes to it; a longer one can be
cut by theirs (in place, an O_APPEND write is appended whole).
A file with no name left (`st_nlink == 0`: pytest's capture files, a log
deleted since) stays as it is: nothing can reach it by a path, so its
mode and owner matter to no one.
"""

from __future__ import annotations

import _thread
import fcntl
import os
import select
import stat

from . import syscalls as sc
from .descriptors import needs_relay

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterable


# Every live relay's own fds (read ends, copies of the caller's fds): the
# next container's scan of the caller's fds skips them.
_live: set[int] = set()


class FileRelay:
    """The pipes of one container's written host files, from its start to
    its end.  `child_ends` ({fd: write end}) goes to the child; the caller
    calls `started` once the child is forked, `flush` before writing to
    those files itself (pytest's report lines after a test's own), and
    `close` once the container is gone; unless `pumped`, also `copy` for
    each of `read_ends` that is ready, while the container runs."""

    def __init__(self, targets: list[int], pumped: bool = True) -> None:
        self.child_ends: dict[int, int] = {}
        self._targets: dict[int, int] = {}  # read end -> our own copy of the caller's fd
        self._pumped = pumped
        try:
            for fd in targets:
                # A copy of an fd already relayed (pytest's capture keeps
                # copies of its stdout's): the same pipe serves it.
                shared = next((other for other in self.child_ends if sc.same_open_file(fd, other)), None)
                if shared is not None:
                    self.child_ends[fd] = self.child_ends[shared]
                    continue
                # The same open file, on a number of our own: the caller may
                # close its fd once the container has started (subprocess's way).
                try:
                    own = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
                except OSError:  # closed meanwhile by another thread: the child blanks what is there then
                    continue
                try:
                    read, write = os.pipe2(os.O_CLOEXEC)
                except BaseException:
                    os.close(own)
                    raise
                self.child_ends[fd] = write
                self._targets[read] = own
                fcntl.fcntl(read, fcntl.F_SETFL, os.O_NONBLOCK)  # (the child's end blocks, as the file would)
        except BaseException:
            self._close_all()
            raise
        _live.update(self._targets, self._targets.values())
        # Waited on from now, before the fork: after it, pages this process
        # writes while the child lives are copies (the fork's tax).
        if pumped and self._targets:
            _pump().add(self._targets, self)

    @classmethod
    def of(cls, fds: Iterable[int], pumped: bool = True) -> FileRelay | None:
        """A relay for those of `fds` that need one (not the relays' own
        copies of earlier callers' files); None if none does."""
        targets = [fd for fd in fds if fd not in _live and needs_relay(fd)]
        relay = cls(targets, pumped) if targets else None
        return relay if relay is None or relay.child_ends else None

    def pipes(self) -> tuple[int, ...]:
        """Every fd of the relay, which the child closes once it has put
        the write ends in place (the read ends and the copies of the
        caller's fds are not the child's to keep)."""
        return (*self._targets, *set(self.child_ends.values()), *self._targets.values())

    def read_ends(self) -> list[int]:
        """Not `pumped`: the fds whose readiness calls for `copy`."""
        return [] if self._pumped else list(self._targets)

    def started(self) -> None:
        """The child has its write ends: close ours, so the pipes end when
        the container's last process does."""
        for write in set(self.child_ends.values()):
            os.close(write)
        self.child_ends = {}

    def copy(self, read: int) -> bool:
        """Not `pumped`: copy what `read` holds now; False once its pipe has
        ended (it is closed then: wait on it no more)."""
        target = self._targets.get(read)
        if target is None:
            return False
        if _copy_out(read, target):
            return True
        self._end(read)
        return False

    def flush(self) -> None:
        """The container's work is done (its PID 1 or its test ended): copy
        now whatever it wrote so far; what stragglers write after waits in
        the pipe until `close` (the thread is not woken for it, nor for the
        pipe's end: at a test's end that wake-up, and the lock it takes from
        pytest, were most of the relay's cost)."""
        if self._pumped:
            _pump().copy(list(self._targets), self, quiet=True)
        else:
            for read in list(self._targets):
                self.copy(read)

    def close(self) -> None:
        """Copy what is left and stop: the container's processes are gone
        (a straggler's later writes would get EPIPE)."""
        self.started()  # (if it never was: its write ends)
        if self._pumped:
            _pump().copy(list(self._targets), self, last=True)
        else:
            for read in list(self._targets):
                _copy_out(read, self._targets[read])
                self._end(read)
        self._targets = {}  # (closed, and out of _live, by the pump or here; a number another relay
        # holds by now is not this one's to take out)

    def _end(self, read: int) -> None:
        target = self._targets.pop(read)
        _live.difference_update((read, target))
        os.close(read)
        os.close(target)

    def _close_all(self) -> None:
        for fd in (*self._targets, *set(self.child_ends.values()), *self._targets.values()):
            os.close(fd)
        self.child_ends, self._targets = {}, {}


def _copy_out(read: int, target: int) -> bool:
    """Copy what the pipe `read` holds now into `target`; False at its end."""
    while True:
        try:
            data = os.read(read, 1 << 16)
        except BlockingIOError:
            return True
        if not data:
            return False
        _write_all(target, data)


class _Pump:
    """The caller's copying thread, for all its pumped relays: it waits on
    an epoll set of every read end (registered by the callers themselves,
    so a relay's start never wakes it) and copies what comes into the file.
    It runs only while there is a pipe to wait on, and the relay that takes
    the last one out waits for it to end: a process with a thread makes
    Python 3.12+ warn at each later `os.fork`.  Each read end and its target
    are owned by the table: whoever takes them out of `_targets` closes
    them.  A read end's number, closed at its pipe's end, may come back as
    another relay's: so each entry names its relay, and a relay's calls
    touch only its own."""

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._targets: dict[int, tuple[int, FileRelay]] = {}  # read end -> (copy of the caller's fd, relay)
        self._waited: set[int] = set()  # the read ends in the epoll set
        self._epoll = select.epoll()  # (close-on-exec)
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        _live.update((self._epoll.fileno(), self._wake_r, self._wake_w))
        self._running: Any = None  # a lock the thread holds while it runs

    def add(self, targets: dict[int, int], relay: FileRelay) -> None:
        with self._lock:
            for read, target in targets.items():
                self._targets[read] = (target, relay)
                self._epoll.register(read, select.EPOLLIN)
                self._waited.add(read)
            if self._running is None:
                running = _thread.allocate_lock()
                running.acquire()
                self._running = running
                _thread.start_new_thread(self._run, (running,))

    def copy(self, reads: list[int], relay: FileRelay, last: bool = False, quiet: bool = False) -> None:
        """Copy what `relay`'s pipes hold now; with `last`, end them; with
        `quiet`, stop waiting on them (the caller's `last` copy ends them).
        If that leaves nothing to wait on, the thread ends before this returns."""
        for read in reads:
            self._copy(read, relay, last, quiet)
        with self._lock:
            ending = self._running if not self._waited else None
        if ending is not None:
            _wake(self._wake_w)
            # Released by the thread as it ends (not at all if another of the
            # caller's threads added a pipe meanwhile: then it runs on).
            if ending.acquire(timeout=2):
                ending.release()

    def _run(self, running: Any) -> None:
        try:
            while True:
                for fd, _ in self._epoll.poll():
                    if fd == self._wake_r:
                        try:
                            os.read(self._wake_r, 512)
                        except BlockingIOError:
                            pass
                    else:
                        self._copy(fd, None)
                with self._lock:
                    if not self._waited:
                        self._running = None
                        return
        finally:
            running.release()

    def _copy(self, read: int, relay: FileRelay | None, last: bool = False, quiet: bool = False) -> None:
        """Copy what `read` holds now (if it is `relay`'s; None: whoever's);
        at its end (or with `last`), close it; with `quiet`, take it out of
        the epoll set."""
        with self._lock:
            entry = self._targets.get(read)
            if entry is None or relay is not None and entry[1] is not relay:  # ended (its number maybe reused)
                return
            target, waited = entry[0], read in self._waited
            if waited and (quiet or last):
                self._epoll.unregister(read)
                self._waited.discard(read)
            if not _copy_out(read, target) or last:
                del self._targets[read]
                if read in self._waited:
                    self._epoll.unregister(read)
                    self._waited.discard(read)
                _live.difference_update((read, target))
                os.close(read)
                os.close(target)


def _wake(fd: int) -> None:
    try:
        os.write(fd, b"x")
    except BlockingIOError:  # woken already
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except InterruptedError:
            continue
        except OSError:  # the file's own trouble (ENOSPC, EIO): the test's write already "succeeded"
            return


_the_pump: _Pump | None = None
_making = _thread.allocate_lock()


def _pump() -> _Pump:
    global _the_pump
    with _making:
        if _the_pump is None:
            _the_pump = _Pump()
        return _the_pump


def _forget_pump() -> None:
    """A fork has none of the caller's threads: a relay of its own starts anew."""
    global _the_pump, _making
    _the_pump, _making = None, _thread.allocate_lock()
    _live.clear()  # (the caller's relays' fds: the child closes or blanks them)


os.register_at_fork(after_in_child=_forget_pump)
