"""Volumes: host paths bound into the container's root, their targets
resolved inside that root (never out to the host), nodev and read-only as asked."""

from __future__ import annotations

import errno
import os
import stat
TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it costs start-up
    from . import Bind, RootfsConfig

from ...errors import ContainerStartError, SyscallError
from .. import syscalls as sc
from ..syscalls import MS_MOVE, MS_NODEV, MS_NOSUID
from .mounts import bind_mount, set_mount_attrs, write_file
from .overlay import mount_overlay


def mount_volumes(config: RootfsConfig, root: str, source_dirs: dict[str, bool] | None = None) -> None:
    """Every volume, its target resolved inside the container's root: a
    symlink planted in an earlier volume (or in the image) is followed as
    the container would see it, never out to the host (mounts go onto
    /proc/self/fd/N of the resolved target, as runc does).  `source_dirs`:
    which sources are folders, if the caller looked already."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for number, bind in enumerate(config.binds):
            directory = source_dirs[bind.source] if source_dirs is not None else os.path.isdir(bind.source)
            try:
                fd = open_in_root(root_fd, bind.target, directory)
            except OSError as exc:
                raise ContainerStartError(f"volume {bind.source}:{bind.target}: cannot make its mount point "
                                          f"in the container ({exc.strerror or exc})") from None
            overlay = bind.overlay and directory  # nodev already
            try:
                if overlay:
                    _overlay_volume(bind, fd, f"{config.scratch}/volume{number}", config.userns,
                                    (config.scratch, config.merged))
                else:
                    bind_mount(bind.source, fd, bind.readonly)
            finally:
                os.close(fd)
            if not overlay:
                _restrict(root_fd, bind, nodev=not config.privileged)
    finally:
        os.close(root_fd)


def open_in_root(root_fd: int, path: str, directory: bool) -> int:
    """An O_PATH fd on `path` resolved with `root_fd` as "/" (symlinks and
    ".." included, never leading out), its missing components created: as
    directories, the last one as an empty file unless `directory`.  A
    dangling symlink on the way is followed, inside the root, to where its
    target is made."""
    rel = _relative(path)
    for _ in range(_MAX_SYMLINKS):
        try:
            return _resolve(root_fd, rel)
        except FileNotFoundError:
            pass
        rel = _make_missing(root_fd, rel, directory)
    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)


_MAX_SYMLINKS = 40  # as the kernel's own path walk


def _relative(path: str) -> str:
    return "/".join(part for part in path.split("/") if part not in ("", ".")) or "."


def _make_missing(root_fd: int, rel: str, directory: bool) -> str:
    """Create the missing components of `rel`; returns the path to resolve
    next (another one when a dangling symlink was met)."""
    parts = rel.split("/")
    for depth in range(1, len(parts) + 1):
        try:
            os.close(_resolve(root_fd, "/".join(parts[:depth])))
            continue
        except FileNotFoundError:
            pass
        parent_rel = "/".join(parts[:depth - 1]) or "."
        name = parts[depth - 1]
        parent = _resolve(root_fd, parent_rel)
        try:
            if depth < len(parts) or directory:
                os.mkdir(name, 0o755, dir_fd=parent)
            else:
                os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=parent))
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ELOOP):
                raise
            # A dangling symlink: its target, inside the root, is what to make.
            target = os.readlink(name, dir_fd=parent)
            base = "" if target.startswith("/") else parent_rel
            return _relative("/".join((base, target, *parts[depth:])))
        finally:
            os.close(parent)
    return rel


_openat2_works: bool | None = None


def _resolve(root_fd: int, rel: str) -> int:
    global _openat2_works
    if _openat2_works is not False:
        try:
            fd = sc.openat2(root_fd, rel, os.O_PATH | os.O_CLOEXEC, sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS)
            _openat2_works = True
            return fd
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise FileNotFoundError(exc.errno, os.strerror(exc.errno), rel) if exc.errno == errno.ENOENT else exc
            _openat2_works = False
    return _resolve_without_symlinks(root_fd, rel)


def _resolve_without_symlinks(root_fd: int, rel: str) -> int:
    """Before Linux 5.6 (no openat2): one component at a time, and a symlink
    on the way is refused rather than followed."""
    fd = os.dup(root_fd)
    for name in rel.split("/"):
        if name in ("", "."):
            continue
        try:
            if name == "..":
                raise OSError(errno.EXDEV, "'..' in a mount target", rel)
            next_fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        finally:
            os.close(fd)
        fd = next_fd
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.ELOOP, "a symlink on the way (this kernel has no openat2, Linux 5.6+, to follow it "
                          "inside the container's root)", rel)
    return fd


def _restrict(root_fd: int, bind: Bind, nodev: bool) -> None:
    """nodev on a volume and every mount below it (a device node planted
    there must not open a host device), read-only if asked; a volume that
    is itself a device node is an explicit grant and keeps working, and so
    are all of them in a privileged container (`-v /dev:/dev`), which could
    lift nodev itself."""
    fd = _resolve(root_fd, bind.target.strip("/") or ".")  # now the volume's own root
    try:
        mode = os.fstat(fd).st_mode
        attrs = 0 if not nodev or stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else sc.MOUNT_ATTR_NODEV
        attrs |= sc.MOUNT_ATTR_RDONLY if bind.readonly else 0
        if attrs:
            set_mount_attrs(fd, attrs)
    finally:
        os.close(fd)


def _overlay_volume(bind: Bind, target_fd: int, scratch: str, userns: bool, own: tuple[str, ...]) -> None:
    """A host folder seen through an overlay: the container may write to
    it, and its writes vanish with it (as everywhere else in `host`)."""
    os.mkdir(scratch)  # (its own on the container's scratch tmpfs: volume<N>)
    os.mkdir(f"{scratch}/upper")
    os.mkdir(f"{scratch}/work")
    # The volume's own folder shows its top layer's mode and owner (the
    # upper folder's): the source's, as the host has them (its /tmp: 1777).
    source = os.stat(bind.source)
    os.chmod(f"{scratch}/upper", stat.S_IMODE(source.st_mode))
    try:
        os.chown(f"{scratch}/upper", source.st_uid, source.st_gid)
    except OSError:  # rootless: an owner outside the user namespace (the folder stays its root's)
        pass
    try:
        mount_overlay([bind.source], f"{scratch}/upper", f"{scratch}/work", f"/proc/self/fd/{target_fd}", userns,
                      f"{scratch}/links")
    except SyscallError as exc:
        # In a user namespace the kernel refuses an overlay of a folder
        # with a mount below it (the host's, locked: "failed to clone
        # lowerpath"): another program's mount under the host's /tmp would
        # fail every rootless test.  Go one level down instead.
        if not userns or exc.errno != errno.EINVAL:
            raise
        _overlay_per_entry(bind.source, target_fd, scratch, own)


def _overlay_per_entry(source: str, target_fd: int, scratch: str, own: tuple[str, ...]) -> None:
    """`source` copy-on-write one entry at a time, for a user namespace that
    cannot overlay it whole: a tmpfs holding an overlay of each folder with
    no mount below it, a read-only view of each folder with one (as a
    rootless `host` root shows such top-level folders) and of each other
    entry (a file there is read-only: the one difference from an overlay)."""
    below = _mount_points_below(source, own)
    tree = f"{scratch}/tree"
    os.mkdir(tree)
    sc.mount("tmpfs", tree, "tmpfs", MS_NODEV | MS_NOSUID, f"mode={stat.S_IMODE(os.stat(source).st_mode):o}")
    for number, name in enumerate(sorted(os.listdir(source))):
        path, inside = f"{source}/{name}", f"{tree}/{name}"
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(path), inside)
        elif stat.S_ISDIR(st.st_mode):
            os.mkdir(inside, stat.S_IMODE(st.st_mode))
            if any(point == path or point.startswith(path + "/") for point in below):
                bind_mount(path, inside, readonly=True, recursive=True)
            else:
                entry = f"{scratch}/entry{number}"
                os.makedirs(f"{entry}/upper")
                os.mkdir(f"{entry}/work")
                mount_overlay([path], f"{entry}/upper", f"{entry}/work", inside, True, f"{entry}/links")
        else:
            write_file(inside)
            bind_mount(path, inside, readonly=True, recursive=False)
    sc.mount(tree, f"/proc/self/fd/{target_fd}", None, MS_MOVE)


_on_host_root: dict[str, bool] = {}


def on_host_root(path: str) -> bool:
    """Whether the host's folder `path` lies on the host root's own mount
    (no mount point at it or above it but "/", no symlink on the way): the
    `host` root's overlay, whose lowest layer is "/", then shows it as the
    host has it, copy-on-write.  Looked up once per process and path (in
    the caller's mount namespace, which containers are made from)."""
    found = _on_host_root.get(path)
    if found is None:
        from .images import mount_table  # (only the pytest plugin asks)

        found = os.path.isdir(path) and os.path.realpath(path) == path and not any(
            point != "/" and (path + "/").startswith(point.rstrip("/") + "/") for point, _ in mount_table())
        _on_host_root[path] = found
    return found


def _mount_points_below(source: str, own: tuple[str, ...]) -> list[str]:
    """Mount points strictly below `source`, but for the container's own (`own` and below)."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(source.rstrip("/") + "/") and not any(
                    point == mine or point.startswith(mine + "/") for mine in own if mine):
                points.append(point)
    return points
