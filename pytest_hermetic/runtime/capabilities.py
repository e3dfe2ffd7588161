"""Capabilities: keep Docker's default set (or that set as `cap_add` and
`cap_drop` change it), drop the rest from the bounding set, and set
`no_new_privs` so nothing can climb back through setuid files.

An added capability does not widen the seccomp filter (Docker's does): the
filter stays the one for the default set, so `mount`, `unshare`, `setns`,
`open_by_handle_at`, `ptrace` of other namespaces' processes and the like
stay refused whatever is added (docs/security.md says what each gives).
"""

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


# Every capability by name (linux/capability.h), for `cap_add`/`cap_drop`.
ALL_CAPS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3, "CAP_FSETID": 4,
    "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15, "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19, "CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27, "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31, "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35, "CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38, "CAP_BPF": 39, "CAP_CHECKPOINT_RESTORE": 40,
}


def has_sys_admin(keep: int | None) -> bool:
    """Whether a `mask` (None: the default set) holds CAP_SYS_ADMIN."""
    return keep is not None and bool(keep & 1 << ALL_CAPS["CAP_SYS_ADMIN"])


def may_trace(keep: int | None) -> bool:
    """Whether a `mask` (None: the default set) holds CAP_SYS_PTRACE: its
    holder may trace any process of its PID namespace, whatever that
    process's capabilities."""
    return keep is not None and bool(keep & 1 << ALL_CAPS["CAP_SYS_PTRACE"])


def canonical(name: str) -> str | None:
    """`sys_admin`, `SYS_ADMIN`, `CAP_SYS_ADMIN` -> `CAP_SYS_ADMIN`; `all` -> `ALL`; None if no such capability."""
    upper = name.strip().upper()
    if upper == "ALL":
        return "ALL"
    full = upper if upper.startswith("CAP_") else "CAP_" + upper
    return full if full in ALL_CAPS else None


def default_mask() -> int:
    keep = 0
    for bit in DEFAULT_CAPS.values():
        keep |= 1 << bit
    return keep


def mask(add: tuple[str, ...] = (), drop: tuple[str, ...] = ()) -> int:
    """The set a container keeps, as Docker computes it: `drop` ALL starts
    from nothing, `add` ALL from everything; then the named ones are added
    (`add`) and taken away (`drop`).  Names are `canonical`'s."""
    if "ALL" in drop:
        keep = 0
    elif "ALL" in add:
        keep = (1 << (max(ALL_CAPS.values()) + 1)) - 1
    else:
        keep = default_mask()
    for name in add:
        if name != "ALL":
            keep |= 1 << ALL_CAPS[name]
    for name in drop:
        if name != "ALL":
            keep &= ~(1 << ALL_CAPS[name])
    return keep


def permitted() -> int:
    """This process's permitted set (asked only where a spec changes the set)."""
    return syscalls.capget_permitted()


_last_cap: int | None = None


def last_cap() -> int:
    """The highest capability this kernel knows (read once per process)."""
    global _last_cap
    if _last_cap is None:
        _last_cap = _read_last_cap()
        dropped(_last_cap, default_mask() & ((1 << (_last_cap + 1)) - 1))
    return _last_cap


def _read_last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


def drop_to_default(last: int, keep: int | None = None) -> None:
    """Reduce this process to Docker's default capabilities, or to the set
    `keep` (a `mask`) (bounding, effective, permitted; inheritable and
    ambient cleared)."""
    restrict(bound(last, keep))


def bound(last: int, keep: int | None = None) -> int:
    """Cut the bounding set to Docker's default set or `keep` (a `mask`),
    and clear the ambient set; returns the set kept, for `restrict`.  The
    effective set stays, so a user switch can still follow (`--cap-drop
    ALL -u 1000` needs CAP_SETUID for it)."""
    keep = kept(last, keep)
    syscalls.capbset_drop(dropped(last, keep))
    try:
        syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass
    return keep


def kept(last: int, keep: int | None = None) -> int:
    """The set a container keeps: Docker's default, or `keep` (a `mask`)
    as far as this process has it (--cap-add ALL: an engine run in a
    container may lack some), of the capabilities this kernel knows."""
    keep = default_mask() if keep is None else keep & permitted()
    return keep & ((1 << (last + 1)) - 1)


_drops: dict[tuple[int, int], tuple[int, ...]] = {}


def dropped(last: int, keep: int) -> tuple[int, ...]:
    """The capabilities up to `last` that `keep` lacks, kept per process
    (the default set's is made by the parent in `last_cap`, before it forks)."""
    found = _drops.get((last, keep))
    if found is None:
        found = _drops[(last, keep)] = tuple(cap for cap in range(last + 1) if not keep & (1 << cap))
    return found


def restrict(keep: int) -> None:
    """Effective and permitted = `keep` (inheritable empty)."""
    syscalls.capset(keep, keep, 0)


def no_new_privs() -> None:
    syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
