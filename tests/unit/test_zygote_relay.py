"""The zygote's child makes room for pytest's relayed files
(zygote_process.make_room): a file pytest opened after the zygote's fork is
not in the zygote, and its number may be one the zygote gave to a
descriptor of the order (the test's word-to-go pipe), which the relay's end
put on that number (as pytest's own fork would have it) would replace.  So
such a descriptor moves above every relayed number first."""

import fcntl
import os
import resource

import pytest

from pytest_hermetic.forked.zygote_process import make_room


def identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def test_nothing_moves_where_no_relayed_number_is_one_of_them():
    r, w = os.pipe()
    try:
        fds = [r, w]
        assert make_room(fds, [w + 50, w + 51]) is fds
        assert is_open(r) and is_open(w)
    finally:
        os.close(r)
        os.close(w)


def test_a_descriptor_on_a_relayed_number_moves_above_them_all_and_stays_what_it_was():
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    other_r, other_w = os.pipe2(os.O_CLOEXEC)
    was = identity(go_r)
    numbers = [1, go_r, go_r + 30]
    moved = make_room([other_r, go_r, other_w], numbers)
    try:
        assert moved[0] == other_r and moved[2] == other_w  # (not on a relayed number: left alone)
        assert moved[1] > max(numbers) and identity(moved[1]) == was
        assert fcntl.fcntl(moved[1], fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert not is_open(go_r)  # (the number is free for the relay's end)
        os.write(go_w, b"g")
        assert os.read(moved[1], 1) == b"g"
    finally:
        for fd in (moved[1], go_w, other_r, other_w):
            os.close(fd)


def test_where_one_cannot_move_none_does():
    a_r, a_w = os.pipe()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(a_r, a_w) + 2, hard))  # no number above max(numbers)+1 left
        with pytest.raises(OSError):
            make_room([a_r, a_w], [a_r, a_w, max(a_r, a_w) + 5])
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert is_open(a_r) and is_open(a_w)
        os.write(a_w, b"x")
        assert os.read(a_r, 1) == b"x"
    finally:
        os.close(a_r)
        os.close(a_w)
