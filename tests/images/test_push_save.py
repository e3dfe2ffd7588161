"""push and save, read back by independent tools: skopeo copies out, `umoci unpack` extracts,
and the trees are compared with what the commit should hold."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest

from conftest import run_cli
from hermetic_testsupport.registry import run, skopeo_copy, umoci_unpack


def tree(root: str) -> dict[str, tuple]:
    """path -> (kind, mode, content sha256 or link target), for comparing root filesystems."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                found[rel] = ("file", stat.S_IMODE(st.st_mode), hashlib.sha256(open(path, "rb").read()).hexdigest())
    return found


@pytest.fixture
def committed(busybox_remote, store_env) -> str:
    """busybox:1 pulled, run with --commit: /root/file added, /etc/os-release deleted."""
    ref = busybox_remote.replace("/some/busybox:1", "/some/busybox:committed")
    ran = run_cli("run", "--commit", ref, busybox_remote, "sh", "-c", "echo new > /root/file; rm /etc/os-release",
                  env=store_env)
    assert ran.returncode == 0 and "committed" in ran.stderr, ran.stderr
    return ref


def expected_tree(busybox_rootfs: str) -> dict[str, tuple]:
    want = tree(busybox_rootfs)
    del want["etc/os-release"]
    want["root/file"] = ("file", 0o644, hashlib.sha256(b"new\n").hexdigest())
    return want


def test_commit_push_then_skopeo_and_umoci_read_it_back(committed, busybox_rootfs, store_env, tmp_path):
    pushed = run_cli("push", committed, env=store_env)
    assert pushed.returncode == 0, pushed.stderr
    assert "1 exists, 2 uploaded" in pushed.stderr  # the base layer was there; the new layer and config were not
    skopeo_copy(f"docker://{committed}", f"oci:{tmp_path}/out:c")
    rootfs = umoci_unpack(f"{tmp_path}/out:c", str(tmp_path / "bundle"))
    got = tree(rootfs)
    assert "root/file" in got and "etc/os-release" not in got  # the addition and the deletion
    assert got == expected_tree(busybox_rootfs)
    config = json.loads(run("skopeo", "inspect", "--tls-verify=false", "--config", f"docker://{committed}"))
    assert config["config"]["WorkingDir"] == "/root" and "GREETING=hello from the config" in config["config"]["Env"]
    again = run_cli("push", committed, env=store_env)
    assert "3 exists" in again.stderr  # nothing uploaded twice


def test_push_mounts_across_repositories_and_uploads_in_chunks(committed, registry, store_env, tmp_path):
    assert run_cli("push", committed, env=store_env).returncode == 0
    other = f"{registry.host}/another/repo:1"
    mounted = run_cli("push", committed, other, env=store_env)
    assert mounted.returncode == 0 and "3 mounted" in mounted.stderr, mounted.stderr
    local = "local/chunky:1"  # a name with no registry of its own: nothing to mount from
    assert run_cli("run", "--commit", local, committed, "sh", "-c", "head -c 300000 /dev/urandom > /big",
                   env=store_env).returncode == 0
    chunked = run_cli("push", "--chunk-size", "64k", local, f"{registry.host}/chunked/img:1", env=store_env)
    assert chunked.returncode == 0 and "chunked" in chunked.stderr, chunked.stderr
    fresh = {"HERMETIC_STORE": str(tmp_path / "fresh")}
    ran = run_cli("run", f"{registry.host}/chunked/img:1", "sh", "-c", "wc -c < /big; cat /root/file", env=fresh)
    assert ran.stdout.split() == ["300000", "new"], ran.stderr


def test_save_oci_layout_read_by_umoci(committed, busybox_rootfs, store_env, tmp_path):
    saved = run_cli("save", committed, f"oci:{tmp_path}/layout:v1", env=store_env)
    assert saved.returncode == 0, saved.stderr
    rootfs = umoci_unpack(f"{tmp_path}/layout:v1", str(tmp_path / "bundle"))
    assert tree(rootfs) == expected_tree(busybox_rootfs)
    assert run_cli("save", committed, f"oci:{tmp_path}/layout:v2", env=store_env).returncode == 0
    assert run("umoci", "ls", "--layout", f"{tmp_path}/layout").split() == ["v1", "v2"]


def test_save_docker_archive_read_by_skopeo_and_imported_back(committed, busybox_rootfs, store_env, tmp_path):
    archive = f"{tmp_path}/image.tar"
    saved = run_cli("save", committed, f"docker-archive:{archive}:saved/busybox:7", env=store_env)
    assert saved.returncode == 0, saved.stderr
    skopeo_copy(f"docker-archive:{archive}", f"oci:{tmp_path}/from-archive:x")
    assert tree(umoci_unpack(f"{tmp_path}/from-archive:x", str(tmp_path / "bundle"))) == expected_tree(busybox_rootfs)
    fresh = {"HERMETIC_STORE": str(tmp_path / "fresh")}
    imported = run_cli("import", f"docker-archive:{archive}", env=fresh)
    assert imported.returncode == 0 and imported.stdout.startswith("saved/busybox:7 sha256:"), imported.stderr
    original = run_cli("images", env=store_env).stdout
    image_id = imported.stdout.split()[1][7:19]
    assert image_id in original  # the same config bytes: the same image id


def test_host_based_images_cannot_leave(store_env, tmp_path):
    assert run_cli("run", "--commit", "onhost:1", "host", "true", env=store_env).returncode == 0
    for args in (("save", "onhost:1", f"oci:{tmp_path}/x"), ("push", "onhost:1", "127.0.0.1:1/x:1")):
        result = run_cli(*args, env=store_env)
        assert result.returncode == 125 and "stacked on the host's own root" in result.stderr, result.stderr
