"""Detached containers and their lifecycle through the real `hermetic` command:
run -d, ps -a/-q, logs, exec, stop, kill, rm, inspect, wait, and -p."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.request

import pytest

from conftest import run_cli


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, timeout: float = 10.0) -> int:
    """The status of a GET, retried while the server is still starting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def row(listing: str, container_id: str) -> str:
    """The `ps` row of one container: under xdist the other worker's containers are listed too."""
    (found,) = [line for line in listing.splitlines() if line.startswith(container_id[:12] + " ")]
    return found


@pytest.fixture
def names():
    """Names of containers a test starts; `rm -f` of each afterwards, whatever happened."""
    started: list[str] = []
    yield started
    for name in started:
        run_cli("rm", "-f", name)


def test_detached_web_server_lifecycle(names):
    port = _free_port()
    names.append("web")
    began = time.monotonic()
    ran = run_cli("run", "-d", "--name", "web", "-p", f"127.0.0.1:{port}:8000", "host", "python3", "-m", "http.server",
                  "8000")
    assert ran.returncode == 0, ran.stderr
    assert time.monotonic() - began < 10
    container_id = ran.stdout.strip()
    assert len(container_id) == 32

    assert _get(f"http://127.0.0.1:{port}/") == 200
    web = row(run_cli("ps").stdout, container_id).split()
    assert web[1] == "web" and "running" in web and web[-1] == f"127.0.0.1:{port}->8000/tcp", web
    ids = run_cli("ps", "-q").stdout.split()
    assert container_id[:12] in ids and all(len(i) == 12 and set(i) <= set("0123456789abcdef") for i in ids), ids

    logs = run_cli("logs", "web")
    assert logs.returncode == 0 and '"GET / HTTP/1.1" 200' in logs.stdout, logs
    assert run_cli("logs", "--tail", "1", "web").stdout.count("\n") == 1

    ran = run_cli("exec", "-e", "GREETING=hello", "web", "sh", "-c", "echo $GREETING from $(hostname); exit 3")
    assert (ran.returncode, ran.stdout) == (3, "hello from web\n"), ran

    info = json.loads(run_cli("inspect", "web").stdout)[0]
    assert info["id"] == container_id and info["status"] == "running" and info["pid"] > 1
    assert info["spec"]["init"] is True and info["ports"] == [
        {"host_ip": "127.0.0.1", "host_port": port, "container_port": 8000, "protocol": "tcp"}]

    began = time.monotonic()
    ran = run_cli("stop", "-t", "5", "web")
    assert ran.returncode == 0 and "killed" not in ran.stderr, ran
    assert time.monotonic() - began < 5  # --init passed SIGTERM on: no SIGKILL needed
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)

    assert "web" not in run_cli("ps").stdout
    web_row = row(run_cli("ps", "-a").stdout, container_id)
    assert " web " in web_row and "exited (143)" in web_row and "SIGTERM" in web_row, web_row
    assert run_cli("wait", "web").stdout.strip() == "143"
    assert '"GET / HTTP/1.1" 200' in run_cli("logs", "web").stdout  # the log outlives the container

    ran = run_cli("rm", "web")
    assert ran.returncode == 0, ran.stderr
    assert "web" not in run_cli("ps", "-a").stdout
    names.clear()


def test_rm_refuses_a_running_container_without_force(names):
    names.append("sleeper")
    assert run_cli("run", "-d", "--name", "sleeper", "host", "sleep", "300").returncode == 0
    ran = run_cli("rm", "sleeper")
    assert ran.returncode == 125 and "is running" in ran.stderr and "rm -f" in ran.stderr
    ran = run_cli("run", "-d", "--name", "sleeper", "host", "true")
    assert ran.returncode == 125 and "already has that name" in ran.stderr
    assert run_cli("rm", "-f", "sleeper").returncode == 0
    assert "sleeper" not in run_cli("ps", "-a").stdout


def test_stop_kills_a_pid1_that_ignores_sigterm_after_the_grace_time(names):
    names.append("stubborn")
    # No --init here: a trap that ignores TERM, so only the SIGKILL after the grace time ends it.
    ran = run_cli("run", "-d", "--name", "stubborn", "host", "sh", "-c", "trap '' TERM; sleep 300")
    assert ran.returncode == 0, ran.stderr
    began = time.monotonic()
    ran = run_cli("stop", "-t", "1", "stubborn")
    took = time.monotonic() - began
    assert ran.returncode == 0 and "killed" in ran.stderr, ran
    assert 1 <= took < 10
    assert "exited (137)" in run_cli("ps", "-a").stdout


def test_kill_wait_and_exit_status(names):
    names.append("short")
    assert run_cli("run", "-d", "--name", "short", "host", "sh", "-c", "echo out; echo err >&2; exit 7").returncode == 0
    assert run_cli("wait", "short").stdout.strip() == "7"
    assert run_cli("logs", "short").stdout == "out\nerr\n"
    assert "exited (7)" in run_cli("ps", "-a").stdout
    ran = run_cli("kill", "short")
    assert ran.returncode == 125 and "not running" in ran.stderr
    ran = run_cli("exec", "short", "true")
    assert ran.returncode == 125 and "not running" in ran.stderr

    names.append("hup")
    assert run_cli("run", "-d", "--name", "hup", "host", "sleep", "300").returncode == 0
    assert run_cli("kill", "-s", "HUP", "hup").returncode == 0
    assert run_cli("wait", "hup").stdout.strip() == "129"
    ran = run_cli("kill", "-s", "NOPE", "hup")
    assert ran.returncode == 125 and "not a signal" in ran.stderr


def test_detached_rm_flag_removes_at_exit(names):
    ran = run_cli("run", "-d", "--rm", "host", "true")
    assert ran.returncode == 0
    container_id = ran.stdout.strip()
    deadline = time.monotonic() + 10
    while container_id[:12] in run_cli("ps", "-a", "-q").stdout:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_bad_input_is_one_line(names):
    for args, words in [
        (("run", "-d", "-p", "80:x", "host", "true"), "HOST_PORT:]CONTAINER_PORT"),
        (("run", "-d", "-p", "8080:80/sctp", "host", "true"), "only tcp and udp"),
        (("logs", "nosuch"), "no container named 'nosuch'"),
        (("stop", "nosuch"), "no container named"),
        (("exec", "nosuch"), "no command given"),
        (("run", "-d", "--name", "web", "--commit", "x", "host", "true"), "hermetic commit NAME REF"),
    ]:
        ran = run_cli(*args)
        assert ran.returncode in (125, 127), (args, ran)
        assert ran.stderr.count("\n") == 1 and words in ran.stderr, (args, ran.stderr)
        assert "Traceback" not in ran.stderr


def test_publish_on_a_foreground_run():
    port = _free_port()
    script = ("import http.server, threading, urllib.request, sys\n"
              "server = http.server.HTTPServer(('127.0.0.1', 8000), http.server.SimpleHTTPRequestHandler)\n"
              "server.timeout = 20\nserver.handle_request()\n")
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    proc = subprocess.Popen([sys.executable, "-m", "pytest_hermetic", "run", "-p", f"{port}:8000", "host", "python3",
                             "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")
    try:
        assert _get(f"http://127.0.0.1:{port}/") == 200
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        proc.wait()


def test_a_missing_command_of_a_detached_run_shows_in_its_status_and_log(names):
    # Under -d's --init the command is PID 2: its exec fails after the start,
    # so the run returns the id and the failure is the container's exit (127).
    names.append("missing")
    assert run_cli("run", "-d", "--name", "missing", "host", "/nonexistent/cmd").returncode == 0
    assert run_cli("wait", "missing").stdout.strip() == "127"
    assert "/nonexistent/cmd: command not found" in run_cli("logs", "missing").stdout


def test_rootless_lifecycle(test_user):
    """As an unprivileged user: run -d, logs, exec, stop, ps -a, rm work
    (tests/test_rootless_exec.py has exec's and -p's details)."""
    try:
        ran = run_cli("run", "-d", "--name", "quiet", "host", "sh", "-c", "echo up; exec sleep 300", user=test_user)
        assert ran.returncode == 0, ran.stderr
        assert "running" in run_cli("ps", user=test_user).stdout
        deadline = time.monotonic() + 10
        while run_cli("logs", "quiet", user=test_user).stdout != "up\n":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        ran = run_cli("exec", "quiet", "cat", "/proc/2/comm", user=test_user)
        assert ran.returncode == 0 and ran.stdout == "sleep\n", ran  # the command, PID 2 under -d's --init
        began = time.monotonic()
        assert run_cli("stop", "quiet", user=test_user).returncode == 0
        assert time.monotonic() - began < 5
        assert "exited (143)" in run_cli("ps", "-a", user=test_user).stdout
        assert run_cli("rm", "quiet", user=test_user).returncode == 0
        assert "quiet" not in run_cli("ps", "-a", user=test_user).stdout
    finally:
        run_cli("rm", "-f", "quiet", user=test_user)


def test_publish_a_bridged_detached_container(names):
    port = _free_port()
    names.append("bridged")
    ran = run_cli("run", "-d", "--name", "bridged", "--net", "-p", f"{port}:8000", "host", "python3", "-m",
                  "http.server", "8000")
    assert ran.returncode == 0, ran.stderr
    assert _get(f"http://127.0.0.1:{port}/") == 200
    info = json.loads(run_cli("inspect", "bridged").stdout)[0]
    assert info["network"] == "bridge" and info["address"].count(".") == 3
    assert run_cli("rm", "-f", "bridged").returncode == 0
    names.clear()


def test_gc_keeps_a_running_detached_container_and_clears_an_exited_one(tmp_path):
    # A store and state root of its own: a gc of the session's would also clear the exited
    # containers other tests still read (another xdist worker's), and theirs could clear "done" first.
    env = {"HERMETIC_STORE": str(tmp_path / "store"), "HERMETIC_STATE": str(tmp_path / "state")}
    try:
        assert run_cli("run", "-d", "--name", "alive", "host", "sleep", "300", env=env).returncode == 0
        assert run_cli("run", "-d", "--name", "done", "host", "true", env=env).returncode == 0
        assert run_cli("wait", "done", env=env).stdout.strip() == "0"
        ran = run_cli("gc", env=env)
        assert ran.returncode == 0 and "(done)" in ran.stdout and "(alive)" not in ran.stdout, ran
        ps = run_cli("ps", "-a", env=env).stdout
        assert "alive" in ps and "running" in ps and "done" not in ps
        ran = run_cli("exec", "alive", "sh", "-c", "echo still here", env=env)
        assert ran.stdout == "still here\n"  # gc took nothing from under it (cgroup, layers, state)
    finally:
        for name in ("alive", "done"):
            run_cli("rm", "-f", name, env=env)
    assert os.listdir(tmp_path / "state" / "containers") == []


def test_stop_and_rm_reach_a_foreground_named_run():
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    proc = subprocess.Popen([sys.executable, "-m", "pytest_hermetic", "run", "--name", "fore", "host", "sleep", "300"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")
    try:
        deadline = time.monotonic() + 10
        while "fore" not in run_cli("ps").stdout:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        ran = run_cli("rm", "fore")
        assert ran.returncode == 125 and "is running" in ran.stderr
        ran = run_cli("stop", "-t", "1", "fore")  # sleep as PID 1 has no TERM handler: killed after 1 s
        assert ran.returncode == 0 and "killed" in ran.stderr, ran
        assert proc.wait(timeout=10) == 137
        assert "fore" not in run_cli("ps", "-a").stdout  # a foreground run is removed when it ends
    finally:
        proc.kill()
        proc.wait()


def test_logs_follow_ends_with_the_container(names):
    names.append("chatty")
    ran = run_cli("run", "-d", "--name", "chatty", "host", "sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.2; done")
    assert ran.returncode == 0, ran.stderr
    began = time.monotonic()
    ran = run_cli("logs", "-f", "chatty", timeout=20)
    assert ran.returncode == 0 and ran.stdout == "line 1\nline 2\nline 3\n", ran
    assert time.monotonic() - began < 10
    assert run_cli("logs", "--tail", "2", "chatty").stdout == "line 2\nline 3\n"
