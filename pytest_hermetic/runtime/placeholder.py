"""The placeholder PID 1 of a Python callable run as root.

A PID namespace needs a PID 1, and a PID 1 ignores every signal it has no
handler for, which a test killing itself must not meet; so the test cannot
be PID 1.  Forking the parent twice (a Python PID 1, the test as PID 2)
doubles the dominant cost: the fork and exit of a large address space
(~17 ms for 100 MiB here).  Instead PID 1 is `cat`, started with
posix_spawn (vfork: no copy), and the test is the only fork of the parent,
PID 2 and the parent's own child (`init.worker_main`).  The placeholder
holds no privilege the test could use: the kernel refuses /proc/1/root and
friends to a process with fewer capabilities, and it runs in no namespace
but the PID one.  It does not reap orphans; they go with the namespace at
the end.

`cat` reads the parent's lifeline pipe, whose write end only the parent
and its forks hold: when they are all gone, even by SIGKILL (the forks die
with the parent, PR_SET_PDEATHSIG), `cat` reads EOF and exits, and its
namespace with it.  Nothing else would end a placeholder of a killed run.
"""

from __future__ import annotations

import os
import signal

_binary_path: str | None = None
_lifeline: tuple[int, int, int] | None = None  # (owner pid, read end, write end)


def binary() -> str | None:
    """The placeholder's program (`cat`), or None where there is none."""
    global _binary_path
    if _binary_path is None:
        _binary_path = next((p for p in ("/bin/cat", "/usr/bin/cat") if os.access(p, os.X_OK)), "")
    return _binary_path or None


def _lifeline_fd() -> int:
    global _lifeline
    if _lifeline is None or _lifeline[0] != os.getpid():  # a fork makes its own
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        _lifeline = (os.getpid(), read_fd, write_fd)
    return _lifeline[1]


def start() -> int:
    """Start a placeholder (in the PID namespace the caller unshared for its children)."""
    program = binary()
    assert program
    actions = [(os.POSIX_SPAWN_DUP2, _lifeline_fd(), 0),
               (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
    return os.posix_spawn(program, [program], {}, file_actions=actions, setsid=True,
                          setsigdef=(signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE))


def end(pid: int) -> None:
    """PID 1's death takes whatever is left in its PID namespace along."""
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def drop_lifeline() -> None:
    """In a fork of the parent: the placeholders' lifeline is the parent's alone."""
    if _lifeline is not None:
        os.close(_lifeline[2])
