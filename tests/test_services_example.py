"""docs/pytest.md's worked example of service containers, run as the page
says (its pytest.ini, its module, its three commands), root and rootless:
two services on a private network, one session-scoped, a log-line wait and
an HTTP wait, and a failing test whose report shows both services' logs
(issue #13)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest
from test_services import failure, worked_example

DOCS = os.path.join(os.path.dirname(__file__), "..", "docs", "pytest.md")


def commands() -> list[list[str]]:
    """The example's console block: each `$ pytest ...` line's arguments."""
    with open(DOCS) as f:
        section = f.read().split("### A worked example")[1]
    block = section.split("```console\n")[1].split("```")[0]
    lines = [line[2:].split("#")[0] for line in block.splitlines() if line.startswith("$ ")]
    assert lines and all(shlex.split(line)[0] == "pytest" for line in lines), block
    return [shlex.split(line)[1:] for line in lines]


def check_report(out: str) -> None:
    assert re.search(r"\b1 failed, 2 passed\b", out), out
    # The failed test's report shows both services' last lines, as captured output.
    report = failure(out, "test_fails_and_shows_the_logs")
    assert re.search(r"- service echo \(call\): last 50 lines -+\n(.*\n)*echo got b'ping'\n", report), report
    assert re.search(r"- service web \(call\): last 50 lines -+\n(.*\n)*.*\"GET / HTTP/1.0\" 200", report), report


@pytest.mark.parametrize("args", commands(), ids=lambda args: " ".join(args))
def test_the_worked_example_as_written(pytester: pytest.Pytester, args):
    ini, module = worked_example()
    pytester.makeini(ini)
    pytester.makepyfile(test_services_example=module)
    # `pytest` as the page runs it: the plugin loads by its entry point.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD")}
    ran = subprocess.run([sys.executable, "-m", "pytest", *args], cwd=pytester.path, env=env, capture_output=True,
                         text=True, timeout=180)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    check_report(ran.stdout)


def test_the_worked_example_rootless(test_user):
    """The same example run by an unprivileged user: the private networks'
    bridges are held by a process of the user's own."""
    from conftest import inner_session_as

    module = worked_example()[1]
    for mode in ([], ["--hermetic"]):
        ran, _ = inner_session_as(test_user, "services-example", "test_services_example.py", module,
                                  "-o", "hermetic_net=app", *mode)
        check_report(ran.stdout)
