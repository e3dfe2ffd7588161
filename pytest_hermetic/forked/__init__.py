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

The modules: `parent` (steps 1, 3, 4), `child` (step 2), `per_test` (each
test's container around the test: its spec, the next one prepared, earlier
ones removed), `wire` (the messages between them), `coverage_relay` (coverage measured in the child),
`loopback_relay` (the parent's listening sockets, reachable in the child),
`event_loops` (private copies of the parent's epoll instances and socket
pairs, so a wider fixture's event loop runs in the child), `start` (the
child started: its pipes and target), `interrupt` (a Ctrl-C of pytest's,
deferred while it runs a test, passed on, raised after), `services` (pytest's side of the
child's `containers` calls and loopback relay), `zygote` (a fork of the parent that
forks the children in its place, so the parent pays no fork and no copied
page per test).
Which host paths the child's Python needs inside the image is engine logic,
in `pytest_hermetic.bindings`; pytest's private API is used only through
`pytest_hermetic._pytest_compat`.
"""

from .parent import run_in_container
from .per_test import finish_pending as _finish_pending
from .zygote import stop as _stop_zygote


def finish_pending(block: bool = True) -> None:
    """Remove the containers whose reports are in; with `block`, wait for
    all of them (the session's end), then end the zygote."""
    _finish_pending(block)
    if block:
        _stop_zygote()


__all__ = ["finish_pending", "run_in_container"]
