"""bench/xdist_scaling.py --bound: its "no-set-up" sessions really run their
tests without the container's set-up (no mount namespace of their own, no
seccomp filter), and a hermetic session beside them still has both: the
bound measures what it says (issue #16, docs/benchmarks.md)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))
import xdist_scaling  # noqa: E402  (bench/ is not a package)

PROBE = '''\
import os


def test_probe():
    with open("/proc/self/status") as f:
        seccomp = next(line.split()[1] for line in f if line.startswith("Seccomp:"))
    root = "own" if os.readlink("/proc/self/ns/mnt") != os.environ["HOST_MNT"] else "host"
    assert f"{seccomp} {root}" == os.environ["EXPECTED"]
'''


@pytest.mark.parametrize("bound, expected", [(False, "2 own"), (True, "0 host")])
def test_no_set_up_sessions_skip_the_set_up_and_only_they(tmp_path, bound, expected):
    (tmp_path / "test_probe.py").write_text(PROBE)
    (tmp_path / f"{xdist_scaling.NO_SET_UP}.py").write_text(xdist_scaling.NO_SET_UP_SOURCE)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
           "HOST_MNT": os.readlink("/proc/self/ns/mnt"), "EXPECTED": expected}
    env.pop("PYTEST_ADDOPTS", None)
    plugin = ["-p", xdist_scaling.NO_SET_UP] if bound else []
    ran = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *xdist_scaling.MODES["hermetic"],
                          *plugin, "test_probe.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0 and "1 passed" in ran.stdout, ran.stdout[-3000:] + ran.stderr[-2000:]
