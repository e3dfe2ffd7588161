"""Rootless: a relay enters the user namespace, PID 1 is its child.

A user namespace has to be entered by a single-threaded process, so a
fresh fork of the caller (the relay) enters it (and all the others), forks
PID 1, tells the parent PID 1's host pid, and relays its exit status by
exiting the same way.  `Container.exec` (enter.py) relays the same way.
"""

from __future__ import annotations

import os
import resource  # imported here: after entering a container's root, no stdlib is left to import from
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
else:  # signal's C half, without signal.py's enums (enum, functools, collections: ~3 ms of `hermetic run`)
    import _signal as signal
if TYPE_CHECKING:  # typing is not imported at run time: it costs start-up
    from typing import Callable

    from .namespaces import UserNamespace
    from .config import ProcessConfig

from . import channel, init
from . import syscalls as sc
from .channel import Channel, describe, fail
from .fork import fork, release_signals
from .namespaces import CONTAINER_NAMESPACES


class UserMaps:
    """Lets the parent map the relay's user namespace (`UserNamespace.write_maps_from_outside`)."""

    def __init__(self) -> None:
        self.request = Channel()
        self.mapped = Channel()

    def child_wait_for_maps(self) -> None:
        self.request.send(channel.MAP_REQUEST)
        if not self.mapped.receive(channel.MAPPED):
            os._exit(125)

    def parent_side(self, pid: int, userns: UserNamespace) -> int:
        self.request.close_write()
        self.mapped.close_read()
        try:
            if self.request.receive(channel.MAP_REQUEST):
                userns.write_maps_from_outside(pid)
                self.mapped.send(channel.MAPPED)
        finally:
            self.request.close()
            self.mapped.close()
        return pid


_pid_fds: dict[int, int] = {}  # relay pid -> read end of the pipe that tells its PID 1


def start(config: ProcessConfig, target: Callable[[], int | None] | None, err_w: int, status_w: int | None,
          maps: UserMaps | None, joined: Channel | None) -> int:
    """Fork the relay; return its pid (in the parent only)."""
    relay_r, relay_w = os.pipe2(os.O_CLOEXEC)
    pid = fork()
    if pid != 0:
        os.close(relay_w)
        _pid_fds[pid] = relay_r
        return pid
    # The relay (single-threaded, a fresh fork); it must never return.
    try:
        _relay_main(config, target, err_w, status_w, maps, relay_r, relay_w, joined)
    finally:
        os._exit(125)


def _relay_main(config: ProcessConfig, target: Callable[[], int | None] | None, err_w: int, status_w: int | None,
                maps: UserMaps | None, relay_r: int, relay_w: int, joined: Channel | None) -> None:
    try:
        release_signals()  # (inside start's `finally: os._exit`: see fork.py)
        os.close(relay_r)
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        if config.userns_join is not None:
            fd = os.open(config.userns_join, os.O_RDONLY | os.O_CLOEXEC)
            sc.setns(fd, sc.CLONE_NEWUSER)  # already mapped: the network's own
            os.close(fd)
        else:
            sc.unshare(sc.CLONE_NEWUSER)
            if maps is not None:
                maps.child_wait_for_maps()
            else:
                config.userns.write_own_maps()  # type: ignore[union-attr]
        init.wait_attached(joined)
        sc.unshare(CONTAINER_NAMESPACES | sc.CLONE_NEWCGROUP | sc.CLONE_NEWPID)
        child = os.fork()
    except BaseException as exc:  # noqa: BLE001 - everything becomes a start error
        fail(err_w, 125, describe(exc))
    if child == 0:
        os.close(relay_w)  # the relay's word alone: no process of the container may write a pid there
        init.main(config, target, err_w, status_w, None, in_namespaces=True)
    if config.network_go is not None:
        config.network_go.close()
    os.close(err_w)
    if status_w is not None:
        os.close(status_w)
    os.write(relay_w, channel.PID.pack(child))
    os.close(relay_w)
    exit_as(child)


def pid1(relay_pid: int) -> int:
    """The host pid of the relay's PID 1 (`relay_pid` itself when it is no relay's)."""
    fd = _pid_fds.pop(relay_pid, None)
    if fd is None:
        return relay_pid
    # Exactly the pid, not up to EOF (the relay keeps the write end open).
    try:
        data = channel.read_exactly(fd, channel.PID.size)
    finally:
        os.close(fd)
    return channel.PID.unpack(data)[0] if len(data) == channel.PID.size else relay_pid


def exit_as(child: int) -> None:
    """Wait for PID 1 and end the same way, so the caller sees its status.

    Runs in a forked child: it must end in `os._exit` whatever happens, never
    return into the caller's stack."""
    try:
        _wait(child)
    finally:
        os._exit(125)


def _wait(child: int) -> None:
    init.forward_signals(child)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except ChildProcessError:
            os._exit(125)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if sig != signal.SIGKILL:  # (whose disposition cannot be set: it is always the default)
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
