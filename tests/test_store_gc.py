"""What `gc` and `rmi` may remove, and what they never touch (issue 11).

gc removes only what is provably dead: its owner (pid and start time, in
the thing's name) is gone, and no writer holds the store's lock.  A layer a
live container runs on stays, also after `rmi -f`.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_cli
from hermetic_testsupport.layers import layer_tree
from pytest_hermetic._proc import name_owner, owner_alive


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    """A private store and state folder for one test."""
    return {"HERMETIC_STORE": str(tmp_path / "store"), "HERMETIC_STATE": str(tmp_path / "state")}


def cli(env: dict[str, str], *args: str, ok: bool = True, timeout: float = 60):
    ran = run_cli(*args, env=env, timeout=timeout)
    if ok:
        assert ran.returncode == 0, (args, ran.stdout, ran.stderr)
    return ran


def popen_cli(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pytest_hermetic", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd="/",
                            env={**os.environ, "PYTHONPATH": ROOT, **env})


def tmp_entries(env: dict[str, str]) -> list[str]:
    path = os.path.join(env["HERMETIC_STORE"], "tmp")
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def dead_staging(env: dict[str, str]) -> list[str]:
    """Entries in STORE/tmp whose owner no longer runs (or that say none)."""
    return [e for e in tmp_entries(env) if not (name_owner(e) and owner_alive(name_owner(e)))]


def wait_for(predicate, timeout: float = 20.0, what: str = "") -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_rmi_of_an_image_in_use_refuses_and_gc_leaves_the_container_alone(env, busybox_rootfs, tmp_path):
    cli(env, "import", f"dir:{busybox_rootfs}", "rm:1")
    cli(env, "run", "--commit", "rm:1", "rm:1", "sh", "-c", "echo precious > /data")
    signals = tmp_path / "sig"
    signals.mkdir()
    script = "echo started > /sig/up; while [ ! -e /sig/go ]; do sleep 0.05; done; cat /data; ls /bin/busybox"
    proc = popen_cli(env, "run", "--name", "keeper", "-v", f"{signals}:/sig", "rm:1", "sh", "-c", script)
    try:
        wait_for(lambda: (signals / "up").exists(), what="the container")
        refused = cli(env, "rmi", "rm:1", ok=False)
        assert refused.returncode == 125
        assert refused.stderr.count("\n") == 1 and "in use by container keeper" in refused.stderr, refused.stderr
        assert "hermetic rmi -f rm:1" in refused.stderr
        assert "rm:1" in cli(env, "images").stdout  # nothing was untagged
        assert cli(env, "rmi", "-f", "rm:1").stdout == "untagged rm:1\n"
        gc = cli(env, "gc")
        assert "layer" not in gc.stdout and "read-write layer" not in gc.stdout, gc.stdout
        (signals / "go").write_text("")
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out == "precious\n/bin/busybox\n"
    # The container is gone: now its layers go (the committed one and the base's).
    gc = cli(env, "gc")
    assert gc.stdout.count("removed layer ") == 2, gc.stdout
    store = env["HERMETIC_STORE"]
    assert os.listdir(f"{store}/layers") == os.listdir(f"{store}/users") == os.listdir(f"{store}/containers") == []


def test_rmi_refuses_for_a_container_of_another_process_and_another_state(env, busybox_rootfs, tmp_path):
    """An untracked container (as the plugin's per-test ones) of a process with its own state folder."""
    cli(env, "import", f"dir:{busybox_rootfs}", "other:1")
    code = ("import sys, time; from pytest_hermetic.container import Container; from pytest_hermetic.spec import Spec\n"
            "c = Container(Spec.build('other:1', ['sleep', '30'], tracked=False, ephemeral=True)); c.start()\n"
            "print(c.short_id, flush=True); sys.stdin.read(); c.remove()")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": ROOT, **env, "HERMETIC_STATE": str(tmp_path / "other")})
    try:
        short = holder.stdout.readline().strip()
        refused = cli(env, "rmi", "other:1", ok=False)
        assert refused.returncode == 125 and f"({short}, owner pid {holder.pid})" in refused.stderr, refused.stderr
        cli(env, "rmi", "-f", "other:1")
        cli(env, "gc")
        assert len(os.listdir(os.path.join(env["HERMETIC_STORE"], "layers"))) == 1
    finally:
        holder.communicate("", timeout=30)
    assert "removed layer" in cli(env, "gc").stdout


def test_a_second_tag_of_an_image_in_use_untags_without_force(env, busybox_rootfs, tmp_path):
    cli(env, "import", f"dir:{busybox_rootfs}", "a:1")
    manifest = json.load(open(os.path.join(env["HERMETIC_STORE"], "refs.json")))
    refs = {**manifest, "docker.io/library/b:1": next(iter(manifest.values()))}
    with open(os.path.join(env["HERMETIC_STORE"], "refs.json"), "w") as f:
        json.dump(refs, f)
    proc = popen_cli(env, "run", "a:1", "sleep", "20")
    try:
        wait_for(lambda: os.listdir(os.path.join(env["HERMETIC_STORE"], "users")), what="the container's record")
        assert cli(env, "rmi", "b:1").stdout == "untagged b:1\n"  # a:1 still names it: nothing breaks
        assert "in use by container" in cli(env, "rmi", "a:1", ok=False).stderr
    finally:
        proc.kill()
        proc.wait()


def _random_kills(env: dict[str, str], args: tuple[str, ...], trials: int, rng: random.Random,
                  prepare=lambda: None) -> int:  # noqa: ANN001
    """Run `hermetic ARGS` once whole (timed), then `trials` times SIGKILLed at a random point of that time."""
    prepare()
    start = time.monotonic()
    cli(env, *args)
    took = time.monotonic() - start
    killed = 0
    for _ in range(trials):
        prepare()
        proc = popen_cli(env, *args)
        time.sleep(rng.uniform(0.1, 1.0) * took)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        proc.communicate()
    return killed


def test_killed_pulls_imports_and_commits_leave_nothing_after_the_next_gc(env, busybox_remote, busybox_layout,
                                                                          busybox_rootfs, tmp_path):
    rng = random.Random(11)
    cli(env, "import", f"dir:{busybox_rootfs}", "base:1")
    source = tmp_path / "source"
    shutil.copytree(busybox_rootfs, source, symlinks=True)

    def forget(ref: str):  # noqa: ANN202
        def prepare() -> None:  # the next pull or import has all to do again
            run_cli("rmi", "-f", ref, env=env)
            cli(env, "gc")
        return prepare

    def new_junk() -> None:
        (source / "junk").write_bytes(os.urandom(2 << 20))

    killed = _random_kills(env, ("pull", "-q", busybox_remote), 6, rng, forget(busybox_remote))
    killed += _random_kills(env, ("import", f"dir:{source}", "imported:1"), 6, rng, new_junk)
    killed += _random_kills(env, ("import", busybox_layout, "fromoci:1"), 4, rng, forget("fromoci:1"))
    killed += _random_kills(env, ("run", "--commit", "committed:1", "base:1", "sh", "-c",
                                  "dd if=/dev/urandom of=/junk bs=64k count=40 2>/dev/null"), 6, rng)
    assert killed >= 12  # most runs were killed somewhere on the way
    # The next operation of the same kind clears what the killed ones of its kind left.
    cli(env, "import", f"dir:{busybox_rootfs}", "again:1")
    assert [e for e in dead_staging(env) if e.startswith(("import-", "commit-", "layer-", "blob-", "refs-"))] == []
    gc = cli(env, "gc")
    assert tmp_entries(env) == [], (tmp_entries(env), gc.stdout)
    store = env["HERMETIC_STORE"]
    assert os.listdir(f"{store}/users") == os.listdir(f"{store}/containers") == []
    images = [line.split()[0] for line in cli(env, "images").stdout.splitlines()[2:]]
    assert "base:1" in images and "again:1" in images
    for image in images:  # whatever got tagged is whole
        assert cli(env, "run", image, "sh", "-c", "ls /bin/busybox").stdout == "/bin/busybox\n"


def test_a_live_pulls_staging_survives_gc_and_a_killed_ones_goes(env, scripted_registry, busybox_rootfs):
    """A pull stalled half way (its first layer finished, the second downloading) beside `gc` and
    the start of another import; then the same pull killed: gc takes its finished, untagged layer."""
    import io
    import tarfile

    def layer(files: dict[str, bytes]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
        return gzip.compress(buf.getvalue(), compresslevel=1)

    first, second = layer({"first": b"one"}), layer({"big": os.urandom(400_000)})
    manifest = scripted_registry.add_image("slow/img:1", [first, second])
    stalled = manifest["layers"][1]["digest"]
    scripted_registry.stall_after[stalled] = 250_000
    ref = f"{scripted_registry.host}/slow/img:1"
    store = env["HERMETIC_STORE"]
    partial = os.path.join(store, "tmp", stalled[7:] + ".partial")

    def stalled_pull() -> subprocess.Popen:
        before = len(os.listdir(os.path.join(store, "layers"))) if os.path.isdir(os.path.join(store, "layers")) else 0
        proc = popen_cli(env, "pull", "-q", ref)
        wait_for(lambda: os.path.exists(partial) and os.path.getsize(partial) >= 200_000
                 and len(os.listdir(os.path.join(store, "layers"))) == before + 1, what="the stalled pull")
        return proc

    pull = stalled_pull()
    staging = tmp_entries(env)
    layers = os.listdir(os.path.join(store, "layers"))  # the first one, finished, not yet tagged
    assert any(e.startswith("layer-") for e in staging) and any(e.endswith(".partial") for e in staging), staging
    # gc does not wait for the download, and takes nothing of it.
    gc = cli(env, "gc", timeout=20)
    assert gc.stdout == "0 items removed\n", gc.stdout
    cli(env, "import", f"dir:{busybox_rootfs}", "beside:1")  # clears dead staging at its start: not this
    assert set(staging) <= set(tmp_entries(env)) and set(layers) <= set(os.listdir(os.path.join(store, "layers")))
    scripted_registry.release.set()
    out, err = pull.communicate(timeout=30)
    assert pull.returncode == 0, err
    from pytest_hermetic.images.store import Store

    image = Store(store).local(ref)  # whole: both layers unpacked (no shell in it to run)
    assert open(os.path.join(layer_tree(Store(store), image.layers[0]), "first")).read() == "one"
    assert os.path.getsize(os.path.join(layer_tree(Store(store), image.layers[1]), "big")) == 400_000
    # Now killed while stalled: a finished layer no tag names, a partial download, dead staging.
    cli(env, "rmi", ref)
    cli(env, "gc")
    scripted_registry.release.clear()
    pull = stalled_pull()
    os.kill(pull.pid, signal.SIGKILL)
    pull.communicate()
    assert dead_staging(env)
    gc = cli(env, "gc")
    assert "removed layer" in gc.stdout and "partial download" in gc.stdout, gc.stdout
    assert tmp_entries(env) == [] and os.listdir(os.path.join(store, "layers")) != []  # beside:1's layer stays
    assert cli(env, "images").stdout.count("\n") == 3  # header, host, beside:1


def test_disk_full_commit_and_dir_import_say_so(busybox_rootfs, tmp_path):
    root = tmp_path / "small"
    root.mkdir()
    big = tmp_path / "big"
    shutil.copytree(busybox_rootfs, big, symlinks=True)
    (big / "junk").write_bytes(os.urandom(3 << 20))
    h = f"{sys.executable} -m pytest_hermetic"
    script = (f"mount -t tmpfs -o size=7m tmpfs {root} && {h} import dir:{busybox_rootfs} bb:1 >/dev/null; echo import=$?; "
              f"{h} run --commit fat:1 bb:1 sh -c 'dd if=/dev/urandom of=/fat bs=1M count=2 2>/dev/null'; echo commit=$?; "
              f"{h} import dir:{big} big:1; echo big=$?; ls {root}/tmp; {h} images | wc -l; "
              f"{h} gc >/dev/null; ls {root}/layers | wc -l; ls {root}/tmp {root}/containers")
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": ROOT, "HERMETIC_STORE": str(root),
                                                         "HERMETIC_STATE": str(tmp_path / "state")})
    lines = result.stdout.split()
    assert lines[:3] == ["import=0", "commit=125", "big=125"], (result.stdout, result.stderr)
    errors = result.stderr.splitlines()
    assert len(errors) == 2, result.stderr
    assert errors[0] == (f"hermetic: error: no space left on the store's disk ({root}) while committing fat:1: nothing was "
                         "stored; free space (`hermetic gc`, `hermetic rmi`) and commit again")
    assert errors[1].startswith(f"hermetic: error: no space left on the store's disk ({root}) while importing dir:")
    assert "Errno" not in result.stderr
    # No staging left; the images: header, host, bb:1; after gc only bb:1's layer, no rw layer.
    assert lines[3:] == ["3", "1", f"{root}/containers:", f"{root}/tmp:"], result.stdout


def test_two_commits_to_one_tag_each_print_the_id_they_wrote(env, busybox_rootfs):
    cli(env, "import", f"dir:{busybox_rootfs}", "base:1")
    procs = [popen_cli(env, "run", "--commit", "same:1", "base:1", "sh", "-c", f"echo {i} > /who") for i in range(4)]
    printed = []
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        printed.append(re.search(r"committed same:1 \(([0-9a-f]{12})\)", err).group(1))
    assert len(set(printed)) == 4  # four different layers, four ids
    store = env["HERMETIC_STORE"]
    for short in printed:  # each id printed is the config of the layer that process wrote
        config = json.load(open(next(os.path.join(store, "blobs", "sha256", h)
                                     for h in os.listdir(os.path.join(store, "blobs", "sha256")) if h.startswith(short))))
        layer = config["rootfs"]["diff_ids"][-1][7:]
        from pytest_hermetic.images.store import Store

        who = open(os.path.join(layer_tree(Store(store), "sha256:" + layer), "who")).read()
        assert procs[int(who)] is procs[printed.index(short)]
    final = cli(env, "run", "same:1", "cat", "/who").stdout.strip()
    assert cli(env, "images").stdout.split("same:1")[1].split()[0] == printed[int(final)]


@pytest.mark.skipif(os.geteuid() != 0, reason="the host bridge and private networks here need root")
def test_gc_keeps_what_other_state_folders_and_live_sessions_use(env, busybox_rootfs, tmp_path):
    """gc with another HERMETIC_STATE: the shared host bridge (a container on it), and a live
    process's private network with its lock file, stay; after that process dies they go."""
    cli(env, "import", f"dir:{busybox_rootfs}", "net:1")
    other = {**env, "HERMETIC_STATE": str(tmp_path / "other-state")}
    code = ("import sys; from pytest_hermetic.networks.private import PrivateNetwork\n"
            "n = PrivateNetwork('svc')\nwith n.locked(): pass\nprint(n.state_dir, flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": ROOT, **env})
    bridge_user = popen_cli(env, "run", "--net=bridge", "net:1", "sleep", "8")
    try:
        private = holder.stdout.readline().strip()
        wait_for(lambda: os.path.exists("/sys/class/net/hermetic0/brif")
                 and os.listdir("/sys/class/net/hermetic0/brif"), what="the bridge container")
        for gc_env in (other, env):
            gc = cli(gc_env, "gc")
            assert "host bridge" not in gc.stdout and "private network" not in gc.stdout, gc.stdout
        assert os.path.isdir(private) and os.path.exists(private + ".lock")
        assert os.listdir("/sys/class/net/hermetic0/brif")
    finally:
        holder.kill()
        holder.wait()
    gc = cli(env, "gc")
    assert "private network svc" in gc.stdout, gc.stdout
    assert not os.path.exists(private) and not os.path.exists(private + ".lock")
    bridge_user.communicate(timeout=30)
    assert bridge_user.returncode == 0


def test_commit_of_a_running_container_is_on_the_image_it_runs_on(env, busybox_rootfs, tmp_path):
    """`hermetic commit NAME` after NAME's image tag moved, and after a gc: on the old image, whole."""
    cli(env, "import", f"dir:{busybox_rootfs}", "m:1")
    signals = tmp_path / "sig"
    signals.mkdir()
    script = "echo mine > /mine; echo up > /sig/up; while [ ! -e /sig/go ]; do sleep 0.05; done"
    proc = popen_cli(env, "run", "--name", "old", "-v", f"{signals}:/sig", "m:1", "sh", "-c", script)
    try:
        wait_for(lambda: (signals / "up").exists(), what="the container")
        cli(env, "run", "--commit", "m:1", "m:1", "sh", "-c", "echo moved > /moved")  # the tag moves on
        cli(env, "gc")
        committed = cli(env, "commit", "old", "out:1")
        assert committed.stdout.startswith("out:1 sha256:")
    finally:
        (signals / "go").write_text("")
        proc.communicate(timeout=30)
    ran = cli(env, "run", "out:1", "sh", "-c", "cat /mine; ls /moved 2>/dev/null; ls /bin/busybox")
    assert ran.stdout == "mine\n/bin/busybox\n"
