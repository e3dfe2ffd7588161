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


def mount_proc(root: str) -> None:
    sc.mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def mount_dev(root: str, userns: bool, shm_size: int = 64 << 20) -> None:
    dev = root + "/dev"
    # nodev, as every writable mount of the container: a node made with
    # mknod (CAP_MKNOD is in Docker's default set) opens nothing.  The
    # host's own nodes, bound here, keep their mount's flags and work.
    sc.mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NODEV | sc.MS_STRICTATIME, "mode=755,size=65536k")
    for name in HOST_DEVICES:
        os.mknod(f"{dev}/{name}", stat.S_IFREG | 0o644)  # a mount point (one call: no descriptor to close)
        sc.mount(f"/dev/{name}", f"{dev}/{name}", None, MS_BIND)
    os.mkdir(f"{dev}/pts")
    pts_options = "newinstance,ptmxmode=0666,mode=0620" + ("" if userns else ",gid=5")
    sc.mount("devpts", f"{dev}/pts", "devpts", MS_NOSUID | MS_NOEXEC, pts_options)
    os.symlink("pts/ptmx", f"{dev}/ptmx")
    os.mkdir(f"{dev}/shm")
    sc.mount("shm", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"mode=1777,size={shm_size}")
    os.mkdir(f"{dev}/mqueue")
    sc.mount("mqueue", f"{dev}/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2"), ("core", "/proc/kcore")):
        os.symlink(target, f"{dev}/{name}")


def mount_sys(root: str, privileged: bool) -> None:
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | (0 if privileged else MS_RDONLY)
    sc.mount("sysfs", root + "/sys", "sysfs", flags)


def mount_cgroup2(config: RootfsConfig) -> None:
    """After pivot_root, in the container's cgroup namespace: /sys/fs/cgroup
    shows the container's own cgroup as its root (read-only)."""
    if config.cgroup_v2 and os.path.isdir("/sys/fs/cgroup"):
        flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | (0 if config.privileged else MS_RDONLY)
        sc.mount("cgroup2", "/sys/fs/cgroup", "cgroup2", flags)


def mask_paths(root: str) -> None:
    # Each mount is tried as the kind its path is on every kernel (a folder
    # gets an empty tmpfs, a file the host's /dev/null): a path this kernel
    # lacks fails with ENOENT before anything is mounted, so no stat first
    # (17 per container).  Any other failure: look, then mount as the
    # path's actual kind, as before.
    for path in MASKED_PATHS:
        target = root + path
        directory = path in _MASKED_DIRS
        failed = sc.try_mount(*_mask(target, directory))
        if failed and failed != errno.ENOENT:
            try:
                st = os.lstat(target)
            except OSError:
                continue
            sc.mount(*_mask(target, stat.S_ISDIR(st.st_mode)))
    for path in READONLY_PATHS:
        target = root + path
        failed = sc.try_mount(target, target, None, MS_BIND | MS_REC)
        if failed == errno.ENOENT:  # not in this kernel's /proc
            continue
        if failed:
            sc.mount(target, target, None, MS_BIND | MS_REC)  # raises, naming the call
        sc.mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _mask(target: str, directory: bool) -> tuple:
    """The mount that masks `target`: an empty read-only tmpfs on a folder,
    the host's /dev/null on a file (a volume may cover the container's /dev)."""
    if directory:
        return "tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0"
    return "/dev/null", target, None, MS_BIND
