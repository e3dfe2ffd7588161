"""The parent side of a hermetic test: runs in pytest (or an xdist worker).

It sets up the item's collectors and wider fixtures in place, starts the
container whose workload is `child.child_main`, reads the child's messages
while it runs (answering its `containers` calls), logs the reports through
pytest's hooks, and turns a child that died without reporting into a
failure report that says why.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import time
import warnings
from typing import Any, Literal

import pytest

from .. import _pytest_compat as compat
from ..bindings import image_for
from ..container import Container
from ..errors import HermeticError
from ..fixtures import TestNetworks
from ..images.store import Store
from ..spec import Spec, format_size
from . import coverage_relay, huge_pages, interrupt, per_test, zygote

from .child import install_forwarder
from .services import Services
from .start import start_child
from .wire import CALL_MARK, DONE, RELAY_MARK, frames, from_child, is_complete, write_frame

# The most one test's child may send pytest (its reports with their captured
# output, warnings, coverage), held in memory until it is done: past it the
# container is killed and the test fails saying so.  Any process of the
# container that reaches the pipe could otherwise write without end and grow
# pytest until the host ran out of memory.
MAX_SENT = 1 << 30


def run_in_container(item: pytest.Item, nextitem: pytest.Item | None, spec: Spec,
                     reruns: compat.Reruns | None = None, next_spec: Spec | None = None,
                     ahead_ok: bool = False, spec_ahead: Any = None) -> None:
    """pytest's run-test protocol for `item`, its function scope in a
    container made from `spec`; with `reruns` (pytest-rerunfailures), each
    attempt in a fresh container, logged as that plugin logs them.
    `next_spec`: the next test's, whose container is prepared while this
    test runs (see `per_test.prepare_next`); with `ahead_ok` (nothing of
    pytest-rerunfailures to do for the next test) it is even started then,
    where nothing comes between the two tests (see `per_test.nothing_between`),
    and so may the one after it be, given `spec_ahead(later)`: a later
    test's spec where its container may be started ahead, else None."""
    ihook = item.ihook
    huge_pages.collapse_once(len(item.session.items))  # a big pytest forks cheaper (huge_pages.py)
    if reruns is not None:
        if reruns.exhausted():  # an xdist worker that crashed on it used them all
            return
        reruns.next_attempt()
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    # (Each step under pytest's capture costs ~0.1 ms of pytest's time per
    # test, on the test's path: skipped where it would do nothing.)
    setup_sections: list[tuple[str, str]] = []
    if not compat.set_up_already(item):
        setup, setup_sections = compat.under_capture(
            item.config, "setup", lambda: compat.call_info(lambda: _setup_wide_scopes(item), "setup"))
        if setup.excinfo is not None:
            # A collector or a wide fixture failed (or skipped): plain pytest
            # reports that from the cached error without running the test body.
            if reruns is not None:
                reruns.forgo()  # no rerun then (docs/pytest.md)
            compat.run_protocol(item, nextitem)
            ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
            return
    while True:
        if reruns is None:
            events, exit_event, teardown_report = _attempt(item, nextitem, spec, setup_sections, next_spec, ahead_ok,
                                                           spec_ahead)
        else:
            with reruns.watching():
                events, exit_event, teardown_report = _attempt(item, nextitem, spec, setup_sections, next_spec)
        if reruns is None:
            break
        reports = [e[1] for e in events if e[0] == "report"] + ([teardown_report] if teardown_report else [])
        if not reruns.mark(reports, last=exit_event is not None):
            break
        # Rerun: this attempt is logged whole; the wider scopes stay set up
        # for the next one, as the plugin keeps them.
        _log_events(item, events, lambda r: reruns.logged(r))
        if teardown_report is not None and reruns.logged(teardown_report):
            ihook.pytest_runtest_logreport(report=teardown_report)
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        reruns.next_attempt()
        ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        setup_sections = []
    _log_events(item, events)
    if item.session.shouldfail or item.session.shouldstop:
        nextitem = None
    teardown_sections: list[tuple[str, str]] = []
    if not compat.nothing_to_tear_down(item, nextitem):
        teardown, teardown_sections = compat.under_capture(
            item.config, "teardown",
            lambda: compat.call_info(lambda: compat.tear_down_towards(item, nextitem), "teardown"))
        if teardown.excinfo is not None and (teardown_report is None or teardown_report.passed):
            teardown_report = compat.make_report(item, teardown)
    if teardown_report is not None:
        teardown_report.sections.extend(teardown_sections)
        ihook.pytest_runtest_logreport(report=teardown_report)
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    if exit_event is not None:
        if exit_event[0] == "interrupt":
            raise KeyboardInterrupt(exit_event[1]) if exit_event[1] else KeyboardInterrupt
        pytest.exit(exit_event[1], returncode=exit_event[2])


def _attempt(item: pytest.Item, nextitem: pytest.Item | None, spec: Spec,
             setup_sections: list, next_spec: Spec | None = None,
             ahead_ok: bool = False, spec_ahead: Any = None) -> tuple[list[tuple], tuple | None, Any]:
    """Run the item's function scope once in a container: its events (the
    teardown report, logged after the parent's own teardown, taken out),
    the exit or interrupt it asked for, and that teardown report."""
    started = True
    with interrupt.deferred() as ctrl_c:  # (a Ctrl-C meanwhile is raised below, see interrupt.py)
        try:
            events, result = _run_child(item, nextitem, spec, next_spec, ahead_ok, spec_ahead, ctrl_c)
        except HermeticError as exc:  # the container could not start (no such image or user): this test's error only
            events, result = [("report", pytest.TestReport(item.nodeid, item.location, {k: 1 for k in item.keywords},
                                                           "failed", f"hermetic: {exc}", "setup", []))], None
            started = False
    refused = [e[1] for e in events if e[0] == "refused"]
    if refused:
        # Not the child's doing (it sends plain data): a process of the
        # container wrote to its pipe to pytest.  Nothing it sent is trusted.
        message = (f"hermetic: pytest refused a message from the test's container ({refused[0]}); another process "
                   "in the container may have written to the test's pipe to pytest")
        keywords: dict[str, Literal[1]] = {k: 1 for k in item.keywords}
        events = [("report", pytest.TestReport(item.nodeid, item.location, keywords, "failed", message, "setup", [])),
                  ("report", pytest.TestReport(item.nodeid, item.location, keywords, "passed", None, "teardown", []))]
    if ctrl_c is not None and ctrl_c.count:
        # As in place: what the test reported is logged, the phase it was
        # stopped in has no report, and the session ends interrupted.
        said = (f"hermetic: {item.nodeid} had not stopped {interrupt.GRACE:g} s after Ctrl-C: killed (a second "
                "Ctrl-C kills at once)") if ctrl_c.killed else ""
        events = [e for e in events if started and e[0] not in ("exit", "interrupt")] + [("interrupt", said)]
        started = False  # (no crash report: it stopped for the Ctrl-C)
    reports = [e[1] for e in events if e[0] == "report"]
    exit_event = next((e for e in events if e[0] in ("exit", "interrupt")), None)
    if started and exit_event is None and not any(r.when == "teardown" for r in reports if not compat.is_subreport(r)):
        events.append(("report", _crash_report(item, reports, result)))
    teardown_report = None
    kept = []
    for event in events:
        if event[0] == "report":
            report = event[1]
            if setup_sections:
                # As in place, each later report of the item carries the
                # output of the phases before it (the "PASSES" summary shows
                # the call report's): the wider scopes' set-up came first.
                report.sections[:0] = setup_sections
            if report.when == "teardown" and not compat.is_subreport(report):
                teardown_report = report
                continue
        kept.append(event)
    return kept, exit_event, teardown_report


def _log_events(item: pytest.Item, events: list[tuple], logged: Any = None) -> None:
    """Log an attempt's reports and warnings, merge its coverage."""
    ihook = item.ihook
    for event in events:
        if event[0] == "report":
            if logged is None or logged(event[1]):
                ihook.pytest_runtest_logreport(report=event[1])
        elif event[0] == "warning":
            ihook.pytest_warning_recorded.call_historic(kwargs=event[1])
        elif event[0] == "coverage":
            coverage_relay.merge(event[1])


def _setup_wide_scopes(item: pytest.Item) -> None:
    """Collectors and fixtures of session/package/module/class scope, in the
    parent, so they are set up once per process as in plain pytest."""
    compat.set_up_collectors(item)
    compat.set_up_wide_fixtures(item)


def _run_child(item: pytest.Item, nextitem: pytest.Item | None, spec: Spec,
               next_spec: Spec | None = None, ahead_ok: bool = False, spec_ahead: Any = None,
               ctrl_c: interrupt.Deferred | None = None) -> tuple[list[tuple], Any]:
    install_forwarder(item.config)
    per_test.note_order(item, nextitem)
    scope = _network_scope(spec)
    try:
        store = Store()
        with interrupt.allowed():  # (a pull or a build: Ctrl-C stops it at once, see interrupt.py)
            image = image_for(spec, store)  # resolved once, here, for the bindings and the container
            spec = per_test.container_spec(item.config, spec, store, image)
        ahead = per_test.take_ahead(item, spec)
        container = ahead.container if ahead is not None else per_test.take_next(spec) or Container(
            spec, store=store, image=image, network=scope.get(spec.net) if isinstance(spec.net, str) else None)
    except BaseException:
        if scope is not None:
            scope.close()  # nothing else would: no container took it
        raise
    # pytest's fork made once (zygote.py) forks this test's child, and the
    # next one's ahead, where pytest does nothing in between.
    forking = zygote.for_item(item) if ahead_ok and zygote.may_serve(spec, item.config) else None
    between = ahead_ok and nextitem is not None and per_test.nothing_between(item, nextitem)
    services = Services(scope, spec.net, container, may_run="containers" in getattr(item, "fixturenames", ()))
    read_fd = reply_w = -1
    deferred = False
    removal_errors: list[Exception] = []

    def remove_earlier() -> None:
        try:
            per_test.finish_pending(block=False)
        except Exception as exc:  # noqa: BLE001 - raised once this test's container is home
            removal_errors.append(exc)

    try:
        if ahead is not None:
            read_fd, reply_w, found = ahead.read_fd, ahead.reply_w, ahead.listeners
            ahead.go()
        else:
            # While this test's child builds its root, the parent makes the
            # next test's namespaces and removes earlier tests' containers:
            # neither is then on a test's path.
            read_fd, reply_w, _, found = start_child(container, item, remove_earlier,
                                                    forker_for=forking.forker if forking else None)
        services.listeners = {(listener.family, listener.type, listener.address, listener.port) for listener in found}
        if forking is not None:
            forking.valid_for = nextitem if between else None  # (see zygote.py)
        if next_spec is not None:
            if between and forking is not None and nextitem is not None and zygote.may_serve(next_spec, item.config):
                # Started now, each child waits for its turn after its
                # set-up: the forks and the set-ups overlap the tests before.
                zygote_forker = forking.forker
                per_test.keep_ahead(item.config, _upcoming(item.config, nextitem, next_spec, spec_ahead),
                                    lambda ready, later: start_child(ready, later, None, ahead=True,
                                                                     forker_for=zygote_forker))
            else:
                per_test.prepare_next(item.config, next_spec)
        if ahead is not None:
            container.confirm_start()
            remove_earlier()
        per_test.hold_namespace(container, forking.close if forking is not None else os.close)
        assert container.process is not None
        data, complete = _drain(read_fd, container, services, reply_w, ctrl_c)
        if complete:
            container.flush_files()  # the test's lines in pytest's output file before pytest's own
            # Every report is home: the exit of the child (tearing down a
            # large address space and its namespaces) and the clean-up need
            # not hold up the next test.
            per_test.defer_removal(container)
            deferred = True
            result = None
        else:
            result = container.wait()
    finally:
        services.close_relay()
        for fd in (read_fd, reply_w):
            if fd >= 0:
                os.close(fd)
        services.close()
        if not deferred:
            container.remove()
        if scope is not None:
            scope.close()  # each network goes once its last container is removed
    if removal_errors:
        raise removal_errors[0]
    return _decode(item.config, data), result


def _upcoming(config: pytest.Config, nextitem: pytest.Item, next_spec: Spec,
              spec_ahead: Any) -> list[tuple[pytest.Item, Spec]]:
    """The next tests whose containers the zygote may start now, in order:
    the next one, and those after it while each follows the one before
    with nothing in between (a fork now is then as good as one at its
    turn) and its spec is the zygote's too."""
    upcoming = [(nextitem, next_spec)]
    while len(upcoming) < per_test.AHEAD and spec_ahead is not None:
        last = upcoming[-1][0]
        later = per_test.item_after(last)
        if later is None or not per_test.nothing_between(last, later):
            break
        later_spec = spec_ahead(later)
        if later_spec is None or not zygote.may_serve(later_spec, config):
            break
        upcoming.append((later, later_spec))
    return upcoming


def _network_scope(spec: Spec) -> Any:
    """The test's private networks (None for loopback only): `net="svc"` in
    the marker and in its service containers is one network of its own."""
    if spec.net is False:
        return None
    if spec.net is True:
        # Lazily: about 5 ms of imports that a session without networks skips,
        # and the plugin releases the host bridge at the end only if it was loaded.
        from ..networks import hold_host_bridge

        hold_host_bridge()  # made once per session, not per test
    return TestNetworks()  # a module's or the session's network of that name, else the test's own


def _drain(read_fd: int, container: Container, services: Services, reply_fd: int,
           ctrl_c: interrupt.Deferred | None = None) -> tuple[bytes, bool]:
    """Read the child's messages while it runs (a full pipe would stall it),
    answer its `containers` calls as they come, enforce the spec's timeout
    through `Container.wait`, and pass a Ctrl-C of pytest's on (`ctrl_c`,
    see interrupt.py).  Returns the bytes and whether the child said it
    was done (its last message)."""
    chunks: list[bytes] = []
    sent = 0
    pending = b""  # bytes not yet split into messages, for the calls
    assert container.process is not None
    file_pipes = container.file_pipes()  # what the test writes to pytest's own files (file_relay)
    try:
        pidfd: int | None = container.process.fileno()
    except ProcessLookupError:  # reaped already: where its zygote died, taking its children along
        pidfd = None
    open_fds = [read_fd, *file_pipes] + [fd for fd in (pidfd, ctrl_c.fd if ctrl_c else None) if fd is not None]
    kill_at = None  # when a test that got its Ctrl-C is killed if it has not ended
    while True:
        ready, _, _ = select.select(open_fds, [], [], 0 if pidfd is None else 0.5)
        if ctrl_c is not None and ctrl_c.fd in ready:
            before = ctrl_c.handled
            if ctrl_c.take_new():
                if before == 0:
                    # The terminal's Ctrl-C reaches pytest only (the container
                    # has a session of its own): the test's own, where it is.
                    container.kill(signal.SIGINT)
                    kill_at = time.monotonic() + interrupt.GRACE
                if ctrl_c.handled > 1:  # a second one: no more waiting
                    container.kill()
                    kill_at = None
        if kill_at is not None and time.monotonic() >= kill_at:
            assert ctrl_c is not None
            ctrl_c.killed = True
            container.kill()
            kill_at = None
        for pipe in file_pipes:
            if pipe in ready and not container.copy_file(pipe):
                open_fds.remove(pipe)
        if read_fd in ready:
            chunk = os.read(read_fd, 1 << 16)
            if chunk:
                sent += len(chunk)
                if sent > MAX_SENT:
                    chunks.clear()
                    container.kill()
                    raise HermeticError(f"hermetic: the test's container sent pytest more than {format_size(MAX_SENT)} "
                                        "(reports, output, messages): killed; a test that means to print that "
                                        "much can write it to a file under tmp_path")
                chunks.append(chunk)
                pending = _answer_calls(pending + chunk, services, reply_fd)
                if b"".join(chunks[-2:]).endswith(DONE):  # the last message may come in two reads
                    data = b"".join(chunks)
                    if is_complete(data):
                        return data, True
                continue
            open_fds.remove(read_fd)
        if pidfd is None or container.wait(timeout=0) is not None:
            while sent <= MAX_SENT:  # whatever is left in the pipe
                chunk = os.read(read_fd, 1 << 16) if read_fd in open_fds else b""
                if not chunk:
                    break
                sent += len(chunk)
                chunks.append(chunk)
            return b"".join(chunks), False


def _answer_calls(data: bytes, services: Services, reply_fd: int) -> bytes:
    """Answer every complete call message in `data`; return the incomplete rest."""
    bodies, rest = frames(data)
    for body in bodies:
        if CALL_MARK in body[:32] or RELAY_MARK in body[:32]:
            try:
                kind, payload = from_child(body)
            except Exception as exc:  # noqa: BLE001 - refused (see wire); the test fails for it in _decode
                kind, payload = None, None
                if CALL_MARK in body[:32]:  # a caller waits for an answer
                    write_frame(reply_fd, pickle.dumps((False, RuntimeError(f"hermetic: pytest refused the call: {exc}"))))
            if kind == "call":
                with interrupt.allowed():  # (a pull, a service's start or wait: Ctrl-C stops it, see interrupt.py)
                    services.answer(payload, reply_fd)
            elif kind == "relay":
                services.start_relay(payload)
    return data[rest:]


def _decode(config: pytest.Config, data: bytes) -> list[tuple]:
    """The child's events; ("refused", why) for a message that is not one
    (see wire: bytes from the container are hostile)."""
    events: list[tuple] = []
    for body in frames(data)[0]:  # a message cut off by the child's death is left out
        try:
            kind, payload = from_child(body)
            if kind == "report" and isinstance(payload, dict):
                events.append(("report", config.hook.pytest_report_from_serializable(config=config, data=payload)))
            elif kind == "warning" and isinstance(payload, dict):
                events.append(("warning", _warning_from_payload(payload)))
            elif kind == "coverage":
                events.append(("coverage", coverage_relay.checked(payload)))
            elif kind == "exit" and isinstance(payload, tuple) and len(payload) == 2:
                events.append(("exit", str(payload[0]), payload[1] if isinstance(payload[1], int) else 1))
            elif kind == "interrupt":
                events.append(("interrupt", ""))
            elif kind not in ("done", "call", "relay"):
                raise ValueError(f"a message of kind {kind!r}")
        except Exception as exc:  # noqa: BLE001 - whatever the bytes make the rebuilding or the hooks raise
            events.append(("refused", f"{type(exc).__name__}: {exc}"))
    return events


def _crash_report(item: pytest.Item, reports: list, result: Any) -> pytest.TestReport:
    """The report for a child that died without finishing its reports."""
    done = {r.when for r in reports if not compat.is_subreport(r)}
    when: Literal["setup", "call", "teardown"] = "setup" if "setup" not in done else "call" if "call" not in done else "teardown"
    reason = result.reason if result is not None and result.reason else "the test process ended without reporting"
    if result is not None and result.status.code is not None and result.status.code != 0 and result.reason and result.reason.startswith("exited"):
        reason = f"exited with status {result.status.code} without reporting"
    sections = compat.captured_sections(item.config, when)
    report = pytest.TestReport(item.nodeid, item.location, {k: 1 for k in item.keywords}, "failed",
                               compat.message_longrepr(item, f"hermetic: {reason}"), when, sections)
    xfail_reason = compat.xfail_reason_for_crash(item)
    if xfail_reason is not None:  # an expected failure, as pytest reports one that raised
        report.outcome = "skipped"
        report.wasxfail = xfail_reason
    return report


def _warning_from_payload(payload: dict) -> dict:
    message = payload.pop("message")
    category = payload.pop("category")
    if not isinstance(message, Warning):
        message = category(message) if isinstance(category, type) and issubclass(category, Warning) else UserWarning(message)
    payload["warning_message"] = warnings.WarningMessage(message, type(message), payload.pop("filename"),
                                                          payload.pop("lineno"), None, None)
    return payload
