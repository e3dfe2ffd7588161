"""The messages between a hermetic test's child and the pytest process.

Two pipes: the child writes `(kind, payload)` messages (reports, warnings,
coverage, calls of the `containers` fixture, "done" last); the parent
writes the answers to the calls.  Each message is a pickle framed by its
length, so a message cut off by the child's death is recognised and left
out.

What comes from the child is read as hostile (`from_child`): any process
of the container that reaches the pipe (the test, or a program of the image
it runs) writes what it likes there, and a plain `pickle.loads` calls
whatever callable the bytes name (a `__reduce__` naming `os.system` ran in
the pytest process, on the host, when this was tried).  So only plain data
is rebuilt, and by name only the few classes the messages carry: warning
categories and enums of modules pytest has imported already, and a handful
of value types.
"""

from __future__ import annotations

import enum
import io
import os
import pickle
import struct
import sys
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


# Value types whose rebuilding runs no code of the message's choosing.
_VALUES = {("builtins", "complex"), ("builtins", "bytearray"), ("builtins", "set"), ("builtins", "frozenset"),
           ("builtins", "slice"), ("builtins", "range"), ("collections", "OrderedDict"),
           ("datetime", "datetime"), ("datetime", "date"), ("datetime", "time"), ("datetime", "timedelta"),
           ("datetime", "timezone"), ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"),
           ("pathlib._local", "PosixPath"), ("pathlib._local", "PurePosixPath"),
           ("pytest_hermetic.build.reference", "_make")}  # (a `containers.run` image to build: plain fields)


class RefusedMessage(pickle.UnpicklingError):
    """A message from the child that names something other than plain data."""


class _PlainData(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _VALUES:
            return super().find_class(module, name)
        found: Any = sys.modules.get(module)  # never imported on the message's word
        for part in name.split(".") if found is not None else ():
            found = getattr(found, part, None)
        if isinstance(found, type) and issubclass(found, (Warning, enum.Enum)):
            return found
        raise RefusedMessage(f"{module}.{name} is no plain data")

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedMessage("a persistent id is no plain data")


def from_child(body: bytes) -> Any:
    """A message of the child's, rebuilt as plain data only (see the module's
    docstring); RefusedMessage (an UnpicklingError) if it names anything else."""
    return _PlainData(io.BytesIO(body)).load()


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
            # Names a global (STACK_GLOBAL, or that byte in some text): what
            # the parent would refuse (a `record_property` value of a class
            # of the test's, an attribute a plugin put on a report) goes as
            # its repr, as unpicklable data does.
            if b"\x93" in data:
                from_child(data)
        except Exception:  # noqa: BLE001 - unpicklable or not plain data: those parts as their reprs
            data = _dumps((kind, _reprs(payload)))
        write_frame(self.fd, data)


def _reprs(value: Any) -> Any:
    """`value` with each part that cannot go as it is (unpicklable, or not
    plain data for the parent) replaced by its repr."""
    if isinstance(value, dict):
        return {k: _reprs(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_reprs(v) for v in value)
    if isinstance(value, (str, bytes, int, float, bool, type(None))):
        return value
    try:
        from_child(_dumps(value))
        return value
    except Exception:  # noqa: BLE001
        return repr(value)


def picklable(value: Any) -> bool:
    try:
        pickle.dumps(value)
        return True
    except Exception:  # noqa: BLE001
        return False
