"""The container's side of its network: runs in the child.

* `net=False` ("none"): a fresh network namespace with `lo` up, nothing else.
* On a network ("bridge"): the child makes its namespace as for `net=False`
  and says so; while it builds its root, the parent puts the container's
  end of a veth pair in it as `eth0` (bridges.py); then the child gives
  `eth0` its address and the default route.
* "usermode" (rootless `net=True`): slirp4netns configures `tap0` from
  outside (usermode_net.py); the child only waits for it.

Everything here is a handful of ioctls on a datagram socket: the child must
not import pyroute2 (its import alone costs ~250 ms, more than a whole
container start); netlink work is the parent's, once per process.
"""

from __future__ import annotations

import _socket  # not `socket`: its enums cost milliseconds of start-up
import fcntl
import struct

from .._record import record

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
SIOCADDRT = 0x890B
IFF_UP = 0x1
RTF_UP = 0x1
RTF_GATEWAY = 0x2

# struct rtentry (linux/route.h), native alignment; the kernel copies all of it.
_RTENTRY = struct.Struct("@L16s16s16sHhLPhPLLH")
_RTENTRY_SIZE = (_RTENTRY.size + 7) // 8 * 8


@record(frozen=True)
class NetworkConfig:
    """How the container is connected.

    `mode` is "none" (loopback only), "bridge" (`eth0` gets `address`/
    `prefixlen`, routed through `gateway`) or "usermode"."""

    mode: str = "none"
    address: str | None = None
    prefixlen: int = 0
    gateway: str | None = None
    interface: str = "eth0"
    api_socket: str | None = None  # "usermode": where slirp4netns takes port forwardings (`-p`); None: no API


def _ifreq_flags(sock, name: bytes, add: int) -> None:  # noqa: ANN001
    request = struct.pack("16sH14x", name, 0)
    flags = struct.unpack("16sH14x", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[1]
    fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", name, flags | add))


def _sockaddr(address: str) -> bytes:
    return struct.pack("HH4s8x", _socket.AF_INET, 0, _socket.inet_aton(address))


def _netmask(prefixlen: int) -> str:
    bits = (0xFFFFFFFF << (32 - prefixlen)) & 0xFFFFFFFF if prefixlen else 0
    return _socket.inet_ntoa(struct.pack("!I", bits))


def loopback_up() -> None:
    """Bring `lo` up in the current network namespace."""
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        _ifreq_flags(sock, b"lo", IFF_UP)
    finally:
        sock.close()


def configure_interface(name: str, address: str, prefixlen: int, gateway: str | None) -> None:
    """Address, up, default route: what `ip addr add; ip link set up; ip
    route add default` would do, in the current network namespace."""
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        ifname = name.encode()
        fcntl.ioctl(sock.fileno(), SIOCSIFADDR, struct.pack("16s16s", ifname, _sockaddr(address)))
        fcntl.ioctl(sock.fileno(), SIOCSIFNETMASK, struct.pack("16s16s", ifname, _sockaddr(_netmask(prefixlen))))
        _ifreq_flags(sock, ifname, IFF_UP)
        if gateway:
            zero = _sockaddr("0.0.0.0")
            entry = _RTENTRY.pack(0, zero, _sockaddr(gateway), zero, RTF_UP | RTF_GATEWAY, 0, 0, 0, 0, 0, 0, 0, 0)
            fcntl.ioctl(sock.fileno(), SIOCADDRT, entry.ljust(_RTENTRY_SIZE, b"\0"))
    finally:
        sock.close()


def configure(config: NetworkConfig) -> None:
    """Once the parent has put the veth end in our namespace."""
    if config.address:
        configure_interface(config.interface, config.address, config.prefixlen, config.gateway)
