"""Machine-wide verbs: gc, network, doctor, version."""

from __future__ import annotations

import os
import sys

from .output import output_format, print_json, say, table

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

    from . import Verb


def add_parsers(verb: "Verb") -> None:
    gc = verb("gc", help="remove unreferenced layers and what killed runs left behind")
    gc.add_argument("-q", "--quiet", action="store_true")
    gc.add_argument("--build-cache", action="store_true",
                    help="also forget `hermetic build`'s cache (layers no image uses go with it)")
    gc.set_defaults(handler=cmd_gc)
    net = verb("network", help="create, list and remove named networks")
    net_sub = net.add_subparsers(dest="network_command", metavar="ACTION")
    net_sub.required = True
    create = net_sub.add_parser("create", help="make a named network (containers on it know each other by name)")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--subnet", metavar="CIDR", help="addresses for it (default $HERMETIC_SUBNET or 10.88.0.0/16)")
    ls = net_sub.add_parser("ls", help="list networks")
    ls.add_argument("--format", type=output_format, default="table", metavar="json|table",
                    help="json: one JSON array of the networks")
    remove = net_sub.add_parser("rm", help="remove named networks (no container may be on them)")
    remove.add_argument("names", nargs="+", metavar="NAME")
    net.set_defaults(handler=cmd_network)
    verb("doctor", help="check this machine (namespaces, overlayfs, cgroups) and say how to fix gaps").set_defaults(handler=cmd_doctor)
    version = verb("version", help="the versions of hermetic, Python and the kernel; cgroup mode; root or rootless")
    version.add_argument("--format", type=output_format, default="table", metavar="json|table")
    version.set_defaults(handler=cmd_version)


def cmd_gc(args: argparse.Namespace) -> int:
    from ..gc import gc_containers
    from ..images.gc import collect
    from ..images.store import Store

    from ..networks import gc_networks

    store = Store()
    removed = gc_containers() + gc_networks()
    if args.build_cache:
        from ..build.cache import prune

        removed += prune(store, everything=True)
    removed += collect(store)
    if not args.build_cache and os.path.isdir(store.root):
        from ..build.cache import prune

        removed += prune(store)  # entries whose layer this gc removed
    if not args.quiet:
        for line in removed:
            print(f"removed {line}")
        print(f"{len(removed)} item{'s' if len(removed) != 1 else ''} removed")
    return 0


def cmd_network(args: argparse.Namespace) -> int:
    from .. import networks

    if args.network_command == "create":
        network = networks.create_network(args.name, args.subnet)
        network.close()
        print(f"{network.name} {network.subnet}")
    elif args.network_command == "rm":
        for name in args.names:
            networks.remove_network(name)
            print(f"removed {name}")
    elif args.format == "json":
        print_json(networks.list_networks())
    else:
        rows = [("NETWORK", "KIND", "SUBNET", "GATEWAY", "CONTAINERS")]
        notes = []
        for info in networks.list_networks():
            rows.append((info["name"], info["kind"], info["subnet"], info["gateway"], ", ".join(info["containers"]) or "-"))
            if info.get("forwarding") is False:
                notes.append("note: net.ipv4.ip_forward is 0, so bridge containers reach the host and each other but "
                             "not the outside; `sysctl -w net.ipv4.ip_forward=1` enables it (a host-wide switch)")
        table(rows)
        for note in notes:
            say(note)
    return 0


def cmd_doctor(_args: argparse.Namespace) -> int:
    from ..doctor import run_checks

    return run_checks(sys.stdout)


def package_version() -> str:
    """The installed distribution's version (what pip shows)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pytest-hermetic")
    except PackageNotFoundError:
        return "unknown (run from a source tree that is not installed: pip install -e .)"


def version_line() -> str:
    """`hermetic --version`, worded as `podman --version`."""
    return f"hermetic version {package_version()}"


def cmd_version(args: argparse.Namespace) -> int:
    import os
    import platform

    from ..paths import store_root
    from ..runtime import cgroups

    try:
        hierarchy = cgroups.detect()
        cgroup = hierarchy.version
    except OSError as exc:
        cgroup = f"unknown ({exc.strerror})"
    uid = os.geteuid()
    info = {"version": package_version(), "python": platform.python_version(), "python_executable": sys.executable,
            "kernel": os.uname().release, "arch": os.uname().machine, "cgroups": cgroup,
            "mode": "root" if uid == 0 else "rootless", "uid": uid, "store": store_root()}
    if args.format == "json":
        print_json(info)
        return 0
    print(f"hermetic:  {info['version']}")
    print(f"Python:    {info['python']} ({info['python_executable']})")
    print(f"kernel:    {info['kernel']} ({info['arch']})")
    print(f"cgroups:   {cgroup}")
    print(f"mode:      {info['mode']}" + (f" (uid {uid})" if uid else ""))
    print(f"store:     {info['store']}")
    return 0
