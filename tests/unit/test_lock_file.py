"""_fs.lock_file beside `hermetic gc`, which removes lock files nobody holds."""

import fcntl
import os
import time

import pytest

from pytest_hermetic._fs import lock_file


def test_a_lock_on_a_file_gc_removed_is_taken_again_on_the_new_one(tmp_path):
    path = str(tmp_path / "lock")
    first = lock_file(path, fcntl.LOCK_EX)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child waits for the lock
        os.close(first)  # (its copy would hold the parent's lock)
        os.close(r)
        fd = lock_file(path, fcntl.LOCK_EX)
        os.write(w, b"locked")
        time.sleep(5)
        os.close(fd)
        os._exit(0)
    os.close(w)
    try:
        time.sleep(0.5)  # the child now waits in flock on the first file
        os.unlink(path)  # as gc removes it, holding the lock
        os.close(first)  # the waiting child gets the old, unlinked file
        assert os.read(r, 16) == b"locked"
        # The child must hold the file that `path` names now, not the unlinked one.
        fd = os.open(path, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
