"""A hermetic test's child started: the pipes between it and pytest, what
pytest's process holds that the child gets a copy of (listeners, event
loops), and the target the container runs, forked by pytest or by the
zygote (zygote.py), at once or ahead of its turn (per_test.Ahead)."""

from __future__ import annotations

import gc
import os
from typing import Any

import pytest

from ..container import Container, with_environment
from . import event_loops, loopback_relay
from .child import child_main


def start_child(container: Container, item: pytest.Item, meanwhile: Any, ahead: bool = False,
                forker_for: Any = None) -> tuple[int, int, int, list]:
    """Start `container` with the child that runs `item` (forked by the
    forker that `forker_for(item, write_fd, undumpable, env)` gives, the
    zygote's, if given); return pytest's ends of its pipes
    (messages, replies, and with `ahead` the word to go: the child then
    waits for it after its set-up, see per_test.Ahead) and pytest's
    listeners found at the fork."""
    at_fork: dict = {}
    found = loopback_relay.listeners(at_fork)  # the pytest process's own servers (a session fixture's)
    servers = loopback_relay.serving(found) if found else {}
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    reply_r, reply_w = os.pipe2(os.O_CLOEXEC)  # answers to the `containers` fixture's calls
    go_r, go_w = os.pipe2(os.O_CLOEXEC) if ahead else (-1, -1)
    undumpable = not container.userns
    try:
        # (Not where pytest's threads serve a listener: the child serves it
        # again on the server object found on that thread, see
        # loopback_relay, and a fork of the zygote has no such thread.)
        forker = (forker_for(item, write_fd, undumpable, dict(container.spec.env) or None)
                  if forker_for and not servers else None)
        # (The zygote's child notes its own, from its descriptors: zygote_target.)
        loops = event_loops.note(at_fork.get("epoll", []), at_fork.get("unix", {})) if at_fork and not forker else None

        def run() -> int:
            return child_main(item, write_fd, reply_r, found, servers, loops, undumpable)

        # Frozen objects are never scanned by the child's garbage collector,
        # which would otherwise touch (and so copy) much of pytest's memory.
        gc.freeze()
        try:
            container.start(target=(lambda: _when_told(go_r, run)) if ahead else run, prepare_next=True,
                            meanwhile=meanwhile, keep_fds=(reply_r, go_r) if ahead else (reply_r,),
                            caller_copies=True, unconfirmed=ahead, forker=forker)
        finally:
            gc.unfreeze()
            for fd in (write_fd, reply_r, go_r):
                if fd >= 0:
                    os.close(fd)
    except BaseException:
        for fd in (read_fd, reply_w, go_w):
            if fd >= 0:
                os.close(fd)
        raise
    return read_fd, reply_w, go_w, found


def noted_descriptors() -> tuple[list, event_loops.Loops | None]:
    """The listeners and event loops among this process's descriptors, for
    `zygote_target`: the zygote notes them once, as each of its children
    holds its descriptors (and those handed to it: pipes, namespaces)."""
    at_fork: dict = {}
    found = loopback_relay.listeners(at_fork)
    return found, event_loops.note(at_fork.get("epoll", []), at_fork.get("unix", {})) if at_fork else None


def zygote_target(item: pytest.Item, write_fd: int, keep_fds: tuple[int, ...], undumpable: bool,
                  env: dict[str, str] | None, noted: tuple[list, event_loops.Loops | None]) -> Any:
    """In the zygote's child, before its set-up: `start_child`'s target,
    from the descriptors it was handed (keep_fds: the reply pipe, and the
    word to go if it was started ahead), the listeners and event loops the
    zygote `noted` (its descriptors are pytest's at its fork; no server is
    served on a thread here: start_child forks those itself)."""
    found, loops = noted
    reply_r = keep_fds[0]

    def run() -> int:
        return child_main(item, write_fd, reply_r, found, {}, loops, undumpable)

    target = with_environment(run, env) if env else run
    if len(keep_fds) > 1:
        go_r = keep_fds[1]
        return lambda: _when_told(go_r, target)
    return target


def _when_told(go_r: int, run: Any) -> int | None:
    """A container started ahead: run the test once pytest says so; end
    unused when it closes the pipe instead (another test came next)."""
    try:
        word = os.read(go_r, 1)
    except OSError:
        word = b""
    return run() if word == b"g" else 0
