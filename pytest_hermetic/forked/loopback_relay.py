"""The pytest process's loopback listeners, reachable from a hermetic test.

A server that a wider-scope fixture starts on a thread of the pytest process
(pytest-httpserver, a tornado or socket server) listens on 127.0.0.1 in the
host's network namespace; the test, in a namespace of its own, could not
connect.  At fork time the parent lists its own TCP listeners on loopback or
on every address (`listeners`, from its descriptors), and, if there are any,
opens sockets at the same addresses and ports in the test's namespace
(`Relay`: a socket belongs to the namespace its thread was in when it was
made) and relays each connection to the original.  The test keeps its own namespace (its own ports
never clash with another test's), and a session with no listeners pays one
look at its descriptors per test (tens of microseconds).
"""

from __future__ import annotations

import os
import select
import socket
import stat
import threading

from ..runtime import netns
from ..runtime.portfwd import pump

def listeners() -> list[tuple[int, str, int]]:
    """(family, address, port) of every TCP socket of this process that
    listens on loopback or on every address.

    From its descriptors (an fstat each; a few syscalls per socket), not
    from /proc/net/tcp, whose reading walks the kernel's whole connection
    table: about 2 ms a test on a quiet host."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=fd)
        except OSError:
            continue
        try:
            if sock.family not in _LOOPBACK_OR_ANY or sock.type != socket.SOCK_STREAM or \
                    not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                continue
            address, port = sock.getsockname()[:2]
            if _LOOPBACK_OR_ANY[sock.family](address):
                found.add((int(sock.family), address, port))
        except OSError:
            continue
        finally:
            sock.detach()  # the descriptor stays its owner's
    return sorted(found)


_LOOPBACK_OR_ANY = {socket.AF_INET: lambda a: a.startswith("127.") or a == "0.0.0.0",
                    socket.AF_INET6: lambda a: a in ("::1", "::")}


class Relay:
    """Sockets at `found`'s addresses in the namespace of process `pid`,
    each connection to them relayed to the listener of the same address
    here (a thread accepts, two per connection copy)."""

    def __init__(self, pid: int, found: list[tuple[int, str, int]]) -> None:
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self._targets: dict[socket.socket, tuple[int, str, int]] = {}
        fd = netns.open_path(f"/proc/{pid}/ns/net")
        try:
            with netns.entered(fd):
                for family, address, port in found:
                    sock = socket.socket(family, socket.SOCK_STREAM)
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                        if family == socket.AF_INET6:
                            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                        sock.bind((address, port))
                        sock.listen(64)
                    except BaseException:
                        sock.close()
                        raise
                    self._targets[sock] = (family, address, port)
        except BaseException:
            self.close()
            raise
        finally:
            os.close(fd)
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._accept, name="hermetic-loopback-relay", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        listeners = list(self._targets)
        by_fd = {sock.fileno(): sock for sock in listeners}
        while True:
            ready, _, _ = select.select([*by_fd, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            for listener in (by_fd[fd] for fd in ready):
                try:
                    client, _ = listener.accept()
                except OSError:
                    continue
                family, address, port = self._targets[listener]
                try:
                    upstream = socket.create_connection(("127.0.0.1" if address == "0.0.0.0" else
                                                         "::1" if address == "::" else address, port), timeout=5)
                    upstream.settimeout(None)
                except OSError:
                    client.close()
                    continue
                with self._lock:
                    if self._closed:
                        client.close()
                        upstream.close()
                        return
                    self._open += (client, upstream)
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=pump, args=(a, b), daemon=True).start()

    def close(self) -> None:
        """Stop accepting and cut every relayed connection (the test is over)."""
        with self._lock:
            self._closed = True
            sockets, self._open = self._open, []
        if hasattr(self, "_thread"):
            os.write(self._wake_w, b"x")
            self._thread.join()
            os.close(self._wake_r)
            os.close(self._wake_w)
        for sock in [*self._targets, *sockets]:
            try:
                if sock in sockets:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked in recv
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass
        self._targets = {}
