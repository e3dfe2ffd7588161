"""The pytest plugin `hermetic`: options, the marker, and the hook that
hands marked tests to `forked.run_in_container`.

Registered under the `pytest11` entry point, so `pytest -p hermetic` works
(also with PYTEST_DISABLE_PLUGIN_AUTOLOAD=1).  Marker arguments beat ini
keys, which beat the built-in defaults.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Literal

import pytest

from . import _pytest_compat as compat
from . import fixtures
from .errors import SpecError
from .options import MARKER_OPTIONS, marker_help


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hermetic", "hermetic containers")
    group.addoption("--hermetic", action="store_true", help="run every collected test in its own container")
    group.addoption("--no-hermetic", action="store_true", help="run every test in place, markers or not (debugging)")
    group.addoption("--hermetic-image", metavar="REF", help="default image for hermetic tests (default: host)")
    parser.addini("hermetic_image", "default image for hermetic tests", default="host")
    parser.addini("hermetic_mem", "default memory limit for hermetic tests, e.g. 512M", default="")
    parser.addini("hermetic_net", "default network for hermetic tests (false: loopback only; true: the host "
                  "bridge; a name: a network private to each test)", default="false")
    parser.addini("hermetic_subnet", "subnet for container networks (default $HERMETIC_SUBNET or 10.88.0.0/16)",
                  default="")
    parser.addini("hermetic_timeout", "default timeout in seconds for hermetic tests", default="")
    parser.addini("hermetic_service_log_lines", "lines of each service container's output in a failed test's "
                  "report and in a wait's error (0: none)", default="50")
    parser.addini("hermetic_images", "images built from a Containerfile, one a line: NAME: PATH [CONTEXT] "
                  "[--build-arg K=V]... [--target STAGE] [--tag REF]; a test names one as image='build:NAME'",
                  type="linelist", default=[])
    parser.addini("hermetic_zygote", "start the tests' containers from a fork of pytest made once (true, the "
                  "default), not from pytest itself (false): see docs/pytest.md", type="bool", default=True)
    parser.addini("hermetic_store", "image store directory (default: $HERMETIC_STORE or the user's default)", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", marker_help())
    subnet = config.getini("hermetic_subnet")
    if subnet and "HERMETIC_SUBNET" not in os.environ:
        os.environ["HERMETIC_SUBNET"] = subnet
    store = config.getini("hermetic_store")
    if store and "HERMETIC_STORE" not in os.environ:
        # In the environment so xdist workers and `hermetic` subprocesses share it.
        os.environ["HERMETIC_STORE"] = os.path.abspath(os.path.join(str(config.rootpath), store))
    config.pluginmanager.register(fixtures, "hermetic-fixtures")
    if config.getini("hermetic_images"):  # a bad line stops the session at once, naming it
        try:
            fixtures.session_builds(config)
        except SpecError as exc:
            raise pytest.UsageError(str(exc)) from None
    if not config.getoption("no_hermetic"):
        config.pluginmanager.register(HermeticRunner(config), "hermetic-runner")


# The engine (spec, runtime, forked -> container) is imported where first
# needed: this module loads in every pytest run of the environment, also
# `pytest --version` and sessions with no hermetic test (forked alone is
# over 10 ms of imports).
def pytest_report_header(config: pytest.Config) -> str:
    from .runtime import cgroups

    hierarchy = cgroups.detect()
    version = hierarchy.version if hierarchy.version != "hybrid" else "hybrid (v1 controllers)"
    who = "root" if os.geteuid() == 0 else "rootless"
    state = "off (--no-hermetic)" if config.getoption("no_hermetic") else f"cgroup {version}, {who}, overlayfs"
    return f"hermetic: {state}"


_TIMEOUT_KEY = pytest.StashKey[float]()
_SPEC_KEY = pytest.StashKey[object]()
_BUILD_KEY = pytest.StashKey[object]()  # the item's image is built from a Containerfile: the reference
_UNSET = object()


def _report_setup_error(item: pytest.Item, nextitem: pytest.Item | None, message: str) -> None:
    """Report `item` as an error at set-up with the one line `message`, without running it."""
    ihook = item.ihook
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    keywords: dict[str, Literal[1]] = {k: 1 for k in item.keywords}
    ihook.pytest_runtest_logreport(report=pytest.TestReport(item.nodeid, item.location, keywords, "failed",
                                                            message, "setup", []))
    if item.session.shouldfail or item.session.shouldstop:
        nextitem = None
    # Fixtures of wider scopes set up by earlier items go as they would after this one.
    teardown = compat.call_info(lambda: compat.tear_down_towards(item, nextitem), "teardown")
    if teardown.excinfo is not None:
        report = compat.make_report(item, teardown)
    else:
        report = pytest.TestReport(item.nodeid, item.location, keywords, "passed", None, "teardown", [])
    ihook.pytest_runtest_logreport(report=report)
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)


def _finish() -> None:
    """Remove the containers still pending, then let the host bridge go."""
    from .forked import finish_pending

    finish_pending(block=True)
    if "pytest_hermetic.networks" in sys.modules:  # only a session that used networks
        from .networks import drain_pool, release_host_bridge

        drain_pool()
        release_host_bridge()


def _hashable(value: Any) -> object:
    """`value` (marker options) as a key, or None where it holds anything
    but plain data (then its Spec is built for the item alone)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return (type(value), value)
    if isinstance(value, (list, tuple)):
        items = [_hashable(v) for v in value]
        return None if any(i is None for i in items) else (type(value), tuple(items))
    if isinstance(value, dict):
        pairs = [(_hashable(k), _hashable(v)) for k, v in value.items()]
        if any(k is None or v is None for k, v in pairs):
            return None
        return (dict, frozenset(pairs))
    return None


class HermeticRunner:
    """Decides which items run in a container, and with what `Spec`."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.all = config.getoption("hermetic")
        self._specs: dict[object, Any] = {}  # the Spec of each set of options (see _spec)
        self._defaults: dict[str, Any] | None = None
        # pytest-rerunfailures, whose protocol loop never runs for a hermetic
        # test (this hook runs first): its reruns are made here (see compat.Reruns).
        self.rerunfailures = config.pluginmanager.get_plugin("rerunfailures")
        missing = compat.rerunfailures_missing(self.rerunfailures) if self.rerunfailures is not None else []
        if missing:
            config.issue_config_time_warning(pytest.PytestConfigWarning(
                f"hermetic: this pytest-rerunfailures lacks {', '.join(missing)}: hermetic tests are not rerun; "
                "install pytest-rerunfailures 16.7 or newer"), stacklevel=2)
            self.rerunfailures = None
        if self.rerunfailures is not None:
            config.pluginmanager.register(compat.RerunVerdicts(self.rerunfailures), compat.RerunVerdicts.NAME)

    def defaults(self) -> dict[str, Any]:
        """The options every hermetic test starts from (a new dict: the caller's)."""
        if self._defaults is None:  # once: asked for every item at collection
            config = self.config
            defaults: dict[str, Any] = {"image": config.getoption("hermetic_image") or config.getini("hermetic_image")
                                        or "host"}
            if config.getini("hermetic_mem"):
                defaults["mem"] = config.getini("hermetic_mem")
            if config.getini("hermetic_timeout"):
                defaults["timeout"] = config.getini("hermetic_timeout")
            defaults["net"] = str(config.getini("hermetic_net")).strip()  # Spec.build reads true/false/none/NAME
            self._defaults = defaults
        return dict(self._defaults)

    def options_for(self, item: pytest.Item) -> dict[str, Any] | None:
        """The container options for `item`, or None to run it in place."""
        marker = item.get_closest_marker("hermetic")
        if marker is None and not self.all:
            return None
        options = self.defaults()
        if marker is not None:
            if len(marker.args) > 1:
                raise SpecError(f"takes at most one positional argument (the image), got {len(marker.args)}; "
                                "give the other options by name, e.g. @hermetic('busybox:1', mem='64M')")
            if marker.args:
                options["image"] = marker.args[0]
            unknown = sorted((k for k in marker.kwargs if k not in MARKER_OPTIONS), key=str)
            if unknown:
                raise SpecError(f"unknown argument {unknown[0]!r}; known: {', '.join(MARKER_OPTIONS)}")
            options.update(marker.kwargs)
        return options

    def spec_for(self, item: pytest.Item):  # noqa: ANN201 - Spec, imported lazily
        """The item's `Spec` (None: run in place), built once and kept on the item;
        a bad marker raises `SpecError`, also on every later call."""
        found = item.stash.get(_SPEC_KEY, _UNSET)
        if found is _UNSET:
            try:
                options = self.options_for(item)
                if options is not None and (not isinstance(options["image"], str)
                                            or options["image"].startswith("build:")):
                    self._build_for(item, options)
                found = None if options is None else self._spec(options)
            except (SpecError, TypeError, ValueError) as exc:  # the last two: a value no check foresaw
                found = SpecError(f"{item.nodeid}: bad @hermetic marker: {exc}")
            item.stash[_SPEC_KEY] = found
        if isinstance(found, SpecError):
            raise found
        return found

    def _spec(self, options: dict[str, Any]):  # noqa: ANN202 - Spec, imported lazily
        """`Spec.build` of `options`, one (frozen) Spec shared by every item
        with the same options: a Spec per item made a 30,000-item collection
        ~50 MiB larger, and every fork of pytest (page tables) and every
        child's exit cost grow with pytest's size."""
        from .spec import Spec

        key = _hashable(options)
        found = self._specs.get(key) if key is not None else None
        if found is None:
            found = Spec.build(options.pop("image"), None, **options)
            if key is not None:
                self._specs[key] = found
        return found

    def _build_for(self, item: pytest.Item, options: dict[str, Any]) -> None:
        """An image built from a Containerfile: checked now (its files exist),
        built when the item runs; the spec holds `host` until then."""
        from .build.reference import is_build

        if is_build(options["image"]):
            item.stash[_BUILD_KEY] = fixtures.session_builds(self.config).check(options["image"])
            options["image"] = "host"

    @pytest.hookimpl(wrapper=True)
    def pytest_pycollect_makeitem(self, collector, name, obj):  # noqa: ANN001, ANN201
        """Check every marker while collecting: a bad one is kept with its
        item, which then errors at set-up naming the test, the option and the
        fix; the other tests (of its module too) still run.  A new-style
        wrapper: collection's own errors (a warning turned into one by
        `-W error`) pass through as they are, not wrapped in pluggy's
        PluggyTeardownRaisedWarning."""
        result = yield
        items = result if isinstance(result, list) else [result] if result is not None else []
        for item in items:
            if isinstance(item, pytest.Item):
                try:
                    self.spec_for(item)
                except SpecError:
                    pass  # reported when the item runs
        return result

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
        try:
            spec = self.spec_for(item)
        except SpecError as exc:
            _report_setup_error(item, nextitem, str(exc))
            return True
        if spec is None:
            return None
        if _BUILD_KEY in item.stash:  # built at the first test that needs it; a failure errors each of them
            from .errors import HermeticError

            try:
                spec = spec.with_options(image=fixtures.session_builds(self.config).image(item.stash[_BUILD_KEY]).name)
            except HermeticError as exc:
                output = getattr(exc, "output", "")
                _report_setup_error(item, nextitem, f"{item.nodeid}: {exc}" + (
                    f"\n--- the step's last lines of output ---\n{output}" if output else ""))
                return True
        from .forked import run_in_container

        timeout = item.stash.get(_TIMEOUT_KEY, None)
        if timeout and spec.timeout is None:
            spec = spec.with_options(timeout=float(timeout))
        reruns = compat.Reruns.for_item(item, self.rerunfailures) if self.rerunfailures is not None else None
        # pytest-rerunfailures changes the item in pytest before each attempt:
        # such a test's child is pytest's own fork, made then (see forked/zygote.py).
        ahead_ok = reruns is None and (nextitem is None or self.rerunfailures is None
                                       or compat.Reruns.for_item(nextitem, self.rerunfailures) is None)
        run_in_container(item, nextitem, spec, reruns, self._next_spec(item, nextitem), ahead_ok=ahead_ok,
                         spec_ahead=lambda later: self._ahead_spec(item, later))
        return True

    def _ahead_spec(self, item: pytest.Item, later: pytest.Item):  # noqa: ANN202 - Spec or None
        """A later item's spec, for its container to be started ahead while
        `item` runs; None where it may not be (pytest-rerunfailures
        changes the item in pytest before each attempt)."""
        if self.rerunfailures is not None and compat.Reruns.for_item(later, self.rerunfailures) is not None:
            return None
        return self._next_spec(item, later)

    def _next_spec(self, item: pytest.Item, nextitem: pytest.Item | None):  # noqa: ANN202 - Spec or None
        """The next item's spec, for its container to be prepared while
        `item` runs; None where there is none to prepare (no next item, an
        image still to build).  pytest-timeout gives the next item its
        timeout only when it starts: the current item's is taken as the
        likely one (a prepared container that turns out different is
        removed, not used)."""
        if nextitem is None or _BUILD_KEY in nextitem.stash:
            return None
        try:
            spec = self.spec_for(nextitem)
        except SpecError:
            return None
        timeout = item.stash.get(_TIMEOUT_KEY, None)
        if spec is not None and timeout and spec.timeout is None:
            spec = spec.with_options(timeout=float(timeout))
        return spec

    def pytest_sessionstart(self) -> None:
        # pytest-rerunfailures' status server (xdist's controller; also
        # without -n when xdist is installed) serves other processes, never a test.
        server = getattr(getattr(self.config, "failures_db", None), "sock", None)
        if self.rerunfailures is not None and server is not None:
            from .forked.loopback_relay import keep_private

            keep_private(server.fileno())

    def pytest_sessionfinish(self) -> None:
        _finish()

    def pytest_unconfigure(self) -> None:
        _finish()

    # pytest-timeout asks these hooks first: for a hermetic test the
    # container's own timeout kills the container instead of the whole run.
    @pytest.hookimpl(optionalhook=True)
    def pytest_timeout_set_timer(self, item: pytest.Item, settings: Any) -> bool | None:
        try:
            spec = self.spec_for(item)
        except SpecError:
            return True  # the item only reports its bad marker
        if getattr(settings, "func_only", False) or spec is None:
            return None
        item.stash[_TIMEOUT_KEY] = settings.timeout
        return True

    @pytest.hookimpl(optionalhook=True)
    def pytest_timeout_cancel_timer(self, item: pytest.Item) -> bool | None:
        return True if _TIMEOUT_KEY in item.stash else None
