#!/usr/bin/env python3
"""Per-test overhead against the size of the pytest process (issue #16).

A fork copies the parent's page tables, and every page either process
writes while both live is copied: so a pytest process that holds a big
collection pays more per forked test than bench/pytest_overhead.py's small
one shows.  This benchmark makes the parent large on purpose and measures N
trivial tests under it, for plain pytest, pytest-forked and --hermetic.

Parents (`--parents`, comma separated):

  none          nothing added (the small parent)
  mb:SIZE       a conftest.py that holds SIZE MiB of Python objects (dicts,
                strings and tuples, GC-tracked, built until the process's RSS
                has grown by SIZE MiB)
  items:COUNT   COUNT parametrized items collected and deselected (`-m small`;
                pytest's terminal reporter keeps the deselected items alive,
                as in a big suite run in part: click's 33k collected, 31k
                deselected)

For each parent and mode, sessions with N tests (`-m small`) and with none
(`-m "small and big"`: the same collection, nothing selected, exit 5) run
interleaved, every pair in a freshly shuffled order per round.  Reported,
medians over the rounds:

- wall: ((session with N) - (session with 0)) / N, and that minus plain's
  (the per-test overhead) and hermetic / forked of the overheads;
- CPU over plain: the CPU time per test of pytest and its children (below)
  minus plain's; hermetic / forked of it (steadier than wall time on a
  loaded machine);
- measured in pytest by a conftest hook from the end of collection to
  pytest_unconfigure (after hermetic's last deferred clean-up), per test:
  the pytest process's own CPU time and minor page faults, and those of the
  processes it waited for (the tests' forks, placeholders), with the
  pytest process's RSS and page-table size (VmPTE) and the number of full
  garbage collections in it.

    python bench/parent_size.py [--tests 100] [--rounds 3] [--parents none,mb:256,mb:1024,items:30000]
                                [--modes plain,forked,hermetic] [--json FILE] [--markdown]

A mode named MODE+collapse (`--modes plain,forked,forked+collapse`) is MODE
with the conftest's `madvise(MADV_COLLAPSE)` of every private anonymous
mapping right after collection: the heap becomes transparent huge pages, and
a fork copies one PMD entry per 2 MiB instead of 512 PTEs (the collapse's own
time is printed; it is outside the measured window).

Every session must pass all N tests (0 tests: exit 5), else the benchmark
stops with pytest's output.  Run as root with the interpreter that has
pytest_hermetic and pytest-forked installed.  Stdlib only.
"""

from __future__ import annotations

import argparse
import datetime
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

import forked_compat  # bench/forked_compat.py: the pytest 9.2 shim
from machine import describe, loadavg  # bench/machine.py

MODES = {
    "plain": [],
    "forked": forked_compat.ARGS,
    "hermetic": ["-p", "hermetic", "--hermetic"],
    "hermetic-base": ["-p", "hermetic", "--hermetic"],  # --against TREE: that tree's pytest_hermetic
}
# MODE+collapse: the same, with the heap collapsed into huge pages after collection (COLLAPSE=1)
MODES.update({f"{mode}+collapse": args for mode, args in list(MODES.items()) if mode != "hermetic-base"})
PYTEST = ["-m", "pytest", "-q", "-p", "no:cacheprovider"]
TESTS_PER_FILE = 50

# The project's conftest: the ballast (BALLAST_MB), and the counters from the
# end of collection to the end of the session, written to STATS_FILE.
CONFTEST = '''\
import gc, json, os, resource, time

import pytest


def _status():
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {k: int(fields[k].split()[0]) for k in ("VmRSS", "VmPTE")}  # kB


BALLAST = []
_mb = int(os.environ.get("BALLAST_MB", "0"))
if _mb:
    _target = _status()["VmRSS"] + _mb * 1024
    _i = 0
    while _status()["VmRSS"] < _target:
        BALLAST.append([{"name": "object-%d" % j, "n": j, "pair": (j, str(j))} for j in range(_i, _i + 10000)])
        _i += 10000

_start = {}


def _counters():
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"t": time.monotonic(), "cpu": own.ru_utime + own.ru_stime, "minflt": own.ru_minflt,
            "kids_cpu": kids.ru_utime + kids.ru_stime, "kids_minflt": kids.ru_minflt,
            "gc2": gc.get_stats()[2]["collections"]}


def _collapse():
    """MADV_COLLAPSE every private anonymous writable mapping (Linux 6.1+):
    the heap into transparent huge pages, so a fork copies a PMD entry per
    2 MiB instead of 512 PTEs.  Seconds taken, or -1 where refused."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    t, ok = time.monotonic(), True
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if parts[1][:2] == "rw" and parts[1][3] == "p" and (len(parts) < 6 or parts[5] == "[heap]"):
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                start, end = (lo + (1 << 21) - 1) & ~((1 << 21) - 1), hi & ~((1 << 21) - 1)
                if end > start:
                    ok = libc.madvise(start, end - start, 25) == 0 and ok
    return time.monotonic() - t if ok else -1.0


def pytest_collection_finish(session):
    collapse = _collapse() if os.environ.get("COLLAPSE") == "1" else 0.0
    _start.update(_counters(), **_status(), collapse=collapse)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if not _start or not os.environ.get("STATS_FILE"):
        return
    end = _counters()
    stats = {k: end[k] - _start[k] for k in end}
    stats.update({"rss_kb": _start["VmRSS"], "pte_kb": _start["VmPTE"], "collapse_s": _start["collapse"]})
    with open(os.environ["STATS_FILE"], "w") as f:
        json.dump(stats, f)
'''


def make_project(root: str, tests: int, items: int) -> None:
    os.makedirs(root)
    with open(f"{root}/pytest.ini", "w") as f:
        f.write("[pytest]\nmarkers =\n    small: the measured tests\n    big: collected and deselected\n")
    with open(f"{root}/conftest.py", "w") as f:
        f.write(CONFTEST)
    for first in range(0, tests, TESTS_PER_FILE):
        with open(f"{root}/test_trivial_{first // TESTS_PER_FILE:03d}.py", "w") as f:
            f.write("import pytest\n\npytestmark = pytest.mark.small\n\n\n")
            for i in range(first, min(first + TESTS_PER_FILE, tests)):
                f.write(f"def test_{i}():\n    assert 1 + 1 == 2\n\n\n")
    if items:
        with open(f"{root}/test_big.py", "w") as f:
            f.write(f"import pytest\n\npytestmark = pytest.mark.big\n\n\n@pytest.mark.parametrize('i', range({items}))\n"
                    "def test_big(i):\n    assert i >= 0\n")


def parse_parent(text: str) -> tuple[int, int]:
    """'none' | 'mb:SIZE' | 'items:COUNT' -> (MiB of ballast, deselected items)."""
    kind, _, value = text.partition(":")
    if kind == "none" and not value:
        return 0, 0
    if kind in ("mb", "items") and value.isdigit():
        return (int(value), 0) if kind == "mb" else (0, int(value))
    raise SystemExit(f"--parents: {text!r} is not none, mb:SIZE or items:COUNT")


def run_session(mode: str, project: str, tests: int, ballast_mb: int, env: dict[str, str], stats_file: str) -> dict:
    """One session; its wall time and the conftest's counters.  Raises unless
    every test passed (or, with 0 tests, pytest selected none: exit 5)."""
    marks = "small" if tests else "small and big"
    argv = [sys.executable, *PYTEST, "-m", marks, *MODES[mode]]
    env = {**env, "COLLAPSE": "1" if mode.endswith("+collapse") else "0"}
    if os.path.exists(stats_file):
        os.unlink(stats_file)
    run_env = {**env, "BALLAST_MB": str(ballast_mb), "STATS_FILE": stats_file}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=project, env=run_env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    last = (done.stdout.strip().splitlines() or [""])[-1]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", last)}
    ok = (done.returncode == 5 and not counts.keys() - {"deselected"}) if tests == 0 else (
        done.returncode == 0 and counts.get("passed") == tests)
    if not ok or not os.path.exists(stats_file):
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{mode} session with {tests} tests (ballast {ballast_mb} MiB): exit {done.returncode}, "
                           f"summary {last!r}\n{tail}")
    with open(stats_file) as f:
        stats = json.load(f)
    stats["wall"] = wall
    stats["session_cpu"] = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parents", default="none,mb:256,mb:1024,items:30000")
    parser.add_argument("--modes", default="plain,forked,hermetic")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--dir", default="/var/tmp", help="where the temporary projects go (not /tmp: see README)")
    parser.add_argument("--against", metavar="TREE",
                        help="add a mode, hermetic-base: --hermetic with TREE (another checkout) first on PYTHONPATH")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m] + (["hermetic-base"] if args.against else [])
    if "plain" not in modes or any(m not in MODES for m in modes):
        raise SystemExit(f"--modes: a comma-separated subset of {', '.join(MODES)}, with plain")
    parents = [(p, *parse_parent(p)) for p in args.parents.split(",") if p]
    rng = random.Random(args.seed)
    info = describe()
    load_start = info.pop("load average")
    samples: dict[tuple[str, str, int], list[dict]] = {}
    loads: list[str] = [load_start]
    with tempfile.TemporaryDirectory(prefix="hermetic-parent-size-", dir=args.dir) as tmp:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONDONTWRITEBYTECODE", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        env["PYTHONPYCACHEPREFIX"] = f"{tmp}/pycache"
        forked_compat.install(f"{tmp}/compat")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (f"{tmp}/compat", env.get("PYTHONPATH")) if p)
        envs = {mode: env for mode in modes}
        if args.against:
            envs["hermetic-base"] = {**env, "PYTHONPATH": os.pathsep.join((os.path.abspath(args.against), env["PYTHONPATH"]))}
        projects: dict[str, str] = {}
        for name, _, items in parents:
            projects[name] = f"{tmp}/project-{len(projects)}"
            make_project(projects[name], args.tests, items)
        jobs = [(name, mb, mode, n) for name, mb, _ in parents for mode in modes for n in (args.tests, 0)]
        stats_file = f"{tmp}/stats.json"
        for name, mb, mode, n in jobs:  # warm-up: bytecode and page caches
            run_session(mode, projects[name], n, mb, envs[mode], stats_file)
        for r in range(args.rounds):
            rng.shuffle(jobs)
            for name, mb, mode, n in jobs:
                samples.setdefault((name, mode, n), []).append(
                    run_session(mode, projects[name], n, mb, envs[mode], stats_file))
            loads.append(loadavg())
            print(f"round {r + 1}/{args.rounds} done, load {loads[-1]}", file=sys.stderr, flush=True)
    summary = summarize(samples, parents, modes, args.tests)
    report(summary, modes, args, info, loads)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(), "machine": info,
                       "loads": loads, "args": vars(args), "summary": summary,
                       "samples": {" ".join(map(str, k)): v for k, v in samples.items()}}, f, indent=1)
    return 0


def summarize(samples: dict, parents: list, modes: list[str], n: int) -> dict:
    out: dict = {}
    for name, _, _ in parents:
        rows: dict = {}
        for mode in modes:
            full, empty = samples[name, mode, n], samples[name, mode, 0]
            med = lambda key, runs: statistics.median(s[key] for s in runs)  # noqa: E731
            rows[mode] = {
                "per_test_ms": (med("wall", full) - med("wall", empty)) / n * 1e3,
                "window_ms": med("t", full) / n * 1e3,  # end of collection to the end, per test
                "cpu_ms": med("cpu", full) / n * 1e3,
                "minflt": med("minflt", full) / n,
                "kids_cpu_ms": med("kids_cpu", full) / n * 1e3,
                "kids_minflt": med("kids_minflt", full) / n,
                "gc2": med("gc2", full),
                "rss_mb": med("rss_kb", full) / 1024,
                "pte_kb": med("pte_kb", full),
                "session_s": med("wall", full),
                "collapse_s": med("collapse_s", full),
            }
        for mode in modes:
            rows[mode]["overhead_ms"] = rows[mode]["per_test_ms"] - rows["plain"]["per_test_ms"]
            rows[mode]["window_overhead_ms"] = rows[mode]["window_ms"] - rows["plain"]["window_ms"]
            # CPU of pytest and its children over plain's: far steadier than wall time under load
            rows[mode]["cpu_overhead_ms"] = (rows[mode]["cpu_ms"] + rows[mode]["kids_cpu_ms"]
                                             - rows["plain"]["cpu_ms"] - rows["plain"]["kids_cpu_ms"])
        if "forked" in rows and "hermetic" in rows and rows["forked"]["overhead_ms"] > 0:
            rows["ratio"] = rows["hermetic"]["overhead_ms"] / rows["forked"]["overhead_ms"]
        for mode in modes:
            if mode.endswith("+collapse") and mode[:-9] in rows and rows[mode[:-9]]["cpu_overhead_ms"] > 0:
                rows[mode]["collapse_cpu_ratio"] = rows[mode]["cpu_overhead_ms"] / rows[mode[:-9]]["cpu_overhead_ms"]
        if "forked" in rows and "hermetic" in rows and rows["forked"]["cpu_overhead_ms"] > 0:
            rows["cpu_ratio"] = rows["hermetic"]["cpu_overhead_ms"] / rows["forked"]["cpu_overhead_ms"]
        if "hermetic-base" in rows and rows["hermetic-base"]["cpu_overhead_ms"] > 0:
            rows["against"] = {"wall": rows["hermetic"]["window_overhead_ms"] / rows["hermetic-base"]["window_overhead_ms"],
                               "cpu": rows["hermetic"]["cpu_overhead_ms"] / rows["hermetic-base"]["cpu_overhead_ms"]}
        out[name] = rows
    return out


def report(summary: dict, modes: list[str], args: argparse.Namespace, info: dict, loads: list[str]) -> None:
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print(f"load average (1, 5, 15 min) at the start and after each round: {' | '.join(loads)}")
    print(f"{args.rounds} interleaved rounds (+1 warm-up), {args.tests} trivial tests per session; medians; per test "
          "unless said\n")
    head = ("| parent | RSS MiB | VmPTE kB | mode | per test ms (wall) | over plain ms | in-session ms "
            "| pytest CPU ms | pytest faults | children CPU ms | children faults | CPU over plain ms | full GCs |")
    print(head)
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for parent, rows in summary.items():
        for mode in modes:
            m = rows[mode]
            if m["collapse_s"]:
                print(f"<!-- {parent} {mode}: the collapse took {m['collapse_s']:.2f} s after collection -->")
            print(f"| {parent} | {m['rss_mb']:.0f} | {m['pte_kb']} | {mode} | {m['per_test_ms']:.2f} "
                  f"| {m['overhead_ms']:+.2f} | {m['window_ms']:.2f} | {m['cpu_ms']:.2f} | {m['minflt']:.0f} "
                  f"| {m['kids_cpu_ms']:.2f} | {m['kids_minflt']:.0f} | {m['cpu_overhead_ms']:+.2f} | {m['gc2']:.0f} |")
    print()
    for parent, rows in summary.items():
        if "ratio" in rows:
            print(f"- {parent}: hermetic / forked, per-test overhead {rows['ratio']:.2f} "
                  f"(forked {rows['forked']['overhead_ms']:+.2f} ms, hermetic {rows['hermetic']['overhead_ms']:+.2f} ms)"
                  + (f"; in CPU {rows['cpu_ratio']:.2f}" if "cpu_ratio" in rows else ""))
        for mode in modes:
            if "collapse_cpu_ratio" in rows[mode]:
                print(f"- {parent}: {mode} / {mode[:-9]}, CPU over plain per test {rows[mode]['collapse_cpu_ratio']:.2f} "
                      f"(the collapse itself {rows[mode]['collapse_s']:.2f} s once, after collection)")
        if "against" in rows:
            print(f"- {parent}: hermetic / hermetic-base (--against), per-test overhead: in session (wall) "
                  f"{rows['against']['wall']:.3f}, CPU {rows['against']['cpu']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
