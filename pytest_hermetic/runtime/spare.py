"""Namespaces made ahead: the next container's network, IPC and UTS
namespaces, made by the parent while the current container runs.

Making a network namespace (with `lo` up) and an IPC namespace (with its
mqueue mount) takes 0.5-0.8 ms of the child's start, most of it waiting on
the kernel's locks rather than running.  The pytest plugin's parent is idle
while a test runs, so it makes the next test's three namespaces then
(`prepare`), and that test's child only `setns`es into them (`take`).

The IPC and UTS namespaces are always new, made for one container.  The
network namespace is new too, or one an earlier container of this process
gave back exactly as it was made (netns_reuse.py says what "exactly" checks
and why that is enough): `lend` hands it to the container's handle, which
gives it back once the container's PID namespace has ended.  The parent
enters a new set only for the moment it takes to make it and bring `lo` up,
in its own thread, and goes back.  Root only (a rootless child makes its
namespaces inside its own user namespace), for containers without a network
(`net=False`) or on a bridge that wires by namespace (`process.spawn` puts
the veth into the set before the fork; that network namespace is then
never given back).
"""

from __future__ import annotations

import os

from ..errors import ContainerStartError
from . import netns_reuse, network
from . import syscalls as sc
from .netns_reuse import Netns

KINDS = (("net", sc.CLONE_NEWNET), ("ipc", sc.CLONE_NEWIPC), ("uts", sc.CLONE_NEWUTS))
FLAGS = sc.CLONE_NEWNET | sc.CLONE_NEWIPC | sc.CLONE_NEWUTS

_spare: tuple[int, dict[str, int], Netns] | None = None  # (pid that made it, namespace fds, its network namespace)
_taken: tuple[dict[str, int], Netns] | None = None  # the set `take` handed out, until `lend`


def prepare() -> None:
    """Make the next container's namespaces, unless a set is waiting (root only)."""
    global _spare
    if os.geteuid() != 0 or (_spare is not None and _spare[0] == os.getpid()):
        return
    # Where this thread is now (asked each time: it may be in another
    # network namespace for a while, netns.entered), to come back to.
    own = {kind: os.open(f"/proc/thread-self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC) for kind, _ in KINDS}
    made: dict[str, int] = {}
    net = netns_reuse.take()  # a clean one given back: no new network namespace to make (or destroy)
    try:
        sc.unshare(FLAGS if net is None else FLAGS & ~sc.CLONE_NEWNET)
    except BaseException:
        discard(own)
        if net is not None:
            net.close()
        raise
    try:
        if net is None:
            network.loopback_up()
            net = Netns(os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC))  # (while in it)
        made["net"] = net.fd
        for kind, _ in KINDS[1:]:
            made[kind] = os.open(f"/proc/thread-self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
    except BaseException:
        discard({kind: fd for kind, fd in made.items() if kind != "net"})
        if net is not None:
            net.close()
        raise
    finally:
        try:
            for kind, flag in KINDS:  # back home, whatever happened
                sc.setns(own[kind], flag)
        except OSError as exc:  # never seen; not to be passed over as "no spare made"
            raise ContainerStartError(f"cannot return to this process's own namespaces: {exc}") from None
        finally:
            discard(own)
    _spare = (os.getpid(), made, net)


def take() -> dict[str, int] | None:
    """The waiting set, now the caller's (`lend` it after the fork); None if none."""
    global _spare, _taken
    spare, _spare = _spare, None
    if spare is None or spare[0] != os.getpid():
        return None  # none, or a parent's (a fork's copy is not ours to hand out)
    _taken = (spare[1], spare[2])
    return spare[1]


def lend(fds: dict[str, int] | None, reusable: bool) -> Netns | None:
    """After the fork (or a failed one): close the parent's fds of the set
    `take` gave, but keep its network namespace, to give back once the
    container is gone, if `reusable` (netns_reuse.reusable); else None."""
    global _taken
    taken, _taken = _taken, None
    if fds is None:
        return None
    if taken is None or taken[0] is not fds:  # (not a set of ours: nothing to keep)
        discard(fds)
        return None
    net = taken[1]
    discard({kind: fd for kind, fd in fds.items() if kind != "net"})
    if reusable:
        return net
    net.close()
    return None


def drop() -> None:
    """Let go of the waiting set and every kept namespace (the session's end)."""
    lend(take(), False)
    netns_reuse.drop_all()


def enter(fds: dict[str, int]) -> None:
    """In the child: join the set (instead of unsharing the three) and close it."""
    for kind, flag in KINDS:
        sc.setns(fds[kind], flag)
    discard(fds)


def discard(fds: dict[str, int] | None) -> None:
    for fd in (fds or {}).values():
        try:
            os.close(fd)
        except OSError:
            pass
