"""`hermetic gc`: the sweep of a store, decided without guessing (see store.py's docstring).

Blobs and layers no image refers to and no live record (`users/`) keeps go
(a layer's EROFS image unmounted first, detached: `Store.layer_lower`), and
the layer mounts of stores that are gone (`orphan_layer_mounts`);
so do staging, read-write layers and records whose owner process is dead,
old staging without an owner, unlocked resumable downloads and lock files.
The sweep holds `gc.gate` and then `gc.lock` exclusive, so it never races a
writer's last steps (`Store.busy`). `Store.clear_dead_staging`, the cheap
part every pull, import and commit runs first, stays with the store.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time

from .._fs import flock
from .._proc import name_owner, owner_alive
from ..errors import StoreError
from . import schema
from .store import LAYER_IMAGE, Store, digest_hex, list_entries, lock_fd, mount_folders, remove_entry, unmount_folder


def collect(store: Store, *, max_tmp_age: float = 3600.0) -> list[str]:
    """Delete blobs and layers no image and no live container refers to,
    and staging, read-write layers and records whose owner is dead."""
    if not os.path.isdir(store.root):
        return orphan_layer_mounts()  # (a store removed whole: its layer mounts go now)
    store.ensure()
    # Holding the gate, wait for the writers inside to finish (new ones
    # wait at the gate), then sweep with the writers' lock exclusive.
    with flock(os.path.join(store.root, "gc.gate")):
        gc_fd = lock_fd(os.path.join(store.root, "gc.lock"), fcntl.LOCK_EX)
    try:
        with store.lock():
            return _sweep(store, max_tmp_age) + orphan_layer_mounts()
    finally:
        os.close(gc_fd)


def _sweep(store: Store, max_tmp_age: float) -> list[str]:
    removed: list[str] = []
    keep_blobs: set[str] = set()
    keep_layers: set[str] = set()
    for digest in store.read_refs().values():
        keep_blobs.add(digest_hex(digest))
        try:
            manifest = store.read_json(digest, schema.MANIFEST)
            keep_blobs.add(digest_hex(manifest["config"]["digest"]))
            keep_blobs.update(digest_hex(layer["digest"]) for layer in manifest.get("layers") or [])
            config = store.read_json(manifest["config"]["digest"], schema.CONFIG)
            keep_layers.update(digest_hex(d) for d in (config.get("rootfs") or {}).get("diff_ids") or [])
        except (StoreError, KeyError, TypeError, AttributeError):
            continue
    for user in store.users():  # live containers and writers: their layers, blobs, and the blobs of those layers
        keep_blobs.update(digest_hex(d) for d in user.get("blobs") or [])
        for diff_id in user.get("layers") or []:
            keep_layers.add(digest_hex(diff_id))
            with contextlib.suppress(StoreError, OSError, ValueError, AttributeError):
                keep_blobs.add(digest_hex(store.layer_meta(diff_id).get("blob", "")))
    blob_dir = os.path.join(store.root, "blobs", "sha256")
    for entry in list_entries(blob_dir):
        if entry not in keep_blobs and remove_entry(os.path.join(blob_dir, entry)):
            removed.append(f"blob sha256:{entry}")
    layer_dir = os.path.join(store.root, "layers")
    for entry in list_entries(layer_dir):
        if entry not in keep_layers:
            _unmount_image(store, entry)
            if remove_entry(os.path.join(layer_dir, entry)):
                removed.append(f"layer sha256:{entry}")
    if os.geteuid() == 0:  # an older version's mounts, on the layers' own root/: no new container uses them
        from ..runtime.rootfs.images import mounts_below, unmount

        for point in mounts_below(os.path.join(os.path.realpath(store.root), "layers")):
            unmount(point)
    removed += store.clear_dead_staging()
    tmp_dir = os.path.join(store.root, "tmp")
    now = time.time()
    for entry in list_entries(tmp_dir):
        path = os.path.join(tmp_dir, entry)
        if name_owner(entry) is not None:
            continue  # a live owner's (the dead ones went above)
        if entry.endswith(".partial"):
            # A download kept for a resume: a live pull holds its blob's lock.
            if _remove_unlocked(path, os.path.join(store.root, "locks", entry[:-len(".partial")])):
                removed.append(f"partial download {entry}")
            continue
        try:
            old = now - os.lstat(path).st_mtime > max_tmp_age  # not ours (no owner in the name)
        except FileNotFoundError:
            continue
        if old and remove_entry(path):
            removed.append(f"staging {entry}")
    for sub, what in (("users", None), ("containers", "read-write layer")):
        base = os.path.join(store.root, sub)
        for entry in list_entries(base):
            owner = name_owner(entry)
            if owner is not None and not owner_alive(owner) and remove_entry(os.path.join(base, entry)) and what:
                removed.append(f"{what} {entry.rsplit('-', 1)[-1][:12]}")
    lock_dir = os.path.join(store.root, "locks")
    for entry in list_entries(lock_dir):
        if entry not in keep_blobs and entry not in keep_layers:  # (a docker archive's layer locks by diff_id)
            _remove_unlocked(os.path.join(lock_dir, entry), os.path.join(lock_dir, entry))
    return removed


def _unmount_image(store: Store, entry: str) -> None:
    """Detach the layer's EROFS image if the store mounted it (`Store.layer_lower`) and remove its
    mount point: nothing keeps the layer, so no container runs on it.  Also an older version's
    mount on the layer's own `root/`."""
    layer = os.path.join(store.root, "layers", entry)
    if os.geteuid() == 0 and os.path.exists(os.path.join(layer, LAYER_IMAGE)):  # (only root mounts them)
        from ..runtime.rootfs.images import unmount

        point = os.path.join(store.layer_mounts(), entry)
        for path in (point, os.path.join(layer, "root")):
            while unmount(path):
                pass  # (stacked mounts, should a mount have raced an unmount: none stays)
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(point)


def orphan_layer_mounts() -> list[str]:
    """Detach the layer mounts of stores that are no longer there (removed without
    `Store.unmount_layers`), and remove their mount folders."""
    if os.geteuid() != 0:
        return []
    removed = []
    for folder, store in mount_folders().items():
        if not os.path.isdir(store):
            removed += [f"layer mount {point} of the removed store {store}" for point in unmount_folder(folder)]
    return removed


def _remove_unlocked(path: str, lock: str) -> bool:
    """Remove `path` if nobody holds the flock on `lock`."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return remove_entry(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    try:  # removed while the lock is held: a locker that opened it meanwhile sees it gone (_fs.lock_file)
        return remove_entry(path)
    finally:
        os.close(fd)  # (closing drops the lock too)
