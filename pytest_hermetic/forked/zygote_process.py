"""The zygote's own side (zygote.py is pytest's): the loop that forks the
tests' children and reaps them as pytest orders, each child's first steps
(its configuration and descriptors from the order, then the container's
set-up as `process.spawn`'s own fork would run it), and what the zygote
does once at its start."""

from __future__ import annotations

import array
import fcntl
import gc
import os
import pickle
import signal
import socket

from ..runtime import syscalls as sc
from ..runtime.config import ProcessConfig

MAX_FDS = 250  # descriptors in one order (SCM_RIGHTS takes up to 253 at once)


def hold_numbers_freed_at_fork(held: list[str]) -> None:
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


def serve(sock: socket.socket, items: list) -> int:
    """Fork and reap as pytest says, until it says stop (or goes)."""
    from ..runtime import cgroups, placeholder
    from ..runtime.fork import bare_fork, fork
    from . import interrupt, start

    os.setpgid(0, 0)  # a terminal's Ctrl-C is pytest's to pass on (to the test), not ours
    interrupt.in_fork()  # (forked where pytest defers a Ctrl-C) its children's as in place
    # Never scanned by a child's garbage collector, which would otherwise
    # touch (and so copy) most of this memory (as start.start_child does
    # around pytest's own forks).
    gc.freeze()
    own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    # Each child's placeholder PID 1 (placeholder.py) is this process's
    # child too, started ahead here, between pytest's orders; pytest kills
    # it (by pid) when its container ends, and it is reaped here.
    placeholders: set[int] = set()
    noted = start.noted_descriptors()  # (each child holds this process's descriptors)
    configs = Configs()
    fork_child = bare_fork() or fork  # (one thread, no code of the test's until the child: see bare_fork)
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
                config = configs.get(order[1])
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
                    pid = fork_child()
                finally:
                    if pid != 0:
                        if route is not None:
                            route.step_out()
                        sc.setns(own_pidns, sc.CLONE_NEWPID)
                if pid == 0:
                    os.close(own_pidns)  # (the host's: sealed anyway, but nothing of ours stays)
                    os.close(ready[1])
                    _child(sock, order, config, fds, items, noted)
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
        elif order[0] == "close":
            for fd in fds:
                os.close(fd)
            continue  # (not answered)
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
    data, ancillary, _, _ = sock.recvmsg(1 << 20, socket.CMSG_SPACE(MAX_FDS * 4), socket.MSG_CMSG_CLOEXEC)
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    return data, list(fds)


def make_room(fds: list[int], numbers: list[int]) -> list[int]:
    """`fds` (the order's descriptors, as received here), each that sits on
    one of `numbers` moved above them all; the list with the new numbers.

    The seal puts each relay's end on the number pytest's file has
    (file_relay.py), as in a fork of pytest made now.  This process is a
    fork of pytest made earlier: a file pytest opened since is not here, and
    its number may be one this process gave to a descriptor of the order
    (the test's word-to-go pipe, its reports' pipe), which the end put
    there would replace.  So those move first, and every relayed number
    gets its end, as pytest's own fork would."""
    taken = set(numbers)
    if not taken.intersection(fds):
        return fds
    above = max(taken) + 1
    copies: dict[int, int] = {}
    try:
        for fd in taken.intersection(fds):
            copies[fd] = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, above)  # (received close-on-exec: kept so)
    except BaseException:
        for copy in copies.values():  # (all or nothing: the originals stay as they were)
            os.close(copy)
        raise
    for fd in copies:
        os.close(fd)
    return [copies.get(fd, fd) for fd in fds]


class Configs:
    """The tests' configurations, unpickled here once: a session's tests
    mostly share one (pytest leaves out what is each test's own, see
    zygote._Fork), and a child that finds its configuration unpickled
    ahead in the memory it shares with this process skips the
    unpickling's new objects and first touches (~0.25 ms of CPU a test
    here, 3 sessions each way).  Each child fills in its own fields in
    its own copy; this one is never written here after it is made."""

    def __init__(self) -> None:
        self._blob = b""
        self._config: ProcessConfig | None = None

    def get(self, blob: bytes) -> ProcessConfig:
        if self._config is None or blob != self._blob:
            self._config = None  # (a bad blob raises with nothing kept)
            self._config = pickle.loads(blob)
            self._blob = blob
        return self._config


def _child(sock: socket.socket, order: tuple, config: ProcessConfig, fds: list[int], items: list,
           noted: tuple) -> None:
    """In the zygote's child: the container's PID 2, as `process.spawn`'s
    own fork would be (`init.worker_main`), with pytest's config and
    descriptors under this process's numbers; `noted`: the zygote's
    listeners and event loops (start.noted_descriptors)."""
    from ..runtime import channel, init
    from . import start

    sock.close()
    err_w = fds[0]
    try:
        _, _, cgroup_procs, (keep, spare_kinds, relayed_fds), index, undumpable, env = order
        err_w, write_fd, *rest = make_room(fds, relayed_fds)
        config.cgroup_procs = cgroup_procs
        config.keep_fds = tuple(rest[:keep])
        config.spare = dict(zip(spare_kinds, rest[keep:keep + len(spare_kinds)])) if spare_kinds else None
        config.relayed = dict(zip(relayed_fds, rest[keep + len(spare_kinds):]))
        config.relay_pipes = ()  # (pytest's read ends: none here)
        target = start.zygote_target(items[index], write_fd, config.keep_fds, undumpable, env, noted)
    except BaseException as exc:  # noqa: BLE001 - the test's start error, in pytest
        channel.fail(err_w, 125, "the zygote's child: " + channel.describe(exc))
    init.worker_main(config, target, err_w, None)  # never returns
