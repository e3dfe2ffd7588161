"""Extraction in two threads: one reads, decompresses and parses the tar, the other makes the files.

The system calls that make files (the bulk of the time on most disks)
release the GIL, so the two overlap. Members travel through a bounded queue;
a big file's data in bounded chunks, so memory stays small.
"""

from __future__ import annotations

import io
import tarfile

# `queue` and `threading` are imported where used: the runtime imports this package in every
# container start (committed layers of `host`), and threading's import and fork hooks cost each one.

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing (and dataclasses) cost a pull ~20 ms of imports
    from typing import IO, Callable, Iterable

from .format import CHUNK
from .tarstream import corrupt

_SMALL = 1 << 20  # files up to this size travel between the threads in one piece
_QUEUE = 16  # batches in flight: at most _QUEUE * 2 * _SMALL bytes buffered
_BATCH = 64  # members a batch holds at most
_END = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Chunks:
    """A big file's data, handed over piece by piece (bounded, so memory stays small)."""

    def __init__(self, producer_done: object) -> None:
        import queue

        self.q: queue.Queue = queue.Queue(maxsize=8)
        self._producer_done = producer_done
        self._buf = b""
        self._done = False

    def read(self, n: int = -1) -> bytes:
        import queue

        while not self._buf and not self._done:
            try:
                item = self.q.get(timeout=0.2)
            except queue.Empty:
                if self._producer_done.is_set() and self.q.empty():  # type: ignore[attr-defined]
                    raise corrupt("the reading thread stopped in the middle of a member") from None
                continue
            if item is None:
                self._done = True
            elif isinstance(item, _Failed):
                raise item.exc
            else:
                self._buf = item
        if n is None or n < 0:
            n = len(self._buf)
        data, self._buf = self._buf[:n], self._buf[n:]
        return data


def extract_pipelined(items: Iterable[tuple[tarfile.TarInfo, IO[bytes] | None]],
                      make: Callable[[tarfile.TarInfo, object], None]) -> None:
    """Iterate `items` (member, its data reader or None) in a second thread; `make` each here, in order."""
    import queue
    import threading

    members: queue.Queue = queue.Queue(maxsize=_QUEUE)
    stop = threading.Event()
    done = threading.Event()

    def put(q: queue.Queue, item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        batch: list[tuple[tarfile.TarInfo, object]] = []  # small members go over in batches:
        held = 0  # one hand-off (two futex calls and a thread switch) per _BATCH members, not per member
        try:
            for m, data in items:
                if data is None or m.size <= _SMALL:
                    try:
                        batch.append((m, None if data is None else io.BytesIO(data.read())))
                    except (tarfile.TarError, OSError, ValueError) as e:
                        bad = corrupt(f"member {m.name!r}: {e}")
                        bad.__cause__ = e  # before it crosses threads: `disk_full` looks for ENOSPC there
                        raise bad from e
                    held += max(m.size, 0)
                    if len(batch) >= _BATCH or held >= _SMALL:
                        if not put(members, batch):
                            return
                        batch, held = [], 0
                    continue
                if batch:
                    if not put(members, batch):
                        return
                    batch, held = [], 0
                chunks = None
                try:
                    chunks = _Chunks(done)
                    if not put(members, [(m, chunks)]):
                        return
                    while True:
                        piece = data.read(CHUNK)
                        if not put(chunks.q, piece or None) or not piece:
                            break
                except BaseException as e:
                    error = corrupt(f"member {m.name!r}: {e}") if isinstance(e, (tarfile.TarError, OSError, ValueError)) else e
                    if error is not e:
                        error.__cause__ = e  # before it crosses threads: `disk_full` looks for ENOSPC there
                    if chunks is not None:  # the making thread waits on this member's data
                        put(chunks.q, _Failed(error))
                    if error is e:
                        raise
                    raise error from e
            if batch and not put(members, batch):
                return
            put(members, _END)
        except BaseException as e:  # handed to the making thread, which raises it
            if batch:  # what was read before the error is made first, as in one thread
                put(members, batch)
            put(members, _Failed(e))
        finally:
            done.set()

    thread = threading.Thread(target=produce, name="hermetic-untar", daemon=True)
    thread.start()
    try:
        while True:
            item = members.get()
            if item is _END:
                break
            if isinstance(item, _Failed):
                raise item.exc
            for m, data in item:
                make(m, data)
    finally:
        stop.set()
        thread.join()  # the reader is the caller's again (it drains and verifies it on errors)


# --------------------------------------------------------------------------


class Prefetched:
    """`stream` read ahead in a thread of its own, CHUNK by CHUNK, at most `depth` chunks ahead.

    What a layer's bytes pass through before the tar parser (the socket, the blob's hash and its
    copy in the store, zlib, the diff_id's hash) releases the GIL, so in a thread of its own it
    overlaps with the parsing and the file making.  An error of `stream` is raised by the `read`
    that reaches it, as without the thread.  `close` stops the thread and waits for it: `stream`
    is the caller's again (to drain and verify it after an error)."""

    def __init__(self, stream: IO[bytes], depth: int = 8) -> None:
        import queue
        import threading

        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._thread = threading.Thread(target=self._fetch, args=(stream,), name="hermetic-fetch", daemon=True)
        self._thread.start()

    def _fetch(self, stream: IO[bytes]) -> None:
        try:
            while not self._stop.is_set():
                piece = stream.read(CHUNK)
                self._put(piece)
                if not piece:
                    return
        except BaseException as e:  # raised by the reader's next read
            self._put(_Failed(e))

    def _put(self, item: object) -> None:
        import queue

        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, n: int = -1) -> bytes:
        want = (1 << 62) if n is None or n < 0 else n
        while len(self._buf) - self._pos < want and not self._eof:
            item = self._q.get()
            if isinstance(item, _Failed):
                self._eof = True
                raise item.exc
            if not item:
                self._eof = True
                break
            self._buf = self._buf[self._pos:] + item if self._pos < len(self._buf) else item
            self._pos = 0
        data = self._buf[self._pos:self._pos + want]
        self._pos += len(data)
        return data

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
