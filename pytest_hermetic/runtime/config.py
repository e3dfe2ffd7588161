"""`ProcessConfig`: everything the container's child needs, resolved by the
parent before the fork.  Its own module so that the parent's side
(process.py) and the child's (init.py, relay.py) both import it, neither
the other."""

from __future__ import annotations

from .._record import factory, record
from . import capabilities, network
from .channel import Channel
from .namespaces import UserNamespace

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it costs start-up
    from typing import Callable

    from . import rootfs, seccomp
    from .console import Console


@record
class ProcessConfig:
    """Everything the child needs, resolved by the parent before the fork."""

    rootfs: rootfs.RootfsConfig
    hostname: str
    argv: list[str] | None = None  # exec mode; None with a callable target
    env: dict[str, str] = factory(dict)
    cwd: str = "/"
    user: str | None = None  # "uid[:gid]" or a name from the image's /etc/passwd
    network: network.NetworkConfig = factory(network.NetworkConfig)
    cgroup_procs: list[str] = factory(list)
    userns: UserNamespace | None = None
    privileged: bool = False
    caps: int | None = None  # the capabilities kept (a capabilities.mask); None: Docker's default set
    seccomp: seccomp.Filter | None = None  # compiled by the parent (seccomp.default()), loaded by the child
    close_fds: bool = True  # exec mode: keep only 0, 1, 2 (runc CVE-2024-21626)
    init: bool = False  # exec mode: run the command as PID 2 under a reaping, forwarding PID 1
    cap_last: int = factory(lambda: capabilities.last_cap())  # read by the parent, once per container
    stdio: tuple = (None, None, None)  # fds for the command's stdin, stdout, stderr (None: inherit)
    network_go: Channel | None = None  # rootless networks: the parent says NETWORK_WIRED once it is
    userns_join: str | None = None  # rootless on a network: join its holder's user namespace instead of making one
    # As root on a bridge: called by the parent with the child's pid once the
    # child's network namespace exists (it puts the veth end there) while
    # the child builds its root; `netns_ready` carries the child's NETNS_MADE.
    network_hook: Callable[[int], None] | None = None
    netns_ready: Channel | None = None
    # The same veth into a network namespace open at this fd: where the
    # parent made the child's namespaces ahead (`spare`), it wires them
    # before the fork instead, and the child needs no hand-over.
    network_netns_hook: Callable[[int], None] | None = None
    tty: Console | None = None  # run -t: make a pty of the container's own (console.py)
    # As root (no network, or one wired into them before the fork): network,
    # IPC and UTS namespaces the parent made ahead (spare.py), joined instead
    # of unshared.
    spare: dict[str, int] | None = None
    # The parent makes the *next* container's set while this child builds its root.
    make_spare: bool = False
    # The caller's own work, done by the parent while this child builds its
    # root (the plugin removes earlier tests' containers then); it must not raise.
    meanwhile: Callable[[], None] | None = None
    # A Python callable's own descriptors that must stay as they are (the
    # plugin's: the read end of its answers); every other inherited pipe's
    # read end is blanked (descriptors.seal).
    keep_fds: tuple[int, ...] = ()
    # Named host files open for writing, each a pipe the parent copies into
    # it (file_relay.py): {fd: the pipe's write end}, and every relay pipe
    # end for the child to close once those are in place.
    relayed: dict[int, int] = factory(dict)
    relay_pipes: tuple[int, ...] = ()
