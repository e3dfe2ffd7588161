"""Cgroup limits for real: memory (OOM), PIDs, CPU bandwidth, timeouts."""

import time

import pytest

from conftest import run_cli
from pytest_hermetic.container import Container
from pytest_hermetic.runtime import cgroups
from pytest_hermetic.spec import Spec


def test_memory_hog_is_oom_killed_and_reported():
    ran = run_cli("run", "--mem", "64M", "host", "--", "python3", "-c", "bytearray(400 << 20)")
    assert ran.returncode == 137
    assert ran.stderr.strip() == "hermetic: killed: out of memory (limit 64 MiB, peak 64 MiB)"


def test_oom_result_through_the_api():
    with Container(Spec.build("host", ["python3", "-c", "b = bytearray(300 << 20)"], mem="48M")) as c:
        result = c.run()
    assert result.oom_killed and result.exit_code == 137
    assert result.stats.memory_limit == 48 << 20
    assert result.stats.memory_peak is not None and result.stats.memory_peak >= 40 << 20
    assert result.reason.startswith("out of memory (limit 48 MiB, peak ")


def test_fork_loop_hits_the_pids_limit():
    script = "i=0; while [ $i -lt 200 ]; do sleep 5 & i=$((i+1)); done 2>/dev/null; echo started; kill $(jobs -p) 2>/dev/null"
    with Container(Spec.build("host", ["sh", "-c", script], pids=24, timeout=20)) as c:
        result = c.run()
    assert result.stats.pids_limit == 24
    assert result.stats.pids_limit_hits > 0
    assert result.timed_out is None


def test_pids_limit_from_the_cli_stops_a_fork_loop():
    ran = run_cli("run", "--pids", "24", "host", "sh", "-c", "for i in $(seq 100); do sleep 5 & done; wait")
    assert ran.returncode != 0
    assert "fork" in ran.stderr.lower()  # sh: Cannot fork
    assert "PIDs limit of 24 was hit" in ran.stderr


def test_default_pids_fuse():
    with Container(Spec.build("host", ["cat", "/sys/fs/cgroup/pids.max"])) as c:
        c.start()
        c.wait()
        assert c.stats().pids_limit == 4096


@pytest.mark.parametrize("cpus", [0.5])
def test_cpu_bandwidth_keeps_a_busy_loop_near_the_limit(cpus):
    script = "import time\nend = time.time() + 2\nwhile time.time() < end: pass"
    with Container(Spec.build("host", ["python3", "-c", script], cpus=cpus)) as c:
        started = time.monotonic()
        result = c.run()
        wall = time.monotonic() - started
    used = result.stats.cpu_usec / 1e6 / wall
    assert cpus * 0.7 < used < cpus * 1.15, f"used {used:.2f} of a CPU with cpus={cpus}"


def test_timeout_kills_everything_and_names_it():
    started = time.monotonic()
    ran = run_cli("run", "--timeout", "2", "host", "sh", "-c", "sleep 30 & sleep 30 & sleep 30")
    elapsed = time.monotonic() - started
    assert ran.returncode == 137
    assert ran.stderr.startswith("hermetic: killed: timeout after 2 s: killed 4 processes (sh, sleep, sleep, sleep)"), ran.stderr
    assert elapsed < 10


def test_signal_death_is_named():
    with Container(Spec.build("host", ["python3", "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"])) as c:
        result = c.start(target=None).wait()
    # python3 is PID 1 here and the kernel ignores default-action signals it
    # sends itself, as under docker; a callable target runs as PID 2 instead.
    assert result.exit_code == 0
    import faulthandler
    import os
    import signal

    def crash() -> None:
        faulthandler.disable()  # pytest's handler would print a stack for the intended crash
        os.kill(os.getpid(), signal.SIGSEGV)

    with Container(Spec.build("host")) as c:
        result = c.start(target=crash).wait()
    assert result.status.signal == signal.SIGSEGV
    assert result.reason == "killed by signal SIGSEGV"
    assert result.exit_code == 139


def test_cgroups_detected():
    import os

    hierarchy = cgroups.detect()
    assert hierarchy.version in ("v1", "v2", "hybrid")
    if os.environ.get("HERMETIC_IN_VM"):  # scripts/cgroup-v2-vm boots with cgroup_no_v1=all
        assert hierarchy.version == "v2"


def _thread_cgroups() -> str:
    with open("/proc/thread-self/cgroup") as f:
        return f.read()


@pytest.mark.parametrize("kind", ["command", "callable"])
def test_container_starts_inside_its_cgroup_and_the_caller_stays_home(kind):
    """As root on v1 the child is forked from inside its cgroups (the
    caller's thread steps in and back out: cgroups.ThreadRoute) instead of
    being moved there: every process of the container is in each of its
    cgroups, and the caller's thread is where it was."""
    before = _thread_cgroups()
    spec = Spec.build("host", ["sleep", "30"], accounting=False, ephemeral=True)
    with Container(spec) as c:
        if kind == "callable":
            c.start(target=lambda: time.sleep(30))
        else:
            c.start()
        assert _thread_cgroups() == before
        assert c.cgroup is not None
        members = c.process.pid
        for procs in c.cgroup.join_paths():
            assert members in cgroups.read_pids(procs), procs
        c.kill()
        c.wait()
    assert _thread_cgroups() == before
