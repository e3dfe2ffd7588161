"""_libc.py: ctypes' pieces the engine uses, made from `_ctypes`
directly, behave as ctypes' own; and `hermetic run` imports neither
ctypes (1.3 ms of the command, issue #16) nor anything else it does not use."""

from __future__ import annotations

import ctypes
import errno
import os
import select
import subprocess
import sys

import pytest

from pytest_hermetic import _libc as libc
from pytest_hermetic.runtime import syscalls as sc

SCALARS = ["c_int", "c_uint", "c_long", "c_ulong", "c_uint64", "c_char", "c_char_p", "c_void_p", "c_uint32",
           "c_size_t"]


@pytest.mark.parametrize("name", SCALARS)
def test_each_scalar_type_is_ctypes_own_in_size_and_value(name: str) -> None:
    ours, theirs = getattr(libc, name), getattr(ctypes, name)
    assert ctypes.sizeof(ours) == ctypes.sizeof(theirs)
    assert ctypes.alignment(ours) == ctypes.alignment(theirs)
    if name in ("c_char_p", "c_char"):
        value = b"x" if name == "c_char" else b"text"
        assert ours(value).value == theirs(value).value == value
    elif name != "c_void_p":
        for value in (0, 1, -1, 2**31, 2**63 + 5):
            assert ours(value).value == theirs(value).value, value


def test_a_failed_call_leaves_its_errno_and_a_good_one_its_result() -> None:
    close = libc.function("close", libc.c_int, libc.c_int)
    assert close(-1) == -1
    assert libc.get_errno() == errno.EBADF
    fd = os.open(os.devnull, os.O_RDONLY)
    assert close(fd) == 0
    with pytest.raises(OSError):
        os.fstat(fd)  # closed by the call


def test_arguments_are_converted_by_their_declared_types() -> None:
    strlen = libc.function("strlen", libc.c_size_t, libc.c_char_p)
    assert strlen(b"hermetic") == 8
    with pytest.raises(ctypes.ArgumentError):
        strlen(12)  # an int is no char pointer


def test_the_gil_kept_call_runs_in_this_thread() -> None:
    getpid = libc.function("getpid", libc.c_int, keep_gil=True)
    assert getpid() == os.getpid()


def test_a_char_buffer_holds_its_bytes_at_its_address() -> None:
    data = b"seccomp\0program\xff"
    buffer = libc.char_buffer(data)
    assert buffer.raw == data
    assert ctypes.string_at(libc.addressof(buffer), len(data)) == data


def test_structures_by_reference_capget_reads_this_threads_permitted_set() -> None:
    with open("/proc/self/status") as f:
        permitted = next(int(line.split()[1], 16) for line in f if line.startswith("CapPrm:"))
    assert sc.capget_permitted() == permitted


def test_epoll_through_libc_reports_a_ready_pipe_with_its_data() -> None:
    epoll_fd = sc.epoll_create()
    read, write = os.pipe()
    try:
        sc.epoll_add(epoll_fd, read, select.EPOLLIN, 0x1234_5678_9ABC)
        with select.epoll.fromfd(epoll_fd) as watched:
            assert watched.poll(0) == []
            os.write(write, b"x")
            assert watched.poll(1) == [(0x5678_9ABC, select.EPOLLIN)]  # (Python's epoll: the data's low 32 bits)
    finally:
        for fd in (read, write):
            os.close(fd)


def test_a_missing_function_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        libc.function("no_such_function_in_libc", libc.c_int)


# Each of these was a measured part of a `hermetic run`'s start that the
# command does not use (docs/benchmarks.md, the CLI's start lighter).
NOT_ON_THE_RUN_PATH = ("ctypes", "warnings", "pytest_hermetic.runtime.file_relay", "pytest_hermetic.runtime.spare",
                       "pytest_hermetic.runtime.netns_reuse", "pytest_hermetic.runtime.placeholder")


def test_hermetic_run_imports_none_of_what_it_does_not_use(tmp_path) -> None:
    """The whole command, in a fresh interpreter: neither the engine's
    import nor the run (its child's set-up, the seccomp filter, the fork)
    pulls in ctypes (1.3 ms), `warnings` (os.execvpe's), the file relay (no
    file to relay) or the modules of what the plugin makes ahead."""
    code = ("import sys\nbefore = set(sys.modules)\nfrom pytest_hermetic.cli import main\n"
            "sys.argv = ['hermetic', 'run', 'host', 'true']\ncode = main()\n"
            f"print(code, *sorted(name for name in {NOT_ON_THE_RUN_PATH!r} if name in set(sys.modules) - before))\n")
    # The default state folder, as a user's run finds it (paths.state_root asks statfs whether /run is a tmpfs).
    env = {key: value for key, value in os.environ.items() if key != "HERMETIC_STATE"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0"], done.stdout + done.stderr
