"""Hostile images through a real pull (skopeo puts them into docker-registry) and through import:
each is refused with a clear error or neutralised, nothing enters the store, the host is untouched."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile

import pytest

from conftest import run_cli
from hermetic_testsupport.layers import layer_tree
from hermetic_testsupport.registry import skopeo_copy


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **kw: object) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mtime = kind, 1_600_000_000
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    for key, value in kw.items():
        setattr(info, key, value)
    return info, data


def layer(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return buf.getvalue()


def write_layout(layout: str, tag: str, layers: list[bytes]) -> str:
    """An OCI layout holding an image of `layers` (gzipped), written by hand: no tool would make these."""
    blobs = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    def put(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        open(os.path.join(blobs, digest[7:]), "wb").write(data)
        return digest

    descs, diff_ids = [], []
    for tar in layers:
        gz = gzip.compress(tar)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(gz), "size": len(gz)})
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/bin"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config),
                                      "size": len(config)}, "layers": descs}).encode()
    index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                "digest": put(manifest), "size": len(manifest),
                                                "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    open(os.path.join(layout, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
    json.dump(index, open(os.path.join(layout, "index.json"), "w"))
    return f"oci:{layout}:{tag}"


@pytest.fixture
def host(tmp_path):
    """A folder standing for the host: a layer must never create, change or link anything here."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "secret").write_text("host secret")
    return out


def host_untouched(host) -> None:
    assert sorted(os.listdir(host)) == ["secret"]
    assert (host / "secret").read_text() == "host secret" and os.stat(host / "secret").st_nlink == 1
    assert not os.path.lexists("/evil") and not os.path.lexists("/etc/evil")


def store_empty(root: str) -> None:
    for sub in ("layers", "blobs/sha256"):
        assert not os.path.isdir(f"{root}/{sub}") or os.listdir(f"{root}/{sub}") == [], sub
    assert not os.path.isdir(f"{root}/tmp") or [e for e in os.listdir(f"{root}/tmp")] == []
    assert not os.path.exists(f"{root}/refs.json") or json.load(open(f"{root}/refs.json")) == {}


def both_ways(name: str, layers: list[bytes], registry, tmp_path):
    """Yield (how, result, store root) for `hermetic pull` from the registry and `hermetic import oci:`."""
    source = write_layout(str(tmp_path / f"layout-{name}"), "1", layers)
    ref = f"{registry.host}/hostile/{name}:1"
    skopeo_copy(source, f"docker://{ref}")
    for how, args in (("pull", ("pull", ref)), ("import", ("import", source, f"hostile-{name}:1"))):
        root = str(tmp_path / f"store-{how}")
        yield how, run_cli(*args, env={"HERMETIC_STORE": root}), root


REFUSED = {
    "traversal": ([layer(member("../../../../../../../../evil", data=b"x"))], "'../../../../../../../../evil'"),
    "symlink-then-write": (lambda host: [layer(member("a", tarfile.SYMTYPE, linkname=str(host)),
                                               member("a/evil", data=b"x"))], "'a/evil'"),
    "hardlink-out": (lambda host: [layer(member("evil", tarfile.LNKTYPE, linkname=f"../../../../../../..{host}/secret"))],
                     "'evil'"),
    "hardlink-absolute": (lambda host: [layer(member("evil", tarfile.LNKTYPE, linkname=f"{host}/secret"))], "'evil'"),
    "whiteout-dotdot": ([layer(member("sub", tarfile.DIRTYPE), member("sub/.wh..."))], "'sub/.wh...'"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused(case, registry, host, tmp_path):
    layers, named = REFUSED[case]
    layers = layers(host) if callable(layers) else layers
    for how, result, root in both_ways(case, layers, registry, tmp_path):
        assert result.returncode == 125, (how, result)
        assert "refusing layer member" in result.stderr and named in result.stderr, (how, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        store_empty(root)
        host_untouched(host)


def test_absolute_paths_land_inside(registry, host, tmp_path):
    layers = [layer(member(f"{host}/evil", data=b"inside\n"), member("/etc/evil", data=b"inside too\n"))]
    for how, result, root in both_ways("absolute", layers, registry, tmp_path):
        assert result.returncode == 0, (how, result.stderr)
        host_untouched(host)
    from pytest_hermetic.images.store import Store

    store = Store(str(tmp_path / "store-pull"))
    root = layer_tree(store, store.local(f"{registry.host}/hostile/absolute:1").layers[0])
    assert open(f"{root}/{str(host).lstrip('/')}/evil").read() == "inside\n"
    assert open(f"{root}/etc/evil").read() == "inside too\n"


def test_symlink_in_one_layer_written_through_by_the_next(registry, host, busybox_remote, tmp_path):
    """Layer 1 plants `a -> HOST`, layer 2 writes `a/evil`: each layer unpacks alone, so the
    write lands in layer 2's own `a/` directory, which hides the symlink in the container."""
    layers = [layer(member("a", tarfile.SYMTYPE, linkname=str(host))),
              layer(member("a", tarfile.DIRTYPE), member("a/evil", data=b"in the layer\n"))]
    for how, result, root in both_ways("two-layers", layers, registry, tmp_path):
        assert result.returncode == 0, (how, result.stderr)
        host_untouched(host)
    from pytest_hermetic.images.store import Store

    store = Store(str(tmp_path / "store-pull"))
    image = store.local(f"{registry.host}/hostile/two-layers:1")
    first, second = (layer_tree(store, d) for d in image.layers)
    assert os.readlink(f"{first}/a") == str(host)  # kept as data, never followed
    assert open(f"{second}/a/evil").read() == "in the layer\n" and not os.path.islink(f"{second}/a")


def test_device_nodes_are_skipped_without_privilege(registry, host, tmp_path):
    layers = [layer(member("dev", tarfile.DIRTYPE), member("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0),
                    member("dev/mem", tarfile.CHRTYPE, devmajor=1, devminor=1), member("ok", data=b"fine\n"))]
    for how, result, root in both_ways("devices", layers, registry, tmp_path):
        assert result.returncode == 0, (how, result.stderr)
        from pytest_hermetic.images.store import Store

        store = Store(root)
        name = f"{registry.host}/hostile/devices:1" if how == "pull" else "hostile-devices:1"
        layer_root = layer_tree(store, store.local(name).layers[0])
        assert sorted(os.listdir(layer_root)) == ["dev", "ok"] and os.listdir(f"{layer_root}/dev") == []
    host_untouched(host)
