"""Every container has a session and process group of its own: `kill(0, sig)`
(what `os.kill(os.getppid(), sig)` becomes in a container, where getppid()
is 0) and killpg of its own group reach nothing outside.

Each attack runs under a sentinel, a process in a session of its own that
would die if a container's signal reached it (so a failed containment
kills the sentinel, not this pytest)."""

from __future__ import annotations

import os
import signal
import textwrap

from attack import HOST_PYTHON, inner_session, marker_options, needs_unprivileged_python, sentinel, spec_options, unconfined

# Every way a process names "my process group": kill 0, killpg of its own
# group, kill(getppid()) where getppid() is 0.  SIGTERM first (a shell or
# pytest that gets it dies), then SIGKILL.
ATTACK = ("import os, signal\n"
          "print('sid', os.getsid(0), 'pgid', os.getpgid(0), 'ppid', os.getppid(), flush=True)\n"
          "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
          "os.kill(0, signal.SIGTERM)\n"
          "if os.getpgid(0) > 1:\n"
          "    os.killpg(os.getpgid(0), signal.SIGTERM)  # (killpg(1) would be kill(-1): all but PID 1)\n"
          "if os.getppid() == 0:\n"
          "    os.kill(os.getppid(), signal.SIGTERM)\n"
          "os.kill(0, signal.SIGKILL)\n")


def _cli_under_sentinel(*options: str, user: str | None = None) -> str:
    argv = ["run", *unconfined(), *options, "host", HOST_PYTHON, "-c", ATTACK]
    return textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(os.path.dirname(__file__))!r})
        from conftest import run_cli
        ran = run_cli(*{argv!r}, user={user!r})
        print("CONTAINER", ran.returncode, ran.stdout.strip(), ran.stderr.strip(), flush=True)
    """)


def _assert_survived(ran, container_code: str = "137") -> None:  # noqa: ANN001
    assert "SENTINEL-ALIVE" in ran.stdout, (ran.returncode, ran.stdout, ran.stderr)
    assert f"CONTAINER {container_code} " in ran.stdout, ran.stdout  # the container killed its own group


def test_kill_zero_from_a_container_spares_its_caller():
    ran = sentinel(_cli_under_sentinel())
    _assert_survived(ran, "0")  # (a PID 1 ignores even SIGKILL from its own namespace)
    assert "sid 1 pgid 1 ppid 0" in ran.stdout  # PID 1 leads its own session


def test_kill_zero_from_under_init_spares_its_caller():
    ran = sentinel(_cli_under_sentinel("--init"))
    _assert_survived(ran)
    assert "sid 1 pgid 1 ppid 1" in ran.stdout  # PID 2 in PID 1's session


def test_kill_zero_from_a_rootless_container_spares_its_caller(test_user):
    ran = sentinel(_cli_under_sentinel(user=test_user))
    _assert_survived(ran, "0")
    assert "sid 1 pgid 1 ppid 0" in ran.stdout


def test_kill_zero_from_exec_spares_its_caller():
    ran = sentinel(textwrap.dedent(f"""
        from pytest_hermetic.container import Container
        from pytest_hermetic.spec import Spec
        with Container(Spec.build("host", ["sleep", "30"], **{spec_options()!r})) as box:
            box.start()
            proc = box.exec([{HOST_PYTHON!r}, "-c", {ATTACK!r}])
            status = proc.wait()
            print("CONTAINER", status.shell_code, "exec done", flush=True)
            box.kill()
    """))
    _assert_survived(ran)


PLUGIN_SUITE = """
import os, signal
from pytest_hermetic import hermetic

@hermetic({options})
def test_kills_its_group():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.kill(os.getppid(), signal.SIGTERM)  # getppid() is 0 here: the caller's group, were it shared
    if os.getpgid(0) > 1:
        os.killpg(os.getpgid(0), signal.SIGTERM)
    os.kill(0, signal.SIGKILL)

@hermetic({options})
def test_after():
    assert os.getsid(0) == os.getpgid(0)

def test_pytest_survived():
    pass
"""


def _assert_plugin_survived(ran) -> None:  # noqa: ANN001
    text = ran.stdout + ran.stderr
    assert ran.returncode == 1, text  # one failure: the test that killed itself
    assert "1 failed, 2 passed" in text, text
    assert "test_kills_its_group - hermetic: killed by signal SIGKILL" in text, text


def test_kill_zero_from_a_hermetic_test_spares_pytest():
    _assert_plugin_survived(inner_session(None, "session-plugin", PLUGIN_SUITE.format(options=marker_options())))


def test_kill_zero_from_a_hermetic_test_spares_xdist_workers():
    ran = inner_session(None, "session-xdist", PLUGIN_SUITE.format(options=marker_options()), "-n", "2")
    _assert_plugin_survived(ran)


def test_kill_zero_from_a_rootless_hermetic_test_spares_pytest(test_user):
    needs_unprivileged_python()
    _assert_plugin_survived(inner_session(test_user, "session-plugin", PLUGIN_SUITE.format(options=marker_options())))


TTY_ATTACK = ("import fcntl, os, termios\n"
              "try:\n"
              "    fcntl.ioctl(0, termios.TIOCSTI, b'x')\n"
              "    print('INJECTED')\n"
              "except OSError as exc:\n"
              "    print('refused', exc.errno)\n"
              "try:\n"
              "    os.open('/dev/tty', os.O_RDWR)\n"
              "    print('HAS-CTTY')\n"
              "except OSError as exc:\n"
              "    print('no ctty', exc.errno)\n")


def test_the_callers_terminal_is_not_the_containers_controlling_terminal():
    """With the caller's terminal as stdin, the container has no controlling
    terminal: no TIOCSTI into the caller's shell, no /dev/tty."""
    leader, follower = os.openpty()
    try:
        ran = sentinel(textwrap.dedent(f"""
            import os, subprocess, sys
            tty = os.open({os.ttyname(follower)!r}, os.O_RDWR)  # a session leader's first terminal: its own
            assert os.tcgetpgrp(tty) == os.getpgid(0)
            argv = ["run", *{list(unconfined())!r}, "host", {HOST_PYTHON!r}, "-c", {TTY_ATTACK!r}]
            ran = subprocess.run([sys.executable, "-m", "pytest_hermetic", *argv], stdin=tty, capture_output=True,
                                 text=True)
            print("CONTAINER", ran.returncode, ran.stdout.strip(), ran.stderr.strip(), flush=True)
        """))
    finally:
        os.close(leader)
        os.close(follower)
    assert "SENTINEL-ALIVE" in ran.stdout, ran.stdout + ran.stderr
    assert "CONTAINER 0 refused" in ran.stdout and "no ctty" in ran.stdout, ran.stdout
    assert "INJECTED" not in ran.stdout and "HAS-CTTY" not in ran.stdout


def test_ctrl_c_of_the_cli_still_stops_the_container():
    """The terminal's SIGINT goes to the CLI's group (no longer the
    container's); the CLI forwards it to PID 1's group.

    PID 1 here is a shell that traps SIGINT.  With a Python as PID 1, about
    1 SIGINT in 150 is lost between the kernel and that Python (the CLI's
    forward runs, the right group is signalled, the Python's handler is
    installed, nothing is pending, and it sleeps on); 0 in 400 with this
    shell, so the loss is not the forwarding's.  Not yet understood: the
    session note of 2026-12-01 carries it on."""
    import subprocess
    import sys
    import time

    from conftest import ROOT

    proc = subprocess.Popen([sys.executable, "-m", "pytest_hermetic", "run", *unconfined(), "host", "/bin/sh", "-c",
                             'trap "exit 130" INT; echo up; while :; do sleep 0.2; done'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": ROOT})
    try:
        assert proc.stdout.readline() == "up\n"
        start = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C does: the whole foreground group
        code = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 130 and time.monotonic() - start < 10, (code, proc.stderr.read())


def test_ctrl_c_of_pytest_still_stops_a_hermetic_test(tmp_path):
    """The terminal's SIGINT reaches pytest (no longer the test's own
    group); the plugin passes it on, the test stops and the session ends
    as an interrupted one."""
    import subprocess
    import sys
    import time

    from conftest import ROOT

    (tmp_path / "test_inner.py").write_text(
        "import time\nfrom pytest_hermetic import hermetic\n\n"
        f"@hermetic({marker_options()})\n"
        "def test_waits():\n"
        "    print('STARTED', flush=True)\n"
        "    time.sleep(60)\n")
    env = {**{k: v for k, v in os.environ.items() if k.startswith("HERMETIC_")}, "PATH": os.environ["PATH"],
           "PYTHONPATH": ROOT}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "hermetic", "-p", "no:cacheprovider", "-q", "-s",
                             "--basetemp", str(tmp_path / "basetemp"), "test_inner.py"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        seen = ""
        while "STARTED" not in seen:
            line = proc.stdout.readline()
            assert line, seen
            seen += line
        start = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGABRT)  # pytest's faulthandler dumps where each thread is
            out, _ = proc.communicate(timeout=10)
            raise AssertionError(f"pytest did not end 20 s after Ctrl-C; its stacks:\n{out}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2 and time.monotonic() - start < 10, out
    assert "KeyboardInterrupt" in out, out


def test_kill_zero_from_a_notebook_cell_spares_the_helper():
    """A cell (in a kept container, and in a fresh one) that signals its own
    group leaves the notebook's container helper running."""
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "ipython_ext")
    client = ip.magics_manager.registry["ContainerMagics"].client
    attack = f"{HOST_PYTHON} - <<'EOF'\n{ATTACK}\nEOF\necho after\n"
    try:
        ip.run_cell_magic("container", "host --out before", "true")
        helper = client.pid
        assert client.running and helper is not None
        off = " ".join(unconfined())
        for line in (f"host --name sess --out kept {off}", f"host --out fresh {off}"):
            try:
                ip.run_cell_magic("container", line, attack)
            except Exception:  # noqa: BLE001 - the cell may report its own SIGKILL
                pass
            assert client.running and client.pid == helper
        ip.run_cell_magic("container", "host --name sess --out after", "echo still")
        assert ip.user_ns["after"].strip() == "still"
        assert client.pid == helper  # the same helper: nothing restarted it
        ip.run_line_magic("container", "rm sess")
    finally:
        ip.run_line_magic("unload_ext", "ipython_ext")


def test_an_interactive_shell_on_a_terminal_stays_usable():
    """`hermetic run host sh -i` on a terminal: Ctrl-C stops the command the
    shell runs (the CLI passes it to PID 1's group), the shell goes on."""
    import pty
    import select
    import subprocess
    import sys
    import time

    from conftest import ROOT

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "pytest_hermetic", "run", *unconfined(), "host", "sh", "-i"],
                            stdin=follower, stdout=follower, stderr=follower, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": ROOT}, cwd="/",
                            preexec_fn=lambda: __import__("fcntl").ioctl(0, __import__("termios").TIOCSCTTY, 0))
    os.close(follower)
    out = b""

    def until(word: bytes, timeout: float = 15) -> None:
        nonlocal out
        deadline = time.monotonic() + timeout
        while word not in out and time.monotonic() < deadline:
            if select.select([leader], [], [], 0.1)[0]:
                try:
                    out += os.read(leader, 4096)
                except OSError:
                    return

    try:
        os.write(leader, b"echo ready-$((1+1))\n")
        until(b"ready-2")
        os.write(leader, b"sleep 30; echo slept\n")
        time.sleep(0.5)
        start = time.monotonic()
        os.write(leader, b"\x03")  # Ctrl-C, through the terminal's line discipline
        os.write(leader, b"echo after-$((2+2))\n")
        until(b"after-4")
        assert time.monotonic() - start < 10, out
        os.write(leader, b"exit 3\n")
        assert proc.wait(timeout=15) == 3, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)
    assert b"slept" not in out.replace(b"echo slept", b""), out
