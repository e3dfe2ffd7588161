"""Pulls that fail honestly: no network, HERMETIC_OFFLINE, registries that stall, TLS against plain HTTP.

Every registry here is on loopback (a real socket that accepts and never
answers, a backlog that never accepts, the scripted registry stalling in a
blob, docker-registry); the one look at Docker Hub runs in an empty network
namespace (`unshare -n`), where it can only fail, whatever the machine's network.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_cli
from pytest_hermetic.errors import RegistryTimeout
from pytest_hermetic.images.pull import pull
from pytest_hermetic.images.registry import Registry
from pytest_hermetic.images.store import Store

from test_pull import layer_tar  # noqa: E402  (tests/images is on sys.path as the test's own folder)

ONLINE = {"HERMETIC_OFFLINE": "0"}  # the suite sets HERMETIC_OFFLINE=1; these tests say what they reach


def nothing_stored(root: str, *, partial: str | None = None) -> None:
    """No blob, layer, name or staging folder; at most the resumable download `partial` in tmp/."""
    for sub in ("blobs/sha256", "layers"):
        path = os.path.join(root, sub)
        assert not os.path.isdir(path) or os.listdir(path) == [], (sub, os.listdir(path))
    tmp = os.path.join(root, "tmp")
    left = os.listdir(tmp) if os.path.isdir(tmp) else []
    assert left in ([], [partial] if partial else []), left
    refs = os.path.join(root, "refs.json")
    assert not os.path.exists(refs) or json.load(open(refs)) == {}


def one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hermetic: error: ") and "Traceback" not in stderr, stderr
    return lines[0]


# -- no network at all -------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="an empty network namespace needs root (unshare -n)")
@pytest.mark.parametrize("args", [("pull", "ubuntu"), ("run", "nosuch:1", "true")])
def test_without_network_the_error_names_the_store_the_host_and_the_ways_out(args, tmp_path):
    store = str(tmp_path / "store")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": ROOT, "HERMETIC_STORE": store,
           "HERMETIC_STATE": os.environ["HERMETIC_STATE"]}
    start = time.monotonic()
    result = subprocess.run(["unshare", "-n", sys.executable, "-m", "pytest_hermetic", *args], capture_output=True,
                            text=True, env=env, timeout=60, cwd="/")
    took = time.monotonic() - start
    assert result.returncode == 125, result
    line = one_error_line(result.stderr)
    image = "ubuntu:latest" if args[0] == "pull" else "nosuch:1"
    assert f"image '{image}' is not in the local store ({store})" in line
    assert "cannot reach registry docker.io at registry-1.docker.io: DNS lookup failed (" in line
    assert "HERMETIC_REGISTRY_MIRRORS=docker.io=HOST:PORT" in line and "`hermetic import`" in line
    assert "HERMETIC_OFFLINE=1 to never try" in line
    assert "HERMETIC_INSECURE_REGISTRIES" not in line  # not a TLS-against-plain-HTTP failure
    assert took < 10, took
    nothing_stored(store)


def test_dns_failure_words_for_docker_hub():
    # A real resolver error (a numeric-only lookup of a name: no query leaves the machine).
    with pytest.raises(socket.gaierror) as raised:
        socket.getaddrinfo("registry-1.docker.io", 443, flags=socket.AI_NUMERICHOST)
    error = Registry("docker.io").failure(raised.value, "GET /v2/", "registry-1.docker.io", ready=False)
    assert str(error).startswith("cannot reach registry docker.io at registry-1.docker.io: DNS lookup failed (")
    assert not error.plain_http


def test_offline_fails_at_once_without_a_connection(tmp_path):
    """HERMETIC_OFFLINE=1: not one socket is opened or name looked up (Python's audit events say so)."""
    store = str(tmp_path / "store")
    code = ("import sys, time\n"
            "events = []\n"
            "sys.addaudithook(lambda e, a: events.append(e) if e.startswith('socket.') else None)\n"
            "from pytest_hermetic.images.store import Store\n"
            "from pytest_hermetic.images.pull import pull\n"
            "start = time.monotonic()\n"
            "try:\n"
            "    pull(Store(sys.argv[1]), 'ubuntu', quiet=True)\n"
            "except Exception as exc:\n"
            "    print(type(exc).__name__, exc)\n"
            "print(events, round(time.monotonic() - start, 3))\n")
    result = subprocess.run([sys.executable, "-c", code, store], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": ROOT, "HERMETIC_OFFLINE": "1"})
    message, events = result.stdout.splitlines()
    assert message.startswith(f"ImageNotFound image 'ubuntu:latest' is not in the local store ({store}) and "
                              "HERMETIC_OFFLINE is set, so registry docker.io (registry-1.docker.io) is not tried")
    assert "ways out: a loopback mirror (HERMETIC_REGISTRY_MIRRORS=docker.io=127.0.0.1:PORT), `hermetic import`" in message
    assert events.startswith("[] "), events  # no socket.* event at all
    assert float(events.split()[-1]) < 0.5
    cli = run_cli("run", "nosuch:1", "true", env={"HERMETIC_STORE": store, "HERMETIC_OFFLINE": "1"})
    assert cli.returncode == 125 and "HERMETIC_OFFLINE is set" in one_error_line(cli.stderr)


def test_refused_and_plain_http_hints(registry, busybox_remote, tmp_path):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # bound once, never listening: refused
    refused = run_cli("pull", f"127.0.0.1:{port}/x:1", env={"HERMETIC_STORE": str(tmp_path / "s1")})
    line = one_error_line(refused.stderr)
    assert f"cannot reach registry 127.0.0.1:{port}: connection refused; image '127.0.0.1:{port}/x:1' is not in" in line
    assert "HERMETIC_INSECURE_REGISTRIES" not in line
    # `127.1` is 127.0.0.1 to the resolver (no lookup) but not a loopback name to the engine: HTTPS only,
    # against docker-registry's plain HTTP.  The hint appears, and following it works.
    ref = busybox_remote.replace("127.0.0.1:", "127.1:")
    env = {**ONLINE, "HERMETIC_STORE": str(tmp_path / "s2")}
    tls = run_cli("pull", ref, env=env)
    line = one_error_line(tls.stderr)
    assert f"cannot reach registry {ref.split('/')[0]}: TLS error (" in line
    assert "it looks like plain HTTP: if so, add it to HERMETIC_INSECURE_REGISTRIES" in line
    fixed = run_cli("pull", "-q", ref, env={**env, "HERMETIC_INSECURE_REGISTRIES": ref.split("/")[0]})
    assert fixed.returncode == 0 and fixed.stdout.startswith(f"{ref} sha256:"), fixed.stderr


def test_a_mirror_that_is_down_is_named(tmp_path):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    env = {"HERMETIC_STORE": str(tmp_path / "store"), "HERMETIC_OFFLINE": "1",
           "HERMETIC_REGISTRY_MIRRORS": f"docker.io=127.0.0.1:{port}"}
    line = one_error_line(run_cli("pull", "busybox:1", env=env).stderr)
    assert line.startswith(f"hermetic: error: cannot reach mirror 127.0.0.1:{port}: connection refused; HERMETIC_OFFLINE is "
                           "set, so registry docker.io (registry-1.docker.io) is not tried; image 'busybox:1' is not in")


# -- registries that stall -------------------------------------------------------------------


@pytest.fixture
def silent_registry():
    """A socket on 127.0.0.1 that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted = []

    def accept() -> None:
        try:
            while True:
                accepted.append(server.accept()[0])
        except OSError:
            pass

    import threading

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    server.shutdown(socket.SHUT_RDWR)
    server.close()
    for conn in accepted:
        conn.close()


def test_silent_registry_gives_up_within_the_timeout(silent_registry, tmp_path):
    store = str(tmp_path / "store")
    env = {"HERMETIC_STORE": store, "HERMETIC_REGISTRY_TIMEOUT": "1"}
    start = time.monotonic()
    quiet = run_cli("pull", "-q", f"{silent_registry}/app:1", env=env)
    took = time.monotonic() - start
    line = one_error_line(quiet.stderr)
    assert quiet.returncode == 125 and 1 <= took < 4, took
    assert f"registry {silent_registry} did not answer within 1 s (GET /v2/); set HERMETIC_REGISTRY_TIMEOUT=" in line
    assert f"image '{silent_registry}/app:1' is not in the local store ({store})" in line
    nothing_stored(store)
    # Without -q the wait is said first: "waiting for HOST" once a second has passed without a byte.
    loud = run_cli("pull", f"{silent_registry}/app:1", env={**env, "HERMETIC_REGISTRY_TIMEOUT": "2.5"})
    first, second = loud.stderr.splitlines()
    assert first == f"hermetic: waiting for {silent_registry}: no answer for 1 s; gives up after 2.5 s (HERMETIC_REGISTRY_TIMEOUT)"
    assert second.startswith(f"hermetic: error: registry {silent_registry} did not answer within 2.5 s")


def test_a_registry_that_never_accepts_hits_the_connect_timeout(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)  # never accepted: once its queue is full, the kernel drops further SYNs
    port = server.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.2)
        start = time.monotonic()
        result = run_cli("pull", "-q", f"127.0.0.1:{port}/app:1",
                         env={"HERMETIC_STORE": str(tmp_path / "store"), "HERMETIC_REGISTRY_TIMEOUT": "1,20"})
        took = time.monotonic() - start
    finally:
        for filler in fillers:
            filler.close()
        server.close()
    line = one_error_line(result.stderr)
    assert f"registry 127.0.0.1:{port}: no connection within 1 s (GET /v2/)" in line and took < 4, (took, line)


def test_a_blob_that_stalls_half_way_stores_nothing_and_resumes(scripted_registry, tmp_path):
    blob = gzip.compress(layer_tar({"big": os.urandom(400_000)}), compresslevel=1)
    manifest = scripted_registry.add_image("stall/img:1", [blob])
    digest = manifest["layers"][0]["digest"]
    scripted_registry.stall_after[digest] = 150_000  # headers, 150 kB, then nothing
    root = str(tmp_path / "store")
    ref = f"{scripted_registry.host}/stall/img:1"
    start = time.monotonic()
    result = run_cli("pull", "-q", ref, env={"HERMETIC_STORE": root, "HERMETIC_REGISTRY_TIMEOUT": "1"})
    took = time.monotonic() - start
    line = one_error_line(result.stderr)
    assert result.returncode == 125 and took < 5, took
    found = re.search(f"registry {scripted_registry.host} did not answer within 1 s during blob {digest} "
                      rf"\((\d+) of {len(blob)} bytes came\); nothing was stored, pull again to resume", line)
    assert found and 100_000 <= int(found[1]) <= 150_000, line  # what the last slice held before the stall may be lost
    assert [d for d, _ in scripted_registry.ranges].count(digest) == 1  # given up, not retried
    nothing_stored(root, partial=digest[7:] + ".partial")
    assert os.path.getsize(os.path.join(root, "tmp", digest[7:] + ".partial")) == int(found[1])
    del scripted_registry.stall_after[digest]
    image = pull(Store(root), ref, quiet=True)
    assert len(image.layers) == 1 and scripted_registry.ranges[-1] == (digest, f"bytes={found[1]}-")


def test_waiting_is_reported_to_the_callback(scripted_registry, tmp_path, monkeypatch):
    blob = gzip.compress(layer_tar({"data": os.urandom(200_000)}), compresslevel=1)
    manifest = scripted_registry.add_image("wait/img:1", [blob])
    scripted_registry.stall_after[manifest["layers"][0]["digest"]] = 50_000
    monkeypatch.setenv("HERMETIC_REGISTRY_TIMEOUT", "1.8")
    calls: list[tuple[str, float]] = []
    with pytest.raises(RegistryTimeout, match="did not answer within 1.8 s during blob"):
        pull(Store(str(tmp_path / "store")), f"{scripted_registry.host}/wait/img:1",
             progress=lambda *a: None, waiting=lambda host, seconds: calls.append((host, seconds)))
    assert calls and {host for host, _ in calls} == {scripted_registry.host}
    assert all(1.0 <= seconds < 1.8 for _, seconds in calls), calls


def test_a_bad_timeout_setting_is_one_line(tmp_path):
    result = run_cli("pull", "127.0.0.1:1/x:1", env={"HERMETIC_STORE": str(tmp_path / "s"), "HERMETIC_REGISTRY_TIMEOUT": "soon"})
    assert one_error_line(result.stderr) == ("hermetic: error: HERMETIC_REGISTRY_TIMEOUT='soon': use SECONDS, or CONNECT,READ "
                                             "seconds, each more than 0 (default 10,30)")


def test_the_cell_magic_and_the_services_fixture_say_the_same(ipython_shell, silent_registry, pytester, monkeypatch):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(Exception) as raised:
        ipython_shell.run_cell_magic("container", f"127.0.0.1:{port}/nosuch:1", "echo hi\n")
    assert type(raised.value).__name__ == "RegistryUnreachable"
    assert str(raised.value).startswith(f"cannot reach registry 127.0.0.1:{port}: connection refused; image "
                                        f"'127.0.0.1:{port}/nosuch:1' is not in the local store (")
    assert "ways out: a mirror" in str(raised.value)
    pytester.makepyfile(test_stalled=f"""
        def test_service(containers):
            containers.run("{silent_registry}/postgres:16")
    """)
    monkeypatch.setenv("HERMETIC_REGISTRY_TIMEOUT", "1")
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*containers.run('{silent_registry}/postgres:16'): registry {silent_registry} did not "
                                 "answer within 1 s (GET /v2/)*; or pull it ahead (`hermetic pull *"])


def test_the_terminal_display_says_it_is_waiting(silent_registry, tmp_path):
    import pty

    master, slave = pty.openpty()
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": ROOT, "TERM": "xterm", "HERMETIC_STORE": str(tmp_path / "store"),
           "HERMETIC_REGISTRY_TIMEOUT": "2.5"}
    proc = subprocess.Popen([sys.executable, "-m", "pytest_hermetic", "pull", f"{silent_registry}/app:1"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave, env=env, cwd="/")
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the other end closed
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(10) == 125
    text = out.decode()
    assert f"pulling {silent_registry}/app:1" in text
    assert f"waiting for {silent_registry}: no answer for 1 s" in text and f"no answer for 2 s" in text, text
    assert f"registry {silent_registry} did not answer within 2.5 s" in text


def test_a_slow_but_live_registry_is_not_given_up(scripted_registry, tmp_path):
    """The read timeout is for silence, not for the whole download: 3 s of trickle under a 1 s timeout."""
    blob = gzip.compress(layer_tar({"data": os.urandom(300_000)}), compresslevel=1)
    manifest = scripted_registry.add_image("slow/img:1", [blob])
    scripted_registry.trickle[manifest["layers"][0]["digest"]] = (10_000, 0.1)  # 100 kB/s
    root = str(tmp_path / "store")
    start = time.monotonic()
    result = run_cli("pull", f"{scripted_registry.host}/slow/img:1", env={"HERMETIC_STORE": root, "HERMETIC_REGISTRY_TIMEOUT": "1"})
    took = time.monotonic() - start
    assert result.returncode == 0 and took > 2.5, (took, result.stderr)
    assert "waiting for" not in result.stderr and result.stderr.startswith("hermetic: pulled "), result.stderr


SILENT_DNS = """
import socket, subprocess, sys, time
dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dns.bind(("127.0.0.1", 53))  # takes the queries, never answers
start = time.monotonic()
ran = subprocess.run([sys.executable, "-m", "pytest_hermetic", "pull", "-q", "ubuntu"], capture_output=True, text=True)
print(ran.returncode, round(time.monotonic() - start, 2))
print(ran.stderr, end="")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="a network and mount namespace of its own needs root (unshare -n -m)")
def test_a_resolver_that_never_answers_is_bounded_by_the_connect_timeout(tmp_path):
    """In a namespace of its own: loopback up, /etc/resolv.conf naming 127.0.0.1, where a socket takes the
    queries and never answers (the resolver's own timeouts: 5 s, 3 attempts), /etc/nsswitch.conf `files dns`."""
    (tmp_path / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:5 attempts:3\n")
    (tmp_path / "nsswitch.conf").write_text("hosts: files dns\n")
    script = (f"ip link set lo up && mount --bind {tmp_path}/resolv.conf /etc/resolv.conf && "
              f"mount --bind {tmp_path}/nsswitch.conf /etc/nsswitch.conf && exec {sys.executable} -c '{SILENT_DNS}'")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": ROOT, "HERMETIC_STORE": str(tmp_path / "store"),
           "HERMETIC_REGISTRY_TIMEOUT": "1.5,5"}
    result = subprocess.run(["unshare", "-n", "-m", "--propagation", "private", "sh", "-c", script],
                            capture_output=True, text=True, env=env, timeout=60, cwd="/")
    status, took = result.stdout.splitlines()[0].split()
    line = one_error_line(result.stdout.split("\n", 1)[1])
    assert status == "125" and float(took) < 4, (took, line)
    assert line.startswith("hermetic: error: cannot reach registry docker.io at registry-1.docker.io: DNS lookup of "
                           "registry-1.docker.io did not answer within 1.5 s; set HERMETIC_REGISTRY_TIMEOUT="), line
    assert "image 'ubuntu:latest' is not in the local store" in line
