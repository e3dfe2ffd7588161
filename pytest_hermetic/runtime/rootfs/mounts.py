"""Mount helpers the root's steps share: bind mounts, mount attributes, files."""

from __future__ import annotations

import errno
import os

from .. import syscalls as sc
from ..syscalls import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REC, MS_REMOUNT


def write_file(path: str, data: bytes = b"") -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        if data:
            os.write(fd, data)
    finally:
        os.close(fd)


_mount_setattr_works: bool | None = None


def set_mount_attrs(fd: int, attrs: int) -> None:
    """mount_setattr (Linux 5.12+) applies to the whole tree; before it, a
    remount of the top mount (keeping the flags the kernel locked on it)."""
    global _mount_setattr_works
    if _mount_setattr_works is not False:
        try:
            sc.mount_setattr(fd, attrs, recursive=True)
            _mount_setattr_works = True
            return
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
            _mount_setattr_works = False
    flags = _locked_flags(fd) | (MS_NODEV if attrs & sc.MOUNT_ATTR_NODEV else 0)
    flags |= MS_RDONLY if attrs & sc.MOUNT_ATTR_RDONLY else 0
    sc.mount(None, f"/proc/self/fd/{fd}", None, MS_REMOUNT | MS_BIND | flags)


def bind_mount(source: str, target: str | int, readonly: bool, recursive: bool = True) -> None:
    """Bind `source` on `target` (a path, or an O_PATH fd from `open_in_root`)."""
    path = f"/proc/self/fd/{target}" if isinstance(target, int) else target
    flags = MS_BIND | (MS_REC if recursive else 0)
    sc.mount(source, path, None, flags)
    if readonly and isinstance(target, str):
        # A bind ignores MS_RDONLY; only a remount applies it.  Keep the
        # flags the kernel locked on the source (nodev, nosuid...).
        fd = os.open(target, os.O_PATH | os.O_CLOEXEC)
        try:
            set_mount_attrs(fd, sc.MOUNT_ATTR_RDONLY)
        finally:
            os.close(fd)


def _locked_flags(fd: int) -> int:
    flags = 0
    try:
        st = os.fstatvfs(fd)
    except OSError:
        return flags
    for bit, mount_flag in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC)):
        if st.f_flag & bit:
            flags |= mount_flag
    return flags
