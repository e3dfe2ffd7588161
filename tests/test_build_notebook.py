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
