"""Run one test item in a container and bring its reports home.

The run model (docs/pytest.md has the long form):

1. The parent (pytest, or an xdist worker) sets up the item's collectors and
   its fixtures of wider scope than function, exactly as plain pytest would,
   so they run once per process and their values are inherited by the fork.
2. The container's workload is a fork of the parent: it runs the item's
   setup, call and teardown (function scope only) with pytest's own
   `call_and_report`, and sends every report and warning home through a
   pipe, in the form `pytest_report_to_serializable` makes.
3. The parent logs them through the normal hooks (`logreport`, warnings), so
   terminal output, junitxml, `--lf`, `-x` and xdist see ordinary reports,
   then tears down what the next item does not need.
4. A child that dies without reporting becomes a failure report that says
   what happened (out of memory, timeout, signal, exit status) with the
   output it captured.
"""

from __future__ import annotations

import functools
import gc
import os
import pickle
import select
import signal
import struct
import sys
import warnings
from typing import TYPE_CHECKING, Any, Literal

import pytest
from _pytest.runner import CallInfo, call_and_report, runtestprotocol
from _pytest.warnings import catch_warnings_for_item

from .container import Container
from .errors import HermeticError
from .runtime.process import read_exactly
from .spec import Spec, Volume

if TYPE_CHECKING:
    from .fixtures import Containers

_HEADER = struct.Struct("!I")
_CALL_MARK = b"call"  # cheap pre-check before unpickling a message in the parent


def _frame(body: bytes) -> bytes:
    """A message on the pipes between parent and child: length, then body."""
    return _HEADER.pack(len(body)) + body


def _write_frame(fd: int, body: bytes) -> None:
    view = memoryview(_frame(body))
    while view:
        view = view[os.write(fd, view):]


def _frames(data: bytes) -> tuple[list[bytes], int]:
    """The whole messages in `data`, and where the incomplete rest begins."""
    bodies, offset = [], 0
    while offset + _HEADER.size <= len(data):
        (size,) = _HEADER.unpack_from(data, offset)
        end = offset + _HEADER.size + size
        if end > len(data):
            break
        bodies.append(data[offset + _HEADER.size:end])
        offset = end
    return bodies, offset


_DONE = _frame(pickle.dumps(("done", None)))


# -- parent side -----------------------------------------------------------------


def run_in_container(item: pytest.Item, nextitem: pytest.Item | None, spec: Spec) -> None:
    ihook = item.ihook
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    setup, setup_sections = _captured(item, "setup", lambda: CallInfo.from_call(
        lambda: _setup_wide_scopes(item), when="setup", reraise=(pytest.exit.Exception, KeyboardInterrupt)))
    if setup.excinfo is not None:
        # A collector or a wide fixture failed (or skipped): plain pytest
        # reports that from the cached error without running the test body.
        runtestprotocol(item, nextitem=nextitem, log=True)
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return
    started = True
    try:
        events, result = _run_child(item, nextitem, spec)
    except HermeticError as exc:  # the container could not start (no such image or user): this test's error only
        events, result = [("report", pytest.TestReport(item.nodeid, item.location, {k: 1 for k in item.keywords},
                                                       "failed", f"hermetic: {exc}", "setup", []))], None
        started = False
    reports = [e[1] for e in events if e[0] == "report"]
    exit_event = next((e for e in events if e[0] in ("exit", "interrupt")), None)
    if started and exit_event is None and not any(r.when == "teardown" for r in reports if not _is_subreport(r)):
        events.append(("report", _crash_report(item, reports, result)))
    teardown_report = None
    for event in events:
        if event[0] == "report":
            report = event[1]
            if report.when == "setup" and setup_sections:
                report.sections[:0] = setup_sections
            if report.when == "teardown" and not _is_subreport(report):
                teardown_report = report
                continue
            ihook.pytest_runtest_logreport(report=report)
        elif event[0] == "warning":
            ihook.pytest_warning_recorded.call_historic(kwargs=event[1])
        elif event[0] == "coverage":
            _merge_coverage(event[1])
    if item.session.shouldfail or item.session.shouldstop:
        nextitem = None
    teardown, teardown_sections = _captured(item, "teardown", lambda: CallInfo.from_call(
        lambda: item.session._setupstate.teardown_exact(nextitem), when="teardown",
        reraise=(pytest.exit.Exception, KeyboardInterrupt)))
    if teardown.excinfo is not None and (teardown_report is None or teardown_report.passed):
        teardown_report = ihook.pytest_runtest_makereport(item=item, call=teardown)
    if teardown_report is not None:
        teardown_report.sections.extend(teardown_sections)
        ihook.pytest_runtest_logreport(report=teardown_report)
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    if exit_event is not None:
        if exit_event[0] == "interrupt":
            raise KeyboardInterrupt
        pytest.exit(exit_event[1], returncode=exit_event[2])


def _captured(item: pytest.Item, when: str, fn):  # noqa: ANN001, ANN202
    """Run `fn` in the parent under pytest's output capture, as the phase
    it belongs to would be; return its result and the report sections."""
    capman = item.config.pluginmanager.getplugin("capturemanager")
    if capman is None or not capman.is_globally_capturing():
        return fn(), []
    capman.resume_global_capture()
    try:
        result = fn()
    finally:
        capman.suspend_global_capture(in_=False)
    out, err = capman.read_global_capture()
    sections = [(f"Captured {name} {when}", text) for name, text in (("stdout", out), ("stderr", err)) if text]
    return result, sections


def _is_subreport(report: Any) -> bool:
    return type(report).__name__ == "SubtestReport"


def _setup_wide_scopes(item: pytest.Item) -> None:
    """Collectors and fixtures of session/package/module/class scope, in the
    parent, so they are set up once per process as in plain pytest."""
    state = item.session._setupstate
    state.setup(item.parent)  # type: ignore[arg-type]
    info = getattr(item, "_fixtureinfo", None)
    request = getattr(item, "_request", None)
    if info is None or not request:
        return
    # The item must look active for fixture lookups (pytest 9 warns, 10
    # refuses, otherwise); it leaves the stack again before the fork, so the
    # child pushes it and runs its own setup (function scope) as usual.
    state.stack[item] = ([], None)
    try:
        for name in item.fixturenames:  # type: ignore[attr-defined]
            definitions = info.name2fixturedefs.get(name)
            if definitions and definitions[-1].scope != "function":
                request.getfixturevalue(name)
    finally:
        del state.stack[item]


def _bindings(item: pytest.Item, spec: Spec) -> list[Volume]:
    """What the test needs at its host paths inside the container.

    Always pytest's basetemp, read-write, so `tmp_path` behaves as without
    isolation.  The test tree and the interpreter are in `host` already
    (bound again only where a fresh /tmp would hide them).  In any other
    image the test body's Python must keep working even when the image has
    no Python or libc of its own: the interpreter's library folders, the
    shared libraries it and its extension modules load (also those imported
    only after the fork), the dynamic loader and the executable are bound
    read-only wherever the image has nothing at that path.
    """
    writable: list[str] = []
    executable_hops: list[Volume] = []
    factory = getattr(item.config, "_tmp_path_factory", None)
    if factory is not None:
        writable.append(str(factory.getbasetemp()))
    code = {os.path.realpath(p) for p in (str(item.config.rootpath), os.getcwd())}
    if spec.image == "host":
        hidden = ("/tmp", "/dev", "/proc", "/sys")  # fresh mounts in every container
        python = _python_paths()
        wanted = {p for p in code | python if any(p == h or p.startswith(h + "/") for h in hidden)}
    else:
        from .images.store import Store

        store = Store()
        image = store.resolve(spec.image)
        wanted = {p for p in code | _python_paths() | _library_paths() if not _image_has(store, image, p)}
        # Each hop of the interpreter's symlink chain (venv/bin/python ->
        # /usr/bin/python3 -> python3.11), so `sys.executable` runs inside.
        real = os.path.realpath(sys.executable)
        for hop in _symlink_hops(sys.executable):
            if hop != real and not _image_has(store, image, hop):
                executable_hops.append(Volume(real, hop, True))
    chosen: list[str] = []
    for path in sorted(wanted):
        if path != "/" and os.path.exists(path) and not any(path.startswith(c.rstrip("/") + "/") for c in chosen):
            chosen.append(path)
    volumes = list(spec.volumes)
    taken = {v.target for v in volumes}
    for path in chosen:
        if path not in taken:
            # The test tree is writable and its writes vanish, as in `host`;
            # the interpreter's own files are read-only.
            volumes.append(Volume(path, path, readonly=path not in code, overlay=path in code))
    for path in writable:
        if path not in taken:
            volumes.append(Volume(path, path))
    volumes += [v for v in executable_hops if not any(v.target.startswith(c.rstrip("/") + "/") for c in chosen)]
    return sorted(volumes, key=lambda v: v.target.count("/"))  # parents before what is mounted inside them


def _symlink_hops(path: str) -> list[str]:
    hops = []
    for _ in range(16):
        hops.append(path)
        if not os.path.islink(path):
            break
        path = os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(path)))
    return hops


@functools.lru_cache(maxsize=1)
def _python_paths() -> frozenset[str]:
    import sysconfig

    paths = {sys.prefix, sys.exec_prefix, os.path.realpath(sys.executable)}
    paths.update(v for k, v in sysconfig.get_paths().items() if k in ("stdlib", "platstdlib", "purelib", "platlib"))
    paths.update(p for p in sys.path if p and os.path.isdir(p))
    return frozenset(os.path.realpath(p) for p in paths if os.path.exists(p))


def _library_paths() -> set[str]:
    """Folders of the shared objects mapped now, the platform's library
    folders (for extension modules imported after the fork) and the loader."""
    import sysconfig

    paths: set[str] = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                name = line.split(None, 5)[-1].strip()
                if name.startswith("/") and ".so" in name:
                    paths.add(os.path.dirname(os.path.realpath(name)))
    except OSError:
        pass
    multiarch = sysconfig.get_config_var("MULTIARCH")
    if multiarch:
        paths.update(os.path.realpath(f"{base}/{multiarch}") for base in ("/lib", "/usr/lib"))
    interpreter = _elf_interpreter(os.path.realpath(sys.executable))
    if interpreter:
        paths.add(interpreter)  # by the path the binaries name, e.g. /lib64/ld-linux-x86-64.so.2
    return {p for p in paths if os.path.exists(p)}


def _elf_interpreter(path: str) -> str | None:
    """PT_INTERP of an ELF executable (the dynamic loader it names)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only
                return None
            phoff, = struct.unpack_from("<Q", head, 32)
            phentsize, phnum = struct.unpack_from("<HH", head, 54)
            for i in range(phnum):
                f.seek(phoff + i * phentsize)
                kind, _flags, offset, _vaddr, _paddr, size = struct.unpack("<IIQQQQ", f.read(40))
                if kind == 3:  # PT_INTERP
                    f.seek(offset)
                    return f.read(size).rstrip(b"\0").decode()
    except (OSError, struct.error, UnicodeDecodeError):
        return None
    return None


def _image_has(store: Any, image: Any, path: str) -> bool:
    return any(os.path.lexists(store.layer_root(d) + path) for d in image.layers)


def _run_child(item: pytest.Item, nextitem: pytest.Item | None, spec: Spec) -> tuple[list[tuple], Any]:
    finish_pending(block=False)
    install_forwarder(item.config)
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    reply_r, reply_w = os.pipe2(os.O_CLOEXEC)  # answers to the `containers` fixture's calls
    scope = _network_scope(spec)
    services = _Services(scope)
    # Per-test containers: rw layer in memory, no state folder, no accounting
    # beyond the limits asked for: each of these is a measurable cost per test.
    spec = spec.with_options(volumes=tuple(_bindings(item, spec)), ephemeral=True, tracked=False, accounting=False,
                             workdir=spec.workdir or os.getcwd())  # where pytest runs, as without isolation
    try:
        container = Container(spec, network=scope.get(spec.net) if isinstance(spec.net, str) else None)
    except BaseException:
        if scope is not None:
            scope.close()
        raise
    deferred = False
    try:
        # Frozen objects are never scanned by the child's garbage collector,
        # which would otherwise touch (and so copy) much of pytest's memory.
        gc.freeze()
        try:
            container.start(target=lambda: _child_main(item, write_fd, reply_r))
        finally:
            gc.unfreeze()
            os.close(write_fd)
            os.close(reply_r)
        data, complete = _drain(read_fd, container, services, reply_w)
        if complete:
            # Every report is home: the exit of the child (tearing down a
            # large address space and its namespaces) and the clean-up need
            # not hold up the next test.
            _pending.append(container)
            deferred = True
            result = None
        else:
            result = container.wait()
    finally:
        os.close(read_fd)
        os.close(reply_w)
        services.close()
        if not deferred:
            container.remove()
        if scope is not None:
            scope.close()  # each network goes once its last container is removed
    return _decode(item.config, data), result


def _network_scope(spec: Spec) -> Any:
    """The test's private networks (None for loopback only): `net="svc"` in
    the marker and in its service containers is one network of its own."""
    if spec.net is False:
        return None
    from .networks import Scope, hold_host_bridge

    if spec.net is True:
        hold_host_bridge()  # made once per session, not per test
    return Scope()


class _Services:
    """The parent's side of the `containers` fixture for one hermetic test."""

    def __init__(self, scope: Any = None) -> None:
        self.factory: Containers | None = None
        self.scope = scope

    def answer(self, payload: tuple, reply_fd: int) -> None:
        method, args, kwargs = payload
        try:
            if self.factory is None:
                from .fixtures import Containers

                self.factory = Containers(self.scope)
            reply = (True, self.factory.handle(method, args, kwargs))
        except Exception as exc:  # noqa: BLE001 - the test gets it, as if raised in place
            reply = (False, exc if _picklable(exc) else RuntimeError(f"{type(exc).__name__}: {exc}"))
        try:
            _write_frame(reply_fd, pickle.dumps(reply))
        except BrokenPipeError:
            pass

    def close(self) -> None:
        if self.factory is not None:
            self.factory.close()


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value)
        return True
    except Exception:  # noqa: BLE001
        return False


_pending: list[Container] = []


def finish_pending(block: bool = True) -> None:
    """Remove the containers whose reports are in; with `block`, wait for
    all of them (end of the session), else only for those already gone."""
    for container in list(_pending):
        if block or (container.process is not None and container.process.wait(timeout=0) is not None):
            _pending.remove(container)
            container.remove()


def _drain(read_fd: int, container: Container, services: "_Services", reply_fd: int) -> tuple[bytes, bool]:
    """Read the child's messages while it runs (a full pipe would stall it),
    answer its `containers` calls as they come, and enforce the spec's
    timeout through `Container.wait`.  Returns the bytes and whether the
    child said it was done (its last message)."""
    chunks: list[bytes] = []
    pending = b""  # bytes not yet split into messages, for the calls
    assert container.process is not None
    open_fds = [read_fd, container.process.fileno()]
    interrupted = False
    while True:
        try:
            ready, _, _ = select.select(open_fds, [], [], 0.5)
        except KeyboardInterrupt:
            # The container has a session of its own, so a terminal's Ctrl-C
            # reaches pytest only: pass it on, so the test stops where it
            # is and says so; a second one stops waiting.
            if interrupted:
                raise
            interrupted = True
            container.kill(signal.SIGINT)
            continue
        if read_fd in ready:
            chunk = os.read(read_fd, 1 << 16)
            if chunk:
                chunks.append(chunk)
                pending = _answer_calls(pending + chunk, services, reply_fd)
                if b"".join(chunks[-2:]).endswith(_DONE):  # the last message may come in two reads
                    data = b"".join(chunks)
                    if _complete(data):
                        return data, True
                continue
            open_fds.remove(read_fd)
        if container.wait(timeout=0) is not None:
            while True:  # whatever is left in the pipe
                chunk = os.read(read_fd, 1 << 16) if read_fd in open_fds else b""
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks), False


def _answer_calls(data: bytes, services: "_Services", reply_fd: int) -> bytes:
    """Answer every complete call message in `data`; return the incomplete rest."""
    bodies, rest = _frames(data)
    for body in bodies:
        if _CALL_MARK in body[:32]:
            kind, payload = pickle.loads(body)
            if kind == "call":
                services.answer(payload, reply_fd)
    return data[rest:]


def _complete(data: bytes) -> bool:
    """Whether `data` is whole messages ending with the done message."""
    return _frames(data)[1] == len(data) and data.endswith(_DONE)


def _decode(config: pytest.Config, data: bytes) -> list[tuple]:
    events: list[tuple] = []
    for body in _frames(data)[0]:  # a message cut off by the child's death is left out
        kind, payload = pickle.loads(body)
        if kind == "report":
            events.append(("report", config.hook.pytest_report_from_serializable(config=config, data=payload)))
        elif kind == "warning":
            events.append(("warning", _warning_from_payload(payload)))
        elif kind == "coverage":
            events.append(("coverage", payload))
        elif kind in ("done", "call"):
            pass
        else:
            events.append((kind, *payload))
    return events


def _crash_report(item: pytest.Item, reports: list, result: Any) -> pytest.TestReport:
    """The report for a child that died without finishing its reports."""
    done = {r.when for r in reports if not _is_subreport(r)}
    when: Literal["setup", "call", "teardown"] = (
        "setup" if "setup" not in done else "call" if "call" not in done else "teardown")
    reason = result.reason if result is not None and result.reason else "the test process ended without reporting"
    if result is not None and result.status.code is not None and result.status.code != 0 and result.reason and result.reason.startswith("exited"):
        reason = f"exited with status {result.status.code} without reporting"
    sections = []
    capman = item.config.pluginmanager.getplugin("capturemanager")
    if capman is not None and capman.is_globally_capturing():
        out, err = capman.read_global_capture()
        if out:
            sections.append((f"Captured stdout {when}", out))
        if err:
            sections.append((f"Captured stderr {when}", err))
    return pytest.TestReport(item.nodeid, item.location, {k: 1 for k in item.keywords}, "failed",
                             f"hermetic: {reason}", when, sections)


def _warning_from_payload(payload: dict) -> dict:
    message = payload.pop("message")
    category = payload.pop("category")
    if not isinstance(message, Warning):
        message = category(message) if isinstance(category, type) and issubclass(category, Warning) else UserWarning(message)
    payload["warning_message"] = warnings.WarningMessage(message, type(message), payload.pop("filename"),
                                                          payload.pop("lineno"), None, None)
    return payload


# -- child side (runs in the container, as PID 2) ----------------------------------


class _Channel:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, kind: str, payload: Any) -> None:
        try:
            data = pickle.dumps((kind, payload))
        except Exception:  # noqa: BLE001 - unpicklable user data: send its repr instead
            data = pickle.dumps((kind, _reprs(payload)))
        _write_frame(self.fd, data)


def _reprs(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reprs(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_reprs(v) for v in value]
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    return repr(value)


class _Forwarder:
    """Takes the place of every other implementation of the reporting hooks
    in the child: the parent logs what it forwards, exactly once."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.channel: _Channel | None = None  # set in the child only; inert in the parent

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.channel is None:
            return
        self.channel.send("report", self.config.hook.pytest_report_to_serializable(config=self.config, report=report))

    def pytest_warning_recorded(self, warning_message, when, nodeid, location) -> None:  # noqa: ANN001
        if self.channel is None:
            return
        self.channel.send("warning", {"message": warning_message.message, "category": warning_message.category,
                                      "filename": warning_message.filename, "lineno": warning_message.lineno,
                                      "when": when, "nodeid": nodeid, "location": location})


class _ParentChain:
    """Stands for "the next item" at the child's teardown: everything but the
    item itself is still needed, so only function scope is torn down here
    (the parent tears down the rest, once)."""

    def __init__(self, item: pytest.Item) -> None:
        self._chain = item.listchain()[:-1]

    def listchain(self) -> list:
        return self._chain


FORWARDER_NAME = "hermetic-forwarder"


def install_forwarder(config: pytest.Config) -> None:
    """Registered once in the parent (before its first hermetic test), inert
    there: registering a plugin costs more than a millisecond, too much to
    pay in every child."""
    if config.pluginmanager.get_plugin(FORWARDER_NAME) is None:
        config.pluginmanager.register(_Forwarder(config), FORWARDER_NAME)


class _Remote:
    """The child's way to the parent, for the `containers` fixture."""

    def __init__(self, channel: _Channel, reply_fd: int) -> None:
        self.channel = channel
        self.reply_fd = reply_fd

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self.channel.send("call", (method, args, kwargs))
        header = read_exactly(self.reply_fd, _HEADER.size)
        body = read_exactly(self.reply_fd, _HEADER.unpack(header)[0]) if len(header) == _HEADER.size else b""
        if not body:
            raise RuntimeError("hermetic: the pytest process stopped answering")
        ok, value = pickle.loads(body)
        if not ok:
            raise value
        return value


def _child_main(item: pytest.Item, write_fd: int, reply_fd: int) -> int:
    config = item.config
    channel = _Channel(write_fd)
    from . import fixtures

    fixtures.remote = _Remote(channel, reply_fd)
    install_forwarder(config)
    forwarder = config.pluginmanager.get_plugin(FORWARDER_NAME)
    pm = config.pluginmanager
    for hook in (pm.hook.pytest_runtest_logreport, pm.hook.pytest_warning_recorded):
        # pluggy keeps a hook's implementations in this list; the child is
        # thrown away, so editing it here changes nothing in the parent.
        hook._hookimpls[:] = [impl for impl in hook.get_hookimpls() if impl.plugin is forwarder]
    assert forwarder is not None  # installed just above
    forwarder.channel = channel
    try:
        # The warnings plugin records around pytest_runtest_protocol, which
        # ran in the parent: record the child's own warnings here.
        with catch_warnings_for_item(config, item.ihook, "runtest", item):
            report = call_and_report(item, "setup", log=True)
            if report.passed and not config.getoption("setuponly", False):
                call_and_report(item, "call", log=True)
            call_and_report(item, "teardown", log=True, nextitem=_ParentChain(item))
    except pytest.exit.Exception as exc:
        channel.send("exit", (exc.msg, exc.returncode))
    except KeyboardInterrupt:
        channel.send("interrupt", ())
    finally:
        _send_coverage(channel)
        channel.send("done", None)
    return 0


def _send_coverage(channel: _Channel) -> None:
    """Lines run inside the container count (pytest-cov, coverage run): the
    child's coverage data would die with it, so it travels home."""
    if "coverage" not in sys.modules:
        return
    import coverage

    current = coverage.Coverage.current()
    if current is not None:
        channel.send("coverage", current.get_data().dumps())


def _merge_coverage(data: bytes) -> None:
    import coverage
    from coverage.data import CoverageData

    current = coverage.Coverage.current()
    if current is None:
        return
    incoming = CoverageData(no_disk=True)
    incoming.loads(data)
    current.get_data().update(incoming)
