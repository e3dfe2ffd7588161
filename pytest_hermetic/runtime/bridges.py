"""Bridges and veth pairs, through netlink (pyroute2), in the parent.

A network is a Linux bridge in some network namespace: the host's own for
`net=True` (`hermetic0`, the gateway to the outside), or a namespace of its
own for a named network (`br0`, reachable from nowhere else).  A container
joins by a veth pair made in one request: the bridge end is enslaved to the
bridge, the other end is created straight inside the container's namespace
as `eth0`; the child gives it its address (network.py).  The pair dies with
the container's namespace, so leaving needs no netlink call at all.

pyroute2 is imported here only, and only by a process that uses networks:
its import costs about 250 ms, once.
"""

from __future__ import annotations

import errno
import os

from ..errors import ContainerStartError
from . import netns


def preload() -> None:
    """Import pyroute2 now (before a fork: a forked child must not import)."""
    _iproute_class()


def _iproute_class():  # noqa: ANN202
    try:
        from pyroute2 import IPRoute  # here: ~250 ms of import, for networks only
    except ImportError:
        raise ContainerStartError("networks need pyroute2, which is not installed for this Python; fix: "
                                  "`pip install pyroute2` (or Debian's python3-pyroute2)") from None
    return IPRoute


def _iproute():  # noqa: ANN202
    return _iproute_class()()


def _local_mac() -> str:
    """A random unicast, locally administered MAC address (as Docker gives its bridge)."""
    octets = bytearray(os.urandom(6))
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join(f"{octet:02x}" for octet in octets)


class Bridge:
    """A bridge named `ifname` in the namespace `netns_fd` (None: ours)."""

    def __init__(self, ifname: str, netns_fd: int | None = None) -> None:
        self.ifname = ifname
        self.netns_fd = netns_fd
        self._ipr = None
        self._index: int | None = None

    @property
    def ipr(self):  # noqa: ANN201
        """A netlink socket bound to the bridge's namespace (made there)."""
        if self._ipr is None:
            if self.netns_fd is None:
                self._ipr = _iproute()
            else:
                with netns.entered(self.netns_fd):
                    self._ipr = _iproute()
        return self._ipr

    def exists(self) -> bool:
        return bool(self.ipr.link_lookup(ifname=self.ifname))

    def create(self, gateway: str, prefixlen: int) -> None:
        """Make the bridge with the gateway address, up (idempotent)."""
        ipr = self.ipr
        if not ipr.link_lookup(ifname=self.ifname):
            try:
                # An address of its own: one nobody set follows the ports' lowest
                # and changes as containers come and go, and a container that
                # learned the old one sends its replies nowhere for seconds.
                ipr.link("add", ifname=self.ifname, kind="bridge", state="up", address=_local_mac())
            except Exception as exc:  # NetlinkError; a racing creator is fine
                if getattr(exc, "code", None) != errno.EEXIST:
                    raise ContainerStartError(f"cannot create bridge {self.ifname}: {exc}{_module_hint(exc, 'bridge')}") from None
        index = self.index
        if not any(a.get_attr("IFA_ADDRESS") == gateway for a in ipr.get_addr(index=index)):
            try:
                ipr.addr("add", index=index, address=gateway, prefixlen=prefixlen)
            except Exception as exc:  # noqa: BLE001
                if getattr(exc, "code", None) != errno.EEXIST:
                    raise ContainerStartError(f"cannot give bridge {self.ifname} address {gateway}/{prefixlen}: {exc}") from None
        ipr.link("set", index=index, state="up")

    @property
    def index(self) -> int:
        if self._index is None:
            found = self.ipr.link_lookup(ifname=self.ifname)
            if not found:
                raise ContainerStartError(f"bridge {self.ifname} is gone; fix: `hermetic gc`, then try again")
            self._index = found[0]
        return self._index

    def connect(self, container_netns_fd: int, host_ifname: str, peer_ifname: str = "eth0") -> None:
        """A veth pair: `host_ifname` on the bridge, `peer_ifname` in the container."""
        try:
            # One request: created enslaved and up, the peer born in the container.
            self.ipr.link("add", ifname=host_ifname, kind="veth", master=self.index, state="up",
                          peer={"ifname": peer_ifname, "net_ns_fd": container_netns_fd})
        except ContainerStartError:
            raise
        except Exception as exc:  # noqa: BLE001 - NetlinkError and friends
            raise ContainerStartError(f"cannot connect the container to bridge {self.ifname}: {exc}"
                                      f"{_module_hint(exc, 'veth')}") from None

    def disconnect(self, host_ifname: str) -> None:
        """Remove a veth pair now (it would also go with the container's namespace)."""
        try:
            self.ipr.link("del", ifname=host_ifname)
        except Exception:  # noqa: BLE001 - already gone with its namespace
            pass

    def delete(self) -> None:
        try:
            self.ipr.link("del", ifname=self.ifname)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
            self._index = None


def _module_hint(exc: Exception, module: str) -> str:
    """EOPNOTSUPP from netlink: the kernel lacks the device kind (a module the
    kernel could not load by itself)."""
    if getattr(exc, "code", None) == errno.EOPNOTSUPP:
        return f"; the kernel has no {module} support loaded: fix: `modprobe {module}` as root"
    return ""


def links(prefixes: tuple[str, ...]) -> list[str]:
    """Names of the host's links starting with one of `prefixes` (leak checks, gc)."""
    return sorted(name for name in os.listdir("/sys/class/net") if name.startswith(prefixes))
