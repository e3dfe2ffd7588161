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
import json
import os

from .._fs import rmtree
from .._proc import name_owner, owner_alive
from ..paths import state_root
from .base import DEFAULT_SUBNET, HOST_BRIDGE, VETH_PREFIX, Attachment, Network, default_subnet
from .host_bridge import HostBridge, held, hold_host_bridge, host_gateway, is_shared, release_host_bridge
from .named import create_network, list_networks, open_network, remove_network
from .private import PrivateNetwork, Scope, drain_pool


def resolve(net: bool | str, scope: Scope | None = None) -> Network | None:
    """The network a spec's `net` names: None for loopback only.  The host
    bridge this process holds is shared (see `is_shared`)."""
    if net is False:
        return None
    if net is True:
        return held() or HostBridge()
    if scope is not None:
        return scope.get(net)
    return open_network(net)


def gc_networks() -> list[str]:
    """Private networks of dead owners, dead leases, an unused host bridge."""
    removed = []
    base = os.path.join(state_root(), "networks", "private")
    for entry in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        ident = entry[:-len(".lock")] if entry.endswith(".lock") else entry
        if entry != ident and os.path.isdir(os.path.join(base, ident)):
            continue  # a network's lock: it goes with the network
        # The owner is in the name (made before anything else); older
        # networks say it in meta.json.
        record = name_owner(ident)
        if record is None:
            try:
                with open(os.path.join(base, ident, "meta.json")) as f:
                    record = json.load(f)
            except (OSError, json.JSONDecodeError):
                continue  # not provably dead
        if owner_alive(record):
            continue
        if entry == ident:
            with contextlib.suppress(OSError, json.JSONDecodeError), open(os.path.join(base, ident, "meta.json")) as f:
                record = json.load(f)
            rmtree(os.path.join(base, ident))
            removed.append(f"private network {record.get('name', ident)}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(base, ident) + ".lock")
    for info in [n for n in list_networks() if n["kind"] == "named"]:
        network = open_network(info["name"])
        try:
            with network.locked():
                if network.prune_leases()[1]:
                    network.write_hosts()
                    removed.append(f"stale leases on network {info['name']}")
        finally:
            network.close()
    removed += HostBridge().gc()
    return removed


__all__ = [
    "DEFAULT_SUBNET", "HOST_BRIDGE", "VETH_PREFIX", "Attachment", "HostBridge", "Network", "PrivateNetwork", "Scope",
    "create_network", "default_subnet", "drain_pool", "gc_networks", "hold_host_bridge", "host_gateway", "is_shared",
    "list_networks", "open_network", "release_host_bridge", "remove_network", "resolve",
]
