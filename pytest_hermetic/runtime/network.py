"""The container's network namespace.

`net=False` (the only mode of the engine so far) is a fresh network
namespace with `lo` up and nothing else.  Bringing one interface up is a
single ioctl, so the child does it without importing pyroute2 (whose import
alone would cost more than the whole container start); bridges, veth pairs
and addresses (the network issue) are netlink work for pyroute2, done by the
parent on the namespace the child holds.
"""

from __future__ import annotations

import _socket  # not `socket`: its enums cost milliseconds of start-up
import fcntl
import struct
from .._record import record

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


@record(frozen=True)
class NetworkConfig:
    """How the container is connected.  `mode` is "none" (loopback only)."""

    mode: str = "none"


def loopback_up() -> None:
    """Bring `lo` up in the current network namespace."""
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
    finally:
        sock.close()


def setup_in_child(config: NetworkConfig) -> None:
    """Runs inside the container's fresh network namespace, before pivot."""
    if config.mode != "none":
        raise NotImplementedError(f"network mode {config.mode!r}")
    loopback_up()
