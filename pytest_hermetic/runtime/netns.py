"""Network namespaces made and entered by the parent, one thread at a time.

Namespaces belong to threads: `unshare(CLONE_NEWNET)` or `setns` in the
calling thread moves that thread alone, so the parent can make a container's
namespace (and put its veth end in it) before forking, then step back,
without disturbing its other threads (an xdist worker's execnet thread).
A namespace lives while a process, an open fd or a bind mount holds it.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from . import syscalls as sc

_own_fd: int | None = None


def own_fd() -> int:
    """This process's original network namespace (opened once, kept)."""
    global _own_fd
    if _own_fd is None:
        _own_fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    return _own_fd


def create() -> int:
    """A fresh network namespace; returns an fd that holds it."""
    home = own_fd()
    sc.unshare(sc.CLONE_NEWNET)
    try:
        return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        sc.setns(home, sc.CLONE_NEWNET)


@contextlib.contextmanager
def entered(fd: int) -> Iterator[None]:
    """Run the block in the namespace `fd` (sockets made there stay there)."""
    home = own_fd()  # before leaving: opened later, it would be `fd`'s namespace
    sc.setns(fd, sc.CLONE_NEWNET)
    try:
        yield
    finally:
        sc.setns(home, sc.CLONE_NEWNET)


def open_path(path: str) -> int:
    """An fd on a namespace file (/proc/PID/ns/net, or a bind mount of one)."""
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def pin(fd: int, path: str) -> None:
    """Keep the namespace alive past this process: bind it onto `path`
    (a file below the engine's own state folder), as `ip netns add` does."""
    with open(path, "w"):
        pass
    sc.mount(f"/proc/self/fd/{fd}", path, None, sc.MS_BIND)


def unpin(path: str) -> None:
    try:
        sc.umount2(path, sc.MNT_DETACH)
    except OSError:
        pass
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def same(fd_a: int, fd_b: int) -> bool:
    a, b = os.fstat(fd_a), os.fstat(fd_b)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
