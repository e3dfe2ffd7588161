"""`%%containerfile` and `%container build` (issue #15 part 6): a notebook run
by nbclient on a real ipykernel builds an image from a cell, runs a
`%%container` cell on it, rebuilds from the cache, and shows a failing step."""

from __future__ import annotations

import os
import re
import shutil

import pytest
from conftest import ROOT, run_cli
from test_notebooks import execute, kernelspec, outputs, text  # noqa: F401 - kernelspec is a fixture

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds run containers as root here (rootless: docs/build.md)")


def test_containerfile_cell_then_a_container_cell_on_it(kernelspec: str, busybox_image: str, tmp_path) -> None:  # noqa: F811
    source = os.path.join(ROOT, "hermetic_testsupport", "notebooks", "build.ipynb")
    # A fresh ARG SALT default per run: the first build runs its steps (the store is the session's).
    notebook = tmp_path / "build.ipynb"
    shutil.copy(source, notebook)
    salted = notebook.read_text().replace("ARG SALT", f"ARG SALT={os.urandom(6).hex()}")
    notebook.write_text(salted)
    nb = execute(str(notebook), kernelspec, str(tmp_path))
    _load, motd, build, run, rebuild, write_ctx, line_build, run2, broken, images, slow, alive = nb.cells
    built = text(build)
    assert "STEP 1/6: FROM busybox:test" in built and "STEP 4/6: COPY motd.txt /etc/motd" in built
    assert "\na line from RUN\n" in built  # the RUN's own output, streamed into the cell
    assert re.search(r"hermetic: built nbbuild:1 \([0-9a-f]{12}\)", built), built
    assert text(run) == "built in a notebook\nmade for cells\n"
    again = text(rebuild)
    assert again.count("--> cached") == 2 and "\na line from RUN\n" not in again  # nothing ran
    assert "STEP 2/2: RUN echo second >> /made" in text(line_build)
    assert text(run2) == "made for cells\nsecond\n"
    assert "about to fail" in text(broken)
    assert outputs(broken)[-1] == ("error", "BuildError: Containerfile:2: RUN (step 2/2) failed: exited with status 7; "
                                            "its last line of output: 'about to fail'")
    listed = outputs(images)[0][1]
    assert "nbbuild:1" in listed and "nbbuild:2" in listed and "nbbroken" not in listed  # nothing half-tagged
    # An interrupt stops the build and its step's container, not the kernel (execute() checks no state is left).
    assert "slow step started" in text(slow)
    assert outputs(slow)[-1] == ("error", "ContainerCellInterrupted: the build was stopped (its step's container "
                                          "with it); nothing was tagged")
    assert text(alive) == "kernel alive\n"
    assert not _processes_running("sleep 293")  # an unusual number: not another test's
    assert "nbslow" not in run_cli("images").stdout


def _processes_running(command: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().replace(b"\0", b" ").strip() == command.encode():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_build_magics_refuse_bad_words_in_one_line(ipython_shell, busybox_image: str, tmp_path, capsys) -> None:
    from IPython.core.error import UsageError

    from pytest_hermetic.errors import BuildError

    with pytest.raises(UsageError, match=r"usage: %container build -t NAME \[-f FILE\]"):
        ipython_shell.run_line_magic("container", "build")
    with pytest.raises(BuildError, match=r"^the following arguments are required: CONTEXT"):
        ipython_shell.run_line_magic("container", "build -t x:1")
    with pytest.raises(BuildError, match=r"^Containerfile:2: unknown instruction FROBNICATE"):
        ipython_shell.run_cell_magic("containerfile", f"bad:1 --context {tmp_path}", "FROM busybox:test\nFROBNICATE\n")
    with pytest.raises(BuildError, match=r"^Containerfile:2: COPY: missing.txt: no such file or folder in the build "
                                         rf"context {tmp_path}"):
        ipython_shell.run_cell_magic("containerfile", f"bad:1 --context {tmp_path}", "FROM busybox:test\nCOPY missing.txt /\n")
    assert "bad:1" not in run_cli("images").stdout
    # --build-arg and --target reach the build.
    ipython_shell.run_cell_magic("containerfile", f"staged:1 --context {tmp_path} --build-arg WORD=chosen --target two",
                                 "FROM busybox:test AS one\nRUN exit 1\nFROM busybox:test AS two\nARG WORD\n"
                                 "RUN echo $WORD > /word\n")
    assert "hermetic: built staged:1 (" in capsys.readouterr().out
    assert run_cli("run", "staged:1", "cat", "/word").stdout == "chosen\n"
