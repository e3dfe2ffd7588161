"""Networks for real: veth pairs, bridges, NAT rules, names in /etc/hosts.

Only loopback and addresses inside namespaces these tests (or the engine)
made are ever sent a packet: the private networks live in namespaces of
their own, and the host bridge's address is the engine's own device.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import run_cli
from pytest_hermetic import networks
from pytest_hermetic.container import Container
from pytest_hermetic.errors import NetworkError, SpecError
from pytest_hermetic.runtime import bridges, nat
from pytest_hermetic.spec import Spec, parse_net

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="networks need root (rootless has its own checks)")

SERVER = "cd /srv; echo {token} > token; exec python3 -m http.server {port} --bind 0.0.0.0"

WEB_SUITE = r'''
import os, socket, threading, urllib.request
import pytest
from pytest_hermetic import hermetic
from pytest_hermetic.networks import host_gateway

SERVER = "cd /srv; echo {token} > token; exec python3 -m http.server 8000"

@pytest.mark.parametrize("n", range(4))
@hermetic(net="svc")
def test_each_reads_its_own_token(containers, n):
    token = f"token-{n}-{os.urandom(6).hex()}"
    web = containers.run("host", ["sh", "-c", SERVER.format(token=token)], name="web", net="svc")
    web.wait_for_port(8000)
    body = urllib.request.urlopen("http://web:8000/token", timeout=5).read().decode().strip()
    assert body == token
    print(f"TOKEN {n} {token} {body}")  # the outer test reads these from -rA's PASSES section

@hermetic
def test_loopback_only_cannot_resolve_or_reach(containers):
    web = containers.run("host", ["sh", "-c", SERVER.format(token="x")], name="web", net="svc")
    web.wait_for_port(8000)
    with pytest.raises(OSError):
        socket.getaddrinfo("web", 8000)
    with pytest.raises(OSError):
        socket.create_connection((web.ip, 8000), timeout=1)

def test_in_place_test_reaches_a_published_port(containers):
    web = containers.run("host", ["sh", "-c", SERVER.format(token="published")], name="web", net="svc")
    web.wait_for_port(8000)
    host, port = web.address(8000)
    assert host == "127.0.0.1"
    assert urllib.request.urlopen(f"http://{host}:{port}/token", timeout=5).read() == b"published\n"

@pytest.fixture(scope="module")
def host_listener():
    # In the pytest process (a wide fixture), on the host bridge's own address.
    server = socket.create_server((host_gateway(), 0))
    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.sendall(b"hello from the host\n")
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()
    server.close()

@hermetic(net=True)
def test_bridge_has_a_route_and_reaches_the_host(host_listener):
    routes = [line.split() for line in open("/proc/net/route").read().splitlines()[1:]]
    assert any(r[0] == "eth0" and r[1] == "00000000" for r in routes), routes  # a default route
    with socket.create_connection(host_listener, timeout=5) as conn:
        assert conn.makefile().readline() == "hello from the host\n"

def test_in_place_test_reaches_a_bridge_container_by_ip(containers):
    web = containers.run("host", ["sh", "-c", SERVER.format(token="bridged")], net=True)
    web.wait_for_port(8000)
    assert web.address(8000) == (web.ip, 8000)
    assert urllib.request.urlopen(f"http://{web.ip}:8000/token", timeout=5).read() == b"bridged\n"
'''


def _host_network_state() -> dict[str, object]:
    """What a network could leave on the host."""
    private = os.path.join(os.environ["HERMETIC_STATE"], "networks", "private")
    return {
        "links": bridges.links((networks.VETH_PREFIX, networks.HOST_BRIDGE)),
        "nat": nat.present(networks.default_subnet(), networks.HOST_BRIDGE),
        "private networks": sorted(os.listdir(private)) if os.path.isdir(private) else [],
        "bridge state": os.path.isdir(networks.HostBridge().state_dir),
    }


def _settled(before: dict[str, object], seconds: float = 10.0) -> dict[str, object]:
    """Veth pairs go with their namespaces, which the kernel frees asynchronously."""
    deadline = time.monotonic() + seconds
    while True:
        now = _host_network_state()
        if now == before or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


@pytest.mark.parametrize("workers", [["-n", "2"], []], ids=["xdist", "serial"])
@pytest.mark.host_network
def test_parallel_web_token_suite(pytester: pytest.Pytester, workers):
    before = _host_network_state()
    pytester.makepyfile(test_web=WEB_SUITE)
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", "-rA", *workers, timeout=180)
    result.assert_outcomes(passed=8)
    lines = sorted(line.split() for line in result.stdout.lines if line.startswith("TOKEN "))
    assert [line[1] for line in lines] == ["0", "1", "2", "3"]
    assert len({line[2] for line in lines}) == 4  # four servers, four tokens
    assert all(line[2] == line[3] for line in lines)  # each test read back exactly its own
    assert _settled(before) == before


def test_named_cli_network_connects_two_containers(tmp_path):
    name = f"clinet{os.getpid()}"
    created = run_cli("network", "create", name, "--subnet", "10.89.0.0/24")
    assert created.returncode == 0, created.stderr
    assert run_cli("network", "create", name).returncode == 125  # exists
    try:
        server = subprocess.Popen(
            [sys.executable, "-m", "pytest_hermetic", "run", "--init", "--net", name, "--name", "web", "host", "--",
             "sh", "-c", SERVER.format(token="from-the-cli", port=8080)],
            env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            client = None
            for _ in range(100):
                client = run_cli("run", "--net", name, "host", "--", "python3", "-c",
                                 "import urllib.request; print(urllib.request.urlopen('http://web:8080/token', timeout=2).read().decode(), end='')")
                if client.returncode == 0:
                    break
                time.sleep(0.1)
            assert client is not None and client.returncode == 0, client.stderr
            assert client.stdout == "from-the-cli\n"
            listing = run_cli("network", "ls")
            assert name in listing.stdout and "10.89.0.0/24" in listing.stdout and "web" in listing.stdout
            busy = run_cli("network", "rm", name)
            assert busy.returncode == 125 and "in use by web" in busy.stderr
            hosts = run_cli("run", "--net", name, "host", "cat", "/etc/hosts").stdout
            assert "\tweb " in hosts or "\tweb\n" in hosts
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.send_signal(signal.SIGTERM)  # the CLI kills the container on a second signal
                server.wait(timeout=10)
    finally:
        removed = run_cli("network", "rm", name)
    assert removed.returncode == 0, removed.stderr
    assert name not in run_cli("network", "ls").stdout
    missing = run_cli("run", "--net", name, "host", "true")
    assert missing.returncode == 125 and f"network {name!r} does not exist" in missing.stderr


@pytest.mark.host_network
def test_bridge_container_gets_address_route_and_the_hosts_resolv_conf():
    before = _host_network_state()
    forwarding = nat.forwarding_enabled()
    spec = Spec.build("host", ["sh", "-c", "cat /etc/resolv.conf; cat /proc/net/route; cat /etc/hostname"],
                      net=True, ephemeral=True)
    read_fd, write_fd = os.pipe()
    with Container(spec) as container:
        container.start(stdout=write_fd)
        os.close(write_fd)
        assert networks.HOST_BRIDGE in bridges.links((networks.HOST_BRIDGE,))
        assert nat.present(networks.default_subnet(), networks.HOST_BRIDGE)  # NAT while the bridge lives
        result = container.wait()
        output = os.read(read_fd, 65536).decode()
        os.close(read_fd)
    assert result.exit_code == 0
    assert container.address and container.address.startswith("10.88.")
    with open("/etc/resolv.conf") as f:
        assert f.read() in output
    assert "eth0\t00000000" in output
    assert _settled(before) == before  # the last user took bridge and rules away
    assert nat.forwarding_enabled() == forwarding  # the host's switch is never flipped


HELD_REPLY = """
import signal, socket, threading
go = threading.Event()
signal.signal(signal.SIGUSR1, lambda *_: go.set())
server = socket.create_server(("0.0.0.0", 8000))
while True:
    conn, _ = server.accept()
    if conn.makefile().readline() == "ping\\n":
        go.wait(30)
        conn.sendall(b"pong\\n")
    conn.close()
"""


@pytest.mark.host_network
def test_a_reply_still_reaches_the_host_after_a_neighbour_left_the_bridge():
    """A Linux bridge whose address nobody set takes its ports' lowest one and
    changes it as ports come and go.  A container that learned the gateway's
    address before then sends its replies to an address nobody answers to,
    until its neighbour cache gives up on it (~8 s), unless the host speaks
    first.  The CI flake of test_parallel_web_token_suite[xdist]: a service's
    "200" never came back while another test's container left the bridge.
    Here the leaving port has the lowest address there can be, and the
    server holds its reply until it has left."""
    from pyroute2 import IPRoute

    before = _host_network_state()
    null = os.open(os.devnull, os.O_RDWR)
    low = Container(Spec.build("host", ["sleep", "600"], net=True, ephemeral=True))
    web = Container(Spec.build("host", ["python3", "-c", HELD_REPLY], net=True, ephemeral=True))
    try:
        low.start(stdin=null, stdout=null, stderr=null)
        with IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname=networks.VETH_PREFIX + low.id[:12])[0],
                     address="02:00:00:00:00:01")
        with open(f"/sys/class/net/{networks.HOST_BRIDGE}/address") as f:
            mac = f.read().strip()
        web.start(stdin=null, stdout=null, stderr=null)
        deadline = time.monotonic() + 15
        while True:
            try:
                conn = socket.create_connection((web.address, 8000), timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline, "the server never listened"
                time.sleep(0.05)
        with conn:
            conn.sendall(b"ping\n")  # the server learned the gateway's address as it is now
            low.remove()
            veth = f"/sys/class/net/{networks.VETH_PREFIX}{low.id[:12]}"
            while os.path.exists(veth):
                assert time.monotonic() < deadline + 10, "the leaving container's veth stayed"
                time.sleep(0.05)
            with open(f"/sys/class/net/{networks.HOST_BRIDGE}/address") as f:
                assert f.read().strip() == mac  # set once, when the bridge was made
            web.kill(signal.SIGUSR1)
            conn.settimeout(4)
            assert conn.makefile().readline() == "pong\n"
    finally:
        for container in (low, web):
            container.remove()
        os.close(null)
    assert _settled(before) == before


@pytest.mark.host_network
def test_gc_clears_what_a_killed_session_left(pytester: pytest.Pytester, tmp_path):
    before = _host_network_state()
    started = tmp_path / "started"
    pytester.makepyfile(test_hang=f'''
import time
from pytest_hermetic import hermetic

def test_hangs(containers):  # in place: its private network belongs to the pytest process
    containers.run("host", ["sleep", "600"], name="db", net="svc")
    open({str(started)!r}, "w").close()
    time.sleep(600)

@hermetic(net=True)
def test_first_holds_the_bridge():
    pass
''')
    proc = pytester.popen([sys.executable, "-m", "pytest", "-p", "hermetic", "-p", "no:cacheprovider", "-q",
                           "test_hang.py::test_first_holds_the_bridge", "test_hang.py::test_hangs"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            if started.exists():
                break
            time.sleep(0.1)
        assert started.exists()
        assert _host_network_state() != before
    finally:
        proc.kill()  # SIGKILL: no clean-up of its own
        proc.wait()
    time.sleep(0.5)
    gc = run_cli("gc")
    assert gc.returncode == 0, gc.stderr
    assert "private network svc" in gc.stdout and "host bridge hermetic0" in gc.stdout
    assert "cgroup " in gc.stdout  # the killed session's pending container, cleared at once (owner dead)
    assert _settled(before) == before


def test_network_values():
    assert parse_net("none") is False and parse_net("bridge") is True and parse_net("svc") == "svc"
    assert parse_net(True) is True and parse_net(None) is False
    with pytest.raises(SpecError, match="not supported"):
        parse_net("host")
    with pytest.raises(SpecError, match="network name"):
        parse_net("bad name!")
    with pytest.raises(NetworkError, match="does not exist"):
        networks.open_network("no-such-network")
    with pytest.raises(NetworkError, match="too small"):
        networks.create_network("tiny", "10.90.0.0/30")
    bad = run_cli("network", "create", "x", "--subnet", "lots")
    assert bad.returncode == 125 and "subnet 'lots'" in bad.stderr and "Traceback" not in bad.stderr


def test_subnet_that_clashes_with_a_host_route_is_refused(monkeypatch):
    with open("/proc/net/route") as f:
        row = next((line.split() for line in f.read().splitlines()[1:] if line.split()[7] != "00000000"), None)
    if row is None:
        pytest.skip("this machine routes no subnet to clash with")
    import ipaddress

    dest = ipaddress.IPv4Address(int(row[1], 16).to_bytes(4, "little"))
    mask = ipaddress.IPv4Address(int(row[7], 16).to_bytes(4, "little"))
    clash = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
    monkeypatch.setenv("HERMETIC_SUBNET", str(clash))
    result = run_cli("run", "--net=bridge", "host", "true", env={"HERMETIC_SUBNET": str(clash)})
    assert result.returncode == 125 and f"overlaps the host's route {clash}" in result.stderr


@pytest.mark.parametrize("tool", ["nft", "iptables"])
def test_nat_rules_are_added_and_removed_exactly_once(monkeypatch, tool):
    import shutil

    if not (shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")):
        pytest.skip(f"{tool} is not installed")
    monkeypatch.setenv("HERMETIC_NAT", tool)
    subnet, bridge = "10.87.0.0/16", "hmtest0"  # rules only: no such device, no traffic
    assert not nat.present(subnet, bridge)
    try:
        assert nat.add(subnet, bridge) == tool
        assert nat.add(subnet, bridge) == tool  # idempotent
        assert nat.present(subnet, bridge)
        if tool == "iptables":
            listed = subprocess.run(["iptables", "-w", "-t", "nat", "-S", "POSTROUTING"], capture_output=True, text=True).stdout
            assert listed.count("hermetic:hmtest0") == 1
        else:
            listed = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
            assert listed.count("table ip hermetic_hmtest0") == 1 and "masquerade" in listed
    finally:
        nat.remove(subnet, bridge)
    assert not nat.present(subnet, bridge)
