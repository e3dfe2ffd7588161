"""`hermetic top` and `hermetic stats` of running detached containers
(read from their cgroup: v1 on this host, v2 in the VM job of scripts/test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_cli

BUSY = "import time\nx = bytearray(48 * 2**20)\nwhile True: pass"


@pytest.fixture
def busy():
    """A detached container with a 64 MiB limit running a busy loop that holds 48 MiB."""
    name = f"busy-{os.getpid()}"
    ran = run_cli("run", "-d", "--name", name, "--mem", "64m", "host", "sh", "-c",
                  f"python3 -c '{BUSY}' & exec sleep 300")
    assert ran.returncode == 0, ran.stderr
    yield name
    run_cli("rm", "-f", name)


def _top(name: str) -> list[dict]:
    ran = run_cli("top", "--format", "json", name)
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout)


def test_top_lists_the_containers_processes_with_both_pids(busy):
    deadline = time.monotonic() + 10
    while True:  # (until sh has forked and both have exec'd their commands)
        found = _top(busy)
        if [p["command"].split(" ")[0] for p in found[1:]] == ["sleep", "python3"]:
            break
        assert time.monotonic() < deadline, found
        time.sleep(0.1)
    assert [p["container_pid"] for p in found[:3]] == [1, 2, 3]
    assert found[1]["command"] == "sleep 300" and found[2]["command"].startswith("python3 -c import time")
    for p in found:
        with open(f"/proc/{p['pid']}/status") as f:
            nspid = next(line.split()[1:] for line in f if line.startswith("NSpid:"))
        assert nspid == [str(p["pid"]), str(p["container_pid"])]  # the host's pid, then the container's
        assert p["uid"] == 0 and p["host_uid"] == 0
    exec_ = subprocess.Popen([sys.executable, "-m", "pytest_hermetic", "exec", "-u", "4321", busy, "sleep", "60"],
                             env={**os.environ, "PYTHONPATH": ROOT}, cwd="/")
    try:
        deadline = time.monotonic() + 10
        while True:
            found = _top(busy)
            if any(p["command"] == "sleep 60" for p in found):
                break
            assert time.monotonic() < deadline, found
            time.sleep(0.1)
        execd = next(p for p in found if p["command"] == "sleep 60")
        assert execd["uid"] == 4321 and execd["container_pid"] > 3
        assert all(p["container_pid"] < 1000 for p in found)  # the exec's relay, outside, is not listed
        table = run_cli("top", busy).stdout.splitlines()
        assert table[0].split() == ["PID", "CONTAINER", "PID", "UID", "HOST", "UID", "TIME", "COMMAND"]
        assert any(line.split()[1:3] == [str(execd["container_pid"]), "4321"] for line in table[1:])
    finally:
        exec_.kill()
        exec_.wait()


def test_stats_reads_cpu_memory_and_pids_from_the_cgroup(busy):
    time.sleep(1)  # the loop has its 48 MiB
    ran = run_cli("stats", "--no-stream", "--format", "json", busy)
    assert ran.returncode == 0, ran.stderr
    [reading] = json.loads(ran.stdout)
    assert reading["name"] == busy and reading["source"].startswith("cgroup")
    assert reading["cpu_percent"] > 5  # a busy loop, even on a loaded machine
    assert 40 * 2**20 < reading["memory"] <= 64 * 2**20
    assert reading["memory_limit"] == 64 * 2**20
    assert reading["pids"] >= 3 and reading["pids_limit"] is not None
    table = run_cli("stats", "--no-stream").stdout.splitlines()
    assert table[0].split()[:4] == ["CONTAINER", "ID", "NAME", "CPU"]
    row = next(line for line in table if busy in line)
    assert "/ 67.1 MB" in row  # 64 MiB, in docker's decimal units


def test_stats_streams_until_interrupted(busy):
    proc = subprocess.Popen([sys.executable, "-m", "pytest_hermetic", "stats", busy], stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": ROOT}, cwd="/", text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60  # (a slow machine, the VM job's, takes seconds to start Python)
        while sum(busy in line for line in lines) < 2:  # a reading each second, until stopped
            assert time.monotonic() < deadline and proc.poll() is None, lines
            lines.append(proc.stdout.readline())  # type: ignore[union-attr]
        assert sum("CONTAINER ID" in line for line in lines) >= 2, lines
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert proc.returncode == -15


def test_top_and_stats_of_what_is_not_running():
    name = f"done-{os.getpid()}"
    try:
        assert run_cli("run", "-d", "--name", name, "host", "true").returncode == 0
        assert run_cli("wait", name).stdout.strip() == "0"
        for verb in ("top", "stats"):
            ran = run_cli(verb, *(["--no-stream"] if verb == "stats" else []), name)
            assert ran.returncode == 125 and "is not running (exited with status 0)" in ran.stderr, ran
            assert ran.stderr.count("\n") == 1
        ran = run_cli("top", "no-such-container")
        assert ran.returncode == 125 and "no container named" in ran.stderr
    finally:
        run_cli("rm", "-f", name)
