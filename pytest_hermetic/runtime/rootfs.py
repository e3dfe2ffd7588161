"""The container's root filesystem: overlay, /proc, /dev, /sys, /tmp, binds,
masks, pivot_root.

Everything here runs in the child, inside its fresh mount namespace: every
mount it makes dies with that namespace, none is ever made on the host.
"""

from __future__ import annotations

import os
import stat
from .._record import record, factory
    
from ..errors import SyscallError
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
    for number, bind in enumerate(config.binds):  # last, so a bind below /tmp is not hidden by it
        if bind.overlay and os.path.isdir(bind.source):
            _overlay_volume(bind, root + bind.target, f"{config.scratch}/volume{number}", config.userns)
        else:
            _bind(bind.source, root + bind.target, bind.readonly)
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


def _overlay_options(lowers: list[str], upper: str, work: str, userns: bool) -> str:
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
    options = _overlay_options(lowers, upper, work, userns)
    if len(options) < PAGE_SIZE:
        _mount_overlay_options(options, target, len(lowers))
        return
    if base:
        cut = len(base) + 1
        options = _overlay_options([p[cut:] if p.startswith(base + "/") else p for p in lowers], upper, work, userns)
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
            options = _overlay_options(names, "u", "w", userns)
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


def _bind(source: str, target: str, readonly: bool, recursive: bool = True) -> None:
    if not os.path.lexists(target):
        # Only below a fresh tmpfs (/tmp): elsewhere the init layer has the stub.
        if os.path.isdir(source):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "a").close()
    flags = MS_BIND | (MS_REC if recursive else 0)
    sc.mount(source, target, None, flags)
    if readonly:
        # A bind ignores MS_RDONLY; only a remount applies it.  Keep the
        # flags the kernel locked on the source (nodev, nosuid...).
        extra = _locked_flags(target)
        sc.mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | extra)


def _overlay_volume(bind: Bind, target: str, scratch: str, userns: bool) -> None:
    """A host folder seen through an overlay: the container may write to
    it, and its writes vanish with it (as everywhere else in `host`)."""
    os.makedirs(f"{scratch}/upper")
    os.mkdir(f"{scratch}/work")
    if not os.path.lexists(target):
        os.makedirs(target, exist_ok=True)
    _mount_overlay([bind.source], f"{scratch}/upper", f"{scratch}/work", target, userns, f"{scratch}/links")


def _locked_flags(path: str) -> int:
    flags = 0
    try:
        st = os.statvfs(path)
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
    sc.mount("tmpfs", dev, "tmpfs", MS_NOSUID | sc.MS_STRICTATIME, "mode=755,size=65536k")
    for name in HOST_DEVICES:
        # mknod'ed nodes cannot be opened in a user namespace, and binding the
        # host's nodes keeps every other device unreachable (all other mounts
        # are nodev).
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
            sc.mount(root + "/dev/null", target, None, MS_BIND)
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
