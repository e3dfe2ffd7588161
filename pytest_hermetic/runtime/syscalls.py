"""The one thin ctypes layer over the system calls Python does not wrap.

Every wrapper raises `SyscallError` naming the call, its errno and what it was
applied to, so a failed container start says *which* mount failed and why.
"""

from __future__ import annotations

import ctypes
import os

from ..errors import SyscallError

_libc = ctypes.CDLL(None, use_errno=True)

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

AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4

KEYCTL_JOIN_SESSION_KEYRING = 1
CLOSE_RANGE_CLOEXEC = 4
# openat2(2) resolve flags.
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10


def _check(result: int, call: str, detail: str = "") -> int:
    if result == -1:
        raise SyscallError(call, ctypes.get_errno(), detail)
    return result


def _b(path: str | bytes | None) -> bytes | None:
    if path is None:
        return None
    return os.fsencode(path)


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare", _flag_names(flags))


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns", _flag_names(nstype))


def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0, data: str | None = None) -> None:
    result = _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data))
    _check(result, "mount", f"{fstype or 'bind'} {source or ''} on {target}" + (f" ({data})" if data else ""))


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), ctypes.c_int(flags)), "umount2", target)


def pivot_root(new_root: str, put_old: str) -> None:
    number = SYS_PIVOT_ROOT[os.uname().machine]
    _check(_libc.syscall(ctypes.c_long(number), _b(new_root), _b(put_old)), "pivot_root", new_root)


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname", name)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(
        _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)),
        "prctl",
        str(option),
    )


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set this thread's capability sets (64-bit masks)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    number = SYS_CAPSET[os.uname().machine]
    _check(_libc.syscall(ctypes.c_long(number), ctypes.byref(header), data), "capset")


def capget_permitted() -> int:
    """This thread's permitted capability set (a 64-bit mask)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    number = SYS_CAPSET[os.uname().machine] - 1  # capget is capset's neighbour on every architecture
    _check(_libc.syscall(ctypes.c_long(number), ctypes.byref(header), data), "capget")
    return data[0].permitted | data[1].permitted << 32


def join_new_session_keyring() -> None:
    """A fresh anonymous session keyring for this process (as runc gives
    each container), instead of the caller's."""
    number = _SYS_KEYCTL[os.uname().machine]
    _check(_libc.syscall(ctypes.c_long(number), ctypes.c_int(KEYCTL_JOIN_SESSION_KEYRING), None), "keyctl",
           "join a new session keyring")


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    _check(_libc.syscall(ctypes.c_long(_SYS_CLOSE_RANGE), ctypes.c_uint(first), ctypes.c_uint(last),
                         ctypes.c_uint(flags)), "close_range")


def pidfd_getfd(pidfd: int, fd: int) -> int:
    """A close-on-exec copy of descriptor `fd` of the process `pidfd` refers to (Linux 5.6+)."""
    return _check(_libc.syscall(ctypes.c_long(_SYS_PIDFD_GETFD), ctypes.c_int(pidfd), ctypes.c_int(fd),
                                ctypes.c_uint(0)), "pidfd_getfd", f"descriptor {fd}")


class _EpollEvent(ctypes.Structure):
    # Packed on x86_64 only, as <sys/epoll.h> declares it.
    _pack_ = 1 if os.uname().machine == "x86_64" else 0
    _fields_ = [("events", ctypes.c_uint32), ("data", ctypes.c_uint64)]


def epoll_create() -> int:
    """A new close-on-exec epoll instance."""
    return _check(_libc.epoll_create1(ctypes.c_int(os.O_CLOEXEC)), "epoll_create1")


def epoll_add(epoll_fd: int, fd: int, events: int, data: int) -> None:
    """Watch `fd` for `events`, reported with the 64 bits `data` (any, not only the fd)."""
    event = _EpollEvent(events, data)
    _check(_libc.epoll_ctl(ctypes.c_int(epoll_fd), ctypes.c_int(1), ctypes.c_int(fd), ctypes.byref(event)),
           "epoll_ctl", f"descriptor {fd}")


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dir_fd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    how = _OpenHow(flags, mode, resolve)
    return _check(_libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dir_fd), _b(path), ctypes.byref(how),
                                ctypes.c_size_t(ctypes.sizeof(how))), "openat2", path)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


def mount_setattr(fd: int, attr_set: int, recursive: bool = True, detail: str = "") -> None:
    """Set mount attributes on the mount `fd` is the root of (and, with
    `recursive`, on every mount below it)."""
    attr = _MountAttr(attr_set, 0, 0, 0)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    _check(_libc.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(fd), b"", ctypes.c_uint(flags),
                         ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))), "mount_setattr", detail)


_NS_NAMES = {
    CLONE_NEWNS: "mnt",
    CLONE_NEWCGROUP: "cgroup",
    CLONE_NEWUTS: "uts",
    CLONE_NEWIPC: "ipc",
    CLONE_NEWUSER: "user",
    CLONE_NEWPID: "pid",
    CLONE_NEWNET: "net",
}


def _flag_names(flags: int) -> str:
    return "|".join(name for bit, name in _NS_NAMES.items() if flags & bit)
