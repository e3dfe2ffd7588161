"""The placeholder PID 1 of a callable run as root (runtime/placeholder.py):
on x86_64 a 241-byte program exec'd from a memfd, which no test holds."""

from __future__ import annotations

import os
import platform

import pytest

from pytest_hermetic.container import Container
from pytest_hermetic.runtime import placeholder
from pytest_hermetic.spec import Spec

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the placeholder is the root path's")


def test_callable_runs_under_the_placeholder_and_holds_no_handle_on_it(tmp_path):
    out = tmp_path / "out"

    def inside() -> int:
        seen = []
        for name in os.listdir("/proc/self/fd"):
            try:
                seen.append(os.readlink(f"/proc/self/fd/{name}"))
            except OSError:
                pass
        with open("/proc/1/comm") as f:
            comm = f.read().strip()
        with open(out, "w") as f:
            f.write(comm + "\n" + "\n".join(seen))
        return 0

    with Container(Spec.build("host", volumes=[f"{tmp_path}:{tmp_path}"], accounting=False, ephemeral=True)) as c:
        result = c.start(target=inside).wait()
    assert result.status.code == 0
    comm, *fds = out.read_text().splitlines()
    assert comm == ("hermetic-pid1" if platform.machine() == "x86_64" else "cat")
    assert not [fd for fd in fds if "memfd:" in fd], fds


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the tiny program is x86_64's")
def test_the_tiny_program_reads_until_eof_then_exits(tmp_path):
    program = tmp_path / "pid1"
    program.write_bytes(placeholder.tiny_elf())
    program.chmod(0o700)
    read_fd, write_fd = os.pipe()
    pid = os.posix_spawn(str(program), ["pid1"], {}, file_actions=[(os.POSIX_SPAWN_DUP2, read_fd, 0)])
    os.close(read_fd)
    try:
        os.write(write_fd, b"ignored, as by cat")
        assert os.waitpid(pid, os.WNOHANG) == (0, 0)  # still reading
    finally:
        os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
