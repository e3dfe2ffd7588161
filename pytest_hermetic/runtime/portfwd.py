"""Reaching a port inside a container's network namespace from the host.

A socket belongs to the network namespace its creator's thread was in when
it was made, whatever that thread does next.  So the parent steps into the
container's namespace just long enough to create a socket, steps back, and
connects it: no route from the host is needed, and the traffic never leaves
namespaces the engine made.  `Forwarder` publishes such a TCP port on the
host's loopback (a thread per direction per connection: test traffic),
`UdpForwarder` a UDP one (a socket in the namespace per client address).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Callable

from . import netns

UDP_IDLE = 60.0  # seconds a UDP client's relay lives without traffic (conntrack's stream timeout is 120)
UDP_CLIENTS = 512  # relays at once (a socket and a thread each); datagrams of further clients are dropped


def socket_in(netns_path: str) -> Callable[..., socket.socket]:
    """A maker of sockets (TCP by default, `kind` SOCK_DGRAM for UDP) inside the namespace at `netns_path`."""

    def make(kind: int = socket.SOCK_STREAM) -> socket.socket:
        fd = netns.open_path(netns_path)
        try:
            with netns.entered(fd):
                return socket.socket(socket.AF_INET, kind)
        finally:
            os.close(fd)

    return make


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def connect(make_socket: Callable[[], socket.socket], address: str, port: int, timeout: float = 5.0) -> socket.socket:
    """A TCP connection to `address:port` from a socket `make_socket` gives
    (made in a namespace that reaches the container)."""
    sock = make_socket()
    sock.settimeout(timeout)
    try:
        sock.connect((address, port))
    except BaseException:
        sock.close()
        raise
    sock.settimeout(None)
    return sock


def wait_for_port(make_socket: Callable[[], socket.socket], address: str, port: int, timeout: float,
                  alive=lambda: True) -> None:  # noqa: ANN001
    """Until something accepts on `address:port` there; TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not alive():
            raise ConnectionError(f"the container ended before anything listened on port {port}")
        try:
            connect(make_socket, address, port, timeout=max(0.05, min(1.0, deadline - time.monotonic()))).close()
            return
        except OSError as exc:
            last = exc
            time.sleep(0.02)
    raise TimeoutError(f"nothing accepted connections on {address}:{port} within {timeout:g} s (last: {last})")


class Forwarder:
    """127.0.0.1:<free port> (or `bind`) on the host, relayed to `address:port` in the namespace."""

    port: object = None  # the caller's note of what it publishes

    def __init__(self, make_socket: Callable[[], socket.socket] | None, address: str, port: int,
                 bind: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        """Without `make_socket` it only listens (connections wait in the
        backlog) until `attach` says where to relay them: the host port is
        taken before the container starts."""
        self.container_port = port
        self.listener = socket.socket(_family(bind[0]), socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.listener.family == socket.AF_INET6:
            self.listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            self.listener.bind(bind)
        except OSError:
            self.listener.close()
            raise
        self.listener.listen(64)
        self.address = self.listener.getsockname()
        self._closed = False
        self._open: set[socket.socket] = set()
        if make_socket is not None:
            self.attach(make_socket, address)

    def attach(self, make_socket: Callable[..., socket.socket], address: str) -> None:
        self.target = (make_socket, address, self.container_port)
        threading.Thread(target=self._accept, name=f"hermetic-publish-{self.container_port}", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = connect(*self.target)
            except OSError:
                client.close()
                continue
            self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        for sock in list(self._open):
            try:
                sock.close()
            except OSError:
                pass
        self._open.clear()


def pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy one direction of a relayed connection until its end, then pass
    the end on (half-close), so the other direction can finish."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class UdpForwarder:
    """`bind` on the host (UDP), relayed to `address:port` in the namespace:
    each client address gets a socket there, so replies find their way back;
    one left idle for UDP_IDLE seconds is closed."""

    port: object = None  # the caller's note of what it publishes

    def __init__(self, make_socket: Callable[..., socket.socket] | None, address: str, port: int,
                 bind: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        """Without `make_socket`, as `Forwarder`: datagrams wait until `attach`."""
        self.container_port = port
        self.listener = socket.socket(_family(bind[0]), socket.SOCK_DGRAM)
        if self.listener.family == socket.AF_INET6:
            self.listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            self.listener.bind(bind)
        except OSError:
            self.listener.close()
            raise
        self.address = self.listener.getsockname()
        self._closed = False
        self._clients: dict[tuple, socket.socket] = {}
        self._lock = threading.Lock()
        if make_socket is not None:
            self.attach(make_socket, address)

    def attach(self, make_socket: Callable[..., socket.socket], address: str) -> None:
        self.target = (address, self.container_port)
        self._make = make_socket
        threading.Thread(target=self._receive, name=f"hermetic-publish-udp-{self.container_port}", daemon=True).start()

    def _receive(self) -> None:
        while not self._closed:
            try:
                data, client = self.listener.recvfrom(65536)
            except OSError:
                return
            with self._lock:
                upstream = self._clients.get(client)
            if upstream is None:
                if len(self._clients) >= UDP_CLIENTS:
                    continue  # as a full conntrack table would: the client retries later
                try:
                    upstream = self._make(socket.SOCK_DGRAM)
                    upstream.connect(self.target)
                except OSError:
                    continue
                with self._lock:
                    self._clients[client] = upstream
                threading.Thread(target=self._reply, args=(client, upstream), daemon=True).start()
            try:
                upstream.send(data)
            except OSError:
                pass  # nothing listens there (yet): as a datagram to a closed port, it is lost

    def _reply(self, client: tuple, upstream: socket.socket) -> None:
        upstream.settimeout(UDP_IDLE)
        try:
            while not self._closed:
                try:
                    data = upstream.recv(65536)
                except ConnectionRefusedError:
                    continue  # an ICMP port-unreachable for an earlier datagram: keep relaying
                self.listener.sendto(data, client)
        except OSError:
            pass
        finally:
            with self._lock:
                if self._clients.get(client) is upstream:
                    del self._clients[client]
            upstream.close()

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        with self._lock:
            for sock in self._clients.values():
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._clients.clear()
