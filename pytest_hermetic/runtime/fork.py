"""`fork`: the one way the engine forks its (large, maybe threaded) caller;
`bare_fork`: how a process of one thread that runs no user code between its
forks (the zygote, forked/zygote_process.py) forks, cheaper."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # (typing is ~6 ms of `hermetic run`'s start)
    import signal as _signal
    from typing import Callable
else:  # signal's C half: signal.py's enums cost start-up
    import _signal


def fork() -> int:
    """`os.fork` (after flushing Python's stdio, or a child that flushes would
    print the parent's pending output again), also from a process with other threads (an xdist worker's
    execnet thread, a notebook's helper threads).

    Python 3.12+ warns that a threaded fork may deadlock in the child on a
    lock another thread held.  The engine's child runs only its own set-up
    (syscalls, no logging, no imports) and then execs or runs the test in a
    process of one thread, and the parent imports all the child needs
    before forking; so the warning, which would fail suites run with
    `-W error`, is silenced for these forks and no others.
    """
    _flush_stdio()
    if sys.version_info < (3, 12):  # no such warning before 3.12
        return _held(os.fork)
    import warnings

    with warnings.catch_warnings():
        # By category, not by message: a message pattern imports re (with
        # its enums ~3 ms of a `hermetic run`), and within this block only
        # os.fork runs, whose one DeprecationWarning is that one.
        warnings.simplefilter("ignore", DeprecationWarning)
        return _held(os.fork)


_ALL = _signal.valid_signals()
_mask_after_fork: set[int] | None = None  # in a child of `fork`: the mask `release_signals` restores


def _held(do_fork: Callable[[], int]) -> int:
    """`do_fork()` with every signal blocked in this thread: the parent
    unblocks at once, the child only at `release_signals`.  A child runs
    its caller's frames from the fork until its own code's
    `try: ... finally: os._exit()`; a signal whose Python handler raises
    (a Ctrl-C's KeyboardInterrupt: the child shares pytest's process group
    until it makes a session of its own) would otherwise unwind it through
    them, and the child go on as its parent: a fork of pytest running the
    rest of the session inside a test's container (seen under load)."""
    global _mask_after_fork
    before = _signal.pthread_sigmask(_signal.SIG_BLOCK, _ALL)
    try:
        pid = do_fork()
    except BaseException:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, before)
        raise
    if pid == 0:
        _mask_after_fork = before
    else:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, before)
    return pid


def release_signals() -> None:
    """In a child of `fork` (or of `bare_fork`'s): the signal mask back as
    the parent had it, once inside the child's own `try ... os._exit`; any
    signal that came meanwhile is delivered now, there."""
    global _mask_after_fork
    mask, _mask_after_fork = _mask_after_fork, None
    if mask is not None:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)


_libc_fork: tuple[Callable[[], int], Callable[[], int]] | None = None  # libc's fork, and its errno


def bare_fork() -> Callable[[], int] | None:
    """A fork without Python's after-fork work, for a process that has one
    thread and forks again and again while running none of the code that
    work is for (the zygote), or whose child runs only the engine's set-up
    and then execs (`process.spawn` of a command); None where it cannot be
    had (no ctypes, other threads), and the caller uses `fork`.

    After `os.fork` the child resets the interpreter's thread state and
    locks and runs every `os.register_at_fork` hook (threading's, logging's,
    random's, a library's): code that only children run, so its objects
    stay cold in the parent and each child writes (and so copies) their
    pages anew, ~250 pages and ~0.5 ms of CPU per child here (issue #16).
    In a process of one thread whose state those hooks already made right
    when it was itself forked (with `os.fork`) and that runs no other
    code since, they have nothing to do: no other thread holds a lock or
    needs forgetting.  Only the seed of `random` must differ from child to
    child (as its hook makes it); the child reseeds it.  libc's own fork
    handlers (malloc's locks) still run.  Called as ctypes' PyDLL calls
    (`_libc.function(keep_gil=True)`), which keeps the GIL: the child's one
    thread holds it, as it did."""
    if len(os.listdir("/proc/self/task")) != 1:
        return None
    global _libc_fork
    if _libc_fork is None:
        try:
            from .. import _libc as libc
        except ImportError:  # (a Python without ctypes)
            return None
        _libc_fork = (libc.function("fork", libc.c_int, keep_gil=True), libc.get_errno)
    libc_fork, get_errno = _libc_fork

    def fork_now() -> int:
        _flush_stdio()
        pid = _held(libc_fork)
        if pid < 0:
            code = get_errno()
            raise OSError(code, os.strerror(code))
        if pid == 0:
            random = sys.modules.get("random")
            if random is not None:
                random._inst.seed()  # (random's own after-fork hook)
        return pid

    return fork_now


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
