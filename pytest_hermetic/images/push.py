"""`push`: an image from the store to a registry.

Blobs the registry has already (HEAD) are skipped; one in another repository
of the same registry is mounted across (`?mount=&from=`, no upload) where the
registry allows; the rest are uploaded in parallel, monolithically or in
chunks (`chunk_size`).  The manifest goes last, so the tag never names an
image with missing blobs.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

from ..errors import ImageReferenceError, StoreError
from . import reference as refs
from .archives import oci_manifest
from .digest import sha256_digest
from .registry import Registry
from .store import MEDIA_MANIFEST, Store


def push(store: Store, source: str, dest: str | None = None, *, chunk_size: int | None = None,
         progress: Callable[[str, int, int | None], None] | None = None) -> tuple[str, dict[str, str]]:
    """Push image `source` from the store to `dest` (default: its own name).

    Returns (manifest digest, {blob digest: "exists" | "mounted" | "uploaded" | "chunked"}).
    """
    image = store.local(source)
    target = refs.parse(dest or source)
    if target.transport != "registry":
        raise ImageReferenceError(f"cannot push to {dest or source!r}: give a registry reference such as "
                                  "'localhost:5000/app:1' (to write files, use `hermetic save`)")
    manifest_bytes = oci_manifest(store, image)
    manifest = json.loads(manifest_bytes)
    registry = Registry(target.registry)
    origin = refs.parse(image.name)
    mount_from = origin.repository if origin.registry == target.registry and origin.repository != target.repository else None
    descs = [manifest["config"], *manifest.get("layers", [])]
    outcome: dict[str, str] = {}

    def one(desc: dict) -> None:
        digest = desc["digest"]
        if registry.has_blob(target.repository, digest):
            outcome[digest] = "exists"
            return
        path = store.blob_path(digest)
        report = (lambda done: progress(digest[7:19], done, desc.get("size"))) if progress else None
        outcome[digest] = registry.upload_blob(target.repository, digest, path, mount_from=mount_from,
                                               chunk_size=chunk_size, progress=report)

    try:
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="hermetic-push") as pool:
            for future in [pool.submit(one, desc) for desc in descs]:
                future.result()
    except FileNotFoundError as exc:
        raise StoreError(f"a blob of {image.familiar} is missing from the store ({exc.filename}); "
                         "pull or import the image again") from None
    reference = target.digest or target.tag or refs.DEFAULT_TAG
    registry.put_manifest(target.repository, reference, manifest_bytes, manifest.get("mediaType") or MEDIA_MANIFEST)
    return sha256_digest(manifest_bytes), outcome
