"""Reaching a port inside a container's network namespace from the host.

A socket belongs to the network namespace its creator's thread was in when
it was made, whatever that thread does next.  So the parent steps into the
container's namespace just long enough to create a socket, steps back, and
connects it: no route from the host is needed, and the traffic never leaves
namespaces the engine made.  `Forwarder` publishes such a port on the
host's loopback (a thread per direction per connection: test traffic).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Callable

from . import netns


def socket_in(netns_path: str) -> Callable[[], socket.socket]:
    """A maker of TCP sockets inside the namespace at `netns_path`."""

    def make() -> socket.socket:
        fd = netns.open_path(netns_path)
        try:
            with netns.entered(fd):
                return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            os.close(fd)

    return make


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

    def __init__(self, make_socket: Callable[[], socket.socket], address: str, port: int,
                 bind: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self.target = (make_socket, address, port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind(bind)
        except OSError:
            self.listener.close()
            raise
        self.listener.listen(64)
        self.address = self.listener.getsockname()
        self._closed = False
        self._open: set[socket.socket] = set()
        threading.Thread(target=self._accept, name=f"hermetic-publish-{port}", daemon=True).start()

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
