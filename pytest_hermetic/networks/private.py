"""Private networks: what `net="svc"` means in a pytest test.

The same shape as a named network, held by an fd of the process that owns
the test instead of a bind mount: it vanishes with the test, or with the
process, killed or not.  A `Scope` maps the names one test uses to its
networks, so another test's "svc" is another network.
"""

from __future__ import annotations

import contextlib
import json
import os

from .._fs import rmtree
from .._proc import owner, owner_key
from ..paths import state_root
from ..runtime import netns
from ..runtime.namespaces import default_user_namespace
from ..runtime.network import loopback_up
from .base import Attachment, Network, parse_subnet, default_subnet


class PrivateNetwork(Network):
    """A named network private to its owner: held by an fd, gone with it.

    Making one (a namespace, a bridge) and tearing it down costs ~20 ms and
    loads the kernel's serialized namespace clean-up, once per test; so a
    closed network whose containers are all gone goes back to a small pool
    of this process and serves the next test, with no lease, no name and
    a fresh hosts file (a new test's containers get new veths, new MACs)."""

    kind = "private"

    def __init__(self, name: str, subnet: str | None = None) -> None:
        ident = f"{owner_key()}-{os.urandom(6).hex()}"  # gc tells its owner from the name
        path = os.path.join(state_root(), "networks", "private", ident)
        fd = netns.create()
        super().__init__(name, path, subnet or default_subnet(), fd)
        os.makedirs(path)
        with netns.entered(fd):
            loopback_up()
        self.bridge.create(self.gateway, self.subnet.prefixlen)
        self._reset(name)

    def _reset(self, name: str) -> None:
        self.name = name
        self._members = 0
        self._closing = False
        with open(os.path.join(self.state_dir, "meta.json"), "w") as f:
            json.dump({"name": name, **owner()}, f)
        self.write_hosts()

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
        if (len(_pool) < POOL_SIZE and self._usable() and not self.leases()
                and str(self.subnet) == str(parse_subnet(default_subnet()))):
            _pool.append(self)
            return
        self._really_destroy()

    def _usable(self) -> bool:
        return self.netns_fd is not None

    def _really_destroy(self) -> None:
        super().close()
        rmtree(self.state_dir)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.lock_path)


class RootlessPrivateNetwork(PrivateNetwork):
    """A private network of an unprivileged user: the bridge lives in a
    holder process's own user and network namespaces (runtime/netholder.py),
    and the containers on it join that user namespace."""

    wires_by_netns = False  # the holder, in its user namespace, wires the child by pid

    def __init__(self, name: str, subnet: str | None = None) -> None:
        from ..runtime.netholder import Holder  # lazily: 3 ms of imports only rootless private networks need

        ident = f"{owner_key()}-{os.urandom(6).hex()}"  # gc tells its owner from the name
        path = os.path.join(state_root(), "networks", "private", ident)
        Network.__init__(self, name, path, subnet or default_subnet(), None)
        self.holder = Holder(default_user_namespace(), self.gateway, self.subnet.prefixlen)
        os.makedirs(path)
        self._reset(name)

    @property
    def userns_path(self) -> str:
        """The user namespace every container on this network joins."""
        return self.holder.userns_path

    def _connect(self, pid: int, veth: str) -> None:
        self.holder.connect(pid, veth)

    def _usable(self) -> bool:
        return bool(self.holder.pid)

    def _really_destroy(self) -> None:
        self.holder.close()
        super()._really_destroy()


def new_private_network(name: str) -> PrivateNetwork:
    """A private network for this process: pooled, else made (rootless: with a holder)."""
    return _pooled(name) or (PrivateNetwork(name) if os.geteuid() == 0 else RootlessPrivateNetwork(name))


POOL_SIZE = 2
_pool: list[PrivateNetwork] = []


def _pooled(name: str) -> PrivateNetwork | None:
    if _pool and str(_pool[-1].subnet) == str(parse_subnet(default_subnet())):
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
            self._networks[name] = new_private_network(name)
        return self._networks[name]

    def close(self) -> None:
        for network in self._networks.values():
            network.close()
        self._networks.clear()
