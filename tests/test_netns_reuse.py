"""A finished test's network namespace is handed to a later test only when
nothing in it changed (runtime/netns_reuse.py), through real inner pytest
sessions, plain and under xdist.

Every inner test first checks that its network namespace is as a new one
is (no socket, no TIME_WAIT, every counter of /proc/net/{dev,snmp,netstat,
snmp6} at its first value, no lingering IPv6 flow label, no TCP fast-open
key, lo's MTU), notes which namespace it got (its cookie: SO_NETNS_COOKIE,
unique per boot, where inode numbers may come back), then leaves a trace:
TCP traffic ending in TIME_WAIT and UDP, a send with no route (counters
only, no packet), an abstract socket held by a straggler, a flow label, a
fast-open key, a socket handed to the pytest process (no packet, no
process left), with CAP_NET_ADMIN or privileged lo's MTU changed, or
through a volume of the host's /proc/sys a net sysctl of its namespace.
The last test of the file checks that namespaces were reused (else the
speed-up would not be real) and that none a dirty test had went to a later
test.  Without the check in netns_reuse.py (or with any of its probes left
out) a later test finds the trace: the plugin hands a test's namespace to
the test three starts later, and four or more clean tests follow each
dirty one here.  The last test here does the same in process, through
the Container API, and checks that the session's end lets every kept
namespace go and that a test's callable cannot write to any of them.
"""

import os
import socket
import struct

import pytest

from pytest_hermetic.container import Container
from pytest_hermetic.runtime import process
from pytest_hermetic.spec import Spec

SO_NETNS_COOKIE = 71
SUITE = r'''
import fcntl, os, socket, struct, subprocess, sys, threading, time
import pytest
from pytest_hermetic import hermetic

SO_NETNS_COOKIE = 71
IPV6_FLOWLABEL_MGR = 32
SIOCGIFMTU, SIOCSIFMTU = 0x8921, 0x8922
CONSTANTS = {("Ip:", "Forwarding"), ("Ip:", "DefaultTTL"), ("Tcp:", "RtoAlgorithm"), ("Tcp:", "RtoMin"),
             ("Tcp:", "RtoMax"), ("Tcp:", "MaxConn")}


@pytest.fixture(scope="session")
def shared(tmp_path_factory):
    return tmp_path_factory.mktemp("shared")  # made in the pytest process; read-write in every test


@pytest.fixture(scope="session")
def keeper(shared):
    """A server in the pytest process (the host's network namespace) that
    keeps every fd sent to it: a socket outliving its test's processes."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(short_path(shared / "keeper.sock"))
    server.listen()
    kept = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            _, fds, _, _ = socket.recv_fds(conn, 1, 1)
            kept.extend(fds)
            conn.sendall(b"k")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield shared / "keeper.sock"
    server.shutdown(socket.SHUT_RDWR)
    server.close()
    for fd in kept:
        os.close(fd)


def short_path(path):
    """`path` in fewer than 108 bytes (a unix socket's limit), through an fd of its folder."""
    return f"/proc/self/fd/{os.open(path.parent, os.O_PATH)}/{path.name}"


def read(path):
    with open(path) as f:
        return f.read()


def lo_mtu():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        return struct.unpack("16si", fcntl.ioctl(s, SIOCGIFMTU, struct.pack("16si", b"lo", 0)))[1]
    finally:
        s.close()


def assert_as_new():
    """This network namespace is as a new one with lo up is."""
    stat = read("/proc/net/sockstat").split()
    assert stat[stat.index("sockets:") + 2] == "0", read("/proc/net/sockstat")
    for line in (read("/proc/net/sockstat") + read("/proc/net/sockstat6")).splitlines():
        fields = line.split()
        for key, value in zip(fields[1::2], fields[2::2]):
            if key in ("inuse", "tw", "used", "memory"):
                assert value == "0", line
    for table in ("tcp", "tcp6", "udp", "udp6", "raw", "raw6", "unix", "packet"):  # `ss -a`: nothing
        assert len(read(f"/proc/net/{table}").splitlines()) == 1, (table, read(f"/proc/net/{table}"))
    dev = read("/proc/net/dev").splitlines()[2:]
    assert [line.split()[0] for line in dev] == ["lo:"], dev
    assert set(dev[0].split()[1:]) == {"0"}, dev  # bytes, packets, errors, drops: none
    for name in ("snmp", "netstat"):
        lines = read(f"/proc/net/{name}").splitlines()
        for header, values in zip(lines[::2], lines[1::2]):
            for key, value in zip(header.split()[1:], values.split()[1:]):
                if (header.split()[0], key) not in CONSTANTS:
                    assert value == "0", (name, header.split()[0], key, value)
    moved = [line for line in read("/proc/net/snmp6").splitlines() if line.split()[1] != "0"]
    assert moved == [], moved
    assert len(read("/proc/net/ip6_flowlabel").splitlines()) == 1, read("/proc/net/ip6_flowlabel")
    assert set(read("/proc/sys/net/ipv4/tcp_fastopen_key").strip()) <= {"0", "-"}
    assert lo_mtu() == 65536
    assert read("/proc/sys/net/ipv4/ip_local_port_range").split() == ["32768", "60999"]


def note(shared, request):
    """Which network namespace this test got (then the socket is closed again)."""
    s = socket.socket(socket.AF_UNIX)
    cookie = struct.unpack("Q", s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))[0]
    s.close()
    (shared / f"{__name__}.{request.node.name}").write_text(str(cookie))


def clean_test():
    @hermetic
    def test(shared, request):
        assert_as_new()
        note(shared, request)
    return test


for i in range(1, 6):
    globals()[f"test_{i:02d}_clean"] = clean_test()


@hermetic
def test_06_dirty_tcp_udp(shared, request):
    assert_as_new()
    note(shared, request)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.create_connection(server.getsockname())
    conn, _ = server.accept()
    client.sendall(b"x" * 1000)
    conn.recv(1000)
    conn.close()  # the accepting end closes first: it stays in TIME_WAIT
    time.sleep(0.05)
    client.close()
    server.close()
    assert " tw 0" not in read("/proc/net/sockstat")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.sendto(b"x", ("127.0.0.1", 9))
    udp.close()


for i in range(7, 11):
    globals()[f"test_{i:02d}_clean"] = clean_test()


@hermetic
def test_11_dirty_no_route(shared, request):
    assert_as_new()
    note(shared, request)
    for family, address in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        s = socket.socket(family, socket.SOCK_DGRAM)
        with pytest.raises(OSError):  # ENETUNREACH: no packet at all, only OutNoRoutes moves
            s.sendto(b"x", (address, 9))
        s.close()
    assert set(read("/proc/net/dev").splitlines()[2].split()[1:]) == {"0"}


for i in range(12, 16):
    globals()[f"test_{i:02d}_clean"] = clean_test()


@hermetic
def test_16_straggler_with_abstract_socket(shared, request):
    assert_as_new()
    note(shared, request)
    # a straggler holds an abstract socket: it dies with the PID namespace,
    # and its socket with it (this namespace may then be reused: nothing is left)
    subprocess.Popen([sys.executable, "-c", "import socket, time; s = socket.socket(socket.AF_UNIX); "
                      "s.bind('\\0hermetic-reuse-probe'); s.listen(); time.sleep(60)"])
    for _ in range(500):
        if "@hermetic-reuse-probe" in read("/proc/net/unix"):
            break
        time.sleep(0.01)
    else:
        raise AssertionError("the straggler never bound its socket")


for i in range(17, 21):
    globals()[f"test_{i:02d}_clean"] = clean_test()


@hermetic
def test_21_dirty_flow_label(shared, request):
    assert_as_new()
    note(shared, request)
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    # struct in6_flowlabel_req: dst, label, action GET, share EXCL, flags CREATE, expires, linger (s)
    request_ = (socket.inet_pton(socket.AF_INET6, "::1") + struct.pack("!I", 0x12345)
                + struct.pack("=BBHHHI", 0, 1, 1, 60, 60, 0))
    s.setsockopt(socket.IPPROTO_IPV6, IPV6_FLOWLABEL_MGR, request_)
    s.close()  # the label lingers 60 s, with no socket and no packet
    assert "12345" in read("/proc/net/ip6_flowlabel")


for i in range(22, 26):
    globals()[f"test_{i:02d}_clean"] = clean_test()


@hermetic
def test_26_dirty_fastopen_key(shared, request):
    assert_as_new()
    note(shared, request)
    s = socket.socket()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_FASTOPEN, 5)
    s.bind(("127.0.0.1", 0))
    s.listen()  # makes the namespace's fast-open key: no packet, and no socket once closed
    s.close()
    assert not set(read("/proc/sys/net/ipv4/tcp_fastopen_key").strip()) <= {"0", "-"}


for i in range(27, 31):
    globals()[f"test_{i:02d}_clean"] = clean_test()


def set_lo_mtu(mtu):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        fcntl.ioctl(s, SIOCSIFMTU, struct.pack("16si", b"lo", mtu))
    finally:
        s.close()


@hermetic(cap_add="NET_ADMIN")
def test_31_net_admin_changes_lo(shared, request):
    assert_as_new()
    note(shared, request)
    set_lo_mtu(1280)  # no socket left, no counter moved: only the capability excludes it
    assert lo_mtu() == 1280


for i in range(32, 36):
    globals()[f"test_{i:02d}_clean"] = clean_test()


@hermetic(privileged=True)
def test_36_privileged_changes_lo(shared, request):
    assert_as_new()
    note(shared, request)
    set_lo_mtu(1300)
    assert lo_mtu() == 1300


for i in range(37, 41):
    globals()[f"test_{i:02d}_clean"] = clean_test()


@hermetic
def test_41_dirty_socket_held_outside(shared, request, keeper):
    assert_as_new()
    note(shared, request)
    # (not a listener: the plugin would mirror the pytest process's listeners into later tests)
    held = socket.socket()  # no packet: only a socket of this namespace, which the pytest process now holds
    with socket.socket(socket.AF_UNIX) as to_keeper:
        to_keeper.connect(short_path(keeper))
        socket.send_fds(to_keeper, [b"x"], [held.fileno()])
        assert to_keeper.recv(1) == b"k"
    held.close()
    assert "sockets: used 0" not in read("/proc/net/sockstat")


for i in range(42, 46):
    globals()[f"test_{i:02d}_clean"] = clean_test()


@hermetic(volumes=["/proc/sys:/host-sys"])
def test_46_sysctl_through_a_volume(shared, request):
    assert_as_new()
    note(shared, request)
    # uid 0 may write its own namespace's net sysctls without CAP_NET_ADMIN
    # (only the read-only /proc/sys stops it); the host's value is not touched
    with open("/host-sys/net/ipv4/ip_local_port_range", "w") as f:
        f.write("40000 40100")
    assert read("/proc/sys/net/ipv4/ip_local_port_range").split() == ["40000", "40100"]


for i in range(47, 51):
    globals()[f"test_{i:02d}_clean"] = clean_test()


def test_99_reused_only_when_clean(shared):
    got = {path.name.split(".", 1)[1]: int(path.read_text())
           for path in shared.iterdir() if path.name.startswith(__name__ + ".")}
    assert len(got) == 50, sorted(got)
    order = sorted(got)
    for i, name in enumerate(order):
        if "dirty" in name or "changes_lo" in name or "sysctl" in name:  # (it may have got a clean test's: not pass it on)
            later = [other for other in order[i + 1:] if got[other] == got[name]]
            assert later == [], (name, later)
    reused = [name for i, name in enumerate(order) if got[name] in [got[earlier] for earlier in order[:i]]]
    assert len(reused) >= 10, (reused, got)
'''


@pytest.mark.skipif(os.geteuid() != 0, reason="namespaces made ahead are the root path's")
@pytest.mark.parametrize("workers", [[], ["-n", "2", "--dist", "loadfile"]], ids=["plain", "xdist"])
def test_network_namespace_reused_only_when_clean(pytester: pytest.Pytester, workers):
    # Two files: under xdist (loadfile) each worker runs one of them, in order.
    pytester.makepyfile(test_a=SUITE, test_b=SUITE)
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", "-rA", *workers, timeout=240)
    result.assert_outcomes(passed=102)


def _net_namespaces_held() -> dict[str, int]:
    """The network namespaces this process holds an fd of, but is not in, and
    the files it reads them by: {'net:[inode]' or a /proc path: count}."""
    own = os.readlink("/proc/self/ns/net")
    held: dict[str, int] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith("net:[") and target != own or "/net/" in target or "/sys/net/" in target:  # (or a probe)
            held[target] = held.get(target, 0) + 1
    return held


@pytest.mark.skipif(os.geteuid() != 0, reason="namespaces made ahead are the root path's")
def test_containers_in_turn_reuse_a_namespace_and_the_end_lets_all_go(tmp_path):
    # The plugin's pattern in process: each start makes the next set ahead;
    # a container's namespace comes back once it is removed.
    before = _net_namespaces_held()
    cookies = []

    def inside() -> int:
        s = socket.socket(socket.AF_UNIX)
        cookie = struct.unpack("Q", s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))[0]
        s.close()
        # The parent's files that show the namespaces made ahead or kept
        # reach this callable (a fork keeps regular files); none may be
        # reopened and written (a tcp_fastopen_key fd could: root's, 0600).
        writable = []
        for name in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{name}")
                if target.startswith("/proc/"):
                    fd = os.open(f"/proc/self/fd/{name}", os.O_WRONLY)
                    try:
                        os.write(fd, b"00000000-00000000-00000000-00000001")  # (a fast-open key)
                        writable.append(target)
                    finally:
                        os.close(fd)
            except OSError:
                pass
        with open(tmp_path / "cookie", "w") as f:
            f.write(f"{cookie} {writable}")
        return 0

    try:
        for _ in range(6):
            with Container(Spec.build("host", volumes=[f"{tmp_path}:{tmp_path}"], accounting=False,
                                      ephemeral=True, tracked=False)) as c:
                assert c.start(target=inside, prepare_next=True).wait().status.code == 0
            cookie, writable = (tmp_path / "cookie").read_text().split(" ", 1)
            assert writable == "[]"
            cookies.append(int(cookie))
        assert len(set(cookies)) < len(cookies), cookies  # one came again
        assert _net_namespaces_held() != before  # the next set, and kept ones
    finally:
        process.discard_prepared()
    # Nothing of these containers' is left.  (Not "== before": the outer
    # session's plugin may have made a set ahead after a hermetic test of
    # its own, which the first container here takes.)
    assert set(_net_namespaces_held()) <= set(before)
