"""The parent's side of a hermetic test's `containers` fixture and of its
loopback relay: what pytest does for the child while it runs, on the
child's asking, checked first (the pipe is the container's to write)."""

from __future__ import annotations

import errno
import pickle
import warnings
from typing import Any

from ..container import Container
from ..errors import SpecError
from ..fixtures import Containers
from . import loopback_relay
from .wire import picklable, write_frame


class Services:
    """The parent's side of the `containers` fixture for one hermetic test."""

    def __init__(self, scope: Any = None, test_net: Any = False, container: Container | None = None,
                 may_run: bool = False) -> None:
        self.factory: Containers | None = None
        # Only a test that asked for the `containers` fixture has containers
        # started for it: the pipe is open to whatever runs in the test's
        # process (code of the image it imports), and a container this
        # process starts may hold what the test's own may not.
        self.may_run = may_run
        self.scope = scope
        self.test_net = test_net  # where the test is, for `address()`
        self.container = container
        self.relay: loopback_relay.Relay | None = None
        self.listeners: set[tuple] = set()  # (family, kind, address, port) of ours, found at the fork

    def start_relay(self, relayed: Any) -> None:
        """Relay the child's mirrors of this process's listeners (see
        loopback_relay): only to listeners found here at the fork, whatever
        else the child's message names."""
        assert self.container is not None and self.container.pid is not None
        if not isinstance(relayed, list):
            return
        relayed = [entry for entry in relayed if isinstance(entry, tuple) and len(entry) == 5
                   and isinstance(entry[0], int) and entry[1:] in self.listeners]
        if not relayed:
            return
        try:
            self.relay = loopback_relay.Relay(loopback_relay.test_process(self.container.pid), relayed)
        except OSError as exc:  # the child is gone already, or this kernel lacks pidfd_getfd (before 5.6)
            if isinstance(exc, ProcessLookupError) or exc.errno in (errno.ESRCH, errno.ENOENT):
                return  # a quick test ended before its relay began: nothing left to relay to
            warnings.warn(f"hermetic: the pytest process's listeners are not reachable in this test: {exc}",
                          stacklevel=1)

    def close_relay(self) -> None:
        if self.relay is not None:
            self.relay.close()
            self.relay = None

    def answer(self, payload: Any, reply_fd: int) -> None:
        try:
            method, args, kwargs = payload
            if not (isinstance(method, str) and isinstance(args, tuple) and isinstance(kwargs, dict)):
                raise TypeError("hermetic: a `containers` call of another shape")
            if method == "run" and not self.may_run:
                raise SpecError("hermetic: containers are started for a test that asks for the `containers` "
                                "fixture only; add it to the test's arguments")
            if self.factory is None:
                self.factory = Containers(self.scope)
            reply = (True, self.factory.handle(method, args, kwargs, self.test_net))
        except Exception as exc:  # noqa: BLE001 - the test gets it, as if raised in place
            reply = (False, exc if picklable(exc) else RuntimeError(f"{type(exc).__name__}: {exc}"))
        try:
            write_frame(reply_fd, pickle.dumps(reply))
        except BrokenPipeError:
            pass

    def close(self) -> None:
        if self.factory is not None:
            self.factory.close()
