"""_fs.lock_file beside `hermetic gc`, which removes lock files nobody holds."""

import fcntl
import os
import subprocess
import sys
import time

import pytest

from pytest_hermetic._fs import lock_file

# The waiter a process of its own (not a fork of this one, which may have
# threads: a fork would copy their locks, and 3.12+ warns about it).
WAITER = """
import fcntl, sys, time
from pytest_hermetic._fs import lock_file
fd = lock_file(sys.argv[1], fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(5)
"""


def wait_until_blocked(pid: int) -> None:
    """Until `pid` waits for a lock (a "->" line of /proc/locks is a request
    that waits)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open("/proc/locks") as f:
            if any(line.split()[1] == "->" and line.split()[5] == str(pid) for line in f if len(line.split()) > 5):
                return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} never waited for the lock")


def test_a_lock_on_a_file_gc_removed_is_taken_again_on_the_new_one(tmp_path):
    path = str(tmp_path / "lock")
    first = lock_file(path, fcntl.LOCK_EX)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    waiter = subprocess.Popen([sys.executable, "-c", WAITER, path], env=env, stdout=subprocess.PIPE)
    try:
        wait_until_blocked(waiter.pid)  # the waiter now waits in flock on the first file
        os.unlink(path)  # as gc removes it, holding the lock
        os.close(first)  # the waiting process gets the old, unlinked file
        assert waiter.stdout.readline() == b"locked\n"
        # The waiter must hold the file that `path` names now, not the unlinked one.
        fd = os.open(path, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    finally:
        waiter.kill()
        waiter.wait()
