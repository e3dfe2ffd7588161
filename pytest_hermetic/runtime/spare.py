"""Namespaces made ahead: the next container's network, IPC and UTS
namespaces, made by the parent while the current container runs.

Making a network namespace (with `lo` up) and an IPC namespace (with its
mqueue mount) takes 0.5-0.8 ms of the child's start, most of it waiting on
the kernel's locks rather than running.  The pytest plugin's parent is idle
while a test runs, so it makes the next test's three namespaces then
(`prepare`), and that test's child only `setns`es into them (`take`).

Nothing is reused: each set is new, made for one container, and used by
none before it (the parent enters them only for the moment it takes to make
them and bring `lo` up, in its own thread, and goes back).  Root only (a
rootless child makes its namespaces inside its own user namespace), and
only for containers without a network to wire (`net=False`).
"""

from __future__ import annotations

import os

from ..errors import ContainerStartError
from . import network
from . import syscalls as sc

KINDS = (("net", sc.CLONE_NEWNET), ("ipc", sc.CLONE_NEWIPC), ("uts", sc.CLONE_NEWUTS))
FLAGS = sc.CLONE_NEWNET | sc.CLONE_NEWIPC | sc.CLONE_NEWUTS

_spare: tuple[int, dict[str, int]] | None = None  # (pid that made it, namespace fds)


def prepare() -> None:
    """Make the next container's namespaces, unless a set is waiting (root only)."""
    global _spare
    if os.geteuid() != 0 or (_spare is not None and _spare[0] == os.getpid()):
        return
    # Where this thread is now (asked each time: it may be in another
    # network namespace for a while, netns.entered), to come back to.
    own = {kind: os.open(f"/proc/thread-self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC) for kind, _ in KINDS}
    made: dict[str, int] = {}
    try:
        sc.unshare(FLAGS)
    except BaseException:
        discard(own)
        raise
    try:
        network.loopback_up()
        for kind, _ in KINDS:
            made[kind] = os.open(f"/proc/thread-self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
    except BaseException:
        for fd in made.values():
            os.close(fd)
        raise
    finally:
        try:
            for kind, flag in KINDS:  # back home, whatever happened
                sc.setns(own[kind], flag)
        except OSError as exc:  # never seen; not to be passed over as "no spare made"
            raise ContainerStartError(f"cannot return to this process's own namespaces: {exc}") from None
        finally:
            discard(own)
    _spare = (os.getpid(), made)


def take() -> dict[str, int] | None:
    """The waiting set, now the caller's (`discard` it after the fork); None if none."""
    global _spare
    spare, _spare = _spare, None
    if spare is None or spare[0] != os.getpid():
        return None  # none, or a parent's (a fork's copy is not ours to hand out)
    return spare[1]


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
