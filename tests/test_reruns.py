"""Rerun plugins under `--hermetic` (issue 13): pytest-rerunfailures reruns a
failed hermetic test in a fresh container, and the session reports it as it
does in place (RERUN outcomes, the rerun summary, the counts)."""

import re

import pytest

# Fails at its first attempt only: the mark lies in pytest's basetemp, which
# a hermetic test writes through to the host (its /tmp is thrown away).
ONCE = '''
import os, pytest

def _first(request, tmp_path_factory):
    mark = tmp_path_factory.getbasetemp() / ("attempted-" + request.node.name)
    if mark.exists():
        return False
    mark.touch()
    return True
'''


def _session(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # flaky claims the same marker name; these sessions are pytest-rerunfailures'.
    return pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", "-p", "no:flaky", "-rfER",
                                         *args, timeout=120)


def _conclusion(result: pytest.RunResult) -> tuple[dict, list[str]]:
    """The counts and the summary lines (sorted: xdist finishes in any order)."""
    lines = [line for line in result.outlines if re.match(r"(RERUN|PASSED|FAILED|ERROR) test_", line)]
    return result.parseoutcomes(), sorted(lines)


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_a_test_that_fails_once_passes_on_its_rerun_as_in_place(pytester: pytest.Pytester, xdist: tuple):
    pytester.makepyfile(test_inner=ONCE + '''
@pytest.mark.flaky(reruns=2)
def test_once(request, tmp_path_factory):
    assert not _first(request, tmp_path_factory), "first attempt"

def test_always():
    assert False, "always"

def test_passes():
    pass

@pytest.mark.xfail
def test_expected():
    assert False
''')
    hermetic = _session(pytester, "--hermetic", "--reruns", "1", *xdist)
    counts, lines = _conclusion(hermetic)
    assert counts == {"failed": 1, "passed": 2, "xfailed": 1, "rerun": 2}, hermetic.stdout.str()
    # The rerun summary (each attempt) and the short summary (the failure).
    assert lines == ["FAILED test_inner.py::test_always", "FAILED test_inner.py::test_always - AssertionError: always",
                     "PASSED test_inner.py::test_once", "RERUN test_inner.py::test_always",
                     "RERUN test_inner.py::test_once"], hermetic.stdout.str()
    plain = _session(pytester, "--reruns", "1", *xdist)
    assert _conclusion(plain) == (counts, lines), plain.stdout.str()


def test_reruns_of_a_test_that_always_fails(pytester: pytest.Pytester):
    pytester.makepyfile(test_inner='''
def test_always():
    assert False, "always"
''')
    result = _session(pytester, "--hermetic", "--reruns", "3", "-v")
    assert result.parseoutcomes() == {"failed": 1, "rerun": 3}, result.stdout.str()
    result.stdout.fnmatch_lines(["test_inner.py::test_always RERUN *", "test_inner.py::test_always RERUN *",
                                 "test_inner.py::test_always RERUN *", "test_inner.py::test_always FAILED *"])
    assert _conclusion(result)[1] == ["FAILED test_inner.py::test_always",
                                      "FAILED test_inner.py::test_always - AssertionError: always"] + [
        "RERUN test_inner.py::test_always"] * 3


def test_each_attempt_runs_in_a_fresh_container(pytester: pytest.Pytester):
    # The failed attempt's files under /tmp are gone at the rerun; a module
    # fixture, set up in the pytest process, stays for it, as in place.
    pytester.makepyfile(test_inner=ONCE + '''
@pytest.fixture(scope="module")
def setups(tmp_path_factory):
    counter = tmp_path_factory.getbasetemp() / "module-setups"
    counter.write_text(str(int(counter.read_text()) + 1 if counter.exists() else 1))
    return counter

@pytest.mark.flaky(reruns=1)
def test_fresh(request, tmp_path_factory, setups):
    if _first(request, tmp_path_factory):
        open("/tmp/left-by-the-failed-attempt", "w").close()
        assert False, "first attempt"
    assert not os.path.exists("/tmp/left-by-the-failed-attempt")
    assert setups.read_text() == "1"
''')
    result = _session(pytester, "--hermetic")
    assert result.parseoutcomes() == {"passed": 1, "rerun": 1}, result.stdout.str()


def test_reruns_need_the_plugin(pytester: pytest.Pytester):
    # Without pytest-rerunfailures the marker reruns nothing, as in place.
    pytester.makepyfile(test_inner=ONCE + '''
@pytest.mark.flaky(reruns=2)
def test_once(request, tmp_path_factory):
    assert not _first(request, tmp_path_factory), "first attempt"
''')
    result = _session(pytester, "--hermetic", "-p", "no:rerunfailures", "-W", "ignore::pytest.PytestUnknownMarkWarning")
    result.assert_outcomes(failed=1)


def test_the_plugin_decides_from_the_exception_raised_inside(pytester: pytest.Pytester):
    # --only-rerun and condition= need the exception, which only the
    # container has: the same tests are rerun as in place.
    pytester.makepyfile(test_inner='''
import pytest

def test_value():
    raise ValueError("rerun me")

def test_key():
    raise KeyError("not me")

@pytest.mark.flaky(reruns=2, condition="sys.platform == 'nowhere'")
def test_condition_false():
    assert False
''')
    hermetic = _session(pytester, "--hermetic", "--reruns", "2", "--only-rerun", "ValueError")
    counts, lines = _conclusion(hermetic)
    assert counts == {"failed": 3, "rerun": 2}, hermetic.stdout.str()
    assert lines.count("RERUN test_inner.py::test_value") == 2, lines
    assert _conclusion(_session(pytester, "--reruns", "2", "--only-rerun", "ValueError")) == (counts, lines)


def test_the_plugins_status_server_is_not_relayed_into_tests(pytester: pytest.Pytester):
    # With xdist installed the plugin listens on loopback for its workers;
    # a test never needs it, and mirroring it would cost every test a relay.
    pytester.makepyfile(test_inner='''
import socket, pytest

@pytest.fixture(scope="session")
def port(request):  # in the pytest process, where the server is
    return request.config.failures_db.sock_port

def test_unreachable(port):
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
''')
    result = _session(pytester, "--hermetic", "-p", "xdist", "-W", "error")
    assert result.parseoutcomes() == {"passed": 1}, result.stdout.str()


def test_a_failed_wider_fixture_is_reported_once_and_torn_down(pytester: pytest.Pytester):
    # The wider scopes are set up in the pytest process; a failure there is
    # not rerun under --hermetic (docs/pytest.md), and the session's fixtures
    # are still torn down (the plugin's hook would hold them back for a rerun).
    pytester.makepyfile(test_inner='''
import pytest

@pytest.fixture(scope="module")
def broken():
    raise RuntimeError("module fixture")

@pytest.fixture(scope="session")
def session_wide():
    yield
    print("session fixture torn down")

def test_a(session_wide, broken):
    pass

def test_b(session_wide):
    pass
''')
    result = _session(pytester, "--hermetic", "--reruns", "1", "-s")
    assert result.parseoutcomes() == {"passed": 1, "errors": 1}, result.stdout.str()
    result.stdout.fnmatch_lines(["*session fixture torn down*"])
