"""The pytest plugin, through real inner pytest sessions (pytester), plainly
and under xdist: every outcome arrives as if the test ran in place."""

import time

import pytest

SUITE = r'''
import os, signal, socket, sys, time, warnings
import pytest
from pytest_hermetic import hermetic

@pytest.fixture(scope="session")
def once(tmp_path_factory):
    with open(os.environ["SETUPS_FILE"], "a") as f:
        f.write(f"{os.getpid()}\n")
    return os.getpid()

@pytest.fixture
def broken_setup():
    raise RuntimeError("setup went wrong")

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown went wrong")

@hermetic
def test_pass(once):
    assert os.getpid() == 2 and once != os.getpid()
    assert os.getcwd() == os.environ["INNER_CWD"]  # where pytest was started, as without isolation

@hermetic
def test_assertion_rewriting():
    x = 3
    assert x == 4

@hermetic
def test_setup_error(broken_setup):
    pass

@hermetic
def test_teardown_error(broken_teardown):
    pass

@hermetic
def test_skip_inside():
    pytest.skip("skipped inside")

@hermetic
@pytest.mark.xfail(reason="known")
def test_xfail():
    assert False

@hermetic
@pytest.mark.xfail(reason="not strict")
def test_xpass():
    pass

@hermetic
@pytest.mark.xfail(reason="strict", strict=True)
def test_xpass_strict():
    pass

@hermetic
def test_xfail_raised_inside():
    pytest.xfail("raised inside")

@hermetic
def test_subtests(subtests):
    for i in range(3):
        with subtests.test(i=i):
            assert i != 1

@hermetic
def test_warning():
    warnings.warn("careful inside", UserWarning)

@hermetic(mem="64M")
def test_oom():
    print("about to allocate")
    data = bytearray(400 << 20)

@hermetic(timeout=1)
def test_timeout():
    time.sleep(30)

@hermetic
def test_signal():
    import faulthandler
    faulthandler.disable()
    os.kill(os.getpid(), signal.SIGSEGV)

@hermetic
def test_os_exit():
    os._exit(3)

@hermetic
def test_writes_a_file():
    with open("/var/tmp/hermetic-plugin-test", "w") as f:
        f.write("x")

@hermetic
def test_file_from_previous_test_is_absent():
    assert not os.path.exists("/var/tmp/hermetic-plugin-test")

@hermetic
@pytest.mark.parametrize("n", [1, 2])
def test_same_port_at_once(n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 8765))
    s.listen()
    time.sleep(0.5)

@hermetic
def test_kill_everything():
    import subprocess
    subprocess.run(["sh", "-c", "kill -9 -1"])

@hermetic(image="busybox:test")
def test_busybox_image(tmp_path):
    import hashlib, sqlite3, subprocess
    assert os.path.realpath("/bin/sh") == "/bin/busybox"
    assert subprocess.run([sys.executable, "-c", "print(2)"], capture_output=True, text=True).stdout == "2\n"
    (tmp_path / "kept").write_text("yes")

def test_zz_after_everything(tmp_path_factory):
    # Runs in place, last: the host is untouched and the session fixture ran once per process.
    assert not os.path.exists("/var/tmp/hermetic-plugin-test")
    with open(os.environ["SETUPS_FILE"]) as f:  # shared by xdist workers
        setups = f.read().split()
    assert 1 <= len(setups) <= 2
'''

PYTEST_MAJOR = int(pytest.__version__.split(".")[0])
EXPECTED_FAILURES = {
    "test_assertion_rewriting": "assert 3 == 4",
    "test_oom": "hermetic: out of memory (limit 64 MiB, peak ",
    "test_timeout": "hermetic: timeout after 1 s: killed ",
    "test_signal": "hermetic: killed by signal SIGSEGV",
    "test_os_exit": "hermetic: exited with status 3 without reporting",
    "test_kill_everything": "hermetic: killed by signal SIGKILL",
    "test_xpass_strict": "[XPASS(strict)] strict",
}


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_every_outcome_arrives(pytester: pytest.Pytester, busybox_image, workers, monkeypatch, tmp_path):
    monkeypatch.setenv("SETUPS_FILE", str(tmp_path / "session-setups"))  # tmp_path: outside the inner basetemp
    monkeypatch.setenv("INNER_CWD", str(pytester.path))
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess("-p", "hermetic", "-rA", "-p", "no:cacheprovider", *workers, timeout=240)
    result.assert_outcomes(passed=10, failed=8, errors=2, skipped=1, xfailed=2, xpassed=1, warnings=1)
    text = result.stdout.str()
    for name, message in EXPECTED_FAILURES.items():
        # pytest 7 itself prints a strict XPASS's line with no message
        summary = f"FAILED test_suite.py::{name}" + ("" if name == "test_xpass_strict" and PYTEST_MAJOR < 8 else " - ")
        assert summary in text, name
        assert message in text, (name, message)
    assert "setup went wrong" in text and "teardown went wrong" in text
    # pytest 9's own subtests say SUBFAILED(i=1); pytest-subtests (before 9) "(i=1) SUBFAIL"
    assert ("SUBFAILED(i=" in text or "(i=1) SUBFAIL test_suite.py::test_subtests" in text) and \
        "test_suite.py::test_subtests - assert 1 != 1" in text
    assert "careful inside" in text
    assert "about to allocate" in text  # output captured up to the OOM kill


def test_pytest_exit_inside_stops_the_session(pytester: pytest.Pytester):
    pytester.makepyfile(test_exit='''
import pytest
from pytest_hermetic import hermetic

@hermetic
def test_first():
    pytest.exit("stopped from inside", returncode=3)

def test_never_runs():
    pass
''')
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider")
    assert result.ret == 3
    assert "stopped from inside" in result.stdout.str()
    assert "test_never_runs" not in result.stdout.str().replace("test_exit.py", "")


def test_bad_marker_is_a_collection_error(pytester: pytest.Pytester):
    pytester.makepyfile(test_bad='''
from pytest_hermetic import hermetic

@hermetic(mem="lots")
def test_bad_size():
    pass

def test_next_to_it_still_runs():
    pass
''')
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*test_bad.py::test_bad_size: bad @hermetic marker: mem='lots': not a size*"])
    assert "Traceback" not in result.stdout.str() and "INTERNALERROR" not in result.stdout.str()


def test_missing_image_fails_that_test_only(pytester: pytest.Pytester):
    """An image that is not there: one line in that test's report, the next
    test runs, and the test's private network scope is closed."""
    pytester.makepyfile(test_missing='''
from pytest_hermetic import hermetic

@hermetic(image="hermetic-test-missing:1", net="svc")
def test_missing_image():
    pass

def test_next_to_it_still_runs():
    pass
''')
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*hermetic: image 'hermetic-test-missing:1' is not in the local store*"])
    assert "Traceback" not in result.stdout.str() and "INTERNALERROR" not in result.stdout.str()


def test_hermetic_flag_ini_defaults_and_no_hermetic(pytester: pytest.Pytester):
    pytester.makeini("[pytest]\nhermetic_mem = 64M\n")
    pytester.makepyfile(test_all='''
import os

def test_pid():
    print("PID", os.getpid())
    assert os.getpid() == 2

def test_memory_limit_from_ini():
    bytearray(300 << 20)
''')
    everything = pytester.runpytest_subprocess("-p", "hermetic", "--hermetic", "-p", "no:cacheprovider")
    everything.assert_outcomes(passed=1, failed=1)
    assert "out of memory (limit 64 MiB" in everything.stdout.str()
    everything.stdout.fnmatch_lines(["hermetic: cgroup *, root, overlayfs"])
    off = pytester.runpytest_subprocess("-p", "hermetic", "--hermetic", "--no-hermetic", "-p", "no:cacheprovider")
    off.assert_outcomes(passed=1, failed=1)  # in place: pid is not 2, and no limit
    assert "out of memory" not in off.stdout.str()


def test_plugin_loads_without_autoload(pytester: pytest.Pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_one='''
import os
from pytest_hermetic import hermetic

@hermetic
def test_inside():
    assert os.getpid() == 2
''')
    pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_pytest_timeout_kills_the_container_not_the_run(pytester: pytest.Pytester):
    pytester.makepyfile(test_slow='''
import time, pytest
from pytest_hermetic import hermetic

@hermetic
@pytest.mark.timeout(1)
def test_slow():
    time.sleep(30)

def test_after():
    pass
''')
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "timeout", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    assert "hermetic: timeout after 1 s: killed" in result.stdout.str()


def test_pytest_timeout_holds_in_prepared_containers(pytester: pytest.Pytester):
    # Each next test's container is prepared while the current one runs,
    # with the timeout pytest-timeout gave the current one; a test whose own
    # differs gets a fresh container with its own.
    pytester.makepyfile(test_slow='''
import time, pytest

def test_quick():
    pass

def test_slow_global():
    time.sleep(30)

@pytest.mark.timeout(1)
def test_slow_own():
    time.sleep(30)

def test_after():
    pass
''')
    started = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "hermetic", "--hermetic", "-p", "timeout", "--timeout", "3",
                                           "-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["*test_slow_global*hermetic: timeout after 3 s: killed*",
                                 "*test_slow_own*hermetic: timeout after 1 s: killed*"])
    assert time.monotonic() - started < 25


def test_coverage_counts_lines_run_inside(pytester: pytest.Pytester):
    pytester.makepyfile(branchy='''
def f(x):
    if x:
        return "yes"
    return "no"
''', test_cov='''
from pytest_hermetic import hermetic
from branchy import f

@hermetic
def test_yes():
    assert f(1) == "yes"
''')
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", "--cov=branchy",
                                           "--cov-report=term-missing")
    result.assert_outcomes(passed=1)
    # Only the def line runs in the parent: 75% means lines 2 and 3 were counted inside.
    result.stdout.fnmatch_lines(["branchy.py * 4 * 1 * 75%*4"])
    # Arcs (--cov-branch) and per-test contexts travel as well (as plain data, see coverage_relay).
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", "--cov=branchy",
                                           "--cov-branch", "--cov-context=test", "--cov-report=term-missing")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["branchy.py * 4 * 1 * 2 * 1 * 67%*4"])  # 2 branches, 1 partial
    from coverage import CoverageData

    data = CoverageData(str(pytester.path / ".coverage"))
    data.read()
    assert sorted(data.measured_contexts()) == ["", "test_cov.py::test_yes|run"]
    data.set_query_contexts(["test_yes"])
    assert sorted(data.lines(str(pytester.path / "branchy.py"))) == [2, 3]


CONTAINERS_SUITE = r'''
import os, time
from pytest_hermetic import hermetic

def wait_for(service, text):
    for _ in range(100):
        if text in service.logs():
            return
        time.sleep(0.05)
    raise AssertionError(service.logs())

def test_in_place(containers):
    svc = containers.run("busybox:test", ["sh", "-c", "echo ready; sleep 60"], name="svc")
    assert svc.exec("hostname").output == "svc\n"
    wait_for(svc, "ready")

@hermetic
def test_from_inside_a_hermetic_test(containers):
    assert os.getpid() == 2
    db = containers.run("busybox:test", ["sh", "-c", "echo hello; sleep 60"], name="db", mem="64M")
    result = db.exec("sh", "-c", "echo $((6 * 7)); exit 3")
    assert (result.exit_code, result.output) == (3, "42\n")
    wait_for(db, "hello")
    assert db.stop(timeout=1)[0] == 137  # sh as PID 1 ignores SIGTERM: killed after the grace time

@hermetic
def test_bad_options_raise_inside(containers):
    import pytest
    from pytest_hermetic.errors import SpecError
    with pytest.raises(SpecError, match="mem='lots'"):
        containers.run("busybox:test", ["true"], mem="lots")

@hermetic
def test_left_running_is_removed(containers):
    containers.run("busybox:test", ["sleep", "60"])
'''


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_containers_fixture(pytester: pytest.Pytester, busybox_image, workers):
    pytester.makepyfile(test_services=CONTAINERS_SUITE)
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", *workers, timeout=120)
    result.assert_outcomes(passed=4)


def test_fixtures_and_markers_behave_as_in_place(pytester: pytest.Pytester):
    pytester.makepyfile(test_more='''
import logging, os, sys
import pytest
from pytest_hermetic import hermetic

pytestmark = hermetic(mem="256M")  # every test of this module

def test_capsys(capsys):
    print("to stdout"); print("to stderr", file=sys.stderr)
    assert capsys.readouterr() == ("to stdout\\n", "to stderr\\n")
    assert os.getpid() == 2

def test_caplog(caplog):
    logging.getLogger("x").warning("logged inside")
    assert "logged inside" in caplog.text

def test_monkeypatch(monkeypatch):
    monkeypatch.setenv("HERMETIC_DEMO", "1")
    assert os.environ["HERMETIC_DEMO"] == "1"

def test_user_properties(record_property):
    record_property("answer", 42)

class TestAClass:
    def test_method(self):
        assert os.getpid() == 2

def test_failing_log():
    logging.getLogger("y").error("error logged before failing")
    assert False
''')
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", "--junitxml=junit.xml", "-rA")
    result.assert_outcomes(passed=5, failed=1)
    assert "error logged before failing" in result.stdout.str()  # the log section came home
    junit = (pytester.path / "junit.xml").read_text()
    assert 'name="answer" value="42"' in junit  # user_properties came home
    unmarked = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", "-s", "-k", "capsys")
    unmarked.assert_outcomes(passed=1)  # -s: capsys still captures inside


def test_marker_env_and_env_file_reach_the_test(pytester: pytest.Pytester, tmp_path, monkeypatch):
    """A callable test keeps pytest's environment and gets the marker's variables on top."""
    env_file = tmp_path / "vars.env"
    env_file.write_text("FROM_FILE=file\nBOTH=file\n")
    pytester.makepyfile(test_env=f'''
import os
from pytest_hermetic import hermetic

@hermetic(env={{"X": "1", "BOTH": "marker"}}, env_file={str(env_file)!r})
def test_env():
    assert (os.environ.get("X"), os.environ.get("FROM_FILE"), os.environ.get("BOTH")) == ("1", "file", "marker")
    assert os.environ.get("KEPT_FROM_PYTEST") == "yes"

def test_not_leaked_into_the_parent():
    assert "X" not in os.environ
''')
    monkeypatch.setenv("KEPT_FROM_PYTEST", "yes")
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_items_with_the_same_options_share_one_spec(pytester: pytest.Pytester):
    # One Spec per set of options, not per item: pytest's size (and so every
    # fork's cost) grew by ~1.7 KiB per collected item.
    pytester.makepyfile(test_many='''
import pytest
from pytest_hermetic import hermetic

@pytest.mark.parametrize("i", range(3))
def test_default(i):
    pass

@hermetic(mem="64M", env={"A": "1"}, volumes=["/etc:/mnt/etc:ro"])
@pytest.mark.parametrize("i", range(2))
def test_limited(i):
    pass

@hermetic(mem="64M", env={"A": "2"}, volumes=["/etc:/mnt/etc:ro"])
def test_other_env():
    pass
''')
    items, _ = pytester.inline_genitems("-p", "hermetic", "--hermetic", "-p", "no:cacheprovider")
    runner = items[0].config.pluginmanager.get_plugin("hermetic-runner")
    specs = [runner.spec_for(item) for item in items]
    assert specs[0] is specs[1] is specs[2]
    assert specs[3] is specs[4] and specs[3] is not specs[0]
    assert specs[5] is not specs[3] and specs[5].env == {"A": "2"} and specs[3].env == {"A": "1"}
    assert specs[3].mem == 64 << 20
