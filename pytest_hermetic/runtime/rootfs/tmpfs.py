"""`--tmpfs` mounts and `--read-only`: the two ways a container's writable
places differ from the default (the whole root writable, through the overlay)."""

from __future__ import annotations

import os

from ..._record import record
from ...errors import ContainerStartError
from .. import syscalls as sc
from ..syscalls import MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY
from .mounts import set_mount_attrs

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it costs start-up
    from typing import Sequence


@record(frozen=True)
class TmpfsMount:
    target: str  # absolute, normalised (spec.check_target's)
    options: str = ""  # the kernel's: "size=67108864,mode=1777"
    noexec: bool = True
    readonly: bool = False


def mount_tmpfs(root: str, mounts: Sequence[TmpfsMount]) -> None:
    """Each tmpfs on its target, resolved inside the root as a volume's is
    (a symlink in the image never leads the mount out to the host); always
    nosuid and nodev."""
    from .volumes import open_in_root  # (volumes imports overlay: only a container with --tmpfs needs it)

    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for mount in mounts:
            try:
                fd = open_in_root(root_fd, mount.target, True)
            except OSError as exc:
                raise ContainerStartError(f"tmpfs {mount.target}: cannot make its mount point in the container "
                                          f"({exc.strerror or exc})") from None
            try:
                flags = MS_NOSUID | MS_NODEV | (MS_NOEXEC if mount.noexec else 0) | (MS_RDONLY if mount.readonly else 0)
                sc.mount("tmpfs", f"/proc/self/fd/{fd}", "tmpfs", flags, mount.options or None)
            except OSError as exc:
                raise ContainerStartError(f"tmpfs {mount.target}: cannot mount it ({exc.strerror or exc}; "
                                          f"options {mount.options or 'none'})") from None
            finally:
                os.close(fd)
    finally:
        os.close(root_fd)


def make_read_only(root: str, mount_points: Sequence[tuple[str, bool]] = ()) -> None:
    """The root and every mount below it so far read-only (the rootless
    `host` root is many mounts); what is mounted after (/proc, /dev, /tmp,
    tmpfs mounts, volumes) keeps its own flags.  `mount_points` (path, is a
    directory) are made first where missing: the init layer holds them, but
    not the rootless `host` root's top level."""
    from .volumes import open_in_root

    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for path, directory in mount_points:
            try:
                os.close(open_in_root(fd, path, directory))
            except OSError as exc:
                raise ContainerStartError(f"{path}: cannot make its mount point in the container "
                                          f"({exc.strerror or exc})") from None
        set_mount_attrs(fd, sc.MOUNT_ATTR_RDONLY)
    finally:
        os.close(fd)
