"""The image's layers as one overlay: the mount options, long layer lists,
and the rootless `host` root (one overlay per top-level directory)."""

from __future__ import annotations

import os
import stat
TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it costs start-up
    from . import RootfsConfig

from ...errors import SyscallError
from .. import syscalls as sc
from ..syscalls import MS_NODEV
from .mounts import bind_mount, write_file


# Host top-level entries that a rootless `host` root leaves out or mounts freshly.
_SKIP_HOST_TOP = {"proc", "sys", "dev", "tmp", "lost+found"}
# A replayed layer's opaque directory, rootless (layers.OVERLAY_USER + "opaque").
_OPAQUE = "user.overlay.opaque"
# Overlayfs stacks at most this many lower directories (OVL_MAX_STACK in
# fs/overlayfs; the same from 4.x to 6.18, checked on 6.1 and 6.18).
OVERLAY_MAX_LOWERS = 500
# mount(2) copies at most one page of options, with its closing NUL.
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def overlay_options(lowers: list[str], upper: str, work: str, userns: bool) -> str:
    """The engine's overlay mount options (`doctor` mounts with the very same)."""
    escaped = [p.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,") for p in lowers]
    options = f"lowerdir={':'.join(escaped)},upperdir={upper},workdir={work}"
    # The rw layer must hold exactly what changed, so `commit` can read it.
    options += ",redirect_dir=off,metacopy=off" if not userns else ",userxattr"
    return options


def mount_overlay(lowers: list[str], upper: str, work: str, target: str, userns: bool, links: str,
                  base: str = "") -> None:
    """Mount an overlay of `lowers` (top first) on `target`.

    mount(2) takes at most one page of options, which 17 layers of a store
    under a long path outgrow.  Then, from a chosen working directory:
    - `base` (the store's layer folder), with the lowers below it named
      relative to it: no extra work, up to 50-odd layers;
    - else `links`, a fresh folder on the container's private tmpfs, with
      one short symlink per directory ("1f"), as Docker's overlay2 does with
      its `l/` links, but private to this container: nothing in the store to
      keep in step.  About 4 us a layer, up to overlayfs's own limit
      (OVERLAY_MAX_LOWERS) whatever the paths' length.
    Overlayfs resolves the names once, at mount time.  (The new mount API's
    `lowerdir+`, from kernel 6.8, measured 3.7 us a layer against 2.9 from
    the layer folder and 5 with links; missing on 6.1, it would need these
    as a fallback anyway: docs/engine.md.)
    """
    options = overlay_options(lowers, upper, work, userns)
    if len(options) < PAGE_SIZE:
        _mount_overlay_options(options, target, len(lowers))
        return
    if base:
        cut = len(base) + 1
        options = overlay_options([p[cut:] if p.startswith(base + "/") else p for p in lowers], upper, work, userns)
    cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if base and len(options) < PAGE_SIZE:
            os.chdir(base)
        else:
            os.mkdir(links, 0o700)
            os.chdir(links)
            names = [f"{number:x}" for number in range(len(lowers))]
            for name, path in zip(names, lowers):
                os.symlink(path, name)
            os.symlink(upper, "u")
            os.symlink(work, "w")
            options = overlay_options(names, "u", "w", userns)
        _mount_overlay_options(options, target, len(lowers))
    finally:
        os.fchdir(cwd)
        os.close(cwd)


def _mount_overlay_options(options: str, target: str, depth: int) -> None:
    try:
        sc.mount("overlay", target, "overlay", MS_NODEV, options)
    except OSError as exc:
        # The options can run to a page: name the layer count, not every path.
        raise SyscallError("mount", exc.errno or 0, f"overlay of {depth} layers on {target}") from None


def mount_host_per_directory(config: RootfsConfig) -> None:
    """A rootless `host` root: one overlay per top-level directory under a
    tmpfs, since an overlay of "/" cannot see through its submounts in a user
    namespace (see shared/notes/host-image-overlay.md).  Layers committed on
    top of `host` take part at the top level as overlayfs would have them:
    their own new entries, whiteouts and opaque directories."""
    root = config.merged
    init = config.lowers[0]
    image_lowers = config.lowers[1:-1]  # layers committed on top of `host`, replayed, top first
    sc.mount("tmpfs", root, "tmpfs", MS_NODEV, "mode=755")
    submounts = _mount_points_below_top()
    names = set(os.listdir("/"))
    for layer in image_lowers:
        names.update(os.listdir(layer))
    for number, name in enumerate(sorted(names)):
        host_path = "/" + name
        target = f"{root}/{name}"
        dirs, below = _top_level_entry(name, image_lowers) if image_lowers else ([], host_path)
        if not dirs:
            if below is None:
                continue  # whited out by a layer
            if os.path.islink(below):
                os.symlink(os.readlink(below), target)
                continue
            if not os.path.isdir(below):
                if below != host_path:  # a layer's file, on the container's private replay tmpfs
                    write_file(target)
                    bind_mount(below, target, readonly=False, recursive=False)
                continue
        os.mkdir(target, 0o755)
        if name in _SKIP_HOST_TOP:
            continue
        host = below == host_path and os.path.isdir(host_path) and not os.path.islink(host_path)
        if host and name in submounts:
            # Its submounts cannot be overlaid from here: show it read-only.
            bind_mount(host_path, target, readonly=True, recursive=True)
            continue
        lowers = ([f"{init}/{name}"] if os.path.isdir(f"{init}/{name}") else []) + dirs + ([host_path] if host else [])
        upper, work = f"{config.upper}/{name}", f"{config.work}/{name}"
        os.makedirs(upper, exist_ok=True)
        os.makedirs(work, exist_ok=True)
        mount_overlay(lowers, upper, work, target, True, f"{config.scratch}/links{number}")


def _top_level_entry(name: str, layers: list[str]) -> tuple[list[str], str | None]:
    """What the layers (top first) make of `/NAME`: their directories NAME
    that merge, and what shows below them: the host's entry, a layer's
    file, or None (a whiteout or an opaque directory hides the rest)."""
    dirs: list[str] = []
    for layer in layers:
        path = f"{layer}/{name}"
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            dirs.append(path)
            try:
                if os.getxattr(path, _OPAQUE, follow_symlinks=False) == b"y":
                    return dirs, None
            except OSError:  # ENODATA: not opaque
                pass
            continue
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # a whiteout
            return dirs, None
        return dirs, None if dirs else path  # a file hides what is below it, and a directory above hides it
    return dirs, "/" + name


def _mount_points_below_top() -> set[str]:
    """Top-level directories of "/" that have something mounted below them."""
    names: set[str] = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            parts = point.split("/")
            if len(parts) > 1 and parts[1]:
                names.add(parts[1].replace("\\040", " "))
    return names
