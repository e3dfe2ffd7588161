"""Hostile image metadata and layers, through a real pull (a scripted registry that serves
whatever bytes it is given) and through the imports (oci:, docker-archive:, tar:).

Each is refused with one line naming the source and the field (exit 125, no traceback), and
nothing is stored or lost: the store's names, blobs and layers are as before, and the image
that was there is still listed and runs.  Deep trees and bad stored configs never make a later
command (`images`, `gc`, `run`) fail."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from conftest import run_cli

from test_bad_input_cli import one_clear_line, store_state

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DEEP = b"[" * 100_000 + b"]" * 100_000  # json.loads alone dies of RecursionError on this


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_of(*members: tuple[str, bytes | int | None]) -> bytes:
    """A layer tar: (name, data) files; (name, None) directories."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


SMALL_LAYER = gzip.compress(tar_of(("hello", b"hi\n")))


class Image:
    """The documents of one image, each of which a case may replace by hostile bytes."""

    def __init__(self, layers: list[bytes] = (SMALL_LAYER,), config: dict | None = None) -> None:
        self.blobs: dict[str, bytes] = {}
        self.layers = []
        diff_ids = []
        for blob in layers:
            self.blobs[sha(blob)] = blob
            self.layers.append({"mediaType": GZIP_LAYER, "digest": sha(blob), "size": len(blob)})
            diff_ids.append(sha(gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob))
        self.config = {"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/bin"]},
                       "rootfs": {"type": "layers", "diff_ids": diff_ids}, **(config or {})}
        self.config_bytes: bytes | None = None
        self.manifest: dict = {}
        self.manifest_bytes: bytes | None = None
        self.index_bytes: bytes | None = None  # served as the tag when set (a multi-platform index)

    def finish(self) -> None:
        config_bytes = self.config_bytes if self.config_bytes is not None else json.dumps(self.config).encode()
        self.blobs[sha(config_bytes)] = config_bytes
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": sha(config_bytes), "size": len(config_bytes)},
                    "layers": self.layers, **self.manifest}
        if self.manifest_bytes is None:
            self.manifest_bytes = json.dumps(manifest).encode()
        self.blobs[sha(self.manifest_bytes)] = self.manifest_bytes

    def serve(self, registry, name: str) -> str:
        self.finish()
        registry.blobs.update(self.blobs)
        registry.manifests["1"] = (self.index_bytes or self.manifest_bytes, OCI_INDEX if self.index_bytes else OCI_MANIFEST)
        registry.manifests[sha(self.manifest_bytes)] = (self.manifest_bytes, OCI_MANIFEST)
        return f"{registry.host}/hostile/{name}:1"

    def layout(self, path: str) -> str:
        self.finish()
        os.makedirs(f"{path}/blobs/sha256", exist_ok=True)
        for digest, data in self.blobs.items():
            with open(f"{path}/blobs/sha256/{digest[7:]}", "wb") as f:
                f.write(data)
        index = self.index_bytes or json.dumps({"schemaVersion": 2, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": sha(self.manifest_bytes), "size": len(self.manifest_bytes),
             "annotations": {"org.opencontainers.image.ref.name": "1"}}]}).encode()
        with open(f"{path}/index.json", "wb") as f:
            f.write(index)
        with open(f"{path}/oci-layout", "w") as f:
            f.write('{"imageLayoutVersion":"1.0.0"}')
        return f"oci:{path}:1"


def _deep_index(image: Image) -> None:
    image.index_bytes = b'{"manifests": ' + DEEP + b"}"


def _bad_index(entries: list) -> callable:
    def edit(image: Image) -> None:
        image.index_bytes = json.dumps({"schemaVersion": 2, "manifests": entries}).encode()
    return edit


def _set(where: str, **values: object) -> callable:
    def edit(image: Image) -> None:
        target = image.config["config"] if where == "run" else image.config if where == "config" else image.manifest
        target.update(values)
    return edit


def _raw(what: str, data: bytes) -> callable:
    def edit(image: Image) -> None:
        setattr(image, what, data)
    return edit


def _layer_field(**values: object) -> callable:
    def edit(image: Image) -> None:
        image.layers[0].update(values)
    return edit


def _many_layers(image: Image) -> None:
    image.layers = [{"mediaType": GZIP_LAYER, "digest": sha(str(i).encode()), "size": 1} for i in range(3000)]
    image.config["rootfs"]["diff_ids"] = [sha(str(i).encode()) for i in range(3000)]


def _huge_config(lie: bool) -> callable:
    def edit(image: Image) -> None:
        image.config["config"]["Labels"] = {"padding": "x" * (33 << 20)}
        if lie:  # the descriptor says a few bytes; the registry sends 33 MiB
            image.finish()
            body = json.loads(image.manifest_bytes)
            body["config"]["size"] = 100
            image.manifest_bytes = json.dumps(body).encode()
    return edit


# name -> (how to spoil the image, words the one line must hold, also through oci:?)
METADATA = {
    "deep-index": (_deep_index, "nests more than 64 levels deep", True),
    "deep-manifest": (_raw("manifest_bytes", b'{"config": ' + DEEP + b"}"), "nests more than 64 levels deep", True),
    "deep-config": (_raw("config_bytes", b'{"rootfs": ' + DEEP + b"}"), "nests more than 64 levels deep", True),
    "manifests-1": (_bad_index([1]), "index.manifests[0] is a number 1, expected an object", True),
    "platform-string": (_bad_index([{"digest": sha(b"x"), "platform": "linux"}]),
                        "index.manifests[0].platform is a string 'linux', expected an object", True),
    "config-list": (_set("manifest", config=[1, 2]), "manifest.config is a list, expected an object", True),
    "annotations-list": (_set("manifest", annotations=["a"]), "manifest.annotations is a list, expected an object", True),
    "layer-digest-number": (_layer_field(digest=5), "manifest.layers[0].digest is a number 5, expected a sha256 digest", True),
    "layer-size-string": (_layer_field(size="big"), "manifest.layers[0].size is a string 'big', expected a whole number", True),
    "sha512": (_layer_field(digest="sha512:" + "a" * 128), "manifest.layers[0].digest is a string", True),
    "rootfs-x": (_set("config", rootfs="x"), "config.rootfs is a string 'x', expected an object", True),
    "diff-ids-numbers": (_set("config", rootfs={"diff_ids": [1]}), "config.rootfs.diff_ids[0] is a number 1", True),
    "cmd-5": (_set("run", Cmd=5), "config.config.Cmd is a number 5, expected a list", True),
    "entrypoint-nul": (_set("run", Entrypoint=["/bin/sh\0x"]), "config.config.Entrypoint[0] is a string with a NUL byte", True),
    "env-nul": (_set("run", Env=["PATH=/bin", "A=x\0y"]), "config.config.Env[1] is a string with a NUL byte", True),
    "env-not-pair": (_set("run", Env=["=x"]), "config.config.Env[0] is a string '=x', expected NAME=VALUE", True),
    "user-huge": (_set("run", User="99999999999"), "config.config.User is a string '99999999999'", True),
    "workdir-relative": (_set("run", WorkingDir="rel"), "config.config.WorkingDir is a string 'rel', expected an absolute path", True),
    "labels-list": (_set("run", Labels=[1]), "config.config.Labels is a list, expected an object", True),
    "config-not-object": (_raw("config_bytes", b"[]"), "config is a list, expected an object", True),
    "manifest-not-json": (_raw("manifest_bytes", b"{nope"), "is not JSON", True),
    "thousands-of-layers": (_many_layers, "manifest.layers has 3000 entries, more than the 500 allowed", True),
    "config-too-large": (_huge_config(lie=False), "larger than 32 MiB", True),
    "config-too-large-lying": (_huge_config(lie=True), "larger than 32 MiB", False),
}


@pytest.fixture(scope="module")
def good_store(tmp_path_factory, busybox_rootfs):
    """A store holding one good image, which no hostile input may disturb."""
    root = str(tmp_path_factory.mktemp("bad-images") / "store")
    ran = run_cli("import", f"dir:{busybox_rootfs}", "good:1", env={"HERMETIC_STORE": root})
    assert ran.returncode == 0, ran
    yield root
    listed = run_cli("images", env={"HERMETIC_STORE": root})
    assert "good" in listed.stdout and listed.stderr == "", listed
    ran = run_cli("run", "good:1", "echo", "still here", env={"HERMETIC_STORE": root})
    assert (ran.returncode, ran.stdout) == (0, "still here\n"), ran


def refused(args: list[str], store: str, words: str, env: dict | None = None) -> None:
    before = store_state(store)
    ran = run_cli(*args, env={"HERMETIC_STORE": store, **(env or {})})
    one_clear_line(ran, words)
    assert store_state(store) == before


@pytest.mark.parametrize("case", sorted(METADATA))
def test_hostile_metadata_through_a_pull(case, good_store, scripted_registry):
    spoil, words, _ = METADATA[case]
    image = Image()
    spoil(image)
    refused(["pull", image.serve(scripted_registry, case)], good_store, words)


@pytest.mark.parametrize("case", sorted(c for c in METADATA if METADATA[c][2]))
def test_hostile_metadata_through_an_oci_layout(case, good_store, tmp_path):
    spoil, words, _ = METADATA[case]
    image = Image()
    spoil(image)
    refused(["import", image.layout(str(tmp_path / "layout")), "hostile:1"], good_store, words)


def _docker_archive(path: str, manifest: bytes) -> str:
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tf.addfile(info, io.BytesIO(manifest))
    return f"docker-archive:{path}"


@pytest.mark.parametrize("manifest, words", [
    (b"[1]", "manifest.json[0] is a number 1, expected an object"),
    (b'[{"Config": 5, "Layers": []}]', "manifest.json[0].Config is a number 5"),
    (b'[{"Config": "c.json", "Layers": "x"}]', "manifest.json[0].Layers is a string 'x', expected a list"),
    (b'{"a": 1}', "manifest.json is an object, expected a list"),
    (DEEP, "nests more than 64 levels deep"),
])
def test_hostile_docker_archive(manifest, words, good_store, tmp_path):
    refused(["import", _docker_archive(str(tmp_path / "a.tar"), manifest), "hostile:1"], good_store, words)


# -- decompression bombs and sparse files -----------------------------------------------


@pytest.fixture(scope="module")
def zeros_bomb() -> bytes:
    """64 MiB of zeros in 65 KiB: past a 16 MiB layer limit."""
    return gzip.compress(tar_of(("zeros", bytes(64 << 20))), 9)


@pytest.fixture(scope="module")
def sparse_layer(tmp_path_factory) -> bytes:
    """A GNU sparse member of 3 GiB apparent size in a 10 KiB tar (made by GNU tar, as an attacker would)."""
    work = tmp_path_factory.mktemp("sparse")
    with open(work / "big", "wb") as f:
        f.truncate(3 << 30)
    subprocess.run(["tar", "--format=posix", "--sparse", "-cf", "sparse.tar", "big"], cwd=work, check=True)
    os.unlink(work / "big")
    return (work / "sparse.tar").read_bytes()


def _everywhere(layer: bytes, name: str, registry, tmp_path) -> list[list[str]]:
    """The same layer through pull, oci:, docker-archive: and tar:."""
    image = Image([layer])
    pull = ["pull", image.serve(registry, name)]
    oci = ["import", Image([layer]).layout(str(tmp_path / "layout")), f"{name}:1"]
    (tmp_path / "layer.tar").write_bytes(layer)
    config = json.dumps(Image([layer]).config).encode()
    archive = tmp_path / "archive.tar"
    with tarfile.open(archive, "w") as tf:
        for member, data in (("layer.tar", layer), ("config.json", config),
                             ("manifest.json", json.dumps([{"Config": "config.json", "RepoTags": [f"{name}:1"],
                                                             "Layers": ["layer.tar"]}]).encode())):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return [pull, oci, ["import", f"docker-archive:{archive}", f"{name}:1"],
            ["import", f"tar:{tmp_path / 'layer.tar'}", f"{name}:1"]]


def test_a_gzip_bomb_is_refused(good_store, scripted_registry, tmp_path, zeros_bomb):
    for args in _everywhere(zeros_bomb, "bomb", scripted_registry, tmp_path):
        refused(args, good_store, "unpacks to more than 16 MiB", env={"HERMETIC_MAX_LAYER_SIZE": "16M"})
    ran = run_cli(*_everywhere(zeros_bomb, "bomb", scripted_registry, tmp_path)[0], env={"HERMETIC_STORE": good_store,
                                                                                            "HERMETIC_MAX_LAYER_SIZE": "16M"})
    assert "HERMETIC_MAX_LAYER_SIZE" in ran.stderr and "nothing was stored" in ran.stderr  # how to change it


def test_a_sparse_file_counts_by_its_apparent_size(good_store, scripted_registry, tmp_path, sparse_layer):
    """No limit set: the default (100 x the compressed size, at least 1 GiB) refuses 3 GiB from 10 KiB."""
    for args in _everywhere(sparse_layer, "sparse", scripted_registry, tmp_path):
        refused(args, good_store, "unpacks to more than 1 GiB (at member 'big')")


def test_the_image_limit_counts_all_its_layers(good_store, scripted_registry, tmp_path):
    layers = [gzip.compress(tar_of((f"part{i}", bytes(16 << 20)))) for i in range(2)]
    before = store_state(good_store)
    image = Image(layers)
    ran = run_cli("pull", image.serve(scripted_registry, "two-parts"),
                  env={"HERMETIC_STORE": good_store, "HERMETIC_MAX_IMAGE_SIZE": "24M"})
    one_clear_line(ran, "unpacks to more than 24 MiB")
    assert "HERMETIC_MAX_IMAGE_SIZE" in ran.stderr
    after = store_state(good_store)
    assert after["refs"] == before["refs"] and after["tmp"] == before["tmp"]
    # a layer that fitted may be in; nothing names it, so gc takes it and the store is as before
    assert run_cli("gc", "-q", env={"HERMETIC_STORE": good_store}).returncode == 0
    assert store_state(good_store) == before


def test_a_bad_size_setting_is_one_line(good_store, scripted_registry):
    refused(["pull", Image().serve(scripted_registry, "setting")], good_store,
            "HERMETIC_MAX_LAYER_SIZE='lots': not a size", env={"HERMETIC_MAX_LAYER_SIZE": "lots"})


# -- deep trees: nothing in the store may break a later command --------------------------


def _deep_layer(levels: int) -> bytes:
    path = "/".join(["d"] * levels)
    return gzip.compress(tar_of((path + "/file", b"deep\n")))


def test_a_1500_level_tree_pulls_runs_and_goes(good_store, scripted_registry):
    env = {"HERMETIC_STORE": good_store}
    before = store_state(good_store)
    ref = Image([_deep_layer(1500)]).serve(scripted_registry, "deep")
    assert run_cli("pull", "-q", ref, env=env).returncode == 0
    ran = run_cli("run", ref, "sh", "-c", "cat /" + "/".join(["d"] * 1500) + "/file", env=env)
    assert ran.returncode == 127  # no shell in that image; what matters is that run fails cleanly...
    assert ran.stderr.count("\n") == 1 and "Traceback" not in ran.stderr
    assert run_cli("rmi", ref, env=env).returncode == 0
    for _ in range(2):  # ...and that gc, then every later gc, succeeds
        gc = run_cli("gc", env=env)
        assert gc.returncode == 0 and "Traceback" not in gc.stderr, gc
    assert store_state(good_store) == before


def test_a_5000_level_tree_is_refused(good_store, scripted_registry):
    refused(["pull", Image([_deep_layer(5000)]).serve(scripted_registry, "deeper")], good_store, "components deep")


@pytest.mark.parametrize("levels", [1500, 5000])
def test_gc_removes_deep_leftovers(good_store, levels):
    """A deep tree left in the store (an unreferenced layer, old staging) goes at the next gc."""
    before = store_state(good_store)
    for top in (f"{good_store}/layers/{'0' * 64}/root", f"{good_store}/tmp/layer-leftover"):
        os.makedirs(top)
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
        for _ in range(levels):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        os.close(fd)
    os.utime(f"{good_store}/tmp/layer-leftover", (1, 1))  # older than gc's grace for staging
    for _ in range(2):
        gc = run_cli("gc", env={"HERMETIC_STORE": good_store})
        assert gc.returncode == 0 and "Traceback" not in gc.stderr, gc
    assert store_state(good_store) == before


# -- a bad config in the store ---------------------------------------------------------------


def test_a_bad_stored_config_breaks_nothing_else(busybox_rootfs, tmp_path):
    from pytest_hermetic.errors import StoreError
    from pytest_hermetic.images.store import Store

    env = {"HERMETIC_STORE": str(tmp_path / "store")}
    assert run_cli("import", f"dir:{busybox_rootfs}", "good:1", env=env).returncode == 0
    store = Store(env["HERMETIC_STORE"])
    with pytest.raises(StoreError, match="config.config.Cmd is a number 5"):  # tagged, then read back: refused
        store.put_image("docker.io/library/bad:1", [], {"Cmd": 5})  # as a broken tool (or an older version) might have written it
    listed = run_cli("images", env=env)
    assert listed.returncode == 0 and "good" in listed.stdout and "bad" not in listed.stdout, listed
    assert listed.stderr.count("\n") == 1 and "image bad:1 cannot be read" in listed.stderr
    assert "config.config.Cmd is a number 5" in listed.stderr and "hermetic rmi" in listed.stderr
    one_clear_line(run_cli("run", "bad:1", "true", env=env), "config.config.Cmd is a number 5")
    assert run_cli("gc", "-q", env=env).returncode == 0
    ran = run_cli("run", "good:1", "echo", "fine", env=env)
    assert (ran.returncode, ran.stdout) == (0, "fine\n"), ran
    assert run_cli("rmi", "bad:1", env=env).returncode == 0
    assert run_cli("images", env=env).stderr == ""


# -- rootless: the same refusals for an unprivileged user's own store ----------------------


def test_hostile_images_rootless(test_user, scripted_registry, sparse_layer):
    import pwd

    entry = pwd.getpwnam(test_user)
    # The user's default store ($XDG_DATA_HOME/hermetic), in a data folder of this test's own: other
    # rootless tests (another xdist worker's) import into the user's usual one at any moment.
    data = os.path.join(os.path.dirname(os.environ["HERMETIC_STATE"]), f"home-{entry.pw_uid}", f"data-hostile-{os.getpid()}")
    env = {"XDG_DATA_HOME": data}
    store = os.path.join(data, "hermetic")
    try:
        for case in ("deep-config", "cmd-5", "env-nul", "thousands-of-layers"):
            spoil, words, _ = METADATA[case]
            image = Image()
            spoil(image)
            before = store_state(store)
            one_clear_line(run_cli("pull", image.serve(scripted_registry, f"rootless-{case}"), user=test_user, env=env),
                           words)
            assert store_state(store) == before
        before = store_state(store)
        ran = run_cli("pull", Image([sparse_layer]).serve(scripted_registry, "rootless-sparse"), user=test_user, env=env)
        one_clear_line(ran, "unpacks to more than 1 GiB")
        assert store_state(store) == before
        ref = Image([_deep_layer(1500)]).serve(scripted_registry, "rootless-deep")
        assert run_cli("pull", "-q", ref, user=test_user, env=env).returncode == 0
        assert len(store_state(store)["layers"]) == len(before["layers"]) + 1  # the user's store is the one watched
        assert run_cli("rmi", ref, user=test_user, env=env).returncode == 0
        for _ in range(2):
            gc = run_cli("gc", "-q", user=test_user, env=env)
            assert gc.returncode == 0 and gc.stderr == "", gc
        assert store_state(store) == before
    finally:
        if os.path.exists(data):
            shutil.rmtree(data)
