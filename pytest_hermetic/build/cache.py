"""The build cache: what a step made, by the key of everything it depended on.

A key is BuildKit's chain: the key of the step before (for FROM, the base
image's id, `scratch` or `host`), the instruction as written, the build
arguments in scope and, for COPY and ADD, the content hash of the files
(`copying.hash_node`: paths, types, modes, contents, link targets, never
times).  Only steps that make a layer (RUN, COPY, ADD) have entries:

    STORE/build-cache/<key hex>.json    {"diff_id": ..., "blob": ..., "created_by": ...}

An entry names a layer the store keeps for an image; it is only used while
that layer is there.  A hit is recorded in the build's `Keep` before its
layer is checked, under the store's `busy()`, so a `gc` running at the same
time either sees the record or has removed the layer (then it is a miss).
`gc` itself never reads the cache: an entry whose layer went is stale and is
dropped by the next build that meets it, or by `hermetic gc --build-cache`.
"""

from __future__ import annotations

import hashlib
import json
import os

from ..images.store import Keep, Store, list_entries

EMPTY = "empty"  # a RUN that changed nothing: no layer, as BuildKit


def chain(previous: str, *parts: object) -> str:
    """The key of a step: sha256 over the previous key and what the step depends on."""
    text = json.dumps([previous, *parts], sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _folder(store: Store) -> str:
    return os.path.join(store.root, "build-cache")


def _path(store: Store, key: str) -> str:
    return os.path.join(_folder(store), key.split(":", 1)[-1] + ".json")


def lookup(store: Store, key: str, keep: Keep) -> dict | None:
    """The step's result if the cache has it and its layer is still in the store."""
    try:
        with open(_path(store, key), "rb") as f:
            entry = json.loads(f.read(1 << 16))
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("diff_id"), str):
        return None
    if entry["diff_id"] == EMPTY:
        return entry
    keep.add(layers=[entry["diff_id"]], blobs=[str(entry.get("blob") or "")])  # before the check: gc honours it
    if not store.has_layer(entry["diff_id"]):
        _drop(store, key)
        return None
    return entry


def record(store: Store, key: str, diff_id: str, blob: str, created_by: str) -> None:
    os.makedirs(_folder(store), exist_ok=True)
    fd, tmp = store.tempfile("cache-")
    with os.fdopen(fd, "w") as f:
        json.dump({"diff_id": diff_id, "blob": blob, "created_by": created_by}, f)
    os.replace(tmp, _path(store, key))  # two builds of one step write the same entry: the last one stays


def _drop(store: Store, key: str) -> None:
    try:
        os.unlink(_path(store, key))
    except FileNotFoundError:
        pass


def prune(store: Store, *, everything: bool = False) -> list[str]:
    """Remove entries whose layer is gone (all of them with `everything`); what was removed, as lines."""
    removed = []
    folder = _folder(store)
    for entry in list_entries(folder):
        path = os.path.join(folder, entry)
        stale = everything
        if not stale:
            try:
                with open(path, "rb") as f:
                    diff_id = json.loads(f.read(1 << 16)).get("diff_id")
                stale = diff_id != EMPTY and not (isinstance(diff_id, str) and store.has_layer(diff_id))
            except (OSError, ValueError, AttributeError):
                stale = True
        if stale:
            try:
                os.unlink(path)
                removed.append(f"build cache entry {entry[:12]}")
            except FileNotFoundError:
                pass
    return removed
