"""`hermetic run`'s Docker flags, each for real through the command: -p (udp,
IPv6 loopback, a free host port, bridged), --entrypoint, --env-file,
--read-only with --tmpfs and volumes, --tmpfs's size, --cap-drop and
--cap-add, --platform, the Docker/Podman aliases, and one line for bad input;
as root and, where they apply, as an unprivileged user."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from conftest import run_cli

UDP_ECHO = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 9999)); "
            "print('ready', flush=True)\n"
            "while True:\n    data, peer = s.recvfrom(100); s.sendto(b'echo:' + data, peer)")


@pytest.fixture
def names():
    """Containers a test starts by name; `rm -f` of each afterwards, whatever happened."""
    started: list[str] = []
    yield started
    for name in started:
        run_cli("rm", "-f", name)


def _wait_log(name: str, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in run_cli("logs", name).stdout:
        assert time.monotonic() < deadline, run_cli("logs", name)
        time.sleep(0.05)


def _udp_exchange(address: tuple, payload: bytes, family: int = socket.AF_INET, tries: int = 20) -> bytes:
    """Send `payload` until an answer comes (the first datagrams may race the server's bind)."""
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        for _ in range(tries):
            sock.sendto(payload, address)
            try:
                return sock.recvfrom(100)[0]
            except socket.timeout:
                continue
    raise AssertionError(f"no answer from {address}")


def _host_port(name: str, spec: str) -> int:
    ran = run_cli("port", name, spec)
    assert ran.returncode == 0, ran
    return int(ran.stdout.strip().rsplit(":", 1)[1])


# -- -p ---------------------------------------------------------------------------------


@pytest.mark.parametrize("net", [(), ("--net",)], ids=["loopback-only", "bridged"])
def test_udp_echo_through_a_free_host_port(names, net):
    name = f"udp{len(net)}"
    names.append(name)
    ran = run_cli("run", "-d", "--name", name, *net, "-p", "9999/udp", "host", "python3", "-c", UDP_ECHO)
    assert ran.returncode == 0, ran
    _wait_log(name, "ready")
    port = _host_port(name, "9999/udp")
    assert port > 0
    assert _udp_exchange(("127.0.0.1", port), b"one") == b"echo:one"
    # Two clients at once each get their own answers.
    assert _udp_exchange(("127.0.0.1", port), b"two") == b"echo:two"
    ps = run_cli("ps").stdout
    assert f"127.0.0.1:{port}->9999/udp" in ps, ps
    info = json.loads(run_cli("inspect", name).stdout)[0]
    assert info["ports"] == [{"host_ip": "127.0.0.1", "host_port": port, "container_port": 9999, "protocol": "udp"}]
    assert run_cli("port", name).stdout == f"9999/udp -> 127.0.0.1:{port}\n"


def test_udp_through_a_named_network(names):
    network = f"rfnet{os.getpid()}"
    assert run_cli("network", "create", network, "--subnet", "10.89.7.0/24").returncode == 0
    try:
        names.append("udpnamed")
        ran = run_cli("run", "-d", "--name", "udpnamed", "--net", network, "-p", "127.0.0.1::9999/udp", "host",
                      "python3", "-c", UDP_ECHO)
        assert ran.returncode == 0, ran
        _wait_log("udpnamed", "ready")
        info = json.loads(run_cli("inspect", "udpnamed").stdout)[0]
        assert info["network"] == network and info["address"].startswith("10.89.7."), info
        assert _udp_exchange(("127.0.0.1", _host_port("udpnamed", "9999/udp")), b"named") == b"echo:named"
    finally:
        run_cli("rm", "-f", "udpnamed")
        assert run_cli("network", "rm", network).returncode == 0


def test_cell_options(ipython_shell, capsys):
    """`%%container` takes --read-only, --tmpfs, --cap-drop (and --cap-add) as the command line does."""
    ipython_shell.run_cell_magic("container", "host --read-only --tmpfs /scratch:size=1m --cap-drop ALL",
                                 "touch /scratch/ok && echo tmpfs-ok; touch /etc/no 2>/dev/null || echo ro-ok; "
                                 "grep ^CapEff /proc/self/status")
    out = capsys.readouterr().out
    assert out == "tmpfs-ok\nro-ok\nCapEff:\t0000000000000000\n", out


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="this host has no IPv6 loopback (::1)")
def test_publish_on_the_ipv6_loopback(names):
    names.append("six")
    ran = run_cli("run", "-d", "--name", "six", "-p", "[::1]::8000", "-p", "[::1]::9999/udp", "host", "sh", "-c",
                  f"python3 -c \"{UDP_ECHO}\" & exec python3 -m http.server --bind 127.0.0.1 8000")
    assert ran.returncode == 0, ran
    port = _host_port("six", "8000")
    assert run_cli("port", "six", "8000").stdout == f"[::1]:{port}\n"
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("::1", port), timeout=5) as sock:
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                assert sock.recv(100).startswith(b"HTTP/1.0 200"), "not a 200"
            break
        except (OSError, AssertionError):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert _udp_exchange(("::1", _host_port("six", "9999/udp")), b"six", socket.AF_INET6) == b"echo:six"
    with pytest.raises(OSError):  # on ::1 only: not on the IPv4 loopback
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_foreground_runs_free_port_shows_in_ps_and_port():
    import subprocess
    import sys

    from conftest import ROOT

    proc = subprocess.Popen([sys.executable, "-m", "pytest_hermetic", "run", "--name", "fgport", "-p", "9999/udp",
                             "host", "python3", "-c", UDP_ECHO], env={**os.environ, "PYTHONPATH": ROOT},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        deadline = time.monotonic() + 10
        while "9999/udp" not in (shown := run_cli("port", "fgport").stdout):
            assert time.monotonic() < deadline, shown
            time.sleep(0.05)
        port = int(shown.strip().rsplit(":", 1)[1])
        assert _udp_exchange(("127.0.0.1", port), b"fg") == b"echo:fg"
    finally:
        run_cli("rm", "-f", "fgport")  # its `hermetic run` then ends and cleans up (a SIGKILL to it would not)
        try:
            proc.wait(timeout=30)
        finally:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()


def test_a_taken_host_port_is_one_line():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        ran = run_cli("run", "-p", f"{port}:53/udp", "host", "true")
    assert ran.returncode == 125 and ran.stderr.count("\n") == 1, ran
    assert f"127.0.0.1:{port}:53/udp: cannot listen" in ran.stderr and "Address already in use" in ran.stderr


def test_rootless_publish_of_an_ipv6_address_with_slirp4netns_is_refused_in_one_line(test_user):
    ran = run_cli("run", "--net", "-p", "[::1]::8000", "host", "true", user=test_user)
    assert ran.returncode == 125 and ran.stderr.count("\n") == 1, ran
    assert "slirp4netns, which takes IPv4 host addresses only" in ran.stderr, ran.stderr


def test_rootless_publish_through_slirp4netns(test_user):
    """As rootless Podman: with --net, slirp4netns listens on the host for the container (TCP and UDP)."""
    from pytest_hermetic.runtime.usermode_net import helper_path

    if helper_path() is None:
        pytest.skip("slirp4netns is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        tcp_port = probe.getsockname()[1]
    try:
        ran = run_cli("run", "-d", "--name", "slirped", "--net", "-p", f"{tcp_port}:8000", "-p", "9999/udp", "host",
                      "sh", "-c", f"python3 -m http.server 8000 & exec python3 -c \"{UDP_ECHO}\"", user=test_user)
        assert ran.returncode == 0, ran
        shown = run_cli("port", "slirped", user=test_user).stdout
        assert f"8000/tcp -> 127.0.0.1:{tcp_port}\n" in shown, shown
        udp_port = int(shown.split("9999/udp -> 127.0.0.1:")[1].split()[0])
        assert _udp_exchange(("127.0.0.1", udp_port), b"slirp") == b"echo:slirp"
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", tcp_port), timeout=5) as sock:
                    sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    assert sock.recv(100).startswith(b"HTTP/1.0 200")
                break
            except (OSError, AssertionError):
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        run_cli("rm", "-f", "slirped", user=test_user)
    with pytest.raises(OSError):  # slirp4netns went with the container, and its listeners with it
        socket.create_connection(("127.0.0.1", tcp_port), timeout=2).close()


# -- --entrypoint, --env-file ------------------------------------------------------------


@pytest.fixture(scope="module")
def entry_image(busybox_image):
    """busybox with ENTRYPOINT ["echo", "entry"] and CMD ["from-cmd"], under a name of this
    process's own: under xdist each worker running this module's tests makes (and at its end
    removes) its own, and one worker's removal must not take another's away mid-test."""
    from pytest_hermetic.images.reference import parse
    from pytest_hermetic.images.store import Store

    store = Store()
    base = store.resolve(busybox_image)
    name = f"busybox:entry-{os.getpid()}"
    store.put_image(parse(name).name, base.layers,
                    {**base.config, "Entrypoint": ["echo", "entry"], "Cmd": ["from-cmd"]})
    yield name
    store.remove(name)


def test_entrypoint_override_and_clear(entry_image):
    assert run_cli("run", entry_image).stdout == "entry from-cmd\n"
    # As Docker: a command replaces CMD and goes to the ENTRYPOINT as its arguments.
    assert run_cli("run", entry_image, "given").stdout == "entry given\n"
    # As Docker: --entrypoint drops the image's CMD too; the command becomes its arguments.
    assert run_cli("run", "--entrypoint", "echo", entry_image).stdout == "\n"
    assert run_cli("run", "--entrypoint", "echo", entry_image, "a", "b").stdout == "a b\n"
    assert run_cli("run", "--entrypoint", "", entry_image, "echo", "cleared").stdout == "cleared\n"
    ran = run_cli("run", "--entrypoint", "", entry_image)
    assert ran.returncode == 125 and "nothing to run; give a command" in ran.stderr, ran
    ran = run_cli("run", "--entrypoint", "/nonexistent", entry_image)
    assert ran.returncode == 127 and "/nonexistent: command not found" in ran.stderr, ran


def test_a_service_command_goes_to_the_entrypoint(entry_image, containers):
    """As testcontainers (through Docker): postgres's docker-entrypoint.sh must run before the command."""
    service = containers.run(entry_image, ["given", "words"])
    assert service.wait(timeout=30)[0] == 0
    assert service.logs() == "entry given words\n"


def test_env_file(tmp_path):
    env_file = tmp_path / "app.env"
    env_file.write_text("\ufeff# a comment\nA=1\n\n   B=two words \"quoted\" \nFROM_CALLER\nNOT_SET_ANYWHERE\nC=\r\n")
    other = tmp_path / "more.env"
    other.write_text("A=from-second-file\nD=d\n")
    ran = run_cli("run", "--env-file", str(env_file), "--env-file", str(other), "-e", "D=from-e", "host", "sh", "-c",
                  'echo "$A|$B|$FROM_CALLER|${NOT_SET_ANYWHERE-unset}|$C|$D"', env={"FROM_CALLER": "yes"})
    assert ran.stdout == 'from-second-file|two words "quoted" |yes|unset||from-e\n', ran


@pytest.mark.parametrize("text, words", [
    ("A=1\nbad key=2\n", "line 2: 'bad key' is not a variable name"),
    ("A=1\n# c\n=value\n", "line 3: no variable name before '='"),
    (b"A=1\nB=\xff\n", "line 2: not UTF-8 text"),
])
def test_a_bad_env_file_names_its_line(tmp_path, text, words):
    env_file = tmp_path / "bad.env"
    (env_file.write_bytes if isinstance(text, bytes) else env_file.write_text)(text)
    ran = run_cli("run", "--env-file", str(env_file), "host", "true")
    assert ran.returncode == 125 and ran.stderr.count("\n") == 1, ran
    assert f"--env-file {env_file}, {words}" in ran.stderr


# -- --read-only, --tmpfs ----------------------------------------------------------------

READ_ONLY_CHECK = ("for f in /etc/x /x /tmp/x /data/x /vol/x /dev/shm/x /dev/x; do "
                   "if touch $f 2>/dev/null; then echo W $f; else echo R $f; fi; done")


def _as(request, as_user: bool) -> tuple:  # noqa: ANN001
    """(user, image): root with busybox, or the test user with `host` (its own store has no busybox)."""
    if not as_user:
        return None, request.getfixturevalue("busybox_image")
    return request.getfixturevalue("test_user"), "host"


@pytest.mark.parametrize("as_user", [False, True], ids=["root", "rootless"])
def test_read_only_root_with_tmpfs_and_a_volume(tmp_path, request, as_user):
    user, busybox_image = _as(request, as_user)
    volume = tmp_path / "vol"
    if user:
        import pwd

        entry = pwd.getpwnam(user)
        volume = Path(os.path.dirname(os.environ["HERMETIC_STATE"])) / f"home-{entry.pw_uid}" / "read-only-vol"
        volume.mkdir(parents=True, exist_ok=True)
        os.chown(volume, entry.pw_uid, entry.pw_gid)
    else:
        volume.mkdir()
    ran = run_cli("run", "--read-only", "--tmpfs", "/data", "-v", f"{volume}:/vol", busybox_image, "sh", "-c",
                  READ_ONLY_CHECK, user=user)
    assert ran.returncode == 0, ran
    assert ran.stdout.split("\n")[:-1] == ["R /etc/x", "R /x", "R /tmp/x", "W /data/x", "W /vol/x", "W /dev/shm/x",
                                           "W /dev/x"], ran.stdout
    assert (volume / "x").exists()
    # Without --read-only the same root is writable (and /tmp is the engine's tmpfs).
    ran = run_cli("run", busybox_image, "sh", "-c", READ_ONLY_CHECK, user=user)
    assert ran.stdout.split("\n")[:3] == ["W /etc/x", "W /x", "W /tmp/x"], ran.stdout
    # A -w folder the image lacks is made first, as Docker makes it, and stays read-only.
    ran = run_cli("run", "--read-only", "-w", "/new/work", busybox_image, "sh", "-c", "pwd; touch x || echo ro",
                  user=user)
    assert ran.stdout == "/new/work\nro\n", ran
    # --tmpfs /tmp makes /tmp writable again under --read-only, as in Docker.
    ran = run_cli("run", "--read-only", "--tmpfs", "/tmp", busybox_image, "sh", "-c", "touch /tmp/x && echo ok",
                  user=user)
    assert ran.stdout == "ok\n", ran


def test_tmpfs_size_mode_and_flags(busybox_image):
    script = ("dd if=/dev/zero of=/small/fill bs=1024 count=4096 2>/dev/null; du -k /small/fill | cut -f1; "
              "stat -c %a /small /big; grep -E ' /(small|big) ' /proc/self/mountinfo | cut -d' ' -f5,6; "
              "cp /bin/busybox /small/true 2>/dev/null; /small/true 2>/dev/null && echo small-exec || echo small-noexec; "
              "cp /bin/busybox /big/true && /big/true && echo big-exec")
    ran = run_cli("run", "--tmpfs", "/small:size=1m", "--tmpfs", "/big:mode=700,exec,size=8M", busybox_image,
                  "sh", "-c", script)
    assert ran.returncode == 0, ran
    lines = ran.stdout.split("\n")
    assert int(lines[0]) <= 1024, ran.stdout  # the write stopped at the size
    assert lines[1:3] == ["1777", "700"]
    assert lines[3].split()[1].split(",")[:4] == ["rw", "nosuid", "nodev", "noexec"], lines[3]
    assert "noexec" not in lines[4] and {"nosuid", "nodev"} <= set(lines[4].split()[1].split(",")), lines[4]
    assert lines[5:7] == ["small-noexec", "big-exec"], ran.stdout


# -- --cap-drop, --cap-add --------------------------------------------------------------


def _cap_eff(stdout: str) -> int:
    return next(int(line.split()[1], 16) for line in stdout.splitlines() if line.startswith("CapEff:"))


@pytest.mark.parametrize("as_user", [False, True], ids=["root", "rootless"])
def test_cap_drop_all_root_in_the_container_cannot_chown(request, as_user):
    user, busybox_image = _as(request, as_user)
    script = "grep ^Cap /proc/self/status; touch /tmp/f; chown 1:1 /tmp/f 2>&1 && echo CHOWNED; id -u"
    ran = run_cli("run", "--cap-drop", "ALL", busybox_image, "sh", "-c", script, user=user)
    assert ran.returncode == 0, ran
    assert _cap_eff(ran.stdout) == 0 and "CapBnd:\t0000000000000000" in ran.stdout
    assert "Operation not permitted" in ran.stdout and "CHOWNED" not in ran.stdout
    assert ran.stdout.endswith("\n0\n")  # still root: the capability, not the user, is what is missing
    # The default set can; dropping just CHOWN (spelt CAP_chown) is enough to lose it.
    assert "CHOWNED" in run_cli("run", busybox_image, "sh", "-c", script, user=user).stdout
    ran = run_cli("run", "--cap-drop", "CAP_chown", busybox_image, "sh", "-c", script, user=user)
    assert "CHOWNED" not in ran.stdout and _cap_eff(ran.stdout) & 1 == 0, ran


@pytest.mark.parametrize("as_user", [False, True], ids=["root", "rootless"])
def test_cap_drop_all_with_another_user(request, as_user):
    """The user switch comes before the capabilities shrink (as runc's): CAP_SETUID may be among those dropped."""
    user, image = _as(request, as_user)
    ran = run_cli("run", "--cap-drop", "ALL", "-u", "1000:1000", image, "sh", "-c",
                  "id -u; id -g; grep -E '^Cap(Eff|Bnd)' /proc/self/status", user=user)
    assert ran.returncode == 0, ran
    assert ran.stdout == "1000\n1000\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000000\n", ran.stdout


@pytest.mark.parametrize("as_user", [False, True], ids=["root", "rootless"])
def test_cap_add_net_admin_changes_its_own_interface_only(request, as_user):
    user, busybox_image = _as(request, as_user)
    with open("/sys/class/net/lo/mtu") as f:
        host_mtu = f.read()
    script = "ip link set lo mtu 1300 && cat /sys/class/net/lo/mtu; ip -o link show | cut -d: -f2 | tr -d ' '"
    assert "Operation not permitted" in run_cli("run", busybox_image, "sh", "-c", script, user=user).stderr
    ran = run_cli("run", "--cap-add", "net_admin", busybox_image, "sh", "-c", script, user=user)
    assert ran.returncode == 0, ran
    assert ran.stdout.split() == ["1300", "lo"]  # its own loopback, the only interface it sees
    with open("/sys/class/net/lo/mtu") as f:
        assert f.read() == host_mtu


def test_cap_add_all_and_drop_combine_as_in_docker(busybox_image):
    from pytest_hermetic.runtime.capabilities import ALL_CAPS, DEFAULT_CAPS, last_cap, permitted

    every = (1 << (last_cap() + 1)) - 1 & permitted()  # all the engine has
    ran = run_cli("run", "--cap-add", "ALL", "--cap-drop", "SYS_ADMIN", busybox_image, "grep", "^CapEff",
                  "/proc/self/status")
    assert _cap_eff(ran.stdout) == every & ~(1 << ALL_CAPS["CAP_SYS_ADMIN"]), ran
    ran = run_cli("run", "--cap-drop", "ALL", "--cap-add", "KILL", busybox_image, "grep", "^CapEff", "/proc/self/status")
    assert _cap_eff(ran.stdout) == 1 << DEFAULT_CAPS["CAP_KILL"], ran


# -- --stop-signal, --stop-timeout ---------------------------------------------------------


def test_stop_signal_and_stop_timeout(names):
    names += ["stopint", "holdout"]
    ran = run_cli("run", "-d", "--name", "stopint", "--stop-signal", "int", "host", "sh", "-c",
                  'trap "echo got-int; exit 3" INT; echo up; while :; do sleep 0.1; done')
    assert ran.returncode == 0, ran
    _wait_log("stopint", "up")
    assert run_cli("stop", "stopint").returncode == 0
    assert run_cli("wait", "stopint").stdout == "3\n" and "got-int" in run_cli("logs", "stopint").stdout
    assert json.loads(run_cli("inspect", "stopint").stdout)[0]["spec"]["stop_signal"] == "SIGINT"
    # A command that ignores the signal is killed after --stop-timeout, not 10 s.
    ran = run_cli("run", "-d", "--name", "holdout", "--stop-timeout", "0.5", "host", "sh", "-c",
                  'trap "" TERM; echo up; while :; do sleep 0.1; done')
    _wait_log("holdout", "up")
    began = time.monotonic()
    ran = run_cli("stop", "holdout")
    assert ran.returncode == 0 and "did not stop within 0.5 s of SIGTERM; killed" in ran.stderr, ran
    assert time.monotonic() - began < 5


# -- the marker --------------------------------------------------------------------------


def test_the_marker_takes_read_only_tmpfs_and_capabilities(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    (tmp_path / "test_flags.py").write_text(
        "import os, subprocess\n"
        "from pytest_hermetic import hermetic\n\n"
        "@hermetic(read_only=True, tmpfs=['/scratch:size=1m'], cap_drop='ALL')\n"
        "def test_locked_down(tmp_path):\n"
        "    open('/scratch/ok', 'w').close()\n"
        "    try:\n"
        "        open('/etc/marker', 'w')\n"
        "        raise AssertionError('the root was writable')\n"
        "    except OSError as exc:\n"
        "        assert exc.errno == 30  # EROFS\n"
        "    assert 'CapEff:\\t0000000000000000' in open('/proc/self/status').read()\n"
        "    (tmp_path / 'still').write_text('pytest tmp_path works')\n\n"
        "@hermetic(cap_add=['NET_ADMIN'])\n"
        "def test_own_interface():\n"
        "    subprocess.run(['ip', 'link', 'set', 'lo', 'mtu', '1300'], check=True)\n")
    ran = subprocess.run([sys.executable, "-m", "pytest", "-p", "hermetic", "-p", "no:cacheprovider", "-q",
                          "test_flags.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert ran.returncode == 0 and "2 passed" in ran.stdout, ran.stdout + ran.stderr


# -- --platform, aliases, bad input ------------------------------------------------------


def test_platform_this_machine_runs_and_one_it_cannot(busybox_image):
    from pytest_hermetic.images import platforms

    here = platforms.format(platforms.host())
    ran = run_cli("run", "--platform", here, busybox_image, "echo", "ok")
    assert ran.stdout == "ok\n", ran
    foreign = "linux/s390x" if platforms.host()["architecture"] != "s390x" else "linux/amd64"
    if platforms.cannot_run(platforms.parse(foreign)) is None:
        pytest.skip(f"this machine can run {foreign} (a binfmt_misc emulator)")
    ran = run_cli("run", "--platform", foreign, busybox_image, "true")
    assert ran.returncode == 125 and ran.stderr.count("\n") == 1, ran
    assert f"this {here} machine cannot run {foreign} programs" in ran.stderr and "qemu-user-static" in ran.stderr
    ran = run_cli("run", "--platform", "linux/386" if here == "linux/amd64" else "linux/arm", busybox_image, "true")
    # Runnable, but not this image's (and offline, or unknown to the registry, not to be pulled).
    assert ran.returncode == 125 and "busybox:test in the local store is a " in ran.stderr, ran


def test_platform_pulls_that_platforms_image(registry, busybox_rootfs, tmp_path):
    """A two-platform index (amd64, and 386 which an amd64 kernel runs natively):
    `run` takes the machine's; `run --platform linux/386` finds the local
    image of another platform and pulls the 386 one, as `docker run --platform` does."""
    import hashlib
    import shutil

    from hermetic_testsupport.registry import oci_image, run, skopeo_copy
    from pytest_hermetic.images import platforms
    from pytest_hermetic.images.registry import OCI_INDEX, Registry

    if platforms.host()["architecture"] != "amd64":
        pytest.skip("the second platform here is 386, which only an amd64 machine runs natively")
    layout, entries = str(tmp_path / "multi"), []
    for arch in ("amd64", "386"):
        rootfs = tmp_path / f"root-{arch}"
        shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
        (rootfs / "etc" / "arch").write_text(arch)  # (the same busybox in both: only the config's platform differs)
        oci_image(str(rootfs), layout, arch, env=["PATH=/bin"])
        run("umoci", "config", "--image", f"{layout}:{arch}", "--architecture", arch, "--os", "linux")
        skopeo_copy(f"oci:{layout}:{arch}", f"docker://{registry.host}/plat/img:{arch}")
        body, media_type, _ = Registry(registry.host).get_manifest("plat/img", arch)
        entries.append({"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
                        "size": len(body), "platform": {"architecture": arch, "os": "linux"}})
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    Registry(registry.host).put_manifest("plat/img", "1", index, OCI_INDEX)
    ref, env = f"{registry.host}/plat/img:1", {"HERMETIC_STORE": str(tmp_path / "store")}
    assert run_cli("run", ref, "cat", "/etc/arch", env=env).stdout == "amd64"
    ran = run_cli("run", "--platform", "linux/386", ref, "cat", "/etc/arch", env=env)
    assert ran.stdout == "386", ran
    assert run_cli("run", "--platform", "linux/386", ref, "cat", "/etc/arch", env=env).stdout == "386"  # local now
    assert run_cli("run", "--platform", "linux/amd64", ref, "cat", "/etc/arch", env=env).stdout == "amd64"


def test_docker_spellings(busybox_image):
    ran = run_cli("run", "--network", "none", "-m", "64m", "--memory", "96m", "--pids-limit", "20", busybox_image, "sh",
                  "-c", "echo up")
    assert ran.stdout == "up\n", ran


@pytest.mark.parametrize("args, words", [
    (("--cap-add", "SYS_FOO"), "cap_add: 'SYS_FOO' is not a capability"),
    (("--cap-drop", ""), "cap_drop: '' is not a capability"),
    (("--tmpfs", "/data:size=1m,suid"), "'suid' is refused: every tmpfs of a container is nosuid and nodev"),
    (("--tmpfs", "/data:uid=x"), "unknown option 'uid=x'"),
    (("--tmpfs", "/proc"), "is where the engine mounts its own /proc"),
    (("-p", "80-90:80"), "port ranges are not supported"),
    (("-p", "::1:80:80"), "write an IPv6 host address in brackets"),
    (("-p", "999.1.1.1:80:80"), "'999.1.1.1' is not an IP address"),
    (("-p", "80/sctp"), "only tcp and udp"),
    (("--env-file", "/nonexistent.env"), "--env-file /nonexistent.env: cannot read it (No such file or directory)"),
    (("--platform", "linux"), "expected OS/ARCH[/VARIANT]"),
    (("--bogus",), "unrecognized arguments: --bogus"),
    (("--read-only=yes",), "ignored explicit argument 'yes'"),
    (("--stop-signal", "NOPE"), "stop_signal='NOPE': not a signal"),
    (("--stop-timeout", "-1"), "stop_timeout='-1': use a number of seconds from 0"),
])
def test_bad_input_is_one_line_and_125(args, words):
    ran = run_cli("run", *args, "host", "true")
    assert ran.returncode == 125, ran
    assert ran.stderr.startswith("hermetic: error: ") and ran.stderr.count("\n") == 1, ran.stderr
    assert words in ran.stderr and "Traceback" not in ran.stderr, ran.stderr
