"""Reading a stored layer's files in a test, whatever the store keeps: an unpacked folder, or an
EROFS image (extracted with erofs-utils' own `fsck.erofs --extract`, an implementation
independent of ours, next to the store)."""

from __future__ import annotations

import os
import subprocess


def layer_tree(store, diff_id: str) -> str:  # noqa: ANN001 - a Store
    """A folder holding layer `diff_id`'s files."""
    image = store.layer_image(diff_id)
    if image is None:
        return store.layer_root(diff_id)
    dest = os.path.join(os.path.dirname(store.root), f"extracted-{diff_id.split(':')[-1][:16]}")
    if not os.path.isdir(dest):
        result = subprocess.run(["fsck.erofs", f"--extract={dest}", image], capture_output=True, text=True)
        assert result.returncode == 0, f"fsck.erofs {image}: {result.stdout}{result.stderr}"
    return dest
