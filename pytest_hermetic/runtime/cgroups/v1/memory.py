"""v1 memory controller: limit (swap included where memsw exists), OOM kills, peak."""

from __future__ import annotations

import os

from .. import Stats, read_int, read_keyed, write


def apply(path: str | None, limit: int | None) -> None:
    if path is None or limit is None:
        return
    write(f"{path}/memory.limit_in_bytes", limit)
    # Without this the container would swap instead of being OOM-killed.
    if os.path.exists(f"{path}/memory.memsw.limit_in_bytes"):
        write(f"{path}/memory.memsw.limit_in_bytes", limit)


def stats(path: str | None, result: Stats) -> None:
    if path is None:
        return
    limit = read_int(f"{path}/memory.limit_in_bytes")
    result.memory_limit = limit if limit is not None and limit < (1 << 62) else None
    result.memory_peak = read_int(f"{path}/memory.max_usage_in_bytes")
    oom_kills = read_keyed(f"{path}/memory.oom_control").get("oom_kill")  # kernel 4.13+
    if oom_kills is not None:
        result.oom_kills = oom_kills
