#!/usr/bin/env python3
"""Start cost of two trees of pytest_hermetic side by side (A/B), robust to load.

Each tree (a checkout: its folder goes first on PYTHONPATH) gets one
long-lived worker process; the workers then take turns, one container each,
in a shuffled order per round, so load and drift hit both alike.  Per
container: wall time, and CPU time (user+sys of the worker and of its
reaped children, from getrusage), which is far less sensitive to other load
on the machine than wall time.  With `--cli`, each sample is a whole
`python -m pytest_hermetic run host true` instead (its CPU from
RUSAGE_CHILDREN).  With `--strace`, each tree's system calls per container
are counted as well (strace -f -c of N containers minus of none).

    python bench/start_ab.py A_TREE B_TREE [--rounds 200] [--cli] [--callable] [--strace] [--json FILE]

Kinds: `true` (Container(Spec.build("host", ["true"], ephemeral=True)).run(),
.remove(), as container_cost.py's "in process"), `--callable` (a Python callable
as PID 2 in an untracked container without accounting: the plugin's path), `--cli` (the whole command).  Run as root.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

WORKER = r"""
import os, sys, time, resource
def cputime():
    s = resource.getrusage(resource.RUSAGE_SELF); c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime
from pytest_hermetic.container import Container
from pytest_hermetic.spec import Spec
kind = sys.argv[1]
def one():
    if kind == "true":  # as container_cost.py's "in process": rw layer on a tmpfs in the container
        c = Container(Spec.build("host", ["true"], ephemeral=True))
    else:  # as the plugin's per-test container: untracked, no accounting
        c = Container(Spec.build("host", ["true"], ephemeral=True, tracked=False, accounting=False))
    try:
        r = c.run() if kind == "true" else c.start(lambda: 0) and c.wait()
    finally:
        c.remove()
    assert r.exit_code == 0, r.reason
for _ in range(int(sys.argv[2])):  # warm-up (and the strace count)
    one()
out = os.fdopen(1, "w", buffering=1)
for line in sys.stdin:
    t = cputime(); w = time.perf_counter_ns()
    one()
    w = time.perf_counter_ns() - w
    cpu = cputime() - t
    out.write(f"{w} {cpu}\n")
"""


def env_for(tree: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.abspath(tree)  # and the tree is the cwd: `-c`/`-m` put the cwd first
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def spread(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    q = statistics.quantiles(v, n=10) if len(v) > 1 else [v[0]] * 9
    return {"median": round(statistics.median(v), 3), "p10": round(q[0], 3), "p90": round(q[-1], 3),
            "mean": round(statistics.fmean(v), 3), "n": len(v)}


def cli_sample(tree: str) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter_ns()
    subprocess.run([sys.executable, "-m", "pytest_hermetic", "run", "host", "true"], env=env_for(tree), check=True, cwd=tree)
    wall = time.perf_counter_ns() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall / 1e6, cpu * 1e3


def strace_count(tree: str, kind: str, n: int) -> float | None:
    """System calls per container: strace -f -c of n containers minus of none."""
    totals = []
    for count in (0, n):
        with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
            if kind == "cli":
                argv = ["sh", "-c", f'for i in $(seq {count}); do "{sys.executable}" -m pytest_hermetic run host true; done']
            else:
                argv = [sys.executable, "-c", WORKER, kind, str(count)]
            subprocess.run(["strace", "-f", "-c", "-o", out.name, *argv], env=env_for(tree), check=True, cwd=tree,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            text = out.read()
        match = re.search(r"^100\.00\s+\S+\s+\S+\s+(\d+)\s", text, re.M)  # % seconds usecs/call calls
        if match is None:
            return None
        totals.append(int(match.group(1)))
    return (totals[1] - totals[0]) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--cli", action="store_true", help="the whole `hermetic run host true` command")
    parser.add_argument("--callable", action="store_true", help="a Python callable as PID 2 (the plugin's path)")
    parser.add_argument("--strace", type=int, default=0, metavar="N", help="also count syscalls over N containers")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    kind = "cli" if args.cli else "callable" if args.callable else "true"
    trees = {"a": os.path.abspath(args.a), "b": os.path.abspath(args.b)}
    rng = random.Random(args.seed)
    samples: dict[str, dict[str, list[float]]] = {k: {"wall_ms": [], "cpu_ms": []} for k in trees}
    workers = {}
    if kind != "cli":
        for key, tree in trees.items():
            workers[key] = subprocess.Popen([sys.executable, "-c", WORKER, kind, str(args.warmup)], env=env_for(tree), cwd=tree,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    else:
        for key, tree in trees.items():
            for _ in range(args.warmup):
                cli_sample(tree)
    load_start = os.getloadavg()[0]
    for _ in range(args.rounds):
        order = list(trees)
        rng.shuffle(order)
        for key in order:
            if kind == "cli":
                wall, cpu = cli_sample(trees[key])
            else:
                proc = workers[key]
                proc.stdin.write("go\n")
                proc.stdin.flush()
                w, c = proc.stdout.readline().split()
                wall, cpu = int(w) / 1e6, float(c) * 1e3
            samples[key]["wall_ms"].append(wall)
            samples[key]["cpu_ms"].append(cpu)
    for proc in workers.values():
        proc.stdin.close()
        proc.wait()
    summary: dict = {"kind": kind, "rounds": args.rounds, "trees": trees,
                     "load": [round(load_start, 2), round(os.getloadavg()[0], 2)]}
    for key in trees:
        summary[key] = {m: spread(v) for m, v in samples[key].items()}
        if args.strace:
            summary[key]["syscalls"] = strace_count(trees[key], kind, args.strace)
    for m in ("wall_ms", "cpu_ms"):
        summary[f"{m} b/a"] = round(summary["b"][m]["median"] / summary["a"][m]["median"], 3)
    print(f"{kind}: {args.rounds} interleaved rounds, load {summary['load'][0]} -> {summary['load'][1]}")
    for key in trees:
        s = summary[key]
        line = "  ".join(f"{m} {s[m]['median']:.2f} ({s[m]['p10']:.2f}-{s[m]['p90']:.2f})" for m in ("wall_ms", "cpu_ms"))
        sc = f"  syscalls {s['syscalls']:.0f}" if s.get("syscalls") is not None else ""
        print(f"  {key} {trees[key]}: {line}{sc}")
    print(f"  b/a: wall {summary['wall_ms b/a']}  cpu {summary['cpu_ms b/a']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "samples": samples}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
