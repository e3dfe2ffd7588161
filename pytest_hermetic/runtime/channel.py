"""The start-up handshake between the parent and the container's processes.

Each step of a start that one side waits for is a one-byte message on a
close-on-exec pipe of its own (a `Channel`): one sender, one receiver, one
message.  A sender that fails closes its end without writing, so the
receiver reads EOF instead of the message and stops (or reports why).

    ATTACHED       parent -> PID 1   moved into its cgroup (and, on a bridge, veth wired)
    NETNS_MADE     PID 1 -> parent   its network namespace exists: wire the veth now
    NETWORK_WIRED  parent -> PID 1   rootless: the network is wired (slirp4netns or a rootless bridge)
    MAP_REQUEST    relay -> parent   the user namespace exists: write its id maps (newuidmap)
    MAPPED         parent -> relay   the maps are written

Set-up errors travel the other way on their own pipe as one line (`fail`,
read by `start_error`): exit code, tab, message; a clean exec closes that
pipe with nothing written.
"""

from __future__ import annotations

import os
import struct
TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it costs start-up
    from typing import NoReturn

from ..errors import CommandNotExecutable, CommandNotFound, ContainerStartError, HermeticError

ATTACHED = b"J"
NETNS_MADE = b"N"
NETWORK_WIRED = b"G"
MAP_REQUEST = b"U"
MAPPED = b"G"

# What a child says when it stopped because a step of the parent's failed.
NOT_ATTACHED = "could not move the container into its cgroup"
NOT_WIRED = "the container's network could not be wired"
WAITED_IN_VAIN = (NOT_ATTACHED, NOT_WIRED)

# The wait status of a callable's PID 2, as PID 1 reports it; and the relay's PID 1 pid.
STATUS = struct.Struct("i")
PID = struct.Struct("i")


class Channel:
    """One message, one direction, across a fork: both ends are made before
    it; afterwards each side closes the end it does not use (`send` and
    `receive` do), so a side that dies is seen as EOF."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC)

    def send(self, message: bytes) -> None:
        """Say `message` and close this side (so there is nothing else to say)."""
        self.close_read()
        try:
            os.write(self.write_fd, message)
        finally:
            self.close_write()

    def receive(self, message: bytes) -> bool:
        """Wait for the other side; True when it sent `message` (not EOF)."""
        self.close_write()
        try:
            return os.read(self.read_fd, 1) == message
        finally:
            self.close_read()

    def close_read(self) -> None:
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1

    def close_write(self) -> None:
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def close(self) -> None:
        self.close_read()
        self.close_write()


def describe(exc: BaseException) -> str:
    """An exception as one line of a start error: the engine's own errors
    (a user the image lacks, a working directory it cannot hold) and the
    system's by their message alone, as the parent raises them again (one
    error type in the line would be the parent's noise); anything else, a
    bug, with its type."""
    if isinstance(exc, HermeticError) or (isinstance(exc, OSError) and not str(exc).startswith(type(exc).__name__)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def fail(err_w: int, code: int, text: str) -> NoReturn:
    """Report a set-up error to the parent and end this (forked) process."""
    try:
        os.write(err_w, f"{code}\t{text}".encode())
    finally:
        os._exit(code)


def start_error(message: bytes) -> ContainerStartError:
    """The error type a `fail` line names (127: not found, 126: not executable)."""
    code_text, _, text = message.decode(errors="replace").partition("\t")
    code = int(code_text) if code_text.isdigit() else 125
    kind = {127: CommandNotFound, 126: CommandNotExecutable}.get(code, ContainerStartError)
    return kind(text)


def read_exactly(fd: int, size: int) -> bytes:
    """`size` bytes from `fd`, or fewer if it reaches EOF first."""
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def read_all(fd: int) -> bytes:
    """Everything up to EOF."""
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
