"""`hermetic rmi` by image id, as `images -q` prints them (`hermetic rmi $(hermetic images -q)`)."""

from __future__ import annotations

import os
import shutil

from conftest import run_cli


def _unique_image(busybox_rootfs, tmp_path, name: str) -> str:
    """Import a busybox with a file of its own (an id no other test's image has); its full id."""
    root = tmp_path / "root"
    shutil.copytree(busybox_rootfs, root, symlinks=True)
    (root / "token").write_text(os.urandom(8).hex())
    ran = run_cli("import", f"dir:{root}", name)
    assert ran.returncode == 0, ran.stderr
    return ran.stdout.split()[1]  # "NAME sha256:..."


def test_rmi_by_id(busybox_rootfs, tmp_path):
    image_id = _unique_image(busybox_rootfs, tmp_path, "rmid-a:1")
    short = image_id[7:19]
    assert short in run_cli("images", "-q").stdout.split()
    assert run_cli("tag", "rmid-a:1", "rmid-b:1").returncode == 0
    try:
        ran = run_cli("rmi", short)  # two names: as docker's, only with -f
        assert ran.returncode == 125 and ran.stderr.count("\n") == 1, ran
        assert "has 2 names (rmid-a:1, rmid-b:1)" in ran.stderr and f"rmi -f {short}" in ran.stderr
        ran = run_cli("rmi", "-f", short, short)  # named twice, as `$(images -q)` may
        assert ran.returncode == 0 and ran.stdout == "untagged rmid-a:1, rmid-b:1\n", ran
        listing = run_cli("images").stdout
        assert "rmid-a" not in listing and "rmid-b" not in listing
        assert run_cli("tag", "rmid-a:1", "rmid-c:1").returncode == 125  # gone, not only hidden
        assert short not in run_cli("images", "-q").stdout.split()
    finally:
        run_cli("rmi", "-f", "rmid-a:1", "rmid-b:1")


def test_rmi_by_full_id_and_an_unknown_one(busybox_rootfs, tmp_path):
    image_id = _unique_image(busybox_rootfs, tmp_path, "rmid-d:1")
    try:
        ran = run_cli("rmi", image_id)  # sha256:<64 hex>
        assert ran.returncode == 0 and ran.stdout == "untagged rmid-d:1\n", ran
        ran = run_cli("rmi", image_id[7:19])
        assert ran.returncode == 125 and "is not in the local store" in ran.stderr and ran.stderr.count("\n") == 1
    finally:
        run_cli("rmi", "-f", "rmid-d:1")
