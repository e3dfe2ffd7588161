"""bench/pytest_overhead.py --profile: the phase profile issue #16 keeps in
docs/benchmarks.md.  Each test's child is profiled apart: the zygote forks
them with no at-fork hook, and their profiles, bigger than PIPE_BUF, reach
the bench's journal through their containers' relay pipes."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT


def test_the_profile_shows_each_tests_child_apart(tmp_path):
    ran = subprocess.run([sys.executable, "bench/pytest_overhead.py", "--tests", "20", "--rounds", "0",
                          "--profile", str(tmp_path / "pytest.prof")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    # A profile of each child's own (not the zygote's, copied into every
    # child); the session's end may kill the last child, or an unused one
    # started ahead, while it writes its own.
    found = re.search(r"each test's set-up and the test\), (\d+) processes", ran.stdout)
    assert found and int(found.group(1)) >= 18, ran.stdout[-3000:]
    assert "child_main" in ran.stdout  # the tests' own functions, not only the zygote's
