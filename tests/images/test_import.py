"""Importing what skopeo writes (docker archives, OCI layouts), and a real distribution by debootstrap."""

from __future__ import annotations

import json
import os

import pytest

from conftest import run_cli
from hermetic_testsupport.registry import oci_image, run, skopeo_copy
from pytest_hermetic.errors import ContentError, DigestMismatch, RegistryError
from pytest_hermetic.images.store import Store
from pytest_hermetic.images.transports import import_image


def test_import_docker_archive_made_by_skopeo(busybox_remote, store_env, tmp_path):
    archive = f"{tmp_path}/busybox.tar"
    skopeo_copy(f"docker://{busybox_remote}", f"docker-archive:{archive}:archived/busybox:1")
    imported = run_cli("import", f"docker-archive:{archive}", env=store_env)
    assert imported.returncode == 0 and imported.stdout.startswith("archived/busybox:1 sha256:"), imported.stderr
    ran = run_cli("run", "archived/busybox:1", "sh", "-c", 'pwd; echo "$GREETING"', env=store_env)
    assert ran.stdout.splitlines() == ["/root", "hello from the config"], ran.stderr
    skopeo_id = json.loads(run("skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{busybox_remote}"))["config"]["digest"]
    assert imported.stdout.split()[1] == skopeo_id  # the config kept byte for byte: the same image id


def test_import_oci_layout_made_by_skopeo(busybox_remote, store_env, tmp_path):
    layout = f"{tmp_path}/layout"
    skopeo_copy(f"docker://{busybox_remote}", f"oci:{layout}:one")
    skopeo_copy(f"docker://{busybox_remote}", f"oci:{layout}:two")
    imported = run_cli("import", f"oci:{layout}:one", "mine:1", env=store_env)
    assert imported.returncode == 0 and imported.stdout.startswith("mine:1 sha256:"), imported.stderr
    ran = run_cli("run", "mine:1", "sh", "-c", 'pwd; echo "$GREETING"', env=store_env)
    assert ran.stdout.splitlines() == ["/root", "hello from the config"], ran.stderr
    default = run_cli("import", f"oci:{layout}:two", env=store_env)
    assert default.stdout.startswith("layout:two sha256:"), default.stderr  # default name: DIR's name and the tag
    ambiguous = run_cli("import", f"oci:{layout}", env=store_env)
    assert ambiguous.returncode == 125 and "holds 2 images; name one" in ambiguous.stderr
    missing = run_cli("import", f"oci:{layout}:three", env=store_env)
    assert missing.returncode == 125 and "no image tagged 'three' (tags: one, two)" in missing.stderr


def test_tampered_oci_layout_is_refused_and_stores_nothing(busybox_layout, tmp_path):
    layout = f"{tmp_path}/tampered"
    skopeo_copy(busybox_layout, f"oci:{layout}:1")
    index = json.load(open(f"{layout}/index.json"))
    manifest = json.load(open(f"{layout}/blobs/sha256/{index['manifests'][0]['digest'][7:]}"))
    blob = f"{layout}/blobs/sha256/{manifest['layers'][0]['digest'][7:]}"
    data = bytearray(open(blob, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(blob, "wb").write(bytes(data))
    root = str(tmp_path / "store")
    result = run_cli("import", f"oci:{layout}:1", "tampered:1", env={"HERMETIC_STORE": root})
    assert result.returncode == 125 and "digest mismatch" in result.stderr, result.stderr
    assert os.listdir(f"{root}/layers") == [] and os.listdir(f"{root}/blobs/sha256") == []
    assert [e for e in os.listdir(f"{root}/tmp")] == []
    # a local archive's bad content is a content error, not a registry's
    with pytest.raises(DigestMismatch, match="digest mismatch") as raised:
        import_image(Store(str(tmp_path / "store2")), f"oci:{layout}:1", "tampered:1")
    assert isinstance(raised.value, ContentError) and not isinstance(raised.value, RegistryError)


def test_zstd_and_uncompressed_layers(busybox_rootfs, registry, store_env, tmp_path):
    """An OCI layout with a zstd layer and an uncompressed one, imported, pushed, and pulled back."""
    import hashlib

    import zstandard

    layout = f"{tmp_path}/z"
    oci_image(busybox_rootfs, layout, "1")
    index = json.load(open(f"{layout}/index.json"))
    mdesc = index["manifests"][0]
    manifest = json.load(open(f"{layout}/blobs/sha256/{mdesc['digest'][7:]}"))
    gz = open(f"{layout}/blobs/sha256/{manifest['layers'][0]['digest'][7:]}", "rb").read()
    import gzip

    tar = gzip.decompress(gz)
    (tmp_path / "opt").mkdir()
    (tmp_path / "opt" / "note").write_text("plain\n")
    extra = tmp_path / "plain.tar"
    run("tar", "-C", str(tmp_path), "--format=pax", "-cf", str(extra), "opt")
    layers = []
    for data, media in ((zstandard.ZstdCompressor().compress(tar), "application/vnd.oci.image.layer.v1.tar+zstd"),
                        (extra.read_bytes(), "application/vnd.oci.image.layer.v1.tar")):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        open(f"{layout}/blobs/sha256/{digest[7:]}", "wb").write(data)
        layers.append({"mediaType": media, "digest": digest, "size": len(data)})
    config = json.load(open(f"{layout}/blobs/sha256/{manifest['config']['digest'][7:]}"))
    config["rootfs"]["diff_ids"].append("sha256:" + hashlib.sha256(extra.read_bytes()).hexdigest())
    cbytes = json.dumps(config).encode()
    cdigest = "sha256:" + hashlib.sha256(cbytes).hexdigest()
    open(f"{layout}/blobs/sha256/{cdigest[7:]}", "wb").write(cbytes)
    manifest = dict(manifest, layers=layers, config=dict(manifest["config"], digest=cdigest, size=len(cbytes)))
    mbytes = json.dumps(manifest).encode()
    mdigest = "sha256:" + hashlib.sha256(mbytes).hexdigest()
    open(f"{layout}/blobs/sha256/{mdigest[7:]}", "wb").write(mbytes)
    index["manifests"] = [dict(mdesc, digest=mdigest, size=len(mbytes))]
    json.dump(index, open(f"{layout}/index.json", "w"))
    assert run_cli("import", f"oci:{layout}:1", "zstd:1", env=store_env).returncode == 0
    ref = f"{registry.host}/zstd/img:1"
    assert run_cli("push", "zstd:1", ref, env=store_env).returncode == 0
    ran = run_cli("run", ref, "sh", "-c", "cat /opt/note; ls /bin/sh", env={"HERMETIC_STORE": str(tmp_path / "fresh")})
    assert ran.stdout.split() == ["plain", "/bin/sh"], ran.stderr


@pytest.fixture(scope="session")
def debian_layout(pytestconfig) -> str:
    """`oci:LAYOUT:TAG` of a debootstrap minbase (the tree is cached under .cache/ and built once per machine)."""
    from hermetic_testsupport.debootstrap import CACHE, build_rootfs

    rootfs = build_rootfs()
    suite = os.path.basename(os.path.dirname(rootfs))
    layout = os.path.join(CACHE, suite, "oci")
    if not os.path.exists(os.path.join(layout, "index.json")):
        oci_image(rootfs, layout + ".partial", suite, env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                  cmd="/bin/bash")
        os.rename(layout + ".partial", layout)
    return f"oci:{layout}:{suite}"


def test_debootstrap_image_pulled_and_run(debian_layout, registry, store_env):
    suite = debian_layout.rsplit(":", 1)[1]
    ref = f"{registry.host}/debian:{suite}"
    skopeo_copy(debian_layout, f"docker://{ref}")
    ran = run_cli("run", ref, "sh", "-c", "cat /etc/debian_version; id -un; ls /usr/bin/apt-get", env=store_env,
                  timeout=300)
    assert ran.returncode == 0, ran.stderr
    version, user, apt = ran.stdout.split()
    assert version[0].isdigit() and user == "root" and apt == "/usr/bin/apt-get"
    imported = run_cli("import", debian_layout, f"debian-local:{suite}", env=store_env, timeout=300)
    assert imported.returncode == 0, imported.stderr
    assert run_cli("run", f"debian-local:{suite}", "cat", "/etc/debian_version", env=store_env).stdout == version + "\n"


def test_import_on_a_full_disk_is_a_clear_error(busybox_remote, tmp_path):
    """The same 600 KiB tmpfs store as for the pull: the docker archive's layer does not fit."""
    import subprocess
    import sys

    from conftest import ROOT

    archive = f"{tmp_path}/busybox.tar"
    skopeo_copy(f"docker://{busybox_remote}", f"docker-archive:{archive}:full/busybox:1")
    root = tmp_path / "small"
    root.mkdir()
    script = (f"mount -t tmpfs -o size=600k tmpfs {root} && {sys.executable} -m pytest_hermetic import "
              f"docker-archive:{archive}; echo status=$?; ls {root}/layers {root}/blobs/sha256 {root}/tmp")
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": ROOT, "HERMETIC_STORE": str(root)}, timeout=60)
    assert "status=125" in result.stdout and "no space left on the store's disk" in result.stderr, (result.stdout, result.stderr)
    assert result.stdout.split()[1:] == [f"{root}/blobs/sha256:", f"{root}/layers:", f"{root}/tmp:"], result.stdout
