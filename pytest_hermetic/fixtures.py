"""The `containers` fixture: extra containers a test starts (a database, a
service), all removed when the test ends.

    def test_talks_to_a_service(containers):
        svc = containers.run("busybox:1", ["sh", "-c", "echo ready; sleep 60"], name="svc", mem="64M")
        assert svc.exec("cat", "/etc/hostname").output == "svc\\n"
        assert "ready" in svc.logs()

A test that runs in its own container cannot start containers (it has no
privileges there), so inside a hermetic test every call travels to the
pytest process that forked it, which starts and owns the containers, and the
answer comes back (`forked.py` carries the messages).  In a test run in
place the containers are started directly.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from typing import Any

import pytest

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

    @property
    def name(self) -> str:
        return self.container.name

    @property
    def ip(self) -> str | None:
        """Its address on a network; None with `net=False` (loopback only)."""
        return None

    def exec(self, *argv: str) -> ExecResult:
        """Run a command in it and wait; stdout and stderr come back together."""
        read_fd, write_fd = os.pipe()
        try:
            process = self.container.exec(list(argv), stdout=write_fd, stderr=write_fd)
        finally:
            os.close(write_fd)
        chunks = []
        try:
            while chunk := os.read(read_fd, 65536):
                chunks.append(chunk)
        finally:
            os.close(read_fd)
        status = process.wait()
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

    def __init__(self) -> None:
        self._running: list[ServiceContainer] = []
        self._logs = tempfile.mkdtemp(prefix="hermetic-logs-")

    def run(self, image: str, command: Any = None, *, name: str | None = None, env: dict[str, str] | None = None,
            mem: Any = None, **options: Any) -> ServiceContainer:
        from .container import Container  # lazily: the plugin loads this module in every session
        from .spec import Spec

        spec = Spec.build(image, command, name=name, env=env or {}, mem=mem, ephemeral=True, **options)
        log_path = os.path.join(self._logs, f"{len(self._running)}.log")
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        null_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        container = Container(spec)
        try:
            container.start(stdin=null_fd, stdout=log_fd, stderr=log_fd)
        finally:
            os.close(log_fd)
            os.close(null_fd)
        service = ServiceContainer(container, log_path)
        self._running.append(service)
        return service

    def close(self) -> None:
        for service in self._running:
            service.container.remove()
        self._running.clear()
        from ._fs import rmtree

        rmtree(self._logs)

    # The parent's side of the calls a hermetic test makes (see forked.py).
    def handle(self, method: str, args: tuple, kwargs: dict) -> Any:
        if method == "run":
            service = self.run(*args, **kwargs)
            return len(self._running) - 1, service.name
        number, *rest = args
        service = self._running[number]
        result = getattr(service, method)(*rest, **kwargs)
        return (result.exit_code, result.output) if isinstance(result, ExecResult) else result


class _RemoteService:
    """A service container owned by the parent pytest process."""

    def __init__(self, remote: Any, number: int, name: str) -> None:
        self._remote, self._number, self.name = remote, number, name
        self.ip = None

    def exec(self, *argv: str) -> ExecResult:
        return ExecResult(*self._remote.call("exec", self._number, *argv))

    def logs(self) -> str:
        return self._remote.call("logs", self._number)

    def wait(self, timeout: float | None = None) -> tuple[int, str | None] | None:
        return self._remote.call("wait", self._number, timeout)

    def stop(self, timeout: float = 10.0) -> tuple[int, str | None]:
        return self._remote.call("stop", self._number, timeout)


class _RemoteContainers:
    def __init__(self, remote: Any) -> None:
        self._remote = remote

    def run(self, image: str, command: Any = None, **options: Any) -> _RemoteService:
        number, name = self._remote.call("run", image, command, **options)
        return _RemoteService(self._remote, number, name)


# Set in the child of a hermetic test (forked.py): the way to the parent.
remote = None


@pytest.fixture
def containers():  # noqa: ANN201
    """A factory for extra containers, all removed when the test ends:
    `containers.run(image, command, name=..., env=..., mem=...)` returns a
    handle with `exec`, `logs`, `wait`, `stop`, `ip`."""
    if remote is not None:
        yield _RemoteContainers(remote)  # the parent removes them after the test
        return
    factory = Containers()
    try:
        yield factory
    finally:
        factory.close()


__all__ = ["containers", "Containers", "ServiceContainer", "ExecResult"]
