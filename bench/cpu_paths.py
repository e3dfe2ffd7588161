#!/usr/bin/env python3
"""Where a test's CPU goes, by process and by kernel path.

One whole session per mode (bench/pytest_overhead.py's project and modes:
plain pytest, pytest-forked, hermetic) runs under `perf record -a -g`.  Each
sample is put down to the process it ran in, by its place in the session's
process tree (pytest itself; under hermetic its zygote, the tests' children
and their placeholder PID 1s; under pytest-forked the tests' forks; the
kernel's own workers and anything else on the machine apart), and to what
that process was doing: Python (user space), or the kernel entered for a
system call (by name: `exit_group` is the address space's teardown, `clone`
a fork, `mount`, ...), a page fault (copy-on-write, of a file's page, other)
or an interrupt.  Printed per test: milliseconds of CPU (samples / frequency
/ tests), by process, with each process's largest paths.

Why: `pytest_overhead.py --profile` shows Python's functions, and where
Python waits; the per-test CPU that separates hermetic from pytest-forked is
mostly the kernel's (issue #16, docs/benchmarks.md), which only this shows.

    python bench/cpu_paths.py [--tests 200] [--work MS] [--freq 2000] [--modes forked,hermetic] [--top 12]

With `--work MS` each test spins for MS ms of CPU (bench/xdist_scaling.py's
tests) instead of doing nothing: what a CPU-bound test costs beside its own
work, path by path.

As root, with perf (Debian: linux-perf).  A benchmark, not a timer: sessions
under perf run slower, so compare modes with each other, not with figures
taken without it.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest_overhead as overhead  # bench/: the project, the modes, a checked session
from machine import describe, loadavg  # bench/machine.py

FORK = re.compile(r"PERF_RECORD_FORK\((\d+):(\d+)\):\((\d+):(\d+)\)")
COMM = re.compile(r"PERF_RECORD_COMM(?: exec)?: (.*):(\d+)/(\d+)")
HEADER = re.compile(r"^(\S.*?)\s+(\d+)/(\d+)\s")
KERNEL = 0xFFFF800000000000  # x86_64 and arm64: kernel addresses are above this


def record(mode: str, project: str, tests: int, env: dict[str, str], data: str, freq: int) -> None:
    """Run one checked session of `mode` under perf, all CPUs sampled into `data`."""
    perf = ("perf", "record", "-q", "-a", "-g", "-F", str(freq), "-o", data, "--", sys.executable)
    overhead.run_session(mode, project, tests, env, perf)


def samples(data: str):
    """(comm, pid, [frames, leaf first as (address, symbol)]) of each sample,
    {child pid: parent pid}, and {pid: its first name} (perf's own: "perf")."""
    script = subprocess.run(["perf", "script", "-i", data, "--show-task-events", "-F", "comm,pid,tid,ip,sym"],
                            capture_output=True, text=True, check=True).stdout
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    found = []
    current = None
    for line in script.splitlines():
        if not line.strip():
            if current is not None:
                found.append(current)
                current = None
            continue
        fork = FORK.search(line)
        if fork:
            child, parent = int(fork.group(1)), int(fork.group(3))
            if child != parent:  # (a thread's own creation: same pid)
                parents.setdefault(child, parent)
            continue
        comm = COMM.search(line)
        if comm:
            names.setdefault(int(comm.group(2)), comm.group(1))
            continue
        if "PERF_RECORD_" in line:
            continue
        if not line[0].isspace():
            head = HEADER.match(line)
            current = (head.group(1), int(head.group(2)), []) if head else None
            continue
        if current is not None:
            parts = line.split(None, 1)
            try:
                address = int(parts[0], 16)
            except ValueError:
                continue
            current[2].append((address, parts[1].strip() if len(parts) > 1 else "?"))
    if current is not None:
        found.append(current)
    return found, parents, names


def roles(root: int, parents: dict[int, int], comms: dict[int, str], mode: str) -> dict[int, str]:
    """Each pid of the session's tree, named by its place in it."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for child, parent in parents.items():
        children[parent].append(child)
    named = {root: "pytest"}
    queue = [(root, 0)]
    while queue:
        pid, depth = queue.pop()
        for child in children.get(pid, []):
            if comms.get(child, "").startswith("hermetic-pid1"):
                named[child] = "placeholder PID 1s"
            elif mode == "hermetic" and depth == 0 and children.get(child):
                named[child] = "zygote"
            elif mode == "hermetic" and depth == 1 and named.get(pid) == "zygote":
                named[child] = "tests' children"
            elif mode != "hermetic" and depth == 0:
                named[child] = "tests' forks"
            else:
                named[child] = "other processes of the session"
            queue.append((child, depth + 1))
    return named


def path_of(frames: list[tuple[int, str]]) -> str:
    """What the sampled process was doing: the kernel's way in, outermost first."""
    kernel = [symbol for address, symbol in frames if address >= KERNEL]
    if not kernel:
        return "user space (Python)"
    if any("exc_page_fault" in symbol for symbol in kernel):
        if any(symbol.startswith("do_wp_page") for symbol in kernel):
            return "page fault: copy-on-write"
        if any(symbol.startswith(("do_fault", "filemap_map_pages", "do_read_fault")) for symbol in kernel):
            return "page fault: a file's page (code, data)"
        return "page fault: other"
    for symbol in reversed(kernel):  # outermost first
        for prefix in ("__x64_sys_", "__arm64_sys_", "__do_sys_", "__se_sys_"):
            if symbol.startswith(prefix):
                name = symbol[len(prefix):]
                return f"system call: {name}" + (" (the address space's teardown)" if name == "exit_group" else "")
    if any(word in symbol for symbol in kernel for word in ("irq", "sysvec_", "softirq")):
        return "interrupts"
    return f"kernel: {kernel[-1]}"


def report(mode: str, found, parents, root: int, freq: int, tests: int, work: float, top: int) -> None:
    """Print `mode`'s table: ms of CPU per test, per process of the session, with its `top` paths."""
    comms = {pid: comm for comm, pid, _ in found}
    named = roles(root, parents, comms, mode)
    table: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for comm, pid, frames in found:
        if pid == 0:
            continue  # idle
        who = named.get(pid) or ("the kernel's workers" if not frames or frames[-1][0] >= KERNEL
                                 else f"other processes ({comm})" if comm == "perf" else "other processes")
        table[who][path_of(frames)] += 1
    scale = 1000.0 / freq / tests
    out = {who: {path: n * scale for path, n in paths.items()} for who, paths in table.items()}
    spin = f", each spinning {work:g} ms of CPU" if work > 0 else ""
    print(f"\n{mode}: CPU per test, ms, by process and path ({tests} tests{spin}, {freq} Hz)")
    for who, paths in sorted(out.items(), key=lambda item: -sum(item[1].values())):
        print(f"  {sum(paths.values()):7.2f}  {who}")
        for path, ms in sorted(paths.items(), key=lambda item: -item[1])[:top]:
            print(f"  {ms:15.3f}  {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=200, help="tests per session (default 200)")
    parser.add_argument("--work", type=float, default=0, metavar="MS",
                        help="each test spins MS ms of CPU (bench/xdist_scaling.py's tests; default 0: trivial)")
    parser.add_argument("--freq", type=int, default=2000, help="samples per second and CPU (default 2000)")
    parser.add_argument("--modes", default="forked,hermetic", help="modes, comma separated (default forked,hermetic)")
    parser.add_argument("--top", type=int, default=12, help="paths shown per process (default 12)")
    parser.add_argument("--dir", default="/var/tmp" if os.path.isdir("/var/tmp") else None,
                        help="where the temporary project goes (default /var/tmp)")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in overhead.MODES]
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}: choose from {', '.join(overhead.MODES)}")
    if os.geteuid() != 0:
        parser.error("run as root (perf record -a, and the hermetic mode's containers)")
    if shutil.which("perf") is None:
        parser.error("perf is not installed (Debian: apt-get install linux-perf)")
    print(f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    for key, value in describe().items():
        print(f"{key}: {value}")
    print(f"load average at start: {loadavg()}")
    with tempfile.TemporaryDirectory(prefix="hermetic-cpu-paths-", dir=args.dir) as tmp:
        project = f"{tmp}/project"
        if args.work > 0:
            import xdist_scaling  # bench/: its CPU-bound tests

            xdist_scaling.make_project(project, args.tests, args.work)
        else:
            overhead.make_project(project, args.tests)
        envs = overhead.session_envs(tmp)
        for mode in modes:
            overhead.run_session(mode, project, args.tests, envs[mode])  # warm-up: byte code cached
            data = f"{tmp}/{mode}.data"
            record(mode, project, args.tests, envs[mode], data, args.freq)
            found, parents, names = samples(data)
            # The session: what `perf record` forked (it runs the command as its child).
            root = next((child for child, parent in parents.items() if names.get(parent) == "perf"), None)
            if root is None:
                raise SystemExit(f"cpu_paths: the {mode} session's process is not in perf's record")
            report(mode, found, parents, root, args.freq, args.tests, args.work, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
