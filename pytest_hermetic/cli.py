"""The `hermetic` command (also `python -m pytest_hermetic`).

Exit statuses follow `docker run`: the command's own status; 125 when the
engine fails (bad option, unknown image); 126/127 when the command cannot be
run or found; 137 when the container was killed (out of memory, timeout).
Every engine failure is one line on stderr, never a traceback.

The engine's modules are imported inside the commands: `hermetic run` should
not pay for what `hermetic images` needs (the container and its runtime cost
about 8 ms of imports, the store 3 ms, pull, push and doctor more).

One concern, the command line (it is longer than most modules for that):
the parser and one short `_cmd_<verb>` per verb that turns arguments into
calls of the engine and its answers into lines; the work is elsewhere
(containers' lifecycle in `detached.py`, images in `images/`).
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
    from typing import Any, NoReturn, Sequence

PROG = "hermetic"
MAX_LINE = 400  # an error line names the problem; it does not repeat a megabyte of input


class _Parser(argparse.ArgumentParser):
    """Usage errors are engine errors: one line and exit 125, as `docker run` (argparse says 2)."""

    def error(self, message: str) -> "NoReturn":
        _say(f"error: {message}; see `{self.prog} --help`")
        sys.exit(125)


class _Skipped:
    """A verb's parser that is not built: `hermetic run` should not pay for
    the other verbs' arguments (about 1 ms of argparse for all of them)."""

    required = True

    def __getattr__(self, _name: str) -> "object":
        return lambda *args, **kwargs: self


def _parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command's parser; with `only`, just that verb's (the one given)."""
    parser = _Parser(prog=PROG, description="Hermetic containers from namespaces, cgroups and overlayfs; no daemon.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def verb(name: str, **kwargs: "Any") -> "argparse.ArgumentParser":
        return sub.add_parser(name, **kwargs) if only in (None, name) else _Skipped()  # type: ignore[return-value]

    run = verb("run", help="run a command in a new container")
    options.add_arguments(run.add_argument, options.CLI)
    run.add_argument("--commit", metavar="REF", help="after a successful run, save the read-write layer as image REF")
    run.add_argument("-d", "--detach", action="store_true",
                     help="run in the background: print the id and return (output: `hermetic logs`; implies --init)")
    run.add_argument("--rm", action="store_true", help="remove the container when it exits (always so without -d)")
    run.add_argument("-p", "--publish", action="append", default=[], metavar="[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp]",
                     help="publish a container port on the host (HOST_IP default 127.0.0.1)")
    run.add_argument("image", metavar="IMAGE", help=options.BY_NAME["image"].help)
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD", help="command and arguments (default: the image's)")

    verb("images", help="list images in the local store")

    pull = verb("pull", help="pull an image from a registry into the local store")
    pull.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="from a multi-platform image (default: this machine's)")
    pull.add_argument("-q", "--quiet", action="store_true", help="no progress, only the name and id")
    pull.add_argument("ref", metavar="NAME[:TAG|@DIGEST]")

    push = verb("push", help="push an image from the local store to a registry")
    push.add_argument("--chunk-size", metavar="SIZE", help="upload in chunks of SIZE (default: one request per blob)")
    push.add_argument("ref", metavar="IMAGE")
    push.add_argument("dest", nargs="?", metavar="DEST", help="registry reference to push to (default: IMAGE's name)")

    save = verb("save", help="write an image as an OCI layout or a docker archive")
    save.add_argument("ref", metavar="IMAGE")
    save.add_argument("dest", metavar="oci:DIR[:TAG]|docker-archive:FILE[:REF]")

    imp = verb("import", help="import an image: dir:PATH, tar:FILE, oci:DIR[:TAG], docker-archive:FILE[:REF]")
    imp.add_argument("source", metavar="SOURCE")
    imp.add_argument("name", metavar="NAME[:TAG]", nargs="?", help="needed for dir: and tar:; default for oci: DIR's name:TAG, "
                     "for docker-archive: its tag")
    imp.add_argument("-e", "--env", action="append", default=[], metavar="K=V", help="environment for the image config")
    imp.add_argument("-w", "--workdir", help="working directory for the image config")
    imp.add_argument("--user", help="user for the image config")
    imp.add_argument("--cmd", help="default command (a shell-style string)")

    com = verb("commit", help="save a running container's read-write layer as an image")
    com.add_argument("container", metavar="CONTAINER", help="name or id")
    com.add_argument("ref", metavar="REF")

    rmi = verb("rmi", help="remove images (their layers go at the next gc)")
    rmi.add_argument("-f", "--force", action="store_true",
                     help="untag also an image a running container uses (its layers stay until the container is gone)")
    rmi.add_argument("refs", nargs="+", metavar="IMAGE")

    ps = verb("ps", help="list running containers")
    ps.add_argument("-a", "--all", action="store_true", help="exited ones too (kept until `rm` or `gc`)")
    ps.add_argument("-q", "--quiet", action="store_true", help="only the ids")
    logs = verb("logs", help="the output of a detached container")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the container ends")
    logs.add_argument("-n", "--tail", metavar="N", type=int, help="only the last N lines")
    logs.add_argument("container", metavar="CONTAINER", help="name or id")
    exe = verb("exec", help="run a command in a running detached container")
    exe.add_argument("-e", "--env", action="append", default=[], metavar="K=V", help="set an environment variable")
    exe.add_argument("-w", "--workdir", metavar="DIR", help="working directory inside the container")
    exe.add_argument("container", metavar="CONTAINER", help="name or id")
    exe.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD")
    stop = verb("stop", help="stop containers: SIGTERM to PID 1, SIGKILL after the grace time")
    stop.add_argument("-t", "--time", type=float, default=10.0, metavar="SECONDS", help="grace time (default 10)")
    stop.add_argument("containers", nargs="+", metavar="CONTAINER")
    kill = verb("kill", help="send a signal to containers' PID 1 (default SIGKILL: all of it)")
    kill.add_argument("-s", "--signal", default="KILL", metavar="SIGNAL", help="name or number (default KILL)")
    kill.add_argument("containers", nargs="+", metavar="CONTAINER")
    rm = verb("rm", help="remove exited containers")
    rm.add_argument("-f", "--force", action="store_true", help="kill and remove a running one too")
    rm.add_argument("containers", nargs="+", metavar="CONTAINER")
    ins = verb("inspect", help="a container's spec, state, pid, network, limits and image as JSON")
    ins.add_argument("containers", nargs="+", metavar="CONTAINER")
    wait = verb("wait", help="wait for containers to end and print their exit statuses")
    wait.add_argument("containers", nargs="+", metavar="CONTAINER")
    gc = verb("gc", help="remove unreferenced layers and what killed runs left behind")
    gc.add_argument("-q", "--quiet", action="store_true")
    net = verb("network", help="create, list and remove named networks")
    net_sub = net.add_subparsers(dest="network_command", metavar="ACTION")
    net_sub.required = True
    create = net_sub.add_parser("create", help="make a named network (containers on it know each other by name)")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--subnet", metavar="CIDR", help="addresses for it (default $HERMETIC_SUBNET or 10.88.0.0/16)")
    net_sub.add_parser("ls", help="list networks")
    remove = net_sub.add_parser("rm", help="remove named networks (no container may be on them)")
    remove.add_argument("names", nargs="+", metavar="NAME")
    verb("doctor", help="check this machine (namespaces, overlayfs, cgroups) and say how to fix gaps")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser(argv[0] if argv and argv[0] in _COMMANDS else None).parse_args(argv)
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
    if sys.stdin.isatty() and "TERM" in os.environ and not args.detach:
        given["env"].setdefault("TERM", os.environ["TERM"])
    if args.detach:
        # A PID 1 with no SIGTERM handler ignores `stop`'s SIGTERM (the kernel
        # guards a namespace's init); under --init the command gets it.
        given["init"] = True
    # Nobody can commit it: keep the rw layer in memory, no disk clean-up.
    spec = Spec.build(args.image, command or None, ephemeral=not args.commit and not args.name and not args.detach,
                      **given)
    if spec.name:
        for other in list_states():
            if other.get("name") == spec.name:
                from .errors import SpecError

                if other["alive"]:
                    raise SpecError(f"--name {spec.name}: a running container already has that name")
                raise SpecError(f"--name {spec.name}: an exited container has that name; `hermetic rm {spec.name}` first")
    ports = []
    if args.publish:
        from .detached import parse_publish

        ports = [parse_publish(text) for text in args.publish]
    if args.detach:
        if args.commit:
            from .errors import SpecError

            raise SpecError("--commit and -d: commit a detached container with `hermetic commit NAME REF` while it runs")
        from .detached import start_detached

        print(start_detached(spec, ports, remove=args.rm))
        return 0
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
        forwarders: list = []
        try:
            container.start()
            while early:
                deliver(early.pop(0))
            if ports:
                from .detached import publish

                forwarders = publish(container, ports)
            # In slices: a signal that lands between Python's last check and
            # the blocking waitpid() would run its handler (forward) only when
            # the wait ends, and a PID 1 that never got the signal never ends.
            result = None
            while result is None:
                result = container.wait(timeout=0.1)
        finally:
            for forwarder in forwarders:
                forwarder.close()
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


def _cmd_ps(args: argparse.Namespace) -> int:
    from .detached import status
    from .state import list_states

    rows = [("CONTAINER ID", "NAME", "IMAGE", "COMMAND", "CREATED", "STATUS", "PIDS", "NETWORK", "PORTS")]
    for state in list_states():
        if not state["alive"] and not args.all:
            continue
        if args.quiet:
            print(state["id"][:12])
            continue
        network = f"{state['network']} {state.get('address') or ''}".strip() if state.get("network") else "-"
        now = status(state)
        if now == "exited":
            now = f"exited ({state['exit_code']}) {_ago(time.time() - state.get('finished', time.time()))}: {state['reason']}"
        elif now == "dead":
            now = "dead (its owner was killed; `hermetic gc` clears it)"
        ports = ", ".join(f"{ip}:{hp}->{cp}/tcp" for ip, hp, cp in state.get("ports") or []) or "-"
        rows.append((state["id"][:12], state.get("name", ""), state.get("image", ""),
                     " ".join(state.get("command") or [])[:40], _ago(time.time() - state.get("created", time.time())),
                     now, str(len(state.get("pids") or [])) if state["alive"] else "-", network, ports))
    if not args.quiet:
        _table(rows)
    return 0


def _cmd_logs(args: argparse.Namespace) -> int:
    from . import detached

    state = detached.find(args.container)
    path = detached.logs(state)
    if path is None:
        from .errors import ContainerStartError

        raise ContainerStartError(f"container {args.container} has no log: its output went to the terminal that "
                                  "ran it (only `run -d` keeps one)")
    out = sys.stdout.buffer
    with open(path, "rb") as f:
        data = f.read()
        if args.tail is not None:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-args.tail:]) if args.tail > 0 else b""
        out.write(data)
        out.flush()
        while args.follow:
            chunk = f.read(65536)
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            if not detached.owner_alive(state):
                out.write(f.read())
                out.flush()
                break
            time.sleep(0.1)
    return 0


def _cmd_exec(args: argparse.Namespace) -> int:
    from . import detached
    from .errors import SpecError

    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise SpecError("exec: no command given; e.g. `hermetic exec NAME sh -c 'echo hi'`")
    state = detached.find(args.container)
    proc = detached.exec_in(state, command, options.parse_env(args.env), args.workdir)
    status = proc.wait()
    assert status is not None
    return status.shell_code


def _cmd_stop(args: argparse.Namespace) -> int:
    from . import detached

    for name in args.containers:
        state = detached.find(name)
        if detached.stop(state, args.time):
            _say(f"{name}: did not stop within {args.time:g} s of SIGTERM; killed")
        print(name)
    return 0


def _cmd_kill(args: argparse.Namespace) -> int:
    from . import detached
    from .errors import SpecError

    text = args.signal.upper()
    try:
        sig = int(text) if text.isdigit() else signal.Signals[text if text.startswith("SIG") else f"SIG{text}"]
    except (KeyError, ValueError):
        raise SpecError(f"--signal {args.signal}: not a signal; give a name (TERM, HUP) or a number") from None
    for name in args.containers:
        detached.signal_container(detached.find(name), int(sig))
        print(name)
    return 0


def _cmd_rm(args: argparse.Namespace) -> int:
    from . import detached

    for name in args.containers:
        detached.remove(detached.find(name), force=args.force)
        print(name)
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    import json

    from . import detached

    print(json.dumps([detached.inspect(detached.find(name)) for name in args.containers], indent=2))
    return 0


def _cmd_wait(args: argparse.Namespace) -> int:
    from . import detached

    for name in args.containers:
        state = detached.find(name)
        detached.wait_owner(state)
        after = [s for s in detached.list_states() if s["id"] == state["id"]]
        print(after[0].get("exit_code", "-") if after else "-")
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
    "logs": _cmd_logs,
    "exec": _cmd_exec,
    "stop": _cmd_stop,
    "kill": _cmd_kill,
    "rm": _cmd_rm,
    "inspect": _cmd_inspect,
    "wait": _cmd_wait,
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
