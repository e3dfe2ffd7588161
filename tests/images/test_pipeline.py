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


# -- Prefetched: a layer's bytes read ahead in a thread of their own (ingest, big layers) ----------


def test_prefetched_reads_what_the_stream_holds_at_any_read_size():
    from pytest_hermetic.images.layers.pipelined import Prefetched

    data = os.urandom((3 << 20) + 12345)
    for size in (1, 512, 10_000, 1 << 20, 5 << 20, -1):
        reader = Prefetched(io.BytesIO(data), depth=2)
        got = []
        while True:
            piece = reader.read(size if size != 1 else 7)  # (1 byte at a time is too slow for 3 MB: 7)
            if not piece:
                break
            got.append(piece)
            if size == -1:
                assert reader.read(-1) == b""
                break
        reader.close()
        assert b"".join(got) == data, size


@pytest.mark.parametrize("exc", [LayerError("cannot read layer: the network went away"), OSError(28, "No space left on device")])
def test_prefetched_raises_the_streams_error_where_it_is_reached(exc):
    from pytest_hermetic.images.layers.pipelined import Prefetched

    data = os.urandom(3 << 20)
    reader = Prefetched(FailingAfter(data, 2 << 20, exc), depth=2)  # type: ignore[arg-type]
    assert reader.read(2 << 20) == data[:2 << 20]  # all that came before the error
    with pytest.raises(type(exc)) as raised:
        reader.read(1)
    assert raised.value is exc
    reader.close()


def test_prefetched_close_returns_while_the_thread_waits_on_a_full_queue():
    """After an error the caller drains the stream itself (`ingest_layer`): `close` must stop the
    reading thread, also one blocked on a full queue, and leave the rest of the stream unread."""
    import time

    from pytest_hermetic.images.layers.pipelined import Prefetched

    stream = io.BytesIO(os.urandom(20 << 20))
    reader = Prefetched(stream, depth=2)
    assert len(reader.read(100)) == 100
    time.sleep(0.3)  # the thread fills its queue and waits
    started = time.monotonic()
    reader.close()
    assert time.monotonic() - started < 2
    assert stream.tell() < 20 << 20  # it stopped: what is left is the caller's to read


@pytest.mark.parametrize("fmt", ["dir", "auto"])
@pytest.mark.parametrize("case", ["good", "lie", "corrupt"])
def test_a_big_layers_pull_through_the_prefetching_thread(scripted_registry, tmp_path, fmt, case):
    """A layer over ingest.PIPELINE_ABOVE goes through `Prefetched`: stored as a small one is, and a
    lying registry or a broken gzip stream in the middle still stores nothing."""
    import gzip

    from conftest import run_cli
    from pytest_hermetic.images.ingest import PIPELINE_ABOVE

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i in range(3):
            info = tarfile.TarInfo(f"f{i}")
            info.size = 3 << 20
            tf.addfile(info, io.BytesIO(os.urandom(info.size)))
    blob = gzip.compress(buf.getvalue(), compresslevel=1)
    assert len(blob) > PIPELINE_ABOVE
    manifest = scripted_registry.add_image(f"big/{case}-{fmt}:1", [blob])
    digest = manifest["layers"][0]["digest"]
    if case == "lie":
        scripted_registry.lie[digest] = gzip.compress(os.urandom(len(blob)), compresslevel=1)
    elif case == "corrupt":
        scripted_registry.lie[digest] = blob[:len(blob) // 2] + bytes(1000) + blob[len(blob) // 2 + 1000:]
    root = str(tmp_path / "store")
    env = {"HERMETIC_STORE": root, "HERMETIC_LAYER_FORMAT": fmt}
    result = run_cli("pull", "-q", f"{scripted_registry.host}/big/{case}-{fmt}:1", env=env)
    if case == "good":
        import hashlib

        from hermetic_testsupport.layers import layer_tree
        from pytest_hermetic.images.store import Store

        assert result.returncode == 0, result.stderr
        store = Store(root)
        layer = store.local(f"{scripted_registry.host}/big/{case}-{fmt}:1").layers[0]
        assert layer == "sha256:" + hashlib.sha256(buf.getvalue()).hexdigest()
        assert (store.layer_image(layer) is not None) == (fmt == "auto" and os.geteuid() == 0 and
                                                          store.layer_format(size=len(blob)) == "erofs")
        tree = layer_tree(store, layer)
        with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
            for i in range(3):
                assert open(os.path.join(tree, f"f{i}"), "rb").read() == tf.extractfile(f"f{i}").read()
        return
    assert result.returncode == 125 and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for sub in ("blobs/sha256", "layers", "tmp"):
        path = os.path.join(root, sub)
        assert not os.path.isdir(path) or os.listdir(path) == [], (sub, os.listdir(path))
