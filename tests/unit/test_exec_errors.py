"""The command's exec in a container: every failure is said, with its exit
code, through the set-up pipe (never a silent exit 125)."""

import os
from types import SimpleNamespace

from pytest_hermetic.runtime import init


def exec_in_child(argv: list[str]) -> tuple[int, str]:
    """Run `init._exec` in a forked child; (its exit code, what it reported)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            init._exec(SimpleNamespace(argv=argv, env={"PATH": "/usr/bin:/bin"}, stdio=(None, None, None),
                                       close_fds=False), w)
        finally:
            os._exit(99)  # _exec raised instead of reporting
    os.close(w)
    with os.fdopen(r, "rb") as f:
        said = f.read().decode()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), said


def test_a_missing_command_is_127():
    code, said = exec_in_child(["no-such-command-here"])
    assert code == 127 and said.startswith("127\t") and "command not found" in said


def test_an_exception_that_is_not_an_os_error_is_said():
    # os.execvpe raises ValueError for an argument with a NUL byte (in the
    # field: an import inside an image's root without the standard library).
    code, said = exec_in_child(["true\0x"])
    assert code == 125, (code, said)
    assert said.startswith("125\t") and "ValueError" in said and "null" in said, said
