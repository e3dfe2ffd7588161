"""Networks containers join: the host bridge, named networks, private ones.

Three kinds, one shape (a bridge, a subnet, address leases, a hosts file):

* **the host bridge** (`net=True`): `hermetic0` in the host's namespace,
  the gateway to the host and, through NAT, the outside (as Docker's default
  bridge).  It exists while some container or holder uses it: the first
  user makes it and its NAT rules, the last one removes both.  Its leases
  live in the machine's state folder whatever `$HERMETIC_STATE` says, since
  the device is the machine's.
* **named networks** (`hermetic network create NAME`): a bridge in a network
  namespace of its own, kept by a bind mount below the state folder; every
  container on it finds the others by name.  Nothing of it is visible on the
  host, so two networks can use the same subnet.
* **private networks** (`Scope`, what a pytest test's `net="svc"` means):
  the same, held by an fd of the process that owns the test; they vanish
  with the test (or with the process, killed or not).

Names resolve through one `/etc/hosts` per network, bound read-only into
every container on it and rewritten in place (same inode, so the binds see
it) whenever a container joins or leaves.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import time
from typing import Callable

from ._fs import flock, rmtree
from ._proc import owner, owner_alive
from ._record import record
from .errors import NetworkError
from .paths import state_root, system_state_root
from .runtime import bridges, nat, netns
from .runtime.network import NetworkConfig

HOST_BRIDGE = "hermetic0"
DEFAULT_SUBNET = "10.88.0.0/16"
VETH_PREFIX = "hm"  # + 12 hex of the container id: the bridge end of its veth pair


def default_subnet() -> str:
    return os.environ.get("HERMETIC_SUBNET") or DEFAULT_SUBNET


def _parse_subnet(text: str) -> ipaddress.IPv4Network:
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


class Network:
    """A bridge plus leases and names, in `state_dir`, guarded by `lock_path`."""

    kind = "named"

    def __init__(self, name: str, state_dir: str, subnet: str, netns_fd: int | None, bridge: str = "br0") -> None:
        self.name = name
        self.state_dir = state_dir
        self.lock_path = state_dir.rstrip("/") + ".lock"
        self.subnet = _parse_subnet(subnet)
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
        found = {}
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
        taken = set(self.leases())
        for host in self.subnet.hosts():
            address = str(host)
            if address == self.gateway or address in taken:
                continue
            os.makedirs(self._leases_dir, exist_ok=True)
            entry = {"id": container_id, "hostname": hostname, **owner()}
            with open(os.path.join(self._leases_dir, address), "x") as f:
                json.dump(entry, f)
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

    def drop_dead_leases(self) -> list[str]:
        dropped = []
        for address, entry in self.leases().items():
            if not owner_alive(entry):
                try:
                    os.unlink(os.path.join(self._leases_dir, address))
                    dropped.append(address)
                except FileNotFoundError:
                    pass
        return dropped

    # -- names -----------------------------------------------------------------

    @property
    def hosts_path(self) -> str:
        return os.path.join(self.state_dir, "hosts")

    def _write_hosts(self) -> None:
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
            self._write_hosts()
        config = NetworkConfig(mode="bridge", address=address, prefixlen=self.subnet.prefixlen, gateway=self.gateway)
        hosts = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                 f"{address}\t{hostname}\n")
        veth = VETH_PREFIX + container_id[:12]

        def connect(pid: int) -> None:
            fd = netns.open_path(f"/proc/{pid}/ns/net")
            try:
                self.bridge.connect(fd, veth)
            finally:
                os.close(fd)

        return Attachment(config, address, hosts, self.resolv_conf(), connect, self.hosts_path)

    def _unused(self) -> bool:
        """Under the lock, after a container left: remove what nobody uses."""
        return False

    def resolv_conf(self) -> str:
        return (f"# hermetic: network {self.name} ({self.subnet}); no DNS server: names of the\n"
                "# containers on it resolve through /etc/hosts\n")

    def detach(self, container_id: str) -> None:
        with self.locked():
            if self._release(container_id) and os.path.isdir(self.state_dir):
                self._write_hosts()

    def close(self) -> None:
        self.bridge.close()
        if self.netns_fd is not None:
            os.close(self.netns_fd)
            self.netns_fd = None

    def info(self) -> dict:
        return {"name": self.name, "kind": self.kind, "subnet": str(self.subnet), "gateway": self.gateway,
                "containers": sorted(entry["hostname"] for entry in self.leases().values())}


# -- the host bridge (net=True) ------------------------------------------------------


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

    def attach(self, container_id: str, hostname: str) -> Attachment:
        attachment = super().attach(container_id, hostname)
        attachment.hosts_bind = None  # no shared names on the host bridge, as Docker's default one
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
        live = []
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
        self.drop_dead_leases()
        if self.leases() or self._live_holders():
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
            if present and self._unused():
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


# -- named networks (the CLI) ------------------------------------------------------


def _named_dir(name: str) -> str:
    return os.path.join(state_root(), "networks", "named", name)


def create_network(name: str, subnet: str | None = None) -> Network:
    """Make a named network that lives until `remove_network`."""
    from .spec import parse_net

    if parse_net(name) is not name or name in ("bridge", "none", "host"):
        raise NetworkError(f"network name {name!r} is reserved or invalid; pick another")
    path = _named_dir(name)
    network = Network(name, path, subnet or default_subnet(), None)
    with network.locked():
        if os.path.exists(os.path.join(path, "meta.json")):
            raise NetworkError(f"network {name} already exists; remove it with `hermetic network rm {name}` first")
        os.makedirs(path, exist_ok=True)
        fd = netns.create()
        try:
            netns.pin(fd, os.path.join(path, "netns"))
            network.netns_fd = fd
            network.bridge = bridges.Bridge("br0", fd)
            with netns.entered(fd):
                from .runtime.network import loopback_up

                loopback_up()
            network.bridge.create(network.gateway, network.subnet.prefixlen)
            network._write_hosts()
            with open(os.path.join(path, "meta.json"), "w") as f:
                json.dump({"name": name, "subnet": str(network.subnet), "created": time.time()}, f)
        except BaseException:
            network.close()
            netns.unpin(os.path.join(path, "netns"))
            rmtree(path)
            raise
    return network


def open_network(name: str) -> Network:
    """A named network made by `create_network` (in this process or another)."""
    path = _named_dir(name)
    try:
        with open(os.path.join(path, "meta.json")) as f:
            meta = json.load(f)
        fd = netns.open_path(os.path.join(path, "netns"))
    except (OSError, json.JSONDecodeError):
        raise NetworkError(f"network {name!r} does not exist; create it with `hermetic network create {name}`") from None
    return Network(name, path, meta["subnet"], fd)


def list_networks() -> list[dict]:
    found = []
    base = os.path.dirname(_named_dir("x"))
    for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        if os.path.exists(os.path.join(base, name, "meta.json")):
            network = open_network(name)
            try:
                found.append(network.info())
            finally:
                network.close()
    bridge = HostBridge()
    if os.path.exists(f"/sys/class/net/{HOST_BRIDGE}"):
        info = bridge.info()
        info["forwarding"] = nat.forwarding_enabled()
        found.append(info)
    bridge.close()
    return found


def remove_network(name: str) -> None:
    network = open_network(name)
    try:
        with network.locked():
            network.drop_dead_leases()
            users = sorted(entry["hostname"] for entry in network.leases().values())
            if users:
                raise NetworkError(f"network {name} is in use by {', '.join(users)}; stop them first")
            network.close()
            netns.unpin(os.path.join(network.state_dir, "netns"))
            rmtree(network.state_dir)
    finally:
        network.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(network.lock_path)


# -- private networks (a pytest test's net="NAME") ---------------------------------------


class PrivateNetwork(Network):
    """A named network private to its owner: held by an fd, gone with it.

    Making one (a namespace, a bridge) and tearing it down costs ~20 ms and
    loads the kernel's serialized namespace clean-up, once per test; so a
    closed network whose containers are all gone goes back to a small pool
    of this process and serves the next test, with no lease, no name and
    a fresh hosts file (a new test's containers get new veths, new MACs)."""

    kind = "private"

    def __init__(self, name: str, subnet: str | None = None) -> None:
        ident = os.urandom(6).hex()
        path = os.path.join(state_root(), "networks", "private", ident)
        fd = netns.create()
        super().__init__(name, path, subnet or default_subnet(), fd)
        os.makedirs(path)
        with netns.entered(fd):
            from .runtime.network import loopback_up

            loopback_up()
        self.bridge.create(self.gateway, self.subnet.prefixlen)
        self._reset(name)

    def _reset(self, name: str) -> None:
        self.name = name
        self._members = 0
        self._closing = False
        with open(os.path.join(self.state_dir, "meta.json"), "w") as f:
            json.dump({"name": name, **owner()}, f)
        self._write_hosts()

    def _ensure_bridge(self) -> None:
        pass  # made in __init__, in a namespace nobody else can reach

    def attach(self, container_id: str, hostname: str) -> Attachment:
        attachment = super().attach(container_id, hostname)
        self._members += 1
        return attachment

    def detach(self, container_id: str) -> None:
        super().detach(container_id)
        self._members -= 1
        if self._closing and self._members <= 0:
            self._destroy()

    def close(self) -> None:
        """Destroyed (or pooled) once its last container has left."""
        self._closing = True
        if self._members <= 0:
            self._destroy()

    def _destroy(self) -> None:
        if (len(_pool) < POOL_SIZE and self.netns_fd is not None and not self.leases()
                and str(self.subnet) == str(_parse_subnet(default_subnet()))):
            _pool.append(self)
            return
        self._really_destroy()

    def _really_destroy(self) -> None:
        super().close()
        rmtree(self.state_dir)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.lock_path)


POOL_SIZE = 2
_pool: list[PrivateNetwork] = []


def _pooled(name: str) -> PrivateNetwork | None:
    if _pool and str(_pool[-1].subnet) == str(_parse_subnet(default_subnet())):
        network = _pool.pop()
        network._reset(name)
        return network
    return None


def drain_pool() -> None:
    """Destroy the pooled networks (the end of a pytest session)."""
    while _pool:
        _pool.pop()._really_destroy()


class Scope:
    """The networks one pytest test names: `net="svc"` in its marker and in
    its service containers is the same private network, another test's
    "svc" is another one."""

    def __init__(self) -> None:
        self._networks: dict[str, PrivateNetwork] = {}

    def get(self, name: str) -> PrivateNetwork:
        if name not in self._networks:
            self._networks[name] = _pooled(name) or PrivateNetwork(name)
        return self._networks[name]

    def close(self) -> None:
        for network in self._networks.values():
            network.close()
        self._networks.clear()


def resolve(net: bool | str, scope: Scope | None = None) -> Network | None:
    """The network a spec's `net` names: None for loopback only.  The host
    bridge this process holds is shared (see `is_shared`)."""
    if net is False:
        return None
    if net is True:
        return _held or HostBridge()
    if scope is not None:
        return scope.get(net)
    return open_network(net)


def gc_networks() -> list[str]:
    """Private networks of dead owners, dead leases, an unused host bridge."""
    removed = []
    base = os.path.join(state_root(), "networks", "private")
    for ident in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        try:
            with open(os.path.join(base, ident, "meta.json")) as f:
                meta = json.load(f)
        except (OSError, json.JSONDecodeError):
            meta = {}
        if not owner_alive(meta):
            rmtree(os.path.join(base, ident))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(base, ident) + ".lock")
            removed.append(f"private network {meta.get('name', ident)}")
    for info in [n for n in list_networks() if n["kind"] == "named"]:
        network = open_network(info["name"])
        try:
            with network.locked():
                if network.drop_dead_leases():
                    network._write_hosts()
                    removed.append(f"stale leases on network {info['name']}")
        finally:
            network.close()
    removed += HostBridge().gc()
    return removed


_held: HostBridge | None = None


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
