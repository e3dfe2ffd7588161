"""A real suite concludes the same with `--hermetic` as in place (issue 13):
one inner pytest session per cause that once made it differ."""

import os

import pytest
from conftest import run_cli


def _run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_inner=source)
    return pytester.runpytest_subprocess("-p", "hermetic", "--hermetic", "-rA", "-p", "no:cacheprovider", *args,
                                         timeout=120)


def _plain(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """The same inner suite in place: what `--hermetic` must conclude too."""
    return pytester.runpytest_subprocess("-p", "hermetic", "-rA", "-p", "no:cacheprovider", *args, timeout=120)


def test_a_test_that_replaces_os_functions_still_reports(pytester: pytest.Pytester):
    # filelock simulates a full disk with monkeypatch.setattr(os, "write", ...):
    # the child sends its call report while that is still in place.
    result = _run(pytester, '''
import os, pickle, struct, sys

def refuse(*args, **kwargs):
    raise OSError(28, "No space left on device (a test's own)")

def test_write(monkeypatch):
    for name in ("write", "read", "close", "_exit", "waitpid"):
        monkeypatch.setattr(os, name, refuse)
    monkeypatch.setattr(pickle, "dumps", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(sys, "exit", refuse)
    monkeypatch.setattr(struct, "pack", refuse)

def test_write_fails(monkeypatch):
    monkeypatch.setattr(os, "write", refuse)
    monkeypatch.setattr(pickle, "dumps", refuse)
    assert False, "reported"

def test_after():
    pass
''')
    for result in (result, _plain(pytester)):
        result.assert_outcomes(passed=2, failed=1)
        result.stdout.fnmatch_lines(["*AssertionError: reported*"])
        result.stdout.no_fnmatch_line("*without reporting*")


def test_host_facts_recorded_by_wider_fixtures_hold_inside(pytester: pytest.Pytester):
    # filelock's fixtures record the host name in the parent; the test compares.
    result = _run(pytester, '''
import grp, locale, os, pwd, socket, time
import pytest
from pytest_hermetic import hermetic

@pytest.fixture(scope="session")
def facts():
    return {"hostname": socket.gethostname(), "user": pwd.getpwuid(os.getuid()).pw_name,
            "group": grp.getgrgid(os.getgid()).gr_name, "uid": os.getuid(), "tz": time.tzname,
            "locale": locale.getlocale(), "env": {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"},
            "fqdn_resolves": bool(socket.getaddrinfo(socket.gethostname(), None))}

def test_same_facts(facts):
    now = {"hostname": socket.gethostname(), "user": pwd.getpwuid(os.getuid()).pw_name,
           "group": grp.getgrgid(os.getgid()).gr_name, "uid": os.getuid(), "tz": time.tzname,
           "locale": locale.getlocale(), "env": {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"},
           "fqdn_resolves": bool(socket.getaddrinfo(socket.gethostname(), None))}
    assert now == facts

@hermetic(hostname="inner")
def test_named_by_the_marker(facts):
    assert socket.gethostname() == "inner" != facts["hostname"]

def test_after(facts):
    assert socket.gethostname() == facts["hostname"]
''', "-p", "no:randomly")
    result.assert_outcomes(passed=3)


TMP_SUITE = '''
import os, tempfile
import pytest

@pytest.fixture(scope="class")
def certs():
    folder = tempfile.mkdtemp()  # urllib3's certificates: under /tmp, made once per class
    with open(os.path.join(folder, "cert.pem"), "w") as f:
        f.write("CERT")
    return folder

class TestWithCerts:
    def test_sees_the_fixture_files(self, certs):
        with open(os.path.join(certs, "cert.pem")) as f:
            assert f.read() == "CERT"
        with open(os.path.join(certs, "cert.pem"), "a") as f:
            f.write("+inner")  # copy-on-write: the next test still sees "CERT"
        with open("/tmp/hermetic-fidelity-left-behind", "w") as f:
            f.write("x")

    def test_writes_of_the_previous_test_are_gone(self, certs):
        with open(os.path.join(certs, "cert.pem")) as f:
            assert f.read() == "CERT"
        assert not os.path.exists("/tmp/hermetic-fidelity-left-behind")
'''


def test_files_of_wider_fixtures_under_tmp_are_there(pytester: pytest.Pytester):
    result = _run(pytester, TMP_SUITE, "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    assert not os.path.exists("/tmp/hermetic-fidelity-left-behind")



def test_tmp_is_the_hosts_copy_on_write_with_its_mode_and_owner(pytester: pytest.Pytester):
    # As the host has it (1777): another user writes there too.  (On the
    # root's own mount, the host's /tmp is the root overlay's; else an
    # overlay of its own: test_container_api checks that one's mode.)
    result = _run(pytester, """
import os
from pytest_hermetic import hermetic
from pytest_hermetic.runtime.rootfs.volumes import on_host_root

HOST = os.stat("/tmp")  # at import, in pytest: the host's
OWN_MOUNT = not on_host_root("/tmp")

def test_mode_and_owner_are_the_hosts():
    seen = os.stat("/tmp")
    assert (seen.st_mode, seen.st_uid, seen.st_gid) == (HOST.st_mode, HOST.st_uid, HOST.st_gid)
    assert os.path.ismount("/tmp") == OWN_MOUNT  # (none where the root's overlay shows it)

@hermetic(user="65534")
def test_another_user_writes_there():
    with open("/tmp/hermetic-fidelity-nobody", "w") as f:
        f.write("x")
""")
    result.assert_outcomes(passed=2)
    assert not os.path.exists("/tmp/hermetic-fidelity-nobody")


def test_an_expected_failure_killed_by_its_container_is_xfailed(pytester: pytest.Pytester):
    result = _run(pytester, '''
import os, signal, time
import pytest
from pytest_hermetic import hermetic

@hermetic(timeout=1)
@pytest.mark.xfail(reason="known to hang")
def test_timeout():
    time.sleep(30)

@hermetic(mem="64M")
@pytest.mark.xfail(reason="known to eat memory", strict=True)
def test_oom():
    data = bytearray(400 << 20)
    data[::4096] = b"x" * len(data[::4096])

@pytest.mark.xfail(reason="known to crash")
def test_killed():
    os.kill(os.getpid(), signal.SIGKILL)

@pytest.mark.xfail(reason="only a ValueError is expected", raises=ValueError)
def test_killed_but_raises_named():
    os.kill(os.getpid(), signal.SIGKILL)

@pytest.mark.xfail(reason="a condition that does not hold", condition=False)
def test_killed_not_expected():
    os.kill(os.getpid(), signal.SIGKILL)
''')
    result.assert_outcomes(xfailed=3, failed=2)
    result.stdout.fnmatch_lines(["XFAIL test_inner.py::test_timeout - known to hang",
                                 "XFAIL test_inner.py::test_oom - known to eat memory",
                                 "XFAIL test_inner.py::test_killed - known to crash"], consecutive=False)
    result.stdout.fnmatch_lines(["FAILED test_inner.py::test_killed_but_raises_named - hermetic: killed by*",
                                 "FAILED test_inner.py::test_killed_not_expected - hermetic: killed by*"])


def test_dev_shm_is_as_large_as_the_hosts(pytester: pytest.Pytester):
    # A test that writes a large file to /dev/shm in place does so inside.
    result = _run(pytester, '''
import os
import pytest
from pytest_hermetic import hermetic

def size(path):
    info = os.statvfs(path)
    return info.f_blocks * info.f_frsize

@pytest.fixture(scope="session")
def host_shm():
    return size("/dev/shm")

def test_default(host_shm):
    assert size("/dev/shm") == host_shm > 64 << 20
    with open("/dev/shm/big", "wb") as f:
        f.truncate(100 << 20)
        f.write(b"x" * (80 << 20))  # more than Docker's 64 MiB

@hermetic(mem="96M")
def test_no_larger_than_the_memory_limit(host_shm):
    assert size("/dev/shm") == min(host_shm, 96 << 20)

@hermetic(shm_size="1g")
def test_asked_for():
    assert size("/dev/shm") == 1 << 30
''')
    result.assert_outcomes(passed=3)


def test_shm_size_on_the_command_line():
    ran = run_cli("run", "--shm-size", "12m", "host", "--", "df", "-k", "/dev/shm")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split()[-5] == str(12 << 10), ran.stdout
    bad = run_cli("run", "--shm-size", "lots", "host", "--", "true")
    assert bad.returncode == 125 and "shm_size='lots': not a size" in bad.stderr, bad.stderr


SERVER_SUITE = '''
import socket, threading, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import pytest

class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

@pytest.fixture(scope="session")
def server():
    # pytest-httpserver's shape: a server on a thread of the pytest process
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()

class Hello6(ThreadingHTTPServer):
    address_family = socket.AF_INET6

@pytest.fixture(scope="module")
def server6():
    httpd = Hello6(("::1", 0), Hello)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://[::1]:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()

@pytest.mark.parametrize("n", range(3))
def test_reaches_the_session_server(server, n):
    with urllib.request.urlopen(f"{server}/{n}", timeout=10) as reply:
        assert reply.read() == f"hello /{n}".encode()

def test_reaches_both_over_ipv4_and_ipv6(server, server6):
    for url in (server, server6):
        with urllib.request.urlopen(f"{url}/both", timeout=10) as reply:
            assert reply.read() == b"hello /both"

def test_own_listener_on_a_port_of_its_own():
    # the test's own namespace: binding a port of the host's loopback is its own business
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
'''


def test_servers_of_wider_fixtures_on_loopback_are_reachable(pytester: pytest.Pytester):
    result = _run(pytester, SERVER_SUITE, "-p", "no:randomly")
    result.assert_outcomes(passed=5)
    _plain(pytester, "-p", "no:randomly").assert_outcomes(passed=5)
    # under xdist each worker's own servers
    pytester.runpytest_subprocess("-p", "hermetic", "--hermetic", "-p", "no:cacheprovider", "-n", "2",
                                  timeout=120).assert_outcomes(passed=5)


def test_a_collection_error_is_reported_as_in_place(pytester: pytest.Pytester):
    # python-dateutil collects with -W error; pytest 9.2's deprecation of a
    # generator in parametrize, raised inside pytest_pycollect_makeitem,
    # came out wrapped in pluggy's PluggyTeardownRaisedWarning through our
    # old-style hook wrapper.
    pytester.makeconftest("""
def pytest_pycollect_makeitem(collector, name, obj):
    if name == "test_refused":
        raise ValueError("refused by the conftest")
""")
    pytester.makepyfile(test_inner="def test_refused():\n    pass\n")
    for result in (_plain(pytester, "-W", "error"), _plain(pytester, "--hermetic", "-W", "error")):
        result.stdout.fnmatch_lines(["E   ValueError: refused by the conftest", "*1 error*"])
        result.stdout.no_fnmatch_line("*PluggyTeardownRaisedWarning*")


def test_an_event_loop_of_a_wider_fixture_runs_in_the_test(pytester: pytest.Pytester):
    # urllib3's function fixtures start tornado on `IOLoop.current()`: the main
    # thread's loop, which its class fixtures made in the pytest process.
    # Its epoll instance and wake-up socket pair were sealed (/dev/null)
    # in the test: "OSError: [Errno 22] Invalid argument".
    pytester.makepyfile(test_inner="""
import asyncio, threading
import pytest

@pytest.fixture(scope="session")
def loop():
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(asyncio.sleep(0))
    yield loop
    loop.close()

async def woken_by_a_thread():
    future = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()
    threading.Thread(target=lambda: loop.call_soon_threadsafe(future.set_result, 42)).start()
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    assert await reader.read() == b""
    writer.close()
    server.close()
    return await asyncio.wait_for(future, 10)

@pytest.mark.parametrize("n", range(2))
def test_runs_the_main_threads_loop(loop, n):
    assert loop.run_until_complete(woken_by_a_thread()) == 42
""")
    for result in (_plain(pytester), _plain(pytester, "--hermetic")):
        result.assert_outcomes(passed=2)


def test_an_event_loop_closed_at_fork_in_the_child_is_left_closed(pytester: pytest.Pytester):
    # A library that closes its own epoll instance in every fork (libzmq's
    # poller, through an at-fork hook; a Jupyter kernel's tests left one in
    # the xdist worker): the copy made for the test found the number free
    # and dup3 refused to put the copy on itself, EINVAL, the test crashed
    # ("exited with status 1 without reporting"), or where another number
    # was free, a copy nobody owns was put there.  Now it is left as the
    # library left it.
    pytester.makepyfile(test_inner="""
import os, select, socket
import pytest

@pytest.fixture(scope="session")
def closed_in_forks():
    poller = select.epoll()
    left, right = socket.socketpair()
    poller.register(right.fileno(), select.EPOLLIN)
    os.register_at_fork(after_in_child=lambda: os.close(poller.fileno()))
    yield poller.fileno()

@pytest.mark.parametrize("n", range(2))
def test_runs(closed_in_forks, n):
    assert os.getpid() == 2  # in a container
    try:
        found = os.readlink(f"/proc/self/fd/{closed_in_forks}")
    except OSError:
        found = None  # closed (or by now another file's)
    assert found != "anon_inode:[eventpoll]"  # no copy of the library's closed poller
""")
    _plain(pytester, "--hermetic").assert_outcomes(passed=2)


_WARNINGS = '''
import warnings
import pytest

def test_user_warning():
    warnings.warn("plain user warning", UserWarning)

def test_deprecation_shown_by_default():
    warnings.warn("old api", DeprecationWarning)

@pytest.mark.filterwarnings("error::UserWarning")
def test_marked_error():
    warnings.warn("an error by mark", UserWarning)

@pytest.mark.filterwarnings("ignore:quiet")
def test_marked_ignore():
    warnings.warn("quiet please", UserWarning)

def test_ini_error():
    warnings.warn("ini says error", RuntimeWarning)

@pytest.fixture
def warns_in_setup():
    warnings.warn("from a fixture", UserWarning)

def test_fixture_warns(warns_in_setup):
    pass
'''


@pytest.mark.parametrize("args", [(), ("-W", "error::DeprecationWarning"), ("-p", "no:warnings")],
                         ids=["default", "W-error", "no-warnings-plugin"])
def test_warnings_are_filtered_and_recorded_as_in_place(pytester: pytest.Pytester, args: tuple[str, ...]):
    # The child records its warnings under the filters the warnings plugin
    # applied in the parent (ini, -W, marks): the same outcomes, the same
    # warnings summary, as in place.
    pytester.makeini("[pytest]\nfilterwarnings =\n    error::RuntimeWarning\n")
    result = _run(pytester, _WARNINGS, *args)
    plain = _plain(pytester, *args)
    assert result.parseoutcomes() == plain.parseoutcomes()
    for run in (result, plain):
        outcomes = run.parseoutcomes()
        # (without the warnings plugin, no filter applies and nothing is recorded)
        assert outcomes.get("failed", 0) == (0 if "no:warnings" in args else 3 if "-W" in args else 2)
        if "no:warnings" not in args:
            run.stdout.fnmatch_lines(["*warnings summary*", "*plain user warning*", "*from a fixture*"])
            run.stdout.no_fnmatch_line("*quiet please*")
            if "-W" not in args:
                run.stdout.fnmatch_lines(["*DeprecationWarning: old api*"])


def test_the_working_folder_a_wider_fixture_chose_holds_inside(pytester: pytest.Pytester):
    # The next test's container is prepared while the current one runs, and
    # each spec's bindings are kept: a module fixture that changes the working
    # folder between two tests must still be seen by the second (workdir, /tmp).
    pytester.makepyfile(test_a="def test_first():\n    pass\n")
    result = _run(pytester, '''
import os, tempfile
import pytest

@pytest.fixture(scope="module", autouse=True)
def elsewhere():
    old = os.getcwd()
    new = tempfile.mkdtemp(prefix="hermetic-cwd-", dir="/var/tmp")
    os.chdir(new)
    yield new
    os.chdir(old)
    os.rmdir(new)

def test_cwd(elsewhere):
    assert os.getcwd() == elsewhere

def test_cwd_again(elsewhere):
    assert os.getcwd() == elsewhere
''', "-p", "no:randomly")
    result.assert_outcomes(passed=3)


def test_wider_fixtures_output_and_errors_as_in_place(pytester: pytest.Pytester):
    # Wider scopes are set up and torn down in pytest's process under its
    # capture; the steps that would do nothing (the next test of the same
    # module, no wider fixture) are skipped: output and errors still land
    # on the right test, as in place.
    pytester.makepyfile(test_b="def test_other_module():\n    pass\n")
    _run(pytester, '''
import pytest

@pytest.fixture(scope="module")
def shared():
    print("module fixture up")
    yield 1
    print("module fixture down")
    raise RuntimeError("module teardown went wrong")

def test_plain_first():
    pass

def test_uses(shared):
    assert shared == 1

def test_plain_between():
    pass

def test_uses_again(shared):
    assert shared == 1
''', "-p", "no:randomly")
    hermetic = _run(pytester, pytester.path.joinpath("test_inner.py").read_text(), "-p", "no:randomly")
    plain = _plain(pytester, "-p", "no:randomly")
    assert hermetic.parseoutcomes() == plain.parseoutcomes() == {"passed": 5, "errors": 1}
    for run in (hermetic, plain):
        run.stdout.fnmatch_lines(["*ERROR at teardown of test_uses_again*", "*module teardown went wrong*",
                                  "*Captured stdout teardown*", "*module fixture down*"])
        run.stdout.fnmatch_lines(["*_ test_uses _*", "*Captured stdout setup*", "*module fixture up*"])
