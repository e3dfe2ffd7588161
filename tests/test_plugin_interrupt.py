"""Ctrl-C of a pytest session that runs hermetic tests (forked/interrupt.py):
whenever it comes, the session ends interrupted (exit status 2, pytest's
KeyboardInterrupt summary), promptly, with no test's error made of it and
nothing left running.  Each session here is a real pytest in a session of
its own, sent SIGINT the way a terminal sends it (to its process group)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Iterator

import pytest
from conftest import ROOT

MANY = """
import time, pytest
from pytest_hermetic import hermetic

@hermetic
@pytest.mark.parametrize("i", range(2000))
def test_quick(i):
    print("RUNNING", i, flush=True)
    time.sleep(0.002)
"""

IGNORES = """
import signal, time
from pytest_hermetic import hermetic

@hermetic
def test_ignores_ctrl_c():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print("RUNNING", flush=True)
    time.sleep(60)

@hermetic
def test_never_reached():
    pass
"""

WAITS_FOR_A_SERVICE = """
from pytest_hermetic import hermetic

@hermetic
def test_waits(containers):
    svc = containers.run("host", ["sleep", "60"])
    print("RUNNING", flush=True)
    svc.wait_for_log("never said", timeout=60)
"""

# Ctrl-C at the moments it used to land badly: just after pytest's socket
# to the zygote sent an order or received an answer, before pytest noted it.
AT_THE_ZYGOTE = """
import os, signal
from pytest_hermetic.forked import zygote

class Socket:
    def __init__(self, sock):
        self.sock, self.calls = sock, 0

    def __getattr__(self, name):
        real = getattr(self.sock, name)
        if name != os.environ["CTRL_C_IN"]:
            return real

        def call(*args, **kwargs):
            result = real(*args, **kwargs)
            self.calls += 1
            if self.calls == int(os.environ["CTRL_C_AT"]):
                os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C as it returns
            return result
        return call

original = zygote.Zygote.__init__

def __init__(self, *args, **kwargs):
    original(self, *args, **kwargs)
    self._sock = Socket(self._sock)

zygote.Zygote.__init__ = __init__
"""


@contextmanager
def _session(tmp_path, source: str, conftest: str = "", env: dict[str, str] | None = None,
             options: tuple[str, ...] = ()) -> Iterator[subprocess.Popen]:
    """A pytest session of `source` (and `conftest`), in a session of its
    own, killed at the end if still running."""
    (tmp_path / "test_inner.py").write_text(source)
    if conftest:
        (tmp_path / "conftest.py").write_text(conftest)
    full_env = {**{k: v for k, v in os.environ.items() if k.startswith("HERMETIC_")}, "PATH": os.environ["PATH"],
                "PYTHONPATH": ROOT, **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "hermetic", "-p", "no:cacheprovider", "-q", "-s",
                             "--basetemp", str(tmp_path / "basetemp"), *options, "test_inner.py"],
                            cwd=tmp_path, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _wait_for(proc: subprocess.Popen, marker: str) -> str:
    seen = ""
    while marker not in seen:
        line = proc.stdout.readline()
        assert line, seen
        seen += line
    return seen


def _end(proc: subprocess.Popen, limit: float) -> tuple[str, float]:
    """The rest of the session's output, and how long it took to end; on
    a hang, where each thread of pytest was (faulthandler, on SIGABRT)."""
    start = time.monotonic()
    try:
        out, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGABRT)  # pytest's faulthandler dumps every thread's stack
        out, _ = proc.communicate(timeout=10)
        pytest.fail(f"pytest did not end {limit} s after Ctrl-C; its stacks:\n{out}")
    return out, time.monotonic() - start


def _interrupted(proc: subprocess.Popen, out: str) -> None:
    assert proc.returncode == 2, out
    assert "KeyboardInterrupt" in out, out
    for wrong in ("INTERNALERROR", "is gone", "without reporting", " error", " failed"):
        assert wrong not in out, out


@pytest.mark.parametrize("zygote, delay", [(True, 0.0), (True, 0.003), (True, 0.011), (True, 0.029), (True, 0.07),
                                           (True, 0.13), (True, 0.31), (False, 0.0), (False, 0.007), (False, 0.05)])
def test_ctrl_c_at_any_moment_interrupts_the_session(tmp_path, zygote, delay):
    """At whatever line pytest is (a test starting, its reports coming
    home, the next one forked ahead), the session ends interrupted; with
    the zygote, and with pytest forking each test itself."""
    with _session(tmp_path, MANY, options=() if zygote else ("-o", "hermetic_zygote=false")) as proc:
        _wait_for(proc, "RUNNING 5")
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGINT)
        out, took = _end(proc, 20)
    _interrupted(proc, out)
    assert took < 5, out
    assert "RUNNING 1999" not in out


@pytest.mark.parametrize("where, at", [("recv", 1), ("recv", 2), ("recv", 5), ("sendmsg", 1), ("sendmsg", 2),
                                       ("sendmsg", 5), ("send", 1), ("send", 3)])
def test_ctrl_c_beside_the_zygote_interrupts_the_session(tmp_path, where, at):
    """A Ctrl-C that comes while pytest talks with the zygote (an order
    sent, its answer read): not the test's "zygote is gone" error while the
    session goes on, as it was, but an interrupted session."""
    with _session(tmp_path, MANY, AT_THE_ZYGOTE, {"CTRL_C_IN": where, "CTRL_C_AT": str(at)}) as proc:
        out, _ = _end(proc, 60)
    _interrupted(proc, out)
    assert "RUNNING 100" not in out


def test_a_test_that_ignores_ctrl_c_is_killed_after_the_grace(tmp_path):
    from pytest_hermetic.forked.interrupt import GRACE

    with _session(tmp_path, IGNORES) as proc:
        _wait_for(proc, "RUNNING")
        os.killpg(proc.pid, signal.SIGINT)
        out, took = _end(proc, GRACE + 15)
    _interrupted(proc, out)
    assert GRACE - 0.5 < took < GRACE + 5, out
    assert f"test_inner.py::test_ignores_ctrl_c had not stopped {GRACE:g} s after Ctrl-C: killed" in out, out


def test_a_second_ctrl_c_kills_at_once(tmp_path):
    with _session(tmp_path, IGNORES) as proc:
        _wait_for(proc, "RUNNING")
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        out, took = _end(proc, 20)
    _interrupted(proc, out)
    assert took < 3, out
    assert "had not stopped" not in out, out


def test_ctrl_c_stops_pytest_waiting_for_a_service_on_the_tests_behalf(tmp_path):
    """pytest's own long work for the test (here a `containers` call's
    wait) is not deferred: it stops at once, and the test with it."""
    with _session(tmp_path, WAITS_FOR_A_SERVICE) as proc:
        _wait_for(proc, "RUNNING")
        time.sleep(0.3)  # (into the wait)
        os.killpg(proc.pid, signal.SIGINT)
        out, took = _end(proc, 20)
    assert proc.returncode == 2 and "KeyboardInterrupt" in out, out
    assert took < 5, out


def test_ctrl_c_stops_the_pull_of_the_tests_image(tmp_path):
    """The image's pull (here from a registry that accepts and never
    answers) stops at once, as without isolation."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    try:
        source = f"""
from pytest_hermetic import hermetic

@hermetic(image="127.0.0.1:{server.getsockname()[1]}/app:1")
def test_in_a_pulled_image():
    pass
"""
        env = {"HERMETIC_OFFLINE": "", "HERMETIC_REGISTRY_TIMEOUT": "60", "HERMETIC_STORE": str(tmp_path / "store")}
        with _session(tmp_path, source, env=env) as proc:
            server.settimeout(30)
            conn, _ = server.accept()  # the pull has begun

            time.sleep(0.3)
            os.killpg(proc.pid, signal.SIGINT)
            out, took = _end(proc, 20)
            conn.close()
    finally:
        server.close()
    assert proc.returncode == 2 and "KeyboardInterrupt" in out, out
    assert took < 5, out


def test_a_test_sees_pythons_own_ctrl_c_handler(tmp_path):
    """As in place (asyncio's Runner installs its own Ctrl-C handling only
    over Python's default handler): with the zygote, and without it."""
    source = """
import asyncio, signal
from pytest_hermetic import hermetic

@hermetic
def test_default_handler():
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    async def main():
        return 1
    assert asyncio.run(main()) == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

@hermetic
def test_again():
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
"""
    for options in ((), ("-o", "hermetic_zygote=false")):
        with _session(tmp_path, source, options=options) as proc:
            out, _ = _end(proc, 60)
        assert proc.returncode == 0 and "2 passed" in out, out

