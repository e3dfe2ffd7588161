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
no set-up or teardown of a wider scope (a module's fixture) and no test run
in place (`per_test.nothing_between`); else pytest stops it and forks a new
one.

The children are the zygote's: pytest watches each through a pidfd and asks
the zygote to reap it (`reap`).  The two talk over a socket pair, each order
answered in turn; both ends are this process's code, and the container's
processes never hold the socket (the child closes it first thing).
Root, the placeholder's PID namespace, and cgroups entered by the forking
thread (cgroup v1 and hybrid) or none: elsewhere pytest forks as before.
"""

from __future__ import annotations

import array
import gc
import os
import pickle
import select
import signal
import socket
from typing import Any, Callable

import pytest

from ..errors import HermeticError
from ..runtime import syscalls as sc
from ..runtime.config import ProcessConfig
from ..spec import Spec

_MAX_FDS = 250  # (SCM_RIGHTS takes up to 253 at once)


class Zygote:
    """pytest's end: one zygote per pytest process at a time."""

    def __init__(self, session: pytest.Session) -> None:
        from ..runtime import init, rootfs
        from ..runtime.fork import fork

        self.owner = os.getpid()
        self.valid_for: pytest.Item | None = None  # the one item it may serve next (see `for_item`)
        self._index = _index_of(session)
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
                ours.close()
                _hold_numbers_freed_at_fork(held)
                code = _serve(theirs, session.items)
            finally:
                os._exit(code)
        theirs.close()
        self.pid = pid
        self._sock = ours
        self.gone = False
        self._sent = self._read = 0  # orders sent, answers read
        self._answers: dict[int, tuple] = {}  # read, by ticket, not yet asked for

    def serves(self, item: pytest.Item) -> bool:
        return self.owner == os.getpid() and self.valid_for is item and id(item) in self._index

    def _ask(self, order: tuple, fds: list[int] | tuple = ()) -> Any:
        return self._answer(self._send(order, fds))

    def _send(self, order: tuple, fds: list[int] | tuple = ()) -> int:
        """Send `order`; its ticket: the zygote answers in order, and an
        answer read early (a fork's, while a reap was asked) waits for it."""
        data = pickle.dumps(order)
        try:
            if self.gone:
                raise OSError("it ended earlier")
            if fds:
                socket.send_fds(self._sock, [data], list(fds))
            else:
                self._sock.send(data)
        except BaseException as exc:
            self._end()
            raise HermeticError(f"hermetic: the zygote (pytest's fork that forks the tests) is gone: {exc}") from None
        self._sent += 1
        return self._sent

    def _answer(self, ticket: int) -> Any:
        while ticket not in self._answers:
            if self.gone:
                raise HermeticError("hermetic: the zygote (pytest's fork that forks the tests) is gone")
            try:
                reply = self._sock.recv(1 << 16)
            except BaseException:
                self._end()  # (a Ctrl-C here: its answer would come to the next question)
                raise
            if not reply:
                self._end()
                raise HermeticError("hermetic: the zygote (pytest's fork that forks the tests) is gone")
            self._read += 1
            self._answers[self._read] = pickle.loads(reply)  # (this process's fork: not a container's bytes)
        answer = self._answers.pop(ticket)
        if answer[0] == "error":
            raise HermeticError(f"hermetic: the zygote could not fork the test: {answer[1]}")
        return answer[1]

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
                return self._ask(("reap", pid))
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

    def stop(self) -> None:
        """Remove the containers of its children still pending, then end it."""
        if self.owner != os.getpid():
            return  # a fork's copy (a pytest session inside a test)
        from . import per_test

        per_test.finish_pending_of(self.reap)
        self._end()  # (EOF: it ends)
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


class _Fork:
    """One test's order to the zygote, as `process.spawn` calls it."""

    def __init__(self, zygote: Zygote, index: int, write_fd: int, undumpable: bool, env: dict[str, str] | None):
        self.zygote = zygote
        self.reap = zygote.reap
        self.order = (index, undumpable, env)
        self.write_fd = write_fd

    def __call__(self, config: ProcessConfig, err_w: int, cgroup_tasks: list[str]) -> Callable[[], tuple[int, int]]:
        """Send the order; return what gives (pid, placeholder pid) when
        spawn needs them (the zygote forks while pytest goes on)."""
        spare = sorted(config.spare.items()) if config.spare else []
        relayed = sorted(config.relayed.items())
        fds = [err_w, self.write_fd, *config.keep_fds, *(fd for _, fd in spare), *(w for _, w in relayed)]
        if len(fds) > _MAX_FDS:
            raise HermeticError("hermetic: too many descriptors to hand to the zygote")
        # Its own fields are what pytest's side of spawn() uses; the
        # child gets its descriptors' new numbers instead (`_child`).
        meanwhile, config.meanwhile = config.meanwhile, None
        try:
            blob = pickle.dumps(config)
        finally:
            config.meanwhile = meanwhile
        shape = (len(config.keep_fds), [kind for kind, _ in spare], [fd for fd, _ in relayed])
        ticket = self.zygote._send(("fork", blob, cgroup_tasks, shape, *self.order), fds)
        return lambda: self.zygote._answer(ticket)


_zygote: Zygote | None = None
_indexed: tuple[Any, int, dict[int, int]] | None = None  # (session, its item count, item id -> index)


def _index_of(session: pytest.Session) -> dict[int, int]:
    """Where each item of the session is in `session.items`, which a zygote
    shares (made once a session, not once a zygote: 33,000 items took ms)."""
    global _indexed
    if _indexed is None or _indexed[0] is not session or _indexed[1] != len(session.items):
        _indexed = (session, len(session.items), {id(item): i for i, item in enumerate(session.items)})
    return _indexed[2]


_enabled: tuple[Any, bool] | None = None  # (config, its `hermetic_zygote` ini option)


def may_serve(spec: Spec, config: pytest.Config) -> bool:
    """Whether the zygote forks tests of this per-test spec: as root, the
    `host` image, no network (the --hermetic default), unless the
    `hermetic_zygote` ini option says false."""
    global _enabled
    if _enabled is None or _enabled[0] is not config:
        _enabled = (config, config.getini("hermetic_zygote"))
    return _enabled[1] and spec.image == "host" and spec.net is False and os.geteuid() == 0


def for_item(item: pytest.Item) -> Zygote:
    """The zygote to fork `item`'s child: the current one where it serves
    `item`, else a new one forked now."""
    global _zygote
    if _zygote is not None and _zygote.serves(item):
        return _zygote
    stop()
    _zygote = Zygote(item.session)
    _zygote.valid_for = item
    return _zygote


def current() -> Zygote | None:
    return _zygote if _zygote is not None and _zygote.owner == os.getpid() else None


def stop() -> None:
    global _zygote
    zygote, _zygote = _zygote, None
    if zygote is not None:
        zygote.stop()


# -- the zygote's side ----------------------------------------------------------


def _hold_numbers_freed_at_fork(held: list[str]) -> None:
    """In the zygote: put /dev/null on each number that pytest held and a
    library's at-fork hook closed here (a poller it keeps per process).
    The hook runs again in each child, closing that number once more: it
    must not be one of the descriptors the zygote received for the child."""
    now = set(os.listdir("/proc/self/fd"))
    freed = [int(name) for name in held if name not in now]
    if freed:
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        for fd in freed:
            os.dup2(null, fd, inheritable=False)
        os.close(null)


def _serve(sock: socket.socket, items: list) -> int:
    """Fork and reap as pytest says, until it says stop (or goes)."""
    from ..runtime import cgroups, placeholder
    from ..runtime.fork import fork

    os.setpgid(0, 0)  # a terminal's Ctrl-C is pytest's to pass on (to the test), not ours
    # Never scanned by a child's garbage collector, which would otherwise
    # touch (and so copy) most of this memory (as start.start_child does
    # around pytest's own forks).
    gc.freeze()
    own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    # Each child's placeholder PID 1 (placeholder.py) is this process's
    # child too, started ahead here, between pytest's orders; pytest kills
    # it (by pid) when its container ends, and it is reaped here.
    placeholders: set[int] = set()
    while True:
        try:
            data, fds = _receive(sock)
        except OSError:
            data, fds = b"", []
        if not data:
            break  # pytest is gone, or said stop
        order = pickle.loads(data)  # (from pytest: this process's parent)
        reply: tuple
        if order[0] == "fork":
            pid = -1
            ready = None
            try:
                route = cgroups.ThreadRoute.for_paths(order[2]) if order[2] else None
                ready = placeholder.take()
                if ready is None:
                    placeholder.prepare()
                    ready = placeholder.take()
                if ready is None:
                    raise OSError("cannot start a placeholder PID 1")
                placeholders.add(ready[0])
                sc.setns(ready[1], sc.CLONE_NEWPID)  # the placeholder's: the child is its PID 2
                try:
                    if route is not None:
                        route.step_in()  # the child is born in its cgroups
                    pid = fork()
                finally:
                    if pid != 0:
                        if route is not None:
                            route.step_out()
                        sc.setns(own_pidns, sc.CLONE_NEWPID)
                if pid == 0:
                    os.close(own_pidns)  # (the host's: sealed anyway, but nothing of ours stays)
                    os.close(ready[1])
                    _child(sock, order, fds, items)
                reply = ("pid", (pid, ready[0]))
            except Exception as exc:  # noqa: BLE001 - pytest raises it as the test's start error
                reply = ("error", f"{type(exc).__name__}: {exc}")
                if ready is not None and pid == -1:
                    placeholder.end(ready[0])
                    placeholders.discard(ready[0])
            finally:
                if pid != 0:
                    for fd in fds:
                        os.close(fd)
                    if ready is not None:
                        os.close(ready[1])
        elif order[0] == "reap":
            try:
                reply = ("status", os.waitpid(order[1], 0)[1])
            except ChildProcessError as exc:
                reply = ("error", str(exc))
        else:  # "stop"
            break
        sock.send(pickle.dumps(reply))
        if order[0] == "fork":
            try:
                placeholder.prepare()  # the next one's, while pytest goes on
            except OSError:
                pass  # made at the next order then, or that order fails saying why
        for pid in list(placeholders):  # those pytest ended
            try:
                ended = os.waitpid(pid, os.WNOHANG) != (0, 0)
            except ChildProcessError:
                ended = True
            if ended:
                placeholders.discard(pid)
    # The end (pytest's, or pytest is gone): every placeholder killed first,
    # and its namespace with it; a placeholder's exit waits until each of
    # its namespace's processes is reaped, and a test's child is this
    # process's: so kill all, then reap all (an orphan's zombie would be
    # PID 1's to reap, and PID 1 may never).
    for pid in placeholders:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    placeholder.discard_ready()
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    return 0


def _receive(sock: socket.socket) -> tuple[bytes, list[int]]:
    """An order and its descriptors, close-on-exec as pytest's are: the
    placeholders exec'd here must not hold them (the set-up pipe's end
    would never close).  (socket.recv_fds drops its flags before 3.12.)"""
    data, ancillary, _, _ = sock.recvmsg(1 << 20, socket.CMSG_SPACE(_MAX_FDS * 4), socket.MSG_CMSG_CLOEXEC)
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    return data, list(fds)


def _child(sock: socket.socket, order: tuple, fds: list[int], items: list) -> None:
    """In the zygote's child: the container's PID 2, as `process.spawn`'s
    own fork would be (`init.worker_main`), with pytest's config and
    descriptors under this process's numbers."""
    from ..runtime import channel, init
    from . import start

    sock.close()
    err_w, write_fd, *rest = fds
    try:
        _, blob, _, (keep, spare_kinds, relayed_fds), index, undumpable, env = order
        config: ProcessConfig = pickle.loads(blob)
        config.keep_fds = tuple(rest[:keep])
        config.spare = dict(zip(spare_kinds, rest[keep:keep + len(spare_kinds)])) if spare_kinds else None
        config.relayed = dict(zip(relayed_fds, rest[keep + len(spare_kinds):]))
        config.relay_pipes = ()  # (pytest's read ends: none here)
        target = start.zygote_target(items[index], write_fd, config.keep_fds, undumpable, env)
    except BaseException as exc:  # noqa: BLE001 - the test's start error, in pytest
        channel.fail(err_w, 125, "the zygote's child: " + channel.describe(exc))
    init.worker_main(config, target, err_w, None)  # never returns
