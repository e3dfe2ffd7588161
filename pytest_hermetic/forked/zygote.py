"""The zygote: a fork of pytest, made once, that forks the tests' children.

Every fork write-protects the forking process's whole memory, and each page
the forking process writes while a child shares it (a reference count is a
write) then costs it a page fault and a copy: about a thousand pages per test
in pytest, half of its own time per test (issue #16).  So pytest forks once,
this zygote, and asks it for each test's fork; pytest does all the rest of a
container's start (its cgroup, namespaces, placeholder PID 1, the pipes) as
before, without forking, so its pages stay its own.  The zygote runs as
little Python per fork as it can: it receives the order, steps into the
placeholder's PID namespace (its placeholder PID 1 is the zygote's, started
ahead, between orders) and the container's cgroups, forks, steps back.
The order's `ProcessConfig` is unpickled in the child only.

A test's child must see pytest as a fork made just before the test would:
the zygote is a copy of pytest made at some test, so it serves a later test
only while pytest has done nothing in between that the child would miss:
no set-up or teardown of a wider scope (a module's fixture) but a class's
or module's that does nothing (its child catches up: `compat.catch_up`),
and no test run in place (`per_test.nothing_between`); else pytest stops it
and forks a new one.

The children are the zygote's: pytest watches each through a pidfd and asks
the zygote to reap it (`reap`, or `reaped` without waiting).  The two talk
over a socket pair, each order answered in turn (but `close`); both ends are
this process's code (this module pytest's, zygote_process.py the zygote's),
and the container's processes never hold the socket (the child closes it
first thing).
Root, the placeholder's PID namespace, and cgroups entered by the forking
thread (cgroup v1 and hybrid) or none: elsewhere pytest forks as before.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import socket
from typing import Any, Callable

import pytest

from ..errors import HermeticError
from ..runtime.config import ProcessConfig
from ..spec import Spec
from . import per_test, zygote_process



_GONE = "hermetic: the zygote (pytest's fork that forks the tests) is gone"
# The items whose `location` a new zygote's children find worked out (see
# `_locate`): pytest's own work for them, done before their turn (~15 µs
# each), and lost only for those a session stopped early never runs.
LOCATED_AHEAD = 2000


class Zygote:
    """pytest's end: one zygote per pytest process at a time."""

    def __init__(self, session: pytest.Session, first: pytest.Item) -> None:
        from ..runtime import init, rootfs
        from ..runtime.fork import fork, release_signals

        self.owner = os.getpid()
        self.valid_for: pytest.Item | None = None  # the one item it may serve next (see `for_item`)
        self._index = per_test.index_of(session)
        at = self._index.get(id(first), len(session.items))
        _locate(session.items[at:at + LOCATED_AHEAD])
        # What spawn() would otherwise do before each fork of pytest: now
        # once, in the zygote's memory, which its children inherit.
        rootfs.kernelfs.prepare()
        init.prepare_callable()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        held = os.listdir("/proc/self/fd")
        pid = fork()
        if pid == 0:
            code = 1
            try:
                release_signals()  # (inside the `finally: os._exit`: see runtime/fork.py)
                ours.close()
                zygote_process.hold_numbers_freed_at_fork(held)
                code = zygote_process.serve(theirs, session.items)
            finally:
                os._exit(code)
        theirs.close()
        self.pid = pid
        self._sock = ours
        self.gone = False
        self._sent = self._read = 0  # orders sent, answers read
        self._answers: dict[int, tuple] = {}  # read, by ticket, not yet asked for
        self._reaping: dict[int, int] = {}  # child pid -> the ticket of its reap order

    def serves(self, item: pytest.Item) -> bool:
        return self.owner == os.getpid() and self.valid_for is item and id(item) in self._index

    def _ask(self, order: tuple, fds: list[int] | tuple = ()) -> Any:
        return self._answer(self._send(order, fds))

    def _send(self, order: tuple, fds: list[int] | tuple = (), answered: bool = True) -> int:
        """Send `order`; its ticket: the zygote answers in order (those
        `answered`), and an answer read early (a fork's, while a reap was
        asked) waits for it."""
        data = pickle.dumps(order)
        try:
            if self.gone:
                raise OSError("it ended earlier")
            if fds:
                socket.send_fds(self._sock, [data], list(fds))
            else:
                self._sock.send(data)
        except BaseException as exc:
            self._end()  # (whether it was sent is not known: its answer would come to the next question)
            if not isinstance(exc, OSError):
                raise
            raise HermeticError(f"{_GONE}: {exc}") from None
        if answered:
            self._sent += 1
        return self._sent

    def _answer(self, ticket: int) -> Any:
        self._read_answers(ticket, wait=True)
        answer = self._answers.pop(ticket)
        if answer[0] == "error":
            raise HermeticError(f"hermetic: the zygote could not fork the test: {answer[1]}")
        return answer[1]

    def _read_answers(self, ticket: int, wait: bool) -> bool:
        """Read answers until `ticket`'s is in; without `wait`, only those
        already there: whether it is in."""
        while ticket not in self._answers:
            if self.gone:
                if wait:
                    raise HermeticError(_GONE)
                return False
            try:
                reply = self._sock.recv(1 << 16, 0 if wait else socket.MSG_DONTWAIT)
                if reply:
                    self._answers[self._read + 1] = pickle.loads(reply)  # (this process's fork: not a container's bytes)
                    self._read += 1
            except BlockingIOError:
                return False
            except BaseException as exc:
                self._end()  # (an answer read but not kept would come to the next question)
                if wait or not isinstance(exc, OSError):
                    raise
                return False
            if not reply:
                self._end()
        return True

    def _end(self) -> None:
        """Let it go: it exits at EOF, and its children with it (each has
        PR_SET_PDEATHSIG, see init.worker_main)."""
        if not self.gone:
            self.gone = True
            self._sock.close()
            global _zygote
            if _zygote is self:
                _zygote = None

    def forker(self, item: pytest.Item, write_fd: int, undumpable: bool, env: dict[str, str] | None) -> "_Fork":
        """What `process.spawn` calls instead of forking (process.Forker):
        `item`'s child, forked here, runs `child.child_main` (after the word
        to go, where the config keeps a second fd: see start.start_child)."""
        return _Fork(self, self._index[id(item)], write_fd, undumpable, env)

    def reap(self, pid: int) -> int:
        """Wait for the zygote's child `pid`; its wait status (SIGKILL's,
        where the zygote is gone: its children die with it)."""
        if not self.gone:
            try:
                ticket = self._reaping.pop(pid, None)
                return self._answer(ticket if ticket is not None else self._send(("reap", pid)))
            except HermeticError:
                pass
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return signal.SIGKILL
        try:
            select.select([pidfd], [], [])
        finally:
            os.close(pidfd)
        return signal.SIGKILL

    def reaped(self, pid: int) -> int | None:
        """The wait status of the zygote's child `pid`, which has ended, if
        the zygote has answered; else None, and it is asked to reap it
        (once): pytest does not wait for the answer, which may come after
        the zygote's next fork and placeholder."""
        if self.gone:
            return self.reap(pid)
        ticket = self._reaping.get(pid)
        if ticket is None:
            self._reaping[pid] = self._send(("reap", pid))
            return None
        if not self._read_answers(ticket, wait=False):
            return None
        del self._reaping[pid]
        try:
            return self._answer(ticket)
        except HermeticError:
            return self.reap(pid)

    def close(self, fd: int) -> None:
        """Close `fd`, a mount namespace's, through the zygote: the last
        reference to one unmounts its tree, and the kernel then waits for an
        RCU grace period (~1 ms, for ~0.1 ms of CPU) that pytest would wait
        out between a test's start and its reports.  On its way to the
        zygote the descriptor holds the namespace, so pytest's close here
        is cheap; the zygote, off the tests' path, closes the last one."""
        try:
            if self.owner != os.getpid() or self.gone:
                raise HermeticError("not ours")
            self._send(("close",), [fd], answered=False)
        except HermeticError:
            pass
        os.close(fd)

    def stop(self) -> None:
        """Remove the containers of its children still pending, then end it."""
        if self.owner != os.getpid():
            return  # a fork's copy (a pytest session inside a test)
        per_test.finish_pending_of(self.reap)
        self._end()  # (EOF: it ends)
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


_PER_TEST = ("meanwhile", "cgroup_procs", "spare", "keep_fds", "relayed")  # (not pickled: see _Fork)


class _Fork:
    """One test's order to the zygote, as `process.spawn` calls it."""

    def __init__(self, zygote: Zygote, index: int, write_fd: int, undumpable: bool, env: dict[str, str] | None):
        self.zygote = zygote
        self.reap = zygote.reap
        self.reaped = zygote.reaped
        self.order = (index, undumpable, env)
        self.write_fd = write_fd

    def __call__(self, config: ProcessConfig, err_w: int, cgroup_tasks: list[str]) -> Callable[[], tuple[int, int]]:
        """Send the order; return what gives (pid, placeholder pid) when
        spawn needs them (the zygote forks while pytest goes on)."""
        spare = sorted(config.spare.items()) if config.spare else []
        relayed = sorted(config.relayed.items())
        fds = [err_w, self.write_fd, *config.keep_fds, *(fd for _, fd in spare), *(w for _, w in relayed)]
        if len(fds) > zygote_process.MAX_FDS:
            raise HermeticError("hermetic: too many descriptors to hand to the zygote")
        # Its own fields are what pytest's side of spawn() uses; the
        # child gets its descriptors' new numbers instead (`_child`), and
        # is born in its cgroups.  Without them the configuration of one
        # test is byte for byte the next one's, which the zygote then
        # unpickles once for all (zygote_process.Configs).
        own = {name: getattr(config, name) for name in _PER_TEST}
        try:
            for name in _PER_TEST:
                setattr(config, name, None)
            blob = pickle.dumps(config)
        finally:
            for name, value in own.items():
                setattr(config, name, value)
        shape = (len(config.keep_fds), [kind for kind, _ in spare], [fd for fd, _ in relayed])
        ticket = self.zygote._send(("fork", blob, cgroup_tasks, shape, *self.order), fds)
        return lambda: self.zygote._answer(ticket)


_zygote: Zygote | None = None
_enabled: tuple[Any, bool] | None = None  # (config, its `hermetic_zygote` ini option)


def may_serve(spec: Spec, config: pytest.Config) -> bool:
    """Whether the zygote forks tests of this per-test spec: as root, in any
    image, without a network (the --hermetic default) or on the host's bridge
    (`net=True`: pytest wires the namespaces it made ahead before the fork,
    process.spawn), unless the `hermetic_zygote` ini option says false.  Not
    on a named network: the test's own, made at its turn (a test waits for
    its services' network before its fork)."""
    global _enabled
    if _enabled is None or _enabled[0] is not config:
        _enabled = (config, config.getini("hermetic_zygote"))
    return _enabled[1] and (spec.net is False or spec.net is True) and os.geteuid() == 0


def for_item(item: pytest.Item) -> Zygote:
    """The zygote to fork `item`'s child: the current one where it serves
    `item`, else a new one forked now."""
    global _zygote
    if _zygote is not None and _zygote.serves(item):
        return _zygote
    stop()
    _zygote = Zygote(item.session, item)
    _zygote.valid_for = item
    return _zygote


def _locate(items: list[pytest.Item]) -> None:
    """Work out now, in pytest, each item's `location` (a cached property
    that pytest works out at the item's logstart anyway, and its report
    needs): else each test's child works its own out, running code and
    touching (so copying) pages nothing touched since the zygote's fork,
    ~0.3 ms of CPU a test (issue #16).  An error is left for pytest to
    raise where the item runs."""
    for item in items:
        try:
            item.location
        except Exception:  # noqa: BLE001 - pytest raises it where the item runs
            pass


def current() -> Zygote | None:
    return _zygote if _zygote is not None and _zygote.owner == os.getpid() else None


def stop() -> None:
    global _zygote
    zygote, _zygote = _zygote, None
    if zygote is not None:
        zygote.stop()
