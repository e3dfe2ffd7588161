"""Layer blobs -> uncompressed tar bytes: gzip, zstd, xz, bzip2 or plain, sniffed from the magic bytes."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing (and dataclasses) cost a pull ~20 ms of imports
    from typing import IO, BinaryIO, Protocol

    class Readable(Protocol):
        """What reading a layer needs of its source: a file, a download, a hashing reader."""

        def read(self, size: int = ..., /) -> bytes: ...

    class Stream(Readable, Protocol):
        """A reader made here (a decompressor), closed by who asked for it."""

        def close(self) -> None: ...

from ...errors import LayerError
from .format import CHUNK

_MAGIC_GZIP = b"\x1f\x8b"
_MAGIC_ZSTD = b"\x28\xb5\x2f\xfd"
_MAGIC_XZ = b"\xfd7zXZ\x00"
_MAGIC_BZ2 = b"BZh"


def _zstd_reader(raw: IO[bytes]) -> Stream:
    """A zstd decompressing reader over `raw` (which the caller closes)."""
    try:
        import zstandard  # optional: only zstd layers need it
    except ImportError:
        pass
    else:
        dctx = zstandard.ZstdDecompressor()
        try:
            reader = dctx.stream_reader(raw, closefd=False, read_across_frames=True)
        except TypeError:  # zstandard < 0.16
            reader = dctx.stream_reader(raw, closefd=False)
        return reader
    try:  # Python 3.14+
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        raise LayerError(
            "layer is zstd-compressed but the zstandard module is missing: "
            "pip install zstandard"
        ) from None
    return zstd.ZstdFile(raw)


def _decompressor(head: bytes, raw: Readable) -> Stream | None:
    """Wrap `raw` in the decompressor its magic bytes `head` ask for (None: plain)."""
    # The decompressors only read it, from the start; typeshed asks for a whole file (seek, write...).
    stream: IO[bytes] = raw  # type: ignore[assignment]
    if head.startswith(_MAGIC_GZIP):
        return gzip.GzipFile(fileobj=stream, mode="rb")
    if head.startswith(_MAGIC_ZSTD):
        return _zstd_reader(stream)
    if head.startswith(_MAGIC_XZ):
        return lzma.LZMAFile(stream)
    if head.startswith(_MAGIC_BZ2):
        return bz2.BZ2File(stream)
    return None


class _Closing(io.RawIOBase):
    """A reader that closes a chain of objects (decompressor, file) with itself."""

    def __init__(self, reader: Stream, *owned: Stream) -> None:
        super().__init__()
        self._reader = reader
        self._owned = (reader, *owned)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._reader.read(size)

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._reader.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            for obj in self._owned:
                obj.close()
        super().close()


def open_layer(path: str | os.PathLike[str]) -> BinaryIO:
    """Open a layer blob, transparently decompressing gzip / zstd / plain tar.

    The format is sniffed from the magic bytes rather than trusted from a
    media type, since `docker save` archives and `tar:` files carry none.
    xz and bzip2 (older `docker import` tarballs) are read too.
    """
    raw = open(path, "rb")  # noqa: SIM115 - handed to the caller
    try:
        head = raw.read(6)
        raw.seek(0)
        dec = _decompressor(head, raw)
    except BaseException:
        raw.close()
        raise
    if dec is None:
        return raw
    return io.BufferedReader(_Closing(dec, raw), buffer_size=CHUNK)


def media_type(path: str | os.PathLike[str]) -> str:
    """The OCI layer media type of the blob at `path`, from its magic bytes."""
    with open(path, "rb") as f:
        head = f.read(6)
    if head.startswith(_MAGIC_GZIP):
        return "application/vnd.oci.image.layer.v1.tar+gzip"
    if head.startswith(_MAGIC_ZSTD):
        return "application/vnd.oci.image.layer.v1.tar+zstd"
    if head.startswith(_MAGIC_XZ) or head.startswith(_MAGIC_BZ2):
        raise LayerError(f"{os.fspath(path)}: xz/bzip2 layers can be read but have no OCI media type")
    return "application/vnd.oci.image.layer.v1.tar"


def open_layer_stream(src: Readable) -> Stream:
    """A reader of the uncompressed tar in the stream `src` (sniffed; `src` stays open)."""
    return sniff_stream(src)


class _Prefixed(io.RawIOBase):
    """Put back the bytes read to sniff a non-seekable stream."""

    def __init__(self, head: bytes, raw: Readable) -> None:
        super().__init__()
        self._head = head
        self._raw = raw

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size is None or size < 0:
                data, self._head = self._head + self._raw.read(), b""
                return data
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._raw.read(size)

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:  # the caller owns `raw`
        super().close()


def sniff_stream(src: Readable) -> Stream:
    """Return a reader of the uncompressed tar in `src` (not closing `src`)."""
    head = b""
    while len(head) < 6:
        chunk = src.read(6 - len(head))
        if not chunk:
            break
        head += chunk
    raw = _Prefixed(head, src)
    dec = _decompressor(head, raw)
    return raw if dec is None else dec
