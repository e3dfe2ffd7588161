"""The seccomp option of the notebook magics: cells run under the default
filter; `--security-opt seccomp=unconfined` runs them without it, also in a
named container kept across cells (whose cells enter it with exec)."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from pytest_hermetic.errors import SpecError


@pytest.fixture
def ip(ipython_shell):  # noqa: ANN001, ANN201
    return ipython_shell


def _mode(ip, line: str) -> str:  # noqa: ANN001
    ip.run_cell_magic("container", f"{line} --out seen", "grep Seccomp: /proc/self/status")
    return ip.user_ns["seen"].split()[1]


def test_cells_are_filtered_unless_unconfined(ip):
    assert _mode(ip, "host") == "2"
    assert _mode(ip, "host --security-opt seccomp=unconfined") == "0"


def test_a_named_container_keeps_its_choice(ip):
    try:
        assert _mode(ip, "host --name sc-off --security-opt seccomp=unconfined") == "0"
        assert _mode(ip, "--name sc-off") == "0"  # a later cell, exec'd into the same container
        assert _mode(ip, "host --name sc-on") == "2"
        assert _mode(ip, "--name sc-on") == "2"
    finally:
        for name in ("sc-off", "sc-on"):
            ip.run_line_magic("container", f"rm {name}")


def test_a_bad_security_opt_is_refused_before_anything_runs(ip):
    with pytest.raises((SpecError, UsageError), match="only seccomp=unconfined"):
        ip.run_cell_magic("container", "host --security-opt seccomp=default.json", "true")
