"""A real suite concludes the same with `--hermetic` as in place (issue 13):
one inner pytest session per cause that once made it differ."""

import pytest


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
