"""Capabilities: keep Docker's default set, drop the rest from the bounding
set, and set `no_new_privs` so nothing can climb back through setuid files."""

from __future__ import annotations

from . import syscalls

# Docker's default capability set (moby's oci/caps/defaults.go).
DEFAULT_CAPS = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_RAW": 13,
    "CAP_SYS_CHROOT": 18,
    "CAP_MKNOD": 27,
    "CAP_AUDIT_WRITE": 29,
    "CAP_SETFCAP": 31,
}


_last_cap: int | None = None


def last_cap() -> int:
    """The highest capability this kernel knows (read once per process)."""
    global _last_cap
    if _last_cap is None:
        _last_cap = _read_last_cap()
    return _last_cap


def _read_last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


def drop_to_default(last: int) -> None:
    """Reduce this process to Docker's default capabilities (bounding,
    effective, permitted; inheritable and ambient cleared)."""
    keep = 0
    for bit in DEFAULT_CAPS.values():
        keep |= 1 << bit
    for cap in range(last + 1):
        if not keep & (1 << cap):
            syscalls.prctl(syscalls.PR_CAPBSET_DROP, cap)
    try:
        syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass
    syscalls.capset(keep, keep, 0)


def no_new_privs() -> None:
    syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
