"""The content-addressed store: shared safely between processes, gc."""

import os
import subprocess
import sys

import pytest

from pytest_hermetic.errors import ImageNotFound, StoreError
from pytest_hermetic.images.gc import collect
from pytest_hermetic.images.resolve import resolve_or_pull
from pytest_hermetic.images.store import Store
from pytest_hermetic.images.transports import import_image


def test_concurrent_imports_share_one_layer(tmp_path, busybox_rootfs):
    from conftest import ROOT

    root = str(tmp_path / "store")
    code = ("import sys; from pytest_hermetic.images.store import Store; "
            "from pytest_hermetic.images.transports import import_image; "
            "print(import_image(Store(sys.argv[1]), 'dir:' + sys.argv[2], sys.argv[3]).layers)")
    procs = [subprocess.Popen([sys.executable, "-c", code, root, busybox_rootfs, f"same:{i}"], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": ROOT}) for i in range(4)]
    results = [p.communicate()[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert all(r == results[0] for r in results)
    store = Store(root)
    assert len(os.listdir(os.path.join(root, "layers"))) == 1
    assert {i.familiar for i in store.images()} == {f"same:{i}" for i in range(4)}
    assert os.listdir(os.path.join(root, "tmp")) == []  # no staging left behind


def test_gc_keeps_referenced_and_removes_the_rest(tmp_path, busybox_rootfs):
    store = Store(str(tmp_path / "store"))
    import_image(store, f"dir:{busybox_rootfs}", "keep:1")
    other = tmp_path / "other"
    other.mkdir()
    (other / "file").write_text("x")
    import_image(store, f"dir:{other}", "drop:1")
    store.remove("drop:1")
    removed = collect(store)
    assert any(line.startswith("layer ") for line in removed)
    assert [i.familiar for i in store.images()] == ["keep:1"]
    assert len(os.listdir(os.path.join(store.root, "layers"))) == 1
    assert collect(store) == []


def test_missing_and_corrupt(tmp_path):
    store = Store(str(tmp_path / "store"))
    with pytest.raises(ImageNotFound, match=r"image .nothing:latest. is not in the local store .*`hermetic import`"):
        resolve_or_pull(store, "nothing")
    with pytest.raises(ImageNotFound, match="not in the local store .*; pull it with `hermetic pull nothing`"):
        store.resolve("nothing")  # the store alone never pulls
    os.makedirs(store.root)
    with open(os.path.join(store.root, "refs.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(StoreError, match="refs.json is corrupt"):
        store.images()
