"""v2 memory controller: limit without swap, OOM kills, peak (5.19+)."""

from __future__ import annotations

import os

from .. import Stats, read_int, read_keyed, write


def apply(path: str, limit: int | None) -> None:
    if limit is None:
        return
    write(f"{path}/memory.max", limit)
    if os.path.exists(f"{path}/memory.swap.max"):
        write(f"{path}/memory.swap.max", 0)


def stats(path: str, result: Stats) -> None:
    result.memory_limit = read_int(f"{path}/memory.max")
    result.memory_peak = read_int(f"{path}/memory.peak")
    result.oom_kills = read_keyed(f"{path}/memory.events").get("oom_kill", 0)
