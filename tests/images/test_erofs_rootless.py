"""A root store's layer mounts change nothing for other users' rootless containers.

A mount on the host is copied, locked, into every user namespace made later, and overlayfs
refuses a lower folder with a locked mount below it.  When the store mounted its layer images in
its own folder, a rootless `host` root showed /var (holding /var/lib/hermetic) read-only and the
rootless plugin's copy-on-write /tmp fell back to one entry at a time.  The mounts now live
below the machine's state folder on a tmpfs (/run/hermetic or /dev/shm/hermetic), which a
rootless container never overlays: these tests mount layers of root stores under /var/lib and
/tmp and look at what a rootless container then gets.
"""

from __future__ import annotations

import os
import uuid

import pytest

from conftest import inner_session_as, run_cli
from pytest_hermetic.container import Container
from pytest_hermetic.images.store import Store
from pytest_hermetic.images.transports import import_image
from pytest_hermetic.runtime.rootfs.images import mounts_below
from pytest_hermetic.spec import Spec


def _foreign_mounts(top: str, ours: list[str]) -> list[str]:
    """Mounts below `top` that are not below one of `ours` (another program's, on a shared machine)."""
    return [p for p in mounts_below(top) if not any(p == o or p.startswith(o + "/") for o in ours)]


@pytest.fixture
def mounted_root_stores(busybox_rootfs, tmp_path, monkeypatch):
    """Two root stores, one under /var/lib and one under /tmp, each with its busybox layer kept as
    an EROFS image and mounted by a container's start."""
    monkeypatch.setenv("HERMETIC_LAYER_FORMAT", "erofs")
    probe = Store(str(tmp_path / "probe"))
    monkeypatch.setenv("HERMETIC_LAYER_FORMAT", "auto")
    if probe.layer_format(size=None) != "erofs":
        pytest.skip("this kernel does not mount EROFS images from a file")
    monkeypatch.setenv("HERMETIC_LAYER_FORMAT", "erofs")
    var_store = f"/var/lib/hermetic-erofs-test-{uuid.uuid4().hex[:8]}"
    stores = [Store(var_store), Store(str(tmp_path / "store"))]
    try:
        for store in stores:
            import_image(store, f"dir:{busybox_rootfs}", "bb:1")
            container = Container(Spec.build("bb:1", ["true"], ephemeral=True), store=store)
            try:
                assert container.run().exit_code == 0
            finally:
                container.remove()
            assert mounts_below(store.layer_mounts()), "the container's start mounted no layer"
        yield stores
    finally:
        from pytest_hermetic._fs import rmtree

        for store in stores:
            store.unmount_layers()
        rmtree(var_store)


def test_a_rootless_host_root_keeps_var_copy_on_write(test_user, mounted_root_stores):
    ours = [store.layer_mounts() for store in mounted_root_stores]
    if _foreign_mounts("/var", ours):
        pytest.skip(f"another program has mounts below /var: {_foreign_mounts('/var', ours)[:3]}")
    ran = run_cli("run", "host", "sh", "-c",
                  "awk '$5 == \"/var\" { for (i = 7; $i != \"-\"; i++); print $(i + 1) }' /proc/self/mountinfo; "
                  "ls -d /var/lib", user=test_user)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["overlay", "/var/lib"], ran.stdout  # an overlay: copy-on-write, not a read-only bind


TMP_PROBE = """
from pytest_hermetic import hermetic


@hermetic
def test_tmp_is_one_overlay():
    with open("/proc/self/mountinfo") as f:
        rows = [line.split() for line in f]
    kinds = [row[row.index("-") + 1] for row in rows if row[4] == "/tmp"]
    below = [row[4] for row in rows if row[4].startswith("/tmp/") and "erofs-tmp-project" not in row[4]]
    open("/tmp/rootless-erofs-probe", "w").write("vanishes")
    assert kinds[-1:] == ["overlay"] and below == [], (kinds, below[:3])  # (the project's own binds aside)
"""


def test_the_rootless_plugins_tmp_is_overlaid_whole(test_user, mounted_root_stores):
    """The plugin's /tmp is one overlay of the host's /tmp (not a tmpfs of per-entry overlays and
    read-only binds, its fallback for a /tmp with mounts below it)."""
    ours = [store.layer_mounts() for store in mounted_root_stores]
    if _foreign_mounts("/tmp", ours):
        pytest.skip(f"another program has mounts below /tmp: {_foreign_mounts('/tmp', ours)[:3]}")
    ran, _ = inner_session_as(test_user, "erofs-tmp-project", "test_inner.py", TMP_PROBE)
    assert "1 passed" in ran.stdout, ran.stdout + ran.stderr
    assert not os.path.exists("/tmp/rootless-erofs-probe")
