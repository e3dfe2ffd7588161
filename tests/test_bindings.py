"""What a forked Python needs bound into an image (pytest_hermetic/bindings.py),
worked out once per set of mapped libraries and per image's layers, and still
following both: a library mapped later, another image."""

import ctypes
import os
import shutil
import sys

import pytest

from pytest_hermetic import bindings
from pytest_hermetic.errors import StoreError
from pytest_hermetic.images.gc import collect
from pytest_hermetic.images.store import Store
from pytest_hermetic.images.transports import import_image
from pytest_hermetic.spec import Spec


def _a_loaded_library() -> str:
    """The path of a small shared library this process has mapped (libz, which
    zlib loads, else any other), to copy somewhere new."""
    with open("/proc/self/maps") as f:
        names = sorted({line.split(None, 5)[-1].strip() for line in f if ".so" in line and " /" in line})
    for name in names:
        if "libz.so" in name:
            return name
    return next(name for name in names if "/libc.so" not in name and "ld-linux" not in name)


def _with_the_code_folder(tmp_path, busybox_rootfs, name: str):
    """(the test's code folder, a busybox root that holds a folder at its path)."""
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    rootfs = tmp_path / name
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    os.makedirs(rootfs / str(code).lstrip("/"))
    return code, rootfs


def test_a_library_mapped_later_is_bound_too(tmp_path):
    before = bindings._library_paths()
    assert bindings._library_paths() is before  # (the same set: worked out once)
    folder = tmp_path / "late-libs"
    folder.mkdir()
    copy = folder / ("late-" + os.path.basename(_a_loaded_library()))
    shutil.copy(_a_loaded_library(), copy)
    assert str(folder) not in before
    ctypes.CDLL(str(copy))  # (as an extension module a fixture imports would)
    after = bindings._library_paths()
    assert str(folder) in after and after > before


def test_each_image_is_asked_about_its_own_layers(tmp_path, busybox_rootfs):
    """Two images of one store, one holding a folder at the host path of the
    test's code and one not: only the second gets it bound (the answers are
    kept per image's layers, never one image's given for another)."""
    code, with_it = _with_the_code_folder(tmp_path, busybox_rootfs, "with-it")
    store = Store()
    one = import_image(store, f"dir:{with_it}", "bindings-with:test")
    other = import_image(store, f"dir:{busybox_rootfs}", "bindings-without:test")
    try:
        for _ in range(2):  # (the second time from what was kept)
            bound_one = {v.target for v in bindings.volumes_for(Spec.build("bindings-with:test", ["true"]),
                                                                [str(code)], store=store, image=one)}
            bound_other = {v.target for v in bindings.volumes_for(Spec.build("bindings-without:test", ["true"]),
                                                                  [str(code)], store=store, image=other)}
            assert str(code) not in bound_one and str(code) in bound_other, (bound_one, bound_other)
            python = os.path.realpath(sys.executable)
            assert any(python == t or python.startswith(t + "/") for t in bound_other), bound_other
        # Nothing of the store's kept open here: a pytest process's open files
        # reach each later test's container (sealed: a copy once a layer is gone).
        held = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                held.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                pass  # (the listing's own)
        assert not [path for path in held if path.startswith(os.path.realpath(store.root))], held
    finally:
        store.remove("bindings-with:test")
        store.remove("bindings-without:test")


def test_a_layer_gone_midway_is_an_error_and_no_answer(tmp_path, busybox_rootfs):
    """`rmi` and `gc` between the image's lookup and its use: the look says
    which layer left and how to mend it, and keeps no "no" for it; the same
    image pulled again is answered from its layers (a cached "no" would bind
    the host's folder over the image's own)."""
    code, rootfs = _with_the_code_folder(tmp_path, busybox_rootfs, "rootfs")
    store = Store()
    spec = Spec.build("bindings-gone:test", ["true"])
    image = import_image(store, f"dir:{rootfs}", "bindings-gone:test")
    try:
        store.remove("bindings-gone:test")
        collect(store)
        with pytest.raises(StoreError, match=r"left the store .* fix: pull or import the image again"):
            bindings.volumes_for(spec, [str(code)], store=store, image=image)
        again = import_image(store, f"dir:{rootfs}", "bindings-gone:test")
        assert again.layers == image.layers
        bound = {v.target for v in bindings.volumes_for(spec, [str(code)], store=store, image=again)}
        assert str(code) not in bound, bound
    finally:
        store.remove("bindings-gone:test")
