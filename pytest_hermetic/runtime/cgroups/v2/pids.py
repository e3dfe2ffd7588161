"""v2 pids controller: the fork-bomb fuse."""

from __future__ import annotations

from .. import Stats, read_int, read_keyed, write


def apply(path: str, limit: int | None) -> None:
    if limit is None:
        return
    write(f"{path}/pids.max", limit)


def stats(path: str, result: Stats) -> None:
    result.pids_limit = read_int(f"{path}/pids.max")
    result.pids_limit_hits = read_keyed(f"{path}/pids.events").get("max", 0)
