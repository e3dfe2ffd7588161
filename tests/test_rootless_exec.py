"""`hermetic exec` and `-p` of rootless detached containers, as the
unprivileged user that owns them: its process joins the container's user
namespace first, then the others (runtime/enter.py `owner_namespaces`), and
gets what the container's own processes have, nothing more."""

from __future__ import annotations

import json
import os
import re
import socket
import time
import urllib.request

import pytest

from conftest import run_cli
from test_tty import PROMPT, Terminal

NAMESPACES = ("user", "mnt", "uts", "ipc", "net", "cgroup", "pid")


@pytest.fixture
def owned(test_user):
    """Start rootless detached containers as the test user; `rm -f` them afterwards."""
    names: list[str] = []

    def start(name: str, *args: str) -> str:
        names.append(name)
        ran = run_cli("run", "-d", "--name", name, *args, user=test_user)
        assert ran.returncode == 0, ran.stderr
        return name

    yield start
    for name in names:
        run_cli("rm", "-f", name, user=test_user)


def _pid1(name: str, user: str) -> int:
    return json.loads(run_cli("inspect", name, user=user).stdout)[0]["pid"]


def _status(text: str) -> dict[str, str]:
    return {key: value.strip() for key, _, value in (line.partition(":") for line in text.splitlines())}


def test_exec_with_env_workdir_user_and_exit_status(owned, test_user):
    name = owned(f"rl-exec-{os.getpid()}", "-e", "FROM_RUN=1", "host", "sleep", "300")
    ran = run_cli("exec", "-e", "X=y", "-w", "/tmp", name, "sh", "-c", "id -u; pwd; echo $X $FROM_RUN; exit 3",
                  user=test_user)
    assert ran.returncode == 3, ran.stderr
    assert ran.stdout.split("\n")[:3] == ["0", "/tmp", "y 1"]
    ran = run_cli("exec", "-u", "1234:5678", name, "sh", "-c", "id -u; id -g; grep CapEff /proc/self/status",
                  user=test_user)
    assert ran.stdout.split()[:2] == ["1234", "5678"] and ran.stdout.split()[-1] == "0" * 16, ran
    assert run_cli("exec", "-i", name, "cat", input="piped\n", user=test_user).stdout == "piped\n"
    ran = run_cli("exec", name, "/no/such/cmd", user=test_user)
    assert ran.returncode == 127 and "command not found" in ran.stderr


def test_an_exec_process_has_what_pid_1_has_and_nothing_more(owned, test_user):
    """Red team: the exec'd process is in PID 1's namespaces (read by root
    from the host), with its capabilities, seccomp filter and
    no_new_privs, none of the caller's descriptors, and reaches neither the
    host's processes nor its own caller."""
    name = owned(f"rl-red-{os.getpid()}", "host", "sleep", "300")
    pid1 = _pid1(name, test_user)
    script = ("for n in " + " ".join(NAMESPACES) + "; do readlink /proc/self/ns/$n; done; "
              "grep -E '^(CapBnd|CapEff|CapPrm|CapInh|CapAmb|NoNewPrivs|Seccomp|Seccomp_filters|Uid|Gid):' "
              "/proc/self/status; echo FDS $(ls /proc/self/fd | wc -l); echo PIDS $(cd /proc && echo [0-9]*); "
              "cat /proc/1/environ >/dev/null 2>&1 && echo PID1-READABLE; "
              "echo PPID $PPID; echo done")
    ran = run_cli("exec", name, "sh", "-c", script, user=test_user)
    assert ran.returncode == 0 and ran.stdout.endswith("done\n"), ran
    lines = ran.stdout.splitlines()
    assert lines[:len(NAMESPACES)] == [os.readlink(f"/proc/{pid1}/ns/{n}") for n in NAMESPACES]
    with open(f"/proc/{pid1}/status") as f:
        theirs = _status(f.read())
    mine = _status("\n".join(lines[len(NAMESPACES):]))
    for key in ("CapBnd", "CapEff", "CapPrm", "CapInh", "CapAmb", "NoNewPrivs", "Seccomp", "Seccomp_filters"):
        assert mine[key] == theirs[key], (key, mine, theirs)
    assert mine["Uid"].split()[0] == "0" and mine["Seccomp"] == "2" and mine["NoNewPrivs"] == "1"
    assert "FDS 4" in lines  # 0, 1, 2 and ls's own directory: nothing of the caller's
    pids = [int(pid) for pid in next(line for line in lines if line.startswith("PIDS ")).split()[1:]]
    assert {1, 2} <= set(pids) and len(pids) <= 6 and max(pids) < 50, pids  # the container's PID namespace only
    assert "PID1-READABLE" not in lines  # the engine's PID 1 stays closed, as to the container's own processes
    assert "PPID 0" in lines  # its relay, outside the PID namespace, is not its to see


def test_exec_refuses_namespaces_a_container_made_for_itself(owned, test_user):
    """Red team: a container whose command sits in a user namespace it made
    itself cannot make `exec` join that one (it is not the container's)."""
    name = owned(f"rl-nested-{os.getpid()}", "--security-opt", "seccomp=unconfined", "host",
                 "unshare", "-Ur", "sleep", "300")
    deadline = time.monotonic() + 10
    while True:
        ran = run_cli("exec", name, "readlink", "/proc/self/ns/user", user=test_user)
        if "no process of the container" in ran.stderr or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # (until unshare has made its namespace and exec'd sleep)
    assert ran.returncode == 125 and "no process of the container" in ran.stderr, ran
    assert ran.stderr.count("\n") == 1


def test_exec_it_through_a_real_pty(owned, test_user):
    name = owned(f"rl-tty-{os.getpid()}", "host", "sleep", "300")
    term = Terminal("exec", "-it", "-e", f"PS1={PROMPT}", name, "sh", user=test_user)
    try:
        term.expect(re.escape(PROMPT))
        assert term.command("tty").strip() == "/dev/pts/0"
        assert term.command("stty size").strip() == "40 100"
        assert term.command("id -u").strip() == "0"
        term.start("sleep 100")
        term.send("\x03")  # Ctrl-C to the foreground process, the shell stays
        term.expect(re.escape(PROMPT))
        term.send("exit 5\r")
        assert term.wait() == 5
        assert term.restored()
    finally:
        term.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_publish_without_a_network_rootless(owned, test_user):
    port = _free_port()
    name = owned(f"rl-web-{os.getpid()}", "-p", f"127.0.0.1:{port}:8000", "host", "python3", "-m", "http.server",
                 "8000")
    deadline = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                assert response.status == 200
                break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert '"GET / HTTP' in run_cli("logs", name, user=test_user).stdout
    assert run_cli("port", name, user=test_user).stdout.strip() == f"8000/tcp -> 127.0.0.1:{port}"
    [listed] = [c for c in json.loads(run_cli("ps", "--format", "json", user=test_user).stdout) if c["name"] == name]
    assert listed["ports"] == [{"host_ip": "127.0.0.1", "host_port": port, "container_port": 8000, "protocol": "tcp"}]
    assert run_cli("rm", "-f", name, user=test_user).returncode == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    left = [pid for pid in os.listdir("/proc") if pid.isdigit() and name.encode() in _cmdline(pid)]
    assert not left, left  # supervisor, socket helper, container: all gone


def _cmdline(pid: str) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def test_top_and_stats_of_a_rootless_container_without_a_cgroup(owned, test_user):
    """No delegated cgroup: top finds its processes by PID namespace, stats adds theirs up."""
    import pwd

    name = owned(f"rl-top-{os.getpid()}", "-u", "1000", "host", "sh", "-c", "sleep 301 & exec sleep 300")
    deadline = time.monotonic() + 10
    while True:  # (until sh has forked and both have exec'd sleep)
        found = json.loads(run_cli("top", "--format", "json", name, user=test_user).stdout)
        if sorted(p["command"] for p in found[1:]) == ["sleep 300", "sleep 301"]:
            break
        assert time.monotonic() < deadline, found
        time.sleep(0.1)
    uid = pwd.getpwnam(test_user).pw_uid
    assert [p["container_pid"] for p in found] == [1, 2, 3]
    assert {p["uid"] for p in found[1:]} == {1000} and all(p["host_uid"] not in (0, uid) for p in found[1:])
    ran = run_cli("stats", "--no-stream", "--format", "json", name, user=test_user)
    [reading] = json.loads(ran.stdout)
    assert reading["source"] == "processes" and reading["pids"] == 3 and reading["memory_limit"] is None
    assert reading["memory"] > 0
