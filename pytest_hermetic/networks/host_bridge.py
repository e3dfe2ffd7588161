"""The host bridge (`net=True`): `hermetic0` in the host's own namespace.

The gateway to the host and, through NAT (runtime/nat.py), the outside, as
Docker's default bridge.  It exists while some container or holder uses
it: the first user makes it and its NAT rules, the last one removes both.
Its leases live in the machine's state folder whatever `$HERMETIC_STATE`
says, since the device is the machine's.  A pytest session holds it
(`hold_host_bridge`) so that it is made once, not per test.
"""

from __future__ import annotations

import ipaddress
import json
import os

from .._fs import rmtree
from .._proc import owner, owner_alive
from ..errors import NetworkError
from ..paths import system_state_root
from ..runtime import nat
from .base import HOST_BRIDGE, Attachment, Network, default_subnet


class HostBridge(Network):
    """`hermetic0` in the host's namespace, alive while used (see module doc)."""

    kind = "bridge"

    def __init__(self, subnet: str | None = None) -> None:
        super().__init__("bridge", os.path.join(system_state_root(), "networks", HOST_BRIDGE),
                         subnet or default_subnet(), None, HOST_BRIDGE)
        self._made = False

    @property
    def _holders_dir(self) -> str:
        return os.path.join(self.state_dir, "holders")

    def _ensure_bridge(self) -> None:
        if self is _held and self._made:
            return  # held by us: nobody removes it meanwhile
        self._made = True
        if not self.bridge.exists():
            _check_subnet_free(self.subnet)
            self.bridge.create(self.gateway, self.subnet.prefixlen)
        if not nat.present(str(self.subnet), HOST_BRIDGE):
            nat.add(str(self.subnet), HOST_BRIDGE)

    def write_hosts(self) -> None:
        pass  # no shared names on the host bridge, as on Docker's default one

    def attach(self, container_id: str, hostname: str) -> Attachment:
        attachment = super().attach(container_id, hostname)
        attachment.hosts_bind = None
        return attachment

    def resolv_conf(self) -> str:
        try:
            with open("/etc/resolv.conf") as f:
                text = f.read()
        except OSError:
            text = ""
        return "# hermetic: the host's resolv.conf (net=True)\n" + text

    def hold(self) -> None:
        """Keep the bridge between containers (a pytest session does), so each
        container's start does not make and remove it."""
        with self.locked():
            os.makedirs(self._holders_dir, exist_ok=True)
            self._ensure_bridge()
            with open(os.path.join(self._holders_dir, str(os.getpid())), "w") as f:
                json.dump(owner(), f)

    def release_hold(self) -> None:
        with self.locked():
            try:
                os.unlink(os.path.join(self._holders_dir, str(os.getpid())))
            except FileNotFoundError:
                pass
            self._unused()

    def detach(self, container_id: str) -> None:
        with self.locked():
            self._release(container_id)
            self._unused()

    def _live_holders(self) -> list[str]:
        live: list[str] = []
        try:
            names = os.listdir(self._holders_dir)
        except FileNotFoundError:
            return live
        for name in names:
            path = os.path.join(self._holders_dir, name)
            try:
                with open(path) as f:
                    entry = json.load(f)
            except (OSError, json.JSONDecodeError):
                entry = {}
            if owner_alive(entry):
                live.append(name)
            else:
                os.unlink(path)
        return live

    def _unused(self) -> bool:
        """Under the lock: the last user removes bridge, rules and state."""
        live, _ = self.prune_leases()
        if live or self._live_holders():
            return False
        self.bridge.delete()
        nat.remove(str(self.subnet), HOST_BRIDGE)
        self.bridge.close()
        rmtree(self.state_dir)
        return True

    def gc(self) -> list[str]:
        if os.geteuid() != 0:
            return []  # only root makes the host bridge
        with self.locked():
            present = os.path.exists(f"/sys/class/net/{HOST_BRIDGE}") or os.path.isdir(self.state_dir)
            try:  # a veth on it is somebody's, leases or not (another state folder, an older version)
                ports = os.listdir(f"/sys/class/net/{HOST_BRIDGE}/brif")
            except OSError:
                ports = []
            if present and not ports and self._unused():
                return [f"host bridge {HOST_BRIDGE} and its NAT rules"]
        return []


def _check_subnet_free(subnet: ipaddress.IPv4Network) -> None:
    """Refuse a subnet the host already routes (a clash with a real network)."""
    try:
        with open("/proc/net/route") as f:
            rows = f.read().splitlines()[1:]
    except OSError:
        return
    for row in rows:
        fields = row.split()
        if len(fields) < 8 or fields[0] == HOST_BRIDGE:
            continue
        dest = ipaddress.IPv4Address(int(fields[1], 16).to_bytes(4, "little"))
        mask = ipaddress.IPv4Address(int(fields[7], 16).to_bytes(4, "little"))
        if int(mask) == 0:
            continue  # the default route overlaps everything
        route = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
        if route.overlaps(subnet):
            raise NetworkError(f"subnet {subnet} overlaps the host's route {route} via {fields[0]}; "
                               "set another one with HERMETIC_SUBNET (or the ini key hermetic_subnet)")


_held: HostBridge | None = None


def held() -> HostBridge | None:
    """The host bridge this process holds, if it holds one."""
    return _held


def is_shared(network: Network) -> bool:
    """Whether `network` is this process's held host bridge (not to be closed by a container)."""
    return network is _held


def hold_host_bridge() -> None:
    """Keep the host bridge for the rest of this process (a pytest session
    with `net=True` tests): made once, not per container."""
    global _held
    if _held is None and os.geteuid() == 0:  # rootless net=True has no bridge (usermode_net.py)
        bridge = HostBridge()
        bridge.hold()
        _held = bridge


def release_host_bridge() -> None:
    global _held
    if _held is not None:
        bridge, _held = _held, None
        bridge.release_hold()
        bridge.close()


def host_gateway() -> str:
    """The host's address on the host bridge (held for this process): where
    a `net=True` container reaches a server the host runs."""
    hold_host_bridge()
    assert _held is not None
    return _held.gateway
