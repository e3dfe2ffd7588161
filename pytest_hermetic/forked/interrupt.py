"""Ctrl-C while pytest runs a hermetic test: noted, passed on, raised after.

Python raises KeyboardInterrupt at whatever line pytest's main thread is
on.  In the middle of pytest's side of a test (an order to the zygote sent
but its answer not yet read, a child forked but not yet known by pid)
that leaves the bookkeeping half done: a Ctrl-C then ended the zygote and
became the test's "zygote is gone" error while the session went on, or
left pytest waiting for an answer that had already come.  So while
`deferred()` holds, SIGINT only counts: the waiting loop (parent._drain)
passes the first one on to the test as its own Ctrl-C (as in place, the
test sees KeyboardInterrupt where it is), kills the container at the
second or when the test has not ended `GRACE` seconds after the first,
and pytest raises KeyboardInterrupt once the test's reports are in.
(`allowed()` lets it raise at once again where pytest works at length
for the test: the image's pull or build, its `containers` calls.)

Only over pytest's default handler (a plugin's own, or an ignored SIGINT,
stays as it is), and only in the main thread, where signal handlers run.
A fork of pytest (the zygote, a test's child) that inherits the handler
raises at once, as the default handler would (see `_on_sigint`), and
lets go of the handler and the wake-up pipe (`in_fork`).
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

GRACE = 5.0  # seconds a test has after its Ctrl-C before it is killed

_owner = 0  # the pid whose SIGINTs are deferred (0: none now)
_count = 0  # Ctrl-Cs since `deferred()` began
_allowed = False  # inside `allowed()`: a Ctrl-C raises at once
_wakeup: tuple[int, int, int] | None = None  # (pid, read end, write end): wakes the waiting loop's select


class Deferred:
    """What `deferred()` yields: the Ctrl-Cs seen so far, and the
    descriptor that turns readable at each (for a select loop)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.handled = 0  # those the waiting loop has acted on
        self.killed = False  # whether the loop killed the test for not stopping within GRACE

    @property
    def count(self) -> int:
        return _count

    def take_new(self) -> int:
        """The number of Ctrl-Cs not yet acted on, now `handled` (the
        wake-up pipe emptied)."""
        try:
            while os.read(self.fd, 64):
                pass
        except BlockingIOError:
            pass
        new = _count - self.handled
        self.handled = _count
        return new


def _on_sigint(signum: int, frame: Any) -> None:
    global _count
    if _allowed or os.getpid() != _owner:  # (or a fork of pytest made meanwhile) the default's KeyboardInterrupt
        signal.default_int_handler(signum, frame)
    _count += 1
    if _wakeup is not None:
        try:
            os.write(_wakeup[2], b"\0")
        except OSError:  # (full: it is readable already)
            pass


def _wakeup_fds() -> tuple[int, int]:
    global _wakeup
    if _wakeup is None or _wakeup[0] != os.getpid():  # (a fork's copy is its parent's)
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        _wakeup = (os.getpid(), read_fd, write_fd)
    return _wakeup[1], _wakeup[2]


@contextmanager
def deferred() -> Iterator[Deferred | None]:
    """Defer SIGINT in this block (see the module's docstring); yields None
    where it is not ours to defer (not the main thread, not pytest's
    default handler, or a block inside another)."""
    global _owner, _count
    if (_owner == os.getpid() or threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield None
        return
    state = Deferred(_wakeup_fds()[0])
    _owner, _count = os.getpid(), 0
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _owner = 0
        if _count:
            state.take_new()  # (its bytes not left to wake the next block's loop)


def in_fork() -> None:
    """In a fork of pytest (the zygote, a test's child): Python's own
    handler back, so code that checks for it (asyncio's Runner) finds it;
    and pytest's wake-up pipe closed, which a test could otherwise write to
    (the seal leaves pipes' write ends usable) to wake pytest's loop."""
    global _wakeup
    if signal.getsignal(signal.SIGINT) is _on_sigint:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if _wakeup is not None and _wakeup[0] != os.getpid():
        for fd in _wakeup[1:]:
            try:
                os.close(fd)
            except OSError:
                pass
        _wakeup = None


@contextmanager
def allowed() -> Iterator[None]:
    """Inside `deferred()`, a Ctrl-C raises again: for pytest's own long
    work on the test's behalf that leaves nothing half done (the test's
    image pulled or built; a service container started, pulled or waited
    for at the test's `containers` call), which would otherwise hold the
    Ctrl-C back until it ends."""
    global _allowed
    was, _allowed = _allowed, True  # (a flag, not the handler swapped: no syscall on each test's path)
    try:
        yield
    finally:
        _allowed = was
