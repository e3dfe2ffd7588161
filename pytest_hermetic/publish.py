"""Published ports (`-p`): the host's side taken before a container starts, relayed once it runs.

As root, each port's forwarder (runtime/portfwd.py) makes its sockets in
the container's network namespace (or a named network's bridge).  A
rootless container on slirp4netns (`--net`) has slirp4netns listen on the
host itself; a rootless one without a network is reached through a helper
process of its owner inside its user and network namespaces
(runtime/ns_sockets.py), since its owner may enter them only that way.
"""

from __future__ import annotations

import errno
import json
import os

from ._record import fields, replace
from .container import Container
from .errors import ContainerStartError, SpecError
from .spec import Port
from .state import write_state

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Sequence

    from .runtime.ns_sockets import SocketMaker


def listen(ports: "Sequence[Port]", hold: bool = True) -> list:
    """Take the host's `HOST_IP:HOST_PORT` of each port, before the
    container starts (a port in use fails the run before it began, as
    Docker's does); `attach` then relays them.  Each forwarder has `.port`,
    the `Port` with the host port it got (a free one where none was asked).
    The caller holds them and closes them.  Without `hold` (slirp4netns
    will listen there itself) each port is only tried and let go at once:
    the container's processes, forked after this, must not inherit it."""
    if not ports:
        return []
    from .runtime import portfwd  # lazily: only a run with -p needs it

    forwarders: list = []
    try:
        for port in ports:
            kind = portfwd.UdpForwarder if port.protocol == "udp" else portfwd.Forwarder
            try:
                forwarder = kind(None, "", port.container_port, (port.host_ip, port.host_port))
            except OSError as exc:
                host = f"[{port.host_ip}]" if ":" in port.host_ip else port.host_ip
                raise SpecError(f"-p {host}:{port.host_port}:{port.container_port}/{port.protocol}: cannot listen "
                                f"on that host address and port ({exc.strerror}); pick another host port"
                                + (" or address (is it one of this host's?)" if exc.errno == errno.EADDRNOTAVAIL else "")
                                ) from None
            forwarder.port = replace(port, host_port=forwarder.address[1])
            forwarders.append(forwarder)
            if not hold:
                forwarder.close()
    except BaseException:
        for forwarder in forwarders:
            forwarder.close()
        raise
    return forwarders


def attach(container: Container, forwarders: list) -> "SocketMaker | None":
    """Relay `listen`'s forwarders to the running container's ports.
    Returns what the caller closes when the container has ended (a rootless
    container's socket helper), or None."""
    if not forwarders:
        return None
    helper = getattr(container.process, "net_helper", None)
    if helper is not None and helper.api_socket:
        # Rootless on slirp4netns: it listens on the host itself (`listen`
        # only tried the ports, and found the free ones).
        for forwarder in forwarders:
            port = forwarder.port
            helper.add_hostfwd(port.protocol, port.host_ip, port.host_port, port.container_port)
        return None
    from .runtime import portfwd

    maker = None
    holder = getattr(container.network, "holder", None)
    if holder is not None:
        make = holder.socket
    elif container.userns and os.geteuid() != 0:
        # Rootless without a network: its owner may enter it only from
        # inside its user namespace, through a helper process (ns_sockets.py).
        from .runtime.enter import owner_namespaces
        from .runtime.ns_sockets import SocketMaker

        assert container.pid is not None
        try:
            fds = owner_namespaces(container.pid, wait=5.0)
        except ContainerStartError as exc:
            raise SpecError(f"-p: cannot reach the container's network namespace: {exc}") from None
        for name in [name for name in fds if name not in ("user", "net")]:
            os.close(fds.pop(name))
        maker = SocketMaker(fds)
        make = maker.socket
    else:
        make = portfwd.socket_in(f"/proc/{container.pid}/ns/net")
        try:
            make().close()  # a caller that may not enter the namespace: say so now, not at each connection
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None  # the container has ended already: nothing to relay to
            raise SpecError(f"-p: cannot reach the container's network namespace ({exc.strerror})") from None
    for forwarder in forwarders:
        forwarder.attach(make, container.address or "127.0.0.1")
    return maker


def slirp_publishes(container: Container) -> bool:
    """Whether slirp4netns listens on the host for `-p` (a rootless --net container), not `listen`'s forwarders."""
    return bool(container.userns and container.spec.net is True)


def refuse_rootless(container: Container) -> None:
    """-p a rootless container cannot have: refused before it starts, saying why."""
    ipv6 = [port for port in container.spec.publish if ":" in port.host_ip] if slirp_publishes(container) else []
    if ipv6:
        raise SpecError(f"-p {ipv6[0]}: a rootless container's ports are published by slirp4netns, which takes IPv4 "
                        "host addresses only; use 127.0.0.1 (the default) or 0.0.0.0, or run as root")


def ports_of(state: dict) -> list[Port]:
    """The ports a container's state records (older states: [ip, host port, container port], tcp)."""
    ports = []
    for item in state.get("ports") or []:
        ports.append(Port(*item) if isinstance(item, list) else Port(**item))
    return ports


def ports_json(forwarders: list) -> list[dict]:  # each has a Port as .port (publish's)
    return [{key: getattr(f.port, key) for key in fields(f.port)} for f in forwarders]


def record_ports(container: Container, forwarders: list) -> None:
    """Write a foreground run's published ports into its state (a detached one's supervisor writes them at start)."""
    if container.state_dir is not None and forwarders:
        with open(os.path.join(container.state_dir, "state.json")) as f:
            state = json.load(f)
        state["ports"] = ports_json(forwarders)
        write_state(container.state_dir, state)
