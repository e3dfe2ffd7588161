"""sha256 content digests: the one content path of `images/`.

Every blob, manifest, config and layer tar is named by ``sha256:<hex>``;
this module computes those names (`sha256_digest`, `sha256_file`) and hashes
bytes as they stream past (`HashingReader`, `HashingWriter`, and the download
and ingest streams built on `Hashed`), so nothing is read twice. A mismatch is
`errors.DigestMismatch` (a `ContentError`; `RegistryDigestMismatch` when a
registry sent it), raised by the caller with a message naming the content.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs the pull path imports
    from typing import IO

CHUNK = 1 << 20

# `hashlib` is imported where used (4-9 ms with OpenSSL): the store imports this module on
# every container start, which hashes nothing.


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of `data`."""
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    """``sha256:<hex>`` of the file at `path`, read in 1 MiB pieces."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


class Hashed:
    """Hashes and counts the bytes that pass (`size`); `digest()` names them."""

    def __init__(self) -> None:
        import hashlib

        self._hash = hashlib.sha256()
        self.size = 0

    def _count(self, data: bytes) -> bytes:
        self._hash.update(data)
        self.size += len(data)
        return data

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class HashingReader(Hashed):
    """Reads through `stream`, hashing and counting what passes (a layer's diff_id)."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__()
        self._stream = stream

    def read(self, n: int = -1) -> bytes:
        return self._count(self._stream.read(n))

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


class HashingWriter(Hashed):
    """Writes through to `out`, hashing and counting on the way (a written layer's diff_id)."""

    def __init__(self, out: IO[bytes]) -> None:
        super().__init__()
        self._out = out

    def write(self, data: bytes) -> int:
        self._out.write(self._count(data))
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._out.flush()
