"""Layers stored as EROFS images: each mounted read-only once, on the host,
by the store that keeps it, and used by containers as an ordinary overlay
lower folder, exactly like an unpacked layer.

A file-backed EROFS mount (Linux 6.12+) needs no loop device.  One shared
mount per layer keeps its page cache warm across containers and costs a
container start nothing: a mount per container cost ~1 ms a start (a cold
cache of its own, and the unmount when its namespace went: docs/images.md).

The store's mounts must not propagate anywhere: where the mount holding the
store is shared (systemd makes "/" shared), the store's folder is first made
a private bind mount of itself, as Docker does with its overlay2 folder, and
the layer mounts go below it.  Only real root may mount EROFS (it is not
mountable in a user namespace): rootless stores keep unpacked folders.
"""

from __future__ import annotations

import errno
import os

from ...errors import SyscallError
from .. import syscalls as sc
from ..syscalls import MNT_DETACH, MS_BIND, MS_NODEV, MS_NOSUID, MS_PRIVATE, MS_RDONLY


def mount_layer_image(image: str, target: str) -> None:
    """Mount the EROFS `image` read-only on the folder `target`."""
    try:
        sc.mount(image, target, "erofs", MS_RDONLY | MS_NODEV | MS_NOSUID, None)
    except OSError as exc:
        raise SyscallError("mount", exc.errno or 0,
                           f"EROFS layer image {image} on {target} (the kernel must mount EROFS from a file: "
                           "Linux 6.12+; as root only; with HERMETIC_LAYER_FORMAT=dir the store unpacks "
                           "layers instead: `hermetic rmi` the image and pull it again)") from None


def unmount(target: str) -> bool:
    """Detach the mount on `target` (lazily: a live container's overlay keeps
    its lower as long as it runs); False if nothing was mounted there."""
    try:
        sc.umount2(target, MNT_DETACH)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOENT):
            return False
        raise
    return True


def _unescape(field: str) -> str:
    """A path as /proc/self/mountinfo writes it (space, tab, newline, backslash octal-escaped)."""
    return field.encode().decode("unicode_escape").encode("latin-1").decode(errors="surrogateescape") \
        if "\\" in field else field


def mount_table() -> list[tuple[str, bool]]:
    """(mount point, shared) of every mount in this mount namespace, in mount order."""
    table = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            optional = fields[6:fields.index("-")]
            table.append((_unescape(fields[4]), any(o.startswith("shared:") for o in optional)))
    return table


def mounts_below(path: str) -> list[str]:
    """Mount points strictly below `path`, the latest first (the order to detach them in)."""
    prefix = path.rstrip("/") + "/"
    return [point for point, _ in reversed(mount_table()) if point.startswith(prefix)]


def holder_is_shared(path: str) -> bool:
    """Whether the mount that holds `path` (the deepest mount point above it) propagates mounts made below it."""
    best, shared = "", False
    for point, is_shared in mount_table():  # (a later mount on the same point hides the earlier)
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, shared = point, is_shared
    return shared


def make_private_bind(path: str) -> int:
    """Make `path` a private bind mount of itself, so that mounts below it propagate nowhere;
    the new mount's id (`top_mount_id`)."""
    sc.mount(path, path, None, MS_BIND, None)
    sc.mount(None, path, None, MS_PRIVATE, None)
    return top_mount_id(path) or 0


def top_mount_id(path: str) -> int | None:
    """The id of the mount on top at exactly `path` (mountinfo's first field), if any."""
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if _unescape(fields[4]) == path:
                found = int(fields[0])  # (listed in mount order: the last is on top)
    return found


def can_mount_images(image: str, scratch: str) -> bool:
    """Whether this kernel, for this process, mounts the EROFS `image` from its file.

    Tried for real in a child in a throwaway mount namespace: the kernel
    may lack EROFS, or its file-backed mounts (before 6.12), or we may not
    be real root.  `scratch` is an empty folder to mount on.
    """
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/filesystems") as f:
            if not any(line.split()[-1:] == ["erofs"] for line in f):
                return False
    except OSError:
        return False
    from ..fork import fork, release_signals  # (the engine's one fork of a maybe threaded caller)

    pid = fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            release_signals()  # (inside the `finally: os._exit`: see fork.py)
            sc.unshare(sc.CLONE_NEWNS)
            sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
            sc.mount(image, scratch, "erofs", MS_RDONLY | MS_NODEV | MS_NOSUID, None)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0
