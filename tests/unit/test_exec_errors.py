"""The command's exec in a container: every failure is said, with its exit
code, through the set-up pipe (never a silent exit 125)."""

import os
from types import SimpleNamespace

from pytest_hermetic.runtime import init
from pytest_hermetic.runtime.fork import fork, release_signals  # (os.fork, without 3.12's warning about a threaded parent: the child execs)


def exec_in_child(argv: list[str]) -> tuple[int, str]:
    """Run `init._exec` in a forked child; (its exit code, what it reported)."""
    r, w = os.pipe()
    pid = fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            release_signals()  # (as the engine's own children do first: see fork.py)
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


def exec_with_path(argv: list[str], path: str | None) -> tuple[int, str]:
    """`init.execvpe` in a forked child, with `path` as PATH (None: no PATH);
    (its exit code, or 90 + errno of what it raised, and its output)."""
    r, w = os.pipe()
    pid = fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            release_signals()
            os.close(r)
            os.dup2(w, 1)
            init.execvpe(argv[0], argv, {} if path is None else {"PATH": path})
        except OSError as exc:
            os._exit(90 + (exc.errno or 0))
        finally:
            os._exit(99)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        said = f.read().decode()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), said


def test_the_path_is_searched_in_order_as_os_execvpe_does(tmp_path):
    import errno

    first, second = tmp_path / "first", tmp_path / "second"
    for folder, word in ((first, "one"), (second, "two")):
        folder.mkdir()
        (folder / "say").write_text(f"#!/bin/sh\necho {word}\n")
        (folder / "say").chmod(0o755)
    assert exec_with_path(["say"], f"/nonexistent:{first}:{second}") == (0, "one\n")
    assert exec_with_path(["say"], f"{second}:{first}") == (0, "two\n")
    # Not executable in the first folder: the next one's runs, and were there
    # none, the first error other than "not there" is the one raised.
    (first / "say").chmod(0o644)
    assert exec_with_path(["say"], f"{first}:{second}") == (0, "two\n")
    assert exec_with_path(["say"], f"{first}:/nonexistent") == (90 + errno.EACCES, "")
    assert exec_with_path(["say"], "/nonexistent") == (90 + errno.ENOENT, "")
    # A name with a slash is run as it is; no PATH: os.defpath (/bin:/usr/bin).
    assert exec_with_path([str(second / "say")], "/nonexistent") == (0, "two\n")
    assert exec_with_path(["sh", "-c", "echo default"], None) == (0, "default\n")
