"""The kernel's side of the container helper (see `helper.py` for why it exists).

`HelperClient.call()` sends one request and waits for its reply, handing
each output chunk to a callback as it arrives.  It never waits forever: it
pings a helper that has been silent for a while and gives up (and kills
it) when even the ping goes unanswered; a helper that dies is reported
with its exit status and the end of its log.  While it waits, Ctrl-C (a
kernel interrupt) does not unwind the wait: it asks the helper to stop
the cell, and the reply, which comes after a short grace, ends the call.
"""

from __future__ import annotations

import itertools
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from types import FrameType
from typing import IO, Any, Callable

from pytest_hermetic._proc import signal_name

from . import protocol
from .errors import HelperError

START_TIMEOUT = 30.0
PING_AFTER = 5.0  # silence (no frame at all) before we ask whether the helper lives
SILENCE_LIMIT = float(os.environ.get("HERMETIC_HELPER_TIMEOUT", "60"))  # after a ping, before we give up
BUSY_RETRY = 5.0  # the helper is still ending an abandoned cell


class _Wake(Exception):
    pass


class _Interrupts:
    """Turns SIGINT into a counter while a call waits (main thread only);
    a signal that arrives during `select` wakes it."""

    def __init__(self) -> None:
        self.count = 0
        self.blocking = False
        self._previous: Callable[[int, FrameType | None], Any] | int | None = None

    def _handler(self, signum: int, frame: object) -> None:
        self.count += 1
        if self.blocking:
            raise _Wake()

    def __enter__(self) -> "_Interrupts":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class HelperClient:
    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.reader = protocol.FrameReader()
        self._ids = itertools.count(1)
        self._log: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    # -- life ------------------------------------------------------------------

    def start(self) -> None:
        import ipython_ext

        ours, theirs = socket.socketpair()
        self._log = tempfile.TemporaryFile(prefix="hermetic-helper-")
        env = dict(os.environ)
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(ipython_ext.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        argv = [sys.executable, "-m", "ipython_ext.helper", str(theirs.fileno()), str(os.getpid())]
        # PDEATHSIG fires when the *thread* that started the child ends: only
        # arm it for the main thread, which lives as long as the kernel.
        if threading.current_thread() is threading.main_thread():
            argv.append("--pdeathsig")
        try:
            # subprocess forks and execs in C at once: safe in a threaded kernel.
            self.proc = subprocess.Popen(argv, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                                         stdout=self._log, stderr=self._log, env=env, start_new_session=True)
        finally:
            theirs.close()
        self.sock = ours
        self.reader = protocol.FrameReader()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            frames = self._read(max(0.0, deadline - time.monotonic()))
            if frames is None:
                self._kill()
                raise HelperError(f"the container helper did not start within {START_TIMEOUT:g} s{self._log_tail()}")
            if any(k == protocol.JSON and m.get("op") == "hello" for k, _, m in frames):
                return

    def close(self, timeout: float = 30.0) -> None:
        """Stop every container the helper runs, then the helper."""
        if self.proc is None:
            return
        try:
            if self.running:
                self.call("shutdown", patience=timeout)
                self.proc.wait(timeout)
        except (HelperError, OSError, subprocess.TimeoutExpired):
            self._kill()
        finally:
            self._reset()

    def _kill(self) -> None:
        """Last resort: SIGKILL the helper; its containers' PID 1s die with it
        (PDEATHSIG), and what they leave on disk is removed here, as gc would."""
        if self.proc is None:
            return
        pid = self.proc.pid
        try:
            self.proc.kill()
        except OSError:
            pass
        self.proc.wait()
        _clean_after(pid)
        self._reset()

    def _reset(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.proc = None

    # -- calls -----------------------------------------------------------------

    def call(self, op: str, *, on_output: Callable[[int, bytes], None] | None = None, interruptible: bool = False,
             patience: float = SILENCE_LIMIT, **payload: object) -> dict:
        """Send `op` and return its reply; raise what the helper raised.

        With `interruptible`, the first Ctrl-C asks the helper to stop the
        cell (reply: interrupted=True) and a second one abandons the wait;
        otherwise Ctrl-C abandons the wait at once (the request's id makes
        its late reply harmless)."""
        retry_until = time.monotonic() + BUSY_RETRY
        while True:
            reply = self._call_once(op, payload, on_output, interruptible, patience)
            error = reply.get("error") if not reply.get("ok") else None
            if error and error.get("type") == "Busy" and time.monotonic() < retry_until:
                time.sleep(0.1)
                continue
            if error:
                raise _rebuild(error)
            return reply

    def _call_once(self, op: str, payload: dict, on_output, interruptible: bool, patience: float) -> dict:  # noqa: ANN001
        if not self.running:
            if self.proc is not None:
                self._died()
            self.start()
        assert self.sock is not None
        request = next(self._ids)
        self._send(request, {"op": op, **payload})
        last_heard = time.monotonic()
        pinged = False
        handled = 0
        with _Interrupts() as interrupts:
            while True:
                if interrupts.count > handled:
                    handled = interrupts.count
                    if not interruptible or handled > 1:
                        raise KeyboardInterrupt
                    self._send(request, {"op": "interrupt"})
                now = time.monotonic()
                wait_until = last_heard + (PING_AFTER + patience if pinged else PING_AFTER)
                frames = self._read(max(0.0, wait_until - now), interrupts, handled)
                if frames is None:
                    if interrupts.count > handled:
                        continue
                    if not pinged:
                        self._send(next(self._ids), {"op": "ping"})
                        pinged = True
                        continue
                    pid = self.pid
                    self._kill()
                    raise HelperError(f"the container helper (pid {pid}) did not answer for {PING_AFTER + patience:g} s; "
                                      "it was stopped with its containers (the next cell starts a new one)")
                last_heard = time.monotonic()
                pinged = False
                for kind, req, message in frames:
                    if req != request:
                        continue  # a pong, or late output of an abandoned request
                    if kind == protocol.JSON:
                        return message
                    if on_output is not None:
                        on_output(kind, message)

    def _send(self, request: int, message: dict) -> None:
        """Send one request; a helper that died meanwhile (its socket closed
        before it was seen gone) is reported as a death, not a broken pipe."""
        assert self.sock is not None
        try:
            protocol.send_json(self.sock, request, message)
        except (BrokenPipeError, ConnectionResetError):
            self._died()

    def _read(self, timeout: float, interrupts: _Interrupts | None = None, handled: int = 0) -> list | None:
        """The frames that arrived within `timeout` (None if nothing did, or
        an interrupt came first).  Only the select may be cut short: a
        signal between recv and feed would lose bytes of a frame."""
        assert self.sock is not None
        try:
            try:
                if interrupts is not None:
                    interrupts.blocking = True
                    if interrupts.count > handled:
                        return None
                ready, _, _ = select.select([self.sock], [], [], timeout)
            finally:
                if interrupts is not None:
                    interrupts.blocking = False
        except _Wake:  # (also when it lands in the finally clause)
            return None
        if not ready:
            return None
        try:
            data = self.sock.recv(1 << 16)
        except ConnectionResetError:
            data = b""
        if not data:
            self._died()
        self.reader.feed(data)
        return self.reader.frames()

    def _died(self) -> None:
        assert self.proc is not None
        pid = self.proc.pid
        try:
            code = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self._kill()
            raise HelperError(f"the container helper (pid {pid}) closed its socket; it was stopped") from None
        how = f"killed by {signal_name(-code)}" if code < 0 else f"exited with status {code}"
        tail = self._log_tail()
        _clean_after(pid)
        self._reset()
        raise HelperError(f"the container helper (pid {pid}) died ({how}); the containers it ran are gone, "
                          f"the next cell starts a new helper{tail}")

    def _log_tail(self) -> str:
        if self._log is None:
            return ""
        try:
            self._log.seek(0, os.SEEK_END)
            size = self._log.tell()
            self._log.seek(max(0, size - 2000))
            text = self._log.read().decode(errors="replace").strip()
        except OSError:
            return ""
        return f"; its log ends:\n{text}" if text else ""


def _rebuild(error: dict) -> BaseException:
    """The helper's exception as the same engine type, when it is one."""
    from pytest_hermetic import errors

    name, message = error.get("type", ""), error.get("message", "")
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, errors.HermeticError):
        try:
            return cls(message)
        except TypeError:
            return errors.HermeticError(message)
    if name in ("OSError", "FileNotFoundError", "PermissionError"):
        return OSError(message)
    return HelperError(f"{name}: {message}")


def _clean_after(helper_pid: int) -> None:
    """Remove what the containers of a dead helper left (state folder, cgroup,
    rw layer): exactly what `hermetic gc` would, for this owner only."""
    from pytest_hermetic.gc import clear_dead
    from pytest_hermetic.state import list_states

    for state in list_states():
        if state.get("owner_pid") == helper_pid and not state["alive"]:
            clear_dead(state)
