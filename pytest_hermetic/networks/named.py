"""Named networks (`hermetic network create NAME`): for the command line.

A bridge in a network namespace of its own, kept alive by a bind mount on a
file below the state folder (as `ip netns add` does), so it outlives the
command that made it; every container on it finds the others by name.
Nothing of it is visible on the host, so two networks can share a subnet.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

from .._fs import rmtree
from ..errors import NetworkError
from ..paths import state_root
from ..runtime import bridges, nat, netns
from ..runtime.network import loopback_up
from ..spec import parse_net
from .base import HOST_BRIDGE, Network, default_subnet
from .host_bridge import HostBridge


def _named_dir(name: str) -> str:
    return os.path.join(state_root(), "networks", "named", name)


def create_network(name: str, subnet: str | None = None) -> Network:
    """Make a named network that lives until `remove_network`."""
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
                loopback_up()
            network.bridge.create(network.gateway, network.subnet.prefixlen)
            network.write_hosts()
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
            live, _ = network.prune_leases()
            users = sorted(entry["hostname"] for entry in live.values())
            if users:
                raise NetworkError(f"network {name} is in use by {', '.join(users)}; stop them first")
            network.close()
            netns.unpin(os.path.join(network.state_dir, "netns"))
            rmtree(network.state_dir)
    finally:
        network.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(network.lock_path)
