"""Kernel mechanics: namespaces, cgroups, the root filesystem, the network and
the container process.  Nothing here imports pytest or IPython, and nothing
here knows about images: it is handed a list of layer directories (and, for
layers it must unpack itself, a function that unpacks one).

A container's start, by lifecycle:

    process.py    the parent: ProcessConfig, spawn, the handle on PID 1 (wait, signal)
    fork.py       the one fork of the (large) caller
    relay.py      rootless: the intermediate child that enters the user namespace
    placeholder.py  root + a Python callable: a tiny static PID 1 (`cat` elsewhere), the test as PID 2
    init.py       PID 1 in the child: enter, root, session, privileges, seccomp, exec or call
    channel.py    the handshake between them (named one-byte messages, the error line)
    enter.py      `Container.exec`: join a running container's namespaces
    rootfs/       the root filesystem (overlay, /proc /dev /sys, volumes, masks, pivot)
    cgroups/      limits and stats, one module per controller under v1/ and v2/

and beside them namespaces.py (user namespaces, id maps), capabilities.py,
descriptors.py (and file_relay.py, its caller's half), seccomp.py, network.py (in the child), netns/bridges/nat/
netholder/usermode_net/portfwd (networks, in the parent), syscalls.py.
"""
