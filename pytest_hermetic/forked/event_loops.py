"""Event loops the pytest process made, usable in the test that forks from it.

A wider-scope fixture may leave the main thread an event loop (tornado's
`IOLoop.current()`, asyncio's loop of the main thread) that a function-scope
fixture then uses in the test, as urllib3's test servers do.  Its epoll
instance and its wake-up socket pair are descriptors that the container
seals (runtime/descriptors.py: an anonymous inode and sockets become
/dev/null), so the loop fails in the test ("[Errno 22] Invalid argument").

So at fork time the parent notes its epoll instances (with what each
watches, from /proc/self/fdinfo) and its unnamed Unix socket pairs whose two
ends it holds both (their peers from the kernel's sock_diag), and the child
puts private copies in their place before the test runs: a new socket pair
at the same two descriptor numbers, a new epoll instance watching the same
descriptors that survived the seal, with the same events and data.  Nothing
is shared with the pytest process (a shared epoll instance would mix the
test's descriptors into the parent's loop), and nothing reaches beyond the
test: the copies connect only to themselves.

The parent looks for them in the same walk over its descriptors as
loopback_relay's listeners; a process without epoll instances and socket
pairs pays nothing more.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass, field

from ..runtime import syscalls as sc


@dataclass
class Loops:
    """What the child copies: epoll instances as (fd, [(target fd, events, data)]),
    socket pairs as (fd, fd, socket type, [O_NONBLOCK of each end])."""

    epolls: list[tuple[int, list[tuple[int, int, int]]]] = field(default_factory=list)
    pairs: list[tuple[int, int, int, tuple[bool, bool]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.epolls or self.pairs)


def note(epoll_fds: list[int], unix_fds: dict[int, tuple[int, int]]) -> Loops:
    """In the parent: the epoll instances `epoll_fds` and, of the unnamed
    Unix sockets `unix_fds` ({fd: (inode, type)}), the pairs held whole."""
    loops = Loops()
    if unix_fds:
        by_inode = {inode: fd for fd, (inode, _) in unix_fds.items()}
        seen: set[int] = set()
        for fd, (inode, kind) in unix_fds.items():
            peer = by_inode.get(peer_inode(inode) or -1)
            if peer is not None and fd not in seen and peer not in seen:
                seen.update((fd, peer))
                loops.pairs.append((fd, peer, kind, (_nonblocking(fd), _nonblocking(peer))))
    for fd in epoll_fds:
        try:
            loops.epolls.append((fd, watched(fd)))
        except OSError:
            continue
    return loops


def _nonblocking(fd: int) -> bool:
    return not os.get_blocking(fd)


def watched(epoll_fd: int) -> list[tuple[int, int, int]]:
    """(target fd, events, data) of each descriptor epoll instance `epoll_fd` watches."""
    found = []
    with open(f"/proc/self/fdinfo/{epoll_fd}") as f:
        for line in f:
            if line.startswith("tfd:"):
                parts = line.split()
                found.append((int(parts[1]), int(parts[3], 16), int(parts[5], 16)))
    return found


# sock_diag(7) for AF_UNIX: one socket by inode, with its peer's inode.
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_UDIAG_SHOW_PEER = 0x4
_UNIX_DIAG_PEER = 2
_NLMSG_ERROR = 2
_REQUEST = struct.Struct("=IHHII" "BBHIIIII")  # nlmsghdr, unix_diag_req


def peer_inode(inode: int) -> int | None:
    """The inode of the peer of the Unix socket `inode`, or None."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        nl.send(_REQUEST.pack(_REQUEST.size, _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0,
                              socket.AF_UNIX, 0, 0, 0xFFFFFFFF, inode, _UDIAG_SHOW_PEER, 0xFFFFFFFF, 0xFFFFFFFF))
        data = nl.recv(8192)
    length, kind = struct.unpack_from("=IH", data)
    if kind == _NLMSG_ERROR or length > len(data):
        return None
    offset = 16 + 16  # nlmsghdr, unix_diag_msg
    while offset + 4 <= length:
        size, attr = struct.unpack_from("=HH", data, offset)
        if size < 4:
            break
        if attr == _UNIX_DIAG_PEER:
            return struct.unpack_from("=I", data, offset + 4)[0]
        offset += (size + 3) & ~3
    return None


def copy_in_child(loops: Loops) -> None:
    """In the child, after the seal: private copies at the same numbers.
    Not where the number is free: a library closed its own in the fork (an
    at-fork hook: libzmq's poller); the copy would be nobody's."""
    for a, b, kind, nonblocking in loops.pairs:
        if not (_is_open(a) and _is_open(b)):
            continue
        first, second = socket.socketpair(socket.AF_UNIX, kind)
        for new, fd, flag in ((first, a, nonblocking[0]), (second, b, nonblocking[1])):
            os.dup2(new.fileno(), fd, inheritable=False)
            os.set_blocking(fd, not flag)
            new.close()
    for fd, targets in loops.epolls:
        if not _is_open(fd):
            continue
        epoll = sc.epoll_create()
        try:
            for target, events, data in targets:
                try:
                    sc.epoll_add(epoll, target, events, data)
                except OSError:
                    continue  # sealed (/dev/null cannot be watched) or closed
            os.dup2(epoll, fd, inheritable=False)
        finally:
            os.close(epoll)


def _is_open(fd: int) -> bool:
    try:
        os.get_inheritable(fd)  # (one fcntl)
        return True
    except OSError:
        return False
