"""The messages between a hermetic test's child and the pytest process.

Two pipes: the child writes `(kind, payload)` messages (reports, warnings,
coverage, calls of the `containers` fixture, "done" last); the parent
writes the answers to the calls.  Each message is a pickle framed by its
length, so a message cut off by the child's death is recognised and left
out.
"""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any

HEADER = struct.Struct("!I")

# Taken at import, before any test runs: a test may replace `os.write`,
# `pickle.dumps` and the like (monkeypatch, to simulate a full disk) and
# still gets its report home, since the child sends it while the test's
# monkeypatching is still in place.
_write = os.write
_read = os.read
_dumps = pickle.dumps
_pack = HEADER.pack
_unpack = HEADER.unpack
CALL_MARK = b"call"  # cheap pre-checks before unpickling a message in the parent
RELAY_MARK = b"relay"


def frame(body: bytes) -> bytes:
    """A message on the pipes between parent and child: length, then body."""
    return _pack(len(body)) + body


def write_frame(fd: int, body: bytes) -> None:
    view = memoryview(frame(body))
    while view:
        view = view[_write(fd, view):]


def read_exactly(fd: int, size: int) -> bytes:
    """`size` bytes from `fd`, or fewer if it reaches EOF first."""
    data = b""
    while len(data) < size:
        chunk = _read(fd, size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def read_frame(fd: int) -> bytes:
    """The next message's body from `fd`; empty if the writer is gone."""
    header = read_exactly(fd, HEADER.size)
    return read_exactly(fd, _unpack(header)[0]) if len(header) == HEADER.size else b""


def frames(data: bytes) -> tuple[list[bytes], int]:
    """The whole messages in `data`, and where the incomplete rest begins."""
    bodies, offset = [], 0
    while offset + HEADER.size <= len(data):
        (size,) = HEADER.unpack_from(data, offset)
        end = offset + HEADER.size + size
        if end > len(data):
            break
        bodies.append(data[offset + HEADER.size:end])
        offset = end
    return bodies, offset


DONE = frame(pickle.dumps(("done", None)))


def is_complete(data: bytes) -> bool:
    """Whether `data` is whole messages ending with the done message."""
    return frames(data)[1] == len(data) and data.endswith(DONE)


class Channel:
    """The child's sending end."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, kind: str, payload: Any) -> None:
        try:
            data = _dumps((kind, payload))
        except Exception:  # noqa: BLE001 - unpicklable user data: send its repr instead
            data = _dumps((kind, _reprs(payload)))
        write_frame(self.fd, data)


def _reprs(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reprs(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_reprs(v) for v in value]
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    return repr(value)


def picklable(value: Any) -> bool:
    try:
        pickle.dumps(value)
        return True
    except Exception:  # noqa: BLE001
        return False
