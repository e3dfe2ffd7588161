"""The option table (pytest_hermetic/options.py) and what reads it: `Spec`, the
marker, `hermetic run` and `%%container` offer the same options under the
same names, and none of them can drift from the table."""

import inspect
import subprocess
import sys

import pytest

from pytest_hermetic import options
from pytest_hermetic.cli import parser as _parser
from pytest_hermetic.errors import SpecError
from pytest_hermetic.spec import Spec


def test_one_row_per_spec_field_in_order():
    assert tuple(option.name for option in options.OPTIONS) == Spec._fields


def test_spec_build_takes_each_option_with_the_tables_default():
    parameters = inspect.signature(Spec.build).parameters
    named = [p for p in parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    assert [p.name for p in named] == [option.name for option in options.OPTIONS]
    assert {p.name: p.default for p in named} == {option.name: option.default for option in options.OPTIONS}
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in named[2:])  # all but image and command


def test_the_table_is_well_formed():
    for option in options.OPTIONS:
        assert set(option.where) <= {options.MARKER, options.CLI, options.CELL}, option
        assert option.kind in ("value", "list", "switch", "optional"), option
        offered = options.CLI in option.where or options.CELL in option.where
        if option.name != "image":  # the command line's and the cell's first word
            assert bool(option.flags) == offered, option
        assert (option.metavar is None) == (option.kind == "switch" or not option.flags), option
        assert option.help and not option.help.endswith("."), option


def test_an_unknown_option_names_the_known_ones():
    with pytest.raises(SpecError, match=r"unknown option 'memory'; known options: accounting, cap_add, cap_drop, cpus, .*workdir$"):
        Spec.build("host", memory="1G")  # type: ignore[arg-type]  # the point: no such option


def test_pytest_markers_lists_every_marker_option(tmp_path):
    shown = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--markers"],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    line = next(line for line in shown.splitlines() if line.startswith("@pytest.mark.hermetic("))
    for name in options.MARKER_OPTIONS:
        assert f"{name}={options.BY_NAME[name].default!r}" in line
    assert set(options.MARKER_OPTIONS) >= {"hostname", "userns", "user", "workdir", "seccomp", "read_only", "tmpfs",
                                            "cap_add", "cap_drop", "env_file"}


def test_hermetic_run_offers_every_cli_option_under_its_spellings():
    run = _parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    by_dest = {action.dest: action for action in run._actions}
    for option in options.OPTIONS:
        if option.flags and options.CLI in option.where:
            assert tuple(by_dest[option.name].option_strings) == option.flags


def test_cli_words_become_spec_options(monkeypatch):
    monkeypatch.setenv("FROM_CALLER", "yes")
    args = _parser().parse_args(["run", "--net", "--mem", "64M", "-e", "A=1", "-e", "FROM_CALLER", "-v", "/tmp:/data:ro",
                                 "--security-opt", "seccomp=unconfined", "--userns", "--init", "host", "true"])
    given = options.from_arguments(args, options.CLI)
    assert given == {"net": True, "mem": "64M", "env": {"A": "1", "FROM_CALLER": "yes"}, "volumes": ["/tmp:/data:ro"],
                     "userns": True, "privileged": False, "seccomp": False, "init": True, "env_file": [], "read_only": False,
                     "tmpfs": [], "cap_add": [], "cap_drop": [], "publish": []}
    spec = Spec.build("host", ["true"], **given)
    assert (spec.net, spec.mem, spec.seccomp, spec.userns, spec.init) == (True, 64 << 20, False, True, True)


def test_docker_and_podman_spellings_are_aliases():
    args = _parser().parse_args(["run", "--network", "bridge", "-m", "1g", "--pids-limit", "9", "--memory", "2g",
                                 "--cap-add", "net_admin", "--cap-drop", "CAP_CHOWN", "--read-only", "--tmpfs", "/run",
                                 "-p", "80", "--platform", "linux/amd64", "--entrypoint", "", "host"])
    given = options.from_arguments(args, options.CLI)
    assert (given["net"], given["mem"], given["pids"], given["entrypoint"]) == ("bridge", "2g", "9", "")
    spec = Spec.build("host", **given)
    assert (spec.net, spec.mem, spec.pids, spec.cap_add, spec.cap_drop) == (True, 2 << 30, 9, ("CAP_NET_ADMIN",),
                                                                           ("CAP_CHOWN",))
    assert spec.read_only and spec.tmpfs[0].target == "/run" and spec.tmpfs[0].noexec and spec.entrypoint == ()
    assert str(spec.publish[0]) == "127.0.0.1:0->80/tcp" and spec.platform == "linux/amd64"
    # What was not given is left to Spec's defaults.
    bare = options.from_arguments(_parser().parse_args(["run", "host"]), options.CLI)
    assert bare == {"net": False, "env": {}, "volumes": [], "privileged": False, "init": False, "env_file": [],
                    "read_only": False, "tmpfs": [], "cap_add": [], "cap_drop": [], "publish": []}


def test_the_cell_magic_offers_every_cell_option():
    pytest.importorskip("IPython")
    from ipython_ext.magics import ContainerMagics

    parser = ContainerMagics.container.parser
    by_dest = {action.dest: action for action in parser._actions}
    for name in options.CELL_OPTIONS:
        option = options.BY_NAME[name]
        assert tuple(by_dest[name].option_strings) == option.flags
        assert by_dest[name].help == (option.cell_help or option.help)
    for own in ("image", "commit", "shell", "out", "err", "no_raise_error"):
        assert own in by_dest
    assert set(options.CREATE_ONLY) == {"net", "mem", "cpus", "pids", "shm_size", "volumes", "seccomp", "read_only",
                                        "tmpfs", "cap_add", "cap_drop"}
