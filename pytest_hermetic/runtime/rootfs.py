"""The container's root filesystem: overlay, /proc, /dev, /sys, /tmp, binds,
masks, pivot_root.

Everything here runs in the child, inside its fresh mount namespace: every
mount it makes dies with that namespace, none is ever made on the host.
"""

from __future__ import annotations

import errno
import os
import stat
from .._record import record, factory
    
from ..errors import ContainerStartError, SyscallError
from . import syscalls as sc
from .syscalls import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REC, MS_REMOUNT

HOST_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# Directories the engine always mounts over; `/run` stays the image's own.
MOUNT_POINTS = ("proc", "dev", "sys", "tmp")
# As runc masks by default.
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
# Host top-level entries that a rootless `host` root leaves out or mounts freshly.
_SKIP_HOST_TOP = {"proc", "sys", "dev", "tmp", "lost+found"}
# A replayed layer's opaque directory, rootless (layers.OVERLAY_USER + "opaque").
_OPAQUE = "user.overlay.opaque"
# Overlayfs stacks at most this many lower directories (OVL_MAX_STACK in
# fs/overlayfs; the same from 4.x to 6.18, checked on 6.1 and 6.18).
OVERLAY_MAX_LOWERS = 500
# mount(2) copies at most one page of options, with its closing NUL.
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@record(frozen=True)
class Bind:
    source: str
    target: str
    readonly: bool = False
    overlay: bool = False  # writable, but writes land in the container's scratch and vanish


@record
class RootfsConfig:
    lowers: list[str]  # overlay lower dirs, top first; lowers[0] is the init layer
    upper: str
    work: str
    merged: str
    host_root: bool = False  # the last lower is the host's "/"
    userns: bool = False  # mount overlays with `userxattr`
    privileged: bool = False
    binds: list[Bind] = factory(list)
    cgroup_v2: bool = False  # mount cgroup2 (read-only) on /sys/fs/cgroup
    scratch: str = ""  # becomes a tmpfs first: holds the init layer, the mount point, maybe the rw layer
    init_files: dict[str, str] = factory(dict)  # "etc/hostname" -> text
    # (layer tar, dir): layers unpacked at start onto a private tmpfs, for
    # images committed on top of `host` (see Container._layer_dirs).
    replay: list[tuple[str, str]] = factory(list)
    layers_dir: str = ""  # the store's layer folder, where the image's lowers are


def write_init_layer(config: "RootfsConfig") -> None:
    """Build the init layer on a fresh tmpfs: engine-owned files and the
    mount points of /proc, /dev, /sys, /tmp and of every bind.

    It lives on the scratch tmpfs, mounted in the container's namespace,
    because overlayfs refuses a lower layer that sits below another lower
    layer (the `host` image's "/"), and so that nothing the engine needs
    lands in the read-write layer that `commit` reads.
    """
    # Plain os calls: this runs for every container, and file objects cost.
    path = config.lowers[0]
    os.mkdir(path, 0o755)
    made = {path}
    for name in MOUNT_POINTS:
        os.mkdir(f"{path}/{name}", 0o755)
        made.add(f"{path}/{name}")
    for name, text in config.init_files.items():
        target = f"{path}/{name}"
        parent = os.path.dirname(target)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        _write_file(target, text.encode())
    for bind in config.binds:
        stub = os.path.join(path, bind.target.lstrip("/"))
        if os.path.isdir(bind.source):
            os.makedirs(stub, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(stub), exist_ok=True)
            if not os.path.lexists(stub):
                open(stub, "a").close()


def _write_file(path: str, data: bytes = b"") -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        if data:
            os.write(fd, data)
    finally:
        os.close(fd)


def setup(config: RootfsConfig, hostname: str) -> None:
    """Build the root in the current (fresh) mount namespace and pivot into it.

    The cgroup2 file system is mounted later (`mount_cgroup2`), once the
    process sits in its cgroup namespace.
    """
    sc.mount(None, "/", None, MS_REC | sc.MS_PRIVATE)
    sc.mount("tmpfs", config.scratch, "tmpfs", MS_NODEV | MS_NOSUID, "mode=755")
    for path in (config.merged, config.upper, config.work):
        if path.startswith(config.scratch + "/"):
            os.mkdir(path, 0o755)
    write_init_layer(config)
    if config.replay:
        _replay_layers(config.replay, config.userns)
    root = config.merged
    if config.host_root and config.userns:
        _mount_host_per_directory(config)
    else:
        _mount_overlay(config.lowers, config.upper, config.work, root, config.userns, f"{config.scratch}/links",
                       config.layers_dir)
    _mount_proc(root)
    _mount_dev(root, config.userns)
    _mount_sys(root, config.privileged)
    sc.mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    if config.binds:  # last, so a bind below /tmp is not hidden by it
        _mount_volumes(config, root)
    if not config.privileged:
        _mask(root)
    sc.sethostname(hostname)
    _pivot(root)


def _replay_layers(replay: list[tuple[str, str]], userns: bool) -> None:
    from ..images import layers

    os.mkdir(os.path.dirname(replay[0][1]))
    prefix = layers.OVERLAY_USER if userns else layers.OVERLAY_TRUSTED
    for tar_path, directory in replay:
        os.mkdir(directory, 0o755)
        layers.extract_layer(tar_path, directory, xattr_prefix=prefix)


def overlay_options(lowers: list[str], upper: str, work: str, userns: bool) -> str:
    """The engine's overlay mount options (`doctor` mounts with the very same)."""
    escaped = [p.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,") for p in lowers]
    options = f"lowerdir={':'.join(escaped)},upperdir={upper},workdir={work}"
    # The rw layer must hold exactly what changed, so `commit` can read it.
    options += ",redirect_dir=off,metacopy=off" if not userns else ",userxattr"
    return options


def _mount_overlay(lowers: list[str], upper: str, work: str, target: str, userns: bool, links: str,
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


def _mount_host_per_directory(config: RootfsConfig) -> None:
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
                    _write_file(target)
                    _bind(below, target, readonly=False, recursive=False)
                continue
        os.mkdir(target, 0o755)
        if name in _SKIP_HOST_TOP:
            continue
        host = below == host_path and os.path.isdir(host_path) and not os.path.islink(host_path)
        if host and name in submounts:
            # Its submounts cannot be overlaid from here: show it read-only.
            _bind(host_path, target, readonly=True, recursive=True)
            continue
        lowers = ([f"{init}/{name}"] if os.path.isdir(f"{init}/{name}") else []) + dirs + ([host_path] if host else [])
        upper, work = f"{config.upper}/{name}", f"{config.work}/{name}"
        os.makedirs(upper, exist_ok=True)
        os.makedirs(work, exist_ok=True)
        _mount_overlay(lowers, upper, work, target, True, f"{config.scratch}/links{number}")


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


def _mount_volumes(config: RootfsConfig, root: str) -> None:
    """Every volume, its target resolved inside the container's root: a
    symlink planted in an earlier volume (or in the image) is followed as
    the container would see it, never out to the host (mounts go onto
    /proc/self/fd/N of the resolved target, as runc does)."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for number, bind in enumerate(config.binds):
            directory = os.path.isdir(bind.source)
            try:
                fd = open_in_root(root_fd, bind.target, directory)
            except OSError as exc:
                raise ContainerStartError(f"volume {bind.source}:{bind.target}: cannot make its mount point "
                                          f"in the container ({exc.strerror or exc})") from None
            overlay = bind.overlay and directory  # nodev already
            try:
                if overlay:
                    _overlay_volume(bind, fd, f"{config.scratch}/volume{number}", config.userns)
                else:
                    _bind(bind.source, fd, bind.readonly)
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
            _set_mount_attrs(fd, attrs)
    finally:
        os.close(fd)


_mount_setattr_works: bool | None = None


def _set_mount_attrs(fd: int, attrs: int) -> None:
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


def _bind(source: str, target: str | int, readonly: bool, recursive: bool = True) -> None:
    """Bind `source` on `target` (a path, or an O_PATH fd from `open_in_root`)."""
    path = f"/proc/self/fd/{target}" if isinstance(target, int) else target
    flags = MS_BIND | (MS_REC if recursive else 0)
    sc.mount(source, path, None, flags)
    if readonly and isinstance(target, str):
        # A bind ignores MS_RDONLY; only a remount applies it.  Keep the
        # flags the kernel locked on the source (nodev, nosuid...).
        fd = os.open(target, os.O_PATH | os.O_CLOEXEC)
        try:
            _set_mount_attrs(fd, sc.MOUNT_ATTR_RDONLY)
        finally:
            os.close(fd)


def _overlay_volume(bind: Bind, target_fd: int, scratch: str, userns: bool) -> None:
    """A host folder seen through an overlay: the container may write to
    it, and its writes vanish with it (as everywhere else in `host`)."""
    os.makedirs(f"{scratch}/upper")
    os.mkdir(f"{scratch}/work")
    _mount_overlay([bind.source], f"{scratch}/upper", f"{scratch}/work", f"/proc/self/fd/{target_fd}", userns,
                   f"{scratch}/links")


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


def _mount_proc(root: str) -> None:
    sc.mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _mount_dev(root: str, userns: bool) -> None:
    dev = root + "/dev"
    # nodev, as every writable mount of the container: a node made with
    # mknod (CAP_MKNOD is in Docker's default set) opens nothing.  The
    # host's own nodes, bound here, keep their mount's flags and work.
    sc.mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NODEV | sc.MS_STRICTATIME, "mode=755,size=65536k")
    for name in HOST_DEVICES:
        _write_file(f"{dev}/{name}")
        sc.mount(f"/dev/{name}", f"{dev}/{name}", None, MS_BIND)
    os.mkdir(f"{dev}/pts")
    pts_options = "newinstance,ptmxmode=0666,mode=0620" + ("" if userns else ",gid=5")
    sc.mount("devpts", f"{dev}/pts", "devpts", MS_NOSUID | MS_NOEXEC, pts_options)
    os.symlink("pts/ptmx", f"{dev}/ptmx")
    os.mkdir(f"{dev}/shm")
    sc.mount("shm", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")
    os.mkdir(f"{dev}/mqueue")
    sc.mount("mqueue", f"{dev}/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2"), ("core", "/proc/kcore")):
        os.symlink(target, f"{dev}/{name}")


def _mount_sys(root: str, privileged: bool) -> None:
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | (0 if privileged else MS_RDONLY)
    sc.mount("sysfs", root + "/sys", "sysfs", flags)


def mount_cgroup2(config: RootfsConfig) -> None:
    """After pivot_root, in the container's cgroup namespace: /sys/fs/cgroup
    shows the container's own cgroup as its root (read-only)."""
    if config.cgroup_v2 and os.path.isdir("/sys/fs/cgroup"):
        flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | (0 if config.privileged else MS_RDONLY)
        sc.mount("cgroup2", "/sys/fs/cgroup", "cgroup2", flags)


def _mask(root: str) -> None:
    for path in MASKED_PATHS:
        target = root + path
        try:
            st = os.lstat(target)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            sc.mount("tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0")
        else:
            sc.mount("/dev/null", target, None, MS_BIND)  # the host's (a volume may cover the container's /dev)
    for path in READONLY_PATHS:
        target = root + path
        if os.path.exists(target):
            sc.mount(target, target, None, MS_BIND | MS_REC)
            sc.mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _pivot(root: str) -> None:
    # pivot_root(".", ".") stacks the old root under the new one; detaching
    # it leaves no path back to the host's tree.
    os.chdir(root)
    sc.pivot_root(".", ".")
    sc.umount2(".", sc.MNT_DETACH)
    os.chdir("/")
