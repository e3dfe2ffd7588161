"""The container's root filesystem, built in the child: overlay, /proc, /dev,
/sys, /tmp, volumes, masks, pivot_root.

Everything here runs in the child, inside its fresh mount namespace: every
mount it makes dies with that namespace, none is ever made on the host.
`setup` is the order of the steps; each step lives in a module of its own:

    overlay.py   the image's layers (and the rootless `host` root, per directory)
    images.py    layers kept as EROFS images: mounted once, on the host, by the store
    kernelfs.py  /proc, /dev, /sys, cgroup2, and the masks over them
    volumes.py   volumes, resolved inside the root
    tmpfs.py     --tmpfs mounts and --read-only
    mounts.py    the bind and mount-attribute helpers they share
"""

from __future__ import annotations

import os
from ..._record import record, factory
TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it costs start-up
    from typing import Callable

    from .tmpfs import TmpfsMount  # imported where used: only --tmpfs and --read-only need it

from .. import syscalls as sc
from ..syscalls import MS_NODEV, MS_NOSUID, MS_RDONLY, MS_REC
from .kernelfs import mask_paths, mount_cgroup2, mount_dev, mount_proc, mount_sys, own_nodes
from .mounts import write_file
from .overlay import OVERLAY_MAX_LOWERS, mount_host_per_directory, mount_overlay, overlay_options
from .volumes import mount_volumes

__all__ = ["OVERLAY_MAX_LOWERS", "Bind", "RootfsConfig", "mount_cgroup2", "overlay_options", "setup",
           "write_init_layer"]


# Directories the engine always mounts over; `/run` stays the image's own.
MOUNT_POINTS = ("proc", "dev", "sys", "tmp")


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
    # images committed on top of `host` (see Container._layer_dirs), by
    # `unpack_layer(tar, dir)`, which the caller gives (the image code is
    # above the runtime) and the child calls.
    replay: list[tuple[str, str]] = factory(list)
    unpack_layer: Callable[[str, str], object] | None = None
    layers_dir: str = ""  # the store's layer folder, where the image's lowers are
    shm_size: int = 64 << 20  # bytes of /dev/shm (its tmpfs's pages count against the memory limit)
    read_only: bool = False  # the root (and /tmp, unless a tmpfs) read-only
    workdir: str = ""  # with read_only: made first if missing (as Docker makes it before the root goes read-only)
    tmpfs: list[TmpfsMount] = factory(list)
    # The root's overlay shows the host's own /tmp (`host_root`, and /tmp on
    # the host root's mount: volumes.on_host_root), and that is what the
    # container's /tmp is to be (the pytest plugin's copy-on-write /tmp):
    # then no tmpfs is mounted there (and the caller leaves its overlay
    # volume of /tmp out of `binds`).
    host_tmp: bool = False


def write_init_layer(config: "RootfsConfig", source_dirs: dict[str, bool] | None = None) -> None:
    """Build the init layer on a fresh tmpfs: engine-owned files and the
    mount points of /proc, /dev, /sys, /tmp and of every bind.

    It lives on the scratch tmpfs, mounted in the container's namespace,
    because overlayfs refuses a lower layer that sits below another lower
    layer (the `host` image's "/"), and so that nothing the engine needs
    lands in the read-write layer that `commit` reads.  `source_dirs`: which
    bind sources are folders, if the caller looked already.
    """
    # Plain os calls, each folder made once without a look first: this runs
    # for every container, and file objects and os.makedirs' stats cost.
    path = config.lowers[0]
    os.mkdir(path, 0o755)
    made = {path}
    for name in MOUNT_POINTS:
        if name == "tmp" and config.host_tmp:
            continue  # (a folder here would hide the host's /tmp's mode and owner)
        os.mkdir(f"{path}/{name}", 0o755)
        made.add(f"{path}/{name}")
    for name, text in config.init_files.items():
        target = f"{path}/{name}"
        _make_folders(os.path.dirname(target), made)
        write_file(target, text.encode())
    for mount in config.tmpfs:  # mount points, also in a read-only root
        os.makedirs(os.path.join(path, mount.target.lstrip("/")), exist_ok=True)
    for bind in config.binds:
        if config.host_tmp and (bind.target + "/").startswith("/tmp/"):
            continue  # (the host's /tmp, as the host has it: mount_volumes makes what is missing)
        stub = os.path.join(path, bind.target.lstrip("/"))
        if source_dirs[bind.source] if source_dirs is not None else os.path.isdir(bind.source):
            _make_folders(stub, made)
        else:
            _make_folders(os.path.dirname(stub), made)
            if not os.path.lexists(stub):
                write_file(stub)


def _make_folders(path: str, made: set[str]) -> None:
    """os.makedirs(path, exist_ok=True), without its stat of every level:
    `made` holds the folders known to be there (and gets those made)."""
    if path in made:
        return
    try:
        os.mkdir(path)
    except FileNotFoundError:
        _make_folders(os.path.dirname(path), made)
        os.mkdir(path)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
    made.add(path)


def setup(config: RootfsConfig, hostname: str) -> None:
    """Build the root in the current (fresh) mount namespace and pivot into it.

    The cgroup2 file system is mounted later (`mount_cgroup2`), once the
    process sits in its cgroup namespace.
    """
    sc.mount(None, "/", None, MS_REC | sc.MS_PRIVATE)
    sc.mount("tmpfs", config.scratch, "tmpfs", MS_NODEV | MS_NOSUID, "mode=755")
    # As root, device nodes of the container's own (kernelfs.own_nodes), not binds of the host's.
    nodes = None if config.userns else own_nodes(f"{config.scratch}/nodes".encode())
    for path in (config.merged, config.upper, config.work):
        if path.startswith(config.scratch + "/"):
            os.mkdir(path, 0o755)
    source_dirs = {bind.source: os.path.isdir(bind.source) for bind in config.binds}  # looked at once
    write_init_layer(config, source_dirs)
    if config.replay:
        _replay_layers(config)
    root = config.merged
    if config.host_root and config.userns:
        mount_host_per_directory(config)
    else:
        mount_overlay(config.lowers, config.upper, config.work, root, config.userns, f"{config.scratch}/links",
                      config.layers_dir)
    if config.read_only or config.tmpfs:
        from .tmpfs import make_read_only, mount_tmpfs
    if config.read_only:
        make_read_only(root, [(m.target, True) for m in config.tmpfs] +
                       [(b.target, source_dirs[b.source]) for b in config.binds] +
                       ([(config.workdir, True)] if config.workdir else []))
    os.chdir(root)  # the kernel's file systems and /tmp are mounted from inside it, by relative paths
    mount_proc()
    mount_dev(config.userns, config.shm_size, nodes)
    mount_sys(config.privileged)
    # Read-only too under --read-only (as an image's own /tmp would be), unless a --tmpfs covers it.
    tmp_flags = MS_NOSUID | MS_NODEV | (MS_RDONLY if config.read_only else 0)
    if not config.host_tmp:
        sc.mount(b"tmpfs", b"tmp", b"tmpfs", tmp_flags, b"mode=1777")
    if config.tmpfs:  # those below a volume after it, the others before, so none hides another
        inside = [m for m in config.tmpfs if any(m.target.startswith(b.target.rstrip("/") + "/") for b in config.binds)]
        mount_tmpfs(root, [m for m in config.tmpfs if m not in inside])
    if config.binds:  # after /tmp, so a bind below /tmp is not hidden by it
        mount_volumes(config, root, source_dirs)
    if config.tmpfs and inside:
        mount_tmpfs(root, inside)
    if not config.privileged:
        os.chdir(root)  # (mount_tmpfs and mount_volumes may have changed directory: mount_overlay's links)
        mask_paths(b"/dev/null" if nodes is None else nodes + b"/null")
    sc.sethostname(hostname)
    _pivot(root)


def _replay_layers(config: RootfsConfig) -> None:
    assert config.unpack_layer is not None
    os.mkdir(os.path.dirname(config.replay[0][1]))
    for tar_path, directory in config.replay:
        os.mkdir(directory, 0o755)
        config.unpack_layer(tar_path, directory)


def _pivot(root: str) -> None:
    # pivot_root(".", ".") stacks the old root under the new one; detaching
    # it leaves no path back to the host's tree.
    os.chdir(root)
    sc.pivot_root(".", ".")
    sc.umount2(".", sc.MNT_DETACH)
    os.chdir("/")
