"""Small file-system helpers shared by the store, networks and the container state."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterator


@contextlib.contextmanager
def flock(path: str, *, shared: bool = False) -> "Iterator[None]":
    """Hold a lock on the file `path` (made if missing) between processes and
    threads: exclusive, or shared with other shared holders."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def rmtree(path: str) -> None:
    """Remove a tree, also one holding directories without write or search
    permission (overlayfs work dirs) and 0/0 whiteout devices."""

    def retry(func, failed_path, _exc) -> None:  # noqa: ANN001
        if not os.path.lexists(failed_path):
            return  # removed meanwhile (by its owner, by another gc)
        try:
            os.chmod(os.path.dirname(failed_path), 0o700)
            if os.path.isdir(failed_path) and not os.path.islink(failed_path):
                os.chmod(failed_path, 0o700)
                shutil.rmtree(failed_path, ignore_errors=True)
            else:
                func(failed_path)
        except OSError:
            pass

    if os.path.isdir(path) and not os.path.islink(path):
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=retry)
        else:
            shutil.rmtree(path, onerror=retry)
    elif os.path.lexists(path):
        os.unlink(path)
