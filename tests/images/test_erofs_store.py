"""Layers kept as EROFS images in the store: pulled, run (mounted once by the store, on the host,
shared by every container), committed on, collected (unmounted); the container sees what it sees
with unpacked layers; the mounts propagate nowhere; hostile and lying layers still store nothing."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import sys
import tarfile

import pytest

from conftest import ROOT, run_cli
from pytest_hermetic.images.store import Store

pytestmark = pytest.mark.skipif(not ROOT, reason="EROFS layer images are for root stores")


def erofs_works(tmp_path, monkeypatch) -> bool:
    monkeypatch.setenv("HERMETIC_LAYER_FORMAT", "auto")
    return Store(str(tmp_path / "probe-store")).layer_format(size=None) == "erofs"


def tar_gz(members: list[tuple[str, bytes | None, bytes]], base: str | None = None) -> bytes:
    """A gzip layer: (name, data or None, type) members, after the tree `base` (a folder) if given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        if base is not None:
            tf.add(base, arcname=".")
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            info.type, info.mtime = kind, 1_600_000_000
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            info.size = len(data or b"")
            tf.addfile(info, io.BytesIO(data) if data else None)
    return gzip.compress(buf.getvalue(), compresslevel=1)


REG, DIR = tarfile.REGTYPE, tarfile.DIRTYPE
# (no sizes for directories: EROFS gives a directory the size of its entries, ext4 a block)
LISTING = ("find /bin/busybox /data /o /gone /keep -exec stat -c '%n %a %u %g %Y %F' {} + 2>&1; "
           "sha256sum /data/big /data/more; echo --; ls -a /o")


@pytest.fixture
def pulled(scripted_registry, busybox_rootfs, tmp_path, monkeypatch):
    """A three-layer image (busybox; big data; whiteouts and an opaque dir) pulled into two stores:
    one keeping layer images, one unpacking."""
    if not erofs_works(tmp_path, monkeypatch):
        pytest.skip("this kernel does not mount EROFS images from a file")
    layers = [tar_gz([], base=busybox_rootfs),
              tar_gz([("data", None, DIR), ("data/big", os.urandom(700_000), REG), ("gone", b"x", REG),
                      ("keep", b"keep\n", REG), ("o", None, DIR), ("o/old", b"old", REG)]),
              tar_gz([(".wh.gone", b"", REG), ("o", None, DIR), ("o/.wh..wh..opq", b"", REG), ("o/new", b"new", REG),
                      ("data", None, DIR), ("data/more", os.urandom(600_000), REG)])]
    manifest = scripted_registry.add_image("e/img:1", layers)
    ref = f"{scripted_registry.host}/e/img:1"
    stores = {}
    for kind in ("erofs", "dir"):
        env = {"HERMETIC_STORE": str(tmp_path / f"store-{kind}"), "HERMETIC_LAYER_FORMAT": kind}
        result = run_cli("pull", "-q", ref, env=env)
        assert result.returncode == 0, result.stderr
        stores[kind] = env
    return ref, manifest, layers, stores


def test_pulled_layers_are_images_that_run_as_unpacked_ones_do(pulled):
    ref, manifest, layers, stores = pulled
    store = Store(stores["erofs"]["HERMETIC_STORE"])
    image = store.local(ref)
    for diff_id in image.layers:  # one checked image per layer, nothing unpacked
        path = store.layer_image(diff_id)
        assert path is not None and not os.path.exists(store.layer_root(diff_id))
        check = subprocess.run(["fsck.erofs", path], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    for desc, blob in zip(manifest["layers"], layers):  # the blobs kept as they came: push/save give the same digests
        with open(store.blob_path(desc["digest"]), "rb") as f:
            assert f.read() == blob
    seen = {kind: run_cli("run", ref, "sh", "-c", LISTING, env=env) for kind, env in stores.items()}
    assert seen["erofs"].returncode == 0, seen["erofs"].stderr
    assert seen["erofs"].stdout == seen["dir"].stdout
    listing, opaque = seen["erofs"].stdout.split("--\n")
    assert "/gone" in listing and "No such file" in listing and "/keep 644 0 0 1600000000 regular file" in listing
    assert opaque.split() == [".", "..", "new"]


def test_commit_on_an_image_of_layer_images(pulled, tmp_path):
    ref, _manifest, _layers, stores = pulled
    env = stores["erofs"]
    result = run_cli("run", "--commit", "next:1", ref, "sh", "-c", "echo more > /o/added; rm /keep", env=env)
    assert result.returncode == 0, result.stderr
    result = run_cli("run", "next:1", "sh", "-c", "cat /o/added; ls /o; test ! -e /keep && echo keep-gone", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["more", "added", "new", "keep-gone"]


def erofs_mounts(below: str) -> list[str]:
    """The EROFS mounts below the folder `below`, as the host's mount table has them."""
    prefix = os.path.realpath(below) + "/"
    with open("/proc/self/mountinfo") as f:
        rows = [line.split() for line in f]
    return [r[4] for r in rows if r[4].startswith(prefix) and r[r.index("-") + 1] == "erofs"]


def test_layer_images_are_mounted_once_for_every_container_and_gc_unmounts_them(pulled):
    ref, _manifest, _layers, stores = pulled
    env = stores["erofs"]
    root = env["HERMETIC_STORE"]
    store = Store(root)
    from pytest_hermetic.paths import system_state_root

    folder = store.layer_mounts()  # below the machine's state folder, on a tmpfs: not in the store
    assert folder.startswith(os.path.realpath(system_state_root()) + "/layers/")
    points = sorted(store.layer_mount_point(d) for d in store.local(ref).layers)
    assert len(os.listdir(os.path.join(root, "layers"))) == 3 and erofs_mounts(folder) == []  # a pull mounts nothing
    for _ in range(2):  # the first container mounts each layer on the host; the second finds them
        result = run_cli("run", ref, "cat", "/keep", env=env)
        assert result.returncode == 0 and result.stdout == "keep\n", result.stderr
        assert sorted(erofs_mounts(folder)) == points
        assert erofs_mounts(root) == []  # nothing mounted in the store itself
    with open(os.path.join(folder, "store")) as f:
        assert f.read() == os.path.realpath(root)  # the note that names the store (gc, unmount_stores_below)
    # On the host a layer is read-only, nodev and nosuid: a setuid file of an
    # image is setuid only in the container's overlay (as Docker's), never at its mount point.
    with open("/proc/self/mountinfo") as f:
        options = {line.split()[4]: set(line.split()[5].split(",")) for line in f}
    assert all({"ro", "nodev", "nosuid"} <= options[path] for path in points), {p: options[p] for p in points}
    assert oct(os.stat(folder).st_mode & 0o777) == "0o700"
    assert run_cli("tag", ref, "other:1", env=env).returncode == 0
    assert run_cli("rmi", ref, env=env).returncode == 0
    assert run_cli("gc", env=env).returncode == 0
    assert sorted(erofs_mounts(folder)) == points  # the layers are kept (other:1), and so are their mounts
    assert run_cli("rmi", "other:1", env=env).returncode == 0
    result = run_cli("gc", env=env)
    assert result.returncode == 0, result.stderr
    assert erofs_mounts(folder) == [] and sorted(os.listdir(folder)) == ["store"]  # mount points removed too
    assert os.listdir(os.path.join(root, "layers")) == [] and os.listdir(os.path.join(root, "blobs", "sha256")) == []
    assert store.unmount_layers() == [] and not os.path.exists(folder)


@pytest.mark.parametrize("gc_of", ["another store", "the removed store"])
def test_a_mount_folder_gone_mounts_again_and_a_removed_stores_mounts_go_at_gc(pulled, gc_of):
    """After a reboot (the tmpfs empty) the first container mounts again; the mounts of a store
    removed without `unmount_layers` are found by their note and detached by any store's gc,
    also a gc of the removed store itself (a script's clean-up: `rm -rf STORE; hermetic gc`)."""
    from pytest_hermetic._fs import rmtree

    ref, _manifest, _layers, stores = pulled
    env = stores["erofs"]
    store = Store(env["HERMETIC_STORE"])
    folder = store.layer_mounts()
    assert run_cli("run", ref, "true", env=env).returncode == 0 and len(erofs_mounts(folder)) == 3
    assert len(store.unmount_layers()) == 3 and not os.path.exists(folder)  # as a reboot leaves it
    result = run_cli("run", ref, "cat", "/keep", env=env)
    assert result.returncode == 0 and result.stdout == "keep\n", result.stderr
    assert len(erofs_mounts(folder)) == 3
    rmtree(env["HERMETIC_STORE"])  # removed whole, mounts and all (the images stay alive in the mounts)
    result = run_cli("gc", env=stores["dir"] if gc_of == "another store" else env)
    assert result.returncode == 0, result.stderr
    assert erofs_mounts(folder) == [] and not os.path.exists(folder)
    assert f"of the removed store {os.path.realpath(env['HERMETIC_STORE'])}" in result.stdout + result.stderr


def test_an_older_versions_mounts_in_the_store_are_detached(pulled):
    """A store whose layers an older version mounted on `layers/<hex>/root` (inside the store):
    new containers use the mount folder, and gc and `unmount_stores_below` detach the old ones."""
    from pytest_hermetic.images.store import unmount_stores_below
    from pytest_hermetic.runtime.rootfs.images import mount_layer_image

    ref, _manifest, _layers, stores = pulled
    env = stores["erofs"]
    root = env["HERMETIC_STORE"]
    store = Store(root)
    layers = store.local(ref).layers
    for step in ("gc", "unmount_stores_below"):
        for diff_id in layers:  # as the older version left them
            os.makedirs(store.layer_root(diff_id), exist_ok=True)
            mount_layer_image(store.layer_image(diff_id), store.layer_root(diff_id))
        assert len(erofs_mounts(root)) == 3
        result = run_cli("run", ref, "cat", "/keep", env=env)
        assert result.returncode == 0 and result.stdout == "keep\n", result.stderr
        if step == "gc":
            assert run_cli("gc", env=env).returncode == 0
            assert erofs_mounts(root) == [] and len(erofs_mounts(store.layer_mounts())) == 3  # the new ones kept
        else:
            detached = unmount_stores_below(os.path.dirname(root))
            assert len(detached) == 6, detached
            assert erofs_mounts(root) == [] and erofs_mounts(store.layer_mounts()) == []


def test_processes_mounting_a_layer_at_once_make_one_mount(pulled):
    """Several processes asking for the same layer at once (sessions, a notebook): one mount, never two stacked."""
    ref, _manifest, _layers, stores = pulled
    root = stores["erofs"]["HERMETIC_STORE"]
    store = Store(root)
    layer = store.local(ref).layers[1]
    script = ("import sys, time\nfrom pytest_hermetic.images.store import Store\n"
              "time.sleep(max(0.0, float(sys.argv[3]) - time.time()))\n"
              "print(Store(sys.argv[1]).layer_lower(sys.argv[2]))\n")
    import time

    at = str(time.time() + 1.5)  # all start their look at the same moment
    procs = [subprocess.Popen([sys.executable, "-c", script, root, layer, at], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": ROOT}) for _ in range(4)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert set(outs) == {store.layer_mount_point(layer)}
    assert erofs_mounts(store.layer_mounts()) == [store.layer_mount_point(layer)]  # one, not stacked
    assert store.unmount_layers() == [store.layer_mount_point(layer)]
    assert erofs_mounts(store.layer_mounts()) == []


PROPAGATION = r"""
import os, subprocess, sys
from pytest_hermetic.container import Container
from pytest_hermetic.images.store import MOUNTS_DIR, Store
from pytest_hermetic.images.transports import import_image
from pytest_hermetic.paths import make_private, system_state_root
from pytest_hermetic.spec import Spec

base, rootfs = sys.argv[1], sys.argv[2]
shared, peer = base + "/shared", base + "/peer"
for path in (shared, peer):
    os.mkdir(path)
# In this throwaway mount namespace: the machine's folder of layer mounts is a shared mount with a
# peer, as systemd's /run is.
mounts = make_private(os.path.join(os.path.realpath(system_state_root()), MOUNTS_DIR))
subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=700", "held", shared], check=True)
subprocess.run(["mount", "--make-shared", shared], check=True)
subprocess.run(["mount", "--bind", shared, peer], check=True)
subprocess.run(["mount", "--bind", shared, mounts], check=True)
store = Store(base + "/store")
import_image(store, f"dir:{rootfs}", "prop:1")
layer = store.local("prop:1").layers[0]
assert store.layer_image(layer) is not None
container = Container(Spec.build("prop:1", ["true"], ephemeral=True), store=store)
try:
    assert container.run().exit_code == 0
finally:
    container.remove()
key = os.path.basename(store.layer_mounts())
hex_ = layer.split(":")[1]


def mounted(path):  # (not os.path.ismount: a bind of a folder on itself keeps its device)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


print("folder mounted", mounted(f"{mounts}/{key}"))
print("layer mounted", mounted(f"{mounts}/{key}/{hex_}"))
print("layer in peer", mounted(f"{peer}/{key}/{hex_}"))
print("unmounted", len(store.unmount_layers()))
print("folder mounted", mounted(f"{mounts}/{key}"))
print("folder left", os.path.exists(f"{mounts}/{key}"))
"""


def test_layer_mounts_propagate_nowhere_from_a_shared_mount(busybox_rootfs, tmp_path, monkeypatch):
    """Where the mount folder sits on a shared mount (systemd's /run), it first becomes a private
    bind of itself: its layer mounts do not appear in the peer.  Tried in a throwaway mount
    namespace (`unshare -m`), so the host's propagation is never touched."""
    if not erofs_works(tmp_path, monkeypatch):
        pytest.skip("this kernel does not mount EROFS images from a file")
    env = {**os.environ, "PYTHONPATH": ROOT, "HERMETIC_LAYER_FORMAT": "erofs", "HERMETIC_STATE": str(tmp_path / "state")}
    ran = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", PROPAGATION,
                          os.path.realpath(tmp_path), busybox_rootfs], capture_output=True, text=True, env=env, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split("\n")[:6] == ["folder mounted True", "layer mounted True", "layer in peer False",
                                          "unmounted 2", "folder mounted False", "folder left False"], ran.stdout


@pytest.mark.parametrize("case", ["traversal", "symlink-then-write", "lie"])
def test_hostile_or_lying_layers_store_nothing(scripted_registry, tmp_path, monkeypatch, case):
    if not erofs_works(tmp_path, monkeypatch):
        pytest.skip("this kernel does not mount EROFS images from a file")
    big = ("big", os.urandom(600_000), REG)  # above the size under which layers stay unpacked
    members = {"traversal": [big, ("../../../evil", b"x", REG)],
               "symlink-then-write": [big, ("a", None, tarfile.DIRTYPE)]}.get(case, [big])
    blob = tar_gz(members)
    if case == "symlink-then-write":  # `a` a symlink out, then a write through it
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            link = tarfile.TarInfo("a")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc"
            tf.addfile(link)
            data = os.urandom(600_000)
            info = tarfile.TarInfo("a/evil")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        blob = gzip.compress(buf.getvalue(), compresslevel=1)
    manifest = scripted_registry.add_image(f"h/{case}:1", [blob])
    if case == "lie":
        scripted_registry.lie[manifest["layers"][0]["digest"]] = tar_gz([("big", os.urandom(600_000), REG)])
    root = str(tmp_path / "store")
    result = run_cli("pull", f"{scripted_registry.host}/h/{case}:1",
                     env={"HERMETIC_STORE": root, "HERMETIC_LAYER_FORMAT": "erofs"})
    assert result.returncode == 125 and result.stderr.count("\n") == 1, result.stderr
    assert ("digest mismatch" if case == "lie" else "refusing layer member") in result.stderr
    assert "Traceback" not in result.stderr
    for sub in ("blobs/sha256", "layers", "tmp"):
        path = os.path.join(root, sub)
        assert not os.path.isdir(path) or os.listdir(path) == [], (sub, os.listdir(path))
    assert not os.path.exists("/etc/evil")


def test_layer_format_setting(tmp_path, monkeypatch):
    store = Store(str(tmp_path / "store"))
    works = erofs_works(tmp_path, monkeypatch)
    monkeypatch.delenv("HERMETIC_LAYER_FORMAT", raising=False)
    assert store.layer_format(size=10 << 20) == ("erofs" if works else "dir")  # the default as root: auto
    assert store.layer_format(size=1000) == "dir"  # small layers stay unpacked
    monkeypatch.setenv("HERMETIC_LAYER_FORMAT", "dir")
    assert store.layer_format(size=10 << 20) == "dir"
    monkeypatch.setenv("HERMETIC_LAYER_FORMAT", "auto")
    assert store.layer_format(size=1000) == "dir"  # small layers stay unpacked
    monkeypatch.setenv("HERMETIC_LAYER_FORMAT", "sideways")
    from pytest_hermetic.errors import StoreError

    with pytest.raises(StoreError, match="HERMETIC_LAYER_FORMAT='sideways' is not one of dir, auto, erofs"):
        store.layer_format(size=None)
    digest = hashlib.sha256(b"").hexdigest()
    assert store.layer_image(f"sha256:{digest}") is None


def test_bindings_read_layer_images_as_unpacked_layers(pulled, tmp_path):
    """What a forked Python needs bound in (`bindings.volumes_for`) is the same whether the
    store keeps the image's layers as images (read by `erofs_reader`) or unpacked."""
    from pytest_hermetic.bindings import volumes_for
    from pytest_hermetic.spec import Spec

    ref, _manifest, _layers, stores = pulled
    found = {}
    for kind, env in stores.items():
        store = Store(env["HERMETIC_STORE"])
        image = store.local(ref)
        found[kind] = volumes_for(Spec.build(ref, ["true"]), [str(tmp_path), "/etc"], store=store, image=image)
    assert found["erofs"] == found["dir"]
    targets = [v.target for v in found["erofs"]]
    assert os.path.realpath(tmp_path) in targets and "/etc" not in targets  # the image has /etc: not bound
