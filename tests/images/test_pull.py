"""Pulling from a real docker-registry (and a scripted one for faults): run, resume, share, errors."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from conftest import ROOT, run_cli
from hermetic_testsupport.layers import layer_tree
from hermetic_testsupport.registry import free_port, oci_image, run, skopeo_copy
from pytest_hermetic.errors import DigestMismatch, ImageNotFound, RegistryError
from pytest_hermetic.images.pull import pull
from pytest_hermetic.images.store import Store


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_600_000_000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def store_is_empty(root: str) -> None:
    """Nothing entered the store: no blob, no layer, no name, no staging."""
    for sub in ("blobs/sha256", "layers", "tmp"):
        path = os.path.join(root, sub)
        assert not os.path.isdir(path) or os.listdir(path) == [], (sub, os.listdir(path))
    refs = os.path.join(root, "refs.json")
    assert not os.path.exists(refs) or json.load(open(refs)) == {}


def test_pull_then_run_with_the_config_env_and_workdir(busybox_remote, store_env):
    pulled = run_cli("pull", busybox_remote, env=store_env)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.startswith(f"{busybox_remote} sha256:")
    assert "pulled" in pulled.stderr and "1 layer (1 fetched" in pulled.stderr  # not a tty: a summary, no bars
    ran = run_cli("run", busybox_remote, "sh", "-c", 'pwd; echo "$GREETING"; cat /etc/os-release', env=store_env)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["/root", "hello from the config", 'NAME="hermetic busybox"', "ID=busybox"]
    again = run_cli("pull", "--quiet", busybox_remote, env=store_env)
    assert again.returncode == 0 and again.stderr == "" and again.stdout == pulled.stdout
    images = run_cli("images", env=store_env)
    assert busybox_remote in images.stdout and "1.1 MB" in images.stdout


def test_run_pulls_on_first_use(busybox_remote, store_env):
    ran = run_cli("run", busybox_remote, "sh", "-c", "echo $GREETING", env=store_env)
    assert (ran.returncode, ran.stdout) == (0, "hello from the config\n"), ran.stderr


def test_pull_by_digest_and_progress_callback(busybox_remote, tmp_path):
    store = Store(str(tmp_path / "store"))
    calls = []
    image = pull(store, busybox_remote, progress=lambda *a: calls.append(a))
    digest = store.manifest_digest(image.name)
    label, done, total = calls[-1]
    assert len(label) == 12 and done == total and total > 1_000_000
    assert all(b[1] <= b[2] for b in calls) and [c[1] for c in calls] == sorted(c[1] for c in calls)
    pinned = busybox_remote.rsplit(":", 1)[0] + "@" + digest
    other = Store(str(tmp_path / "other"))
    assert pull(other, pinned, quiet=True).id == image.id
    with pytest.raises(ImageNotFound, match="not found in registry"):
        pull(other, busybox_remote.rsplit(":", 1)[0] + "@sha256:" + "0" * 64, quiet=True)


def test_errors_are_one_line(busybox_remote, registry, store_env):
    cases = {
        ("pull", "Bad/Name:1"): "not a valid image reference (repository names must be lowercase)",
        ("pull", f"{registry.host}/no/such:1"): f"{registry.host}/no/such:1: not found in registry {registry.host}",
        ("pull", f"127.0.0.1:{free_port()}/x:1"): "cannot reach registry 127.0.0.1:",
        ("run", f"{registry.host}/no/such:2", "true"): "not found in registry",
        ("pull", "dir:/tmp"): "only registry references are pulled",
        ("pull", "--platform", "linux", busybox_remote): "expected OS/ARCH[/VARIANT]",
    }
    for args, message in cases.items():
        result = run_cli(*args, env=store_env)
        assert result.returncode == 125, (args, result)
        assert message in result.stderr, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr


def test_offline_mode_never_leaves_loopback(store_env):
    result = run_cli("run", "debian:12", "true", env={**store_env, "HERMETIC_OFFLINE": "1"})
    assert result.returncode == 125
    assert "HERMETIC_OFFLINE is set, so registry docker.io (registry-1.docker.io) is not tried" in result.stderr


def test_mirror_from_environment_and_config(registry, busybox_layout, store_env, tmp_path):
    # docker.io/library/busybox:mirrored, served by a loopback mirror with a path prefix: docker.io is never asked
    skopeo_copy(busybox_layout, f"docker://{registry.host}/hub/library/busybox:mirrored")
    env = {**store_env, "HERMETIC_OFFLINE": "1", "HERMETIC_REGISTRY_MIRRORS": f"docker.io={registry.host}/hub"}
    ran = run_cli("run", "busybox:mirrored", "sh", "-c", "echo $GREETING", env=env)
    assert (ran.returncode, ran.stdout) == (0, "hello from the config\n"), ran.stderr
    conf = tmp_path / "registries.conf"
    conf.write_text(f"[docker.io]\nmirrors = 127.0.0.1:{free_port()}, {registry.host}/hub\n")
    env = {"HERMETIC_STORE": str(tmp_path / "s2"), "HERMETIC_OFFLINE": "1", "HERMETIC_REGISTRIES_CONF": str(conf)}
    pulled = run_cli("pull", "-q", "busybox:mirrored", env=env)  # the first mirror is down: the next one serves
    assert pulled.returncode == 0 and pulled.stdout.startswith("busybox:mirrored sha256:"), pulled.stderr


def test_platform_selection_from_an_index(registry, busybox_rootfs, tmp_path):
    """An OCI index with amd64 and arm64/v8 entries: the host's by default, --platform to choose."""
    from pytest_hermetic.images.registry import OCI_INDEX, Registry

    layout = str(tmp_path / "multi")
    entries = []
    for arch, variant in (("amd64", None), ("arm64", "v8")):
        marker = tmp_path / f"root-{arch}"
        (marker / "etc").mkdir(parents=True)
        (marker / "etc" / "arch").write_text(arch)
        oci_image(str(marker), layout, arch)
        run("umoci", "config", "--image", f"{layout}:{arch}", "--architecture", arch, "--os", "linux")
        skopeo_copy(f"oci:{layout}:{arch}", f"docker://{registry.host}/multi/img:{arch}")
        body, media_type, _ = Registry(registry.host).get_manifest("multi/img", arch)
        platform = {"architecture": arch, "os": "linux", **({"variant": variant} if variant else {})}
        entries.append({"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
                        "size": len(body), "platform": platform})
    entries.append({"mediaType": entries[0]["mediaType"], "digest": entries[0]["digest"], "size": entries[0]["size"],
                    "platform": {"architecture": "unknown", "os": "unknown"}})  # an attestation entry: never picked
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    Registry(registry.host).put_manifest("multi/img", "1", index, OCI_INDEX)
    ref = f"{registry.host}/multi/img:1"
    store = Store(str(tmp_path / "store"))
    for platform, arch in ((None, "amd64"), ("linux/arm64", "arm64"), ("linux/arm64/v8", "arm64"), ("linux/amd64", "amd64")):
        image = pull(store, ref, platform=platform, quiet=True)
        root = layer_tree(store, image.layers[-1])
        assert open(os.path.join(root, "etc", "arch")).read() == arch, platform
    with pytest.raises(ImageNotFound, match=r"has no linux/s390x image \(it has: linux/amd64, linux/arm64/v8\)"):
        pull(store, ref, platform="linux/s390x", quiet=True)


def test_lying_registry_stores_nothing(scripted_registry, tmp_path):
    good = gzip.compress(layer_tar({"etc/motd": b"hello\n" * 1000}))
    manifest = scripted_registry.add_image("lie/img:1", [good])
    scripted_registry.lie[manifest["layers"][0]["digest"]] = gzip.compress(layer_tar({"etc/motd": b"evil\n" * 1000}))
    root = str(tmp_path / "store")
    result = run_cli("pull", f"{scripted_registry.host}/lie/img:1", env={"HERMETIC_STORE": root})
    assert result.returncode == 125
    assert "digest mismatch" in result.stderr and manifest["layers"][0]["digest"] in result.stderr, result.stderr
    assert "nothing was stored" in result.stderr
    store_is_empty(root)


def test_manifest_that_does_not_match_its_digest(scripted_registry, tmp_path):
    manifest = scripted_registry.add_image("m/img:1", [gzip.compress(layer_tar({"a": b"a"}))])
    body = json.dumps(manifest).encode()
    wrong = "sha256:" + hashlib.sha256(body + b" ").hexdigest()
    scripted_registry.manifests[wrong] = (body, manifest["mediaType"])
    with pytest.raises(RegistryError, match=f"expected {wrong}") as raised:  # a registry's, and a content error
        pull(Store(str(tmp_path / "store")), f"{scripted_registry.host}/m/img@{wrong}", quiet=True)
    assert isinstance(raised.value, DigestMismatch)
    store_is_empty(str(tmp_path / "store"))


def test_dropped_connection_resumes_with_range(scripted_registry, tmp_path):
    blob = gzip.compress(layer_tar({"data": os.urandom(300_000)}), compresslevel=1)
    manifest = scripted_registry.add_image("r/img:1", [blob])
    digest = manifest["layers"][0]["digest"]
    scripted_registry.drop_after[digest] = 100_000
    image = pull(Store(str(tmp_path / "store")), f"{scripted_registry.host}/r/img:1", quiet=True)
    assert len(image.layers) == 1
    assert [r for d, r in scripted_registry.ranges if d == digest] == [None, "bytes=100000-"]


def test_killed_pull_leaves_no_half_layer_and_resumes(scripted_registry, tmp_path):
    blob = gzip.compress(layer_tar({"big": os.urandom(400_000)}), compresslevel=1)
    manifest = scripted_registry.add_image("k/img:1", [blob])
    digest = manifest["layers"][0]["digest"]
    scripted_registry.stall_after[digest] = 250_000
    root = str(tmp_path / "store")
    code = "import sys; from pytest_hermetic.images.store import Store; from pytest_hermetic.images.pull import pull; pull(Store(sys.argv[1]), sys.argv[2], quiet=True)"
    proc = subprocess.Popen([sys.executable, "-c", code, root, f"{scripted_registry.host}/k/img:1"],
                            env={**os.environ, "PYTHONPATH": ROOT})
    partial = os.path.join(root, "tmp", digest[7:] + ".partial")
    deadline = time.monotonic() + 20
    while not (os.path.exists(partial) and os.path.getsize(partial) >= 200_000) and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert os.listdir(os.path.join(root, "layers")) == [] and os.listdir(os.path.join(root, "blobs", "sha256")) == []
    assert Store(root).images() == []
    del scripted_registry.stall_after[digest]
    scripted_registry.ignore_range = False
    image = pull(Store(root), f"{scripted_registry.host}/k/img:1", quiet=True)
    resumed_at = int(scripted_registry.ranges[-1][1].split("=")[1].rstrip("-"))  # what reached the disk before the kill
    assert scripted_registry.ranges[-1][0] == digest and 200_000 <= resumed_at <= 250_000
    assert open(os.path.join(layer_tree(Store(root), image.layers[0]), "big"), "rb").read() == \
        tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))).extractfile("big").read()
    assert [e for e in os.listdir(os.path.join(root, "tmp")) if not e.startswith("layer-")] == []


def test_registry_that_ignores_range_still_resumes(scripted_registry, tmp_path):
    blob = gzip.compress(layer_tar({"data": os.urandom(200_000)}), compresslevel=1)
    manifest = scripted_registry.add_image("i/img:1", [blob])
    digest = manifest["layers"][0]["digest"]
    scripted_registry.drop_after[digest] = 50_000
    scripted_registry.ignore_range = True
    image = pull(Store(str(tmp_path / "store")), f"{scripted_registry.host}/i/img:1", quiet=True)
    assert len(image.layers) == 1


def test_parallel_pulls_share_one_copy(registry, busybox_rootfs, tmp_path):
    """Four processes pull one three-layer image into one store at once (as xdist workers do)."""
    layout = str(tmp_path / "layers3")
    oci_image(busybox_rootfs, layout, "3")
    for i in (1, 2):
        extra = tmp_path / f"extra{i}"
        (extra / "opt").mkdir(parents=True)
        (extra / "opt" / f"file{i}").write_bytes(os.urandom(500_000))
        run("umoci", "insert", "--image", f"{layout}:3", str(extra), "/")
    ref = f"{registry.host}/par/img:3"
    skopeo_copy(f"oci:{layout}:3", f"docker://{ref}")
    root = str(tmp_path / "store")
    code = "import sys; from pytest_hermetic.images.store import Store; from pytest_hermetic.images.pull import pull; print(pull(Store(sys.argv[1]), sys.argv[2], quiet=True).id)"
    procs = [subprocess.Popen([sys.executable, "-c", code, root, ref], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": ROOT}) for _ in range(4)]
    ids = {p.communicate(timeout=60)[0] for p in procs}
    assert all(p.returncode == 0 for p in procs) and len(ids) == 1
    assert len(os.listdir(os.path.join(root, "layers"))) == 3
    assert [e for e in os.listdir(os.path.join(root, "tmp"))] == []
    ran = run_cli("run", ref, "sh", "-c", "ls /opt; ls /bin/sh", env={"HERMETIC_STORE": root})
    assert ran.stdout.split() == ["file1", "file2", "/bin/sh"], ran.stderr


def test_gc_after_rmi_removes_what_the_pull_brought(busybox_remote, store_env):
    assert run_cli("pull", "-q", busybox_remote, env=store_env).returncode == 0
    assert run_cli("rmi", busybox_remote, env=store_env).returncode == 0
    gc = run_cli("gc", env=store_env)
    assert "layer sha256:" in gc.stdout and gc.stdout.count("blob sha256:") == 3, gc.stdout  # layer, config, manifest
    root = store_env["HERMETIC_STORE"]
    assert os.listdir(os.path.join(root, "blobs", "sha256")) == os.listdir(os.path.join(root, "layers")) == []
    assert os.listdir(os.path.join(root, "locks")) == []


def test_disk_full_is_a_clear_error_and_stores_nothing(busybox_remote, tmp_path):
    """A 600 KiB tmpfs store (in a private mount namespace) cannot hold the 2 MB busybox layer."""
    root = tmp_path / "small"
    root.mkdir()
    script = (f"mount -t tmpfs -o size=600k tmpfs {root} && "
              f"{sys.executable} -m pytest_hermetic pull {busybox_remote}; echo status=$?; "
              f"find {root} -mindepth 2 | grep -v -e '/locks/' -e 'gc.lock' -e '/lock$' ; cat {root}/refs.json 2>/dev/null; true")
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": ROOT, "HERMETIC_STORE": str(root)}, timeout=60)
    assert "status=125" in result.stdout, (result.stdout, result.stderr)
    assert "no space left on the store's disk" in result.stderr and "nothing was stored" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1
    leftovers = [line for line in result.stdout.splitlines() if line.startswith(str(root))]
    assert all(line.endswith(("/blobs", "/blobs/sha256", "/layers", "/tmp", "/locks")) for line in leftovers), leftovers


def test_progress_bars_on_a_terminal(busybox_remote, tmp_path):
    """stderr a tty: one line per layer redrawn in place; the same pull piped shows none."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: stderr and stdout are the pty
        os.environ.update(HERMETIC_STORE=str(tmp_path / "store"), PYTHONPATH=ROOT, TERM="xterm")
        os.execv(sys.executable, [sys.executable, "-m", "pytest_hermetic", "pull", busybox_remote])
    output = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert f"pulling {busybox_remote}" in text and "[##############################] done" in text, text
    assert "MB" in text


def test_rootless_pull_and_run(busybox_remote, test_user):
    ran = run_cli("run", busybox_remote, "sh", "-c", 'id -u; echo "$GREETING"', user=test_user)
    assert (ran.returncode, ran.stdout) == (0, "0\nhello from the config\n"), ran.stderr


def test_a_download_that_keeps_breaking_off_is_resumed_by_the_next_pull(scripted_registry, tmp_path):
    blob = gzip.compress(layer_tar({"data": os.urandom(400_000)}), compresslevel=1)
    manifest = scripted_registry.add_image("b/img:1", [blob])
    digest = manifest["layers"][0]["digest"]
    scripted_registry.drop_always[digest] = 50_000  # each response is cut after 50 kB: 4 tries get 200 kB
    root = str(tmp_path / "store")
    result = run_cli("pull", f"{scripted_registry.host}/b/img:1", env={"HERMETIC_STORE": root})
    assert result.returncode == 125 and result.stderr.count("\n") == 1, result.stderr
    assert f"the download of blob {digest} broke off at 200000 of {len(blob)} bytes" in result.stderr
    assert "pull again to resume" in result.stderr
    assert os.path.getsize(os.path.join(root, "tmp", digest[7:] + ".partial")) == 200_000
    assert os.listdir(os.path.join(root, "layers")) == []
    del scripted_registry.drop_always[digest]
    image = pull(Store(root), f"{scripted_registry.host}/b/img:1", quiet=True)
    assert scripted_registry.ranges[-1] == (digest, "bytes=200000-") and len(image.layers) == 1
