"""The names OCI layers and overlayfs share, used by both directions (extract and write)."""

from __future__ import annotations

import os
import stat

OVERLAY_TRUSTED = "trusted.overlay."
"""Prefix of overlayfs' private xattrs when it is mounted by real root."""
OVERLAY_USER = "user.overlay."
"""Prefix of overlayfs' private xattrs with the ``userxattr`` option (rootless)."""

OVERLAY_PREFIXES = (OVERLAY_TRUSTED, OVERLAY_USER)  # never copied between a tar and a layer folder
WH = ".wh."  # OCI whiteout: ".wh.NAME" hides NAME of the layers below
WH_META = ".wh..wh."  # OCI-reserved names
WH_OPAQUE = ".wh..wh..opq"  # OCI opaque marker: the directory hides what lies below it
XATTR_PAX = "SCHILY.xattr."  # how PAX headers carry xattrs
CHUNK = 1 << 20  # one read or write of file data
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC  # a directory, never through a link


def is_whiteout(st: os.stat_result) -> bool:
    """Whether a file is an overlay whiteout: a 0/0 character device."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def proc_path(dir_fd: int, name: str) -> str:
    """A path to `name` in `dir_fd` for calls that take no dir_fd (xattrs).

    The magic link is an intermediate component, so it is followed to the
    directory we hold; `name` itself is then used with follow_symlinks=False.
    """
    return f"/proc/self/fd/{dir_fd}/{name}"
