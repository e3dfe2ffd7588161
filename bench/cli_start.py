#!/usr/bin/env python3
"""`hermetic run host true`, the whole command, against `runc run` and `crun run`: wall and CPU time.

The CLI row of issue #16 (target: at most `runc run`).  Contenders, each a
command spawned and waited, in a freshly shuffled order every round:

  python -c pass          the CLI's interpreter starting and exiting: the floor under any Python CLI
  hermetic run host true  one row per `--cli` console script given (default: this interpreter's `hermetic`),
                          e.g. main's and a branch's, to compare trees in the same run
  runc run / crun run     container_cost.py's minimal OCI bundle (busybox, read-only root, pid/mount/ipc/uts/net)

Per run: wall time, and CPU time (user+sys of the command and all it waited
for, from getrusage(RUSAGE_CHILDREN)), which other load on the machine
disturbs far less than wall time.  Reported: medians, p10 and p90, and the
ratios of medians CLI / runc (wall and CPU).  Run as root, with the
interpreter that has pytest_hermetic installed:

    python bench/cli_start.py [--rounds 40] [--cli PATH]... [--json FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import resource
import statistics
import sys
import time
from contextlib import ExitStack

from container_cost import (Bench, cgroup_dirs, remove_leftovers, run_crun, run_runc, setup_crun,  # bench/
                            start_helper_namespace)
from machine import describe, loadavg  # bench/machine.py


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40, help="measured rounds (default 40)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up runs per contender (default 3)")
    parser.add_argument("--cli", action="append", metavar="PATH",
                        help="a `hermetic` console script to time (repeatable; default: the one beside this python)")
    parser.add_argument("--seed", type=int, default=None, help="seed for the order shuffle")
    parser.add_argument("--json", metavar="FILE", help="write the raw numbers (ms) and the summary here")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root (runc, crun and the CLI's host image need it here)")
    if args.rounds < 2:
        parser.error("--rounds must be at least 2")

    cgroups_before = cgroup_dirs()
    with ExitStack() as stack:
        b = Bench(stack)
        stack.callback(remove_leftovers, cgroups_before, set())
        clis = args.cli or [b.hermetic]
        python = _interpreter(clis[0])
        contenders = {"python -c pass": lambda: b.spawn_wait([python, "-c", "pass"], b.cli_env)}
        for cli in clis:
            name = "hermetic run host true" + (f" ({cli})" if len(clis) > 1 else "")
            contenders[name] = lambda cli=cli: b.spawn_wait([cli, "run", "host", "true"], b.cli_env)
        if b.runc or b.crun:
            start_helper_namespace(b, stack)
            setup_crun(b)
        if b.runc:
            contenders["runc run"] = lambda: run_runc(b)
        if b.crun:
            contenders["crun run"] = lambda: run_crun(b)

        print(f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
        for key, value in describe().items():
            print(f"{key}: {value}")
        print(f"load average at start: {loadavg()}")
        sys.stdout.flush()
        for name, run in contenders.items():
            for _ in range(args.warmup):
                run()
        wall: dict[str, list[float]] = {name: [] for name in contenders}
        cpu: dict[str, list[float]] = {name: [] for name in contenders}
        order = list(contenders)
        rng = random.Random(args.seed)
        for _ in range(args.rounds):
            rng.shuffle(order)
            for name in order:
                c0, t0 = cpu_of_children(), time.perf_counter_ns()
                contenders[name]()
                wall[name].append((time.perf_counter_ns() - t0) / 1e6)
                cpu[name].append((cpu_of_children() - c0) * 1e3)
        print(f"load average at end: {loadavg()}")

    summary = {name: {"wall": _stats(wall[name]), "cpu": _stats(cpu[name])} for name in contenders}
    print(f"\n{args.rounds} rounds, ms: wall median (p10-p90) | CPU median (p10-p90)")
    for name, s in summary.items():
        w, c = s["wall"], s["cpu"]
        print(f"{name:<40}{w['median']:7.1f} ({w['p10']:.1f}-{w['p90']:.1f}) | {c['median']:6.1f} ({c['p10']:.1f}-{c['p90']:.1f})")
    ratios = {}
    for name in contenders:
        if name.startswith("hermetic") and "runc run" in summary:
            ratios[name] = {kind: summary[name][kind]["median"] / summary["runc run"][kind]["median"]
                            for kind in ("wall", "cpu")}
            print(f"{name} / runc run: wall {ratios[name]['wall']:.2f}, CPU {ratios[name]['cpu']:.2f} "
                  f"(#16 target <= 1.0 in wall time)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"wall": wall, "cpu": cpu, "summary": summary, "ratios": ratios, "machine": describe()}, f, indent=1)
    return 0


def _interpreter(script: str) -> str:
    """The interpreter a console script starts (its #! line)."""
    with open(script, "rb") as f:
        first = f.readline().decode().strip()
    return first[2:].split()[0] if first.startswith("#!") else sys.executable


def _stats(values: list[float]) -> dict[str, float]:
    deciles = statistics.quantiles(values, n=10)
    return {"median": statistics.median(values), "p10": deciles[0], "p90": deciles[-1]}


if __name__ == "__main__":
    sys.exit(main())
