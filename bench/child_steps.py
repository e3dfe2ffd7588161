#!/usr/bin/env python3
"""Where a hermetic test's child spends its set-up: per step, its CPU time
(the thread's CPU clock), wall time and minor page faults, in whole pytest
sessions of trivial tests, for one tree or two taking turns (an A/B).

Each session runs under a small driver that wraps the engine's set-up steps
(runtime/init.py, runtime/rootfs/*, capabilities, seccomp, descriptors) with
counters before pytest starts; the forked child inherits them, and writes
its totals (one JSON line per test) just before the test itself runs.  A
step missing from a tree is skipped.  The counters cost a little themselves:
compare trees with each other, not with figures taken without them.
Faults matter: in the fork every page the child writes that it shares with
pytest is copied first, so a step's cost follows how many distinct objects
it touches as much as which system calls it makes.

    python bench/child_steps.py [--tests 200] [--sessions 4] [TREE ...]   # as root; default: this checkout

Trees are checkouts (first on PYTHONPATH); sessions of the trees alternate.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

DRIVER = r'''
import functools, json, os, resource, sys, time
log = os.open(sys.argv.pop(1), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
from pytest_hermetic.runtime import capabilities, descriptors, init, network, process, rootfs, seccomp, spare
from pytest_hermetic.runtime import syscalls
from pytest_hermetic.runtime.rootfs import volumes
totals = {}
owner = [os.getpid()]
def mine():
    """This process's totals: a fork starts with none (the zygote's
    children inherit what pytest counted before the zygote's fork)."""
    if owner[0] != os.getpid():
        owner[0] = os.getpid()
        totals.clear()
    return totals
def marks():
    return time.clock_gettime_ns(time.CLOCK_THREAD_CPUTIME_ID), time.perf_counter_ns(), resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
def wrap(module, name, label):
    function = getattr(module, name, None)
    if function is None:
        return
    @functools.wraps(function)
    def counted(*args, **kwargs):
        before = marks()
        try:
            return function(*args, **kwargs)
        finally:
            after = marks()
            sums = mine().setdefault(label, [0, 0, 0])
            for i in range(3):
                sums[i] += after[i] - before[i]
    setattr(module, name, counted)
STEPS = [(init, "_enter_container", "enter the container (all below but drop, seccomp, seal)"),
         (spare, "enter", "  namespaces made ahead: setns"),
         (syscalls, "unshare", "  unshare (mount; cgroup)"),
         (rootfs, "setup", "  root file system (all below)"),
         (rootfs, "write_init_layer", "    init layer"),
         (rootfs, "mount_overlay", "    overlay root"),
         (rootfs, "mount_proc", "    /proc"), (rootfs, "mount_dev", "    /dev"), (rootfs, "mount_sys", "    /sys"),
         (rootfs, "mount_volumes", "    volumes"), (rootfs, "mask_paths", "    masks"), (rootfs, "_pivot", "    pivot_root"),
         (descriptors, "finish", "  descriptors' finish"), (network, "configure", "  network"),
         (rootfs, "mount_cgroup2", "  /sys/fs/cgroup"),
         (init, "own_session", "session, keyring"), (init, "_drop_privileges", "user, capabilities"),
         (seccomp, "install", "seccomp filter"), (descriptors, "seal", "descriptors sealed")]
for module, name, label in STEPS:
    wrap(module, name, label)
fork = process.fork
def counted_fork():
    pid = fork()
    if pid == 0:
        clock, _, faults = marks()
        mine()["from the fork to the engine's child code"] = [clock, 0, faults]
    return pid
process.fork = counted_fork
call = init._call
def counted_call(target):
    clock, _, faults = marks()
    mine()["the child, from the fork to the test (total)"] = [clock, 0, faults]
    os.write(log, (json.dumps(totals) + "\n").encode())
    return call(target)
init._call = counted_call
import pytest
sys.exit(pytest.main(sys.argv[1:]))
'''


def session(tree: str, project: str, log: str) -> None:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    ran = subprocess.run([sys.executable, "-c", DRIVER, log, "-q", "-p", "no:cacheprovider", "-p", "hermetic",
                          "--hermetic", project], env=env, cwd=project, capture_output=True, text=True)
    if ran.returncode != 0:
        raise SystemExit(f"session of {tree} failed ({ran.returncode}):\n{ran.stdout[-2000:]}{ran.stderr[-2000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="*", default=[os.path.dirname(os.path.dirname(os.path.abspath(__file__)))])
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=4, help="sessions per tree, taking turns (default 4)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hermetic-child-steps-", dir="/var/tmp") as work:
        project = os.path.join(work, "project")
        os.mkdir(project)
        for number in range(0, args.tests, 50):
            with open(os.path.join(project, f"test_{number // 50}.py"), "w") as f:
                f.writelines(f"def test_{i}():\n    assert 1 + 1 == 2\n\n" for i in range(min(50, args.tests - number)))
        logs = {tree: os.path.join(work, f"steps-{i}.jsonl") for i, tree in enumerate(args.trees)}
        for _ in range(args.sessions):
            for tree in args.trees:
                session(tree, project, logs[tree])
        rows = {tree: [json.loads(line) for line in open(log)] for tree, log in logs.items()}
    steps = DRIVER[DRIVER.index("STEPS = "):DRIVER.index("for module, name, label in STEPS")]
    labels = ["from the fork to the engine's child code", *re.findall(r', "([^"]+)"\)', steps),
              "the child, from the fork to the test (total)"]
    print(f"{args.tests} tests x {args.sessions} sessions per tree; medians per test: CPU ms / wall ms / minor faults")
    print("step".ljust(55) + "".join(f"{os.path.basename(os.path.abspath(t))[:24]:>26}" for t in args.trees))
    for label in labels:
        line = label.ljust(55)
        for tree in args.trees:
            values = [row[label] for row in rows[tree] if label in row]
            if not values:
                line += "-".rjust(26)
                continue
            cpu, wall, faults = (statistics.median(v[i] for v in values) for i in range(3))
            line += f"{cpu / 1e6:8.3f} " + (f"{wall / 1e6:8.3f}" if wall else "       -") + f" {faults:8.0f}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
