"""The `containers` fixture: extra containers a test starts (a database, a
service), all removed when the test ends.

    def test_talks_to_a_service(containers):
        svc = containers.run("busybox:1", ["sh", "-c", "echo ready; sleep 60"], name="svc", mem="64M")
        assert svc.exec("cat", "/etc/hostname").output == "svc\\n"
        assert "ready" in svc.logs()

A test that runs in its own container cannot start containers (it has no
privileges there), so inside a hermetic test every call travels to the
pytest process that forked it, which starts and owns the containers, and the
answer comes back (`forked/wire.py` carries the messages).  In a test run in
place the containers are started directly.
"""

from __future__ import annotations

import os
import signal
import tempfile
from typing import Any, Protocol

import pytest

from ._fs import rmtree
from .errors import SpecError

# Container, Spec, networks and portfwd are imported where used: the plugin
# loads this module in every session, also one with no hermetic test.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from .container import Container


class ExecResult:
    def __init__(self, exit_code: int, output: str) -> None:
        self.exit_code = exit_code
        self.output = output  # stdout and stderr, interleaved as written

    def __repr__(self) -> str:
        return f"ExecResult(exit_code={self.exit_code}, output={self.output!r})"


class ServiceContainer:
    """A running service container, owned by the process that started it."""

    def __init__(self, container: Container, log_path: str) -> None:
        self.container = container
        self.log_path = log_path
        self._forwarders: list = []

    @property
    def name(self) -> str:
        return self.container.name

    @property
    def ip(self) -> str | None:
        """Its address on its network; None with `net=False` (loopback only).
        With `net=True` the host reaches it there directly."""
        return self.container.address

    def _sockets(self):  # noqa: ANN202
        """Where connections to it are made from: its own network namespace,
        or rootless (which may not enter it) the bridge's, by its holder."""
        from .runtime import portfwd

        holder = getattr(self.container.network, "holder", None)
        if holder is not None:
            return holder.socket
        pid = self.container.pid
        if pid is None or self.container.result is not None:
            raise RuntimeError(f"container {self.name} is not running")
        return portfwd.socket_in(f"/proc/{pid}/ns/net")

    def wait_for_port(self, port: int, timeout: float = 30.0) -> None:
        """Return once something in it accepts TCP connections on `port`
        (asked from inside its own network namespace); TimeoutError after
        `timeout` seconds, ConnectionError (with its logs) if it ends first."""
        from .runtime.portfwd import wait_for_port

        alive = lambda: self.container.wait(0) is None  # noqa: E731
        try:
            wait_for_port(self._sockets(), self.ip or "127.0.0.1", port, timeout, alive)
        except ConnectionError as exc:
            raise ConnectionError(f"{exc}; it said: {self.logs()[-2000:]!r}") from None

    def address(self, port: int) -> tuple[str, int]:
        """Where the host reaches its `port`: its own address with `net=True`,
        else a port published on 127.0.0.1 for the rest of the test."""
        if self.container.spec.net is True and self.ip:
            return self.ip, port
        from .runtime.portfwd import Forwarder

        forwarder = Forwarder(self._sockets(), self.ip or "127.0.0.1", port)
        self._forwarders.append(forwarder)
        return forwarder.address

    def exec(self, *argv: str) -> ExecResult:
        """Run a command in it and wait; stdout and stderr come back together."""
        read_fd, write_fd = os.pipe()
        try:
            process = self.container.exec(list(argv), stdout=write_fd, stderr=write_fd)
        finally:
            os.close(write_fd)
        chunks: list[bytes] = []
        try:
            while chunk := os.read(read_fd, 65536):
                chunks.append(chunk)
        finally:
            os.close(read_fd)
        status = process.wait()
        assert status is not None  # no timeout: it waited for the end
        return ExecResult(status.shell_code, b"".join(chunks).decode(errors="replace"))

    def logs(self) -> str:
        """What its command wrote to stdout and stderr so far."""
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def wait(self, timeout: float | None = None) -> tuple[int, str | None] | None:
        """(exit code, reason) once it has ended; None if `timeout` passed first."""
        result = self.container.wait(timeout)
        return None if result is None else (result.exit_code, result.reason)

    def stop(self, timeout: float = 10.0) -> tuple[int, str | None]:
        """SIGTERM, then SIGKILL after `timeout` seconds; (exit code, reason)."""
        self.container.kill(signal.SIGTERM)
        result = self.container.wait(timeout)
        if result is None:
            self.container.kill(signal.SIGKILL)
            result = self.container.wait()
        assert result is not None
        return result.exit_code, result.reason


class Containers:
    """Starts containers for one test and removes them all at its end."""

    def __init__(self, scope: Any = None) -> None:
        """`scope`: the test's private networks (`networks.Scope`), shared
        with its own container when it is hermetic; else one of our own."""
        self._running: list[ServiceContainer] = []
        self._logs = tempfile.mkdtemp(prefix="hermetic-logs-")
        self._scope = scope
        self._own_scope = False

    def run(self, image: str, command: Any = None, *, name: str | None = None, env: dict[str, str] | None = None,
            mem: Any = None, net: Any = False, **options: Any) -> ServiceContainer:
        from .container import Container  # lazily (see the imports above)
        from .spec import Spec

        spec = Spec.build(image, command, name=name, env=env or {}, mem=mem, net=net, ephemeral=True, **options)
        if name is not None and any(service.name == name for service in self._running):
            raise SpecError(f"name={name!r}: this test already has a container of that name")
        network = None
        if isinstance(spec.net, str):
            network = self._network(spec.net)
        elif spec.net is True:
            from .networks import hold_host_bridge

            hold_host_bridge()
        log_path = os.path.join(self._logs, f"{len(self._running)}.log")
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        null_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        container = Container(spec, network=network)
        try:
            container.start(stdin=null_fd, stdout=log_fd, stderr=log_fd)
        finally:
            os.close(log_fd)
            os.close(null_fd)
        service = ServiceContainer(container, log_path)
        self._running.append(service)
        return service

    def _network(self, name: str) -> Any:
        if self._scope is None:
            from .networks import Scope

            self._scope, self._own_scope = Scope(), True
        return self._scope.get(name)

    def close(self) -> None:
        for service in self._running:
            for forwarder in service._forwarders:
                forwarder.close()
            service.container.remove()
        self._running.clear()
        if self._own_scope and self._scope is not None:
            self._scope.close()
        rmtree(self._logs)

    # The parent's side of the calls a hermetic test makes (see forked/parent.py).
    def handle(self, method: str, args: tuple, kwargs: dict) -> Any:
        if method == "run":
            service = self.run(*args, **kwargs)
            return len(self._running) - 1, service.name, service.ip
        number, *rest = args
        service = self._running[number]
        result = getattr(service, method)(*rest, **kwargs)
        return (result.exit_code, result.output) if isinstance(result, ExecResult) else result


class _RemoteService:
    """A service container owned by the parent pytest process."""

    def __init__(self, remote: Remote, number: int, name: str, ip: str | None) -> None:
        self._remote, self._number, self.name, self.ip = remote, number, name, ip

    def wait_for_port(self, port: int, timeout: float = 30.0) -> None:
        return self._remote.call("wait_for_port", self._number, port, timeout)

    def exec(self, *argv: str) -> ExecResult:
        return ExecResult(*self._remote.call("exec", self._number, *argv))

    def logs(self) -> str:
        return self._remote.call("logs", self._number)

    def wait(self, timeout: float | None = None) -> tuple[int, str | None] | None:
        return self._remote.call("wait", self._number, timeout)

    def stop(self, timeout: float = 10.0) -> tuple[int, str | None]:
        return self._remote.call("stop", self._number, timeout)


class _RemoteContainers:
    def __init__(self, remote: Remote) -> None:
        self._remote = remote

    def run(self, image: str, command: Any = None, **options: Any) -> _RemoteService:
        number, name, ip = self._remote.call("run", image, command, **options)
        return _RemoteService(self._remote, number, name, ip)


class Remote(Protocol):
    """The way from the child of a hermetic test to its parent, which runs the containers."""

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any: ...


# Set in the child of a hermetic test (forked/child.py).
remote: Remote | None = None


@pytest.fixture
def containers():  # noqa: ANN201
    """A factory for extra containers, all removed when the test ends:
    `containers.run(image, command, name=..., net=..., env=..., mem=...)`
    returns a handle with `exec`, `logs`, `wait`, `stop`, `wait_for_port`,
    `address` and `ip`.  `net="svc"` is a network private to this test (the
    test's own, if it is marked `@hermetic(net="svc")`), where the container
    is known by its `name`."""
    if remote is not None:
        yield _RemoteContainers(remote)  # the parent removes them after the test
        return
    factory = Containers()
    try:
        yield factory
    finally:
        factory.close()


__all__ = ["containers", "Containers", "ServiceContainer", "ExecResult"]
