"""The pipelined extraction (reader thread + making thread) against the serial one."""

from __future__ import annotations

import io
import os
import tarfile
import threading

import pytest

from pytest_hermetic.errors import LayerError
from pytest_hermetic.images.layers import extract_layer


def listing(root: str) -> dict[str, tuple]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            data = os.readlink(path) if os.path.islink(path) else (open(path, "rb").read() if os.path.isfile(path) else None)
            found[os.path.relpath(path, root)] = (st.st_mode, st.st_mtime_ns, data)
    return found


def test_same_tree_as_serial(busybox_rootfs, tmp_path):
    from pytest_hermetic.images.layers import write_layer_from_dir

    import shutil

    rootfs = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    (rootfs / "big").write_bytes(os.urandom(3 << 20))  # a member bigger than what travels in one piece
    buf = io.BytesIO()
    write_layer_from_dir(str(rootfs), buf)
    data = buf.getvalue()
    for pipelined in (True, False):
        dest = tmp_path / f"out-{pipelined}"
        dest.mkdir()
        extract_layer(io.BytesIO(data), dest, pipelined=pipelined)
    assert listing(str(tmp_path / "out-True")) == listing(str(tmp_path / "out-False"))


class FailingAfter(io.RawIOBase):
    """A stream that raises `exc` after `limit` bytes, as a network or a full disk does."""

    def __init__(self, data: bytes, limit: int, exc: BaseException) -> None:
        self._data, self._limit, self._exc, self._pos = data, limit, exc, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self._pos >= self._limit:
            raise self._exc
        n = len(self._data) if n is None or n < 0 else n
        chunk = self._data[self._pos:min(self._pos + n, self._limit)]
        self._pos += len(chunk)
        return chunk


@pytest.mark.parametrize("exc", [LayerError("cannot read layer: the network went away"), OSError(28, "No space left on device")])
def test_reader_failing_inside_a_big_member_does_not_hang(exc, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("big")
        info.size = 4 << 20
        tf.addfile(info, io.BytesIO(os.urandom(info.size)))
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            extract_layer(FailingAfter(buf.getvalue(), 2 << 20, exc), tmp_path, pipelined=True)  # type: ignore[arg-type]
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "extraction hung"
    assert isinstance(outcome[0], LayerError) and str(exc.args[-1]) in str(outcome[0])
