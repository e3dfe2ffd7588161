"""Every use of pytest's (and pluggy's) private API, in one place.

Running one test's phases in a forked child and logging them in the parent
needs a few pieces of pytest that have no public name: the runner's
`call_and_report`, the session's `SetupState`, the capture manager's global
capture, the warnings plugin's per-item recording.  Each shim below says
what it relies on, so a pytest release that moves something breaks here,
visibly, and nowhere else.  `scripts/pytest_compat_check.sh` runs the plugin
tests against pytest's newest release (and, given a checkout, its main
branch).

Public names are used where they exist (`pytest.CallInfo`, `pytest.TestReport`,
the reporting hooks); nothing here changes what pytest does.

One concern, however long: the list of what the plugin takes from pytest's
inside is the point of keeping it in one module, where a release that moves
something is seen at once.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from typing import Any, Callable, Iterator, TypeVar

import pytest
from _pytest.nodes import Node as _Node
from _pytest.runner import call_and_report as _call_and_report
from _pytest.runner import runtestprotocol as _runtestprotocol

T = TypeVar("T")

_RERAISE = (pytest.exit.Exception, KeyboardInterrupt)


def call_and_report(item: pytest.Item, when: str, nextitem: Any = None) -> pytest.TestReport:
    """Run one phase of `item` ("setup", "call", "teardown") through its
    hook, make its report and log it, as pytest's own protocol does.

    Relies on `_pytest.runner.call_and_report(item, when, log, **kwds)`
    (pytest 7.4 to main), `nextitem` passed on to `pytest_runtest_teardown`."""
    if when == "teardown":
        return _call_and_report(item, when, log=True, nextitem=nextitem)  # type: ignore[arg-type]
    return _call_and_report(item, when, log=True)  # type: ignore[arg-type]


def run_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """pytest's own set-up, call and teardown of `item`, logged (used when a
    collector or wider fixture failed: pytest reports it from its cache).

    Relies on `_pytest.runner.runtestprotocol(item, log, nextitem)`."""
    _runtestprotocol(item, nextitem=nextitem, log=True)


def recording_warnings(item: pytest.Item) -> contextlib.AbstractContextManager[None]:
    """In a hermetic test's child: record the warnings raised inside as the
    warnings plugin records a test's (`pytest_warning_recorded` called for
    each).  The plugin wraps `pytest_runtest_protocol`, which in a hermetic
    test runs in the parent: its filters for the item (the ini's, -W, the
    `filterwarnings` marks) are in force at the fork and so in the child,
    which only has to catch what its own part raises (applying them all
    again cost the child 0.3 ms per test).  Without the plugin (-p
    no:warnings) nothing is caught, filtered or recorded, as in place.

    Relies on the warnings plugin (registered as "warnings") wrapping
    `pytest_runtest_protocol` in `catch_warnings_for_item` (pytest 7 to main)."""
    if not item.config.pluginmanager.has_plugin("warnings"):
        return contextlib.nullcontext()
    return _recording_inherited(item)


def same_warning_filters(item: pytest.Item, other: pytest.Item) -> bool:
    """Whether the warnings plugin puts the same filters in force around
    both items' protocols (their `filterwarnings` marks: the ini's and -W
    are the session's): a child forked during `item`'s protocol for
    `other` inherits the right ones (see `recording_warnings`).

    Relies on what `recording_warnings` relies on."""
    return ([mark.args for mark in item.iter_markers(name="filterwarnings")]
            == [mark.args for mark in other.iter_markers(name="filterwarnings")])


@contextlib.contextmanager
def _recording_inherited(item: pytest.Item) -> Iterator[None]:
    with warnings.catch_warnings(record=True) as log:
        try:
            yield
        finally:
            assert log is not None
            for message in log:
                item.ihook.pytest_warning_recorded.call_historic(
                    kwargs={"warning_message": message, "nodeid": item.nodeid, "when": "runtest", "location": None})


def set_up_collectors(item: pytest.Item) -> None:
    """Set up the collectors above `item` (module, class...), each once, as
    pytest would before the item's own set-up.

    Relies on `Session._setupstate` and `SetupState.setup(node)`."""
    # setup() is typed for an Item but only asks for listchain(), which every node has
    item.session._setupstate.setup(item.parent)  # type: ignore[arg-type]


def tear_down_towards(item: pytest.Item, nextitem: pytest.Item | Any | None) -> None:
    """Tear down what `nextitem` does not need (all of it when None), as
    pytest does after each item.

    Relies on `Session._setupstate` and `SetupState.teardown_exact(nextitem)`,
    which only calls `nextitem.listchain()`."""
    item.session._setupstate.teardown_exact(nextitem)


_RERUN_ITEM_STATE = ("_test_failed_statuses", "_terminal_errors", "_test_xfailed", "_rerun_condition_excinfos",
                     "_rerun_condition_results")


def make_report(item: pytest.Item, call: pytest.CallInfo[Any]) -> pytest.TestReport:
    """`pytest_runtest_makereport` for a phase run in pytest's process (the
    teardown of a wider scope after a hermetic test).  pytest-rerunfailures'
    wrapper of that hook expects the per-item state that the set-up report
    of its own protocol made, which for a hermetic test was made in the
    child: given empty here where missing (it raised AttributeError, an
    internal error of the session, at a module fixture's failed teardown).

    Relies on pytest-rerunfailures (16.x) keeping that state in the item
    attributes named in `_RERUN_ITEM_STATE`, each a dict."""
    if item.config.pluginmanager.has_plugin("rerunfailures"):
        for name in _RERUN_ITEM_STATE:
            if not hasattr(item, name):
                setattr(item, name, {})
    return item.ihook.pytest_runtest_makereport(item=item, call=call)


def set_up_already(item: pytest.Item, or_cached: bool = False) -> bool:
    """Whether `set_up_collectors` and `set_up_wide_fixtures` would do
    nothing for `item`: every collector above it is set up (none failed)
    and it uses no fixture of a wider scope than function; with
    `or_cached`, whether they would change nothing: each such fixture is
    cached already, with a value, and not parametrized (so whatever the
    item's parameters, a lookup finds it: `tmp_path`'s session-scoped
    factory, once made).

    Relies on what those two rely on (`SetupState.stack`, whose values are
    (finalizers, stored error or None); `item._fixtureinfo`), and on
    `FixtureDef.cached_result` ((value, cache key, exception info) or None,
    the key 0 where the fixture has no params) and `.params`."""
    stack = item.session._setupstate.stack
    if list(stack) != item.listchain()[:-1] or any(error for _, error in stack.values()):
        return False
    return _wide_fixtures_set_up(item, or_cached)


def _wide_fixtures_set_up(item: pytest.Item, or_cached: bool) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None or not getattr(item, "_request", None):
        return True
    for name in item.fixturenames:  # type: ignore[attr-defined]
        definitions = info.name2fixturedefs.get(name)
        if definitions and definitions[-1].scope != "function":
            cached = definitions[-1].cached_result
            if not or_cached or cached is None or cached[2] is not None or definitions[-1].params is not None:
                return False
    return True


def only_plain_nodes_between(item: pytest.Item, nextitem: pytest.Item | None) -> bool:
    """Whether pytest, between `item` and `nextitem`, changes nothing but
    its SetupState's stack: each node it tears down (`tear_down_towards`: a
    module or class `nextitem` is not in) holds no finalizer but its own
    no-op `teardown` (no fixture of that scope, nothing added), each node it
    sets up (`set_up_collectors`) has the no-op `setup` (a module or a class;
    not a package's `setUpModule`, not a unittest class), and every fixture
    of a wider scope `nextitem` uses is cached already (`set_up_already`
    with `or_cached`).  A child forked before that catches up with
    `catch_up`: the stack alone differs.

    Relies on `SetupState.stack` ({node: ([node.teardown, *finalizers],
    stored error)}), on `teardown_exact` popping the nodes that
    `nextitem.listchain()` does not begin with, on `SetupState.setup`
    pushing the rest with `node.setup()`, and on `Node.setup` and
    `Node.teardown` doing nothing."""
    if nextitem is None:
        return False
    stack = item.session._setupstate.stack
    if any(error for _, error in stack.values()):
        return False
    set_up, needed = list(stack), nextitem.listchain()[:-1]
    common = 0
    while common < min(len(set_up), len(needed)) and set_up[common] is needed[common]:
        common += 1
    for node in set_up[common:]:
        finalizers = stack[node][0]
        if type(node).teardown is not _Node.teardown or finalizers != [node.teardown]:
            return False
    if any(type(node).setup is not _Node.setup for node in needed[common:]):
        return False
    return _wide_fixtures_set_up(nextitem, or_cached=True)


def catch_up(item: pytest.Item) -> None:
    """In a child forked before pytest's teardown of the nodes `item` is not
    in (see `only_plain_nodes_between`): tear them down here too (each a
    no-op), so `item`'s own set-up pushes its module and class as pytest's
    did.  Nothing where pytest's stack was `item`'s already.

    Relies on `SetupState.teardown_exact(item)` stopping at once where the
    stack begins `item.listchain()`."""
    item.session._setupstate.teardown_exact(item)


def nothing_to_tear_down(item: pytest.Item, nextitem: pytest.Item | None) -> bool:
    """Whether `tear_down_towards(item, nextitem)` would do nothing:
    `nextitem` needs every node set up now (the next test of the same
    module or class).

    Relies on `SetupState.teardown_exact` stopping at once when the stack's
    nodes begin `nextitem.listchain()`."""
    if nextitem is None:
        return False
    stack = item.session._setupstate.stack
    return list(stack) == nextitem.listchain()[:len(stack)]


def set_up_wide_fixtures(item: pytest.Item) -> None:
    """Set up the item's fixtures of session, package, module and class
    scope (not function scope), so their values exist before the fork.

    Relies on `item._fixtureinfo.name2fixturedefs` (each name's definitions,
    the last one in effect, with `.scope`), `item._request.getfixturevalue`,
    and `SetupState.stack` (a dict of node -> (finalizers, exception)): the
    item must look active for fixture lookups (pytest 9 warns, 10 refuses,
    otherwise); it leaves the stack again before the fork, so the child
    pushes it and runs its own set-up (function scope) as usual."""
    info = getattr(item, "_fixtureinfo", None)
    request = getattr(item, "_request", None)
    if info is None or not request:
        return
    stack = item.session._setupstate.stack
    stack[item] = ([], None)
    try:
        for name in item.fixturenames:  # type: ignore[attr-defined]
            definitions = info.name2fixturedefs.get(name)
            if definitions and definitions[-1].scope != "function":
                request.getfixturevalue(name)
    finally:
        del stack[item]


def basetemp(config: pytest.Config) -> str | None:
    """The session's base temporary folder (made now if need be), where
    `tmp_path` and `tmp_path_factory` put their folders; None when the
    tmpdir plugin is off.

    Relies on `config._tmp_path_factory` (set by the tmpdir plugin's
    `pytest_configure`), a `pytest.TempPathFactory`."""
    factory = getattr(config, "_tmp_path_factory", None)
    return None if factory is None else str(factory.getbasetemp())


def outside_capture(config: pytest.Config) -> contextlib.AbstractContextManager[None]:
    """Write to the terminal while pytest captures output (progress lines of
    an image build).  Relies on the "capturemanager" plugin's
    `global_and_fixture_disabled` (what live logging uses)."""
    capman = config.pluginmanager.getplugin("capturemanager")
    return capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext()


def under_capture(config: pytest.Config, when: str, fn: Callable[[], T]) -> tuple[T, list[tuple[str, str]]]:
    """Run `fn` under pytest's global output capture, as the phase `when`
    would be; return its result and its report sections ("Captured stdout
    setup" ...).  Without global capture (`-s`), just run it.

    Relies on the "capturemanager" plugin's `is_globally_capturing`,
    `resume_global_capture`, `suspend_global_capture(in_=False)` and
    `read_global_capture`."""
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is None or not capman.is_globally_capturing():
        return fn(), []
    capman.resume_global_capture()
    try:
        result = fn()
    finally:
        capman.suspend_global_capture(in_=False)
    out, err = capman.read_global_capture()
    return result, _sections(when, out, err)


def captured_sections(config: pytest.Config, when: str) -> list[tuple[str, str]]:
    """What the global capture holds now (output of a child that died
    before reporting), as report sections of the phase `when`.

    Relies on the "capturemanager" plugin's `is_globally_capturing` and
    `read_global_capture`."""
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is None or not capman.is_globally_capturing():
        return []
    out, err = capman.read_global_capture()
    return _sections(when, out, err)


def _sections(when: str, out: str, err: str) -> list[tuple[str, str]]:
    return [(f"Captured {name} {when}", text) for name, text in (("stdout", out), ("stderr", err)) if text]


def is_subreport(report: Any) -> bool:
    """Whether `report` is a subtest's report (pytest 9's `subtests`
    fixture, or the pytest-subtests plugin), which may come several times
    per phase and does not end one.

    Relies on the class name `SubtestReport`, the same in both."""
    return type(report).__name__ == "SubtestReport"


def implementations(hook: Any, plugin: object) -> list:
    """`plugin`'s implementations of `hook`, for `keep_only`.  Public API
    (pluggy's `HookCaller.get_hookimpls()`, `HookImpl.plugin`)."""
    return [impl for impl in hook.get_hookimpls() if impl.plugin is plugin]


def keep_only(hook: Any, impls: list) -> None:
    """Leave only `impls` (from `implementations`) of `hook` in this process.

    Relies on pluggy's `HookCaller._hookimpls`, the list `get_hookimpls()`
    copies; used in the thrown-away child only, so the parent's hooks are
    untouched.  A new list, not the old one filtered: the child then does
    not touch (and copy) every other plugin's implementation."""
    hook._hookimpls = list(impls)


def call_info(fn: Callable[[], T], when: str) -> pytest.CallInfo[T]:
    """`fn` called as pytest calls a phase: its result or its exception
    kept, an exit or Ctrl-C raised on.  Public API (`pytest.CallInfo`);
    here so the reraised exceptions are named once."""
    return pytest.CallInfo.from_call(fn, when=when, reraise=_RERAISE)  # type: ignore[arg-type]


def xfail_reason_for_crash(item: pytest.Item) -> str | None:
    """The reason of `item`'s xfail mark if a crash (a killed child: no
    exception) counts as its expected failure, as pytest's skipping plugin
    decides for an exception: yes unless the mark names `raises=` (a kill is
    an exception of no type) or `--runxfail` is given; strict changes
    nothing (it is about passing).  None otherwise.

    Relies on `_pytest.skipping.evaluate_xfail_marks(item)` (pytest 6 to main)."""
    if item.config.getoption("runxfail", False):
        return None
    from _pytest.skipping import evaluate_xfail_marks

    xfailed = evaluate_xfail_marks(item)
    if xfailed is None or xfailed.raises is not None:
        return None
    return xfailed.reason


def message_longrepr(item: pytest.Item, text: str) -> Any:
    """A failure's long representation that is only `text`, with `text` as
    its crash message too: the short summary's `FAILED id - text` reads
    `longrepr.reprcrash.message`, which a plain string lacks before pytest 8
    (7.4 printed `FAILED id` alone for a killed test).  Relies on
    `_pytest._code.code`'s ReprExceptionInfo/ReprTraceback/ReprEntryNative/
    ReprFileLocation, which pytest's own report serialization (xdist) knows."""
    from _pytest._code.code import ReprEntryNative, ReprExceptionInfo, ReprFileLocation, ReprTraceback

    path, lineno, _name = item.location
    traceback = ReprTraceback(reprentries=[ReprEntryNative([text + "\n"])], extraline=None, style="native")
    return ReprExceptionInfo(reprtraceback=traceback,
                             reprcrash=ReprFileLocation(path=str(path), lineno=(lineno or 0) + 1, message=text))


_RERUNFAILURES_NAMES = ("get_reruns_count", "get_reruns_delay", "get_reruns_delay_backoff_factor",
                        "get_reruns_condition", "_get_reruns_condition_failures", "_is_rerun_path_excluded",
                        "is_master", "works_with_current_xdist")


def rerunfailures_missing(module: Any) -> list[str]:
    """The names `Reruns` and `RerunVerdicts` need that this
    pytest-rerunfailures lacks (an older release than 16.7).

    Relies on those names being module attributes of `pytest_rerunfailures`."""
    return [name for name in _RERUNFAILURES_NAMES if not hasattr(module, name)]


class Reruns:
    """pytest-rerunfailures' decisions for one hermetic item, whose attempts
    each run in a fresh container while the plugin's own protocol loop (which
    reruns in the same process) is not called.  Each attempt's reports are
    marked as the plugin marks them: `rerun` set to the attempt's number, the
    failed ones of an attempt that is rerun given the outcome "rerun" (its
    `pytest_report_teststatus` and summary then show RERUN).

    Relies on `pytest_rerunfailures`' `get_reruns_count`,
    `get_reruns_delay`, `get_reruns_delay_backoff_factor`,
    `get_reruns_condition`, `_is_rerun_path_excluded`, `is_master`,
    `works_with_current_xdist` and `config.failures_db` (16.x).  What the
    plugin decides from the exception, which stays in the container
    (`--only-rerun`, `--rerun-except`, `condition=`), comes home on the
    reports (see `RerunVerdicts`)."""

    def __init__(self, item: pytest.Item, module: Any, reruns: int) -> None:
        self.item = item
        self.module = module
        self.reruns = reruns
        self.verdicts: RerunVerdicts = item.config.pluginmanager.get_plugin(RerunVerdicts.NAME)  # type: ignore[assignment]
        self.db = item.session.config.failures_db  # type: ignore[attr-defined]
        # After a crashed xdist worker, the controller counts the attempts made.
        self.count: int = self.db.get_test_failures(item.nodeid)
        self.db.set_test_reruns(item.nodeid, reruns)

    @classmethod
    def for_item(cls, item: pytest.Item, module: Any) -> Reruns | None:
        """The decisions for `item` when the plugin would rerun it, else None."""
        if module._is_rerun_path_excluded(item):
            return None
        reruns = module.get_reruns_count(item)
        if reruns is None:
            return None
        if reruns and item.session.config.option.usepdb:
            raise pytest.UsageError("--reruns incompatible with --pdb")
        return cls(item, module, reruns)

    def exhausted(self) -> bool:
        """Whether no attempt is left at all (the plugin then reports nothing)."""
        return self.count > self.reruns and self.count > 0

    def next_attempt(self) -> None:
        self.count += 1
        self.item.execution_count = self.count  # type: ignore[attr-defined]

    def forgo(self) -> None:
        """No rerun of this attempt, which pytest's own protocol runs in the
        pytest process: the plugin's teardown hook, which holds the wider
        scopes' finalizers back for a rerun, then leaves them in place."""
        del self.item.execution_count  # type: ignore[attr-defined]

    def watching(self) -> contextlib.AbstractContextManager[None]:
        """Around an attempt's fork: its child records the verdicts."""
        return self.verdicts.watching()

    def mark(self, reports: list[Any], last: bool = False) -> bool:
        """Mark this attempt's `reports`; True when the item runs again
        (never when `last`: the session stops)."""
        module, item = self.module, self.item
        terminal = False
        condition = None
        for report in reports:
            terminal = report.__dict__.pop(RerunVerdicts.TERMINAL, False) or terminal
            found = report.__dict__.pop(RerunVerdicts.CONDITION, None)
            condition = found if found is not None else condition
        if condition is None:  # the child died before its teardown: the condition without an exception
            condition = module.get_reruns_condition(item)
        rerun = False
        for report in reports:
            report.rerun = self.count - 1
            if is_subreport(report):  # logged as they came, not rerun (docs/pytest.md)
                continue
            if rerun:
                if report.failed:
                    report.outcome = "rerun"
                continue
            if (last or self.count > self.reruns or not report.failed or hasattr(report, "wasxfail")
                    or terminal or not condition):
                continue
            limit = item.session.config.option.max_suite_reruns
            if limit is not None and not self.db.try_increment_suite_reruns(limit):
                continue
            report.outcome = "rerun"
            rerun = True
        if rerun:
            time.sleep(module.get_reruns_delay(item)
                       * module.get_reruns_delay_backoff_factor(item) ** (self.count - 1))
        return rerun

    def logged(self, report: Any) -> bool:
        """Whether the plugin logs `report` (a worker of an old xdist keeps reruns to itself)."""
        return (report.outcome != "rerun" or self.module.is_master(self.item.config)
                or self.module.works_with_current_xdist())


class RerunVerdicts:
    """What pytest-rerunfailures decides from a failure's exception, which
    only the container's child has, copied onto the reports it sends home:
    whether an error rules a rerun out (`--only-rerun`, `--rerun-except`:
    the plugin's `item._terminal_errors`) and the marker's `condition=` as
    the plugin evaluates it after an attempt.  Registered once in the
    parent, inert there; active in a child forked while `watching`.

    Relies on `pytest_rerunfailures`' `item._terminal_errors` (set by its
    `pytest_runtest_makereport` wrapper, inside this one),
    `get_reruns_condition` and `_get_reruns_condition_failures`."""

    NAME = "hermetic-rerun-verdicts"
    TERMINAL = "hermetic_rerun_terminal"
    CONDITION = "hermetic_rerun_condition"

    def __init__(self, module: Any) -> None:
        self.module = module
        self.active = False

    @contextlib.contextmanager
    def watching(self) -> Any:
        self.active = True
        try:
            yield
        finally:
            self.active = False

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: Any) -> Any:
        report = yield
        if self.active:
            if getattr(item, "_terminal_errors", {}).get(report.when):
                setattr(report, self.TERMINAL, True)
            if report.when == "teardown":
                module = self.module
                setattr(report, self.CONDITION,
                        bool(module.get_reruns_condition(item, module._get_reruns_condition_failures(item))))
        return report
