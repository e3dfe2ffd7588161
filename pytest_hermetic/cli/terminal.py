"""The caller's side of `run -t` / `exec -t`: the caller's terminal and the container's pty.

The container's process runs on a pty of its own (runtime/console.py); we
hold its master.  With `-i` the caller's terminal goes into raw mode, so
every key (Ctrl-C, Ctrl-Z, Ctrl-\\ included) is a byte for the container's
line discipline, which signals its own foreground process group: job
control works as on a local terminal.  A thread copies the caller's input
to the master and the master's output to our stdout while the main thread
waits for the container as a run without a terminal does (timeouts and
signals included).  The window size is set at the start and follows
SIGWINCH; the caller's terminal is put back as it was on every way out
(the command's end, a kill, an exception, SIGTERM or SIGHUP to us); only a
SIGKILL of this process leaves it raw (`reset` or `stty sane` mends it).
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import termios
import threading
import tty

from ..errors import SpecError

_NO_SIZE = b"\0" * 8
_TIOCSIG = 0x40045436  # _IOW('T', 0x36, int): signal the pty's foreground group (not in Python's termios)


def check_input(interactive: bool, command: str) -> None:
    """`-it` needs a terminal to read from, as Docker says (`-t` alone does not)."""
    if interactive and not os.isatty(0):
        raise SpecError(f"{command} -it: the input is not a terminal; drop -t to pipe input (-i), "
                        "or run it from a terminal")


def caller_size() -> bytes:
    """The caller's window size (a struct winsize), or zeros when no terminal is ours."""
    for fd in (0, 1, 2):
        try:
            return fcntl.ioctl(fd, termios.TIOCGWINSZ, _NO_SIZE)
        except OSError:
            continue
    return _NO_SIZE


class Session:
    """Raw mode, the copy thread, the window size: `open()`, wait for the container, `close()`."""

    def __init__(self, master: int, interactive: bool) -> None:
        self.master = master
        self.interactive = interactive
        self._saved: list | None = None
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self._thread: threading.Thread | None = None
        self._previous_winch: object = None

    def open(self) -> None:
        if self.interactive and os.isatty(0):
            self._saved = termios.tcgetattr(0)
            tty.setraw(0, termios.TCSANOW)
        if any(os.isatty(fd) for fd in (0, 1)):
            self._previous_winch = signal.signal(signal.SIGWINCH, lambda *_: self.resize())
            self.resize()  # it may have changed since the container was started
        self._thread = threading.Thread(target=self._copy_until_stopped, name="hermetic-tty", daemon=True)
        self._thread.start()

    def resize(self) -> None:
        size = caller_size()
        if size != _NO_SIZE and self.master >= 0:
            try:
                fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)  # the kernel sends the container its SIGWINCH
            except OSError:
                pass

    def signal(self, sig: int) -> None:
        """Send `sig` to the container's foreground process group, as its terminal would (TIOCSIG)."""
        if self.master >= 0:
            try:
                fcntl.ioctl(self.master, _TIOCSIG, sig)
            except OSError:
                pass

    def hangup(self) -> None:
        """Close the master, as a terminal that went away: the container's
        session gets its SIGHUP, its reads EOF."""
        self._stop()
        if self.master >= 0:
            os.close(self.master)
            self.master = -1

    def _stop(self) -> None:
        if self._thread is not None:
            os.write(self._stop_w, b"x")
            self._thread.join(5)
            self._thread = None

    def close(self) -> None:
        """Let the thread copy what is left of the output, then put the caller's terminal back."""
        try:
            self._stop()
        finally:
            if self._previous_winch is not None:
                signal.signal(signal.SIGWINCH, self._previous_winch)  # type: ignore[arg-type]
                self._previous_winch = None
            self.restore()
            for fd in (self._stop_r, self._stop_w, self.master):
                if fd >= 0:
                    os.close(fd)
            self._stop_r = self._stop_w = self.master = -1

    def restore(self) -> None:
        if self._saved is not None:
            try:
                termios.tcsetattr(0, termios.TCSANOW, self._saved)
            except (OSError, termios.error):  # the terminal hung up
                pass
            self._saved = None

    def _copy_until_stopped(self) -> None:
        try:
            self._copy()
        except OSError:  # a terminal gone under us: the main thread still waits for the container and restores
            pass

    def _copy(self) -> None:
        """master -> stdout; with -i stdin -> master; until told to stop, then drain the output."""
        os.set_blocking(self.master, False)
        pending = b""
        reading = self.interactive
        output_open = True
        while True:
            poll = select.poll()
            poll.register(self._stop_r, select.POLLIN)
            if output_open:
                poll.register(self.master, select.POLLIN | (select.POLLOUT if pending else 0))
            else:
                pending = b""  # nobody reads the container's terminal any more
            if reading and len(pending) < 65536:
                poll.register(0, select.POLLIN)
            events = dict(poll.poll())
            if self._stop_r in events:
                if output_open:
                    _drain(self.master)
                return
            event = events.get(self.master, 0)
            if event & (select.POLLIN | select.POLLHUP | select.POLLERR):
                output_open = _pump(self.master)
            if output_open and pending and event & select.POLLOUT:
                pending = pending[_write_some(self.master, pending):]
            if 0 in events:
                try:
                    data = os.read(0, 65536)
                except OSError:
                    data = b""
                if data:
                    pending += data
                else:
                    reading = False  # EOF or hangup on the caller's side: the container keeps its terminal


def _pump(master: int) -> bool:
    """Copy what the master has to stdout; False once the container side closed (EIO)."""
    try:
        data = os.read(master, 65536)
    except BlockingIOError:
        return True
    except OSError as exc:
        if exc.errno == errno.EIO:
            return False
        raise
    if not data:
        return False
    _write_all(1, data)
    return True


def _drain(master: int) -> None:
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EAGAIN: all read (a background process holds it open); EIO: all closed
            return
        if not data:
            return
        _write_all(1, data)


def _write_some(fd: int, data: bytes) -> int:
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0
    except OSError:
        return len(data)  # the container's side is gone: drop it


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [])
        except OSError:  # our stdout is gone (a closed pipe): the container's output has nowhere to go
            return
