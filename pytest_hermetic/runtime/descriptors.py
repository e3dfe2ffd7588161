"""What a container keeps of its caller's open descriptors: nothing that
reaches outside it.

A directory fd opened on the host's `/` gives the whole host file system
(`openat(fd, "..")` needs no privilege), a namespace fd or a pidfd a handle
on the host's processes, a socket whatever it is connected to.  A fork
inherits every descriptor, close-on-exec or not, so each path into a
container drops them:

* before exec (`close_except`): everything but 0, 1, 2 (and the set-up pipe,
  which is close-on-exec) goes; one close_range(2) call.
* a Python callable (the pytest plugin's test, the notebook helper's kept
  container) runs in a fork of a process whose Python objects still own
  their descriptors, and some of them it needs (pytest's capture files, its
  report pipe).  `seal` keeps regular files, pipes and terminals (they reach
  only themselves) and puts /dev/null in place of everything else: closed
  outright, a number could be reused by a new file that an old object then
  closes under it.
"""

from __future__ import annotations

import fcntl  # imported here: after entering a container's root, no stdlib is left to import from
import os
import stat

from . import syscalls as sc

_O_PATH = 0o10000000
# Character devices a test may hold open: memory devices that are harmless
# (null, zero, full, random, urandom) and terminals.
_HARMLESS_MEM_MINORS = {3, 5, 7, 8, 9}
_TTY_MAJORS = {4, 5, *range(136, 144)}

_cloexec_works: bool | None = None


def close_except(keep: tuple[int, ...] = ()) -> None:
    """Close every fd above 2 but those in `keep` (close_range where the
    kernel has it, Linux 5.9+)."""
    first = 3
    for fd in sorted(k for k in keep if k >= 3):
        _close_from(first, fd - 1)
        first = fd + 1
    _close_from(first, 0xFFFFFFFF)


def cloexec_all() -> None:
    """Mark every fd above 2 close-on-exec (Linux 5.11+), else close them
    all but the close-on-exec ones; for the moment just before exec."""
    global _cloexec_works
    if _cloexec_works is not False:
        try:
            sc.close_range(3, 0xFFFFFFFF, sc.CLOSE_RANGE_CLOEXEC)
            _cloexec_works = True
            return
        except OSError:
            _cloexec_works = False
    for fd in _open_fds():
        try:
            if fd > 2 and os.get_inheritable(fd):
                os.close(fd)
        except OSError:  # the listing's own fd, closed by now
            pass


def _close_from(first: int, last: int) -> None:
    if first > last:
        return
    try:
        sc.close_range(first, last)
    except OSError:  # before Linux 5.9
        for fd in _open_fds():
            if first <= fd <= last:
                _close(fd)


def _open_fds() -> list[int]:
    return [int(name) for name in os.listdir("/proc/self/fd")]


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def seal(keep: tuple[int, ...] = ()) -> None:
    """Replace every inherited fd that reaches beyond itself with /dev/null
    (see the module's docstring); `keep` are the fds the callable needs."""
    null = None
    try:
        for fd in _open_fds():
            if fd <= 2 or fd in keep or fd == null or _harmless(fd):
                continue
            if null is None:
                null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
            os.dup2(null, fd, inheritable=False)
    finally:
        if null is not None:
            os.close(null)


def _harmless(fd: int) -> bool:
    try:
        link = os.readlink(f"/proc/self/fd/{fd}")
        if link.startswith("pipe:["):
            return True
        if not link.startswith("/"):  # sockets, anonymous inodes (pidfd, eventfd, bpf...), namespaces
            return False
        if fcntl.fcntl(fd, fcntl.F_GETFL) & _O_PATH:
            return False
        mode = os.fstat(fd)
    except OSError:  # gone meanwhile
        return True
    if stat.S_ISREG(mode.st_mode) or stat.S_ISFIFO(mode.st_mode):
        return True
    if stat.S_ISCHR(mode.st_mode):
        major, minor = os.major(mode.st_rdev), os.minor(mode.st_rdev)
        return (major == 1 and minor in _HARMLESS_MEM_MINORS) or major in _TTY_MAJORS
    return False  # directories, block devices
