"""Coverage measured inside a hermetic test counts (pytest-cov, `coverage
run`): the child's coverage data would die with it, so it travels home in a
"coverage" message and is merged into the parent's.

The message is plain data: per context, the lines (or arcs) of each file,
and each file's tracer plugin.  Not coverage's own `dumps()`: that is an SQL
script, which `loads()` runs, and what a container sends is hostile (an
`ATTACH DATABASE` in it would write any file of the host, as root).

`coverage` is imported only where it is loaded already: it is optional.
"""

from __future__ import annotations

import sys
from typing import Any

from .wire import Channel


def send(channel: Channel) -> None:
    """In the child: send the lines it ran, if coverage is measuring."""
    if "coverage" not in sys.modules:
        return
    import coverage  # lazily: optional, and loaded already when measuring

    current = coverage.Coverage.current()
    if current is not None:
        channel.send("coverage", _plain(current.get_data()))


def _plain(data: Any) -> dict:
    import re  # (loaded already in a pytest process)

    arcs = data.has_arcs()
    files = sorted(data.measured_files())
    contexts: dict[str, dict[str, list]] = {}
    for context in sorted(data.measured_contexts()):
        data.set_query_contexts([f"^{re.escape(context)}$"])
        found = {path: sorted((data.arcs(path) if arcs else data.lines(path)) or ()) for path in files}
        contexts[context] = {path: measured for path, measured in found.items() if measured}
    data.set_query_contexts(None)
    tracers = {path: data.file_tracer(path) for path in files if data.file_tracer(path)}
    return {"arcs": arcs, "contexts": contexts, "tracers": tracers}


def checked(payload: Any) -> dict:
    """The child's message, if it is what `send` makes; else ValueError."""
    if not isinstance(payload, dict) or not isinstance(payload.get("arcs"), bool):
        raise ValueError("coverage data of another shape")
    arcs = payload["arcs"]
    contexts, tracers = payload.get("contexts"), payload.get("tracers")
    if not isinstance(contexts, dict) or not isinstance(tracers, dict):
        raise ValueError("coverage data of another shape")
    for context, files in contexts.items():
        if not isinstance(context, str) or not isinstance(files, dict):
            raise ValueError("coverage data of another shape")
        for path, measured in files.items():
            if not isinstance(path, str) or not isinstance(measured, list) or not all(
                    _is_arc(item) if arcs else type(item) is int for item in measured):
                raise ValueError(f"coverage data of another shape for {path!r}")
    if not all(isinstance(path, str) and isinstance(tracer, str) for path, tracer in tracers.items()):
        raise ValueError("coverage tracers of another shape")
    return payload


def _is_arc(item: Any) -> bool:
    return isinstance(item, tuple) and len(item) == 2 and all(type(line) is int for line in item)


def merge(payload: dict) -> None:
    """In the parent: add the child's lines (a `checked` payload) to the
    current measurement."""
    import coverage  # lazily: optional; only a child that measured sends data
    from coverage.data import CoverageData

    current = coverage.Coverage.current()
    if current is None:
        return
    incoming = CoverageData(no_disk=True)
    for context, files in payload["contexts"].items():
        if not files:
            continue
        incoming.set_context(context or None)
        if payload["arcs"]:
            incoming.add_arcs({path: set(measured) for path, measured in files.items()})
        else:
            incoming.add_lines({path: set(measured) for path, measured in files.items()})
    if payload["tracers"]:
        incoming.add_file_tracers(payload["tracers"])
    current.get_data().update(incoming)
