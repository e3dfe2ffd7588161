"""Sockets made inside a rootless container's network namespace, for its owner.

Root steps a thread into a container's network namespace to make a socket
there (portfwd.socket_in).  Its owner may not: entering a network namespace
needs CAP_SYS_ADMIN in one's own user namespace too, which it has only once
inside the container's user namespace, and a process with threads may not
join a user namespace at all.  So a forked helper joins the container's user
namespace, then its network namespace, and makes sockets there on request,
handing them over (SCM_RIGHTS), as the rootless network holder does
(netholder.py).  It ends when its parent closes its end or dies.
"""

from __future__ import annotations

import os
import signal
import socket

from ..errors import NetworkError
from . import syscalls as sc
from .fork import fork, release_signals


class SocketSource:
    """The parent's end of a forked helper that makes sockets in namespaces
    the parent may not enter and hands them over (SCM_RIGHTS); `close`
    kills the helper.  Subclasses fork it and set `pid` and `_sock`."""

    pid = 0
    _sock: socket.socket
    gone = "the helper is gone"  # what a failure says, as the subclass words it
    error: type[Exception] = OSError

    def socket(self, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A TCP (or, with `kind` SOCK_DGRAM, UDP) socket made in the helper's network namespace."""
        try:
            self._sock.send(b"socket udp" if kind == socket.SOCK_DGRAM else b"socket")
            message, fds, _, _ = socket.recv_fds(self._sock, 4096, 1)
        except OSError as exc:
            raise self.error(f"{self.gone} ({exc})") from None
        if not fds:
            raise self.error(f"{self.gone.replace(' is gone', '')} made no socket: {message[1:].decode(errors='replace')}")
        return socket.socket(fileno=fds[0])

    def close(self) -> None:
        if self.pid:
            self._sock.close()
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.pid = 0


class SocketMaker(SocketSource):
    """A helper process in the namespaces `fds` ("user", "net") of a rootless container; closes `fds`."""

    gone = "the container's socket helper is gone"

    def __init__(self, fds: dict[str, int]) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = fork()
        if pid == 0:
            parent_end.close()
            _main(child_end, fds)  # never returns
        child_end.close()
        for fd in fds.values():
            os.close(fd)
        self.pid = pid
        self._sock = parent_end
        answer = b""
        try:
            answer = self._sock.recv(4096)
        except OSError:
            pass
        if answer != b"R":
            self.close()
            raise NetworkError("-p: cannot enter the rootless container's network namespace: "
                               f"{answer[1:].decode(errors='replace') or 'the helper died'}")


def _main(sock: socket.socket, fds: dict[str, int]) -> None:
    code = 0
    try:
        try:
            release_signals()  # (inside the `finally: os._exit`: see fork.py)
            sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
            sc.setns(fds["user"], sc.CLONE_NEWUSER)
            sc.setns(fds["net"], sc.CLONE_NEWNET)
            for fd in fds.values():
                os.close(fd)
        except BaseException as exc:  # noqa: BLE001 - said to the parent
            sock.send(f"E{exc}".encode())
            os._exit(1)
        sock.send(b"R")
        while True:
            request = sock.recv(4096)
            if not request:
                break  # the owner is done (or died)
            try:
                made = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if request == b"socket udp" else socket.SOCK_STREAM)
                socket.send_fds(sock, [b"K"], [made.fileno()])
                made.close()
            except BaseException as exc:  # noqa: BLE001
                sock.send(f"E{exc}".encode())
    except BaseException:  # noqa: BLE001
        code = 1
    finally:
        os._exit(code)
