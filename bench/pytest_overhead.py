#!/usr/bin/env python3
"""Per-test overhead of isolation in a pytest session.

Generates a temporary project of N trivial tests (`assert 1 + 1 == 2`, in a
few files, no conftest) and runs it as whole `python -m pytest -q -p
no:cacheprovider` sessions in three modes:

  plain      pytest as it is
  forked     -p pytest_forked --forked   (pytest-forked: one fork per test)
  hermetic   -p hermetic --hermetic      (this plugin, `host` image: one
                                          container per test; `--image REF`:
                                          in that image of the store)

Each round runs every mode once in a freshly shuffled order, with N tests and
with 0 tests (the session's fixed start-up cost).  Every session must exit 0
with all N tests passed (0 tests: exit 5, "no tests ran"), else the benchmark
stops with an error instead of a number.

Per-test overhead of a mode = (median session time of the mode - median of
plain) / N.  Also reported: the same with each mode's 0-test session
subtracted first (start-up excluded), the p10-p90 of the per-round overhead
(each round's mode minus the same round's plain), and hermetic / forked.

Sessions run with PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 (only the plugin a mode
names is loaded), a bytecode cache private to the run, and one warm-up
session per mode.  pytest-forked gets a small compatibility shim for pytest
9.2 (bench/forked_compat.py).

`--profile FILE` then shows where a hermetic test's time goes: one hermetic
session with time marks (a timeline of one test: pytest before the fork, the
fork, the container's set-up in the child, the test, pytest after; with the
child's page faults and CPU time), and one under `python -m cProfile -o
FILE`, with every forked process profiled too; it prints the top 25
functions of pytest by own time, its top 20 `pytest_hermetic` functions by
cumulative time, and the top 15 of the forked processes.  Stdlib only.

    python bench/pytest_overhead.py [--tests 200] [--rounds 5] [--json FILE] [--markdown] [--profile FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import pstats
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version

import forked_compat  # bench/forked_compat.py: the pytest 9.2 shim
from machine import describe, loadavg  # bench/machine.py

MODES = {
    "plain": [],
    "forked": forked_compat.ARGS,
    "hermetic": ["-p", "hermetic", "--hermetic"],
}
PYTEST = ["-m", "pytest", "-q", "-p", "no:cacheprovider"]  # after the interpreter
TESTS_PER_FILE = 50
CPU_S: dict[tuple[str, int], list[float]] = {}  # (mode, tests) -> CPU seconds of each measured session
COUNTS_DIR: list[str] = []  # with --counts: the folder each session's counts go to

# Loaded (-p) in every mode's sessions with --counts: `getrusage` of the
# pytest process and of its reaped children (the tests' forks, the
# placeholders), from the end of collection to the end of the session (after
# hermetic's own clean-up at sessionfinish), appended as one JSON line.
COUNTS = "hermetic_bench_counts"
COUNTS_SOURCE = '''\
import gc, json, os, resource

import pytest

_start = {}


def _usage():
    out = {}
    for who, which in (("self", resource.RUSAGE_SELF), ("children", resource.RUSAGE_CHILDREN)):
        u = resource.getrusage(which)
        out[who] = {"minflt": u.ru_minflt, "majflt": u.ru_majflt, "cpu": u.ru_utime + u.ru_stime,
                    "user": u.ru_utime, "sys": u.ru_stime, "nvcsw": u.ru_nvcsw, "nivcsw": u.ru_nivcsw}
    return out


def pytest_collection_finish(session):
    _start.update(_usage())
    _start["gc"] = [s["collections"] for s in gc.get_stats()]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    if not _start:
        return
    end = _usage()
    record = {who: {k: end[who][k] - _start[who][k] for k in end[who]} for who in end}
    record["gc"] = [s["collections"] - c for s, c in zip(gc.get_stats(), _start["gc"])]
    record["tests"] = session.testscollected
    record["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open(os.environ["COUNTS_FILE"], "a") as f:
        f.write(json.dumps(record) + "\\n")
'''


DESELECTED: list[int] = [0]  # --deselected K: K more tests in every project, collected and deselected
DESELECTED_FILE = "test_zz_deselected.py"
TO_FILE = [False]  # --to-file: each session's output to a file, not a pipe


def make_project(root: str, tests: int, shape: str = "files") -> None:
    """`files`: N functions, TESTS_PER_FILE to a file; `param`: one test
    parametrized N times in one file (the issue's second suite shape).
    With --deselected K, K more (one parametrized test) that every session
    collects and deselects: a large pytest process, as a big suite run in
    part makes (its size is what every fork copies)."""
    os.makedirs(root)
    with open(f"{root}/pytest.ini", "w") as f:  # fixes the rootdir; no addopts
        f.write("[pytest]\n")
    if DESELECTED[0]:
        with open(f"{root}/{DESELECTED_FILE}", "w") as f:
            f.write(f"import pytest\n\n\n@pytest.mark.parametrize('i', range({DESELECTED[0]}))\n"
                    "def test_deselected(i):\n    assert i + 1 > i\n")
    if shape == "param" and tests:
        with open(f"{root}/test_param.py", "w") as f:
            f.write(f"import pytest\n\n\n@pytest.mark.parametrize('i', range({tests}))\n"
                    "def test_param(i):\n    assert i + 1 > i\n")
        return
    for first in range(0, tests, TESTS_PER_FILE):
        with open(f"{root}/test_trivial_{first // TESTS_PER_FILE:03d}.py", "w") as f:
            for i in range(first, min(first + TESTS_PER_FILE, tests)):
                f.write(f"def test_{i}():\n    assert 1 + 1 == 2\n\n\n")


def session_envs(tmp: str) -> dict[str, dict[str, str]]:
    """The environment of each mode's sessions."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env["PYTHONPYCACHEPREFIX"] = f"{tmp}/pycache"  # warm after the warm-up, as an installed package
    forked_compat.install(f"{tmp}/compat")
    with open(f"{tmp}/compat/{COUNTS}.py", "w") as f:
        f.write(COUNTS_SOURCE)
    envs = {mode: env for mode in MODES}
    envs["forked"] = with_path(env, f"{tmp}/compat")  # the forked mode's sessions only
    return envs


MACHINE_S: dict[tuple[str, int], list[float]] = {}  # busy CPU seconds of the whole machine per session
_TICK = os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """Busy CPU time of all CPUs since boot (/proc/stat: everything but idle and iowait), seconds."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / _TICK


def with_path(env: dict[str, str], folder: str) -> dict[str, str]:
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in (folder, env.get("PYTHONPATH")) if p)}


def run_session(mode: str, project: str, tests: int, env: dict[str, str],
                python: tuple[str, ...] = (sys.executable,), plugins: tuple[str, ...] = ()) -> float:
    """One pytest session; its wall time in seconds.  Raises unless every
    test passed (or, for 0 tests, unless pytest said "no tests ran")."""
    if COUNTS_DIR and tests:
        plugins = (*plugins, "-p", COUNTS)
        env = {**with_path(env, os.path.join(os.path.dirname(COUNTS_DIR[0]), "compat")),
               "COUNTS_FILE": os.path.join(COUNTS_DIR[0], f"{mode}.jsonl")}
    if DESELECTED[0]:
        plugins = (*plugins, "--deselect", DESELECTED_FILE)
    argv = [*python, *PYTEST, *plugins, *MODES[mode]]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before = machine_busy_s()
    t0 = time.perf_counter_ns()
    if TO_FILE[0]:  # as in CI: `pytest > ci.log 2>&1`
        with open(os.path.join(project, "session.log"), "w+") as log:
            done = subprocess.run(argv, cwd=project, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, text=True)
            log.seek(0)
            done.stdout, done.stderr = log.read(), ""
    else:
        done = subprocess.run(argv, cwd=project, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    elapsed = (time.perf_counter_ns() - t0) / 1e9
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU time of the session and every process it waited for (user+sys):
    # far steadier than wall time on a loaded machine.
    CPU_S.setdefault((mode, tests), []).append(
        after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    # ...and the whole machine's, which also counts the kernel's own workers
    # (a network namespace's clean-up runs in a kworker, no session's child):
    # meaningful on a quiet machine only.
    MACHINE_S.setdefault((mode, tests), []).append(machine_busy_s() - busy_before)
    lines = done.stdout.strip().splitlines()
    last = lines[-1] if lines else ""
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", last)}
    allowed = {"passed", "warning", "warnings"} | ({"deselected"} if DESELECTED[0] else set())
    if tests == 0:
        ok = done.returncode == 5 and ("no tests ran" in last or counts.get("deselected") == DESELECTED[0])
    else:
        # warnings are allowed; anything else (failed, error, skipped, ...) is not
        ok = done.returncode == 0 and counts.get("passed") == tests and set(counts) <= allowed
    if not ok:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{mode} session with {tests} tests: exit status {done.returncode}, "
                           f"summary {last!r}\n{tail}")
    return elapsed


# --- machine ------------------------------------------------------------------


def machine() -> dict[str, str]:
    import pytest_hermetic

    info = describe()
    info.pop("load average", None)
    info["user"] = "root" if os.geteuid() == 0 else "rootless"
    info["python"] = f"{platform.python_version()} ({sys.executable})"
    for name in ("pytest", "pytest-forked", "pytest-hermetic"):
        try:
            info[name] = version(name)
        except PackageNotFoundError:
            info[name] = "not installed"
    info["pytest-hermetic"] += f" ({os.path.dirname(os.path.abspath(pytest_hermetic.__file__))})"
    return info


# --- numbers ------------------------------------------------------------------


def spread(samples: list[float]) -> dict[str, float]:
    mean = statistics.fmean(samples)
    if len(samples) == 1:
        return {"median": samples[0], "p10": samples[0], "p90": samples[0], "mean": mean}
    deciles = statistics.quantiles(samples, n=10, method="inclusive")
    return {"median": statistics.median(samples), "p10": deciles[0], "p90": deciles[8], "mean": mean}


def summarize(samples: dict[tuple[str, int], list[float]], tests: int) -> dict:
    """Session times (s) and per-test overheads (ms) against plain."""
    med = {key: statistics.median(s) for key, s in samples.items()}
    result: dict = {"sessions_s": {f"{m} x{n}": spread(s) for (m, n), s in samples.items()}, "modes": {}}
    for mode in MODES:
        paired = [(a - b) / tests * 1e3 for a, b in zip(samples[mode, tests], samples["plain", tests])]
        cpu = CPU_S.get((mode, tests), [])
        cpu_plain = CPU_S.get(("plain", tests), [])
        busy, busy_plain = MACHINE_S.get((mode, tests), []), MACHINE_S.get(("plain", tests), [])
        result["modes"][mode] = {
            "machine_cpu_overhead_ms": ((statistics.median(busy) - statistics.median(busy_plain)) / tests * 1e3
                                        if busy and busy_plain else None),
            "cpu_per_test_ms": statistics.median(cpu) / tests * 1e3 if cpu else None,
            "cpu_overhead_ms": (statistics.median(cpu) - statistics.median(cpu_plain)) / tests * 1e3 if cpu and cpu_plain else None,
            "per_test_ms": med[mode, tests] / tests * 1e3,
            "overhead_ms": (med[mode, tests] - med["plain", tests]) / tests * 1e3,
            "overhead_paired_ms": spread(paired),
            "startup_s": med[mode, 0],
            "overhead_no_startup_ms": ((med[mode, tests] - med[mode, 0]) - (med["plain", tests] - med["plain", 0]))
            / tests * 1e3,
        }
    modes = result["modes"]
    if modes["forked"]["overhead_ms"] > 0:
        result["ratio"] = modes["hermetic"]["overhead_ms"] / modes["forked"]["overhead_ms"]
    if (modes["forked"]["cpu_overhead_ms"] or 0) > 0:
        result["cpu_ratio"] = modes["hermetic"]["cpu_overhead_ms"] / modes["forked"]["cpu_overhead_ms"]
    if "hermetic-base" in modes:  # --against: this tree against the other, CPU and wall
        base = modes["hermetic-base"]
        result["against"] = {
            "overhead_ratio": modes["hermetic"]["overhead_ms"] / base["overhead_ms"] if base["overhead_ms"] > 0 else None,
            "cpu_overhead_ratio": (modes["hermetic"]["cpu_overhead_ms"] / base["cpu_overhead_ms"]
                                   if (base["cpu_overhead_ms"] or 0) > 0 else None)}
    if modes["forked"]["overhead_no_startup_ms"] > 0:
        result["ratio_no_startup"] = (modes["hermetic"]["overhead_no_startup_ms"]
                                      / modes["forked"]["overhead_no_startup_ms"])
    return result


def verdict(ratio: float | None) -> str:
    if ratio is None:
        return "n/a"
    return f"{ratio:.2f} (target at most 1.0, issue #16: {'met' if ratio <= 1.0 else 'NOT met'})"


def print_report(args, info: dict, load: str, summary: dict, rounds: int) -> None:
    n = args.tests
    s = summary["sessions_s"]
    if args.markdown:
        print("\n- Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
        print(f"- Load average (1, 5, 15 min): {load}")
        print(f"- {rounds} interleaved rounds (+1 warm-up session per mode), {n} tests per session ({args.shape}; {DESELECTED[0]} more collected and deselected)\n")
        print("| Mode | session, median s | p10 | p90 | per test, ms | overhead per test vs plain, ms "
              "| per-round overhead p10-p90, ms | 0-test session, s |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for mode, m in summary["modes"].items():
            t = s[f"{mode} x{n}"]
            o = m["overhead_paired_ms"]
            over = "-" if mode == "plain" else f"{m['overhead_ms']:+.2f}"
            rng = "-" if mode == "plain" else f"{o['p10']:.2f} - {o['p90']:.2f}"
            print(f"| {mode} | {t['median']:.2f} | {t['p10']:.2f} | {t['p90']:.2f} | {m['per_test_ms']:.2f} "
                  f"| {over} | {rng} | {m['startup_s']:.2f} |")
        print()
        print(f"- hermetic / forked, per-test overhead: **{verdict(summary.get('ratio'))}**")
        if "cpu_ratio" in summary:
            print("- CPU time per test over plain (user+sys, session and children): " + ", ".join(
                f"{mode} {m['cpu_overhead_ms']:+.2f} ms" for mode, m in summary["modes"].items() if mode != "plain")
                + f"; hermetic / forked **{summary['cpu_ratio']:.2f}**")
        print("- the same with each mode's 0-test session subtracted first (start-up excluded): "
              f"forked {summary['modes']['forked']['overhead_no_startup_ms']:.2f} ms, "
              f"hermetic {summary['modes']['hermetic']['overhead_no_startup_ms']:.2f} ms, "
              f"ratio {verdict(summary.get('ratio_no_startup'))}")
        return
    print(f"\n{rounds} rounds, {n} tests per session ({args.shape}; {DESELECTED[0]} more collected and deselected); sessions in s, per test in ms")
    print(f"{'mode':<14}{'median':>8}{'p10':>8}{'p90':>8}{'per test':>10}{'overhead':>10}{'p10-p90':>16}{'0 tests':>9}")
    for mode, m in summary["modes"].items():
        t = s[f"{mode} x{n}"]
        o = m["overhead_paired_ms"]
        print(f"{mode:<14}{t['median']:>8.2f}{t['p10']:>8.2f}{t['p90']:>8.2f}{m['per_test_ms']:>10.2f}"
              f"{m['overhead_ms']:>+10.2f}{o['p10']:>8.2f}-{o['p90']:<7.2f}{m['startup_s']:>9.2f}")
    print(f"hermetic / forked, per-test overhead: {verdict(summary.get('ratio'))}")
    if "against" in summary:
        a = summary["against"]
        print("hermetic / hermetic-base (--against), per-test overhead: " + ", ".join(
            f"{k} {v:.3f}" for k, v in a.items() if v is not None))
    print("CPU time (user+sys of the session and its children) per test over plain: " + ", ".join(
        f"{mode} {m['cpu_overhead_ms']:+.2f} ms" for mode, m in summary["modes"].items() if m["cpu_overhead_ms"] is not None)
        + (f"; hermetic / forked {summary['cpu_ratio']:.2f}" if "cpu_ratio" in summary else ""))
    print("machine-wide busy CPU (/proc/stat: every process and the kernel's workers; a quiet machine's figure) "
          "per test over plain: " + ", ".join(
              f"{mode} {m['machine_cpu_overhead_ms']:+.2f} ms" for mode, m in summary["modes"].items()
              if mode != "plain" and m["machine_cpu_overhead_ms"] is not None))
    print(f"start-up excluded: forked {summary['modes']['forked']['overhead_no_startup_ms']:.2f} ms, "
          f"hermetic {summary['modes']['hermetic']['overhead_no_startup_ms']:.2f} ms per test, "
          f"ratio {verdict(summary.get('ratio_no_startup'))}")


def read_counts(tests: int) -> dict[str, dict[str, float]]:
    """--counts: per mode, the median per test of each session's counters."""
    result = {}
    for name in sorted(os.listdir(COUNTS_DIR[0])):
        with open(os.path.join(COUNTS_DIR[0], name)) as f:
            records = [json.loads(line) for line in f if line.strip()]
        if not records:
            continue
        row = {}
        for who in ("self", "children"):
            for key, scale in (("minflt", 1), ("cpu", 1e3), ("user", 1e3), ("sys", 1e3), ("nvcsw", 1), ("nivcsw", 1)):
                row[f"{who}_{key}"] = statistics.median(r[who][key] for r in records) / tests * scale
        row["gc_full_collections"] = statistics.median(r["gc"][2] for r in records)
        row["maxrss_mib"] = statistics.median(r["maxrss_kib"] for r in records) / 1024
        row["sessions"] = len(records)
        result[name.removesuffix(".jsonl")] = row
    return result


def print_counts(counts: dict[str, dict[str, float]], markdown: bool) -> None:
    columns = [("pytest: minor faults", "self_minflt", ".0f"), ("pytest: CPU ms", "self_cpu", ".2f"),
               ("(user / sys)", None, ""), ("children: minor faults", "children_minflt", ".0f"),
               ("children: CPU ms", "children_cpu", ".2f"), ("(user / sys)", None, ""),
               ("pytest: context switches (vol / invol)", None, ""), ("peak RSS MiB", "maxrss_mib", ".1f"),
               ("full GCs", "gc_full_collections", ".0f")]

    def cell(row: dict, i: int) -> str:
        label, key, fmt = columns[i]
        if key is not None:
            return format(row[key], fmt)
        if i == 2:
            return f"{row['self_user']:.2f} / {row['self_sys']:.2f}"
        if i == 5:
            return f"{row['children_user']:.2f} / {row['children_sys']:.2f}"
        return f"{row['self_nvcsw']:.1f} / {row['self_nivcsw']:.1f}"

    print("\nper test, medians of the sessions (getrusage from the end of collection to the end of the session)")
    if markdown:
        print("| mode | " + " | ".join(c[0] for c in columns) + " |")
        print("|---|" + "---:|" * len(columns))
        for mode, row in counts.items():
            print(f"| {mode} | " + " | ".join(cell(row, i) for i in range(len(columns))) + " |")
        return
    for mode, row in counts.items():
        print(f"{mode:<14}" + "; ".join(f"{columns[i][0]} {cell(row, i)}" for i in range(len(columns))))


# --- --profile -------------------------------------------------------------------

# Loaded (-p) only in the two --profile sessions.  It notes CLOCK_MONOTONIC
# in pytest at each test's start and end and before each fork; in every
# process forked from it (the container's processes) at its first instant
# and at its `os._exit`; and around engine steps, where present (wrapped by
# name, so a renamed step just drops out of the timeline): Container.start,
# forked.parent.child_main (the test starts, in the container), forked.parent._drain (pytest has
# the reports), Container.remove (its time summed per test).  A child
# inherits its parent's notes and adds, at exit, its minor page faults and
# CPU time.  With TRACE_PROFILE=1 each child also runs under its own
# cProfile.  Every process appends its records to one journal file through
# an fd opened before the fork (the container's root hides the directory,
# and a container keeps a regular file's fd where it would replace a
# directory's: #10); `unpack_journal` splits it into files afterwards.  In a
# container that fd is a pipe into the file (runtime/file_relay.py), which
# keeps a write whole only up to PIPE_BUF: a bigger one (a profile) could
# arrive cut by another container's, so records go in chunks of at most
# that, each naming its record.
TRACE = "hermetic_bench_trace"
TRACE_SOURCE = '''\
import cProfile, json, marshal, os, resource, time

_journal = os.open(os.path.join(os.environ["TRACE_DIR"], "journal"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
_profile = os.environ.get("TRACE_PROFILE") == "1"
_real_exit = os._exit
_depth = 0  # 0 in pytest, 1 in its fork, 2 in a fork of that
_marks = {}
_profiler = None


def _write(name, data):
    # Chunks of at most PIPE_BUF (4096) bytes: name, NUL, the record's id
    # (4 random bytes: a zygote's forks, which run no at-fork hook, write
    # the same names, and each is PID 2 of its own namespace), 2-byte
    # length, 1 if the record goes on in a next chunk (else 0), data.
    head = name.encode() + b"\\0" + os.urandom(4)
    room = 4096 - len(head) - 3
    for at in range(0, max(len(data), 1), room):
        piece = data[at:at + room]
        more = at + room < len(data)
        chunk = head + len(piece).to_bytes(2, "little") + bytes([more]) + piece
        assert os.write(_journal, chunk) == len(chunk)  # one write of <= PIPE_BUF: whole, never interleaved


def _counts():
    # pytest's own page faults and CPU (its main thread) at a mark
    return [resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.thread_time()]


def _before_fork():
    _marks["fork%d" % _depth] = time.monotonic()
    if _depth == 0:
        _marks["n_fork0"] = _counts()


def _in_child():
    global _depth, _profiler
    _depth += 1
    _marks["pid%d" % _depth] = time.monotonic()
    if _profile:
        if _profiler is not None:
            _profiler.disable()  # the parent's, inherited: the parent writes it
        _profiler = cProfile.Profile()
        _profiler.enable()


def _exit(code):
    now = time.monotonic()
    if "test" in _marks:
        usage = resource.getrusage(resource.RUSAGE_SELF)  # a fork starts from zero
        counters = {"minflt": usage.ru_minflt, "cpu": usage.ru_utime + usage.ru_stime, "exit": now}
        _marks.update({"%s%d" % (k, _depth): v for k, v in counters.items()})
        if _profiler is not None:
            _profiler.disable()
            _profiler.create_stats()
            # one file per process: a zygote's forks inherit one test's name
            _write("%s.%s-%d.prof" % (_marks["test"], os.urandom(4).hex(), _depth), marshal.dumps(_profiler.stats))
        _write("%s-%d.json" % (_marks["test"], _depth), json.dumps(_marks).encode())
    _real_exit(code)


def _noting(fn, before=None, after=None, total=None):
    def wrapper(*args, **kwargs):
        t0 = time.monotonic()
        if before:
            _marks[before] = t0
        try:
            return fn(*args, **kwargs)
        finally:
            t1 = time.monotonic()
            if after:
                _marks[after] = t1
                if _depth == 0:
                    _marks["n_" + after] = _counts()
            if total:
                _marks[total] = _marks.get(total, 0.0) + (t1 - t0)
    return wrapper


def _wrap(owner, name, **how):
    if hasattr(owner, name):
        setattr(owner, name, _noting(getattr(owner, name), **how))


def _starting(fn):
    # start.start_child: this test's own start, or (ahead=True) the next one's
    def wrapper(*args, **kwargs):
        ahead = kwargs.get("ahead", False)
        _marks["next_start" if ahead else "own_start"] = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            _marks["next_end" if ahead else "own_end"] = time.monotonic()
    return wrapper


def pytest_configure(config):
    from pytest_hermetic import container
    from pytest_hermetic.forked import parent, per_test

    _wrap(container.Container, "start", before="engine_start")
    _wrap(parent, "child_main", before="test_start")  # by the name the parent calls it
    _wrap(parent, "_drain", after="drained")
    _wrap(container.Container, "remove", total="remove_total")
    # The zygote's path (pytest forks nothing per test): pytest's own phases.
    if hasattr(parent, "start_child"):
        parent.start_child = _starting(parent.start_child)
    if hasattr(per_test, "Ahead"):
        _wrap(per_test.Ahead, "go", before="go", after="go_end")
    try:  # the zygote forks its children with no at-fork hook (runtime/fork.py's bare_fork)
        from pytest_hermetic.forked import zygote_process
    except ImportError:
        zygote_process = None
    if hasattr(zygote_process, "_child"):
        zygote_process._child = _forked(zygote_process._child)


def _forked(fn):
    # a fork's first function in the child, where no at-fork hook ran
    def wrapper(*args, **kwargs):
        _in_child()
        return fn(*args, **kwargs)
    return wrapper


_last_finish = []  # pytest's counts at the last test's end


def pytest_runtest_logstart(nodeid, location):
    _marks.clear()
    _marks["test"] = os.urandom(6).hex()
    _marks["start"] = time.monotonic()
    _marks["n_start"] = _counts()
    if _last_finish:  # pytest's own work between the last test's end and this one's start
        _marks["n_between"] = [a - b for a, b in zip(_marks["n_start"], _last_finish)]


def pytest_runtest_logfinish(nodeid, location):
    _marks["finish"] = time.monotonic()
    _marks["n_finish"] = _counts()
    _last_finish[:] = _marks["n_finish"]
    _marks["rss0"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _write("%s-0.json" % _marks["test"], json.dumps(_marks).encode())


os.register_at_fork(before=_before_fork, after_in_child=_in_child)
os._exit = _exit
'''

# (label, from mark, to mark): the timeline of one hermetic test.
PHASES = [
    ("pytest, before Container.start: earlier containers' clean-up, spec, binds", "start", "engine_start"),
    ("Container.start until the fork: state dir, cgroup, state.json, PID 1", "engine_start", "fork0"),
    ("fork of pytest, until the child runs", "fork0", "pid1"),
    ("container set-up in the child (namespaces, mounts, pivot_root, cgroup, caps), until the test starts",
     "pid1", "test_start"),
    ("the test in the container: setup, call, teardown, until pytest has every report", "test_start", "drained"),
    ("pytest: reports decoded and logged, teardown", "drained", "finish"),
    ("total, per test", "start", "finish"),
]
# The same with the zygote (forked/zygote.py): pytest forks nothing per test
# and starts the next test's container while a test runs; the children's
# marks would be another test's (made ahead), so pytest's own phases only.
ZYGOTE_PHASES = [
    ("pytest, before the test's start: spec, binds", "start", "go"),
    ("the test's start: the word to its child, made ahead", "go", "go_end"),
    ("the next test's container started ahead (pytest's part: its cgroup and state, the zygote's fork, "
     "namespaces and PID 1 made ahead for the one after)", "next_start", "next_end"),
    ("waiting for the test's reports (its child runs the test), earlier containers removed", "next_end", "drained"),
    ("pytest: reports decoded and logged, teardown", "drained", "finish"),
    ("total, per test", "start", "finish"),
]
# (label, key, scale): counters, per test.
COUNTERS = [
    ("pytest: time in Container.remove (clean-up, maybe of an earlier test's container), ms", "remove_total", 1e3),
    ("pytest's peak RSS, MiB", "rss0", 1 / 1024),
    ("fork of pytest: minor page faults", "minflt1", 1),
    ("fork of pytest: CPU time, ms", "cpu1", 1e3),
    ("fork of that fork (if any): minor page faults", "minflt2", 1),
    ("fork of that fork (if any): CPU time, ms", "cpu2", 1e3),
]


PATH_COUNTERS = [("CPU, ms", 1, 1e3), ("minor page faults", 0, 1)]


def trace_session(args, project: str, envs: dict, tmp: str, name: str, cprofile: str | None,
                  mode: str = "hermetic") -> tuple[float, str]:
    """One hermetic session with TRACE loaded; returns (wall s, trace dir)."""
    folder = f"{tmp}/{name}"
    os.makedirs(folder)
    if not os.path.exists(f"{tmp}/compat/{TRACE}.py"):
        with open(f"{tmp}/compat/{TRACE}.py", "w") as f:
            f.write(TRACE_SOURCE)
    env = {**with_path(envs[mode], f"{tmp}/compat"), "TRACE_DIR": folder,
           "TRACE_PROFILE": "1" if cprofile else "0"}
    python = (sys.executable, "-m", "cProfile", "-o", cprofile) if cprofile else (sys.executable,)
    return run_session("hermetic", project, args.tests, env, python, ("-p", TRACE)), folder


def unpack_journal(folder: str) -> None:
    """The traced processes' records, each into its own file in `folder`."""
    try:
        with open(f"{folder}/journal", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return
    # A record's chunks come in order (one process writes them); the last whole
    # record of a name wins, as when each was a file of its own (a record
    # cut short by its writer's kill is left out).
    partial: dict[tuple[str, bytes], list[bytes]] = {}
    records: dict[str, bytes] = {}
    at = 0
    while at < len(data):
        end = data.index(b"\0", at)
        name, record = data[at:end].decode(), data[end + 1:end + 5]
        size = int.from_bytes(data[end + 5:end + 7], "little")
        partial.setdefault((name, record), []).append(data[end + 8:end + 8 + size])
        if not data[end + 7]:
            records[name] = b"".join(partial.pop((name, record)))
        at = end + 8 + size
    for name, record in records.items():
        with open(f"{folder}/{name}", "wb") as out:
            out.write(record)
    os.unlink(f"{folder}/journal")


def timeline(folder: str) -> dict[str, dict[str, float]]:
    """Per phase and counter: median, p10, p90 over the traced tests."""
    unpack_journal(folder)
    tests: dict[str, dict[str, float]] = {}
    # Deepest first, so pytest's own (latest) notes win over what a child inherited.
    names = sorted((n for n in os.listdir(folder) if n.endswith(".json")),
                   key=lambda n: int(n.removesuffix(".json").rsplit("-", 1)[1]), reverse=True)
    for name in names:
        with open(f"{folder}/{name}") as f:
            tests.setdefault(name.split("-")[0], {}).update(json.load(f))
    result = {}
    zygote = sum("go" in t for t in tests.values()) > len(tests) // 2
    for label, start, end in ZYGOTE_PHASES if zygote else PHASES:
        values = [(t[end] - t[start]) * 1e3 for t in tests.values() if start in t and end in t]
        if values:
            result[label] = {**spread(values), "tests": len(values)}
    for label, key, scale in COUNTERS[:2] if zygote else COUNTERS:  # (no fork of pytest per test)
        # remove_total is absent where a test removed nothing: that is 0
        values = [t.get(key, 0) * scale for t in tests.values() if key in t or key == "remove_total"]
        if values:
            result[label] = {**spread(values), "tests": len(values)}
    # pytest's own work, split where the test's path runs through it: from
    # its reports home to the next fork (the path: the test's end, pytest's
    # logging, the next test's start and its container up to the fork),
    # and from the fork (the fork itself included) to the reports home
    # (beside the child; off the path while there is a core for each).  CPU of its main thread and minor
    # faults, which load moves far less than wall time.
    if zygote:  # pytest's whole work per test: all of it is on the test's path now
        whole = [t for t in tests.values() if all(k in t for k in ("n_start", "n_finish", "n_between"))]
        for label, index, scale in PATH_COUNTERS:
            values = [(t["n_finish"][index] - t["n_start"][index] + t["n_between"][index]) * scale for t in whole]
            if values:
                result[f"pytest, per test (no fork of its own): {label}"] = {**spread(values), "tests": len(values)}
        return result
    whole = [t for t in tests.values() if all(k in t for k in ("n_start", "n_fork0", "n_drained", "n_finish", "n_between"))]
    for label, index, scale in PATH_COUNTERS:
        on = [(t["n_fork0"][index] - t["n_start"][index] + t["n_finish"][index] - t["n_drained"][index]
               + t["n_between"][index]) * scale for t in whole]
        off = [(t["n_drained"][index] - t["n_fork0"][index]) * scale for t in whole]
        if on:
            result[f"pytest on the test's path (reports home -> next fork): {label}"] = {**spread(on), "tests": len(on)}
            result[f"pytest beside the child (fork, included, -> reports home): {label}"] = {**spread(off),
                                                                                            "tests": len(off)}
    return result


def profile(args, project: str, envs: dict, tmp: str) -> dict:
    """Where a hermetic test's time goes: a timeline, then profiles."""
    n = args.tests
    # With --against: the other tree's timeline too, the two sessions taking turns.
    traced = ["hermetic", "hermetic-base"] * 2 if "hermetic-base" in envs else ["hermetic"]
    phases: dict = {}
    for i, mode in enumerate(traced):
        if not args.rounds and i < 2:
            run_session(mode, project, n, envs[mode])  # warm-up: bytecode cache
        elapsed, folder = trace_session(args, project, envs, tmp, f"trace-{i}", None, mode)
        found = timeline(folder)
        phases.setdefault(mode, found)
        print(f"\ntimeline of one hermetic test ({mode}), ms (a session with time marks only, {elapsed:.2f} s wall, "
              f"{n} tests)")
        print(f"{'median':>8}{'p10':>8}{'p90':>8}{'mean':>8}  phase")
        for label, v in found.items():
            if label == COUNTERS[0][0]:
                print(f"{'median':>8}{'p10':>8}{'p90':>8}{'mean':>8}  counter, per test")
            print(f"{v['median']:>8.2f}{v['p10']:>8.2f}{v['p90']:>8.2f}{v['mean']:>8.2f}  {label}")

    out = os.path.abspath(args.profile)
    elapsed, folder = trace_session(args, project, envs, tmp, "cprofile", out)
    print(f"\nprofiles of one more hermetic session ({elapsed:.2f} s wall under the profilers, {n} tests); "
          f"pytest's written to {out}.  Times are ms per test (total / tests), under the profiler; "
          "own = tottime, incl = cumtime")
    parent = pstats.Stats(out)
    entries = parent.stats  # type: ignore[attr-defined]
    _table(parent, sorted(entries, key=lambda k: entries[k][2], reverse=True)[:25], n,
           "pytest (the parent), top 25 by own time; the container's time shows here as blocking "
           "reads, select and waits")
    ours = [k for k in entries if "pytest_hermetic" in k[0]]
    _table(parent, sorted(ours, key=lambda k: entries[k][3], reverse=True)[:20], n,
           "pytest, top 20 pytest_hermetic functions by cumtime")
    unpack_journal(folder)
    for depth, title in ((1, "the fork of pytest (with the zygote: the zygote; without: the container's set-up "
                             "and, as root, the test)"),
                         (2, "a fork of that fork, if any (with the zygote: each test's set-up and the test)")):
        files = sorted(f"{folder}/{name}" for name in os.listdir(folder) if name.endswith(f"-{depth}.prof"))
        if not files:
            print(f"\n{title}: no profiles written")
            continue
        stats = pstats.Stats(*files)
        entries = stats.stats  # type: ignore[attr-defined]
        _table(stats, sorted(entries, key=lambda k: entries[k][2], reverse=True)[:15], len(files),
               f"{title}, {len(files)} processes, top 15 by own time")
        ours = [k for k in entries
                if "pytest_hermetic" in k[0] or k[0].endswith(("_pytest/runner.py", "_pytest/reports.py"))]
        _table(stats, sorted(ours, key=lambda k: entries[k][3], reverse=True)[:15], len(files),
               f"{title}, top 15 pytest_hermetic (and pytest runner, reports) functions by cumtime")
    return phases


def _table(stats: pstats.Stats, keys: list, n: int, title: str) -> None:
    print(f"\n{title}\n{'calls':>8}{'own ms':>9}{'incl ms':>9}  function")
    for key in keys:
        _cc, calls, tottime, cumtime, _callers = stats.stats[key]  # type: ignore[attr-defined]
        filename, line, name = key
        where = name if filename == "~" else f"{name}  {_short(filename)}:{line}"
        print(f"{calls:>8}{tottime / n * 1e3:>9.3f}{cumtime / n * 1e3:>9.3f}  {where}")


def _short(path: str) -> str:
    for marker in ("site-packages/", "pytest_hermetic/", "python3.11/", "lib/python3"):
        if marker in path:
            return ("pytest_hermetic/" if marker == "pytest_hermetic/" else "") + path.split(marker, 1)[1]
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=200, help="tests per session (default 200)")
    parser.add_argument("--shape", choices=("files", "param"), default="files",
                        help="files: N test functions, 50 to a file (default); param: one test parametrized N times")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (default 5; 0 with --profile only)")
    parser.add_argument("--seed", type=int, default=None, help="seed for the order shuffle")
    parser.add_argument("--json", metavar="FILE", help="write raw session times (s) and the summary here")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table for docs")
    parser.add_argument("--profile", metavar="FILE",
                        help="then show where a hermetic test's time goes: a session with time marks, "
                             "one under cProfile (pytest's profile written to FILE)")
    parser.add_argument("--dir", default="/var/tmp" if os.path.isdir("/var/tmp") else None,
                        help="where the temporary project goes (default /var/tmp: a project under /tmp "
                             "costs hermetic one more bind mount per test, as /tmp is fresh in a container)")
    parser.add_argument("--deselected", type=int, default=0, metavar="K",
                        help="K more tests in the project, collected and deselected in every session: a large "
                             "pytest process (issue #16: the cost that grows with it)")
    parser.add_argument("--counts", action="store_true",
                        help="also count, per test, minor page faults and CPU time of the pytest process and of "
                             "its children (getrusage from collection's end to the session's), in every mode")
    parser.add_argument("--to-file", action="store_true",
                        help="each session's output to a file (`pytest > ci.log 2>&1`, as in CI) instead of a pipe")
    parser.add_argument("--against", metavar="TREE",
                        help="also run hermetic from this checkout (first on PYTHONPATH) as mode "
                             "`hermetic-base`, interleaved: an A/B of two trees in whole sessions")
    parser.add_argument("--image", metavar="REF",
                        help="run the hermetic modes' tests in this image of the store (ini hermetic_image) "
                             "instead of `host`")
    args = parser.parse_args(argv)
    if args.image:
        MODES["hermetic"] = [*MODES["hermetic"], "-o", f"hermetic_image={args.image}"]
    DESELECTED[0] = max(args.deselected, 0)
    TO_FILE[0] = args.to_file
    if args.against:
        MODES["hermetic-base"] = MODES["hermetic"]
    if args.tests < 1:
        parser.error("--tests must be at least 1")
    if args.rounds < 1 and not (args.rounds == 0 and args.profile):
        parser.error("--rounds must be at least 1 (0 only with --profile)")

    info = machine()
    load_start = loadavg()
    print(f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    for key, value in info.items():
        print(f"{key}: {value}")
    print(f"load average at start: {load_start}")
    sys.stdout.flush()

    samples: dict[tuple[str, int], list[float]] = {(m, n): [] for m in MODES for n in (args.tests, 0)}
    loads: list[str] = []
    phases: dict = {}
    rounds = 0
    with tempfile.TemporaryDirectory(prefix="hermetic-pytest-bench-", dir=args.dir) as tmp:
        envs = session_envs(tmp)
        if args.against:
            envs["hermetic-base"] = with_path(envs["hermetic"], os.path.abspath(args.against))
        make_project(f"{tmp}/tests", args.tests, args.shape)
        make_project(f"{tmp}/empty", 0)
        project = {args.tests: f"{tmp}/tests", 0: f"{tmp}/empty"}
        if args.counts:
            COUNTS_DIR.append(f"{tmp}/counts")
            os.makedirs(COUNTS_DIR[0])
        try:
            if args.rounds:
                for mode in MODES:  # warm-up: bytecode caches, page cache
                    run_session(mode, project[args.tests], args.tests, envs[mode])
                    run_session(mode, project[0], 0, envs[mode])
                CPU_S.clear()  # the measured rounds' only
                for name in os.listdir(COUNTS_DIR[0]) if COUNTS_DIR else ():
                    os.unlink(os.path.join(COUNTS_DIR[0], name))
            rng = random.Random(args.seed)
            order = list(samples)
            for _ in range(args.rounds):
                loads.append(loadavg())
                rng.shuffle(order)
                for mode, n in order:
                    samples[mode, n].append(run_session(mode, project[n], n, envs[mode]))
                rounds += 1
                print(f"round {rounds}/{args.rounds}: " + ", ".join(
                    f"{m} {samples[m, args.tests][-1]:.2f}s" for m in MODES), file=sys.stderr)
            counts = read_counts(args.tests) if COUNTS_DIR else {}
            COUNTS_DIR.clear()  # (not the profile's sessions)
            if args.profile:
                phases = profile(args, project[args.tests], envs, tmp)
        except RuntimeError as exc:
            raise SystemExit(f"error: {exc}") from None
        except KeyboardInterrupt:
            print(f"interrupted after {rounds} rounds", file=sys.stderr)
            if rounds < 1:
                return 130
            samples = {key: s[:rounds] for key, s in samples.items()}
    if not rounds:
        return 0
    load_end = loadavg()
    print(f"load average at end: {load_end}")
    summary = summarize(samples, args.tests)
    print_report(args, info, f"{load_start} at start, {load_end} at end", summary, rounds)
    if counts:
        summary["counts_per_test"] = counts
        print_counts(counts, args.markdown)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                       "machine": info, "load": {"start": load_start, "rounds": loads, "end": load_end},
                       "tests": args.tests, "shape": args.shape, "deselected": DESELECTED[0], "rounds": rounds, "modes": MODES, "summary": summary,
                       "samples_s": {f"{m} x{n}": s for (m, n), s in samples.items()},
                       "cpu_s": {f"{m} x{n}": s for (m, n), s in CPU_S.items()},
                       "timeline_ms": phases}, f, indent=1)  # by mode (hermetic, hermetic-base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
