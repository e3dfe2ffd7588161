"""Importing an image from somewhere other than a registry.

`dir:PATH` (a rootfs folder), `tar:FILE` (a rootfs tarball, compressed or
not) and `busybox:[/PATH]` (a static busybox and its applet links,
`busybox.py`) become a one-layer image under a name.  `oci:DIR[:TAG]` (an OCI image
layout, as skopeo and umoci write) and `docker-archive:FILE[:REF]` (what
`docker save` and skopeo write) keep their config, so the image id is the
same as theirs; every blob is checked against its digest on the way in.
"""

from __future__ import annotations

import os

from .._fs import rmtree
from ..errors import ImageReferenceError, SpecError
from . import busybox, layers
from . import reference as refs
from .archives import import_docker_archive, import_oci
from .commit import target_name
from .ingest import disk_full_said
from .store import HOST_ENV, Image, Keep, Store


def import_image(store: Store, source: str, name: str | None = None, *, env: dict[str, str] | None = None,
                 workdir: str | None = None, user: str | None = None, cmd: list[str] | None = None) -> Image:
    if source.startswith(("/", "./", "../")) and os.path.exists(source):  # a path: say which transport reads it
        kind = "dir" if os.path.isdir(source) else "tar"
        raise ImageReferenceError(f"cannot import {source!r}: give its transport, e.g. `hermetic import {kind}:{source} "
                                  f"{name or 'NAME'}` (also oci:DIR, docker-archive:FILE)")
    ref = refs.parse(source)
    if ref.transport in ("oci", "docker-archive"):
        store.clear_dead_staging()
        with disk_full_said(store, f"importing {source}", "import"), store.keeping("import") as keep:
            if ref.transport == "oci":
                return import_oci(store, ref.path, ref.tag, name, keep)
            return import_docker_archive(store, ref.path, ref.tag, name, keep)
    if name is None:
        raise SpecError(f"importing {source!r} needs a NAME[:TAG] for the image")
    target = target_name(name)
    if ref.transport == "busybox":
        return _import_busybox(store, ref.path, target, env, workdir, user, cmd)
    if ref.transport not in ("dir", "tar"):
        raise ImageReferenceError(
            f"cannot import {source!r}: import takes dir:PATH, tar:FILE, oci:DIR[:TAG], docker-archive:FILE[:REF] "
            "or busybox:[/PATH]; "
            "registry references are pulled (`hermetic pull`)"
        )
    path = os.path.abspath(ref.path)
    if ref.transport == "dir" and not os.path.isdir(path):
        raise SpecError(f"dir:{ref.path}: no such directory")
    if ref.transport == "tar" and not os.path.isfile(path):
        raise SpecError(f"tar:{ref.path}: no such file")
    store.clear_dead_staging()
    with disk_full_said(store, f"importing {source}", "import"), store.keeping("import") as keep:
        if ref.transport == "dir":
            diff_id = _layer_from_dir(store, path, keep)
            has_sh = os.path.lexists(os.path.join(path, "bin", "sh"))
        else:
            diff_id, _ = store.add_layer_tar(path, keep=keep)
            has_sh = True
        return store.put_image(target, [diff_id], _config(has_sh, env, workdir, user, cmd),
                               history=[{"created_by": f"hermetic import {source}"}])


def _import_busybox(store: Store, path: str, target: str, env: dict[str, str] | None, workdir: str | None,
                    user: str | None, cmd: list[str] | None) -> Image:
    binary = busybox.find_busybox(path)
    store.clear_dead_staging()
    with disk_full_said(store, "importing busybox:", "import"), store.keeping("import") as keep:
        staging = store.tempdir("import-")
        try:
            tar_path = os.path.join(staging, "layer.tar")
            with open(tar_path, "wb") as out:
                busybox.write_layer(binary, out)
            diff_id, _ = store.add_layer_tar(tar_path, keep=keep)
        finally:
            rmtree(staging)
        return store.put_image(target, [diff_id], _config(True, env, workdir, user, cmd),
                               history=[{"created_by": f"hermetic import busybox:{path}"}])


def _layer_from_dir(store: Store, root: str, keep: Keep) -> str:
    staging = store.tempdir("import-")
    try:
        tar_path = os.path.join(staging, "layer.tar")
        with open(tar_path, "wb") as out:
            digests = layers.write_layer_from_dir(root, out)
        diff_id, _ = store.add_layer_tar(tar_path, digests.diff_id, keep=keep)
    finally:
        rmtree(staging)
    return diff_id


def _config(has_sh: bool, env: dict[str, str] | None, workdir: str | None, user: str | None,
            cmd: list[str] | None) -> dict:
    config: dict = {"Env": list(HOST_ENV)}
    for key, value in (env or {}).items():
        config["Env"] = [e for e in config["Env"] if not e.startswith(key + "=")] + [f"{key}={value}"]
    if workdir:
        config["WorkingDir"] = workdir
    if user:
        config["User"] = user
    if cmd:
        config["Cmd"] = list(cmd)
    elif has_sh:
        config["Cmd"] = ["/bin/sh"]
    return config
