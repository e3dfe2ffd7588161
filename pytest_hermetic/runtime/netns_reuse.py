"""A finished container's network namespace handed to a later one, only when
nothing in it differs from when it was made.

A loopback-only network namespace costs 0.35-0.40 ms of the parent's CPU to
make (setup_net, registering `lo`, its sysctl tables) and ~0.3 ms of the
kernel's single, machine-wide `cleanup_net` worker to destroy, which
serializes `-n 2`.  So spare.py's namespaces (root, no network to wire) come
back here once their container's processes are gone (`give_back`, called
when PID 1 is reaped: its PID namespace, and every process that could have
been in this network namespace, ended with it), and spare.py takes one
(`take`) instead of unsharing a new one.

Reused only if all of these hold:

* It was made by spare.prepare() in this process (`Netns` is made nowhere
  else; a fork's copy is never handed out), and its container had no more
  than Docker's default capabilities, was not privileged and kept its
  seccomp filter (`reusable`).  Without CAP_NET_ADMIN (and with /proc/sys
  read-only) a container cannot change routes, rules, addresses, links,
  sysctls, netfilter, xfrm, nsids or static multicast routes, which no
  check below would see; with it, it could, so its namespace is dropped.
  (CAP_SYS_ADMIN would also let it `setns` into a kept namespace.)  Nor
  had it a volume holding a proc mount (a volume of `/`, `/proc`, ...):
  the kernel lets uid 0 write its own namespace's net sysctls without
  CAP_NET_ADMIN, and only the read-only /proc/sys keeps it from doing so.
* No socket is left: /proc/net/sockstat's "sockets: used" counts every
  socket of the namespace a user made (any family: TCP, UDP, raw, packet,
  netlink, unix, abstract unix names, SO_REUSEPORT groups; held by anyone,
  also by this process after pidfd_getfd), "inuse" per protocol counts
  hashed ones (kernel sockets too), "tw" the TCP TIME_WAIT entries (IPv4
  and IPv6), FRAG the queued fragments.  Its "orphan", "alloc" and "mem"
  are machine-wide and ignored.  Checked on 6.18: a unix socket made in
  one namespace shows in that namespace's file only (and the whole rule,
  tests/test_netns_reuse.py, on 6.1 in the cgroup v2 VM).
* No traffic was ever seen: /proc/net/dev (lo's bytes, packets, errors,
  drops; and the list of links), /proc/net/snmp, /proc/net/netstat and
  /proc/net/snmp6 are exactly as when it was made.  Everything else a
  default-capability process can leave in a namespace comes from packets
  and so moves one of these counters: tcp_metrics, TCP fast-open cookies,
  route exceptions (PMTU), inet_peer entries (ICMP rate limits), conntrack
  entries, fragments.  A send with no route moves OutNoRoutes (snmp,
  snmp6) without a packet on lo.
* No IPv6 flow label lingers (/proc/net/ip6_flowlabel): a socket's label
  stays in the namespace up to 150 s after the socket closed, with no
  packet sent.
* No TCP fast-open key was made (/proc/sys/net/ipv4/tcp_fastopen_key): a
  listener with TCP_FASTOPEN creates the namespace's random key, readable
  by the container's root, with no packet sent.

Multicast memberships, packet-socket promiscuity and mroute tables made
by a socket go when it closes (and a `pimreg` link would show in
/proc/net/dev).  Families whose kernel state outlives their sockets
without an IP packet (RDS over loopback keeps its connections; TIPC) are
not checked: where either is loaded (/sys/module/rds, /sys/module/tipc;
this host's kernel has neither) nothing is reused.  IPC and UTS namespaces
(0.02-0.06 ms) are never reused.

The files are read from inside the namespace (spare.prepare is in it when
it makes one; a check `setns`es the parent's thread in and back) and closed
at once.  Kept open (an fd of /proc/thread-self/net/X keeps showing the
namespace it was opened in), they would reach every later test's callable,
which inherits the parent's regular files (descriptors.seal keeps them):
~0.2 ms more of `seal` per test, and the fast-open key file (root's, 0600)
could be reopened for writing through /proc/self/fd (tried: it works).
The check (~0.075 ms of CPU) runs in the parent when PID 1 is reaped, which the
plugin does while a later test's child builds its root.
"""

from __future__ import annotations

import os

from ..errors import ContainerStartError
from . import syscalls as sc
from .capabilities import default_mask
from .cgroups import unescape_mount_point

# What shows the state of the network namespace of the thread that reads it (see above).
PROBES = ("sockstat", "sockstat6", "dev", "snmp", "netstat", "snmp6", "ip6_flowlabel")  # in /proc/thread-self/net
_FASTOPEN_KEY = "/proc/sys/net/ipv4/tcp_fastopen_key"
_MACHINE_WIDE = (b"orphan", b"alloc", b"mem")  # sockstat's fields that are not the namespace's (not `re`: ~4 ms of `hermetic run`)
_UNCHECKED = ("/sys/module/rds", "/sys/module/tipc")  # loaded: no reuse (see above)
_KEPT_AT_MOST = 4  # the plugin's pipeline keeps 3 in turn: a test gets the one of the test three before it


class Netns:
    """A loopback-only network namespace as spare.prepare() made it: made
    in the calling thread, which must be in it now."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.owner = os.getpid()
        try:
            self._made: list[bytes] | None = _state()
        except OSError:  # a kernel without one of the files (no IPv6): used once, as before
            self._made = None

    def unchanged(self) -> bool:
        """Whether nothing in it differs from when it was made (sockets, counters, flow labels, keys)."""
        if self._made is None:
            return False
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)  # (asked each time, as spare.py)
        try:
            try:
                sc.setns(self.fd, sc.CLONE_NEWNET)
            except OSError:
                return False
            try:
                return _state() == self._made
            except OSError:
                return False
            finally:
                try:
                    sc.setns(home, sc.CLONE_NEWNET)
                except OSError as exc:  # never seen; not to be passed over as "changed"
                    raise ContainerStartError(f"cannot return to this thread's network namespace: {exc}") from None
        finally:
            os.close(home)

    def close(self) -> None:
        if self.fd >= 0 and self.owner == os.getpid():  # (a fork's copy of the number is not ours to close)
            os.close(self.fd)
        self.fd = -1


def _state() -> list[bytes]:
    """What shows the calling thread's network namespace's state (see above)."""
    # (thread-self looked up once: 25 µs less than a path per file)
    folder = os.open("/proc/thread-self/net", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        state = [_read(name, folder) for name in PROBES]
    finally:
        os.close(folder)
    state[0] = _namespace_fields(state[0])  # sockstat (the others hold none of those fields)
    state.append(_read(_FASTOPEN_KEY))
    return state


def _namespace_fields(sockstat: bytes) -> bytes:
    """sockstat without its machine-wide "name value" pairs."""
    lines = []
    for line in sockstat.split(b"\n"):
        words = line.split(b" ")
        kept = words[:1]
        for name, value in zip(words[1::2], words[2::2]):
            if name not in _MACHINE_WIDE:
                kept += (name, value)
        lines.append(b" ".join(kept))
    return b"\n".join(lines)


def _read(path: str, folder: int | None = None) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=folder)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


_kept: list[Netns] = []


def reusable(privileged: bool, caps: int | None, seccomp: object, volumes: tuple[str, ...] = ()) -> bool:
    """Whether a container with these settings may give its namespace back:
    not privileged, no capability beyond Docker's default set (None: that
    set), its seccomp filter on, no volume (host paths, bound with what is
    mounted below them) that holds a proc mount."""
    return (not privileged and seccomp is not None and (caps is None or not caps & ~default_mask())
            and not _hold_proc(volumes))


# Volumes' sources -> whether one holds a proc mount: looked up once per set
# (the plugin's per-test volumes are the same each test), so a proc mount
# made below one later in the session is not seen.
_holding: dict[tuple[str, ...], bool] = {}


def _hold_proc(sources: tuple[str, ...]) -> bool:
    if not sources:
        return False
    known = _holding.get(sources)
    if known is None:
        if len(_holding) > 64:
            _holding.clear()
        # (a proc mount below a volume's source, or the source inside one)
        folders = [os.path.realpath(source).rstrip("/") + "/" for source in sources]
        points = [point.rstrip("/") + "/" for point in _proc_mount_points()]
        known = _holding[sources] = any(point.startswith(folder) or folder.startswith(point)
                                        for point in points for folder in folders)
    return known


def _proc_mount_points() -> list[str]:
    """Where proc file systems are mounted in this process's mount namespace."""
    fd = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    points = []
    for line in b"".join(chunks).decode("utf-8", "surrogateescape").splitlines():
        fields = line.split(" ")
        if "-" in fields[6:] and fields[fields.index("-", 6) + 1] == "proc":
            points.append(unescape_mount_point(fields[4]))
    return points


def give_back(netns: Netns) -> None:
    """Its container's processes are all gone: keep it for a later
    container if it is unchanged, else let it go (the kernel destroys it)."""
    if (netns.owner == os.getpid() and len(_kept) < _KEPT_AT_MOST
            and not any(os.path.exists(path) for path in _UNCHECKED) and netns.unchanged()):
        _kept.append(netns)
    else:
        netns.close()


def take() -> Netns | None:
    """A kept namespace, now the caller's, or None."""
    while _kept:
        netns = _kept.pop()
        if netns.owner == os.getpid():
            return netns
        netns.close()  # a fork's copy of the parent's list: not ours to hand out (nor to close: a no-op)
    return None


def drop_all() -> None:
    """Let every kept namespace go (the session's end)."""
    while _kept:
        _kept.pop().close()
