"""Coverage measured inside a hermetic test counts (pytest-cov, `coverage
run`): the child's coverage data would die with it, so it travels home in a
"coverage" message and is merged into the parent's.

`coverage` is imported only where it is loaded already: it is optional.
"""

from __future__ import annotations

import sys

from .wire import Channel


def send(channel: Channel) -> None:
    """In the child: send the lines it ran, if coverage is measuring."""
    if "coverage" not in sys.modules:
        return
    import coverage  # lazily: optional, and loaded already when measuring

    current = coverage.Coverage.current()
    if current is not None:
        channel.send("coverage", current.get_data().dumps())


def merge(data: bytes) -> None:
    """In the parent: add the child's lines to the current measurement."""
    import coverage  # lazily: optional; only a child that measured sends data
    from coverage.data import CoverageData

    current = coverage.Coverage.current()
    if current is None:
        return
    incoming = CoverageData(no_disk=True)
    incoming.loads(data)
    current.get_data().update(incoming)
