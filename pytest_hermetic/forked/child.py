"""The child side of a hermetic test: runs in the container, as PID 2.

It runs the item's set-up, call and teardown (function scope only) with
pytest's own `call_and_report`, and sends every report and warning home
(`wire.Channel`) in the form `pytest_report_to_serializable` makes; the
parent logs them.  The child is thrown away afterwards, so what it changes
in pytest's state (hook lists, fixtures) never reaches the parent.
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from .. import _pytest_compat as compat
from .. import fixtures
from ..runtime import syscalls as sc
from . import coverage_relay, event_loops, interrupt, loopback_relay
from .wire import Channel, read_frame

FORWARDER_NAME = "hermetic-forwarder"
_loads = pickle.loads  # taken at import: a test may replace pickle's (see wire)


class Forwarder:
    """Takes the place of every other implementation of the reporting hooks
    in the child: the parent logs what it forwards, exactly once."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.channel: Channel | None = None  # set in the child only; inert in the parent
        # (hook, this plugin's implementations of it): what the child keeps, found once in the parent
        self.kept: list[tuple[Any, list]] = []

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


class ParentChain:
    """Stands for "the next item" at the child's teardown: everything but the
    item itself is still needed, so only function scope is torn down here
    (the parent tears down the rest, once)."""

    def __init__(self, item: pytest.Item) -> None:
        self._chain = item.listchain()[:-1]

    def listchain(self) -> list:
        return self._chain


def install_forwarder(config: pytest.Config) -> Forwarder:
    """Registered once in the parent (before its first hermetic test), inert
    there: registering a plugin costs more than a millisecond, too much to
    pay in every child."""
    forwarder = config.pluginmanager.get_plugin(FORWARDER_NAME)
    if forwarder is None:
        forwarder = Forwarder(config)
        pm = config.pluginmanager
        pm.register(forwarder, FORWARDER_NAME)
        forwarder.kept = [(hook, compat.implementations(hook, forwarder))
                          for hook in (pm.hook.pytest_runtest_logreport, pm.hook.pytest_warning_recorded)]
    return forwarder


class Remote:
    """The child's way to the parent, for the `containers` fixture."""

    def __init__(self, channel: Channel, reply_fd: int) -> None:
        self.channel = channel
        self.reply_fd = reply_fd

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True  # the test's call is where its error shows
        self.channel.send("call", (method, args, kwargs))
        body = read_frame(self.reply_fd)
        if not body:
            raise RuntimeError("hermetic: the pytest process stopped answering")
        ok, value = _loads(body)
        if not ok:
            raise value
        return value


def child_main(item: pytest.Item, write_fd: int, reply_fd: int, listeners: list | None = None,
               servers: dict | None = None, loops: event_loops.Loops | None = None, undumpable: bool = True) -> int:
    """The container's workload: run `item`'s function-scope phases and
    send everything home; "done" is always the last message.  First, the
    parent's event `loops` get private copies of their descriptors (see
    event_loops), and its `listeners` their sockets here (see
    loopback_relay): its `servers` served here again, the rest relayed by
    the parent.  `undumpable` (as root): see below."""
    # Not dumpable: the other processes of the container (a program of the
    # image that the test runs, as root) may not reach this one's pipes to
    # pytest through /proc/PID/fd, nor its memory (wire: what pytest reads
    # from the pipes is hostile anyway; this keeps them the test's own).
    # Not rootless: the parent, the user, would lose its own pidfd_getfd of
    # the test's sockets (loopback_relay), and whatever the pipe asks of it
    # is no more than the user may do anyway.
    if undumpable:
        sc.prctl(sc.PR_SET_DUMPABLE, 0)
    interrupt.in_fork()  # (pytest's fork: forked where pytest defers a Ctrl-C)
    config = item.config
    channel = Channel(write_fd)
    if loops:
        event_loops.copy_in_child(loops)
    if listeners:
        relayed = loopback_relay.mirror(listeners, servers or {})
        if relayed:
            channel.send("relay", relayed)
    fixtures.remote = Remote(channel, reply_fd)
    forwarder = install_forwarder(config)
    for hook, impls in forwarder.kept:
        compat.keep_only(hook, impls)
    forwarder.channel = channel
    try:
        # The warnings plugin records around pytest_runtest_protocol, which
        # ran in the parent: record the child's own warnings here.
        compat.catch_up(item)  # (a zygote's fork: made before pytest left the last test's class or module)
        with compat.recording_warnings(item):
            report = compat.call_and_report(item, "setup")
            if report.passed and not config.getoption("setuponly", False):
                compat.call_and_report(item, "call")
            compat.call_and_report(item, "teardown", nextitem=ParentChain(item))
    except pytest.exit.Exception as exc:
        channel.send("exit", (exc.msg, exc.returncode))
    except KeyboardInterrupt:
        channel.send("interrupt", ())
    finally:
        coverage_relay.send(channel)
        channel.send("done", None)
    return 0
