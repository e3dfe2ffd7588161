"""Stress (issue 11): `hermetic gc` in loops, from several processes, beside live work on one store.

For a fixed time (HERMETIC_STRESS_SECONDS, default 20, per test) every kind of work
runs in its own loop of real `hermetic` processes: `run`, `run --commit` (then a run of
what it committed), `import dir:`, `import oci:`, `pull` from a real docker-registry,
and `rmi`; the second test puts a pytest session with @hermetic tests under `-n 2` and a
notebook helper running cells beside the gc loops.  Every operation must succeed; at the
end no ref is corrupt or hidden, every listed image runs with its own content, and one
more gc leaves no staging, records or read-write layers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter

import pytest

from conftest import ROOT, run_cli

SECONDS = float(os.environ.get("HERMETIC_STRESS_SECONDS", "20"))
GC_LOOPS = 3

pytestmark = pytest.mark.stress  # a fixed-time load test: `-m "not stress"` leaves it out


class Load:
    """Loops of `hermetic` commands until a deadline; every failure is kept."""

    def __init__(self, env: dict[str, str], seconds: float) -> None:
        self.env = env
        self.deadline = time.monotonic() + seconds
        self.failures: list[tuple] = []
        self.counts: Counter[str] = Counter()
        self.expected: dict[str, tuple[list[str], str]] = {}  # image -> (command, its output)
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def cli(self, kind: str, *args: str) -> str | None:
        ran = run_cli(*args, env=self.env, timeout=180)
        with self.lock:
            self.counts[kind] += 1
            if ran.returncode != 0:
                self.failures.append((kind, args, ran.returncode, ran.stderr.strip()[-400:]))
                return None
        return ran.stdout

    def check(self, kind: str, image: str, command: list[str], want: str) -> None:
        out = self.cli(kind, "run", image, *command)
        if out is not None and out != want:
            with self.lock:
                self.failures.append((kind, image, "wrong content", out, want))

    def loop(self, body) -> None:  # noqa: ANN001
        def run() -> None:
            i = 0
            while time.monotonic() < self.deadline:
                try:
                    body(i)
                except Exception as exc:  # noqa: BLE001 - a broken loop is a failure, not a hang
                    with self.lock:
                        self.failures.append(("loop", repr(exc)))
                    return
                i += 1

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def gc_loops(self) -> None:
        for _ in range(GC_LOOPS):
            self.loop(lambda i: self.cli("gc", "gc", "-q"))

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=300)
            assert not thread.is_alive(), "a load loop hangs"

    def keep(self, image: str, command: list[str], want: str) -> None:
        with self.lock:
            self.expected[image] = (command, want)

    def forget(self, image: str) -> None:
        with self.lock:
            self.expected.pop(image, None)


def check_store(env: dict[str, str], expected: dict[str, tuple[list[str], str]]) -> None:
    """No corrupt or hidden ref; every image whole and runnable with its content; gc leaves nothing dead."""
    from pytest_hermetic.images import reference
    from pytest_hermetic.images.store import Store

    store = Store(env["HERMETIC_STORE"])
    with open(os.path.join(store.root, "refs.json")) as f:
        names = {reference.parse(name).familiar for name in json.load(f)}
    listed = store.images()
    assert {image.familiar for image in listed} == names  # nothing hidden: every ref loads
    for image in listed:
        for diff_id in image.layers:
            assert store.has_layer(diff_id), (image.familiar, diff_id)
    assert names == set(expected), (sorted(names ^ set(expected)))
    for image, (command, want) in sorted(expected.items()):
        ran = run_cli("run", image, *command, env=env)
        assert (ran.returncode, ran.stdout) == (0, want), (image, ran.stderr)
    ran = run_cli("gc", env=env)
    assert ran.returncode == 0, ran.stderr
    for sub in ("tmp", "users", "containers"):
        assert os.listdir(os.path.join(store.root, sub)) == [], (sub, os.listdir(os.path.join(store.root, sub)))
    referenced = {d.split(":")[1] for image in store.images() for d in image.layers}
    assert set(os.listdir(os.path.join(store.root, "layers"))) == referenced


@pytest.fixture
def stress_env(tmp_path, busybox_rootfs) -> dict[str, str]:
    """A private store and state folder holding `base:1` (busybox with /etc/marker)."""
    env = {"HERMETIC_STORE": str(tmp_path / "store"), "HERMETIC_STATE": str(tmp_path / "state")}
    base = tmp_path / "base"
    shutil.copytree(busybox_rootfs, base, symlinks=True)
    (base / "etc" / "marker").write_text("base\n")
    assert run_cli("import", f"dir:{base}", "base:1", env=env).returncode == 0
    return env


def test_gc_loops_beside_run_commit_import_pull_and_rmi(stress_env, busybox_rootfs, busybox_layout, busybox_remote,
                                                        tmp_path):
    variants = []
    for k in range(3):  # three distinct one-layer images, each imported many times
        path = tmp_path / f"variant{k}"
        shutil.copytree(busybox_rootfs, path, symlinks=True)
        (path / "etc" / "marker").write_text(f"variant {k}\n")
        variants.append(path)
    load = Load(stress_env, SECONDS)
    load.keep("base:1", ["cat", "/etc/marker"], "base\n")
    greeting = (["sh", "-c", "echo $GREETING"], "hello from the config\n")

    def run(i: int) -> None:
        load.check("run", "base:1", ["cat", "/etc/marker"], "base\n")

    def commit(i: int) -> None:
        # On base:1, or on the last commit (a layer that a gc might take when its tag moves).
        base = "base:1" if i % 2 == 0 else "cc:1"
        if load.cli("commit", "run", "--commit", "cc:1", base, "sh", "-c", f"echo {i} >> /data") is not None:
            load.check("commit", "cc:1", ["tail", "-n1", "/data"], f"{i}\n")
            load.keep("cc:1", ["tail", "-n1", "/data"], f"{i}\n")
        if load.cli("commit", "run", "--commit", f"c{i}:1", "base:1", "sh", "-c", f"echo {i} > /data") is not None:
            load.keep(f"c{i}:1", ["cat", "/data"], f"{i}\n")
            load.check("commit", f"c{i}:1", ["cat", "/data"], f"{i}\n")
            if i % 3:
                load.cli("rmi", "rmi", f"c{i}:1")
                load.forget(f"c{i}:1")

    def import_dir(i: int) -> None:
        k = i % len(variants)
        if load.cli("import", "import", f"dir:{variants[k]}", f"d{i}:1") is not None:
            load.keep(f"d{i}:1", ["cat", "/etc/marker"], f"variant {k}\n")
            if i % 2:
                load.check("import", f"d{i}:1", ["cat", "/etc/marker"], f"variant {k}\n")
                load.cli("rmi", "rmi", f"d{i}:1")
                load.forget(f"d{i}:1")

    def import_oci(i: int) -> None:
        if load.cli("import", "import", busybox_layout, f"o{i}:1") is not None:
            load.keep(f"o{i}:1", *greeting)
            if i % 2:
                load.cli("rmi", "rmi", f"o{i}:1")
                load.forget(f"o{i}:1")

    pulled = busybox_remote

    def pull(i: int) -> None:
        if load.cli("pull", "pull", "-q", pulled) is not None:
            load.keep(pulled, *greeting)
            load.check("pull", pulled, *greeting)
            if i % 2 == 0:  # gone again: the next pull downloads it anew while gc runs
                load.cli("rmi", "rmi", pulled)
                load.forget(pulled)

    load.gc_loops()
    for body in (run, commit, import_dir, import_oci, pull):
        load.loop(body)
    load.join()
    print(f"\nstress ({SECONDS:g} s): {dict(load.counts)}")
    assert load.failures == []
    assert sum(load.counts.values()) - load.counts["gc"] >= 40 and load.counts["gc"] >= 20, load.counts
    check_store(stress_env, load.expected)


INNER_TESTS = '''
import pytest
from pytest_hermetic import hermetic


@hermetic(image="base:1")
@pytest.mark.parametrize("i", range(10))
def test_in_base(i):
    assert open("/etc/marker").read() == "base\\n"
    open("/etc/written", "w").write(str(i))


@hermetic(image="kept:1")
@pytest.mark.parametrize("i", range(4))
def test_in_a_committed_image(i):
    assert open("/data").read() == "kept\\n"
'''

NOTEBOOK = '''
import json, os, sys
from ipython_ext.client import HelperClient

stop, fails, cells = sys.argv[1], [], 0
client = HelperClient()

def cell(**request):
    out = []
    reply = client.call("run", on_output=lambda kind, data: out.append(data), options={}, shell=None, **request)
    return reply, b"".join(out).decode()

reply, text = cell(image="base:1", name="nb", script="cat /etc/marker", commit=None)
while not os.path.exists(stop):
    reply, text = cell(image="base:1", name="nb", script=f"echo {cells} > /n; cat /etc/marker", commit=None)
    if reply["exit_code"] != 0 or text != "base\\n":
        fails.append(("kept", reply, text))
    if cells % 4 == 0:
        reply, text = cell(image="base:1", name=None, script=f"echo {cells} > /data", commit=f"nb{cells}:1")
        if reply["exit_code"] != 0 or (reply.get("committed") or {}).get("image") != f"nb{cells}:1":
            fails.append(("commit", reply, text))
    else:
        reply, text = cell(image="base:1", name=None, script="cat /etc/marker", commit=None)
        if reply["exit_code"] != 0 or text != "base\\n":
            fails.append(("ephemeral", reply, text))
    cells += 1
client.call("rm", name="nb")
client.close()
print(json.dumps({"cells": cells, "fails": fails}))
'''


def test_gc_loops_beside_an_xdist_session_and_a_notebook(stress_env, tmp_path):
    env = stress_env
    assert run_cli("run", "--commit", "kept:1", "base:1", "sh", "-c", "echo kept > /data", env=env).returncode == 0
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "test_inner.py").write_text(textwrap.dedent(INNER_TESTS))
    full_env = {**os.environ, "PYTHONPATH": ROOT, **env}
    stop = tmp_path / "stop"
    notebook = subprocess.Popen([sys.executable, "-c", NOTEBOOK, str(stop)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=full_env, cwd=str(tmp_path))
    load = Load(env, SECONDS)
    sessions: list[str] = []

    def session(i: int) -> None:
        ran = subprocess.run([sys.executable, "-m", "pytest", "-p", "hermetic", "-p", "no:cacheprovider", "-n", "2",
                              "-q", "--basetemp", str(tmp_path / f"basetemp{i}"), str(inner)],
                             capture_output=True, text=True, env=full_env, cwd=str(inner), timeout=300)
        sessions.append(ran.stdout.strip().splitlines()[-1] if ran.stdout.strip() else "")
        if ran.returncode != 0 or "14 passed" not in ran.stdout:
            with load.lock:
                load.failures.append(("pytest -n 2", ran.returncode, ran.stdout[-1500:], ran.stderr[-500:]))

    def churn(i: int) -> None:  # garbage for the gc loops to sweep meanwhile
        if load.cli("commit", "run", "--commit", f"tmp{i}:1", "base:1", "sh", "-c", f"echo {i} > /data") is not None:
            load.cli("rmi", "rmi", f"tmp{i}:1")

    try:
        load.gc_loops()
        load.loop(session)
        load.loop(churn)
        load.join()
    finally:
        stop.write_text("")
        out, err = notebook.communicate(timeout=120)
    print(f"\nstress ({SECONDS:g} s): {dict(load.counts)}, sessions: {sessions}, notebook: {out.strip()[:80]}")
    assert notebook.returncode == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["fails"] == [] and summary["cells"] >= 3, summary
    assert load.failures == []
    assert len(sessions) >= 1 and load.counts["gc"] >= 10, (sessions, load.counts)
    expected = {"base:1": (["cat", "/etc/marker"], "base\n"), "kept:1": (["cat", "/data"], "kept\n")}
    expected.update({f"nb{i}:1": (["cat", "/data"], f"{i}\n") for i in range(0, summary["cells"], 4)})
    check_store(env, expected)
