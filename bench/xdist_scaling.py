#!/usr/bin/env python3
"""How hermetic pytest sessions scale with pytest-xdist workers.

Generates a project of N CPU-bound tests (each spins for about `--work` ms of
CPU time in its own process) and runs it as whole pytest sessions, plain and
with `--hermetic`, with `-n 1`, `-n 2` and `-n CORES` (the machine's cores,
when more than 2).  Each round runs every (mode, workers) pair once in a
freshly shuffled order.  Throughput of a configuration = N / session time;
scaling = median session time with -n 1 / median with -n W, per mode (ideal:
W, on W otherwise idle cores).  Also the CPU time (user+sys) of each session
and its children, per test.

A session's time includes starting xdist's workers and collecting, which do
not shrink with more workers; with `--startup` each round also runs every
(mode, workers) pair with all tests deselected, and the scaling is shown a
second time with that start-up taken off: the tests' own throughput.

    python bench/xdist_scaling.py [--tests 160] [--work 20] [--rounds 3] [--startup] [--forked] [--bound] [--json FILE]

With `--forked`, pytest-forked's sessions (`-p pytest_forked --forked`) too:
the peer a hermetic suite under xdist is compared with on equal terms (a
fork per test, the same workers), in tests per second.

With `--bound`, also "no-set-up": hermetic sessions whose tests' children
skip the container's whole set-up (namespaces joined, root, descriptors'
seal, session, capabilities, seccomp: replaced by nothing through a plugin
loaded for these sessions only, NO isolation), the zygote, placeholders,
cgroups and pytest's side unchanged: the most that any faster set-up (in C,
or none at all) could give the scaling.  With `--forked` as well, a second
bound: hermetic's -n 1 time over pytest-forked's -n 2 time, the ratio a
hermetic session would reach if its tests cost at -n 2 no more than
pytest-forked's do (a fork per test and nothing else).

Issue #16's target: hermetic's -n 2 / -n 1 at least 1.7 on 2 cores, plain
xdist's ratio beside it.  Needs pytest-xdist; run as root (or rootless, where
hermetic works for the user).  Stdlib only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import forked_compat  # bench/forked_compat.py: pytest-forked under pytest 9.2
from machine import describe, loadavg  # bench/machine.py
from pytest_overhead import with_path  # bench/pytest_overhead.py

MODES = {"plain": [], "hermetic": ["-p", "hermetic", "--hermetic"]}

# --bound: the tests' children skip the container's set-up (init.worker_main's
# steps), for the sessions of the "no-set-up" mode only.  Not isolation.
NO_SET_UP = "hermetic_bench_no_set_up"
NO_SET_UP_SOURCE = '''\
"""bench/xdist_scaling.py --bound: no container set-up in a test's child."""
from pytest_hermetic.runtime import init


def _nothing(*args, **kwargs):
    return None


class _NoSeccomp:
    install = staticmethod(_nothing)


# (A step renamed in init.py must fail the bound, not leave it measuring the set-up.)
assert all(callable(getattr(init, name, None)) for name in ("_enter_container", "own_session", "_drop_privileges"))
assert callable(getattr(init.seccomp, "install", None))
init._enter_container = init.own_session = init._drop_privileges = _nothing
init.seccomp = _NoSeccomp
'''
PYTEST = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "xdist"]

TEST_SOURCE = '''\
import time

import pytest


@pytest.mark.parametrize("i", range({tests}))
def test_cpu(i):
    # About {work} ms of CPU time, whatever else runs on the machine.
    end = time.process_time() + {work} / 1000
    n = 0
    while time.process_time() < end:
        n += 1
    assert n > 0
'''


def make_project(root: str, tests: int, work: float) -> None:
    os.makedirs(root)
    with open(f"{root}/pytest.ini", "w") as f:
        f.write("[pytest]\n")
    with open(f"{root}/test_cpu.py", "w") as f:
        f.write(TEST_SOURCE.format(tests=tests, work=work))


def run_session(mode: str, workers: int, project: str, tests: int, env: dict[str, str],
                empty: bool = False) -> tuple[float, float]:
    """Wall and CPU seconds of one session; raises unless all tests passed
    (`empty`: all of them deselected, the session's start-up alone)."""
    argv = [sys.executable, *PYTEST, "-n", str(workers), *MODES[mode], *(["-k", "no_such_test"] if empty else [])]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter_ns()
    done = subprocess.run(argv, cwd=project, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    wall = (time.perf_counter_ns() - t0) / 1e9
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    last = (done.stdout.strip().splitlines() or [""])[-1]
    if empty:
        failed = done.returncode != 5 or "no tests ran" not in last  # 5: none ran (all deselected)
    else:
        failed = done.returncode != 0 or f"{tests} passed" not in last
    if failed:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{mode} -n {workers}: exit status {done.returncode}, summary {last!r}\n{tail}")
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def spread(samples: list[float]) -> dict[str, float]:
    if len(samples) == 1:
        return {"median": samples[0], "p10": samples[0], "p90": samples[0]}
    deciles = statistics.quantiles(samples, n=10, method="inclusive")
    return {"median": statistics.median(samples), "p10": deciles[0], "p90": deciles[8]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=160, help="tests per session (default 160)")
    parser.add_argument("--work", type=float, default=20, help="CPU ms per test (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (default 3)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--startup", action="store_true",
                        help="also time sessions with every test deselected; show the scaling without that start-up")
    parser.add_argument("--forked", action="store_true",
                        help="also pytest-forked's sessions (-p pytest_forked --forked), the same -n")
    parser.add_argument("--bound", action="store_true",
                        help="also hermetic with its tests' container set-up replaced by nothing (a bound; no isolation)")
    parser.add_argument("--json", metavar="FILE", help="raw session times and the summary")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    widths = sorted({1, 2, cores})
    info = describe()
    load_start = loadavg()
    print(f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    for key, value in info.items():
        print(f"{key}: {value}")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTEST_ADDOPTS")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    if args.forked:
        MODES["forked"] = forked_compat.ARGS
    if args.bound:
        MODES["no-set-up"] = [*MODES["hermetic"], "-p", NO_SET_UP]
    wall: dict[tuple[str, int], list[float]] = {(m, w): [] for m in MODES for w in widths}
    cpu: dict[tuple[str, int], list[float]] = {(m, w): [] for m in MODES for w in widths}
    start_up: dict[tuple[str, int], list[float]] = {(m, w): [] for m in MODES for w in widths}
    with tempfile.TemporaryDirectory(prefix="hermetic-xdist-bench-", dir="/var/tmp") as tmp:
        env["PYTHONPYCACHEPREFIX"] = f"{tmp}/pycache"
        envs = {mode: env for mode in MODES}
        if args.forked:  # the shim on the path of pytest-forked's sessions only (xdist's workers inherit it)
            forked_compat.install(f"{tmp}/compat")
            envs["forked"] = with_path(env, f"{tmp}/compat")
        if args.bound:
            os.makedirs(f"{tmp}/bound")
            with open(f"{tmp}/bound/{NO_SET_UP}.py", "w") as f:
                f.write(NO_SET_UP_SOURCE)
            envs["no-set-up"] = with_path(env, f"{tmp}/bound")
        project = f"{tmp}/project"
        make_project(project, args.tests, args.work)
        for mode, workers in wall:  # warm-up
            run_session(mode, workers, project, args.tests, envs[mode])
        rng = random.Random(args.seed)
        order = [(m, w, False) for m, w in wall] + ([(m, w, True) for m, w in wall] if args.startup else [])
        for r in range(args.rounds):
            rng.shuffle(order)
            for mode, workers, empty in order:
                w, c = run_session(mode, workers, project, args.tests, envs[mode], empty)
                if empty:
                    start_up[mode, workers].append(w)
                    continue
                wall[mode, workers].append(w)
                cpu[mode, workers].append(c)
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{m} -n{w} {wall[m, w][-1]:.2f}s" for m, w in sorted(wall)), file=sys.stderr)
    load_end = loadavg()
    summary: dict = {}
    print(f"load average: {load_start} at start, {load_end} at end")
    print(f"{args.rounds} rounds, {args.tests} tests of {args.work:g} ms CPU each, {cores} cores")
    print(f"{'mode':<10}{'-n':>4}{'session s':>11}{'p10':>8}{'p90':>8}{'tests/s':>9}{'scaling':>9}{'CPU ms/test':>13}")
    for mode in MODES:
        base = statistics.median(wall[mode, 1])
        for workers in widths:
            s = spread(wall[mode, workers])
            scaling = base / s["median"]
            cpu_per_test = statistics.median(cpu[mode, workers]) / args.tests * 1e3
            summary[f"{mode} -n{workers}"] = {**s, "tests_per_s": args.tests / s["median"], "scaling": scaling,
                                              "cpu_per_test_ms": cpu_per_test}
            print(f"{mode:<10}{workers:>4}{s['median']:>11.2f}{s['p10']:>8.2f}{s['p90']:>8.2f}"
                  f"{args.tests / s['median']:>9.1f}{scaling:>9.2f}{cpu_per_test:>13.2f}")
    # A session that already keeps more than one core busy at -n 1 (hermetic:
    # the next tests' set-ups and the last ones' exits beside the test) can
    # gain less from more workers: on W cores, at most W / (cores busy at -n 1).
    for mode in MODES:
        busy = statistics.median(cpu[mode, 1]) / statistics.median(wall[mode, 1])
        summary[f"{mode} -n1"]["cores_busy"] = busy
        print(f"{mode}: cores kept busy at -n 1 (CPU / wall) {busy:.2f}; so -n {min(2, cores)} / -n 1 at most "
              f"{min(2, cores) / busy:.2f} on this machine's {cores} cores")
    if args.startup:
        print("without the start-up (a session with every test deselected, same mode and -n): the tests' own time")
        print(f"{'mode':<10}{'-n':>4}{'start-up s':>11}{'tests s':>9}{'tests/s':>9}{'scaling':>9}")
        for mode in MODES:
            own = {w: statistics.median(wall[mode, w]) - statistics.median(start_up[mode, w]) for w in widths}
            for workers in widths:
                scaling = own[1] / own[workers]
                summary[f"{mode} -n{workers}"].update(start_up_s=statistics.median(start_up[mode, workers]),
                                                      tests_s=own[workers], scaling_without_start_up=scaling)
                print(f"{mode:<10}{workers:>4}{statistics.median(start_up[mode, workers]):>11.2f}{own[workers]:>9.2f}"
                      f"{args.tests / own[workers]:>9.1f}{scaling:>9.2f}")
        print(f"without the start-up: hermetic -n 2 / -n 1 {summary['hermetic -n2']['scaling_without_start_up']:.2f}, "
              f"plain xdist {summary['plain -n2']['scaling_without_start_up']:.2f}")
    if args.forked:
        for workers in widths:
            ratio = summary[f"hermetic -n{workers}"]["tests_per_s"] / summary[f"forked -n{workers}"]["tests_per_s"]
            summary[f"hermetic -n{workers}"]["throughput_over_forked"] = ratio
            print(f"-n {workers}: hermetic's tests per second / pytest-forked's {ratio:.2f}")
    if args.bound:
        print(f"bound: hermetic with no container set-up in its tests' children (no isolation): -n 2 / -n 1 "
              f"{summary['no-set-up -n2']['scaling']:.2f}")
    if args.bound and args.forked:
        bound = statistics.median(wall["hermetic", 1]) / statistics.median(wall["forked", 2])
        summary["bound_at_forked_cost"] = bound
        print(f"bound: hermetic -n 1 / pytest-forked -n 2 {bound:.2f} (hermetic's scaling if its tests cost at -n 2 "
              f"what pytest-forked's do)")
    h2 = summary["hermetic -n2"]["scaling"]
    print(f"hermetic -n 2 / -n 1 throughput: {h2:.2f} (target at least 1.7: {'met' if h2 >= 1.7 else 'NOT met'}); "
          f"plain xdist: {summary['plain -n2']['scaling']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "load": [load_start, load_end], "tests": args.tests, "work_ms": args.work,
                       "rounds": args.rounds, "summary": summary,
                       "wall_s": {f"{m} -n{w}": v for (m, w), v in wall.items()},
                       "cpu_s": {f"{m} -n{w}": v for (m, w), v in cpu.items()},
                       "start_up_s": {f"{m} -n{w}": v for (m, w), v in start_up.items() if v}}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
