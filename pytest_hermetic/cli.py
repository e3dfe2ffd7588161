"""The `hermetic` command (also `python -m pytest_hermetic`).

Exit statuses follow `docker run`: the command's own status; 125 when the
engine fails (bad option, unknown image); 126/127 when the command cannot be
run or found; 137 when the container was killed (out of memory, timeout).
Every engine failure is one line on stderr, never a traceback.

The engine's modules are imported inside the commands: `hermetic run` should
not pay for what `hermetic images` needs (the container and its runtime cost
about 8 ms of imports, the store 3 ms, pull, push and doctor more).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from . import options
from .errors import HermeticError, ImageReferenceError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it costs start-up
    from typing import NoReturn, Sequence

PROG = "hermetic"
MAX_LINE = 400  # an error line names the problem; it does not repeat a megabyte of input


class _Parser(argparse.ArgumentParser):
    """Usage errors are engine errors: one line and exit 125, as `docker run` (argparse says 2)."""

    def error(self, message: str) -> "NoReturn":
        _say(f"error: {message}; see `{self.prog} --help`")
        sys.exit(125)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Hermetic containers from namespaces, cgroups and overlayfs; no daemon.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="run a command in a new container")
    options.add_arguments(run.add_argument, options.CLI)
    run.add_argument("--commit", metavar="REF", help="after a successful run, save the read-write layer as image REF")
    run.add_argument("image", metavar="IMAGE", help=options.BY_NAME["image"].help)
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD", help="command and arguments (default: the image's)")

    sub.add_parser("images", help="list images in the local store")

    pull = sub.add_parser("pull", help="pull an image from a registry into the local store")
    pull.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="from a multi-platform image (default: this machine's)")
    pull.add_argument("-q", "--quiet", action="store_true", help="no progress, only the name and id")
    pull.add_argument("ref", metavar="NAME[:TAG|@DIGEST]")

    push = sub.add_parser("push", help="push an image from the local store to a registry")
    push.add_argument("--chunk-size", metavar="SIZE", help="upload in chunks of SIZE (default: one request per blob)")
    push.add_argument("ref", metavar="IMAGE")
    push.add_argument("dest", nargs="?", metavar="DEST", help="registry reference to push to (default: IMAGE's name)")

    save = sub.add_parser("save", help="write an image as an OCI layout or a docker archive")
    save.add_argument("ref", metavar="IMAGE")
    save.add_argument("dest", metavar="oci:DIR[:TAG]|docker-archive:FILE[:REF]")

    imp = sub.add_parser("import", help="import an image: dir:PATH, tar:FILE, oci:DIR[:TAG], docker-archive:FILE[:REF]")
    imp.add_argument("source", metavar="SOURCE")
    imp.add_argument("name", metavar="NAME[:TAG]", nargs="?", help="needed for dir: and tar:; default for oci: DIR's name:TAG, "
                     "for docker-archive: its tag")
    imp.add_argument("-e", "--env", action="append", default=[], metavar="K=V", help="environment for the image config")
    imp.add_argument("-w", "--workdir", help="working directory for the image config")
    imp.add_argument("--user", help="user for the image config")
    imp.add_argument("--cmd", help="default command (a shell-style string)")

    com = sub.add_parser("commit", help="save a running container's read-write layer as an image")
    com.add_argument("container", metavar="CONTAINER", help="name or id")
    com.add_argument("ref", metavar="REF")

    rmi = sub.add_parser("rmi", help="remove images (their layers go at the next gc)")
    rmi.add_argument("-f", "--force", action="store_true",
                     help="untag also an image a running container uses (its layers stay until the container is gone)")
    rmi.add_argument("refs", nargs="+", metavar="IMAGE")

    sub.add_parser("ps", help="list running containers")
    gc = sub.add_parser("gc", help="remove unreferenced layers and what killed runs left behind")
    gc.add_argument("-q", "--quiet", action="store_true")
    net = sub.add_parser("network", help="create, list and remove named networks")
    net_sub = net.add_subparsers(dest="network_command", metavar="ACTION")
    net_sub.required = True
    create = net_sub.add_parser("create", help="make a named network (containers on it know each other by name)")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--subnet", metavar="CIDR", help="addresses for it (default $HERMETIC_SUBNET or 10.88.0.0/16)")
    net_sub.add_parser("ls", help="list networks")
    remove = net_sub.add_parser("rm", help="remove named networks (no container may be on them)")
    remove.add_argument("names", nargs="+", metavar="NAME")
    sub.add_parser("doctor", help="check this machine (namespaces, overlayfs, cgroups) and say how to fix gaps")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except HermeticError as exc:
        _say(f"error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `hermetic images | head`: the reader left; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        _say(f"error: {exc}")
        return 125
    except Exception as exc:  # a bug: still one line, the traceback on demand
        if os.environ.get("HERMETIC_DEBUG"):
            raise
        _say(f"error: internal error ({type(exc).__name__}: {exc}); this is a bug: please report it with the "
             "traceback that HERMETIC_DEBUG=1 shows")
        return 125


def _say(text: str) -> None:
    text = " ".join(text.split("\n"))
    if len(text) > MAX_LINE:
        text = text[:MAX_LINE - 40] + f"... ({len(text)} characters)"
    print(f"{PROG}: {text}", file=sys.stderr, flush=True)


def _cmd_run(args: argparse.Namespace) -> int:
    from .container import Container
    from .spec import Spec
    from .state import list_states

    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    given = options.from_arguments(args, options.CLI)
    if sys.stdin.isatty() and "TERM" in os.environ:
        given["env"].setdefault("TERM", os.environ["TERM"])
    # Nobody can commit it: keep the rw layer in memory, no disk clean-up.
    spec = Spec.build(args.image, command or None, ephemeral=not args.commit and not args.name, **given)
    if spec.name and any(s.get("name") == spec.name and s["alive"] for s in list_states()):
        from .errors import SpecError

        raise SpecError(f"--name {spec.name}: a running container already has that name")
    if args.commit:
        from .images.commit import target_name

        target_name(args.commit)  # a bad reference fails before the run, not after
    container = Container(spec)
    interrupts = {"count": 0}
    # Signals that arrive while `start()` has not returned yet: the command
    # may already run (and its user already press Ctrl-C), but there is no
    # PID 1 to signal until `start()` hands it over.
    early: list[int] = []

    def deliver(signum: int) -> None:
        # A PID 1 ignores signals it has no handler for; a second Ctrl-C
        # (or SIGTERM) kills the whole container, as users expect.
        interrupts["count"] += 1
        if interrupts["count"] > 1:
            container.kill(signal.SIGKILL)
        else:
            # The container has a session of its own: a terminal's Ctrl-C
            # or hangup reaches it through here, so it goes where the
            # terminal would send it, PID 1's whole group (the command a
            # shell runs in it included); under --init PID 1 passes it on.
            container.kill(signum, group=signum != signal.SIGTERM and not args.init)

    def forward(signum: int, _frame: object) -> None:
        if container.process is None:
            early.append(signum)
        else:
            deliver(signum)

    with container:
        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            container.start()
            while early:
                deliver(early.pop(0))
            result = container.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        assert result is not None
        if result.oom_killed or result.timed_out is not None:
            _say(f"killed: {result.reason}")
        elif result.status.signal is not None and interrupts["count"] == 0:
            _say(result.reason or "")
        elif result.stats.pids_limit_hits:
            _say(f"note: {result.reason}")
        if args.commit:
            if result.exit_code == 0:
                image = container.commit(args.commit)
                _say(f"committed {image.familiar} ({image.id[7:19]})")
            else:
                _say(f"not committed: the command failed ({result.reason})")
        return result.exit_code


def _cmd_images(_args: argparse.Namespace) -> int:
    from .images.store import Store

    rows = [("IMAGE", "ID", "LAYERS", "SIZE", "CREATED")]
    rows.append(("host", "-", "1 (the host's /)", "-", "-"))
    problems: list[str] = []
    for image in Store().images(problems):
        rows.append((image.familiar, image.id[7:19], str(len(image.layers)) + (" + host" if image.is_host else ""),
                     _human(image.size), _ago(time.time() - image.created)))
    _table(rows)
    for problem in problems:
        _say(f"note: {problem}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    import shlex

    from .errors import SpecError
    from .images.store import Store
    from .images.transports import import_image
    from .spec import parse_user, parse_workdir

    try:
        cmd = shlex.split(args.cmd) if args.cmd else None
    except ValueError as exc:
        raise SpecError(f"--cmd {args.cmd!r}: {exc}; quote it as a shell would") from None
    image = import_image(Store(), args.source, args.name, env=options.parse_env(args.env), workdir=parse_workdir(args.workdir),
                         user=parse_user(args.user), cmd=cmd)
    print(f"{image.familiar} {image.id}")
    return 0


def _cmd_pull(args: argparse.Namespace) -> int:
    from .images.pull import Puller
    from .images.store import Store

    puller = Puller(Store(), platform=args.platform, quiet=args.quiet)
    image = puller.pull(args.ref)
    if not args.quiet:
        _say(f"pulled {image.familiar}: {puller.layers} layer{'s' if puller.layers != 1 else ''} "
             f"({puller.fetched} fetched, {_human(puller.bytes)}) in {puller.seconds:.2f} s, manifest {puller.manifest_digest}")
    print(f"{image.familiar} {image.id}")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from .images.push import push
    from .images.store import Store
    from .spec import parse_size

    chunk = parse_size(args.chunk_size, "--chunk-size") if args.chunk_size else None
    digest, outcome = push(Store(), args.ref, args.dest, chunk_size=chunk)
    counts: dict[str, int] = {}
    for how in outcome.values():
        counts[how] = counts.get(how, 0) + 1
    _say("pushed " + ", ".join(f"{n} {how}" for how, n in sorted(counts.items())) + f" blob{'s' if len(outcome) != 1 else ''}")
    print(f"{args.dest or args.ref} {digest}")
    return 0


def _cmd_save(args: argparse.Namespace) -> int:
    from .images import reference as refs
    from .images.archives import save_docker_archive, save_oci
    from .images.store import Store

    store = Store()
    image = store.local(args.ref)
    dest = refs.parse(args.dest)
    if dest.transport == "oci":
        digest = save_oci(store, image, dest.path, dest.tag)
        print(f"{args.dest} {digest}")
    elif dest.transport == "docker-archive":
        save_docker_archive(store, image, dest.path, dest.tag)
        print(f"{args.dest} {image.id}")
    else:
        raise ImageReferenceError(f"cannot save to {args.dest!r}: use oci:DIR[:TAG] or docker-archive:FILE[:REF] "
                                  "(to a registry: `hermetic push`)")
    return 0


def _cmd_commit(args: argparse.Namespace) -> int:
    from .container import commit_running

    image = commit_running(args.container, args.ref)
    print(f"{image.familiar} {image.id}")
    return 0


def _cmd_rmi(args: argparse.Namespace) -> int:
    from .images.store import Store

    store = Store()
    for ref in args.refs:
        print(f"untagged {store.remove(ref, force=args.force)}")
    return 0


def _cmd_ps(_args: argparse.Namespace) -> int:
    from .state import list_states

    rows = [("CONTAINER ID", "NAME", "IMAGE", "COMMAND", "CREATED", "PIDS", "NETWORK")]
    for state in list_states():
        if state["alive"]:
            network = f"{state['network']} {state.get('address') or ''}".strip() if state.get("network") else "-"
            rows.append((state["id"][:12], state.get("name", ""), state.get("image", ""),
                         " ".join(state.get("command") or [])[:40], _ago(time.time() - state.get("created", time.time())),
                         str(len(state.get("pids") or [])) or "-", network))
    _table(rows)
    return 0


def _cmd_gc(args: argparse.Namespace) -> int:
    from .gc import gc_containers
    from .images.gc import collect
    from .images.store import Store

    from .networks import gc_networks

    removed = gc_containers() + gc_networks() + collect(Store())
    if not args.quiet:
        for line in removed:
            print(f"removed {line}")
        print(f"{len(removed)} item{'s' if len(removed) != 1 else ''} removed")
    return 0


def _cmd_network(args: argparse.Namespace) -> int:
    from . import networks

    if args.network_command == "create":
        network = networks.create_network(args.name, args.subnet)
        network.close()
        print(f"{network.name} {network.subnet}")
    elif args.network_command == "rm":
        for name in args.names:
            networks.remove_network(name)
            print(f"removed {name}")
    else:
        rows = [("NETWORK", "KIND", "SUBNET", "GATEWAY", "CONTAINERS")]
        notes = []
        for info in networks.list_networks():
            rows.append((info["name"], info["kind"], info["subnet"], info["gateway"], ", ".join(info["containers"]) or "-"))
            if info.get("forwarding") is False:
                notes.append("note: net.ipv4.ip_forward is 0, so bridge containers reach the host and each other but "
                             "not the outside; `sysctl -w net.ipv4.ip_forward=1` enables it (a host-wide switch)")
        _table(rows)
        for note in notes:
            _say(note)
    return 0


def _cmd_doctor(_args: argparse.Namespace) -> int:
    from .doctor import run_checks

    return run_checks(sys.stdout)


_COMMANDS = {
    "run": _cmd_run,
    "images": _cmd_images,
    "import": _cmd_import,
    "pull": _cmd_pull,
    "push": _cmd_push,
    "save": _cmd_save,
    "commit": _cmd_commit,
    "rmi": _cmd_rmi,
    "ps": _cmd_ps,
    "gc": _cmd_gc,
    "network": _cmd_network,
    "doctor": _cmd_doctor,
}


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _human(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def _ago(seconds: float) -> str:
    for unit, span in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= span:
            return f"{int(seconds // span)} {unit} ago"
    return "just now"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
