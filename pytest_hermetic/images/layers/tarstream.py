"""Reading a tar stream that may be hostile: members in order, a real end-of-archive block insisted on.

Every read error becomes one `LayerError` ("corrupt layer: ..."), never an
exception of `tarfile`, `zlib` or `lzma` escaping to the caller.
"""

from __future__ import annotations

import tarfile
from collections import deque

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing (and dataclasses) cost a pull ~20 ms of imports
    from ..limits import Budget
    from .decompress import Readable

from ...errors import HermeticError, LayerError
from .format import CHUNK


def corrupt(detail: str) -> LayerError:
    return LayerError(f"corrupt layer: {detail}")


class TarReader:
    """Counts and remembers the tail of the uncompressed tar bytes.

    `tarfile` takes a header it cannot parse, or a file that simply stops, as
    the end of the archive. Keeping the last bytes lets `check_end` insist on
    a real end-of-archive block, so a truncated layer is an error and not a
    silently shorter root filesystem. Decompression errors become LayerError.
    """

    _KEEP = 1 << 18

    def __init__(self, raw: Readable) -> None:
        self._raw = raw
        self.pos = 0
        self._chunks: deque[tuple[int, bytes]] = deque()
        self._kept = 0

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._raw.read(size)
        except HermeticError:  # LayerError, and a download's own errors (digest, registry)
            raise
        except OSError as e:
            if e.errno is not None:
                raise LayerError(f"cannot read layer: {e}") from e
            raise corrupt(f"{e}") from e  # BadGzipFile, bz2's "Invalid data stream"
        except Exception as e:  # EOFError, zlib.error, LZMAError, ZstdError...
            raise corrupt(f"{type(e).__name__}: {e}") from e
        if data:
            self._chunks.append((self.pos, data))
            self.pos += len(data)
            self._kept += len(data)
            while self._kept - len(self._chunks[0][1]) >= self._KEEP:
                self._kept -= len(self._chunks.popleft()[1])
        return data

    def check_end(self, offset: int, *, allow_bare_end: bool = False) -> None:
        """Require the block at `offset` (where tarfile stopped) to be zeros.

        With `allow_bare_end`, the data may also simply stop at `offset`, a
        member boundary (Go's archive/tar and umoci write such tars; Docker
        accepts them): for content whose digest is checked anyway.
        """
        while self.pos < offset + tarfile.BLOCKSIZE:
            if not self.read(tarfile.RECORDSIZE):
                if allow_bare_end and self.pos == offset:
                    return
                raise corrupt(
                    f"truncated at byte {self.pos} (no end-of-archive block)"
                )
        first = self._chunks[0][0] if self._chunks else self.pos
        if offset < first:  # tarfile never reads that far ahead; be safe anyway
            raise corrupt(f"cannot check the end-of-archive block at byte {offset}")
        tail = b"".join(data for _, data in self._chunks)
        block = tail[offset - first : offset - first + tarfile.BLOCKSIZE]
        if block.count(0) != tarfile.BLOCKSIZE:
            raise corrupt(f"invalid tar header at byte {offset}")
        while self.read(CHUNK):  # drain: lets gzip check its CRC and length
            pass


# --------------------------------------------------------------------------
# extraction


def tar_members(tf: tarfile.TarFile, reader: TarReader, allow_bare_end: bool, *, read_data: bool,
             budget: Budget | None = None):
    """(member, its data or None) in tar order, then the end-of-archive check."""
    bare_end = False
    while True:
        try:
            m = tf.next()
        except tarfile.TarError as e:
            # umoci (Go's archive/tar never closed) can end a layer inside the
            # last member's zero padding: fine when a digest vouches for it
            if allow_bare_end and str(e) == "unexpected end of data" and tf.offset - reader.pos < tarfile.BLOCKSIZE:
                bare_end = True
                break
            raise corrupt(str(e)) from e
        except (ValueError, UnicodeError, OverflowError, EOFError) as e:
            raise corrupt(f"bad tar header: {e}") from e
        if m is None:
            break
        if budget is not None:  # m.size is the apparent size, also of a sparse member
            budget.charge(tarfile.BLOCKSIZE + max(m.size, 0), m.name)
        # stream mode keeps them all otherwise (typeshed leaves the real attribute out)
        tf.members.clear()  # type: ignore[attr-defined]
        yield m, (tf.extractfile(m) if read_data and m.isreg() else None)
    if not bare_end:
        reader.check_end(tf.offset, allow_bare_end=allow_bare_end)
