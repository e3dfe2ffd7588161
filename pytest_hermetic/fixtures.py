"""The `containers` fixtures: extra containers a test starts (a database, a
service), removed when their scope ends.

    def test_talks_to_a_service(containers):
        svc = containers.run("busybox:1", ["sh", "-c", "echo ready; sleep 60"], name="svc", mem="64M")
        svc.wait_for_log("ready")
        assert svc.exec("cat", "/etc/hostname").output == "svc\\n"

`containers` lives for one test; `containers_module` and `containers_session`
for a module and the session (a database started once for many tests).  A
test that fails shows the last lines of every service container it used, as
pytest shows captured output.

A test that runs in its own container cannot start containers (it has no
privileges there), so inside a hermetic test every call travels to the
pytest process that forked it, which starts and owns the containers, and the
answer comes back (`forked/wire.py` carries the messages); a wider-scope
service, made in that process, forwards its calls there the same way.  In a
test run in place the containers are started directly.

One concern, the service containers of a test, in one module: the handle,
its waits, the factories of each scope, their remote side and the report
sections are each other's callers.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import tempfile
import time
from typing import Any, Callable, Protocol

import pytest

from . import _pytest_compat as compat
from .errors import HermeticError, RegistryError, SpecError

# Container, Spec, networks and portfwd are imported where used: the plugin
# loads this module in every session, also one with no hermetic test.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from .container import Container
    from .spec import Spec

LOG_LINES_INI = "hermetic_service_log_lines"
log_lines = 50  # the tail shown in reports and wait errors; the ini sets it (pytest_configure below)


def tail(text: str, lines: int | None = None) -> str:
    """The last `lines` lines of `text` (`log_lines` by default)."""
    n = log_lines if lines is None else lines
    return "\n".join(text.splitlines()[-n:]) if n > 0 else ""


def with_host_tmp(spec: Spec) -> Spec:
    """`spec` with the host's /tmp seen copy-on-write at /tmp (first, so
    volumes below it are mounted over it): what wider-scope fixtures made
    there before the fork (`tempfile.mkdtemp()` in a class fixture) is
    there, a virtualenv living there runs, and the container's writes vanish
    with it.  A volume of the caller's own at /tmp wins."""
    from .spec import Volume

    if any(v.target.rstrip("/") == "/tmp" for v in spec.volumes):
        return spec
    return spec.with_options(volumes=(Volume("/tmp", "/tmp", overlay=True), *spec.volumes))


class ExecResult:
    def __init__(self, exit_code: int, output: str) -> None:
        self.exit_code = exit_code
        self.output = output  # stdout and stderr, interleaved as written

    def __repr__(self) -> str:
        return f"ExecResult(exit_code={self.exit_code}, output={self.output!r})"


# Services started in this process, by key: a hermetic test's child reaches
# the wider-scope ones (forked with the fixture's value) through its parent.
_services: dict[int, ServiceContainer] = {}
_keys = itertools.count()


def _owned(method: Callable) -> Callable:
    """Run `method` where the container's owner is: in a hermetic test's
    child, a service made by a wider-scope fixture sends the call home."""
    def call(self: ServiceContainer, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        if remote is not None and os.getpid() != self._owner:
            return remote.call(method.__name__, self.key, *args, **kwargs)
        return method(self, *args, **kwargs)

    call.__name__, call.__doc__ = method.__name__, method.__doc__
    return call


class ServiceContainer:
    """A running service container, owned by the process that started it."""

    def __init__(self, container: Container, log_fd: int) -> None:
        self.container = container
        self._log_fd = log_fd  # (an unlinked file: see `_log_file`)
        self._forwarders: list = []
        self._owner = os.getpid()
        self.key = next(_keys)
        _services[self.key] = self

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

    def _until(self, ready: Callable[[float], bool], what: str, timeout: float) -> None:
        """Poll `ready(seconds left)` until it is true; TimeoutError after `timeout`, or
        ConnectionError once the container has ended, both naming it and
        showing its last lines."""
        deadline = time.monotonic() + timeout
        while True:
            ended = self.container.wait(0)
            try:
                if ready(max(0.05, deadline - time.monotonic())):
                    return
            except (OSError, RuntimeError, HermeticError):
                pass  # not up yet, or gone (said below)
            if ended is not None:
                raise ConnectionError(f"container {self.name} ended ({ended.reason}) before {what}"
                                      f"{self._last_lines()}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"container {self.name}: not {what} within {timeout:g} s{self._last_lines()}")
            time.sleep(0.05)

    def _last_lines(self) -> str:
        text = tail(self.logs())
        return f"; its last lines:\n{text}" if text else "; it wrote nothing"

    @_owned
    def wait_for_port(self, port: int, timeout: float = 30.0) -> None:
        """Return once something in it accepts TCP connections on `port`
        (asked from inside its own network namespace)."""
        from .runtime.portfwd import connect

        def accepts(left: float) -> bool:
            try:
                connect(self._sockets(), self.ip or "127.0.0.1", port, timeout=min(1.0, left)).close()
                return True
            except OSError:
                return False

        self._until(accepts, f"accepting connections on port {port}", timeout)

    @_owned
    def wait_for_log(self, pattern: str, timeout: float = 30.0) -> str:
        """Return the first match of the regular expression `pattern` in its
        output (multi-line mode: `^` and `$` are a line's ends) once written."""
        regex = re.compile(pattern, re.MULTILINE)
        found: list[str] = []

        def written(_left: float) -> bool:
            match = regex.search(self.logs())
            found[:] = [match.group(0)] if match else []
            return bool(match)

        self._until(written, f"writing a line matching {pattern!r}", timeout)
        return found[0]

    @_owned
    def wait_for_http(self, path: str = "/", port: int = 80, status: int = 200, timeout: float = 30.0) -> None:
        """Return once `GET path` on its `port` answers with `status`."""
        from .runtime.portfwd import connect

        def answers(left: float) -> bool:
            try:
                with connect(self._sockets(), self.ip or "127.0.0.1", port, timeout=min(2.0, left)) as sock:
                    sock.settimeout(min(2.0, left))
                    sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {self.name}\r\n\r\n".encode())
                    line = sock.makefile("rb").readline(1024).split()
                return len(line) >= 2 and line[1] == str(status).encode()
            except OSError:
                return False

        self._until(answers, f"answering GET {path} on port {port} with HTTP {status}", timeout)

    @_owned
    def wait_for(self, *argv: str, timeout: float = 30.0) -> None:
        """Return once the command `argv` succeeds inside it (a health check)."""
        self._until(lambda _left: self.exec(*argv).exit_code == 0, f"passing {' '.join(argv)!r}", timeout)

    @_owned
    def address(self, port: int) -> tuple[str, int]:
        """Where the caller reaches its `port`: its own address with
        `net=True`, else a port published on 127.0.0.1 for the rest of the
        scope that started it."""
        if self.container.spec.net is True and self.ip:
            return self.ip, port
        from .runtime.portfwd import Forwarder

        forwarder = Forwarder(self._sockets(), self.ip or "127.0.0.1", port)
        self._forwarders.append(forwarder)
        return forwarder.address

    @_owned
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

    @_owned
    def logs(self) -> str:
        """What its command wrote to stdout and stderr so far."""
        if self._log_fd < 0:
            raise RuntimeError(f"container {self.name} was removed, and its logs with it")
        chunks, offset = [], 0
        while chunk := os.pread(self._log_fd, 1 << 20, offset):  # (the offset is the container's)
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks).decode(errors="replace")

    @_owned
    def wait(self, timeout: float | None = None) -> tuple[int, str | None] | None:
        """(exit code, reason) once it has ended; None if `timeout` passed first."""
        result = self.container.wait(timeout)
        return None if result is None else (result.exit_code, result.reason)

    @_owned
    def stop(self, timeout: float = 10.0) -> tuple[int, str | None]:
        """SIGTERM, then SIGKILL after `timeout` seconds; (exit code, reason)."""
        self.container.kill(signal.SIGTERM)
        result = self.container.wait(timeout)
        if result is None:
            self.container.kill(signal.SIGKILL)
            result = self.container.wait()
        assert result is not None
        return result.exit_code, result.reason

    def remove(self) -> None:
        for forwarder in self._forwarders:
            forwarder.close()
        self.container.remove()
        _services.pop(self.key, None)
        if self._log_fd >= 0:
            _close_log(self._log_fd)
            self._log_fd = -1


def _log_file() -> int:
    """A service's log: a file without a name (read and written through
    its one descriptor), so that a session killed mid-test leaves no file
    behind and no other process may open it by path."""
    from .runtime import descriptors

    where = tempfile.gettempdir()
    try:
        fd = os.open(where, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except (AttributeError, OSError):  # (a filesystem without O_TMPFILE: named for an instant)
        fd, path = tempfile.mkstemp(prefix="hermetic-log-", dir=where)
        os.unlink(path)
    # A hermetic test forked from this process must not get it: a file
    # without a name is otherwise a test's own (pytest's capture files).
    descriptors.withhold(fd)
    return fd


def _close_log(fd: int) -> None:
    from .runtime import descriptors

    descriptors.release(fd)
    os.close(fd)


# The private networks of the module and session scopes, by name (innermost
# last): a test or container naming one joins it instead of a network of its own.
_wide_networks: dict[str, list] = {}


class TestNetworks:
    """The networks one test names: a wider scope's network of that name if
    there is one (left to its owner), else one of the test's own."""

    def __init__(self) -> None:
        self._own: Any = None

    def get(self, name: str) -> Any:
        if _wide_networks.get(name):
            return _wide_networks[name][-1]
        if self._own is None:
            from .networks import Scope

            self._own = Scope()
        return self._own.get(name)

    def close(self) -> None:
        if self._own is not None:
            self._own.close()


class Containers:
    """Starts containers for one scope (a test by default) and removes them all at its end."""

    def __init__(self, scope: Any = None, wide: bool = False) -> None:
        """`scope`: the test's networks (`TestNetworks`), shared with its own
        container when it is hermetic; else ours.  `wide`: a module or
        session scope, whose private networks tests may join."""
        self.services: list[ServiceContainer] = []
        self._own_scope = scope is None
        self._wide = wide
        self._scope = scope if scope is not None else (None if wide else TestNetworks())
        self._networks: dict[str, Any] = {}

    def run(self, image: str, command: Any = None, *, name: str | None = None, env: dict[str, str] | None = None,
            mem: Any = None, net: Any = False, **options: Any) -> ServiceContainer:
        """Start `image` (`command` as its argv) with the container options of
        the marker; returns its handle."""
        __tracebackhide__ = True
        from .container import Container  # lazily (see the imports above)
        from .spec import Spec

        if not isinstance(image, str) or image.startswith("build:"):  # a Containerfile (Build): built once
            image = image_of_build(image)
        # The host's /tmp copy-on-write, as a hermetic test has it: `sys.executable`
        # of a virtualenv under /tmp runs in a `host` service too.
        spec = with_host_tmp(Spec.build(image, command, name=name, env=env or {}, mem=mem, net=net, ephemeral=True,
                                        **options))
        if name is not None and any(service.name == name for service in self.services):
            raise SpecError(f"name={name!r}: this scope already has a container of that name")
        network = None
        if isinstance(spec.net, str):
            network = self._network(spec.net)
        elif spec.net is True:
            from .networks import hold_host_bridge

            hold_host_bridge()
        log_fd = _log_file()
        null_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        container = Container(spec, network=network)
        try:
            # The log is handed as it is, not through a pipe and a thread.
            container.start(stdin=null_fd, stdout=log_fd, stderr=log_fd, keep_fds=(log_fd,))
        except HermeticError as exc:
            _close_log(log_fd)
            # One line at the test's call, not the engine's frames below it.
            hint = ("" if not isinstance(exc, RegistryError) else f"; or pull it ahead (`hermetic pull {image}`)"
                    if "ways out:" in str(exc) else f"; pull it while online (`hermetic pull {image}`) or import it (`hermetic import`)")
            raise type(exc)(f"containers.run({image!r}): {exc}{hint}") from None
        except BaseException:
            _close_log(log_fd)
            raise
        finally:
            os.close(null_fd)
        service = ServiceContainer(container, log_fd)
        self.services.append(service)
        return service

    def _network(self, name: str) -> Any:
        if self._scope is not None:
            return self._scope.get(name)
        if name not in self._networks:
            from .networks.private import new_private_network

            self._networks[name] = new_private_network(name)
            _wide_networks.setdefault(name, []).append(self._networks[name])
        return self._networks[name]

    def close(self) -> None:
        for service in self.services:
            service.remove()
        self.services.clear()
        for name, network in self._networks.items():
            _wide_networks[name].remove(network)
            network.close()
        self._networks.clear()
        if self._own_scope and self._scope is not None:
            self._scope.close()

    # The parent's side of the calls a hermetic test makes (see forked/parent.py).
    def handle(self, method: str, args: tuple, kwargs: dict, test_net: Any = False) -> Any:
        """A hermetic test's call (`_RemoteContainers`, `_RemoteService`):
        only those, on a service of this process's (the message is the
        container's to write, see forked/wire.py)."""
        if method == "run":
            started = self.run(*args, **kwargs)
            return started.key, started.name, started.ip
        if method not in _REMOTE_METHODS or not args:
            raise SpecError(f"hermetic: no such call of the containers fixture: {method!r}")
        key, *rest = args
        service = _services.get(key) if isinstance(key, int) else None
        if service is None:
            raise SpecError(f"hermetic: no service container {key!r} in this pytest process")
        if method == "address":
            return _address_for(service, test_net, *rest)
        return getattr(service, method)(*rest, **kwargs)


_REMOTE_METHODS = {"address", "wait_for_port", "wait_for_log", "wait_for_http", "wait_for", "exec", "logs", "wait",
                   "stop"}  # what _RemoteService calls


def _address_for(service: ServiceContainer, test_net: Any, port: int) -> tuple[str, int]:
    """Where a hermetic test (in its own network namespace) reaches `port`
    of `service`: its address, on a network they share."""
    net = service.container.spec.net
    # A name resolves to one network for the test and its services (TestNetworks).
    shared = net == test_net and (net is True or isinstance(net, str))
    if not shared or not service.ip:
        fix = (f"mark the test @hermetic(net={net!r})" if net is not False
               else 'start it on a network (net="svc") and mark the test @hermetic(net="svc")')
        raise SpecError(f"container {service.name}: a hermetic test reaches it only on a network they share "
                        f"(it has net={net!r}, the test net={test_net!r}); {fix}")
    return service.ip, port


class _RemoteService:
    """A service container owned by the parent pytest process."""

    def __init__(self, remote: Remote, key: int, name: str, ip: str | None) -> None:
        self._remote, self.key, self.name, self.ip = remote, key, name, ip

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        return self._remote.call(method, self.key, *args, **kwargs)

    def wait_for_port(self, port: int, timeout: float = 30.0) -> None:
        __tracebackhide__ = True
        return self._call("wait_for_port", port, timeout)

    def wait_for_log(self, pattern: str, timeout: float = 30.0) -> str:
        __tracebackhide__ = True
        return self._call("wait_for_log", pattern, timeout)

    def wait_for_http(self, path: str = "/", port: int = 80, status: int = 200, timeout: float = 30.0) -> None:
        __tracebackhide__ = True
        return self._call("wait_for_http", path, port, status, timeout)

    def wait_for(self, *argv: str, timeout: float = 30.0) -> None:
        __tracebackhide__ = True
        return self._call("wait_for", *argv, timeout=timeout)

    def address(self, port: int) -> tuple[str, int]:
        __tracebackhide__ = True
        return self._call("address", port)

    def exec(self, *argv: str) -> ExecResult:
        return self._call("exec", *argv)

    def logs(self) -> str:
        return self._call("logs")

    def wait(self, timeout: float | None = None) -> tuple[int, str | None] | None:
        return self._call("wait", timeout)

    def stop(self, timeout: float = 10.0) -> tuple[int, str | None]:
        return self._call("stop", timeout)


class _RemoteContainers:
    def __init__(self, remote: Remote) -> None:
        self._remote = remote
        self.services: list[_RemoteService] = []

    def run(self, image: str, command: Any = None, **options: Any) -> _RemoteService:
        __tracebackhide__ = True
        key, name, ip = self._remote.call("run", image, command, **options)
        self.services.append(_RemoteService(self._remote, key, name, ip))
        return self.services[-1]


class Remote(Protocol):
    """The way from the child of a hermetic test to its parent, which runs the containers."""

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any: ...


# Set in the child of a hermetic test (forked/child.py).
remote: Remote | None = None


@pytest.fixture
def containers():  # noqa: ANN201
    """A factory for extra containers, all removed when the test ends:
    `containers.run(image, command, name=..., net=..., env=..., mem=...)`
    returns a handle with `exec`, `logs`, `wait`, `stop`, `address`, `ip`
    and the waits `wait_for_port`, `wait_for_log`, `wait_for_http` and
    `wait_for`.  `net="svc"` is a network private to this test (the test's
    own, if it is marked `@hermetic(net="svc")`; a module's or the
    session's, if one of their containers is on "svc"), where the container
    is known by its `name`."""
    if remote is not None:
        yield _RemoteContainers(remote)  # the parent removes them after the test
        return
    factory = Containers()
    try:
        yield factory
    finally:
        factory.close()


def _wide_containers():  # noqa: ANN202
    if remote is not None:
        raise SpecError("containers_module/containers_session are set up in the pytest process, not in a test")
    factory = Containers(wide=True)
    try:
        yield factory
    finally:
        factory.close()


containers_module = pytest.fixture(scope="module", name="containers_module")(_wide_containers)
containers_module.__doc__ = "As `containers`, for the module: removed after its last test."
containers_session = pytest.fixture(scope="session", name="containers_session")(_wide_containers)
containers_session.__doc__ = "As `containers`, for the session: started once, shared by every test."


def pytest_configure(config: pytest.Config) -> None:
    global log_lines, _config
    log_lines = int(config.getini(LOG_LINES_INI) or 50)
    _config = config


# -- images built from a Containerfile (build/reference.py) -----------------------------

_config: pytest.Config | None = None  # the session's: its rootdir, ini key and terminal


def session_builds(config: pytest.Config | None = None) -> Any:
    """The session's `Builds` (made at its first use); outside a session, one for the working folder."""
    from .build.reference import Builds, for_pytest

    config = config or _config
    if config is None:
        return Builds(os.getcwd())
    return for_pytest(config, lambda: compat.outside_capture(config))


def image_of_build(image: Any) -> Any:
    """The name of the image `image` (a `Build` or "build:...") is built as;
    anything else as it is (Spec says what is wrong with it)."""
    from .build.reference import is_build

    if not is_build(image):
        return image
    from .errors import BuildError

    try:
        return session_builds().image(image).name
    except BuildError as exc:  # the step's output in the test's error, as a container that fails to start
        tail = f"\n--- the step's last lines of output ---\n{exc.output}" if exc.output else ""
        raise BuildError(f"containers.run({image!r}): {exc}{tail}", exc.output) from None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # noqa: ANN201
    """A failed test shows the last lines of each service container it used.
    (New-style: another plugin's error passes through unwrapped.)"""
    report = yield
    if not report.failed or log_lines <= 0:
        return report
    for service in _services_of(item):
        try:
            text = tail(service.logs())
        except Exception as exc:  # noqa: BLE001 - the report must still be made
            text = f"(its logs could not be read: {exc})"
        report.sections.append((f"service {service.name} ({report.when}): last {log_lines} lines",
                                text or "(nothing written)"))
    return report


def _services_of(item: pytest.Item) -> list:
    """The service containers among the test's fixture values, and those of
    its `containers` factories, each once."""
    found: dict[int, Any] = {}
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, (Containers, _RemoteContainers)):
            for service in value.services:
                found.setdefault(id(service), service)
        elif isinstance(value, (ServiceContainer, _RemoteService)):
            found.setdefault(id(value), value)
    return list(found.values())


__all__ = ["containers", "containers_module", "containers_session", "Containers", "ServiceContainer", "ExecResult"]
