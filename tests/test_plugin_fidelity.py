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
