"""`run -it`, `exec -it`, `-i` and `exec -u`, driven through a real pty as a user at a terminal would.

Each test gives `hermetic` an outer pty of its own (its controlling
terminal, with a window size) and types into the master: what the CLI makes
of it must be what `docker run -it` makes of it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pwd
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from typing import Callable

import pytest

from conftest import ROOT, run_cli

PROMPT = "READY> "


def _cli_env(user: str | None) -> tuple[list[str], str, dict[str, str]]:
    """The command line prefix, interpreter and environment `run_cli` would use (conftest.py)."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
           "PYTHONPATH": ROOT, "TERM": "xterm"}
    for key in ("HERMETIC_STORE", "HERMETIC_STATE", "HERMETIC_OFFLINE"):
        if key in os.environ and (user is None or key == "HERMETIC_OFFLINE"):
            env[key] = os.environ[key]
    if user is None:
        return [], sys.executable, env
    entry = pwd.getpwnam(user)
    home = os.path.join(os.path.dirname(os.environ["HERMETIC_STATE"]), f"home-{entry.pw_uid}")
    os.makedirs(home, exist_ok=True)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    env.update(HOME=home, XDG_DATA_HOME=f"{home}/data", HERMETIC_STATE=f"{home}/state", USER=user)
    prefix = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups"]
    return prefix, "/usr/bin/python3", env


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _make_controlling() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """`hermetic ARGS` on an outer pty: `send` keys, `expect` output, `resize`, `wait`."""

    def __init__(self, *args: str, rows: int = 40, cols: int = 100, user: str | None = None) -> None:
        self.master, self.slave = os.openpty()
        self.resize(rows, cols)
        self.before = termios.tcgetattr(self.slave)
        prefix, python, env = _cli_env(user)
        if user is not None:
            os.fchown(self.slave, pwd.getpwnam(user).pw_uid, -1)
        self.proc = subprocess.Popen([*prefix, python, "-m", "pytest_hermetic", *args], stdin=self.slave,
                                     stdout=self.slave, stderr=self.slave, start_new_session=True,
                                     preexec_fn=_make_controlling, env=env, cwd="/")
        self.output = ""

    def resize(self, rows: int, cols: int) -> None:
        # The kernel sends SIGWINCH to the outer terminal's foreground group: the CLI.
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, pattern: str, timeout: float = 15) -> re.Match:
        """Read until `pattern` matches the output since the last match; the match."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.output, re.DOTALL)
            if found:
                self.output = self.output[found.end():]
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} not seen within {timeout} s; output so far: {self.output!r}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.2))
            if ready:
                try:
                    self.output += os.read(self.master, 65536).decode(errors="replace")
                except OSError as exc:
                    if exc.errno != errno.EIO:
                        raise

    def command(self, line: str, timeout: float = 15) -> str:
        """Type `line` at the prompt; what it printed before the next prompt."""
        self.send(line + "\r")
        return self.expect(re.escape(line) + r"\r\n(.*?)" + re.escape(PROMPT), timeout).group(1)

    def until(self, line: str, check: "Callable[[str], bool]", timeout: float = 10) -> str:
        """Type `line` again until what it prints passes `check` (a shell
        learns of its jobs' ends asynchronously)."""
        deadline = time.monotonic() + timeout
        while not check(out := self.command(line)):
            if time.monotonic() > deadline:
                raise AssertionError(f"{line!r} still printed {out!r} after {timeout} s")
            time.sleep(0.1)
        return out

    def start(self, line: str) -> None:
        """Type `line` and wait until it runs as the terminal's foreground process group."""
        self.send(line + "\r")
        self.expect(re.escape(line) + "\r\n")
        self.foreground(line)

    def foreground(self, cmdline: str, timeout: float = 15) -> None:
        """Wait until a process of the container running `cmdline` leads its
        terminal's foreground group and runs (read from the host's /proc)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for pid in _descendants(self.proc.pid):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        argv = f.read().split(b"\0")[:-1]
                    with open(f"/proc/{pid}/stat") as f:
                        fields = f.read().rpartition(")")[2].split()
                except OSError:
                    continue
                state, pgrp, tpgid = fields[0], fields[2], fields[5]
                if b" ".join(argv).decode() == cmdline and pgrp == tpgid and state != "T":
                    return
            time.sleep(0.05)
        raise AssertionError(f"{cmdline!r} did not run in the foreground within {timeout} s; output: {self.output!r}")

    def wait(self, timeout: float = 20) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"the CLI did not end; output: {self.output!r}") from None
        ready, _, _ = select.select([self.master], [], [], 0)
        if ready:
            try:
                self.output += os.read(self.master, 65536).decode(errors="replace")
            except OSError:
                pass
        return code

    def restored(self) -> bool:
        """The outer terminal's modes are those it had before the CLI started."""
        return termios.tcgetattr(self.slave) == self.before

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def terminal():  # noqa: ANN201
    opened: list[Terminal] = []

    def start(*args: str, **kwargs: object) -> Terminal:
        term = Terminal(*args, **kwargs)  # type: ignore[arg-type]
        opened.append(term)
        return term

    yield start
    for term in opened:
        term.close()


def _shell(terminal, *options: str, image: str = "host", shell: str = "sh", user: str | None = None) -> Terminal:
    term = terminal("run", "-it", "-e", f"PS1={PROMPT}", *options, image, shell, user=user)
    term.expect(re.escape(PROMPT))
    return term


def test_run_it_is_a_terminal_of_the_containers_own(terminal):
    term = _shell(terminal)
    assert term.command("tty").strip() == "/dev/pts/0"
    assert term.command("stty size").strip() == "40 100"
    assert term.command("echo $TERM; ls /dev/pts").split() == ["xterm", "0", "ptmx"]
    term.resize(50, 132)  # SIGWINCH to the CLI, TIOCSWINSZ on the container's pty, SIGWINCH there
    deadline = time.monotonic() + 10
    while (size := term.command("stty size").strip()) != "50 132" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert size == "50 132"
    assert not term.restored()  # raw while it runs
    term.send("exit 3\r")
    assert term.wait() == 3  # the exit status comes back
    assert term.restored()


@pytest.mark.parametrize("init", [(), ("--init",)], ids=["pid1", "init"])
def test_ctrl_c_reaches_the_foreground_process_and_the_shell_survives(terminal, init):
    term = _shell(terminal, *init)  # with --init the shell leads the terminal's foreground group, not PID 1
    started = time.monotonic()
    term.start("sleep 100")
    term.send("\x03")
    term.expect(re.escape(PROMPT))
    assert time.monotonic() - started < 10
    assert term.command("echo alive $?").split() == ["alive", "130"]
    term.send("exit\r")
    assert term.wait() == 0
    assert term.restored()


def test_job_control(terminal):
    term = _shell(terminal)
    term.start("sleep 100")
    term.send("\x1a")  # Ctrl-Z
    term.expect(r"Stopped")
    term.expect(re.escape(PROMPT))
    assert "Stopped" in term.command("jobs")
    term.send("fg\r")
    term.expect("sleep 100\r\n")
    term.foreground("sleep 100")
    term.send("\x1a")
    term.expect(re.escape(PROMPT))
    term.command("kill -9 %1")  # (a SIGTERM would wait for a SIGCONT)
    term.until("jobs", lambda out: "Stopped" not in out)
    # Ctrl-\ (SIGQUIT) is a byte for the container's terminal too.
    term.start("sleep 100")
    term.send("\x1c")
    term.expect(re.escape(PROMPT))
    assert term.command("echo $?").strip() == "131"
    term.send("exit\r")
    assert term.wait() == 0


def test_run_it_as_another_user_owns_its_terminal(terminal):
    term = _shell(terminal, "-u", "nobody")
    assert term.command("id -u; stat -c %u $(tty)").split() == ["65534", "65534"]
    term.start("sleep 100")
    term.send("\x1a")
    term.expect(re.escape(PROMPT))
    assert "Stopped" in term.command("jobs")
    term.command("kill -9 %1")
    term.until("jobs", lambda out: "Stopped" not in out)
    term.send("exit\r")
    assert term.wait() == 0


def test_terminal_restored_after_hermetic_kill(terminal):
    name = f"tty-kill-{os.getpid()}"
    term = _shell(terminal, "--name", name)
    assert run_cli("kill", name).returncode == 0
    assert term.wait() == 137
    assert term.restored()


def test_terminal_restored_after_an_engine_error_while_it_runs(terminal):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # The host port is taken before the container starts (runflags): that fails.
        term = terminal("run", "-it", "-p", f"127.0.0.1:{port}:80", "host", "sh")
        assert term.wait() == 125
    assert f"-p 127.0.0.1:{port}:80/tcp: cannot listen" in term.output
    assert term.restored()


def test_terminal_restored_after_a_timeout(terminal):
    term = _shell(terminal, "--timeout", "2")
    assert term.wait() == 137
    assert "killed: timeout after 2 s" in term.output
    assert term.restored()


def test_terminal_restored_after_sighup_and_sigterm_to_the_cli(terminal):
    term = _shell(terminal)
    term.proc.send_signal(signal.SIGHUP)  # its terminal went away: the container's hangs up, the shell ends
    assert term.wait() != 137  # (dash, at EOF of a hung-up terminal, says 2; not killed)
    assert term.restored()
    term = _shell(terminal)
    term.proc.send_signal(signal.SIGTERM)  # to PID 1, which ignores it (an interactive shell) ...
    time.sleep(0.3)
    assert term.proc.poll() is None
    term.proc.send_signal(signal.SIGTERM)  # ... and a second one kills the container
    assert term.wait() == 137
    assert term.restored()


def test_it_without_a_terminal_is_one_line():
    ran = run_cli("run", "-it", "host", "true", input="")
    assert ran.returncode == 125
    assert "not a terminal" in ran.stderr and ran.stderr.count("\n") == 1


def test_t_without_i_allocates_a_terminal_without_a_caller_one():
    ran = run_cli("run", "-t", "host", "sh", "-c", "tty; test -t 0 && echo in-tty", input="ignored\n")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["/dev/pts/0", "in-tty"]


def test_i_pipes_stdin():
    assert run_cli("run", "-i", "host", "cat", input="hi\n").stdout == "hi\n"
    ran = run_cli("run", "-i", "host", "sh", "-c", "read a; read b; echo $b $a; exit 4", input="one\ntwo\n")
    assert (ran.stdout, ran.returncode) == ("two one\n", 4)


# The container looks at every descriptor of every process it can see, its
# /dev/tty, and types into its terminal with TIOCSTI.
PROBE = r"""
import fcntl, json, os, sys, termios
seen = []
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for name in names:
            try:
                st = os.stat(f"/proc/{pid}/fd/{name}")
            except OSError:
                continue
            seen.append([st.st_dev, st.st_rdev, os.readlink(f"/proc/{pid}/fd/{name}")])
tty = os.open("/dev/tty", os.O_RDWR)
own = os.fstat(0)
injected = []
for fd in (0, 1, 2, tty):
    try:
        for byte in b"typed\n":
            fcntl.ioctl(fd, termios.TIOCSTI, bytes([byte]))
        injected.append(fd)
    except OSError as exc:
        injected.append(str(exc))
line = sys.stdin.readline().strip() if injected and isinstance(injected[0], int) else ""
print(json.dumps({"fds": seen, "tty": [own.st_dev, own.st_rdev], "injected": injected, "line": line}))
"""


def _probe_result(output: str) -> dict:
    return json.loads(next(line for line in output.splitlines() if line.startswith("{")))


@pytest.mark.parametrize("flags", ["-it", "-t"])
def test_the_container_cannot_reach_the_callers_terminal(terminal, flags):
    term = terminal("run", flags, "host", "python3", "-c", PROBE)
    assert term.wait() == 0, term.output
    found = _probe_result(term.output)
    outer = os.fstat(term.slave)
    terminals = [entry for entry in found["fds"] if os.major(entry[1]) in (4, 5, *range(136, 144))]
    assert terminals, found
    # Every terminal it holds is its own pts (another devpts), never the caller's.
    assert all(entry[0] != outer.st_dev for entry in terminals), found
    assert all(entry[0] == found["tty"][0] and entry[1] == found["tty"][1] for entry in terminals), found
    # TIOCSTI works on its own terminal, so it typed into itself ...
    assert found["line"] == "typed", found
    # ... and nothing reached the caller's: no input is waiting on the outer pty.
    waiting = struct.unpack("i", fcntl.ioctl(term.slave, termios.FIONREAD, b"\0\0\0\0"))[0]
    assert waiting == 0
    assert term.restored()


def test_busybox_sh_gets_a_terminal(terminal, busybox_image):
    term = _shell(terminal, image=busybox_image)
    assert term.command("tty").strip() == "/dev/pts/0"
    assert term.command("stty size").strip() == "40 100"
    term.start("sleep 100")
    term.send("\x03")
    term.expect(re.escape(PROMPT))
    term.send("exit 5\r")
    assert term.wait() == 5
    assert term.restored()


def test_rootless_run_it(terminal, test_user):
    term = _shell(terminal, user=test_user)
    assert term.command("tty").strip() == "/dev/pts/0"
    assert term.command("id -u").strip() == "0"
    term.start("sleep 100")
    term.send("\x03")
    term.expect(re.escape(PROMPT))
    term.send("exit 2\r")
    assert term.wait() == 2
    assert term.restored()


@pytest.fixture
def detached():  # noqa: ANN201
    name = f"tty-exec-{os.getpid()}"
    ran = run_cli("run", "-d", "--name", name, "host", "sleep", "1000")
    assert ran.returncode == 0, ran.stderr
    yield name
    run_cli("rm", "-f", name)


def test_exec_it_into_a_detached_container(terminal, detached):
    term = terminal("exec", "-it", "-e", f"PS1={PROMPT}", detached, "sh")
    term.expect(re.escape(PROMPT))
    assert term.command("tty").strip() == "/dev/pts/0"
    assert term.command("stty size").strip() == "40 100"
    assert term.command("cat /proc/1/cmdline | tr '\\0' ' '").split()[-2:] == ["sleep", "1000"]
    term.start("sleep 100")
    term.send("\x03")
    term.expect(re.escape(PROMPT))
    term.send("exit 7\r")
    assert term.wait() == 7
    assert term.restored()
    # SIGTERM to `hermetic exec -it`: the shell's terminal hangs up, it ends, ours is restored.
    term = terminal("exec", "-it", "-e", f"PS1={PROMPT}", detached, "sh")
    term.expect(re.escape(PROMPT))
    term.proc.send_signal(signal.SIGTERM)
    term.wait()
    assert term.restored()
    assert "sh" not in run_cli("exec", detached, "ps", "-o", "comm=").stdout.split()


def test_exec_i_and_u(detached):
    assert run_cli("exec", "-i", detached, "cat", input="piped\n").stdout == "piped\n"
    ran = run_cli("exec", "-u", "nobody", detached, "sh", "-c", "id -u; id -g; grep CapEff /proc/self/status")
    assert ran.returncode == 0, ran.stderr
    uid, gid, caps = ran.stdout.splitlines()
    assert (uid, gid) == ("65534", "65534")
    assert caps.split()[1] == "0" * 16  # a non-root user has no capabilities, as under `run -u`
    ran = run_cli("exec", "-u", "1234:5678", detached, "id")
    assert "uid=1234" in ran.stdout and "gid=5678" in ran.stdout, ran.stderr
    ran = run_cli("exec", "-u", "no-such-user", detached, "id")
    assert ran.returncode == 125 and "no-such-user" in ran.stderr and ran.stderr.count("\n") == 1


@pytest.mark.parametrize("rootless", [False, True], ids=["root", "rootless"])
def test_run_dit_keeps_a_shell_waiting_with_its_terminal_in_the_log(rootless, request):
    user = request.getfixturevalue("test_user") if rootless else None
    name = f"tty-dit-{os.getpid()}"
    try:
        ran = run_cli("run", "-dit", "--name", name, "-e", f"PS1={PROMPT}", "host", "sh", user=user)
        assert ran.returncode == 0, ran.stderr
        ran = run_cli("exec", name, "readlink", "/proc/2/fd/0", user=user)
        assert ran.stdout.strip() == "/dev/pts/0", ran  # (PID 1: --init)
        deadline = time.monotonic() + 10
        while PROMPT not in run_cli("logs", name, user=user).stdout and time.monotonic() < deadline:
            time.sleep(0.1)
        assert PROMPT in run_cli("logs", name, user=user).stdout  # the shell's prompt, written to its terminal
        time.sleep(0.5)
        assert json.loads(run_cli("inspect", name, user=user).stdout)[0]["status"] == "running"
    finally:
        run_cli("rm", "-f", name, user=user)


def test_full_screen_programs(terminal):
    term = _shell(terminal)
    term.send("top\r")
    term.expect(r"Tasks:.*\n.*sh")  # top's screen, with the processes of the container
    term.send("q")
    term.expect(re.escape(PROMPT))
    term.send("seq 100 | less\r")
    term.expect(r"\n39\r\n:")  # a screenful (40 rows: 39 lines and less's prompt)
    term.send("q")
    term.expect(re.escape(PROMPT))
    term.send("exit\r")
    assert term.wait() == 0
    assert term.restored()


def test_run_di_keeps_stdin_open_and_run_d_does_not():
    name = f"tty-di-{os.getpid()}"
    try:
        assert run_cli("run", "-di", "--name", name, "host", "cat").returncode == 0
        assert run_cli("run", "-d", "--name", f"{name}-no", "host", "cat").returncode == 0
        time.sleep(1)
        assert json.loads(run_cli("inspect", name).stdout)[0]["status"] == "running"
        assert run_cli("wait", f"{name}-no").stdout.strip() == "0"  # EOF at once: /dev/null
    finally:
        run_cli("rm", "-f", name, f"{name}-no")
