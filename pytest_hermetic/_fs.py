"""Small file-system helpers shared by the store and the container state."""

from __future__ import annotations

import os
import shutil
import sys


def rmtree(path: str) -> None:
    """Remove a tree, also one holding directories without write or search
    permission (overlayfs work dirs) and 0/0 whiteout devices."""

    def retry(func, failed_path, _exc) -> None:  # noqa: ANN001
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
