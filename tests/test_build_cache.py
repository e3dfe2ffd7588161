"""The build cache and reproducibility: cached rebuilds, partial rebuilds, identical images
from fresh stores, the cache across gc, two builds of one file at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from conftest import ROOT, run_cli
from test_build import make_context

from pytest_hermetic.build import build
from pytest_hermetic.images.gc import collect
from pytest_hermetic.images.store import Store
from pytest_hermetic.images.transports import import_image

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds run containers as root here")


def _layers(store: Store) -> set[str]:
    return set(os.listdir(os.path.join(store.root, "layers")))


def _build(store: Store, context: str, tag: str, **kwargs):
    lines: list[str] = []
    started = time.perf_counter()
    image = build(None, context, tags=[tag], store=store, progress=lines.append, **kwargs)
    return image, time.perf_counter() - started, lines


@pytest.fixture
def store(tmp_path, busybox_rootfs) -> Store:
    store = Store(str(tmp_path / "store"))
    import_image(store, f"dir:{busybox_rootfs}", "busybox:test", env={"GREETING": "hello"}, workdir="/root")
    return store


def test_nothing_changed_is_cached_fast_and_makes_no_layer(store, tmp_path):
    context = make_context(tmp_path / "ctx")
    first, cold, _ = _build(store, context, "app:1")
    layers = _layers(store)
    cached_times = []
    for _ in range(5):
        again, seconds, lines = _build(store, context, "app:1")
        cached_times.append(seconds)
        assert again.id == first.id and again.layers == first.layers
        assert _layers(store) == layers  # no new layer
        assert not any(line.startswith("--> ") and "cached" not in line for line in lines)
    cached = min(cached_times)  # the machine's own noise (other builds, other tests) only ever adds time
    print(f"cold {cold:.3f} s, cached {cached:.4f} s (median {sorted(cached_times)[2]:.4f} s): {cold / cached:.0f}x")
    assert cold / cached >= 20


def test_one_changed_file_rebuilds_from_its_copy_on(store, tmp_path):
    context = make_context(tmp_path / "ctx")
    first, _, _ = _build(store, context, "app:1")
    with open(os.path.join(context, "data", "one.txt"), "w") as f:
        f.write("changed\n")
    os.utime(os.path.join(context, "hello.c"))  # a newer time alone changes nothing
    second, _, lines = _build(store, context, "app:1")
    steps = [line for line in lines if line.startswith(("STEP", "-->"))]
    copy_data = next(i for i, line in enumerate(steps) if "COPY data/" in line)
    assert all(line == "--> cached" for line in steps[:copy_data] if line.startswith("-->"))
    assert steps[copy_data + 1].startswith("--> ") and steps[copy_data + 1] != "--> cached"
    assert second.layers[:-1] == first.layers[:-1] and second.layers[-1] != first.layers[-1]
    assert second.id != first.id


def test_two_fresh_stores_give_the_same_image(busybox_rootfs, tmp_path):
    images = []
    for name in ("one", "two"):
        store = Store(str(tmp_path / f"store-{name}"))
        import_image(store, f"dir:{busybox_rootfs}", "busybox:test", env={"GREETING": "hello"}, workdir="/root")
        context = make_context(tmp_path / f"ctx-{name}")  # another folder, other times: the same image
        image, _, _ = _build(store, context, "app:1")
        images.append(image)
    assert images[0].layers == images[1].layers
    assert images[0].id == images[1].id
    shown = [run_cli("images", env={"HERMETIC_STORE": str(tmp_path / f"store-{name}")}).stdout for name in ("one", "two")]
    rows = [next(line.split()[:2] for line in listing.splitlines() if line.startswith("app:1")) for listing in shown]
    assert rows[0] == rows[1] == ["app:1", images[0].id[7:19]]  # as `hermetic images` shows them


def test_source_date_epoch_is_the_time_of_the_image(store, tmp_path):
    context = make_context(tmp_path / "ctx")
    default, _, _ = _build(store, context, "app:0")  # epoch 0, cached: the other epoch must not reuse it
    image, _, _ = _build(store, context, "app:1", epoch=1700000000)
    import tarfile

    with tarfile.open(store.blob_path(store.layer_meta(image.layers[-1])["blob"])) as tar:
        assert {m.mtime for m in tar.getmembers()} == {1700000000}
    assert image.layers[-1] != default.layers[-1]
    config = store.read_json(image.id)
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert {entry["created"] for entry in config["history"][-5:]} == {"2023-11-14T22:13:20Z"}


def test_cache_survives_gc_while_a_tag_uses_it_and_build_cache_gc_drops_it(store, tmp_path):
    context = make_context(tmp_path / "ctx")
    first, _, _ = _build(store, context, "kept:1")
    collect(store)
    again, _, lines = _build(store, context, "kept:1")
    assert again.id == first.id
    final_steps = lines[lines.index(next(line for line in lines if line.startswith("STEP") and "busybox" in line)):]
    assert all(line == "--> cached" for line in final_steps if line.startswith("-->"))
    gc = run_cli("gc", "--build-cache", env={"HERMETIC_STORE": store.root})  # (a store of its own: others keep theirs)
    assert gc.returncode == 0, gc.stderr
    assert "build cache entry" in gc.stdout
    _, _, lines = _build(store, context, "kept:1")
    assert "--> cached" not in lines


def test_no_cache_runs_every_step_and_gives_the_same_image(store, tmp_path):
    context = make_context(tmp_path / "ctx")
    first, _, _ = _build(store, context, "app:1")
    again, _, lines = _build(store, context, "app:1", no_cache=True)
    assert "--> cached" not in lines
    assert again.id == first.id


def test_two_builds_of_one_file_at_once(store, tmp_path):
    context = make_context(tmp_path / "ctx")
    code = ("import sys; from pytest_hermetic.build import build; from pytest_hermetic.images.store import Store; "
            "print(build(None, sys.argv[2], tags=[sys.argv[3]], store=Store(sys.argv[1])).id)")
    procs = [subprocess.Popen([sys.executable, "-c", code, store.root, context, f"same:{i}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": ROOT})
             for i in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    assert results[0][0] == results[1][0]
    assert {image.familiar for image in store.images()} >= {"same:0", "same:1"}
    assert not [e for e in os.listdir(os.path.join(store.root, "tmp")) if not e.startswith("refs-")]
    for image in store.images():
        assert all(store.has_layer(d) for d in image.layers)


def test_gc_in_a_loop_while_a_build_runs_takes_nothing_it_needs(store, tmp_path):
    context = make_context(tmp_path / "ctx")
    code = ("import sys; from pytest_hermetic.build import build; from pytest_hermetic.images.store import Store; "
            "print(build(None, sys.argv[2], tags=['gc-race:1'], store=Store(sys.argv[1]), no_cache=True).id)")
    proc = subprocess.Popen([sys.executable, "-c", code, store.root, context], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    sweeps = 0
    while proc.poll() is None:
        collect(store)
        sweeps += 1
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    image = store.local("gc-race:1")
    assert image.id == out.strip() and sweeps > 1
    collect(store)
    assert all(store.has_layer(d) for d in image.layers)
    again, _, lines = _build(store, context, "gc-race:1")
    assert again.id == image.id


def test_an_env_change_reruns_the_runs_after_it_not_the_copies(store, tmp_path):
    context = make_context(tmp_path / "ctx", "FROM busybox:test\nENV X=1\nCOPY data/ /d/\nRUN echo $X > /x\n")
    first, _, _ = _build(store, context, "env:1")
    with open(os.path.join(context, "Containerfile"), "w") as f:
        f.write("FROM busybox:test\nENV X=2\nCOPY data/ /d/\nRUN echo $X > /x\n")
    second, _, lines = _build(store, context, "env:1")
    results = [line for line in lines if line.startswith("-->")]
    assert results[0] == "--> cached" and results[1] != "--> cached", lines
    assert second.layers[:-1] == first.layers[:-1] and second.layers[-1] != first.layers[-1]
