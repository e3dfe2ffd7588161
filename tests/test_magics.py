"""The magics through an in-process IPython shell: parsing, errors, options.

The shell is IPython's own `InteractiveShell`; containers are real (started
by the extension's helper process, as in a kernel)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from hermetic_testsupport.state_folders import owned_by, state_folders
from pytest_hermetic.errors import ContainerNotFound, ContainerStartError, ImageNotFound, SpecError


# Who may own this module's containers: each helper its shell had (see `_owners`) and the kernel
# itself (which should own none).  The state folder is shared: under xdist the other worker's
# containers come and go there meanwhile, and are no business of these checks.
_HELPERS: set[int] = {os.getpid()}


def _owners(shell) -> set[int]:  # noqa: ANN001
    if _client(shell).pid is not None:
        _HELPERS.add(_client(shell).pid)
    return _HELPERS


def _states(folders: dict[str, int | None], shell) -> list[str]:  # noqa: ANN001
    """The state folders among `folders` of the containers this module's shell started."""
    return owned_by(folders, _owners(shell))


@pytest.fixture
def ip(ipython_shell):  # noqa: ANN001, ANN201
    shell = ipython_shell
    before = state_folders()
    yield shell
    for name in [c["name"] for c in _client(shell).call("list")["containers"]] if _client(shell).running else []:
        shell.run_line_magic("container", f"rm {name}")
    assert _states(state_folders(), shell) == _states(before, shell)


def _client(shell):  # noqa: ANN001, ANN202
    return shell.magics_manager.registry["ContainerMagics"].client


def cell(ip, line: str, body: str) -> None:  # noqa: ANN001
    ip.run_cell_magic("container", line, body)


# -- parsing and errors, before anything starts -----------------------------------


@pytest.mark.parametrize(("line", "error", "words"), [
    ("host --mem lots", SpecError, "mem='lots': not a size"),
    ("host --cpus many", SpecError, "cpus='many'"),
    ("host --pids 0", SpecError, "pids='0': must be a whole number of at least 1"),
    ("host --timeout=-1", SpecError, "timeout='-1'"),
    ("host -w relative", SpecError, "workdir='relative': use an absolute path"),
    ("host -v /nonexistent-hermetic:/x", SpecError, "does not exist"),
    ("host --name 'bad name'", SpecError, "name='bad name'"),
    ("host -e '=x'", SpecError, "-e '=x': use KEY=VALUE"),
    ("host --net=host", SpecError, "net='host'"),
    ("host --net 'bad name!'", SpecError, "network name"),
    ("host --commit 'Bad Ref!'", Exception, "Bad Ref!"),
])
def test_bad_options_fail_before_anything_starts(ip, line: str, error: type, words: str) -> None:  # noqa: ANN001
    before = state_folders()
    with pytest.raises(error, match=None) as info:
        cell(ip, line, "echo never")
    assert words in str(info.value)
    assert _states(state_folders(), ip) == _states(before, ip)

@pytest.mark.skipif(os.geteuid() != 0, reason="the host bridge needs root")
def test_a_cell_on_the_host_bridge(ip) -> None:  # noqa: ANN001
    cell(ip, "host --net --out result", "cat /proc/net/route | awk 'NR==2 {print $1, $2}'; cat /etc/resolv.conf | head -1")
    assert ip.user_ns["result"].splitlines()[0] == "eth0 00000000"
    assert "net=True" in ip.user_ns["result"]


def test_a_cell_runs_its_script_without_the_images_entrypoint(ip, busybox_image) -> None:  # noqa: ANN001
    """`hermetic run IMAGE CMD` passes CMD to the image's ENTRYPOINT, as Docker; a cell is a whole script."""
    from pytest_hermetic.images.reference import parse
    from pytest_hermetic.images.store import Store

    store = Store()
    base = store.resolve(busybox_image)
    store.put_image(parse("busybox:cell-entry").name, base.layers, {**base.config, "Entrypoint": ["echo", "entry"]})
    try:
        cell(ip, "busybox:cell-entry --out result", "echo cell")
        assert ip.user_ns["result"] == "cell\n"
    finally:
        store.remove("busybox:cell-entry")


def test_bad_option_value_renders_as_one_line(ip, capsys) -> None:  # noqa: ANN001
    result = ip.run_cell("%%container host --mem lots\necho never\n")
    assert isinstance(result.error_in_exec, SpecError)
    out = capsys.readouterr().out
    assert "SpecError: mem='lots': not a size; use bytes or a number with a unit" in out
    assert "Traceback" not in out


def test_unknown_option_is_a_usage_error(ip) -> None:  # noqa: ANN001
    with pytest.raises(UsageError):
        cell(ip, "host --frobnicate", "echo never")


def test_unknown_image(ip) -> None:  # noqa: ANN001
    with pytest.raises(ImageNotFound, match="nosuchimage:1"):
        cell(ip, "nosuchimage:1", "echo never")


@pytest.mark.parametrize(("line", "words"), [
    ("rm", "usage: %container rm NAME ..."),
    ("commit onlyname", "usage: %container commit NAME REF"),
    ("stop", "usage: %container stop NAME"),
    ("exec dev", "usage: %container exec NAME CMD ..."),
    ("ps extra", "usage: %container ps"),
    ("frobnicate", "unknown verb 'frobnicate'"),
])
def test_line_usage_errors(ip, line: str, words: str) -> None:  # noqa: ANN001
    with pytest.raises(UsageError, match=None) as info:
        ip.run_line_magic("container", line)
    assert words in str(info.value)


def test_rm_of_an_unknown_name(ip) -> None:  # noqa: ANN001
    cell(ip, "host --name known", "true")
    with pytest.raises(ContainerNotFound, match="no container named 'nosuch' was started by this kernel"):
        ip.run_line_magic("container", "rm nosuch")


def test_help_lists_every_verb(ip, capsys) -> None:  # noqa: ANN001
    ip.run_line_magic("container", "help")
    out = capsys.readouterr().out
    for verb in ("ps", "images", "commit NAME REF", "stop NAME", "rm NAME", "exec NAME CMD", "pull REF"):
        assert f"%container {verb}" in out


# -- running cells -----------------------------------------------------------------


def test_status_and_reason(ip, capsys) -> None:  # noqa: ANN001
    from ipython_ext.errors import ContainerCellError

    with pytest.raises(ContainerCellError) as info:
        cell(ip, "host", "echo partial; exit 3")
    assert info.value.returncode == 3 and info.value.reason == "exited with status 3"
    assert str(info.value) == "the container cell exited with status 3: exited with status 3"
    assert capsys.readouterr().out == "partial\n"
    # In a kept container the cell's shell is not PID 1, so it can die of a signal.
    cell(ip, "host --name sig", "true")
    with pytest.raises(ContainerCellError) as info:
        cell(ip, "--name sig", "kill -SEGV $$")
    assert info.value.returncode == 139 and info.value.reason == "killed by signal SIGSEGV"


def test_no_raise_error_and_capture(ip, capsys) -> None:  # noqa: ANN001
    cell(ip, "host --no-raise-error --out OUT --err ERR", "echo to-out; echo to-err >&2; exit 5")
    assert ip.user_ns["OUT"] == "to-out\n" and ip.user_ns["ERR"] == "to-err\n"
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "container: the container cell exited with status 5: exited with status 5\n"


def test_env_workdir_volume_shell(ip, capsys, tmp_path) -> None:  # noqa: ANN001
    (tmp_path / "data.txt").write_text("from the host\n")
    os.environ["HERMETIC_MAGIC_PASSED"] = "passed through"
    try:
        cell(ip, f"host -e A=1 -e HERMETIC_MAGIC_PASSED -w /tmp -v {tmp_path}:/data:ro",
             'echo "$A|$HERMETIC_MAGIC_PASSED|$(pwd)"; cat /data/data.txt; touch /data/x 2>/dev/null || echo read-only')
    finally:
        del os.environ["HERMETIC_MAGIC_PASSED"]
    assert capsys.readouterr().out == "1|passed through|/tmp\nfrom the host\nread-only\n"
    cell(ip, "host --shell python3", "import os\nprint('python as PID', os.getpid())")
    assert capsys.readouterr().out == "python as PID 1\n"


def test_output_streams_while_the_cell_runs(ip, monkeypatch) -> None:  # noqa: ANN001
    seen: list[tuple[float, str]] = []

    class Recorder:
        def write(self, text: str) -> int:
            seen.append((time.monotonic(), text))
            return len(text)

        def flush(self) -> None:
            pass

    monkeypatch.setattr(sys, "stdout", Recorder())
    start = time.monotonic()
    cell(ip, "host", "for i in 1 2 3 4; do echo line $i; sleep 0.3; done")
    end = time.monotonic()
    assert "".join(t for _, t in seen) == "line 1\nline 2\nline 3\nline 4\n"
    first = next(when for when, t in seen if "line 1" in t)
    assert first - start < (end - start) / 2, "the first line came only at the end"


def test_utf8_split_across_chunks(ip, capsys) -> None:  # noqa: ANN001
    # A 3-byte character written one byte at a time must arrive whole.
    cell(ip, "host", r"printf '\342'; sleep 0.1; printf '\202'; sleep 0.1; printf '\254\n'")
    assert capsys.readouterr().out == "\u20ac\n"


def test_timeout_names_what_it_killed(ip) -> None:  # noqa: ANN001
    from ipython_ext.errors import ContainerCellError

    with pytest.raises(ContainerCellError) as info:
        cell(ip, "host --timeout 0.5", "sleep 30")
    assert info.value.returncode == 137 and info.value.reason.startswith("timeout after 0.5 s: killed")


def test_named_container_keeps_files_and_processes(ip, capsys) -> None:  # noqa: ANN001
    cell(ip, "host --name keep", "echo one > /root/hermetic-magic-file; sleep 1000 & echo started")
    cell(ip, "--name keep", "cat /root/hermetic-magic-file; ps -eo args | grep -c '^sleep 1000'")
    assert capsys.readouterr().out == "started\none\n1\n"
    assert not os.path.exists("/root/hermetic-magic-file")
    ip.run_line_magic("container", "stop keep")
    with pytest.raises(ContainerStartError, match="container 'keep' is stopped"):
        cell(ip, "--name keep", "true")
    ip.run_line_magic("container", "commit keep kept:1")  # a stopped container's files can still be committed
    assert "committed kept:1 (" in capsys.readouterr().out
    cell(ip, "kept:1", "cat /root/hermetic-magic-file")
    assert capsys.readouterr().out == "one\n"


def test_named_memory_limit_and_oom_in_exec(ip) -> None:  # noqa: ANN001
    from ipython_ext.errors import ContainerCellError

    cell(ip, "host --name small --mem 32M", "true")
    with pytest.raises(ContainerCellError) as info:
        cell(ip, "--name small", "python3 -c 'bytearray(400 << 20)'")
    assert info.value.returncode == 137 and info.value.reason.startswith("out of memory (limit 32 MiB, peak ")
    cell(ip, "--name small", "true")  # the container survived its cell's OOM


def test_a_kept_container_names_the_options_it_ignored_as_they_are_spelled(ip, capsys, tmp_path) -> None:  # noqa: ANN001
    cell(ip, "host --name settled", "true")
    capsys.readouterr()
    cell(ip, f"--name settled --mem 64M -v {tmp_path}:/data --security-opt seccomp=unconfined -e A=1 -w /tmp",
         'echo "$A $PWD"')
    out, err = capsys.readouterr()
    assert out == "1 /tmp\n"  # -e and -w apply to each cell
    assert ("container 'settled' already runs; --mem, --security-opt, --volume only take effect when a container "
            "is created") in err


def test_commit_after_a_cell_and_not_after_a_failed_one(ip, capsys) -> None:  # noqa: ANN001
    from ipython_ext.errors import ContainerCellError

    cell(ip, "host --commit cellimg:1", "mkdir -p /opt/hermetic-magic && echo saved > /opt/hermetic-magic/f")
    assert capsys.readouterr().out.startswith("committed cellimg:1 (")
    cell(ip, "cellimg:1", "cat /opt/hermetic-magic/f")
    assert capsys.readouterr().out == "saved\n"
    with pytest.raises(ContainerCellError):
        cell(ip, "host --commit cellimg:2", "exit 1")
    assert "not committed to cellimg:2: the cell failed (exited with status 1)" in capsys.readouterr().err
    with pytest.raises(ImageNotFound):
        cell(ip, "cellimg:2", "true")
    assert not os.path.exists("/opt/hermetic-magic")


def test_exec_verb_and_ps_table(ip, capsys) -> None:  # noqa: ANN001
    from ipython_ext.errors import ContainerCellError

    cell(ip, "host --name box", "echo hi > /root/hi")
    ip.run_line_magic("container", "exec box cat /root/hi")
    assert capsys.readouterr().out == "hi\n"
    with pytest.raises(ContainerCellError):
        ip.run_line_magic("container", "exec box false")
    ip.run_line_magic("container", "ps")
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["CONTAINER", "ID", "NAME", "IMAGE", "STATUS", "PIDS", "CREATED", "OWNER"]
    assert any(row.split()[1:4] == ["box", "host", "running"] and row.endswith("this kernel")
               for row in table.splitlines()[1:])
    ip.run_line_magic("container", "rm box")
    ip.run_line_magic("container", "ps")
    assert " box " not in capsys.readouterr().out


def test_images_lists_host(ip, capsys) -> None:  # noqa: ANN001
    ip.run_line_magic("container", "images")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["IMAGE", "ID", "LAYERS", "SIZE", "CREATED"] and lines[1].startswith("host ")


def test_interrupt_stops_the_cell_promptly(ip) -> None:  # noqa: ANN001
    from ipython_ext.errors import ContainerCellInterrupted

    cell(ip, "host --name intr", "true")
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    start = time.monotonic()
    with pytest.raises(ContainerCellInterrupted):
        cell(ip, "--name intr", "trap '' INT; sleep 300 & sleep 300")  # even one that ignores SIGINT
    assert time.monotonic() - start < 4
    cell(ip, "--name intr --out PS", "ps -eo args")
    assert "sleep 300" not in ip.user_ns["PS"]


def test_helper_death_is_reported_and_the_next_cell_recovers(ip) -> None:  # noqa: ANN001
    from ipython_ext.errors import HelperError

    cell(ip, "host --name doomed", "true")
    client = _client(ip)
    pid = client.pid
    _HELPERS.add(pid)  # what it ran must be gone too (the `ip` fixture checks)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(HelperError, match=rf"the container helper \(pid {pid}\) died \(killed by SIGKILL\)"):
        cell(ip, "host", "true")
    cell(ip, "host", "true")  # a new helper
    assert client.pid != pid


def test_pull_shows_progress(ip, capsys, busybox_remote: str) -> None:  # noqa: ANN001
    # The real docker-registry on 127.0.0.1, the image pushed there by skopeo.
    ip.run_line_magic("container", f"pull {busybox_remote}")
    out = capsys.readouterr().out
    assert f"pulling {busybox_remote}" in out  # the terminal progress line
    assert out.splitlines()[-1].startswith("pulled ")
    cell(ip, busybox_remote, 'echo "$GREETING from $(pwd)"')
    assert capsys.readouterr().out == "hello from the config from /root\n"


def test_unload_stops_every_container() -> None:
    # Last in this module: it unloads the module's shell's extension.
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "pytest_hermetic")
    before = state_folders()
    ip.run_cell_magic("container", "host --name one", "true")
    ip.run_cell_magic("container", "host --name two", "true")
    assert len(_states(state_folders(), ip)) == len(_states(before, ip)) + 2
    client = _client(ip)
    pid = client.pid
    owners = _owners(ip)
    ip.run_line_magic("unload_ext", "pytest_hermetic")
    assert owned_by(state_folders(), owners) == owned_by(before, owners)
    assert not os.path.exists(f"/proc/{pid}")
    assert ip.find_magic("container", "cell") is None and ip.find_magic("container", "line") is None
