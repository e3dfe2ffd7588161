"""OCI image layouts and docker archives, both ways (`hermetic import` / `hermetic save`).

Import keeps the image config byte for byte (the image id stays the one
skopeo or docker show) and checks every blob against its digest; layers go
through `ingest_layer`, the same hostile-input-safe path as a pull.  Save
writes what skopeo, umoci and `docker load` read: an OCI layout with OCI
media types (Docker ones are renamed, the bytes are the same), or a docker
archive with uncompressed layers named by diff_id.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile

from ..errors import DigestMismatch, ImageNotFound, ImageReferenceError, LayerError, StoreError
from . import layers, limits, platforms
from . import reference as refs
from . import schema
from .commit import target_name
from .digest import sha256_digest
from .ingest import OCI_TYPES, Source, ingest_layer
from .store import BASE_ANNOTATION, MAX_JSON, MEDIA_CONFIG, MEDIA_MANIFEST, Image, Keep, Store

REF_NAME = "org.opencontainers.image.ref.name"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
INDEX_TYPES = (OCI_INDEX, "application/vnd.docker.distribution.manifest.list.v2+json")
_HEX = re.compile(r"^sha256:[0-9a-f]{64}$")


# -- import -------------------------------------------------------------------------


def import_oci(store: Store, layout: str, tag: str | None, name: str | None, keep: Keep | None = None) -> Image:
    """Image `tag` (or the only one) of the OCI layout `layout`, stored as `name`.
    `keep`: the store record that makes gc keep what lands (else hold `store.busy()`)."""
    layout = os.path.abspath(layout)
    where = f"oci:{layout}" + (f":{tag}" if tag else "")
    try:
        with open(os.path.join(layout, "index.json"), "rb") as f:
            index = _load(f.read(MAX_JSON + 1), schema.INDEX, f"{where}: index.json")
    except FileNotFoundError:
        raise ImageNotFound(f"{where}: no index.json there; not an OCI image layout") from None
    entries = index["manifests"]
    tags = [(e.get("annotations") or {}).get(REF_NAME) for e in entries]
    fits = [e for e, t in zip(entries, tags) if t == tag] if tag else entries
    if not fits:
        raise ImageNotFound(f"{where}: no image tagged {tag!r} (tags: {', '.join(t for t in tags if t) or 'none'})")
    if len(fits) > 1:
        raise ImageReferenceError(f"{where} holds {len(fits)} images; name one: oci:{layout}:TAG "
                                  f"(tags: {', '.join(t for t in tags if t)})")
    desc = fits[0]
    manifest_bytes = _layout_blob(layout, desc, where)
    if desc.get("mediaType") in INDEX_TYPES or "manifests" in _load(manifest_bytes, schema.DOCUMENT, f"{where}: manifest"):
        index = _load(manifest_bytes, schema.INDEX, f"{where}: index")
        chosen = platforms.select(index["manifests"], platforms.host(), where)
        manifest_bytes = _layout_blob(layout, chosen, where)
    manifest = _load(manifest_bytes, schema.MANIFEST, f"{where}: manifest")
    config_bytes = _layout_blob(layout, manifest["config"], where)
    diff_ids = _diff_ids(config_bytes, len(manifest.get("layers") or []), where)
    if keep is not None:
        keep.add(layers=diff_ids, blobs=[str(layer.get("digest", "")) for layer in manifest.get("layers") or []])
    budget = limits.image_budget(sum(int(layer.get("size") or 0) for layer in manifest.get("layers") or []), where)
    for layer, diff_id in zip(manifest.get("layers") or [], diff_ids):
        _check(layer.get("digest", ""), where)
        path = os.path.join(layout, "blobs", "sha256", layer["digest"][7:])
        _ingest(store, diff_id, layer["digest"], lambda: _open_plain(path, where), layer.get("size"), layer.get("mediaType"),
                budget, _file_size(path))
    target = target_name(name or _default_name(layout, tag))
    with store.busy():  # from the first blob no record names to the tag
        store.put_blob_bytes(config_bytes)
        digest = store.put_blob_bytes(manifest_bytes)
        store.tag(target, digest)
        return store.tagged(target, digest)


def import_docker_archive(store: Store, path: str, ref: str | None, name: str | None, keep: Keep | None = None) -> Image:
    """Image `ref` (or the only one) of the docker archive `path`, stored as `name` (default: its tag);
    `keep` as for `import_oci`."""
    path = os.path.abspath(path)
    where = f"docker-archive:{path}" + (f":{ref}" if ref else "")
    if not os.path.isfile(path):
        raise ImageNotFound(f"{where}: no such file")
    try:
        tf = tarfile.open(path)
    except (tarfile.TarError, OSError) as exc:
        raise LayerError(f"{where}: not a docker archive ({exc})") from None
    with tf:
        manifest = _load(_member(tf, "manifest.json", where), schema.ARCHIVE_MANIFEST, f"{where}: manifest.json")
        if ref:
            want = refs.parse(ref).name
            manifest = [e for e in manifest if any(_same(t, want) for t in e.get("RepoTags") or [])]
            if not manifest:
                raise ImageNotFound(f"{where}: no image tagged {ref!r}")
        if len(manifest) != 1:
            raise ImageReferenceError(f"{where} holds {len(manifest)} images; name one: docker-archive:{path}:REF")
        entry = manifest[0]
        config_bytes = _member(tf, entry["Config"], where)
        config_digest = sha256_digest(config_bytes)
        named = re.search(r"([0-9a-f]{64})(?:\.json)?$", entry.get("Config", ""))
        if named and named.group(1) != config_digest[7:]:
            raise DigestMismatch(f"digest mismatch for {where} config: named {named.group(1)[:12]}, hashes to {config_digest}")
        layer_names = list(entry.get("Layers") or [])
        diff_ids = _diff_ids(config_bytes, len(layer_names), where)
        if keep is not None:
            keep.add(layers=diff_ids)  # (gc keeps the blob of a recorded layer too)
        sizes = [_member_size(tf, member) for member in layer_names]
        budget = limits.image_budget(sum(s or 0 for s in sizes), where)
        for member, diff_id, size in zip(layer_names, diff_ids, sizes):
            _ingest(store, diff_id, None, lambda member=member: _member_stream(tf, member, where), None, None,
                    budget, size)
    layers = []
    for diff_id in diff_ids:
        meta = store.layer_meta(diff_id)
        layers.append({"mediaType": meta["media_type"], "digest": meta["blob"],
                       "size": os.path.getsize(store.blob_path(meta["blob"]))})
    manifest_bytes = json.dumps({"schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
                                 "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": len(config_bytes)},
                                 "layers": layers}, sort_keys=True).encode()
    tags = entry.get("RepoTags") or []
    if not name and not ref and not tags:
        raise ImageReferenceError(f"{where} has no tag: give a NAME[:TAG] to import it as")
    target = target_name(name or ref or tags[0])
    with store.busy():  # from the first blob no record names to the tag
        store.put_blob_bytes(config_bytes)
        digest = store.put_blob_bytes(manifest_bytes)
        store.tag(target, digest)
        return store.tagged(target, digest)


def _file_size(path: str) -> int | None:
    try:
        return os.lstat(path).st_size
    except OSError:
        return None  # _open_plain says what is wrong


def _member_size(tf: tarfile.TarFile, member: str) -> int | None:
    try:
        return tf.getmember(member).size
    except (KeyError, tarfile.TarError):
        return None  # _member_stream says what is wrong


def _ingest(store: Store, diff_id: str, digest: str | None, opener, size: int | None, media_type: str | None,
            budget: limits.Budget, compressed: int | None) -> None:
    if store.has_layer(diff_id):
        return
    with store.blob_lock(digest or diff_id):
        if store.has_layer(diff_id):
            return
        fd, tmp = store.tempfile("layer-", ".blob")
        os.close(fd)
        try:
            with opener() as stream:
                ingest_layer(store, Source(stream, tmp, digest=digest, size=size, name=f"layer {digest or diff_id}"),
                             diff_id=diff_id, media_type=media_type, compressed=compressed, image=budget)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _layout_blob(layout: str, desc: dict, where: str) -> bytes:
    digest = desc.get("digest", "")
    _check(digest, where)
    too_large = LayerError(f"{where}: blob {digest} (a manifest or config) is larger than {MAX_JSON >> 20} MiB; "
                           "refusing it (a real one is a few KiB); nothing was stored")
    if int(desc.get("size") or 0) > MAX_JSON:
        raise too_large
    with _open_plain(os.path.join(layout, "blobs", "sha256", digest[7:]), where) as f:
        data = f.read(MAX_JSON + 1)
    if len(data) > MAX_JSON:
        raise too_large
    got = sha256_digest(data)
    if got != digest or ("size" in desc and len(data) != int(desc["size"])):
        raise DigestMismatch(f"digest mismatch in {where}: blob {digest} hashes to {got} ({len(data)} bytes); nothing was stored")
    return data


def _open_plain(path: str, where: str):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ImageNotFound(f"{where}: blob {os.path.basename(path)} is missing") from None
    except OSError as exc:
        raise LayerError(f"{where}: cannot open blob {os.path.basename(path)}: {exc}") from None
    return os.fdopen(fd, "rb")


def _member(tf: tarfile.TarFile, member: str, where: str) -> bytes:
    with _member_stream(tf, member, where) as f:
        return f.read(MAX_JSON + 1)  # one more: `schema.load` says "too large", not "not JSON"


def _member_stream(tf: tarfile.TarFile, member: str, where: str):
    try:
        f = tf.extractfile(member)
    except KeyError:
        f = None
    except tarfile.TarError as exc:
        raise LayerError(f"{where}: {member}: {exc}") from None
    if f is None:
        raise LayerError(f"{where}: {member!r} is missing or not a file; not a docker archive")
    return f


def _load(data: bytes, check: schema.Check, what: str):  # noqa: ANN202 - what `check` describes
    """An archive's JSON document, bounded and type-checked (`schema`)."""
    return schema.load(data, check, what, LayerError, limit=MAX_JSON)


def _diff_ids(config_bytes: bytes, count: int, where: str) -> list[str]:
    diff_ids = list((_load(config_bytes, schema.CONFIG, f"{where}: config").get("rootfs") or {}).get("diff_ids") or [])
    if len(diff_ids) != count:
        raise LayerError(f"{where}: {count} layers but {len(diff_ids)} diff_ids in the config")
    for d in diff_ids:
        _check(d, where)
    return diff_ids


def _check(digest: str, where: str) -> None:
    if not _HEX.fullmatch(digest or ""):
        raise LayerError(f"{where}: unsupported or malformed digest {digest!r} (sha256 only)")


def _same(tag: str, want: str) -> bool:
    try:
        return refs.parse(tag).name == want
    except ImageReferenceError:
        return False


def _default_name(layout: str, tag: str | None) -> str:
    base = re.sub(r"[^a-z0-9._-]+", "-", os.path.basename(layout.rstrip("/")).lower()).strip("-._") or "image"
    return f"{base}:{tag or 'latest'}"


# -- save ---------------------------------------------------------------------------


def _manifest_of(store: Store, image: Image) -> tuple[dict, str]:
    digest = store.manifest_digest(image.name)
    manifest = store.read_json(digest)
    if (manifest.get("annotations") or {}).get(BASE_ANNOTATION) == "host":
        raise StoreError(f"{image.familiar} is stacked on the host's own root (image 'host'), which is in no layer; "
                         "only images with a root of their own can be saved or pushed")
    return manifest, digest


def oci_manifest(store: Store, image: Image) -> bytes:
    """The image's manifest with OCI media types (the same blobs; Docker's names renamed)."""
    manifest, digest = _manifest_of(store, image)
    if manifest.get("mediaType", MEDIA_MANIFEST) == MEDIA_MANIFEST and all(
            layer.get("mediaType") not in OCI_TYPES for layer in manifest.get("layers") or []):
        with open(store.blob_path(digest), "rb") as f:
            return f.read()
    manifest = dict(manifest, mediaType=MEDIA_MANIFEST)
    manifest["config"] = dict(manifest["config"], mediaType=MEDIA_CONFIG)
    manifest["layers"] = [dict(layer, mediaType=OCI_TYPES.get(layer.get("mediaType"), layer.get("mediaType")))
                          for layer in manifest.get("layers") or []]
    return json.dumps(manifest, sort_keys=True).encode()


def save_oci(store: Store, image: Image, layout: str, tag: str | None) -> str:
    """Write `image` into the OCI layout `layout` (made if missing) under `tag`; return the manifest digest."""
    layout = os.path.abspath(layout)
    tag = tag or refs.parse(image.name).tag or "latest"
    manifest_bytes = oci_manifest(store, image)
    manifest = json.loads(manifest_bytes)
    blobs_dir = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobs_dir, exist_ok=True)
    _write_atomic(os.path.join(layout, "oci-layout"), b'{"imageLayoutVersion":"1.0.0"}')
    for desc in [manifest["config"], *manifest.get("layers", [])]:
        _place(store.blob_path(desc["digest"]), os.path.join(blobs_dir, desc["digest"][7:]))
    digest = sha256_digest(manifest_bytes)
    target = os.path.join(blobs_dir, digest[7:])
    if not os.path.exists(target):
        _write_atomic(target, manifest_bytes)
    index_path = os.path.join(layout, "index.json")
    try:
        with open(index_path, "rb") as f:
            index = _load(f.read(MAX_JSON + 1), schema.INDEX, index_path)
    except FileNotFoundError:
        index = {"schemaVersion": 2, "manifests": []}
    index.setdefault("mediaType", OCI_INDEX)
    index["manifests"] = [e for e in index.get("manifests") or [] if (e.get("annotations") or {}).get(REF_NAME) != tag]
    index["manifests"].append({"mediaType": MEDIA_MANIFEST, "digest": digest, "size": len(manifest_bytes),
                               "annotations": {REF_NAME: tag}})
    _write_atomic(index_path, json.dumps(index, sort_keys=True).encode())
    return digest


def save_docker_archive(store: Store, image: Image, path: str, ref: str | None) -> None:
    """Write `image` as a docker archive (`docker load`, skopeo), tagged `ref` (default: its name)."""
    manifest, _ = _manifest_of(store, image)
    config_digest = manifest["config"]["digest"]
    tag = refs.parse(ref).familiar if ref else image.familiar
    path = os.path.abspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as out:
            names = []
            for diff_id in image.layers:
                meta = store.layer_meta(diff_id)
                name = f"{diff_id[7:]}/layer.tar"
                info = tarfile.TarInfo(name)
                info.size, info.mode = int(meta["size"]), 0o644
                with layers.open_layer(store.blob_path(meta["blob"])) as stream:
                    out.addfile(info, stream)  # the uncompressed tar: its sha256 is the diff_id
                names.append(name)
            with open(store.blob_path(config_digest), "rb") as f:
                config = f.read()
            _add_bytes(out, f"{config_digest[7:]}.json", config)
            entry = {"Config": f"{config_digest[7:]}.json", "RepoTags": [tag], "Layers": names}
            _add_bytes(out, "manifest.json", json.dumps([entry]).encode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _add_bytes(out: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    out.addfile(info, io.BytesIO(data))


def _place(src: str, dest: str) -> None:
    """Hard-link a blob where the filesystems allow (free), else copy; atomically."""
    if os.path.exists(dest):
        return
    tmp = f"{dest}.tmp-{os.getpid()}"
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
