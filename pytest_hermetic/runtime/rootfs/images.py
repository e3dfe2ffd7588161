"""Layers stored as EROFS images: mounted read-only from their files, in
the container's own mount namespace, as the overlay's lower layers.

A file-backed EROFS mount (Linux 6.12+) needs no loop device and costs
about 25 us; it lives exactly as long as the container's mount namespace,
so nothing is ever mounted on the host and nothing needs cleaning.  Only
real root may mount EROFS (it is not mountable in a user namespace):
rootless stores keep unpacked folders.
"""

from __future__ import annotations

import os

from ...errors import SyscallError
from .. import syscalls as sc
from ..syscalls import MS_NODEV, MS_RDONLY


def mount_layer_images(images: list[tuple[str, str]]) -> None:
    """Mount each (image file, directory), making the directory."""
    for image, target in images:
        os.mkdir(target, 0o755)
        try:
            sc.mount(image, target, "erofs", MS_RDONLY | MS_NODEV, None)
        except OSError as exc:
            raise SyscallError("mount", exc.errno or 0,
                               f"EROFS layer image {image} on {target} (the kernel must mount EROFS from a file: "
                               "Linux 6.12+; as root only; with HERMETIC_LAYER_FORMAT=dir the store unpacks "
                               "layers instead: `hermetic rmi` the image and pull it again)") from None


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
    from ..fork import fork  # (the engine's one fork of a maybe threaded caller)

    pid = fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            sc.unshare(sc.CLONE_NEWNS)
            sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
            sc.mount(image, scratch, "erofs", MS_RDONLY | MS_NODEV, None)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0
