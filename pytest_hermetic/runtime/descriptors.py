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
  report pipe).  `seal` keeps regular files, pipes' write ends and
  terminals (they reach only themselves) and `blank` puts /dev/null in place
  of everything else, pipes' read ends too (see `_pipe_end`): closed
  outright, a number could be reused by a new file that an old object then
  closes under it.  A regular file open read-only still reaches its host
  file by name: `open("/proc/self/fd/N", "w")` follows the magic link to
  it, and root in the container has CAP_DAC_OVERRIDE.  So it is reopened
  on a read-only bind of its own (same file, same offset), or where that
  cannot be had, replaced by a sealed in-memory copy (see `seal`).
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


def seal(keep: tuple[int, ...] = ()) -> list[int]:
    """Reopen every inherited read-only regular file read-only (see the
    module's docstring and `_reopen_read_only`) and return the fds that
    reach beyond themselves, for `blank` to put /dev/null on once the
    container's own /dev is there; `keep` are the fds the callable needs.
    Called in the container's fresh mount namespace before its pivot_root,
    while the paths the host's files are open at still name them there."""
    blanks = []
    for fd in _open_fds():
        if fd <= 2 or fd in keep:
            continue
        kind = _kind(fd)
        if kind is _KEEP:
            continue
        if kind is _REPLACE or not _reopen_read_only(fd, *kind):
            blanks.append(fd)
    return blanks


def blank(fds: list[int]) -> None:
    """/dev/null on each of `fds` (closed outright, a number could be reused
    by a new file that an old object then closes under it)."""
    if not fds:
        return
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)  # (none of `fds`: they are open)
    try:
        for fd in fds:
            os.dup2(null, fd, inheritable=False)
    finally:
        os.close(null)


_KEEP = ("keep",)
_REPLACE = ("replace",)


def _kind(fd: int) -> tuple:
    """_KEEP, _REPLACE (with /dev/null), or (path, stat, flags) of a
    read-only regular file (to reopen read-only).  Only what the walk
    always asked: a readlink, an F_GETFL and an fstat per fd."""
    try:
        link = os.readlink(f"/proc/self/fd/{fd}")
        if link.startswith("pipe:["):
            return _pipe_end(fcntl.fcntl(fd, fcntl.F_GETFL))
        if not link.startswith("/"):  # sockets, anonymous inodes (pidfd, eventfd, bpf...), namespaces
            return _REPLACE
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        if flags & _O_PATH:
            return _REPLACE
        mode = os.fstat(fd)
    except OSError:  # gone meanwhile
        return _KEEP
    if stat.S_ISREG(mode.st_mode):
        # Read-write and write-only files stay as they are: the test may
        # write them anyway, through the fd, as it would in place.
        return (link, mode, flags) if flags & os.O_ACCMODE == os.O_RDONLY else _KEEP
    if stat.S_ISFIFO(mode.st_mode):
        return _pipe_end(flags)
    if stat.S_ISCHR(mode.st_mode):
        major, minor = os.major(mode.st_rdev), os.minor(mode.st_rdev)
        return _KEEP if (major == 1 and minor in _HARMLESS_MEM_MINORS) or major in _TTY_MAJORS else _REPLACE
    return _REPLACE  # directories, block devices


def _pipe_end(flags: int) -> tuple:
    """A pipe's (or FIFO's) write end stays (the test's output, its
    reports); a read end goes: reopened through /proc/self/fd for writing it
    is a write end into whoever reads the pipe in the caller -- under xdist
    the worker's command stream from the controller, which executes what it
    is sent (a test's reopen of it for writing was tried: it worked).  The
    callable's own read ends are `keep`."""
    return _KEEP if flags & os.O_ACCMODE == os.O_WRONLY else _REPLACE


def _reopen_read_only(fd: int, path: str, original: os.stat_result, flags: int) -> bool:
    """Put on `fd` the same file, at the same offset, opened on a read-only
    mount of its own (a detached bind: nothing in the container can reach
    or remount it), so no reopening through /proc/self/fd can write it
    (EROFS), nor chmod, chown or truncate it.  (Its readlink is "/" then:
    the mount's root is the file.)  Where the path no longer
    names the file (deleted, renamed, not in this mount namespace) or the
    kernel lacks open_tree/mount_setattr (before 5.12): a sealed in-memory
    copy, up to COPY_LIMIT bytes.  False: neither (the caller puts
    /dev/null there)."""
    try:
        offset = os.lseek(fd, 0, os.SEEK_CUR)
    except OSError:
        offset = 0
    reopened = _on_read_only_mount(path, original, flags)
    if reopened is None:
        reopened = _sealed_copy(fd)
        if reopened is None:
            return False
    try:
        os.lseek(reopened, offset, os.SEEK_SET)
        os.dup2(reopened, fd, inheritable=os.get_inheritable(fd))
    except OSError:
        return False
    finally:
        os.close(reopened)
    return True


_READ_ONLY_BIND = sc.MOUNT_ATTR_RDONLY | sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_NODEV | sc.MOUNT_ATTR_NOEXEC


def _on_read_only_mount(path: str, original: os.stat_result, flags: int) -> int | None:
    try:
        tree = sc.open_tree_clone(path)
    except OSError:
        return None
    try:
        sc.mount_setattr(tree, _READ_ONLY_BIND, recursive=False)
        reopened = os.open(f"/proc/self/fd/{tree}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | (flags & os.O_NONBLOCK))
    except OSError:
        return None
    finally:
        os.close(tree)
    now = os.fstat(reopened)
    if (now.st_dev, now.st_ino) != (original.st_dev, original.st_ino):  # another file by now at that path
        os.close(reopened)
        return None
    return reopened


COPY_LIMIT = 16 << 20  # bytes; a bigger read-only file that cannot be reopened read-only becomes /dev/null
_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL


def _sealed_copy(fd: int) -> int | None:
    """A read-only fd on a sealed memfd holding the file's content (read
    with pread: the original's offset stays), or None if it is too big."""
    try:
        copy = os.memfd_create("hermetic-read-only", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except OSError:
        return None
    try:
        done = 0
        while True:
            chunk = os.pread(fd, min(1 << 20, COPY_LIMIT + 1 - done), done)
            if not chunk:
                break
            done += len(chunk)
            if done > COPY_LIMIT:
                return None
            os.write(copy, chunk)
        fcntl.fcntl(copy, fcntl.F_ADD_SEALS, _SEALS)
        return os.open(f"/proc/self/fd/{copy}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    finally:
        os.close(copy)
