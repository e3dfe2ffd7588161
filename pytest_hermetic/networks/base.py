"""What every network is: a bridge, a subnet, address leases, a hosts file.

A network's state folder holds its leases (`leases/<address>`, one JSON file
each: container id, hostname, owner) and its hosts file; a lock file beside
the folder (not in it, so that the last user may remove the folder) guards
both across processes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
from typing import Callable

from .._fs import flock
from .._proc import owner, owner_alive
from .._record import record
from ..errors import NetworkError
from ..runtime import bridges, netns
from ..runtime.network import NetworkConfig

HOST_BRIDGE = "hermetic0"
DEFAULT_SUBNET = "10.88.0.0/16"
VETH_PREFIX = "hm"  # + 12 hex of the container id: the bridge end of its veth pair


def default_subnet() -> str:
    return os.environ.get("HERMETIC_SUBNET") or DEFAULT_SUBNET


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    """`text` as an IPv4 subnet of at least 8 addresses, or a NetworkError naming the fix."""
    try:
        subnet = ipaddress.IPv4Network(text, strict=True)
    except ValueError as exc:
        raise NetworkError(f"subnet {text!r}: {exc}; use a CIDR such as {DEFAULT_SUBNET}") from None
    if subnet.prefixlen > 29:
        raise NetworkError(f"subnet {text!r} is too small; use a /29 or larger, such as {DEFAULT_SUBNET}")
    return subnet


@record
class Attachment:
    """What joining a network gives a container: the child's config, the
    files for its init layer, and a bind of the network's hosts file."""

    config: NetworkConfig
    address: str
    hosts: str  # text of the container's own /etc/hosts (init layer)
    resolv_conf: str
    connect: Callable[[int], None]  # the veth, into the namespace of the child with this pid
    hosts_bind: str | None = None  # the network's shared hosts file, bound over /etc/hosts
    # The veth, into the network namespace open at this fd (one made ahead,
    # before the child exists); None where the network wires by pid only.
    connect_netns: Callable[[int], None] | None = None


class Network:
    """A bridge plus leases and names, in `state_dir`, guarded by `lock_path`."""

    kind = "named"
    wires_by_netns = True  # the veth goes in from here, into a namespace by fd (`_connect`)

    def __init__(self, name: str, state_dir: str, subnet: str, netns_fd: int | None, bridge: str = "br0") -> None:
        self.name = name
        self.state_dir = state_dir
        self.lock_path = state_dir.rstrip("/") + ".lock"
        self.subnet = parse_subnet(subnet)
        self.gateway = str(self.subnet.network_address + 1)
        self.netns_fd = netns_fd
        self.bridge = bridges.Bridge(bridge, netns_fd)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.subnet}>"

    # -- leases ----------------------------------------------------------------

    def locked(self) -> contextlib.AbstractContextManager[None]:
        os.makedirs(os.path.dirname(self.lock_path), exist_ok=True)
        return flock(self.lock_path)

    @property
    def _leases_dir(self) -> str:
        return os.path.join(self.state_dir, "leases")

    def leases(self) -> dict[str, dict]:
        """address -> {id, hostname, owner_pid, owner_start}."""
        found: dict[str, dict] = {}
        try:
            names = os.listdir(self._leases_dir)
        except FileNotFoundError:
            return found
        for address in names:
            try:
                with open(os.path.join(self._leases_dir, address)) as f:
                    found[address] = json.load(f)
            except (OSError, json.JSONDecodeError):
                continue
        return found

    def _allocate(self, container_id: str, hostname: str) -> str:
        """The next free address after the one given last (under the lock).

        Round the subnet rather than the lowest free one: an address given
        again at once would reach the bridge's neighbour cache while it still
        holds the last holder's MAC address (REACHABLE for 15-45 s), and
        connections from the bridge's side (a rootless network's holder)
        would go nowhere until it expires."""
        taken = set(self.leases())
        first, end = int(self.subnet.network_address) + 1, int(self.subnet.broadcast_address)
        last_path = os.path.join(self.state_dir, "last-lease")
        try:
            with open(last_path) as f:
                last = int(ipaddress.ip_address(f.read().strip()))
        except (OSError, ValueError):
            last = first - 1
        start = last + 1 if first <= last + 1 < end else first
        for value in _wrapped(start, first, end):
            address = str(ipaddress.ip_address(value))
            if address == self.gateway or address in taken:
                continue
            os.makedirs(self._leases_dir, exist_ok=True)
            entry = {"id": container_id, "hostname": hostname, **owner()}
            with open(os.path.join(self._leases_dir, address), "x") as f:
                json.dump(entry, f)
            with open(last_path + ".tmp", "w") as f:
                f.write(address)
            os.replace(last_path + ".tmp", last_path)
            return address
        raise NetworkError(f"network {self.name}: no free address left in {self.subnet}; remove containers or "
                           "use a larger subnet")

    def _release(self, container_id: str) -> bool:
        for address, entry in self.leases().items():
            if entry.get("id") == container_id:
                try:
                    os.unlink(os.path.join(self._leases_dir, address))
                except FileNotFoundError:
                    pass
                return True
        return False

    def prune_leases(self) -> tuple[dict[str, dict], list[str]]:
        """Under the lock: remove the leases of dead owners; (live leases, dropped addresses)."""
        live, dropped = {}, []
        for address, entry in self.leases().items():
            if owner_alive(entry):
                live[address] = entry
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self._leases_dir, address))
            dropped.append(address)
        return live, dropped

    # -- names -----------------------------------------------------------------

    @property
    def hosts_path(self) -> str:
        return os.path.join(self.state_dir, "hosts")

    def write_hosts(self) -> None:
        """The network's shared /etc/hosts, from its leases (call with the lock held)."""
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                 f"{self.gateway}\t{self.name}-gateway"]
        for address, entry in sorted(self.leases().items(), key=lambda item: ipaddress.IPv4Address(item[0])):
            names = [entry["hostname"]] + ([entry["id"][:12]] if entry["id"][:12] != entry["hostname"] else [])
            lines.append(f"{address}\t{' '.join(names)}")
        data = ("\n".join(lines) + "\n").encode()
        # In place, never by rename: containers see this inode through a bind.
        fd = os.open(self.hosts_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)

    # -- joining and leaving -------------------------------------------------------

    def _ensure_bridge(self) -> None:
        if not self.bridge.exists():
            self.bridge.create(self.gateway, self.subnet.prefixlen)

    def attach(self, container_id: str, hostname: str) -> Attachment:
        """Give the container an address; `Attachment.connect(pid)` puts its
        veth end in the network namespace of process `pid` (the child, once
        it has made it: process.spawn calls it)."""
        with self.locked():
            os.makedirs(self.state_dir, exist_ok=True)
            try:
                self._ensure_bridge()
                address = self._allocate(container_id, hostname)
            except BaseException:
                self._unused()
                raise
            self.write_hosts()
        config = NetworkConfig(mode="bridge", address=address, prefixlen=self.subnet.prefixlen, gateway=self.gateway)
        hosts = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                 f"{address}\t{hostname}\n")
        veth = VETH_PREFIX + container_id[:12]

        def connect(pid: int) -> None:
            self._connect(pid, veth)

        def connect_netns(fd: int) -> None:
            self.bridge.connect(fd, veth)

        return Attachment(config, address, hosts, self.resolv_conf(), connect, self.hosts_path,
                          connect_netns if self.wires_by_netns else None)

    def _unused(self) -> bool:
        """Under the lock, after a container left: remove what nobody uses."""
        return False

    def _connect(self, pid: int, veth: str) -> None:
        """The veth pair: `veth` on the bridge, `eth0` in the namespace of `pid`."""
        fd = netns.open_path(f"/proc/{pid}/ns/net")
        try:
            self.bridge.connect(fd, veth)
        finally:
            os.close(fd)

    def resolv_conf(self) -> str:
        return (f"# hermetic: network {self.name} ({self.subnet}); no DNS server: names of the\n"
                "# containers on it resolve through /etc/hosts\n")

    def detach(self, container_id: str) -> None:
        with self.locked():
            if self._release(container_id) and os.path.isdir(self.state_dir):
                self.write_hosts()

    def close(self) -> None:
        self.bridge.close()
        if self.netns_fd is not None:
            os.close(self.netns_fd)
            self.netns_fd = None

    def info(self) -> dict:
        return {"name": self.name, "kind": self.kind, "subnet": str(self.subnet), "gateway": self.gateway,
                "containers": sorted(entry["hostname"] for entry in self.leases().values())}


def _wrapped(start: int, first: int, end: int):  # noqa: ANN202 - an iterator of ints
    """start..end-1, then first..start-1, lazily (a /16 has 65,534 hosts)."""
    yield from range(start, end)
    yield from range(first, start)
