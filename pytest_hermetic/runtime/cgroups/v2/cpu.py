"""v2 cpu controller: bandwidth (`cpu.max`) and CPU time (`cpu.stat`, core)."""

from __future__ import annotations

from .. import Stats, read_keyed, write

PERIOD_US = 100_000


def apply(path: str, cpus: float | None) -> None:
    if cpus is None:
        return
    write(f"{path}/cpu.max", f"{max(1000, int(cpus * PERIOD_US))} {PERIOD_US}")


def stats(path: str, result: Stats) -> None:
    usage = read_keyed(f"{path}/cpu.stat").get("usage_usec")
    if usage is not None:
        result.cpu_usec = usage
