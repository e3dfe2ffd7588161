"""The zygote's child puts a relay pipe only on a number where it holds the
same file as pytest (zygote_process.relayed_here): a file pytest opened
after the zygote's fork is not there, and its number may be one of the
descriptors handed to the child (its word-to-go pipe), which the relay's
end would replace."""

import os

from pytest_hermetic.forked.zygote_process import relayed_here


def identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def test_a_file_held_here_at_the_same_number_is_relayed(tmp_path):
    written = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT, 0o644)
    r, w = os.pipe()
    try:
        assert relayed_here([(written, *identity(written))], [w]) == {written: w}
        assert is_open(w)
    finally:
        for fd in (written, r, w):
            os.close(fd)


def test_another_file_at_that_number_keeps_its_descriptor(tmp_path):
    """pytest's late file has the number of the child's go pipe here: the
    pipe stays, the relay's end for the file is closed."""
    other = os.open(tmp_path / "late", os.O_WRONLY | os.O_CREAT, 0o644)
    late = identity(other)
    os.close(other)
    go_r, go_w = os.pipe()  # (may well take the late file's number)
    r, w = os.pipe()
    try:
        assert relayed_here([(go_r, *late)], [w]) == {}
        assert not is_open(w)
        assert is_open(go_r)
    finally:
        for fd in (go_r, go_w, r):
            os.close(fd)


def test_a_number_not_open_here_is_left_out(tmp_path):
    r, w = os.pipe()
    gone = os.open(tmp_path / "gone", os.O_WRONLY | os.O_CREAT, 0o644)
    was = identity(gone)
    os.close(gone)  # (nothing opened after it: the number stays free)
    try:
        assert relayed_here([(gone, *was)], [w]) == {}
        assert not is_open(w) and not is_open(gone)
    finally:
        os.close(r)


def test_a_number_that_is_one_of_the_ends_is_left_out(tmp_path):
    """Putting an end there would close another file's end before its turn."""
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    try:
        # pytest's file A at w2's number (a regular file there, a pipe here), file B at its own
        written = os.open(tmp_path / "b", os.O_WRONLY | os.O_CREAT, 0o644)
        relayed = relayed_here([(w2, 1, 1), (written, *identity(written))], [w1, w2])
        assert relayed == {written: w2}
        assert not is_open(w1) and is_open(w2)
        os.close(written)
    finally:
        for fd in (r1, r2, w2):
            os.close(fd)
