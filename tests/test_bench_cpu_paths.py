"""bench/cpu_paths.py: each sample of a perf record put down to the session's
process it ran in and to the kernel path it took (issue #16's CPU by path,
docs/benchmarks.md)."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT


def _table(text: str, mode: str) -> dict[str, dict[str, float]]:
    """{process: {path: ms}} of one mode's table."""
    block = text.split(f"\n{mode}: CPU per test", 1)[1].split("\n\n", 1)[0]
    table: dict[str, dict[str, float]] = {}
    paths: dict[str, float] = {}
    for line in block.splitlines()[1:]:
        found = re.match(r"^( +)([\d.]+)  (.*)$", line)
        assert found, line
        if len(found.group(1)) == 2 + 7 - len(found.group(2)):  # a process: "  %7.2f  name"
            paths = table.setdefault(found.group(3), {})
        else:
            paths[found.group(3)] = float(found.group(2))
    return table


def test_each_sample_goes_to_its_process_and_path():
    ran = subprocess.run([sys.executable, "bench/cpu_paths.py", "--tests", "40", "--modes", "forked,hermetic",
                          "--top", "40"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    hermetic, forked = _table(ran.stdout, "hermetic"), _table(ran.stdout, "forked")
    # The process tree: pytest, its zygote, the zygote's children (one per
    # test); under pytest-forked, pytest and its forks.
    assert {"pytest", "zygote", "tests' children"} <= set(hermetic), hermetic
    assert {"pytest", "tests' forks"} <= set(forked) and "zygote" not in forked, forked
    # Paths that only the right process takes: a test's child copies pages
    # it shares with its parent and tears its address space down at its
    # exit; the parent forks (clone); only hermetic's children mount.
    for children in (hermetic["tests' children"], forked["tests' forks"]):
        for path in ("page fault: copy-on-write", "system call: exit_group (the address space's teardown)",
                     "user space (Python)"):
            assert children.get(path, 0) > 0, (path, children)
        assert "system call: clone" not in children
    assert hermetic["tests' children"].get("system call: mount", 0) > 0
    assert not any("system call: mount" in forked[who] for who in ("pytest", "tests' forks"))  # (not the
    # machine's other processes: under xdist, another worker's containers)
    assert hermetic["zygote"].get("system call: clone", 0) > 0
    assert forked["pytest"].get("system call: clone", 0) > 0
