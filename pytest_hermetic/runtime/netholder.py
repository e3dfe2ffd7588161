"""A rootless network's bridge, kept by a small process of the user's own.

An unprivileged user may make a bridge only in a network namespace of a
user namespace it owns, and may wire a veth between two network namespaces
only where it holds CAP_NET_ADMIN over both.  So a rootless network is a
holder process (forked by the network's owner, tied to it by
PR_SET_PDEATHSIG) in a user namespace of its own with a network namespace
holding the bridge; every container on the network joins that user
namespace (instead of making one) before it makes its own namespaces, which
the holder therefore may wire: asked over a socket, it makes the veth pair
with the container's end born in the container's namespace as `eth0`.

Members of one network share a user namespace, as podman's rootless pods do;
each still has its own PID, mount and network namespace, so none sees or
enters another's processes or files.
"""

from __future__ import annotations

import os
import signal
import socket

from ..errors import NetworkError
from . import bridges
from . import syscalls as sc
from .bridges import Bridge
from .fork import fork, release_signals
from .namespaces import UserNamespace
from .network import loopback_up
from .ns_sockets import SocketSource


class Holder(SocketSource):
    """The parent's handle on a holder process.  Its sockets are made in the
    bridge's namespace (which routes to every member): how the owner, who
    may not enter these namespaces, reaches a container's port."""

    gone = "the network's holder process is gone"
    error = NetworkError

    def __init__(self, userns: UserNamespace, gateway: str, prefixlen: int) -> None:
        bridges.preload()  # pyroute2, imported here, before the fork
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        helpers = userns.mapped_from_outside  # asked here: in the child, mapped, we are root
        pid = fork()
        if pid == 0:
            parent_end.close()
            _holder_main(child_end, userns, helpers, gateway, prefixlen)  # never returns
        child_end.close()
        self.pid = pid
        self._sock = parent_end
        try:
            if self._sock.recv(16) == b"U" and helpers:
                userns.write_maps_from_outside(pid)
            self._sock.send(b"M")
            answer = self._sock.recv(4096).decode(errors="replace")
        except OSError as exc:
            answer = f"E{exc}"
        if answer != "R":
            self.close()
            raise NetworkError(f"cannot make the rootless network's bridge: {answer[1:] or 'the holder died'}")

    @property
    def userns_path(self) -> str:
        return f"/proc/{self.pid}/ns/user"

    def connect(self, pid: int, veth: str) -> None:
        """Put a veth end, as `eth0`, in the network namespace of process `pid`."""
        try:
            self._sock.send(f"{pid} {veth}".encode())
            answer = self._sock.recv(4096).decode(errors="replace")
        except OSError as exc:
            answer = f"Ethe network's holder process is gone ({exc})"
        if answer != "K":
            raise NetworkError(f"cannot connect the container to its rootless network: {answer[1:]}")


def _holder_main(sock: socket.socket, userns: UserNamespace, helpers: bool, gateway: str, prefixlen: int) -> None:
    code = 0
    try:
        try:
            release_signals()  # (inside the `finally: os._exit`: see fork.py)
            sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
            sc.unshare(sc.CLONE_NEWUSER)
            sock.send(b"U")
            if sock.recv(16) != b"M":
                os._exit(1)
            if not helpers:
                userns.write_own_maps()
            sc.unshare(sc.CLONE_NEWNET)
            loopback_up()
            bridge = Bridge("br0")
            bridge.create(gateway, prefixlen)
        except BaseException as exc:  # noqa: BLE001 - said to the parent
            sock.send(f"E{exc}".encode())
            os._exit(1)
        sock.send(b"R")
        while True:
            request = sock.recv(4096)
            if not request:
                break  # the owner closed the network (or died)
            if request in (b"socket", b"socket udp"):
                try:
                    kind = socket.SOCK_DGRAM if request == b"socket udp" else socket.SOCK_STREAM
                    made = socket.socket(socket.AF_INET, kind)
                    socket.send_fds(sock, [b"K"], [made.fileno()])
                    made.close()
                except BaseException as exc:  # noqa: BLE001
                    sock.send(f"E{exc}".encode())
                continue
            pid, veth = request.decode().split()
            try:
                fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    bridge.connect(fd, veth)
                finally:
                    os.close(fd)
                sock.send(b"K")
            except BaseException as exc:  # noqa: BLE001
                sock.send(f"E{exc}".encode())
    except BaseException:  # noqa: BLE001
        code = 1
    finally:
        os._exit(code)
