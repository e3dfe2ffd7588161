"""`net=True` without root: slirp4netns, a user-mode TCP/IP stack.

An unprivileged user may not make veth pairs into the host's namespace, so
the container's network namespace gets a tap device served by slirp4netns
(from Debian's package of that name), which forwards the container's
connections through ordinary sockets of the user.  Its fixed layout:
the container is 10.0.2.100/24, the host is reachable as 10.0.2.2 (its
loopback included), and 10.0.2.3 forwards DNS to the host's resolver.

The helper starts once the container's namespaces exist (process.spawn
calls `start` with the pid that holds them) and the container's command
waits until it has configured the interface; it exits when the write end
of its exit pipe, which the parent holds, closes.  With an API socket it
also publishes the container's ports on the host (`-p`: `add_hostfwd`),
as rootless Podman's slirp4netns port handler does: it listens on the
host's side itself, as the user.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from ..errors import NetworkError

ADDRESS = "10.0.2.100"
GATEWAY = "10.0.2.2"
DNS = "10.0.2.3"
PREFIXLEN = 24
MTU = 65520  # slirp4netns's documented fast setting


def helper_path() -> str | None:
    return shutil.which("slirp4netns") or shutil.which("slirp4netns", path="/usr/bin:/bin")


def required_helper() -> str:
    """slirp4netns's path, or the error that says how to install it."""
    binary = helper_path()
    if binary is None:
        raise NetworkError("net=True as a non-root user needs slirp4netns, a user-mode network helper; fix: "
                           "`apt install slirp4netns` (or run as root for a bridged network)")
    return binary


def check_available() -> None:
    required_helper()


class Helper:
    """A running slirp4netns serving one container."""

    def __init__(self, pid: int, api_socket: str | None = None) -> None:
        binary = required_helper()
        self.api_socket = api_socket
        self._exit_w: int | None = None
        ready_r, ready_w = os.pipe()
        exit_r, self._exit_w = os.pipe2(os.O_CLOEXEC)
        try:
            self.process = subprocess.Popen(
                [binary, "--configure", f"--mtu={MTU}", "--ready-fd", str(ready_w), "--exit-fd", str(exit_r),
                 *(["--api-socket", api_socket] if api_socket else []), str(pid), "tap0"],
                pass_fds=(ready_w, exit_r), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, start_new_session=True)
        finally:
            os.close(ready_w)
            os.close(exit_r)
        try:
            ready = os.read(ready_r, 1)
        finally:
            os.close(ready_r)
        if ready != b"1":
            stderr, self.process.stderr = self.process.stderr, None  # close() would close it unread
            self.close()
            error = stderr.read().decode(errors="replace").strip() if stderr else ""
            if stderr:
                stderr.close()
            raise NetworkError(f"slirp4netns could not configure the container's network: {error or 'no reason given'}")

    def add_hostfwd(self, protocol: str, host_ip: str, host_port: int, guest_port: int) -> None:
        """Publish the container's `guest_port` on the host's `host_ip:host_port`."""
        import json
        import socket

        assert self.api_socket, "slirp4netns was started without an API socket"
        request = {"execute": "add_hostfwd", "arguments": {"proto": protocol, "host_addr": host_ip,
                                                           "host_port": host_port, "guest_port": guest_port}}
        answer = b""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(self.api_socket)
                sock.sendall(json.dumps(request).encode())
                while chunk := sock.recv(4096):
                    answer += chunk
            reply = json.loads(answer)
        except (OSError, ValueError) as exc:
            raise NetworkError(f"slirp4netns did not answer on its API socket ({exc})") from None
        if "error" in reply:
            error = reply["error"]
            raise NetworkError(f"slirp4netns cannot publish {host_ip}:{host_port}/{protocol}: "
                               f"{error.get('desc', error) if isinstance(error, dict) else error}")

    def close(self) -> None:
        if self._exit_w is not None:
            os.close(self._exit_w)
            self._exit_w = None
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
