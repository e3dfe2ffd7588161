"""The zygote (pytest_hermetic/forked/zygote.py): a fork of pytest that forks
the hermetic tests' children, renewed whenever pytest's own state changes
between two tests, so a test always sees pytest as a fork made just before
it would (module and late session fixtures, a test run in place), through
real inner pytest sessions."""

import json

import pytest

CONFTEST = r'''
import json, os
from pytest_hermetic.forked import zygote

SEEN = []

def pytest_runtest_logfinish(nodeid):
    current = zygote.current()  # (in pytest, after each test)
    SEEN.append([nodeid.split("::")[-1], current.pid if current else None])

def pytest_sessionfinish(session):
    with open(os.environ["ZYGOTE_LOG"], "w") as f:
        json.dump(SEEN, f)
'''

SUITE_A = r'''
import os
import pytest
from pytest_hermetic import hermetic

STATE = {"in_place": 0}

@pytest.fixture(scope="session")
def late():
    return os.getpid()  # made in pytest when test_5 first asks for it

@hermetic
def test_1():
    assert os.getpid() == 2

@hermetic
def test_2():
    assert os.getpid() == 2 and STATE["in_place"] == 0

def test_3_in_place():
    STATE["in_place"] += 1  # pytest's own state, changed between two hermetic tests

@hermetic
def test_4_sees_the_change():
    assert STATE["in_place"] == 1

@hermetic
def test_5_late(late):
    assert late != os.getpid() == 2

@hermetic
def test_6_late_again(late):
    assert late != os.getpid() == 2

@hermetic
def test_7_holds_nothing_of_the_zygote():
    # The zygote's socket to pytest, its own PID namespace's fd, its
    # placeholders' namespaces, pytest's descriptors: /dev/null here, as in
    # a child pytest forks itself (runtime/descriptors.py)
    import stat
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
            mode = os.stat(f"/proc/self/fd/{fd}").st_mode
        except OSError:
            continue  # (the listing's own)
        assert not link.startswith(("socket:", "anon_inode:", "pid:", "pidfd:", "mnt:", "net:", "ipc:", "uts:",
                                    "user:", "cgroup:", "time:")), (fd, link)
        assert not stat.S_ISDIR(mode), (fd, link)  # (the listing's own fd is closed by now)
'''

SUITE_B = r'''
import os
import pytest
from pytest_hermetic import hermetic

@pytest.fixture(scope="module")
def made_here():
    os.environ["MADE_BY_MODULE_B"] = "yes"  # in pytest, at module b's set-up
    yield
    del os.environ["MADE_BY_MODULE_B"]

@hermetic
def test_1(made_here):
    assert os.environ["MADE_BY_MODULE_B"] == "yes"

@hermetic
def test_2(made_here):
    assert os.environ["MADE_BY_MODULE_B"] == "yes"
'''


def _session(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, list]:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_a=SUITE_A, test_b=SUITE_B)
    log = pytester.path / "zygotes.json"
    pytester._monkeypatch.setenv("ZYGOTE_LOG", str(log))
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", "-p", "no:randomly",
                                           *args, timeout=120)
    return result, json.loads(log.read_text()) if log.exists() else []


def test_a_zygote_serves_until_pytest_changes_and_tests_see_every_change(pytester: pytest.Pytester):
    result, seen = _session(pytester)
    result.assert_outcomes(passed=9)
    zygote = dict(seen)
    assert all(zygote[name] for name in zygote if name != "test_3_in_place"), seen
    # The same zygote while nothing happens in pytest between two tests...
    assert zygote["test_1"] == zygote["test_2"]
    assert zygote["test_5_late"] == zygote["test_6_late_again"] == zygote["test_7_holds_nothing_of_the_zygote"]
    # ...a new one after a test ran in pytest, after a session fixture was
    # made there, and for the next module (its fixture, the last one's teardown).
    assert zygote["test_4_sees_the_change"] != zygote["test_2"]
    assert zygote["test_5_late"] != zygote["test_4_sees_the_change"]
    b = [pid for name, pid in seen if name in ("test_1", "test_2")][2:]
    assert b[0] == b[1] and b[0] != zygote["test_7_holds_nothing_of_the_zygote"]


def test_the_children_of_one_zygote_draw_random_numbers_of_their_own(pytester: pytest.Pytester):
    # The zygote forks without Python's after-fork hooks (runtime/fork.py
    # bare_fork): `random`'s, which reseeds each child, must still hold.
    pytester.makeconftest(CONFTEST)
    draw = "(tmp_path_factory.getbasetemp() / 'draws').open('a').write(f'{random.random()}\\n')"
    pytester.makepyfile(test_r=f"""
import random
from pytest_hermetic import hermetic

random.seed(7)  # in pytest, at import: the state every fork starts from

@hermetic
def test_1(tmp_path_factory):
    {draw}

@hermetic
def test_2(tmp_path_factory):
    {draw}

@hermetic
def test_3(tmp_path_factory):
    {draw}
""")
    log = pytester.path / "zygotes.json"
    pytester._monkeypatch.setenv("ZYGOTE_LOG", str(log))
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", "-p", "no:randomly",
                                           f"--basetemp={pytester.path / 'base'}", timeout=120)
    result.assert_outcomes(passed=3)
    seen = json.loads(log.read_text())
    assert seen[0][1] is not None and len({pid for _, pid in seen}) == 1, seen  # one zygote forked all three
    draws = (pytester.path / "base" / "draws").read_text().split()
    assert len(draws) == 3 and len(set(draws)) == 3, draws


def test_the_ini_option_turns_it_off(pytester: pytest.Pytester):
    pytester.makeini("[pytest]\nhermetic_zygote = false\n")
    result, seen = _session(pytester)
    result.assert_outcomes(passed=9)
    assert [pid for _, pid in seen] == [None] * 9


def test_a_stopped_session_leaves_the_next_tests_container_unused(pytester: pytest.Pytester):
    # -x: the next two tests' containers were started while the first ran;
    # the session stops after the first, and nothing is left behind (the
    # suite's leak check counts processes, mounts and cgroups).
    pytester.makepyfile(test_stop='''
import os
from pytest_hermetic import hermetic

@hermetic
def test_1_fails():
    assert os.getpid() == 1

@hermetic
def test_2_never_runs():
    open("/never", "w")

@hermetic
def test_3_never_runs():
    open("/never", "w")
''')
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", "-x", timeout=120)
    result.assert_outcomes(failed=1)


AHEAD_CONFTEST = r'''
import json, os
from pytest_hermetic.forked import per_test

STARTED = []

def pytest_runtest_logfinish(nodeid):
    # (in pytest, after each test: the tests whose containers are started ahead)
    STARTED.append([nodeid.split("::")[-1], [ahead.item.name for ahead in per_test._aheads]])

def pytest_sessionfinish(session):
    with open(os.environ["AHEAD_LOG"], "w") as f:
        json.dump(STARTED, f)
'''

SUITE_AHEAD = r'''
import os
import pytest
from pytest_hermetic import hermetic

@pytest.fixture(scope="session")
def late():
    os.environ["MADE_LATE"] = "yes"  # in pytest, when test_3 first asks for it
    yield
    del os.environ["MADE_LATE"]

@hermetic
def test_1():
    assert "MADE_LATE" not in os.environ

@hermetic
def test_2():
    assert "MADE_LATE" not in os.environ

@hermetic
def test_3(late):
    assert os.environ["MADE_LATE"] == "yes"  # forked after the fixture was made, not during test_1

@hermetic
def test_4(late):
    assert os.environ["MADE_LATE"] == "yes"

@hermetic
def test_5():
    pass

@hermetic
def test_6():
    pass
'''


def test_the_test_after_next_is_started_ahead_only_where_nothing_comes_between(pytester: pytest.Pytester):
    # Two containers are started ahead (per_test.AHEAD): during test_1 the
    # zygote forks test_2's child, but not test_3's, whose session fixture is
    # made in pytest after test_2; from test_3 on nothing comes between, and
    # each test has the next two started ahead.
    pytester.makeconftest(AHEAD_CONFTEST)
    pytester.makepyfile(test_ahead=SUITE_AHEAD)
    log = pytester.path / "ahead.json"
    pytester._monkeypatch.setenv("AHEAD_LOG", str(log))
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", "-p", "no:randomly",
                                           timeout=120)
    result.assert_outcomes(passed=6)
    assert dict(json.loads(log.read_text())) == {
        "test_1": ["test_2"], "test_2": [], "test_3": ["test_4", "test_5"], "test_4": ["test_5", "test_6"],
        "test_5": ["test_6"], "test_6": []}


SUITE_CLASSES = r'''
import os
import unittest
import pytest
from pytest_hermetic import hermetic

pytestmark = hermetic

def test_1(request):
    assert request.cls is None and os.getpid() == 2

class TestPlain:
    def test_2(self, request):
        assert request.cls is TestPlain and request.node.parent.name == "TestPlain"

    def test_3(self, request):
        assert request.cls is TestPlain

class TestAlsoPlain:
    def test_4(self, request):
        assert request.cls is TestAlsoPlain

class TestWithSetupClass:
    @classmethod
    def setup_class(cls):
        os.environ["SETUP_CLASS"] = "yes"  # in pytest, an xunit fixture of class scope

    @classmethod
    def teardown_class(cls):
        del os.environ["SETUP_CLASS"]  # in pytest, the class node's finalizer

    def test_5(self):
        assert os.environ["SETUP_CLASS"] == "yes"

def test_6():
    assert "SETUP_CLASS" not in os.environ  # forked after the class's teardown, not during test_5

class TestUnittest(unittest.TestCase):
    def test_7(self):
        assert "SETUP_CLASS" not in os.environ

def test_8(request):
    assert request.cls is None
'''


def test_plain_classes_and_modules_keep_the_zygote(pytester: pytest.Pytester):
    # Leaving a class or module that holds no fixture or finalizer, for one
    # whose set-up does nothing, changes nothing in pytest but its stack of
    # set-up nodes: the zygote serves on, and each child catches up with
    # that stack (compat.catch_up); a class with an xunit setup_class (a
    # fixture of class scope, torn down in pytest) or a unittest class
    # still takes a new one, before and after it.
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_c=SUITE_CLASSES, test_d="from pytest_hermetic import hermetic\n\n"
                                                     "@hermetic\ndef test_9(request):\n"
                                                     "    assert request.module.__name__ == 'test_d'\n")
    # A package whose __init__ has setup_module: its set-up runs in pytest.
    package = pytester.mkpydir("zpkg")
    (package / "__init__.py").write_text("import os\n\ndef setup_module():\n    os.environ['PACKAGE_SET_UP'] = 'yes'\n")
    (package / "test_e.py").write_text("import os\nfrom pytest_hermetic import hermetic\n\n@hermetic\n"
                                       "def test_10():\n    assert os.environ['PACKAGE_SET_UP'] == 'yes'\n")
    log = pytester.path / "zygotes.json"
    pytester._monkeypatch.setenv("ZYGOTE_LOG", str(log))
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", "-p", "no:randomly",
                                           timeout=120)
    result.assert_outcomes(passed=10)
    zygote = dict(json.loads(log.read_text()))
    assert None not in zygote.values(), zygote
    assert zygote["test_10"] != zygote["test_9"], zygote
    assert zygote["test_1"] == zygote["test_2"] == zygote["test_3"] == zygote["test_4"], zygote
    assert len({zygote["test_4"], zygote["test_5"], zygote["test_6"], zygote["test_7"], zygote["test_8"]}) == 5, zygote
    assert zygote["test_8"] == zygote["test_9"], zygote


LATE_FILES = r'''
import os

held = []

def pytest_runtest_logreport(report):
    # After the first test (the zygote is forked by then), pytest's process
    # holds a named file open for writing on every free low number: some are
    # numbers the zygote gives to the descriptors it hands each child.
    if report.when == "teardown" and not held:
        late = os.open(os.path.join(os.environ["LATE_DIR"], "late.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        held.append(late)
        for fd in range(3, 64):
            try:
                os.fstat(fd)
                continue
            except OSError:
                pass
            try:
                held.append(os.dup2(late, fd, inheritable=False))
            except OSError:  # (EBUSY: a number another thread is opening right now)
                pass
'''


LATE_TESTS = r'''
import os

def check(i):
    print(f"out {i}")
    held = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            held[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # (listdir's own, closed by now)
            pass
    assert not [link for link in held.values() if link.endswith("late.log")], held

'''


def test_a_file_pytest_opens_after_the_zygotes_fork_is_not_relayed_over_a_childs_descriptor(pytester: pytest.Pytester):
    """pytest relays its named files open for writing to each child
    (runtime/file_relay.py: the inner session's output is a file here); one
    it opened after the zygote's fork is not in the zygote, and its number
    may be one the zygote gave a descriptor of the child's own, which must
    move out of the way before the relay's end lands there
    (zygote_process.make_room; tests/unit/test_zygote_relay.py holds it to
    each case): else its reports or its word to go can be lost, and the
    test "ends without reporting".  Here ~35 such numbers reach the children
    (which of the child's own they meet depends on the layout of pytest's
    descriptors); every test reports, none holds the late file itself (only
    pipes to pytest's relay), and none writes to it."""
    pytester.makeconftest(LATE_FILES)
    pytester._monkeypatch.setenv("LATE_DIR", str(pytester.path))
    pytester.makepyfile(test_late=LATE_TESTS + "".join(f"def test_{i}():\n    check({i})\n\n" for i in range(8)))
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", "-p", "no:randomly",
                                           "--hermetic", timeout=120)
    result.assert_outcomes(passed=8)
    assert (pytester.path / "late.log").read_text() == ""  # (no child wrote to it: it is not theirs)


IMPORTS_CONFTEST = r'''
import os, sys

LOG = os.environ["IMPORT_LOG"]  # in the session's base folder: each container's too
PYTEST_PIDNS = os.readlink("/proc/self/ns/pid")

class _Imports:
    """Notes each import that a process in a container (a PID namespace
    not pytest's: a test's child) looks for."""

    def find_spec(self, name, path=None, target=None):
        if os.readlink("/proc/self/ns/pid") != PYTEST_PIDNS:
            with open(LOG, "a") as f:
                f.write(name + "\n")
        return None

sys.meta_path.insert(0, _Imports())
'''


def test_a_tests_child_imports_nothing(pytester: pytest.Pytester):
    # What a child needs is in the zygote's memory before it forks: an
    # import in each child cost each test ~3 ms where pytest's rewritten
    # byte code of the plugin is not cached (PYTHONDONTWRITEBYTECODE, a
    # read-only install), ~1 ms where it is.  Plain tests under --hermetic:
    # the shape in which pytest forked the zygote before it imported what
    # the children then did (runtime/spare.py).
    pytester.makeconftest(IMPORTS_CONFTEST)
    tests = "".join(f"\ndef test_{i}(tmp_path):\n    (tmp_path / 'f').write_text('x')\n    assert {i} < 4\n"
                    for i in range(6))
    pytester.makepyfile(test_one=tests, test_two=tests)
    log = pytester.path / "base" / "imports.log"
    pytester._monkeypatch.setenv("IMPORT_LOG", str(log))
    result = pytester.runpytest_subprocess("--hermetic", "-p", "no:cacheprovider", "-p", "no:randomly",
                                           f"--basetemp={pytester.path / 'base'}", timeout=120)
    result.assert_outcomes(passed=8, failed=4)  # (a failure's report is made in the child too)
    assert not log.exists(), sorted(set(log.read_text().split()))


SERVED_CONFTEST = r'''
import json, os
from pytest_hermetic.forked import per_test, zygote

SEEN = []

def pytest_runtest_logfinish(nodeid):
    # (in pytest, after each test: the zygote, and the tests whose containers are started ahead)
    current = zygote.current()
    SEEN.append([nodeid.split("::")[-1], current.pid if current else None, [a.item.name for a in per_test._aheads]])

def pytest_sessionfinish(session):
    with open(os.environ["SERVED_LOG"], "w") as f:
        json.dump(SEEN, f)
'''


def _served_and_ahead(pytester: pytest.Pytester, files: dict[str, str], passed: int, *args: str) -> dict:
    """An inner session of `files`: test name -> (pid of the zygote after
    it, or None; the tests whose containers were started ahead then)."""
    pytester.makeconftest(SERVED_CONFTEST)
    pytester.makepyfile(**files)
    log = pytester.path / "served.json"
    pytester._monkeypatch.setenv("SERVED_LOG", str(log))
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", "-p", "no:randomly",
                                           *args, timeout=120)
    result.assert_outcomes(passed=passed)
    return {name: (pid, ahead) for name, pid, ahead in json.loads(log.read_text())}

CONTAINED = r'''
import os

def _as_dockers_default_container():
    """What every container holds, no more: Docker's default capabilities,
    no new privileges, the seccomp filter, a session of its own."""
    with open("/proc/self/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    assert status["CapBnd"] == status["CapEff"] == "00000000a80425fb", status
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2", status
    assert os.getsid(0) != os.getsid(1)  # (not PID 1's session, nor pytest's)
'''


SUITE_IMAGES = CONTAINED + r'''
import os, subprocess, time
from pytest_hermetic import hermetic

def _in_busybox():
    return os.path.realpath("/bin/sh") == "/bin/busybox"

def _processes():
    names = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/comm") as f:
                    names.append(f.read().strip())
            except OSError:
                pass  # (gone)
    return names

LEFT = ("/etc/left-behind", "/tmp/left-behind", "/dev/shm/left-behind", "/root/left-behind")

@hermetic
def test_1_host():
    assert not _in_busybox()

@hermetic(image="busybox:test")
def test_2_image_leaves_things_behind():
    assert _in_busybox() and os.getpid() == 2
    _as_dockers_default_container()
    for path in LEFT:
        with open(path, "w") as f:
            f.write("test 2 was here")
    subprocess.Popen(["sleep", "600"], start_new_session=True)  # (busybox's)
    for _ in range(500):  # (its name is python's until its exec)
        if "sleep" in _processes():
            break
        time.sleep(0.01)
    assert "sleep" in _processes()

@hermetic(image="busybox:test")
def test_3_image_finds_none_of_it():
    assert _in_busybox() and os.getpid() == 2
    assert [path for path in LEFT if os.path.exists(path)] == []
    assert "sleep" not in _processes()
    for path in LEFT:  # (and leaves them again, for test 4)
        with open(path, "w") as f:
            f.write("test 3 was here")

@hermetic
def test_4_host_again():
    assert not _in_busybox()
    assert [path for path in LEFT if os.path.exists(path)] == []

@hermetic(image="busybox:test")
def test_5_image_again():
    assert _in_busybox()
    assert [path for path in LEFT if os.path.exists(path)] == []
'''


def test_the_zygote_serves_tests_in_images_and_each_gets_a_fresh_root(pytester: pytest.Pytester, busybox_image):
    # Tests in an image (not only `host`) are forked by the zygote and
    # started ahead, the next two while a test runs, whatever the image of
    # the one before; each still gets a root of its own: files one test
    # left in the image's /etc, /tmp, /dev/shm or home, and its processes,
    # are not there for the next (nor for a `host` test between them).
    seen = _served_and_ahead(pytester, {"test_images": SUITE_IMAGES}, 5)
    assert seen["test_1_host"][0] is not None and len({pid for pid, _ in seen.values()}) == 1, seen  # one zygote
    assert seen["test_1_host"][1] == ["test_2_image_leaves_things_behind", "test_3_image_finds_none_of_it"], seen
    assert seen["test_2_image_leaves_things_behind"][1] == ["test_3_image_finds_none_of_it", "test_4_host_again"], seen
    assert seen["test_4_host_again"][1] == ["test_5_image_again"], seen


SUITE_BRIDGE = CONTAINED + r'''
import fcntl, os, socket, struct
from pytest_hermetic import hermetic


def _eth0():
    """(MAC, IPv4 address) of eth0, up, in this test's network namespace."""
    with open("/sys/class/net/eth0/operstate") as f:
        assert f.read().strip() in ("up", "unknown")
    with open("/sys/class/net/eth0/address") as f:
        mac = f.read().strip()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ifreq = fcntl.ioctl(sock.fileno(), 0x8915, struct.pack("256s", b"eth0"))  # SIOCGIFADDR
    finally:
        sock.close()
    return mac, socket.inet_ntoa(ifreq[20:24])

def _note(tmp_path_factory, name):
    _as_dockers_default_container()
    mac, address = _eth0()
    with open(tmp_path_factory.getbasetemp() / "bridged.log", "a") as f:
        f.write(f"{name} {mac} {address}\n")

LEFT_OPEN = []

@hermetic(net=True)
def test_1(tmp_path_factory):
    _note(tmp_path_factory, "test_1")
    listener = socket.create_server(("0.0.0.0", 45678))
    LEFT_OPEN.append(listener)  # (left listening: the test's namespace goes with it)

@hermetic(net=True)
def test_2(tmp_path_factory):
    _note(tmp_path_factory, "test_2")
    socket.create_server(("0.0.0.0", 45678)).close()  # (free: not test_1's namespace)
    assert open("/proc/net/tcp").read().count("\n") == 1  # (no socket of test_1's: the header only)

@hermetic
def test_3_no_network():
    assert sorted(os.listdir("/sys/class/net")) == ["lo"]

@hermetic(net=True)
def test_4(tmp_path_factory):
    _note(tmp_path_factory, "test_4")
'''


def test_the_zygote_serves_tests_on_the_hosts_bridge_started_ahead_each_wired_on_its_own(pytester: pytest.Pytester):
    # `net=True` tests are forked by the zygote and started ahead too: pytest
    # wires a veth into the namespaces it made ahead, before the fork
    # (process.spawn), instead of waiting for the child's own.  Each test
    # still has an eth0 of its own (its own MAC and address, up), nothing of
    # the test before (a listener left open), and a test without a network
    # between them has none.
    base = pytester.path / "base"
    seen = _served_and_ahead(pytester, {"test_bridged": SUITE_BRIDGE}, 4, f"--basetemp={base}")
    assert seen["test_1"][0] is not None and len({pid for pid, _ in seen.values()}) == 1, seen  # one zygote
    assert seen["test_1"][1] == ["test_2", "test_3_no_network"], seen
    assert seen["test_2"][1] == ["test_3_no_network", "test_4"], seen
    wired = [line.split() for line in (base / "bridged.log").read_text().splitlines()]
    assert [name for name, _, _ in wired] == ["test_1", "test_2", "test_4"], wired
    assert len({mac for _, mac, _ in wired}) == 3 and wired[0][2] != wired[1][2], wired  # (1 and 2 live at once)
