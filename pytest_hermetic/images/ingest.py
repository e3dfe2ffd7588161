"""One pass from a layer blob's bytes to a blob and a layer in the store.

Shared by `pull` (bytes from a registry), and the imports of OCI layouts and
docker archives (bytes from a file): the blob is hashed, kept in a temporary
file, decompressed, hashed again (the diff_id) and written into staging (an
EROFS image or an unpacked folder: `Store.layer_format`), all as it streams.  Only when both digests (and the size) are right does the blob
enter `blobs/` and the layer `layers/`, each by rename; on any error the
staging goes and the store is as it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO, Iterator

    from .limits import Budget

from .._fs import rmtree
from ..errors import DigestMismatch, LayerError, StoreError
from . import layers, limits
from .digest import Hashed, HashingReader
from .layers.pipelined import Prefetched
from .store import Store

OCI_TYPES = {  # Docker's layer media types as OCI names them, for manifests the store writes
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar",
}


PIPELINE_ABOVE = 4 << 20  # compressed bytes


def disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT, also when extraction wrapped it in a LayerError."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__  # type: ignore[assignment]
    return False


@contextlib.contextmanager
def disk_full_said(store: Store, doing: str, again: str) -> Iterator[None]:
    """A full disk as one line that says what to do, not a raw `[Errno 28]`."""
    try:
        yield
    except (OSError, LayerError) as exc:
        if disk_full(exc):
            raise StoreError(f"no space left on the store's disk ({store.root}) while {doing}: nothing was stored; "
                             f"free space (`hermetic gc`, `hermetic rmi`) and {again} again") from None
        raise


class Source(Hashed):
    """The blob's bytes as they pass: counted, hashed, copied to `tmp_path`; `verify` checks them."""

    def __init__(self, src: BinaryIO, tmp_path: str, *, digest: str | None = None, size: int | None = None,
                 name: str = "blob") -> None:
        super().__init__()
        self._src = src
        self.tmp_path = tmp_path
        self.expected_digest, self.expected_size, self.name = digest, size, name
        self._out = open(tmp_path, "wb")

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self._out.close()

    def read(self, n: int = -1) -> bytes:
        data = self._src.read(1 << 20 if n is None or n < 0 else n)
        if data:
            self._out.write(data)
            self._count(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    def verify(self) -> None:
        self._out.flush()
        if (self.expected_digest and self.digest() != self.expected_digest) or (
                self.expected_size is not None and self.size != self.expected_size):
            raise DigestMismatch(f"digest mismatch for {self.name}: expected {self.expected_digest} "
                                 f"({self.expected_size} bytes), got {self.digest()} ({self.size} bytes); nothing was stored")


def ingest_layer(store: Store, source: Source, *, diff_id: str | None, media_type: str | None = None,
                 compressed: int | None = None, image: Budget | None = None) -> tuple[str, str]:
    """Unpack `source` into the store; return (diff_id, blob digest).

    A tar without end-of-archive blocks is accepted only when `diff_id` is
    known (its hash then proves nothing is missing).  What it unpacks to is
    bounded (`limits`: by the blob's `compressed` size, default the size the
    source expects) and charged to the `image`'s budget too.
    """
    budget = limits.layer_budget(compressed if compressed is not None else source.expected_size,
                                 source.name, image)

    staging = store.tempdir("layer-")
    os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the layer from users in containers
    try:
        with source:
            tar = HashingReader(layers.open_layer_stream(source))  # type: ignore[arg-type]
            # More threads pay off only when there is much to parse; for a small
            # layer the hand-offs cost more than they overlap.
            big = source.expected_size is None or source.expected_size > PIPELINE_ABOVE
            # Big: the bytes fetched, hashed, kept and decompressed in a thread of their own.
            reader = Prefetched(tar) if big else tar  # type: ignore[arg-type]
            try:
                store.unpack_layer(reader, staging, size=source.expected_size, allow_bare_end=diff_id is not None,
                                   pipelined=big, budget=budget)
                while True:  # what follows the end of the archive is hashed (diff_id), and bounded too
                    rest = reader.read(1 << 20)
                    if not rest:
                        break
                    budget.charge(len(rest), "(data after the end of the archive)")
            except LayerError:
                if isinstance(reader, Prefetched):
                    reader.close()  # (the source is ours again)
                source.drain()
                source.verify()  # wrong bytes say "digest mismatch", not "corrupt layer"
                raise
            finally:
                if isinstance(reader, Prefetched):
                    reader.close()
            source.drain()
            source.verify()
        if diff_id is not None and tar.digest() != diff_id:
            raise DigestMismatch(f"digest mismatch for layer {source.digest()}: its tar hashes to {tar.digest()}, "
                                 f"the image config says {diff_id}; nothing was stored")
        blob_digest = source.digest()
        blob = store.blob_path(blob_digest)
        if os.path.exists(blob):
            os.unlink(source.tmp_path)
        else:
            os.replace(source.tmp_path, blob)
        media_type = OCI_TYPES.get(media_type or "", media_type) or layers.media_type(blob)
        store.commit_layer(staging, tar.digest(), blob_digest, tar.size, media_type)
        return tar.digest(), blob_digest
    except BaseException:
        rmtree(staging)
        raise
