"""Isolation between consecutive hermetic tests, through real inner pytest
sessions (plain and under xdist): a test leaves every trace it can in its
namespaces (files, a straggler process, an abstract socket, SysV IPC
objects, a POSIX message queue, a TCP port in TIME_WAIT) and the next test
on the same process finds none, in namespaces of its own (the pytest
process makes them ahead of time as root: runtime/spare.py, and the PID
namespace with its placeholder PID 1: runtime/placeholder.py; a network
namespace an earlier test left unchanged may come again: runtime/netns_reuse.py,
tests/test_netns_reuse.py)."""

import pytest

SUITE = r'''
import ctypes, errno, os, socket, subprocess, sys, time
import pytest
from pytest_hermetic import hermetic

KEY = 0x4845524D  # "HERM"
PROBE = "\0hermetic-isolation-probe"
PORT = 8766
libc = ctypes.CDLL(None, use_errno=True)
IPC_CREAT = 0o1000


@pytest.fixture(scope="session")
def parent_namespaces():
    # session scope: in the pytest process itself, not in a container
    return {kind: os.stat(f"/proc/self/ns/{kind}").st_ino for kind in ("net", "ipc", "uts", "mnt", "pid")}


@pytest.fixture(scope="session")
def shared(tmp_path_factory):
    return tmp_path_factory.mktemp("shared")  # made in the pytest process; read-write in every test


def own_namespaces():
    return {kind: os.stat(f"/proc/self/ns/{kind}").st_ino for kind in ("net", "ipc", "uts", "mnt", "pid")}


@hermetic
def test_1_leave_traces(parent_namespaces, shared):
    for kind, inode in parent_namespaces.items():
        assert os.stat(f"/proc/self/ns/{kind}").st_ino != inode, kind
    (shared / __name__).write_text(repr(own_namespaces()))
    with open("/dev/shm/hermetic-probe", "w") as f:
        f.write("x")
    with open("/tmp/hermetic-probe", "w") as f:
        f.write("x")
    # a straggler holding an abstract socket: the test does not wait for it
    subprocess.Popen([sys.executable, "-c", "import socket, time; s = socket.socket(socket.AF_UNIX); "
                      f"s.bind({PROBE!r}); s.listen(); time.sleep(60)"])
    for _ in range(200):
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(PROBE)
            break
        except OSError:
            time.sleep(0.01)
        finally:
            probe.close()
    else:
        raise AssertionError("the straggler never bound its socket")
    assert libc.shmget(KEY, 4096, IPC_CREAT | 0o600) >= 0
    assert libc.msgget(KEY, IPC_CREAT | 0o600) >= 0
    assert libc.semget(KEY, 1, IPC_CREAT | 0o600) >= 0
    with open("/dev/mqueue/hermetic-probe", "w"):  # a POSIX message queue
        pass
    # the server closes first: its end of the connection stays in TIME_WAIT on PORT
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", PORT))
    server.listen()
    client = socket.create_connection(("127.0.0.1", PORT))
    conn, _ = server.accept()
    conn.close()
    time.sleep(0.05)
    client.close()
    server.close()
    again = socket.socket()
    with pytest.raises(OSError) as busy:  # proof that the port is held here
        again.bind(("127.0.0.1", PORT))
    assert busy.value.errno == errno.EADDRINUSE
    again.close()


@hermetic
def test_2_finds_none(parent_namespaces, shared):
    for kind, inode in parent_namespaces.items():
        assert os.stat(f"/proc/self/ns/{kind}").st_ino != inode, kind
    # namespaces made ahead (spare.py, the placeholder's PID namespace) are
    # never the previous test's: IPC, UTS, mount and PID ones are always new;
    # a network namespace may be an earlier test's, given back unchanged
    # (runtime/netns_reuse.py, proven by tests/test_netns_reuse.py), but
    # test_1's is not: it left TIME_WAIT and traffic in it
    previous = eval((shared / __name__).read_text())
    for kind, inode in own_namespaces().items():
        assert inode != previous[kind], kind
    assert not os.path.exists("/dev/shm/hermetic-probe")
    assert not os.path.exists("/tmp/hermetic-probe")
    assert not os.path.exists("/dev/mqueue/hermetic-probe")
    probe = socket.socket(socket.AF_UNIX)
    with pytest.raises(ConnectionRefusedError):
        probe.connect(PROBE)
    probe.close()
    for call, args in ((libc.shmget, (KEY, 0, 0)), (libc.msgget, (KEY, 0)), (libc.semget, (KEY, 0, 0))):
        assert call(*args) == -1 and ctypes.get_errno() == errno.ENOENT, call
    fresh = socket.socket()  # no SO_REUSEADDR: a TIME_WAIT left here would refuse it
    fresh.bind(("127.0.0.1", PORT))
    fresh.close()
    others = [pid for pid in os.listdir("/proc") if pid.isdigit() and int(pid) not in (1, os.getpid())]
    assert others == [], [open(f"/proc/{pid}/cmdline").read() for pid in others]
    # lo is up in the new network namespace (a server on localhost works)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    socket.create_connection(server.getsockname()).close()
    server.close()
'''


@pytest.mark.parametrize("workers", [[], ["-n", "2", "--dist", "loadfile"]], ids=["plain", "xdist"])
def test_consecutive_tests_share_nothing(pytester: pytest.Pytester, workers):
    # Two files: under xdist (loadfile) each worker runs one pair, in order.
    pytester.makepyfile(test_a=SUITE, test_b=SUITE)
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", "-rA", *workers, timeout=240)
    result.assert_outcomes(passed=4)
