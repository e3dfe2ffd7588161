"""forked/interrupt.py with real SIGINTs sent to this process."""

from __future__ import annotations

import os
import select
import signal
import threading

import pytest

from pytest_hermetic.forked import interrupt
from pytest_hermetic.runtime.fork import fork, release_signals  # (the engine's: no warning beside pytest's threads on 3.12+)


def test_a_ctrl_c_in_the_block_is_counted_and_wakes_the_loop():
    with interrupt.deferred() as ctrl_c:
        assert ctrl_c is not None
        assert select.select([ctrl_c.fd], [], [], 0)[0] == []
        os.kill(os.getpid(), signal.SIGINT)  # (the handler runs before kill returns to Python code)
        os.kill(os.getpid(), signal.SIGINT)
        assert ctrl_c.count == 2
        assert select.select([ctrl_c.fd], [], [], 0)[0] == [ctrl_c.fd]
        assert ctrl_c.take_new() == 2 and ctrl_c.handled == 2
        assert ctrl_c.take_new() == 0
        assert select.select([ctrl_c.fd], [], [], 0)[0] == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)


def test_the_next_block_starts_afresh():
    with interrupt.deferred() as ctrl_c:
        os.kill(os.getpid(), signal.SIGINT)  # never taken by a loop
    with interrupt.deferred() as ctrl_c:
        assert ctrl_c is not None and ctrl_c.count == 0
        assert select.select([ctrl_c.fd], [], [], 0)[0] == []


def test_a_fork_made_in_the_block_gets_the_default_keyboardinterrupt():
    with interrupt.deferred():
        pid = fork()
        if pid == 0:
            code = 1
            try:
                release_signals()  # (the engine's forks hand the child every signal blocked: see fork.py)
                os.kill(os.getpid(), signal.SIGINT)
            except KeyboardInterrupt:
                interrupt.in_fork()
                code = 0 if signal.getsignal(signal.SIGINT) is signal.default_int_handler else 2
            finally:
                os._exit(code)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_not_deferred_over_another_handler_nor_off_the_main_thread():
    def own(signum, frame):  # noqa: ANN001, ANN202
        pass

    previous = signal.signal(signal.SIGINT, own)
    try:
        with interrupt.deferred() as ctrl_c:
            assert ctrl_c is None and signal.getsignal(signal.SIGINT) is own
    finally:
        signal.signal(signal.SIGINT, previous)
    seen = []

    def in_thread() -> None:
        with interrupt.deferred() as ctrl_c:
            seen.append(ctrl_c)

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert seen == [None]


def test_a_block_inside_another_leaves_it_to_the_outer_one():
    with interrupt.deferred() as outer:
        with interrupt.deferred() as inner:
            assert inner is None
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        os.kill(os.getpid(), signal.SIGINT)
        assert outer is not None and outer.count == 1


def test_a_fork_lets_go_of_the_wakeup_pipe():
    """A test's child (a fork of pytest) keeps no end of pytest's wake-up
    pipe, which the seal would leave writable."""
    with interrupt.deferred() as ctrl_c:
        assert ctrl_c is not None
        inode = os.fstat(ctrl_c.fd).st_ino
        pid = fork()
        if pid == 0:
            code = 1
            try:
                interrupt.in_fork()
                held = []
                for name in os.listdir("/proc/self/fd"):
                    try:
                        held.append(os.fstat(int(name)).st_ino)
                    except OSError:
                        pass
                code = 2 if inode in held else 0
            finally:
                os._exit(code)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert os.fstat(ctrl_c.fd).st_ino == inode  # (pytest's own stays)


def test_allowed_raises_at_once_inside_the_block():
    with interrupt.deferred() as ctrl_c:
        assert ctrl_c is not None
        with pytest.raises(KeyboardInterrupt):
            with interrupt.allowed():
                os.kill(os.getpid(), signal.SIGINT)
        assert ctrl_c.count == 0
        os.kill(os.getpid(), signal.SIGINT)  # deferred again after it
        assert ctrl_c.count == 1
