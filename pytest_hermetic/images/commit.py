"""`commit`: a container's read-write layer becomes one new image layer.

The overlay upper directory holds exactly what changed; `layers` turns its
overlayfs whiteouts (0/0 devices, the opaque xattr) into OCI ones (`.wh.`),
the store unpacks the tar as every other layer, and the new image is the old
image's config and layers plus this one.  The init layer (hostname, hosts,
mount points) is a separate lower layer, so it is never part of a commit.
"""

from __future__ import annotations

import copy
import os
import time

from .._fs import rmtree
from ..errors import ImageReferenceError
from . import layers
from . import reference as refs
from .ingest import disk_full_said
from .store import Image, Store


def target_name(ref: str) -> str:
    parsed = refs.parse(ref)
    if parsed.transport != "registry" or parsed.digest:
        raise ImageReferenceError(f"cannot commit to {ref!r}: give a name such as 'myimage:1'")
    return parsed.name


def commit_upper(store: Store, base: Image, upper: str, ref: str, *, userns: bool, comment: str) -> Image:
    """Store `upper` as one layer on `base` and tag it `ref`; returns the image this call wrote."""
    name = target_name(ref)
    prefix = layers.OVERLAY_USER if userns else layers.OVERLAY_TRUSTED
    store.clear_dead_staging()
    with disk_full_said(store, f"committing {refs.parse(ref).familiar}", "commit"), \
            store.keeping("commit", layers=base.layers) as keep:
        staging = store.tempdir("commit-")
        try:
            tar_path = os.path.join(staging, "layer.tar")
            with open(tar_path, "wb") as out:
                digests = layers.write_layer_from_upper(upper, out, xattr_prefix=prefix)
            diff_id, _size = store.add_layer_tar(tar_path, digests.diff_id, keep=keep)
        finally:
            rmtree(staging)
        config = copy.deepcopy(base.config)
        history = [{"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "created_by": comment}]
        return store.put_image(name, [*base.layers, diff_id], config, base=base.base, history=history)
