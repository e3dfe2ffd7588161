"""The pytest process's loopback servers, reachable from a hermetic test.

A server that a wider-scope fixture starts on a thread of the pytest process
(pytest-httpserver, a tornado or socket server) listens on 127.0.0.1 in the
host's network namespace; the test, in a namespace of its own, could not
reach it.  At fork time the parent lists its own listening sockets
(`listeners`: TCP listening, UDP bound, on loopback or on every address,
IPv4 and IPv6, from its descriptors), and only if there are any:

* The child, in its own namespace, opens a socket at each of those
  addresses and ports before the test runs (`mirror`).  So the test keeps
  its own namespace (its ports never clash with another test's), and this
  needs no privilege: it works rootless as well.
* A server that `socketserver`'s `serve_forever` runs on a thread (http.server,
  werkzeug, so pytest-httpserver) is served again in the child, by a new
  thread on the child's copy of the server, on the child's socket put in
  place of the original: threads do not survive a fork, and the test
  changes the server's state (a handler it expects) in its own memory.
* Every other one is relayed to the original (`Relay`): the parent takes
  the child's sockets with pidfd_getfd(2) (sealed descriptors keep the child
  from being handed a socket of the parent's) and copies each connection or
  datagram to its server in the pytest process.

A session without listeners pays one look at its descriptors per test
(tens of microseconds) and nothing else.
"""

from __future__ import annotations

import os
import select
import socket
import socketserver
import stat
import sys
import threading
from dataclasses import dataclass
from typing import Any

from ..runtime import syscalls as sc
from ..runtime.portfwd import pump


@dataclass(frozen=True)
class Listener:
    """One of the pytest process's listening sockets: its descriptor, kind and address."""

    fd: int
    family: int
    type: int
    address: str
    port: int
    v6only: bool = False


_LOOPBACK_OR_ANY = {socket.AF_INET: lambda a: a.startswith("127.") or a == "0.0.0.0",
                    socket.AF_INET6: lambda a: a in ("::1", "::")}


def listeners(loops: dict | None = None) -> list[Listener]:
    """Every TCP socket of this process listening, and every UDP socket
    bound and not connected, on loopback or on every address.  With
    `loops`, the same walk also notes what event_loops copies: epoll
    instances in loops["epoll"] (a list), unnamed Unix sockets in
    loops["unix"] ({fd: (inode, type)}).

    From its descriptors (an fstat each; a few syscalls per socket), not
    from /proc/net/tcp, whose reading walks the kernel's whole connection
    table: about 2 ms a test on a quiet host."""
    found: dict[tuple, Listener] = {}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            info = os.fstat(fd)
            if not stat.S_ISSOCK(info.st_mode):
                if loops is not None and stat.S_IFMT(info.st_mode) == 0 and \
                        os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventpoll]":
                    loops.setdefault("epoll", []).append(fd)
                continue
            sock = socket.socket(fileno=fd)
        except OSError:
            continue
        try:
            if sock.family == socket.AF_UNIX:
                if loops is not None and not sock.getsockname():
                    loops.setdefault("unix", {})[fd] = (info.st_ino, int(sock.type))
                continue
            listener = _listening(fd, sock)
            if listener is not None:
                found.setdefault((listener.family, listener.type, listener.address, listener.port), listener)
        except OSError:
            continue
        finally:
            sock.detach()  # the descriptor stays its owner's
    return sorted(found.values(), key=lambda listener: listener.fd) if found else []


def _listening(fd: int, sock: socket.socket) -> Listener | None:
    if sock.family not in _LOOPBACK_OR_ANY:
        return None
    kind = sock.type
    if kind == socket.SOCK_STREAM:
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            return None
    elif kind == socket.SOCK_DGRAM:
        try:
            sock.getpeername()
            return None  # a connected (client) socket
        except OSError:
            pass
    else:
        return None
    address, port = sock.getsockname()[:2]
    if port == 0 or not _LOOPBACK_OR_ANY[sock.family](address):
        return None
    v6only = sock.family == socket.AF_INET6 and bool(sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
    return Listener(fd, int(sock.family), int(kind), address, port, v6only)


def serving(found: list[Listener]) -> dict[int, tuple[Any, float]]:
    """{fd: (server, poll interval)} for the `found` sockets that a
    `socketserver` server's `serve_forever` serves on another thread now."""
    fds = {listener.fd for listener in found if listener.type == socket.SOCK_STREAM}
    loop = socketserver.BaseServer.serve_forever.__code__
    servers: dict[int, tuple[Any, float]] = {}
    for ident, top in sys._current_frames().items():
        if ident == threading.get_ident():
            continue
        frame: Any = top
        while frame is not None:
            if frame.f_code is loop:
                server: Any = frame.f_locals.get("self")
                try:
                    fd = server.socket.fileno()
                except (AttributeError, OSError):
                    break
                if fd in fds:
                    servers[fd] = (server, frame.f_locals.get("poll_interval", 0.5))
                break
            frame = frame.f_back
    return servers


_mirrors: list[socket.socket] = []  # the child's relayed sockets, alive as long as it is


def mirror(found: list[Listener], servers: dict[int, tuple[Any, float]]) -> list[tuple[int, int, int, str, int]]:
    """In the child: a socket at each of `found`'s addresses in this
    namespace; the `servers` served here again, the others returned as
    (fd, family, type, address, port) for the parent to relay.  A socket that
    cannot be made here (a low port with the test's user not root) is left
    out: the test sees the connection refused, as it would without it."""
    relayed = []
    for listener in found:
        try:
            sock = socket.socket(listener.family, listener.type)
        except OSError:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if listener.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(listener.v6only))
            sock.bind((listener.address, listener.port))
            if listener.type == socket.SOCK_STREAM:
                sock.listen(128)
        except OSError:
            sock.close()
            continue
        if listener.fd in servers:
            server, poll_interval = servers[listener.fd]
            os.dup2(sock.fileno(), listener.fd)  # the server's socket object now listens here
            sock.close()
            threading.Thread(target=server.serve_forever, args=(poll_interval,), daemon=True,
                             name="hermetic-served-again").start()
        else:
            _mirrors.append(sock)
            relayed.append((sock.fileno(), listener.family, listener.type, listener.address, listener.port))
    return relayed


def test_process(container_pid: int) -> int:
    """The host pid of the test (PID 2 of its container): the container's
    own pid, or (rootless, where PID 1 is an init of ours) its child."""
    if _ns_pid(container_pid) == 2:
        return container_pid
    with open(f"/proc/{container_pid}/task/{container_pid}/children") as f:
        for child in f.read().split():
            if _ns_pid(int(child)) == 2:
                return int(child)
    raise ProcessLookupError(f"no test process under {container_pid}")


def _ns_pid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    return 0


class Relay:
    """The child's sockets (`relayed`, taken from process `pid`), each
    connection or datagram to them copied to the listener of the same
    address here.  One thread accepts and carries datagrams, two per TCP
    connection copy."""

    def __init__(self, pid: int, relayed: list[tuple[int, int, int, str, int]]) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._open: list[socket.socket] = []
        self._targets: dict[socket.socket, tuple[int, int, tuple[str, int]]] = {}
        self._udp: dict[tuple[socket.socket, Any], socket.socket] = {}  # (mirror, client) -> upstream
        self._replies: dict[socket.socket, tuple[socket.socket, Any]] = {}  # upstream -> (mirror, client)
        pidfd = os.pidfd_open(pid)
        try:
            for fd, family, kind, address, port in relayed:
                sock = socket.socket(fileno=sc.pidfd_getfd(pidfd, fd))
                sock.setblocking(True)
                upstream = "127.0.0.1" if address == "0.0.0.0" else "::1" if address == "::" else address
                self._targets[sock] = (family, kind, (upstream, port))
        except BaseException:
            for sock in self._targets:
                sock.close()
            raise
        finally:
            os.close(pidfd)
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._serve, name="hermetic-loopback-relay", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            sockets = {sock.fileno(): sock for sock in (*self._targets, *self._replies)}
            ready, _, _ = select.select([*sockets, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            for sock in (sockets[fd] for fd in ready):
                try:
                    if sock in self._replies:
                        mirror, client = self._replies[sock]
                        mirror.sendto(sock.recv(65536), client)
                    elif self._targets[sock][1] == socket.SOCK_DGRAM:
                        self._datagram(sock)
                    else:
                        self._connection(sock)
                except OSError:
                    continue

    def _datagram(self, mirror: socket.socket) -> None:
        data, client = mirror.recvfrom(65536)
        upstream = self._udp.get((mirror, client))
        if upstream is None:
            family, _, target = self._targets[mirror]
            upstream = socket.socket(family, socket.SOCK_DGRAM)
            upstream.connect(target)
            self._udp[(mirror, client)] = upstream
            self._replies[upstream] = (mirror, client)
        upstream.send(data)

    def _connection(self, listener: socket.socket) -> None:
        client, _ = listener.accept()
        family, _, target = self._targets[listener]
        try:
            upstream = socket.create_connection(target, timeout=5)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        with self._lock:
            if self._closed:
                client.close()
                upstream.close()
                return
            self._open += (client, upstream)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()

    def close(self) -> None:
        """Stop relaying and cut every relayed connection (the test is over)."""
        with self._lock:
            self._closed = True
            sockets, self._open = self._open, []
        os.write(self._wake_w, b"x")
        self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked in recv
            except OSError:
                pass
        for sock in [*self._targets, *sockets, *self._replies]:
            sock.close()
        self._targets, self._udp, self._replies = {}, {}, {}
