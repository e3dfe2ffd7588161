#!/usr/bin/env python3
"""How fast one container could start with no Python in it (issue #16).

bench/container_cost.py puts `hermetic` in process next to bwrap.  This
asks what is left when the same work is done in C: bench/setup_floor.c
makes the system calls that `Container(Spec.build("host", ["true"])).run()`
and `.remove()` make (parent and child, the engine's own seccomp filter),
built here with the machine's C compiler.  Each round runs, in a freshly
shuffled order:

  true                  posix_spawn of /usr/bin/true and waitpid
  bwrap --unshare-all   as in container_cost.py
  setup_floor (C)       the engine's system calls, spawned as one program
  Python parent, C child
                        the parent's half of those calls made from Python
                        here (state folder, cgroups, the thread's route into
                        them, a PID namespace, statistics, removal), the
                        child's half by `setup_floor --child`, started with
                        posix_spawn: what a native child would cost the
                        engine, whose parent stays Python, less the engine's
                        own Python around those calls (its Spec, checks and
                        records: the in-process row's "own" CPU above this
                        one's)
  hermetic, Python child
                        the engine with its Python child (the fork of this
                        process that runs init.py): what every container
                        cost before the native child (HERMETIC_NATIVE_CHILD=0)
  hermetic (in process) the engine itself: its native child
                        (runtime/native_child.py) where it is built

Reported: wall-clock median and p10-p90, and the median CPU time (this
process and its children, then each apart) of each, in ms; then the ratios
to bwrap and between the rows.  What hermetic takes above the floor is what
Python costs: the fork of a Python process (its page tables, the pages
both sides then copy) and the interpreter's work in the child.

Root, a hybrid or v1 cgroup host (the C side makes the v1 cgroups the
engine makes there), `cc`, and bwrap for its line.  Stdlib only.

    python bench/setup_floor.py [--rounds 40] [--warmup 5]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from container_cost import run_hermetic_api  # bench/container_cost.py: the same in-process contender
from machine import describe, loadavg  # bench/machine.py
from pytest_hermetic.runtime import cgroups, seccomp
from pytest_hermetic.runtime import syscalls as sc

HERE = os.path.dirname(os.path.abspath(__file__))
CONTROLLERS = ("pids", "freezer", "memory", "cpuacct")  # setup_floor.c's, in its order


class PythonParent:
    """setup_floor.c's `main`, in Python, its child started with
    posix_spawn (a vfork: no copy of this process's page tables or pages)."""

    def __init__(self, binary: str, state_root: str, filter_path: str, null: int) -> None:
        self.binary, self.state_root, self.filter_path, self.null = binary, state_root, filter_path, null
        v1 = cgroups.detect().v1
        mine = {}
        with open("/proc/thread-self/cgroup") as f:
            for line in f:
                _, names, path = line.rstrip("\n").split(":", 2)
                for name in names.split(","):
                    mine[name] = path.rstrip("/")
        self.home = [f"{v1[name].rstrip('/')}{mine[name]}" for name in CONTROLLERS]
        self.own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        self.count = 0

    def __call__(self) -> None:
        self.count += 1
        name = f"hermetic-floor-py-{os.getpid()}-{self.count}"
        state = f"{self.state_root}/{name}"
        os.mkdir(state, 0o700)
        scratch = f"{state}/scratch"
        os.mkdir(scratch, 0o755)
        made = [f"{home}/{name}" for home in self.home]
        for path in made:
            os.mkdir(path, 0o777)
        _write(f"{made[0]}/pids.max", b"max")
        for path in made:  # this thread steps in, spawns, steps back (setup_floor.c)
            _write(f"{path}/tasks", b"0")
        sc.unshare(sc.CLONE_NEWPID)
        try:
            pid = os.posix_spawn(self.binary, [self.binary, "--child", scratch, self.filter_path],
                                 {"PATH": "/usr/bin:/bin"},
                                 file_actions=[(os.POSIX_SPAWN_DUP2, self.null, 0), (os.POSIX_SPAWN_DUP2, self.null, 1)])
        finally:
            sc.setns(self.own_pidns, sc.CLONE_NEWPID)
            for home in self.home:
                _write(f"{home}/tasks", b"0")
        status = os.waitpid(pid, 0)[1]
        for path in (f"{made[2]}/memory.max_usage_in_bytes", f"{made[2]}/memory.oom_control",
                     f"{made[3]}/cpuacct.usage", f"{made[0]}/pids.events"):
            _read(path)
        for path in reversed(made):
            os.rmdir(path)
        os.rmdir(scratch)
        os.rmdir(state)
        if status != 0:
            raise RuntimeError(f"setup_floor --child: wait status {status}")


def run_with_python_child() -> None:
    """The engine in process with its Python child (native_child.switch:
    as HERMETIC_NATIVE_CHILD=0 would have it, for this row only)."""
    from pytest_hermetic.runtime import native_child

    native_child.switch(False)
    try:
        run_hermetic_api(None)
    finally:
        native_child.switch(None)


# Plain os calls, not the engine's cgroups.write/read_text: this parent is the
# minimal one, setup_floor.c's calls and nothing around them.
def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 256)
    finally:
        os.close(fd)


def build(tmp: str) -> tuple[str, str]:
    """The floor program, static where the C library allows (no dynamic
    loader's start-up, as bwrap has); (path, how it was linked)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        sys.exit("setup_floor: no C compiler (cc); fix: apt-get install gcc")
    binary = os.path.join(tmp, "setup_floor")
    for flags, linked in ((["-static"], "static"), ([], "dynamic")):
        done = subprocess.run([compiler, "-O2", "-Wall", *flags, "-o", binary, os.path.join(HERE, "setup_floor.c")],
                              capture_output=True, text=True)
        if done.returncode == 0:
            return binary, linked
    sys.exit(f"setup_floor: the C file did not build:\n{done.stderr}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("setup_floor: run as root (the C side makes namespaces, mounts and cgroups)")
    if not all(name in cgroups.detect().v1 for name in ("pids", "freezer", "memory", "cpuacct")):
        sys.exit("setup_floor: the C side makes the v1 cgroups (pids, freezer, memory, cpuacct) that the engine "
                 "makes on a hybrid or v1 host; this one lacks some")
    bwrap = shutil.which("bwrap")
    with tempfile.TemporaryDirectory(prefix="hermetic-floor-") as tmp, \
            tempfile.TemporaryDirectory(prefix="hermetic-floor-", dir="/dev/shm") as state:
        binary, linked = build(tmp)
        with open(os.path.join(tmp, "filter"), "wb") as f:
            f.write(seccomp.default().program)
        null = os.open(os.devnull, os.O_RDWR)

        def spawn(argv: list[str]) -> None:
            pid = os.posix_spawn(argv[0], argv, {"PATH": "/usr/bin:/bin"},
                                 file_actions=[(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, null, 1)])
            status = os.waitpid(pid, 0)[1]
            if status != 0:
                raise RuntimeError(f"{argv[0]}: wait status {status}")

        contenders = {"true": lambda: spawn(["/usr/bin/true"])}
        if bwrap:
            contenders["bwrap --unshare-all"] = lambda: spawn(
                [bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc",
                 "--dev", "/dev", "--tmpfs", "/tmp", "true"])
        contenders[f"setup_floor (C, {linked})"] = lambda: spawn([binary, state, os.path.join(tmp, "filter")])
        contenders["Python parent, C child"] = PythonParent(binary, state, os.path.join(tmp, "filter"), null)
        contenders["hermetic, Python child"] = run_with_python_child
        contenders["hermetic (in process)"] = lambda: run_hermetic_api(None)  # (its Bench is not used)
        for _ in range(args.warmup):
            for run in contenders.values():
                run()
        wall: dict[str, list[float]] = {name: [] for name in contenders}
        cpu: dict[str, list[float]] = {name: [] for name in contenders}
        own_cpu: dict[str, list[float]] = {name: [] for name in contenders}
        load_before = loadavg()
        for _ in range(args.rounds):
            order = list(contenders)
            random.shuffle(order)
            for name in order:
                own, kids, start = (resource.getrusage(resource.RUSAGE_SELF),
                                    resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter())
                contenders[name]()
                elapsed = time.perf_counter() - start
                own2, kids2 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
                wall[name].append(elapsed * 1000)
                mine = own2.ru_utime - own.ru_utime + own2.ru_stime - own.ru_stime
                own_cpu[name].append(1000 * mine)
                cpu[name].append(1000 * (mine + kids2.ru_utime - kids.ru_utime + kids2.ru_stime - kids.ru_stime))
        os.close(null)
        left = os.listdir(state)
    machine = describe()
    print(f"# {machine['cpu']}; {machine['cores']} cores; kernel {machine['kernel']}; cgroup {machine['cgroup']}; "
          f"load {load_before} -> {loadavg()}; {args.rounds} rounds")
    print(f"{'contender':32s} {'wall ms':>8s} {'p10-p90':>13s} {'CPU ms':>8s} {'own':>6s} {'children':>8s}")

    def decile(values: list[float], at: float) -> float:
        return sorted(values)[round(at * (len(values) - 1))]

    median = {name: statistics.median(values) for name, values in wall.items()}
    for name in contenders:
        spread = f"{decile(wall[name], 0.1):.2f}-{decile(wall[name], 0.9):.2f}"
        own = statistics.median(own_cpu[name])
        children = statistics.median(c - o for c, o in zip(cpu[name], own_cpu[name]))
        print(f"{name:32s} {median[name]:8.2f} {spread:>13s} {statistics.median(cpu[name]):8.2f} "
              f"{own:6.2f} {children:8.2f}")
    floor = next(name for name in contenders if name.startswith("setup_floor"))
    hybrid, python_child = "Python parent, C child", "hermetic, Python child"
    pairs = [(floor, "bwrap --unshare-all"), (hybrid, "bwrap --unshare-all"), (python_child, "bwrap --unshare-all"),
             ("hermetic (in process)", "bwrap --unshare-all"), ("hermetic (in process)", floor),
             ("hermetic (in process)", hybrid), ("hermetic (in process)", python_child)]
    for a, b in pairs:
        if a in median and b in median:
            print(f"{a} / {b}: {median[a] / median[b]:.2f} (wall)")
    if left:
        print(f"setup_floor left state behind: {left}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
