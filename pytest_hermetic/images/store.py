"""The local, content-addressed image store (OCI image-spec terms).

    STORE/
      blobs/sha256/<hex>     layer tars, image configs and manifests, by digest
      layers/<hex>/          each layer once, by its diff_id, shared: `root/`, the layer
                             unpacked, or `layer.erofs`, an EROFS image (as root, where the kernel
                             can: the default) that the store mounts once, on first use, for every
                             container, on <system state>/layers/<key>/<hex> (`layer_lower`; gc unmounts)
      refs.json              image name -> manifest digest
      tmp/                   staging: everything lands by atomic rename
      users/                 records: what a live container or writer needs kept
      containers/            read-write layers that may be committed
      lock                   flock for refs.json and gc
      gc.lock, gc.gate       held shared for a moment by writers; gc sweeps holding it exclusive

Several processes (xdist workers, notebook kernels, shells) use one store at
once: blobs and layers are immutable and appear by `rename`, so a reader
never sees half of one; `refs.json` changes only under the lock.

What `gc` may remove is decided without guessing (see docs/images.md):
everything a process makes in `tmp/`, `users/` and `containers/` carries
its maker's pid and start time in its name (`_proc.owned_name`), so it is
dead exactly when that process is.  A writer records in `users/` what it is
about to bring (a pull: its layers and blobs; a commit: its new layer)
before any of it lands, and a container what it runs on; gc keeps all that
while the owner lives.  Records and the last steps of a write (config,
manifest, tag) happen under `busy()`, which gc takes exclusive for its
sweep: so gc never waits for a download, and never sees a blob or layer
that nobody references or records.

One concern, in ~600 lines: the store's layout and the rules by which its
parts appear (rename, refs under the lock) and are kept (records, `busy`);
the blob/layer/image/record methods share those rules, so they stay one class.
The sweep that removes what nothing keeps is `gc.collect`; fetching what is
missing is `resolve.resolve_or_pull` (the store does no network I/O).
"""

from __future__ import annotations

import fcntl
import os
import time
# json and .schema (with re and its enums, ~3 ms), .digest and .platforms are
# imported in the functions that use them: a container of `host` (no layers)
# needs none of them;
# and no contextlib (with functools and collections, ~2 ms): `busy` and
# `keeping` are classes of their own.
from .._record import record, factory
import _thread  # not `threading`: its import and fork hooks cost every container start
TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it costs start-up
    from typing import Sequence

    from .._fs import Held
    from . import schema

from .._fs import flock, lock_file, rmtree
from .._proc import name_owner, owned_name, owner_alive, owner_key
from ..errors import HermeticError, ImageInUse, ImageNotFound, StoreError
from ..paths import make_owned, make_private, store_root
from . import reference as refs

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_LAYER_GZIP = MEDIA_LAYER + "+gzip"
MEDIA_LAYER_ZSTD = MEDIA_LAYER + "+zstd"
BASE_ANNOTATION = "org.hermetic.base"  # "host": the image's layers go on top of the host's root

LAYER_IMAGE = "layer.erofs"  # a layer stored as one EROFS image (see layer_format)
MOUNTS_DIR = "layers"  # below paths.system_state_root(): one folder of layer mounts per store (`Store.layer_mounts`)
STORE_NOTE = "store"  # in a store's mount folder: the store's real path (`unmount_stores_below`, gc)
PRIVATE_BIND = "private-bind"  # in a mount folder: the id of its private bind mount of itself, while it has one
LAYER_FORMATS = ("dir", "auto", "erofs")  # HERMETIC_LAYER_FORMAT
# With HERMETIC_LAYER_FORMAT=auto, layers under this many compressed bytes stay unpacked: their
# few files cost little to create once, and each image is one more mount on the host.
EROFS_ABOVE = 512 << 10
MAX_JSON = 32 << 20  # a manifest or config the store reads; real ones are a few KiB
HOST_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


@record
class Image:
    """An image as the runtime needs it: ordered layers and the run config."""

    name: str  # canonical name ("host" for the host image)
    id: str  # config digest ("host" for the host image)
    layers: list[str] = factory(list)  # diff_ids, bottom first
    config: dict = factory(dict)  # the OCI config's "config" object
    base: str | None = None  # "host" when stacked on the host's root
    created: float = 0.0
    size: int = 0

    @property
    def is_host(self) -> bool:
        return self.base == "host"

    @property
    def env(self) -> list[str]:
        return list(self.config.get("Env") or [])

    @property
    def familiar(self) -> str:
        return self.name if self.name == "host" else refs.parse(self.name).familiar


HOST_IMAGE = Image(name="host", id="host", base="host", config={"Env": HOST_ENV})


class Store:
    def __init__(self, root: str | None = None) -> None:
        self.root = os.path.abspath(root or store_root())

    # -- layout ---------------------------------------------------------------

    def ensure(self) -> None:
        """Make the store's folders (once; `gc` and every writer call it)."""
        make_private(self.root)  # (once per process)
        if os.path.isdir(os.path.join(self.root, "users")):
            return
        for sub in ("blobs/sha256", "layers", "tmp", "locks", "users", "containers"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)

    def blob_path(self, digest: str) -> str:
        return os.path.join(self.root, "blobs", "sha256", digest_hex(digest))

    def layer_path(self, diff_id: str) -> str:
        return os.path.join(self.root, "layers", digest_hex(diff_id))

    def lock(self) -> Held:
        self.ensure()
        return flock(os.path.join(self.root, "lock"))

    def blob_lock(self, digest: str) -> Held:
        """Exclusive per blob between processes and threads: one fetches, the others wait and reuse."""
        self.ensure()
        return flock(os.path.join(self.root, "locks", digest_hex(digest)))

    def busy(self) -> "Busy":
        """Held (shared), briefly, while a record in `users/` is written and
        from a writer's first unrecorded blob to its tag; `gc` sweeps under
        it exclusive.  Re-entrant within a process (`with store.busy():`)."""
        return Busy(self)

    def tempdir(self, prefix: str) -> str:
        """A staging folder in `tmp/` named for its owner (see the module doc)."""
        self.ensure()
        path = os.path.join(self.root, "tmp", owned_name(prefix))
        os.mkdir(path, 0o700)
        return path

    def tempfile(self, prefix: str, suffix: str = "") -> tuple[int, str]:
        """(fd, path) of a new staging file in `tmp/` named for its owner."""
        self.ensure()
        path = os.path.join(self.root, "tmp", owned_name(prefix) + suffix)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644), path

    # -- blobs and layers -----------------------------------------------------

    def put_blob_bytes(self, data: bytes) -> str:
        from .digest import sha256_digest  # lazily: see the imports at the top

        digest = sha256_digest(data)
        path = self.blob_path(digest)
        if not os.path.exists(path):
            fd, tmp = self.tempfile("blob-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        return digest

    def put_blob_file(self, tmp_path: str, digest: str) -> None:
        """Move a finished, verified file into the store under `digest`."""
        path = self.blob_path(digest)
        if os.path.exists(path):
            os.unlink(tmp_path)
        else:
            os.replace(tmp_path, path)

    def read_json(self, digest: str, check: schema.Check | None = None) -> dict:
        """A manifest or config blob, bounded and type-checked (`schema`): a bad one
        is a `StoreError` naming the field, never a crash of a later command."""
        from . import schema  # lazily: see the imports at the top

        try:
            with open(self.blob_path(digest), "rb") as f:
                data = f.read(MAX_JSON + 1)
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from the store {self.root}; fix: `hermetic rmi` the image and import it again") from None
        return schema.load(data, check or schema.Obj({}), f"blob {digest[:19]} in the store", StoreError, limit=MAX_JSON)

    def has_layer(self, diff_id: str) -> bool:
        return os.path.isdir(self.layer_path(diff_id))

    def add_layer_tar(self, tar_path: str, diff_id: str | None = None, *, keep: Keep | None = None) -> tuple[str, int]:
        """Store a layer tar (any compression): blob by digest, unpacked by diff_id.

        Returns (diff_id, size of the uncompressed tar).  The layer appears
        by rename, whole or not at all; a second process unpacking the same
        layer at once throws its copy away.  Without `keep` (a record that
        gc honours) the caller must hold `busy()` until the layer is tagged.
        """
        from . import layers, limits  # tarfile & co. (~16 ms): not for a container start, which unpacks nothing
        from .digest import HashingReader, sha256_file  # lazily: see the imports at the top

        self.ensure()
        blob_digest = sha256_file(tar_path)
        budget = limits.layer_budget(os.path.getsize(tar_path), f"layer {os.path.basename(tar_path)}")
        staging = self.tempdir("layer-")
        os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the layer from users in containers
        try:
            with layers.open_layer(tar_path) as stream:
                counter = HashingReader(stream)
                self.unpack_layer(counter, staging, size=os.path.getsize(tar_path), budget=budget)
                while True:  # what follows the end of the archive is hashed too, and bounded
                    rest = counter.read(1 << 20)
                    if not rest:
                        break
                    budget.charge(len(rest), "(data after the end of the archive)")
            computed = counter.digest()
            if diff_id is not None and diff_id != computed:
                raise StoreError(f"layer {blob_digest}: digest mismatch (diff_id {computed}, expected {diff_id})")
            if keep is not None:
                keep.add(layers=[computed], blobs=[blob_digest])  # before gc can see them
            blob = self.blob_path(blob_digest)
            if not os.path.exists(blob):
                import shutil  # (imports bz2, lzma: kept off the container start path)

                copy = os.path.join(staging, "blob")  # a private name: another process may copy the same blob
                shutil.copyfile(tar_path, copy)
                os.replace(copy, blob)
            self.commit_layer(staging, computed, blob_digest, counter.size, layers.media_type(tar_path))
            return computed, counter.size
        except BaseException:
            rmtree(staging)
            raise

    def layer_format(self, size: int | None = None) -> str:
        """How this store keeps a new layer of `size` compressed bytes: "dir" (unpacked) or
        "erofs" (one image, mounted once by the store: real root and Linux 6.12+ only).
        HERMETIC_LAYER_FORMAT chooses: auto (the default as root: images for layers of
        `EROFS_ABOVE` and more where the kernel can mount them from a file), dir (every layer
        unpacked; the default rootless, where EROFS cannot be mounted), erofs (every layer an
        image; an error where the kernel cannot mount it).  See docs/images.md."""
        wanted = os.environ.get("HERMETIC_LAYER_FORMAT") or default_layer_format()
        if wanted not in LAYER_FORMATS:
            raise StoreError(f"HERMETIC_LAYER_FORMAT={wanted!r} is not one of {', '.join(LAYER_FORMATS)}")
        if wanted == "dir" or (wanted == "auto" and size is not None and size < EROFS_ABOVE):
            return "dir"
        with _probe_guard:
            works = _erofs_works.get(self.root)
            if works is None:
                works = _erofs_works[self.root] = self._probe_erofs()
        if not works and wanted == "erofs":
            raise StoreError("HERMETIC_LAYER_FORMAT=erofs, but this kernel does not mount EROFS images from a file "
                             "for this process (needs real root and Linux 6.12+ with EROFS); unset it to unpack layers")
        return "erofs" if works else "dir"

    def _probe_erofs(self) -> bool:
        from .layers import erofs  # (as above)
        from ..runtime.rootfs.images import can_mount_images

        if os.geteuid() != 0:
            return False
        staging = self.tempdir("probe-")
        try:
            image = os.path.join(staging, "probe.erofs")
            with open(image, "xb") as out:
                erofs.ImageBuilder(out).finish()
            os.mkdir(os.path.join(staging, "mnt"))
            return can_mount_images(image, os.path.join(staging, "mnt"))
        finally:
            rmtree(staging)

    def unpack_layer(self, src: object, staging: str, *, size: int | None, budget: object = None,
                     allow_bare_end: bool = False, pipelined: bool = True) -> None:
        """Unpack the layer tar stream `src` (of `size` compressed bytes, if known) into the
        staging folder `staging`, as `layer_format` says: `staging/layer.erofs` or `staging/root/`."""
        from . import layers  # (as above)

        if self.layer_format(size) == "erofs":
            from .layers.erofs import write_layer_image

            write_layer_image(src, os.path.join(staging, LAYER_IMAGE), allow_bare_end=allow_bare_end,  # type: ignore[arg-type]
                              pipelined=pipelined, budget=budget)  # type: ignore[arg-type]
            return
        root = os.path.join(staging, "root")
        os.mkdir(root)
        layers.extract_layer(src, root, xattr_prefix=self.xattr_prefix, allow_bare_end=allow_bare_end,  # type: ignore[arg-type]
                             pipelined=pipelined, budget=budget)  # type: ignore[arg-type]

    def layer_image(self, diff_id: str) -> str | None:
        """The layer's EROFS image file, or None when the layer is an unpacked folder (`layer_root`)."""
        path = os.path.join(self.layer_path(diff_id), LAYER_IMAGE)
        return path if os.path.exists(path) else None

    def commit_layer(self, staging: str, diff_id: str, blob_digest: str, size: int, media_type: str) -> None:
        """Move an unpacked, verified layer (`staging/root`) into place by rename.

        The blob must be in the store already: a layer is never visible
        without the blob it came from.  A copy that lost the race is dropped.
        """
        import json  # lazily: see the imports at the top

        with open(os.path.join(staging, "meta.json"), "w") as f:
            json.dump({"diff_id": diff_id, "blob": blob_digest, "size": size, "media_type": media_type}, f)
        target = self.layer_path(diff_id)
        if os.path.isdir(target):
            rmtree(staging)
            return
        try:
            os.rename(staging, target)
        except OSError:
            if not os.path.isdir(target):
                raise
            rmtree(staging)

    def layer_root(self, diff_id: str) -> str:
        return os.path.join(self.layer_path(diff_id), "root")

    def layer_lower(self, diff_id: str) -> str:
        """The layer's tree as a folder, an overlay's lower layer: `layer_root`, unpacked, or
        the layer's EROFS image mounted read-only, once, on the host, for every container, on
        `layer_mount_point` (below the machine's state folder, where no rootless overlay looks).

        The caller's record (`use`, `keep`) keeps the layer from gc.  Two stats a layer when
        nothing is to be mounted (as before the mounts moved); the mount itself, on first use,
        about 30 us."""
        point = self.layer_mount_point(diff_id)
        try:
            if os.stat(point).st_dev != _mounts_dev(os.path.dirname(point)):
                return point  # an image, mounted already
        except FileNotFoundError:
            pass
        image = os.path.join(self.layer_path(diff_id), LAYER_IMAGE)
        if os.path.exists(image):
            self._mount_layer(image, point, diff_id)
            return point
        return self.layer_root(diff_id)

    def layer_mounts(self) -> str:
        """The folder of this store's layer mounts: `<system state>/layers/<key>`, the key from the
        store's real path (`layer_mounts_folder`).  On a tmpfs, root's only: a reboot drops the
        mounts and their folders together, and no rootless container overlays it (docs/images.md)."""
        found = _mounts_of.get(self.root)
        if found is None:
            found = _mounts_of[self.root] = layer_mounts_folder(os.path.realpath(self.root))
        return found

    def layer_mount_point(self, diff_id: str) -> str:
        """Where the layer's EROFS image is mounted (`layer_lower`), whether it is or not."""
        return os.path.join(self.layer_mounts(), digest_hex(diff_id))

    def lowers_base(self, lowers: Sequence[str]) -> str:
        """The folder most of `lowers` (from `layer_lower`) are in, for overlay options named
        relative to it (`overlay.mount_overlay`'s `base`): the store's layers/ or its mount folder."""
        mounted = self.layer_mounts() + "/"
        images = sum(1 for lower in lowers if lower.startswith(mounted))
        return mounted[:-1] if images * 2 > len(lowers) else os.path.join(self.root, "layers")

    def _mount_layer(self, image: str, point: str, diff_id: str) -> None:
        from ..runtime.rootfs import images as mounts

        self._prepare_mounts()
        # The layer's lock: one process mounts, the others find it mounted (never two stacked).
        with flock(os.path.join(self.root, "locks", digest_hex(diff_id))):
            try:
                os.mkdir(point, 0o755)
            except FileExistsError:
                if os.stat(point).st_dev != _mounts_dev(os.path.dirname(point)):
                    return
            except FileNotFoundError:  # the folder went since this process made it (`unmount_layers`)
                _prepared.discard(self.root)
                self._prepare_mounts()
                os.mkdir(point, 0o755)
            mounts.mount_layer_image(image, point)

    def _prepare_mounts(self) -> None:
        """Make this store's mount folder (once a process): its note naming the store, and, where
        the mount holding it propagates (a shared /run, as systemd makes it), a private bind
        mount of itself, so that the layer mounts below reach no other mount namespace and the
        host's propagation stays as it was (as Docker does with its overlay2 folder)."""
        if self.root in _prepared:
            return
        from ..paths import system_state_root
        from ..runtime.rootfs import images as mounts

        folder = self.layer_mounts()
        with self.lock():  # (one process binds; the note and the bind are made once)
            make_owned(system_state_root())
            make_owned(os.path.join(system_state_root(), MOUNTS_DIR))
            os.makedirs(folder, 0o700, exist_ok=True)
            note = os.path.join(folder, STORE_NOTE)
            if not os.path.exists(note):
                with open(note + ".new", "w") as f:
                    f.write(os.path.realpath(self.root))
                os.replace(note + ".new", note)
            marker = os.path.join(folder, PRIVATE_BIND)
            bound = _read_text(marker)
            if not (bound and str(mounts.top_mount_id(folder)) == bound) and mounts.holder_is_shared(folder):
                with open(marker, "w") as f:
                    f.write(str(mounts.make_private_bind(folder)))
        _prepared.add(self.root)

    def unmount_layers(self) -> list[str]:
        """Detach every layer image this store mounted and its mount folder's private bind, and
        remove that folder: for a store about to be removed (a test's) that no process starts
        containers on.  Also what an older version mounted inside the store itself
        (`STORE/layers/<hex>/root`, and the store's private bind of itself).  Containers still
        running keep their layers until they end (the mounts are detached lazily); a container
        started later mounts again.  What it detached."""
        from ..runtime.rootfs import images as mounts

        _prepared.discard(self.root)
        done = unmount_folder(self.layer_mounts())
        real = os.path.realpath(self.root)
        done += [point for point in mounts.mounts_below(os.path.join(real, "layers")) if mounts.unmount(point)]
        marker = os.path.join(self.root, PRIVATE_BIND)  # (an older version's bind of the store itself)
        bound = _read_text(marker)
        if bound is not None:
            # Only the bind this store made (a reboot drops it, and the store may sit on a mount of its own).
            if bound and str(mounts.top_mount_id(real)) == bound and mounts.unmount(real):
                done.append(real)
            try:
                os.unlink(marker)
            except FileNotFoundError:
                pass
        return done

    @property
    def xattr_prefix(self) -> str:
        from . import layers  # (as above: the package's import costs ~16 ms)

        return layers.OVERLAY_TRUSTED if os.geteuid() == 0 else layers.OVERLAY_USER

    # -- images ---------------------------------------------------------------

    def _refs_path(self) -> str:
        return os.path.join(self.root, "refs.json")

    def read_refs(self) -> dict[str, str]:
        """refs.json: canonical image name -> manifest digest (checked by `schema.REFS`)."""
        from . import schema  # lazily: see the imports at the top

        try:
            with open(self._refs_path(), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return {}
        try:
            return schema.load(data, schema.REFS, "refs.json", StoreError, limit=len(data))
        except StoreError as exc:
            raise StoreError(f"{self._refs_path()} is corrupt ({exc}); "
                             "fix: remove it and import the images again") from None

    def _write_refs(self, data: dict[str, str]) -> None:
        import json  # lazily: see the imports at the top

        fd, tmp = self.tempfile("refs-")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, self._refs_path())

    def put_image(self, name: str, diff_ids: list[str], config: dict, *, base: str | None = None,
                  history: list[dict] | None = None, created: str | None = None) -> Image:
        """Write config and manifest for `diff_ids` and point `name` at them.
        `created` (RFC 3339) fixes the config's time (a reproducible build); default now."""
        with self.busy():
            return self._put_image(name, diff_ids, config, base=base, history=history, created=created)

    def _put_image(self, name: str, diff_ids: list[str], config: dict, *, base: str | None,
                   history: list[dict] | None, created: str | None = None) -> Image:
        import json  # lazily: see the imports at the top

        from . import platforms

        layer_sizes = []
        for diff_id in diff_ids:
            meta = self.layer_meta(diff_id)
            layer_sizes.append((meta.get("blob", diff_id), meta.get("size", 0), meta.get("media_type", MEDIA_LAYER)))
        oci_config = {
            "created": created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "architecture": platforms.host()["architecture"],
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
            "history": history or [],
        }
        config_bytes = json.dumps(oci_config, sort_keys=True).encode()
        config_digest = self.put_blob_bytes(config_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": len(config_bytes)},
            "layers": [
                {"mediaType": media_type, "digest": blob, "size": os.path.getsize(self.blob_path(blob)) if os.path.exists(self.blob_path(blob)) else size}
                for blob, size, media_type in layer_sizes
            ],
        }
        if base:
            manifest["annotations"] = {BASE_ANNOTATION: base}
        manifest_digest = self.put_blob_bytes(json.dumps(manifest, sort_keys=True).encode())
        self.tag(name, manifest_digest)
        # Read back (checked) what this call wrote, not what the name points
        # at by now: another writer may have tagged it since (the last one wins).
        return self.tagged(name, manifest_digest)

    def tag(self, name: str, manifest_digest: str) -> None:
        """Point canonical `name` at a manifest already in the store."""
        with self.lock():
            data = self.read_refs()
            data[name] = manifest_digest
            self._write_refs(data)

    def tag_as(self, source: str, name: str) -> Image:
        """`hermetic tag SOURCE NAME`: canonical `name` points at what `source` (a name, an id prefix) points at; never pulls."""
        image = self.resolve(source)
        if image.name == "host":
            raise StoreError("`host` is the host's own / and has no manifest to tag; make an image of it with "
                             "`hermetic commit` or `hermetic import dir:/ NAME`")
        with self.busy(), self.lock():
            data = self.read_refs()
            if image.name not in data:
                raise self._not_here(source)
            digest = data[name] = data[image.name]
            self._write_refs(data)
        return self.tagged(name, digest)

    def _not_here(self, text: str) -> ImageNotFound:
        """`text` names no image here, for a command that never pulls (tag, save, rmi)."""
        return ImageNotFound(f"image {text!r} is not in the local store ({self.root}); `hermetic images` lists "
                             "what it holds")

    def manifest_digest(self, name: str) -> str:
        data = self.read_refs()
        if name not in data:
            raise self._not_here(refs.parse(name).familiar)
        return data[name]

    def local(self, text: str) -> Image:
        """The image `text` names if the store has it; never pulls."""
        name = refs.parse(text).name
        self.manifest_digest(name)
        return self.get(name)

    def layer_meta(self, diff_id: str) -> dict:
        """The layer's record (`meta.json`: its blob, size, media type), checked by `schema.LAYER_META`."""
        from . import schema  # lazily: see the imports at the top

        try:
            with open(os.path.join(self.layer_path(diff_id), "meta.json"), "rb") as f:
                data = f.read(MAX_JSON + 1)
        except FileNotFoundError:
            raise StoreError(f"layer {diff_id} is not in the store {self.root}") from None
        return schema.load(data, schema.LAYER_META, f"layer {diff_id[:19]} in the store", StoreError, limit=MAX_JSON)

    def get(self, name: str) -> Image:
        """The image filed under canonical `name`; `ImageNotFound` if none."""
        if name == "host":
            return HOST_IMAGE
        previous = None
        while True:
            data = self.read_refs()
            if name not in data:
                raise ImageNotFound(name)
            try:
                return self._load(name, data[name])
            except StoreError:
                if data[name] == previous:
                    raise
                previous = data[name]  # the tag moved and gc took what it named: read it again

    def tagged(self, name: str, manifest_digest: str) -> Image:
        """The image `manifest_digest` describes, under `name`: what a writer
        just tagged (call it under `busy()`, before gc may take it)."""
        return self._load(name, manifest_digest)

    def _load(self, name: str, manifest_digest: str) -> Image:
        from . import schema  # lazily: see the imports at the top

        manifest = self.read_json(manifest_digest, schema.MANIFEST)
        config_digest = manifest["config"]["digest"]
        oci_config = self.read_json(config_digest, schema.CONFIG)
        base = (manifest.get("annotations") or {}).get(BASE_ANNOTATION)
        diff_ids = list((oci_config.get("rootfs") or {}).get("diff_ids") or [])
        size = sum(int(layer.get("size") or 0) for layer in manifest.get("layers") or [])
        created = os.path.getmtime(self.blob_path(manifest_digest))
        config = dict(oci_config.get("config") or {})
        if base == "host" and not config.get("Env"):
            config["Env"] = HOST_ENV
        return Image(name, config_digest, diff_ids, config, base, created, size)

    def resolve(self, text: str) -> Image:
        """An image by reference text (`busybox:1`, `host`, an id prefix), from this store only (no pull)."""
        ref = refs.parse(text)
        if ref.transport == "host":
            return HOST_IMAGE
        try:
            return self.get(ref.name)
        except ImageNotFound:
            pass
        if ref.transport == "registry" and ref.tag is None and ref.registry == refs.DEFAULT_REGISTRY:
            for image in self.images():  # an id prefix, as `docker run 3f2a` allows
                if len(text) >= 4 and digest_hex(image.id).startswith(text):
                    return image
        if ref.transport == "registry":  # `resolve.resolve_or_pull` pulls it on first use
            raise ImageNotFound(f"image {text!r} is not in the local store ({self.root}); pull it with `hermetic pull {text}`")
        raise ImageNotFound(f"image {text!r} is not in the local store ({self.root}); import it with `hermetic import {text} NAME`")

    def images(self, problems: list[str] | None = None) -> list[Image]:
        """The images in the store; one that cannot be read is left out (and
        said in `problems`), never the end of the listing."""
        result = []
        for name, digest in sorted(self.read_refs().items()):
            try:
                image = self._load(name, digest)
                image.familiar  # noqa: B018 - a name that is no reference fails here, not in the caller
                result.append(image)
            except HermeticError as exc:
                if problems is not None:
                    try:
                        shown = refs.parse(name).familiar
                    except HermeticError:
                        shown = name
                    problems.append(f"image {shown} cannot be read ({exc}); remove it: `hermetic rmi {shown}`")
        return result

    # -- what live containers and writers need kept ------------------------------

    def keep(self, kind: str, *, layers: Sequence[str] = (), blobs: Sequence[str] = (), **info: object) -> Keep:
        """Record in `users/` that this process needs `layers` and `blobs`:
        `gc` keeps them (also unreferenced, also after `rmi -f`) until the
        record is released or its owner dies.  Writers record what they
        are about to bring before it lands, so they need no lock while they
        download or unpack; containers record what they run on."""
        self.ensure()
        record = Keep(self, os.path.join(self.root, "users", f"{owner_key()}-{os.urandom(8).hex()}.json"),
                      {"kind": kind, **info, "layers": [], "blobs": []})
        record.add(layers=layers, blobs=blobs)
        return record

    def keeping(self, kind: str, *, layers: Sequence[str] = (), blobs: Sequence[str] = (),
                **info: object) -> "Keeping":
        """`keep`'s record for the length of a `with` block (`as` names it), released after."""
        return Keeping(self, kind, layers, blobs, info)

    def use(self, image: Image, container_id: str, name: str) -> Keep | None:
        """Record that container `container_id` runs on `image`'s layers
        (None for an image without layers).  Raises StoreError if a layer is
        gone already (the image was removed and collected)."""
        if not image.layers:
            return None
        record = Keep(self, os.path.join(self.root, "users", f"{owner_key()}-{container_id}.json"),
                      {"kind": "container", "id": container_id, "name": name, "image": image.familiar,
                       "image_name": image.name, "image_id": image.id, "base": image.base, "layers": [], "blobs": []})
        self.ensure()
        with self.busy():  # gc sees the record, or swept before it and we see what it took
            record.add(layers=image.layers, blobs=[image.id])  # the config too: a commit of it needs it
            missing = [d for d in image.layers if not self.has_layer(d)]
        if missing:
            record.release()
            raise StoreError(f"layer {missing[0]} of {image.familiar} is missing from the store {self.root}; "
                             "fix: import or pull the image again")
        return record

    def release(self, record: Keep | None) -> None:
        if record is not None:
            record.release()

    def users(self) -> list[dict]:
        """The records of live containers (their owners run): id, name, image, image_id, layers."""
        import json  # lazily: see the imports at the top

        found = []
        base = os.path.join(self.root, "users")
        for entry in list_entries(base):
            owner = name_owner(entry)
            if owner is None or not owner_alive(owner):
                continue
            try:
                with open(os.path.join(base, entry)) as f:
                    record = json.load(f)
            except (OSError, ValueError):
                continue  # being written (outside busy: never) or gone meanwhile
            found.append({**record, **owner})
        return found

    def image_of(self, container_id: str) -> Image | None:
        """The image a live container runs on, as it was when it started (its
        tag may have moved or gone since); None if the store has no record."""
        from . import schema  # lazily: see the imports at the top

        for user in self.users():
            if user.get("kind") == "container" and user.get("id") == container_id:
                config = self.read_json(user["image_id"], schema.CONFIG)
                return Image(user["image_name"], user["image_id"], list(user["layers"]),
                             dict(config.get("config") or {}), user.get("base"))
        return None

    def containers_using(self, image_id: str) -> list[dict]:
        return [u for u in self.users() if u.get("kind") == "container" and u.get("image_id") == image_id]

    def remove(self, text: str, *, force: bool = False) -> str:
        """Untag an image (by name, or by id or a unique prefix of it, as
        `images -q` prints them: all its names then, which takes `force`
        when it has several, as `docker rmi` of an id does); its blobs and
        layers go at the next `gc`, unless a live container still runs on
        them.  Refuses (ImageInUse) to untag the last name of an image a live
        container uses, unless `force`.  Returns the names it untagged."""
        ref = refs.parse(text)
        if ref.transport == "host":
            raise StoreError("`host` is built in and cannot be removed")
        with self.lock():
            data = self.read_refs()
            if ref.name in data:
                names = [ref.name]
            else:
                names = self._names_of_id(text, data)
            digest = data[names[0]]
            if len(names) > 1 and not force:
                shown = ", ".join(refs.parse(name).familiar for name in names)
                raise StoreError(f"image {text} has {len(names)} names ({shown}); remove them by name, or all of "
                                 f"them with `hermetic rmi -f {text}`")
            if not force and not any(name not in names and other == digest for name, other in data.items()):
                self._refuse_in_use(refs.parse(names[0]), digest)
            for name in names:
                del data[name]
            self._write_refs(data)
        return ", ".join(refs.parse(name).familiar for name in names)

    def _names_of_id(self, text: str, data: dict[str, str]) -> list[str]:
        """The names of the image whose id (config digest) is `text` or starts with it (4 hex digits at least)."""
        from . import schema  # lazily: see the imports at the top

        hexes = text[7:] if text.startswith("sha256:") else text
        ids: dict[str, list[str]] = {}
        if len(hexes) >= 4 and all(c in "0123456789abcdef" for c in hexes):
            for name, manifest_digest in sorted(data.items()):
                try:
                    image_id = self.read_json(manifest_digest, schema.MANIFEST)["config"]["digest"]
                except StoreError:
                    continue
                if digest_hex(image_id).startswith(hexes):
                    ids.setdefault(image_id, []).append(name)
        if len(ids) > 1:
            raise StoreError(f"{text!r} is the start of {len(ids)} image ids; give more of it")
        if not ids:
            raise self._not_here(text)
        return next(iter(ids.values()))

    def _refuse_in_use(self, ref: refs.Reference, manifest_digest: str) -> None:
        from . import schema  # lazily: see the imports at the top

        try:
            image_id = self.read_json(manifest_digest, schema.MANIFEST)["config"]["digest"]
        except StoreError:
            return
        users = self.containers_using(image_id)
        if users:
            first = users[0]
            others = f" and {len(users) - 1} more" if len(users) > 1 else ""
            raise ImageInUse(
                f"image {ref.familiar} is in use by container {first.get('name')} ({str(first.get('id'))[:12]}, "
                f"owner pid {first['owner_pid']}){others}; stop it first, or untag it anyway with "
                f"`hermetic rmi -f {ref.familiar}` (its layers then stay until the last container is gone)")

    # -- gc ---------------------------------------------------------------------------

    def clear_dead_staging(self) -> list[str]:
        """Remove what killed pulls, imports and commits left in `tmp/`:
        entries whose owner (named in the entry) no longer runs.  Cheap (one
        listing); the start of each pull, import and commit calls it."""
        removed = []
        tmp_dir = os.path.join(self.root, "tmp")
        for entry in list_entries(tmp_dir):
            owner = name_owner(entry)
            if owner is not None and not owner_alive(owner):
                remove_entry(os.path.join(tmp_dir, entry))
                removed.append(f"staging {entry}")
        return removed

class Keep:
    """One record in `STORE/users/` (see `Store.keep`): named for its owner,
    so it counts exactly while that process runs."""

    def __init__(self, store: Store, path: str, data: dict) -> None:
        self.store, self.path, self.data = store, path, data

    def add(self, *, layers: Sequence[str] = (), blobs: Sequence[str] = ()) -> None:
        """Add to what gc keeps, before it lands in the store."""
        import json  # lazily: see the imports at the top

        new_layers = [d for d in layers if d not in self.data["layers"]]
        new_blobs = [d for d in blobs if d and d not in self.data["blobs"]]
        if not new_layers and not new_blobs and os.path.exists(self.path):
            return
        self.data["layers"] += new_layers
        self.data["blobs"] += new_blobs
        fd, tmp = self.store.tempfile("user-")
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(self.data))
        with self.store.busy():  # gc reads the records under the same lock, exclusive
            os.replace(tmp, self.path)

    def release(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class Busy:
    """`Store.busy`: gc.lock held shared, by the first holder in this process
    for all of them, from entering the `with` block to leaving it."""

    def __init__(self, store: Store) -> None:
        self._root = store.root
        self._store = store
        self._held: list[int] | None = None

    def __enter__(self) -> None:
        self._store.ensure()
        root = self._root
        with _busy_guard:
            held = _busy_held.get(root)
            if held is None:
                # Through the gate, so that a waiting gc is not starved by a
                # stream of writers: gc holds the gate while it waits.
                with flock(os.path.join(root, "gc.gate"), shared=True):
                    fd = lock_fd(os.path.join(root, "gc.lock"), fcntl.LOCK_SH)
                held = _busy_held[root] = [fd, 0]
            held[1] += 1
        self._held = held

    def __exit__(self, *exc_info: object) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        with _busy_guard:
            held[1] -= 1
            if held[1] == 0:
                del _busy_held[self._root]
                os.close(held[0])


class Keeping:
    """`Store.keeping`: a `keep` record made on entering the `with` block, released on leaving it."""

    def __init__(self, store: Store, kind: str, layers: Sequence[str], blobs: Sequence[str], info: dict) -> None:
        self._args = (store, kind, layers, blobs, info)
        self._record: Keep | None = None

    def __enter__(self) -> Keep:
        store, kind, layers, blobs, info = self._args
        self._record = store.keep(kind, layers=layers, blobs=blobs, **info)
        return self._record

    def __exit__(self, *exc_info: object) -> None:
        record, self._record = self._record, None
        if record is not None:
            record.release()


def digest_hex(digest: str) -> str:
    """The hex part of ``sha256:<hex>``: the name of a blob, layer or lock file."""
    return digest.split(":", 1)[-1]


def list_entries(path: str) -> list[str]:
    """The names in folder `path`; none if it is not there (yet, or any more)."""
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


_busy_guard = _thread.allocate_lock()
_probe_guard = _thread.allocate_lock()
_prepared: set[str] = set()  # store roots whose mount folder is made and propagates nowhere (once a process)
_mounts_of: dict[str, str] = {}  # store root -> its mount folder (`Store.layer_mounts`)
_folder_dev: dict[str, int] = {}  # mount folder -> its device (`_mounts_dev`)
_erofs_works: dict[str, bool] = {}  # store root -> whether its layers can be EROFS images (probed once a process)
_busy_held: dict[str, list[int]] = {}  # store root -> [fd holding gc.lock shared, holders in this process]


def default_layer_format() -> str:
    """HERMETIC_LAYER_FORMAT when unset: `auto` as root, `dir` rootless (EROFS is not mountable
    in a user namespace)."""
    return "auto" if os.geteuid() == 0 else "dir"


def layer_mounts_folder(store_real_path: str) -> str:
    """`Store.layer_mounts` of the store whose real path is `store_real_path`: the key is two
    checksums of the path (zlib's: hashlib's import would cost a container start 4 ms)."""
    import zlib

    from ..paths import system_state_root

    data = os.fsencode(store_real_path)
    key = f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"
    return os.path.join(os.path.realpath(system_state_root()), MOUNTS_DIR, key)


def _mounts_dev(folder: str) -> int:
    """The device of a mount folder (a layer mounted below it has its own); asked once a process."""
    dev = _folder_dev.get(folder)
    if dev is None:
        dev = _folder_dev[folder] = os.stat(folder).st_dev
    return dev


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def unmount_folder(folder: str) -> list[str]:
    """Detach the layer mounts in a store's mount folder and its private bind, then remove the
    folder (empty mount points, the note; never a file below a mount).  What it detached."""
    from ..runtime.rootfs import images as mounts

    done = [point for point in mounts.mounts_below(folder) if mounts.unmount(point)]
    bound = _read_text(os.path.join(folder, PRIVATE_BIND))
    if bound and str(mounts.top_mount_id(folder)) == bound and mounts.unmount(folder):
        done.append(folder)
    for path in [os.path.join(folder, entry) for entry in list_entries(folder)] + [folder]:
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)  # (a mount point still in use elsewhere stays: EBUSY)
            else:
                os.unlink(path)
        except OSError:
            pass
    _folder_dev.pop(folder, None)
    return done


def mount_folders() -> dict[str, str]:
    """Every store's mount folder on this machine -> the store's real path (its note)."""
    from ..paths import system_state_root

    base = os.path.join(os.path.realpath(system_state_root()), MOUNTS_DIR)
    found = {}
    for key in list_entries(base):
        store = _read_text(os.path.join(base, key, STORE_NOTE))
        if store:
            found[os.path.join(base, key)] = store
    return found


def unmount_stores_below(path: str) -> list[str]:
    """`Store.unmount_layers` for every store below `path` (or at it) that has layer images
    mounted, also a store removed already: for a folder of throwaway stores about to be removed
    (a test session's); what it detached."""
    from ..runtime.rootfs.images import mounts_below

    real = os.path.realpath(path)
    roots = {store for store in mount_folders().values() if (store + "/").startswith(real.rstrip("/") + "/")}
    # An older version's mounts, in the store itself: STORE/layers/<hex>/root.
    roots |= {os.path.dirname(os.path.dirname(os.path.dirname(point))) for point in mounts_below(real)
              if point.endswith("/root") and os.path.basename(os.path.dirname(os.path.dirname(point))) == "layers"}
    return [point for root in sorted(roots) for point in Store(root).unmount_layers()]


def lock_fd(path: str, how: int) -> int:
    """An fd of `path` (made if missing) holding `fcntl.flock(how)`; closing it releases."""
    return lock_file(path, how)


def remove_entry(path: str) -> bool:
    """Remove a file or a tree; False if it was gone already (another gc)."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        return False
    return True
