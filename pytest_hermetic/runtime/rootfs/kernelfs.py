"""The kernel's file systems in the container: /proc, /dev (with the host's
harmless devices), /sys, cgroup2, and runc's masks over /proc and /sys."""

from __future__ import annotations

import errno
import os
import stat
TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it costs start-up
    from . import RootfsConfig

from .. import syscalls as sc
from ..syscalls import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REC, MS_REMOUNT


HOST_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# As runc masks by default.
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
# Those of them that are folders (the others are files).
_MASKED_DIRS = frozenset(("/proc/acpi", "/proc/asound", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"))
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


# The mounts below are made from inside the new root (`setup` makes it the
# current directory), with arguments prepared here, once per process: in the
# forked child each string built and encoded per call is an allocation, and
# allocations there copy pages the child shares with its (large) parent.
_DEV_NODES = tuple((f"/dev/{name}".encode(), f"dev/{name}".encode()) for name in HOST_DEVICES)
_DEV_LINKS = ((b"/proc/self/fd", b"dev/fd"), (b"/proc/self/fd/0", b"dev/stdin"), (b"/proc/self/fd/1", b"dev/stdout"),
              (b"/proc/self/fd/2", b"dev/stderr"), (b"/proc/kcore", b"dev/core"))
_PTS_OPTIONS = b"newinstance,ptmxmode=0666,mode=0620"  # in a user namespace (gid 5 may be unmapped there)
_PTS_OPTIONS_ROOT = _PTS_OPTIONS + b",gid=5"


# /proc, /dev and /sys are made by steps (`kernel_steps`) that the Python
# child runs here (`run_steps`) and the native child runs in C
# (native_child.py): one list, one order, for both.
_PROC_STEPS = (("mount", b"proc", b"proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None),)


def mount_proc() -> None:
    """/proc, in the current directory (the new root)."""
    run_steps(_PROC_STEPS)


def run_steps(steps: tuple | list) -> None:
    """`kernel_steps`' steps, here: ("mount", source, target, fstype, flags,
    data), ("mknod", None, target, None, mode, None), ("mkdir", None, target,
    None, mode, None), ("symlink", source, link, None, 0, None)."""
    for kind, source, target, fstype, flags, data in steps:
        if kind == "mount":
            sc.mount(source, target, fstype, flags, data)
        elif kind == "mknod":
            os.mknod(target, flags)  # a mount point (one call: no descriptor to close)
        elif kind == "mkdir":
            os.mkdir(target, flags)
        else:
            os.symlink(source, target)


def own_nodes(folder: bytes) -> bytes | None:
    """As root: the container's own copies of the harmless devices, on a
    small tmpfs at `folder` (in the child's mount namespace, outside the new
    root: nothing in the container reaches it after the pivot, only the
    binds of its nodes); returns the folder.

    A bind of the host's node would share the host's inode: the container's
    root (CAP_FOWNER, CAP_CHOWN) could chmod or chown the host's /dev/null
    through it, for every user of the machine.  These nodes are the
    container's (same numbers, modes and owners as the host's); the tmpfs
    allows devices (the binds of its nodes must open) but is reachable only
    through those binds, each a single file, where nothing new can be made.
    In a user namespace mknod is refused and the host's nodes are bound
    (their owner is the host's root there: no chmod): None then, also for
    an engine that runs as root inside a user namespace of its own (a
    rootless container manager's)."""
    os.mkdir(folder, 0o700)
    sc.mount(b"tmpfs", folder, b"tmpfs", MS_NOSUID | MS_NOEXEC, b"mode=700,size=4k,nr_inodes=16")
    umask = os.umask(0)  # (the host's modes as they are: one call each way, not a chmod per node)
    try:
        for name, mode, rdev, owner in host_nodes():
            path = folder + b"/" + name
            try:
                os.mknod(path, mode, rdev)
            except PermissionError:  # not the machine's root: the host's nodes are not ours to change
                return None
            if owner is not None:
                os.chown(path, *owner)
    finally:
        os.umask(umask)
    return folder


_nodes: list[tuple[bytes, int, int, tuple[int, int] | None]] = []


def host_nodes() -> list[tuple[bytes, int, int, tuple[int, int] | None]]:
    """(name, mode, rdev, owner) of the host's harmless devices, looked up
    once per process (in the parent, before any fork: see `prepare`); owner
    None where it is this process's own, which a node it makes has already."""
    if not _nodes:
        own = (os.geteuid(), os.getegid())
        for name in HOST_DEVICES:
            st = os.stat(f"/dev/{name}")
            if not stat.S_ISCHR(st.st_mode):
                raise OSError(errno.ENODEV, f"/dev/{name} is not a character device here")
            owner = (st.st_uid, st.st_gid)
            _nodes.append((name.encode(), st.st_mode, st.st_rdev, None if owner == own else owner))
    return _nodes


def prepare() -> None:
    """In the parent: what `own_nodes` needs, so the child only uses it."""
    host_nodes()


def mount_dev(userns: bool, shm_size: int = 64 << 20, nodes: bytes | None = None) -> None:
    """/dev, in the current directory (the new root); `nodes`: the folder
    of the container's own device nodes (`own_nodes`), else the host's."""
    run_steps(_dev_steps(userns, shm_size, nodes))


def _dev_steps(userns: bool, shm_size: int, nodes: bytes | None) -> list[tuple]:
    # nodev, as every writable mount of the container: a node made with
    # mknod (CAP_MKNOD is in Docker's default set) opens nothing.  The
    # nodes bound here keep their own mount's flags and work.
    steps: list[tuple] = [("mount", b"tmpfs", b"dev", b"tmpfs", MS_NOSUID | MS_NODEV | sc.MS_STRICTATIME,
                           b"mode=755,size=65536k")]
    for host, node in _DEV_NODES:
        steps += [("mknod", None, node, None, stat.S_IFREG | 0o644, None),
                  ("mount", host if nodes is None else nodes + host[4:], node, None, MS_BIND, None)]
    steps += [("mkdir", None, b"dev/pts", None, 0o777, None),
              ("mount", b"devpts", b"dev/pts", b"devpts", MS_NOSUID | MS_NOEXEC, _PTS_OPTIONS if userns else _PTS_OPTIONS_ROOT),
              ("symlink", b"pts/ptmx", b"dev/ptmx", None, 0, None),
              ("mkdir", None, b"dev/shm", None, 0o777, None),
              ("mount", b"shm", b"dev/shm", b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"mode=1777,size={shm_size}".encode()),
              ("mkdir", None, b"dev/mqueue", None, 0o777, None),
              ("mount", b"mqueue", b"dev/mqueue", b"mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)]
    steps += [("symlink", target, link, None, 0, None) for target, link in _DEV_LINKS]
    return steps


def mount_sys(privileged: bool) -> None:
    """/sys, in the current directory (the new root)."""
    run_steps(_sys_steps(privileged))


def _sys_steps(privileged: bool) -> tuple:
    return (("mount", b"sysfs", b"sys", b"sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | (0 if privileged else MS_RDONLY), None),)


def kernel_steps(shm_size: int, privileged: bool, nodes: bytes) -> list[tuple]:
    """`mount_proc`, `mount_dev` (as root, the container's own `nodes`) and
    `mount_sys`, in `setup`'s order, as steps (`run_steps` says their
    shape): what the native child runs (native_child.py)."""
    return [*_PROC_STEPS, *_dev_steps(False, shm_size, nodes), *_sys_steps(privileged)]


def mount_cgroup2(config: RootfsConfig) -> None:
    """After pivot_root, in the container's cgroup namespace: /sys/fs/cgroup
    shows the container's own cgroup as its root (read-only)."""
    if config.cgroup_v2 and os.path.isdir("/sys/fs/cgroup"):
        flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | (0 if config.privileged else MS_RDONLY)
        sc.mount("cgroup2", "/sys/fs/cgroup", "cgroup2", flags)


def mask_paths(null: bytes = b"/dev/null") -> None:
    """runc's masks, in the current directory (the new root); files are
    covered by a bind of `null` (the container's own /dev/null as root:
    a bind of the host's would let the container chmod the host's node)."""
    # Each mount is tried as the kind its path is on every kernel (a folder
    # gets an empty tmpfs, a file /dev/null): a path this kernel
    # lacks fails with ENOENT before anything is mounted, so no stat first
    # (17 per container).  Any other failure: look, then mount as the
    # path's actual kind, as before.
    mask_file = (null, None, MS_BIND, None)
    for target, directory in MASKS:
        source, fstype, flags, data = MASK_DIR if directory else mask_file
        failed = sc.try_mount(source, fstype, flags, data, target)
        if failed and failed != errno.ENOENT:
            try:
                st = os.lstat(target)
            except OSError:
                continue
            source, fstype, flags, data = MASK_DIR if stat.S_ISDIR(st.st_mode) else mask_file
            sc.mount(source, target, fstype, flags, data)
    for target in READONLY_TARGETS:
        failed = sc.try_mount(target, None, MS_BIND | MS_REC, None, target)
        if failed == errno.ENOENT:  # not in this kernel's /proc
            continue
        if failed:
            raise sc.mount_error(failed, target, target, None, None)
        sc.mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


# The masks' mounts, as (source, fstype, flags, data) before the target: an
# empty read-only tmpfs on a folder, the host's /dev/null on a file (a volume
# may cover the container's own /dev).
MASK_DIR: tuple[bytes, bytes | None, int, bytes | None] = (
    b"tmpfs", b"tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, b"size=0")
MASKS = tuple((path[1:].encode(), path in _MASKED_DIRS) for path in MASKED_PATHS)  # relative to the root
READONLY_TARGETS = tuple(path[1:].encode() for path in READONLY_PATHS)
