"""Notebooks executed by nbclient on a real ipykernel, cell by cell.

The kernel is a child of this pytest process and inherits HERMETIC_STORE /
HERMETIC_STATE, so its helper's containers land in the session's state root
and the session's leak check counts them.  The checks here look only at the
state folders of the kernel's processes: under xdist the other worker's
containers come and go in the same folder.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import ipykernel  # noqa: F401 - installed by scripts/install-deps.sh: missing, the suite fails
import nbclient
import nbformat
import pytest

from conftest import ROOT, run_cli
from hermetic_testsupport.state_folders import owned_by, state_folders
from pytest_hermetic._proc import descendants

KERNEL = "hermetic-test-python"


@pytest.fixture(scope="module")
def kernelspec(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A kernelspec for this interpreter under a private JUPYTER_PATH, so
    the kernel is the venv's python whatever else the machine has."""
    base = tmp_path_factory.mktemp("jupyter")
    spec_dir = base / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "pytest-hermetic tests", "language": "python"}))
    saved = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "JUPYTER_RUNTIME_DIR", "PYTHONPATH")}
    os.environ["JUPYTER_PATH"] = str(base)
    os.environ["JUPYTER_RUNTIME_DIR"] = str(base / "runtime")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, saved["PYTHONPATH"]) if p)
    yield KERNEL
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _states(owners: set[int]) -> list[str]:
    """The container state folders these processes own (a kernel's helper, the kernel)."""
    return owned_by(state_folders(), owners)


def _wait_for(check, timeout: float = 10.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def execute(path: str, kernel: str, cwd: str) -> "nbformat.NotebookNode":
    """Run every cell on one kernel; cells tagged `raises-exception` may fail;
    a cell's `interrupt_after` metadata interrupts the kernel after that many seconds."""
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name=kernel, timeout=120, interrupt_on_timeout=True,
        timeout_func=lambda cell: cell.metadata.get("interrupt_after", 120),
        resources={"metadata": {"path": cwd}})
    before = state_folders()
    owners: set[int] = set()
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
            owners.update(descendants(os.getpid()))  # the kernel, its helper, their containers
    # The kernel's end closes the helper's socket: the helper removes the
    # containers (here already removed by the notebook itself).
    assert _wait_for(lambda: _states(owners) == owned_by(before, owners)), \
        f"left behind: {set(_states(owners)) - set(owned_by(before, owners))}"
    return nb


def outputs(cell) -> list[tuple[str, str]]:  # noqa: ANN001
    """(stream name or output type, text) of a cell, in order."""
    found = []
    for out in cell.outputs:
        if out.output_type == "stream":
            found.append((out.name, out.text))
        elif out.output_type == "error":
            found.append(("error", f"{out.ename}: {out.evalue}"))
        else:
            found.append((out.output_type, out.get("data", {}).get("text/plain", "")))
    return found


def text(cell, name: str = "stdout") -> str:  # noqa: ANN001
    return "".join(t for n, t in outputs(cell) if n == name)


def test_worked_example(kernelspec: str, tmp_path) -> None:  # noqa: ANN001
    """The must-show, through docs/examples/containers.ipynb."""
    assert not os.path.exists("/srv/hermetic-demo")
    nb = execute(os.path.join(ROOT, "docs", "examples", "containers.ipynb"), kernelspec, str(tmp_path))
    cells = [c for c in nb.cells if c.cell_type == "code"]
    host, write, read, commit, committed, oom, loop, out, use_out, ps1, rm, ps2, host_check = cells[1:]
    assert text(host).splitlines() == ["pid=1", "lo"]
    assert text(host, "stderr") == "this line goes to stderr\n"
    assert text(write) == "wrote /srv/hermetic-demo/notes.txt\n"
    assert text(read) == "written in the first cell\n"
    assert text(commit).startswith("committed demo:1 (")
    assert text(committed) == "written in the first cell\nand a second line\n"
    assert outputs(oom)[-1][0] == "error"
    assert outputs(oom)[-1][1].startswith("ContainerCellError: the container cell exited with status 137: "
                                          "out of memory (limit 32 MiB, peak ")
    # Streamed: the five lines arrive in order, as several stream messages.
    assert text(loop).splitlines() == [f"line {i}" for i in range(1, 6)]
    assert sum(1 for n, _ in outputs(loop) if n == "stdout") >= 2
    assert outputs(out) == [] and text(use_out) == f"the container runs on kernel {os.uname().release}\n"
    assert "dev" in outputs(ps1)[0][1] and "this kernel" in outputs(ps1)[0][1]
    html = ps1.outputs[0]["data"]["text/html"]
    assert "<table>" in html and "<code>dev</code>" in html
    assert outputs(rm) == []
    assert " dev " not in outputs(ps2)[0][1] + " "
    assert text(host_check) == "on the host: False\n"
    assert not os.path.exists("/srv/hermetic-demo")


def test_interrupt_stops_the_cell_not_the_kernel(kernelspec: str, tmp_path) -> None:  # noqa: ANN001
    started = time.monotonic()
    nb = execute(os.path.join(ROOT, "hermetic_testsupport", "notebooks", "interrupt.ipynb"), kernelspec, str(tmp_path))
    _load, ready, slow, alive, ps, ephemeral, alive2, rm = nb.cells
    assert text(ready) == "ready\n"
    assert text(slow) == "started\n"
    assert outputs(slow)[-1] == ("error", "ContainerCellInterrupted: the cell's processes in the container were stopped")
    assert text(alive) == "kernel alive\n"
    processes = text(ps)
    assert "sleep 300" not in processes and "ps -eo" in processes
    assert text(ephemeral) == "ephemeral started\n" and outputs(ephemeral)[-1][0] == "error"
    assert text(alive2) == "kernel alive again\n"
    assert outputs(rm) == []
    # Two interrupts after 3 s each, a grace of 1 s each, a kernel start.
    assert time.monotonic() - started < 30


def test_busybox_image_env_workdir_errors(kernelspec: str, busybox_image: str, tmp_path) -> None:  # noqa: ANN001
    nb = execute(os.path.join(ROOT, "hermetic_testsupport", "notebooks", "busybox.ipynb"), kernelspec, str(tmp_path))
    _load, first, again, timeout, failed, no_raise, exec_ls, rm = nb.cells
    assert text(first) == "hello notebook from /tmp\n"  # the image's env, -e, -w
    kept, hostname = text(again).splitlines()
    assert kept == "kept" and hostname == "bb"
    assert "note: container 'bb' already runs (image busybox:test)" in text(again, "stderr")
    assert text(timeout) == "before\n"
    assert outputs(timeout)[-1][1].startswith("ContainerCellError: the container cell exited with status 137: "
                                              "timeout after 1 s: killed")
    assert outputs(failed)[-1] == ("error", "ContainerCellError: the container cell exited with status 3: "
                                            "exited with status 3")
    assert text(no_raise) == "out\n"
    assert text(no_raise, "stderr") == "err\ncontainer: the container cell exited with status 4: exited with status 4\n"
    assert text(exec_ls) == "kept\n"
    assert outputs(rm) == []


def _start_kernel(kernel: str, cwd: str):  # noqa: ANN202
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name=kernel, cwd=cwd)
    return km, kc


def _run(kc, code: str) -> str:  # noqa: ANN001
    """Execute `code`; return its stdout (fail on an error)."""
    chunks: list[str] = []

    def hook(msg: dict) -> None:
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            chunks.append(msg["content"]["text"])
        if msg["msg_type"] == "error":
            chunks.append(f"ERROR {msg['content']['ename']}: {msg['content']['evalue']}")

    reply = kc.execute_interactive(code, timeout=60, output_hook=hook)
    assert reply["content"]["status"] == "ok", "".join(chunks)
    return "".join(chunks)


def _kernel_with_named_container(kernel: str, cwd: str):  # noqa: ANN202
    """A kernel, the pid of its helper, and who may own its containers (those two)."""
    km, kc = _start_kernel(kernel, cwd)
    _run(kc, "%load_ext ipython_ext")
    assert _run(kc, "%%container host --name victim\necho up; sleep 1000 &") == "up\n"
    helper = int(_run(kc, "print(get_ipython().magics_manager.registry['ContainerMagics'].client.pid)"))
    return km, kc, helper, {helper, km.provisioner.process.pid}


def _kill_kernel(km, kc) -> None:  # noqa: ANN001
    km.provisioner.process.kill()  # SIGKILL, by the pid we started
    km.provisioner.process.wait()
    kc.stop_channels()
    km.cleanup_resources()


def test_kernel_sigkill_helper_removes_its_containers(kernelspec: str, tmp_path) -> None:  # noqa: ANN001
    before = state_folders()
    km, kc, helper, owners = _kernel_with_named_container(kernelspec, str(tmp_path))
    assert len(_states(owners)) == len(owned_by(before, owners)) + 1
    _kill_kernel(km, kc)
    # EOF on its socket (and PDEATHSIG): the helper removes the container and exits.
    assert _wait_for(lambda: _states(owners) == owned_by(before, owners) and not _alive(helper)), _states(owners)


def test_kernel_and_helper_sigkill_leave_what_gc_clears(kernelspec: str, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from pytest_hermetic.state import list_states

    # A state root of its own (the kernel inherits it): another xdist worker's gc must not clear
    # the victim before this test's does, nor this gc the exited containers other tests still read.
    monkeypatch.setenv("HERMETIC_STATE", str(tmp_path / "state"))
    before = state_folders()
    km, kc, helper, owners = _kernel_with_named_container(kernelspec, str(tmp_path))
    (state,) = [s for s in list_states() if s.get("name") == "victim" and s.get("owner_pid") in owners]  # (not the other worker's)
    os.kill(helper, signal.SIGKILL)
    _kill_kernel(km, kc)
    # Gone, not a zombie: gc takes a zombie owner (same pid, same start time) for alive.
    assert _wait_for(lambda: not os.path.exists(f"/proc/{helper}"), 20), open(f"/proc/{helper}/status").read()
    # The container's processes died with the helper (the engine's PDEATHSIG);
    # its state folder, cgroup and rw layer are what gc is for.
    assert _wait_for(lambda: not [p for s in list_states() if s["id"] == state["id"] for p in s["pids"]])
    assert state["id"] in _states(owners)
    ran = run_cli("gc")
    assert ran.returncode == 0, ran.stderr
    assert f"removed container {state['id'][:12]} (victim)" in ran.stdout
    assert _states(owners) == owned_by(before, owners)
    assert not any(os.path.exists(p) for p in state["cgroup"])
    assert not os.path.exists(state["rw_dir"])
