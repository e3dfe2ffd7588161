"""v1 cpu (CFS bandwidth) and cpuacct (CPU time) controllers."""

from __future__ import annotations

from .. import Stats, read_int, write

PERIOD_US = 100_000


def apply(path: str | None, cpus: float | None) -> None:
    if path is None or cpus is None:
        return
    write(f"{path}/cpu.cfs_period_us", PERIOD_US)
    write(f"{path}/cpu.cfs_quota_us", max(1000, int(cpus * PERIOD_US)))


def stats(cpuacct_path: str | None, result: Stats) -> None:
    if cpuacct_path is None:
        return
    usage_ns = read_int(f"{cpuacct_path}/cpuacct.usage")
    if usage_ns is not None:
        result.cpu_usec = usage_ns // 1000
