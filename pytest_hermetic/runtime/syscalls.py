"""The one thin layer over the system calls Python does not wrap (_libc.py: ctypes' C half).

Every wrapper raises `SyscallError` naming the call, its errno and what it was
applied to, so a failed container start says *which* mount failed and why.
"""

from __future__ import annotations

import os
import struct

from ..errors import SyscallError
from .. import _libc as libc
from .._libc import c_char_p, c_int, c_long, c_size_t, c_uint, c_uint32, c_uint64, c_ulong, c_void_p

_MACHINE = os.uname().machine

# clone(2) flags for unshare/setns.
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags.
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

# prctl(2) options.
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

PR_SET_DUMPABLE = 4

SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217, "riscv64": 41}
SYS_CAPSET = {"x86_64": 126, "aarch64": 91, "ppc64le": 184, "s390x": 185, "riscv64": 91}
_SYS_KEYCTL = {"x86_64": 250, "aarch64": 219, "ppc64le": 283, "s390x": 280, "riscv64": 219}
# The same number on every architecture (the unified table, Linux 5.x).
_SYS_CLOSE_RANGE = 436
_SYS_OPENAT2 = 437
_SYS_PIDFD_GETFD = 438
_SYS_MOUNT_SETATTR = 442
_SYS_OPEN_TREE = 428

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
OPEN_TREE_CLONE = 1

KEYCTL_JOIN_SESSION_KEYRING = 1
CLOSE_RANGE_CLOEXEC = 4
# openat2(2) resolve flags.
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10


def _check(result: int, call: str, detail: str = "") -> int:
    if result == -1:
        raise SyscallError(call, libc.get_errno(), detail)
    return result


def _function(name: str, restype: type, *argtypes: type):  # noqa: ANN202 - a C function pointer
    """A libc function of its own, its types set once: a container's set-up
    makes ~60 of these calls, and each wrapper's own conversions (an object
    per argument, a message built for a call that worked) were most of
    their cost."""
    return libc.function(name, restype, *argtypes)


_c_str = c_char_p
_mount = _function("mount", c_int, _c_str, _c_str, _c_str, c_ulong, _c_str)
_umount2 = _function("umount2", c_int, _c_str, c_int)
_prctl = _function("prctl", c_int, c_int, c_ulong, c_ulong, c_ulong, c_ulong)
_unshare = _function("unshare", c_int, c_int)
_setns = _function("setns", c_int, c_int, c_int)


def _b(path: str | bytes | None) -> bytes | None:
    if path is None or type(path) is bytes:
        return path
    return os.fsencode(path)


def _text(value: str | bytes | None) -> str | None:
    return os.fsdecode(value) if isinstance(value, bytes) else value


def unshare(flags: int) -> None:
    if _unshare(flags) == -1:
        _check(-1, "unshare", flag_names(flags))


def setns(fd: int, nstype: int = 0) -> None:
    if _setns(fd, nstype) == -1:
        _check(-1, "setns", flag_names(nstype))


def mount(source: str | bytes | None, target: str | bytes, fstype: str | bytes | None = None, flags: int = 0,
          data: str | bytes | None = None) -> None:
    """mount(2); str or (prepared, cheaper) bytes arguments."""
    if _mount(_b(source), _b(target), _b(fstype), flags, _b(data)) == -1:  # the message only for a failure
        raise mount_error(libc.get_errno(), source, target, fstype, data)


def mount_error(errno_: int, source: str | bytes | None, target: str | bytes, fstype: str | bytes | None,
                data: str | bytes | None) -> SyscallError:
    """The error of a failed `mount` of these arguments (also the native child's: native_child.py)."""
    what, where, kind, options = _text(source), _text(target), _text(fstype), _text(data)
    return SyscallError("mount", errno_, f"{kind or 'bind'} {what or ''} on {where}" + (f" ({options})" if options else ""))


def try_mount(source: bytes | None, fstype: bytes | None, flags: int, data: bytes | None, target: bytes) -> int:
    """mount(2) of prepared arguments (bytes), the target last; a failure is
    its errno returned, not raised (0: mounted): for a caller that expects
    some to fail (a path this kernel lacks) and would pay an exception for each."""
    if _mount(source, target, fstype, flags, data) == -1:
        return libc.get_errno()
    return 0


def umount2(target: str, flags: int = 0) -> None:
    if _umount2(_b(target), flags) == -1:
        _check(-1, "umount2", target)


# The container's set-up calls only typed functions: in the fork, the first
# untyped call copies another ~15 pages of ctypes' own (measured: sethostname).
_sethostname = _function("sethostname", c_int, _c_str, c_size_t)
_syscall_2p = _function("syscall", c_long, c_long, _c_str, _c_str)  # pivot_root, capset
_syscall_keyctl = _function("syscall", c_long, c_long, c_int, c_long)


def pivot_root(new_root: str, put_old: str) -> None:
    if _syscall_2p(SYS_PIVOT_ROOT[_MACHINE], _b(new_root), _b(put_old)) == -1:
        _check(-1, "pivot_root", new_root)


def sethostname(name: str) -> None:
    raw = name.encode()
    if _sethostname(raw, len(raw)) == -1:
        _check(-1, "sethostname", name)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    result = _prctl(option, arg2, arg3, arg4, arg5)
    return result if result != -1 else _check(-1, "prctl", str(option))


def capbset_drop(caps: tuple[int, ...]) -> None:
    """Drop each of `caps` from the bounding set (one prctl each: the kernel
    has no call for several)."""
    drop = _prctl
    for cap in caps:
        if drop(PR_CAPBSET_DROP, cap, 0, 0, 0) == -1:
            _check(-1, "prctl", f"PR_CAPBSET_DROP {cap}")


class _CapHeader(libc.Structure):
    _fields_ = [("version", c_uint32), ("pid", c_int)]


class _CapData(libc.Structure):
    _fields_ = [("effective", c_uint32), ("permitted", c_uint32), ("inheritable", c_uint32)]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_syscall_2r = _function("syscall", c_long, c_long, c_void_p, c_void_p)  # capget: two structs it writes


_CAP_HEADER = struct.pack("=Ii", _LINUX_CAPABILITY_VERSION_3, 0)  # struct __user_cap_header_struct
_SYS_CAPSET = SYS_CAPSET.get(_MACHINE, -1)


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set this thread's capability sets (64-bit masks).  The kernel only
    reads both structs: plain bytes, no ctypes objects to build per call."""
    low, high = 0xFFFFFFFF, 32
    data = struct.pack("=6I", effective & low, permitted & low, inheritable & low,
                       effective >> high & low, permitted >> high & low, inheritable >> high & low)
    if _syscall_2p(_SYS_CAPSET, _CAP_HEADER, data) == -1:
        _check(-1, "capset")


def capget_permitted() -> int:
    """This thread's permitted capability set (a 64-bit mask)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    number = SYS_CAPSET[_MACHINE] - 1  # capget is capset's neighbour on every architecture
    _check(_syscall_2r(number, libc.byref(header), data), "capget")
    return data[0].permitted | data[1].permitted << 32


def join_new_session_keyring() -> None:
    """A fresh anonymous session keyring for this process (as runc gives
    each container), instead of the caller's."""
    number = _SYS_KEYCTL[_MACHINE]
    if _syscall_keyctl(number, KEYCTL_JOIN_SESSION_KEYRING, 0) == -1:  # (name: NULL, an anonymous keyring)
        _check(-1, "keyctl", "join a new session keyring")


_syscall_close_range = _function("syscall", c_long, c_long, c_uint, c_uint, c_uint)


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    if _syscall_close_range(_SYS_CLOSE_RANGE, first, last, flags) == -1:
        _check(-1, "close_range")


_syscall_open_tree = _function("syscall", c_long, c_long, c_int, _c_str, c_uint)


def open_tree_clone(path: str) -> int:
    """A detached, close-on-exec bind mount of `path` (open_tree(2),
    OPEN_TREE_CLONE, Linux 5.2+): a mount in no namespace's tree, gone
    when the last fd or open file on it is."""
    fd = _syscall_open_tree(_SYS_OPEN_TREE, AT_FDCWD, _b(path), OPEN_TREE_CLONE | os.O_CLOEXEC)
    return fd if fd != -1 else _check(-1, "open_tree", path)


_syscall_3i = _function("syscall", c_long, c_long, c_int, c_int, c_uint)  # pidfd_getfd


def pidfd_getfd(pidfd: int, fd: int) -> int:
    """A close-on-exec copy of descriptor `fd` of the process `pidfd` refers to (Linux 5.6+)."""
    return _check(_syscall_3i(_SYS_PIDFD_GETFD, pidfd, fd, 0), "pidfd_getfd", f"descriptor {fd}")


SYS_KCMP = {"x86_64": 312, "aarch64": 272, "ppc64le": 354, "s390x": 343, "riscv64": 272}
_KCMP_FILE = 0
_syscall_kcmp = _function("syscall", c_long, c_long, c_int, c_int, c_int,
                          c_ulong, c_ulong)


def same_open_file(fd: int, other: int) -> bool | None:
    """Whether two of this process's fds are one open file description (one
    offset, one set of flags): kcmp(2); None where the kernel lacks it."""
    number = SYS_KCMP.get(_MACHINE)
    if number is None:
        return None
    pid = os.getpid()
    result = _syscall_kcmp(number, pid, pid, _KCMP_FILE, fd, other)
    return None if result < 0 else result == 0


class _EpollEvent(libc.Structure):
    # Packed on x86_64 only, as <sys/epoll.h> declares it.
    _pack_ = 1 if os.uname().machine == "x86_64" else 0
    _fields_ = [("events", c_uint32), ("data", c_uint64)]


_epoll_create1 = _function("epoll_create1", c_int, c_int)
_epoll_ctl = _function("epoll_ctl", c_int, c_int, c_int, c_int, c_void_p)


def epoll_create() -> int:
    """A new close-on-exec epoll instance."""
    return _check(_epoll_create1(os.O_CLOEXEC), "epoll_create1")


def epoll_add(epoll_fd: int, fd: int, events: int, data: int) -> None:
    """Watch `fd` for `events`, reported with the 64 bits `data` (any, not only the fd)."""
    event = _EpollEvent(events, data)
    _check(_epoll_ctl(epoll_fd, 1, fd, libc.byref(event)), "epoll_ctl", f"descriptor {fd}")


# openat2 and mount_setattr read a struct the caller gives: packed as bytes,
# not built as ctypes objects (a container's set-up calls them per volume, in
# a fork where each first use of a ctypes type touches, and so copies, pages).
_syscall_openat2 = _function("syscall", c_long, c_long, c_int, _c_str, _c_str, c_size_t)
_syscall_mount_setattr = _function("syscall", c_long, c_long, c_int, _c_str, c_uint,
                                   _c_str, c_size_t)


def openat2(dir_fd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    how = struct.pack("=QQQ", flags, mode, resolve)  # struct open_how
    fd = _syscall_openat2(_SYS_OPENAT2, dir_fd, _b(path), how, len(how))
    return fd if fd != -1 else _check(-1, "openat2", path)


def mount_setattr(fd: int, attr_set: int, recursive: bool = True, detail: str = "") -> None:
    """Set mount attributes on the mount `fd` is the root of (and, with
    `recursive`, on every mount below it)."""
    attr = struct.pack("=QQQQ", attr_set, 0, 0, 0)  # struct mount_attr: set, clear, propagation, userns_fd
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    if _syscall_mount_setattr(_SYS_MOUNT_SETATTR, fd, b"", flags, attr, len(attr)) == -1:
        _check(-1, "mount_setattr", detail)


_NS_NAMES = {
    CLONE_NEWNS: "mnt",
    CLONE_NEWCGROUP: "cgroup",
    CLONE_NEWUTS: "uts",
    CLONE_NEWIPC: "ipc",
    CLONE_NEWUSER: "user",
    CLONE_NEWPID: "pid",
    CLONE_NEWNET: "net",
}


def kernel_version() -> tuple[int, int]:
    """(major, minor) of the running kernel; (0, 0) where its release does not say."""
    parts = os.uname().release.split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def flag_names(flags: int) -> str:
    return "|".join(name for bit, name in _NS_NAMES.items() if flags & bit)
