"""Bad input in the notebook magics: each shows as one line naming the option and the fix
(a `SpecError` or IPython's `UsageError`), never a traceback, and nothing starts or is stored."""

from __future__ import annotations

import os

import pytest
from IPython.core.error import UsageError

from pytest_hermetic.errors import SpecError
from test_bad_input_cli import everything

# (the %%container line, the error type, words the one line must hold)
CELL_INPUTS = [
    ("host --cpus 1e9", SpecError, "cpus='1e9': use a number of CPUs from 0.01 to 1024"),
    ("host --cpus nan", SpecError, "cpus='nan'"),
    ("host --pids 99999999999999999999", SpecError, "pids='99999999999999999999': must be a whole number"),
    ("host --pids -3", SpecError, "pids='-3'"),
    ("host --mem 1", SpecError, "mem='1': too little for a container to start; use at least 6M"),
    ("host --mem 99999999999999999999P", SpecError, "mem='99999999999999999999P': more than"),
    ("host --timeout 1e300", SpecError, "timeout='1e300'"),
    ("host -v /tmp:/", SpecError, "cannot bind over the container's root /"),
    ("host -v /tmp:/proc", SpecError, "/proc is where the engine mounts its own /proc"),
    ("host -v /tmp:/sys/kernel", SpecError, "/sys/kernel is where the engine mounts its own /sys"),
    ("host -v /tmp:/dev", SpecError, "/dev is where the engine mounts its own /dev"),
    ("host -v /tmp:rel", SpecError, "must be an absolute path"),
    ("host -w relative", SpecError, "workdir='relative': use an absolute path"),
    ("host --name=-x", SpecError, "name='-x'"),
    ("host --name 'a b'", SpecError, "name='a b'"),
    ("host -e =x", SpecError, "-e '=x': use KEY=VALUE"),
    ("host --net=host", SpecError, "net='host'"),
    ("../../etc", SpecError, "image='../../etc': bad registry '..'"),
    ("dir:/", SpecError, "image='dir:/': that is the host's whole root; use image='host'"),
    ("Bad_Ref", SpecError, "image='Bad_Ref': not a valid image reference"),
    ("host --bogus", UsageError, "unrecognized arguments: --bogus"),
    ("host --mem", UsageError, "argument -m/--memory/--mem: expected one argument"),
    ("host -e 'unbalanced", UsageError, "No closing quotation"),
]
LINE_INPUTS = [
    ("rm 'unbalanced", "No closing quotation"),
    ("pull", "usage: %container pull REF"),
    ("pull a b c", "usage: %container pull REF"),
    ("commit onlyone", "usage: %container commit NAME REF"),
    ("nosuchverb", "unknown verb 'nosuchverb'"),
]


@pytest.fixture(scope="module")
def roots(tmp_path_factory):  # noqa: ANN001, ANN201
    """A store and a state root of this module's own, for the kernel and its helper: the session's
    are shared with other tests, which under xdist start containers and change images at any moment,
    so "nothing starts or is stored" is checked where only this module's cells could write."""
    base = tmp_path_factory.mktemp("bad-input-magics")
    env = {"HERMETIC_STORE": str(base / "store"), "HERMETIC_STATE": str(base / "state")}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        yield env
    for folder in (f"{env['HERMETIC_STORE']}/containers", f"{env['HERMETIC_STATE']}/containers"):
        assert not os.path.isdir(folder) or os.listdir(folder) == [], folder  # nothing left by the good cell


@pytest.fixture
def ip(roots, ipython_shell):  # noqa: ANN001, ANN201
    return ipython_shell  # (after `roots`: the helper it starts works in them)


def one_line(out: str, words: str) -> None:
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    assert "Traceback" not in out and words in lines[0], out
    assert len(lines[0]) < 500, out


@pytest.mark.parametrize("line, error, words", CELL_INPUTS, ids=[c[0][:30] for c in CELL_INPUTS])
def test_bad_cell_option(ip, roots, capsys, line, error, words):
    before = everything(roots)
    result = ip.run_cell(f"%%container {line}\necho never\n")
    failure = result.error_in_exec or result.error_before_exec
    assert isinstance(failure, error), failure
    shown = capsys.readouterr()
    one_line(shown.out + shown.err, words)
    assert everything(roots) == before


@pytest.mark.parametrize("line, words", LINE_INPUTS, ids=[c[0] for c in LINE_INPUTS])
def test_bad_line_magic(ip, roots, capsys, line, words):
    before = everything(roots)
    result = ip.run_cell(f"%container {line}\n")
    assert isinstance(result.error_in_exec or result.error_before_exec, UsageError)
    shown = capsys.readouterr()
    out = shown.out + shown.err
    assert "Traceback" not in out and words in out, out
    assert everything(roots) == before


def test_a_good_cell_after_all_that(ip, capsys):
    ip.run_cell("%%container host -w /made/by/a/cell\npwd\n")
    assert capsys.readouterr().out == "/made/by/a/cell\n"
