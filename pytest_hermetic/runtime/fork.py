"""`fork`: the one way the engine forks its (large, maybe threaded) caller."""

from __future__ import annotations

import os
import sys


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
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    if sys.version_info < (3, 12):  # no such warning before 3.12
        return os.fork()
    import warnings

    with warnings.catch_warnings():
        # By category, not by message: a message pattern imports re (with
        # its enums ~3 ms of a `hermetic run`), and within this block only
        # os.fork runs, whose one DeprecationWarning is that one.
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()
