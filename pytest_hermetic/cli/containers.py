"""The lifecycle of kept containers: ps, logs, exec, stop, kill, rm, inspect, wait
(the work is in `detached.py`)."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from .. import options
from .output import ago, say, table

TYPE_CHECKING = False
if TYPE_CHECKING:
    from . import Verb


def add_parsers(verb: "Verb") -> None:
    ps = verb("ps", help="list running containers")
    ps.add_argument("-a", "--all", action="store_true", help="exited ones too (kept until `rm` or `gc`)")
    ps.add_argument("-q", "--quiet", action="store_true", help="only the ids")
    ps.set_defaults(handler=cmd_ps)
    logs = verb("logs", help="the output of a detached container")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the container ends")
    logs.add_argument("-n", "--tail", metavar="N", type=int, help="only the last N lines")
    logs.add_argument("container", metavar="CONTAINER", help="name or id")
    logs.set_defaults(handler=cmd_logs)
    exe = verb("exec", help="run a command in a running detached container")
    exe.add_argument("-e", "--env", action="append", default=[], metavar="K=V", help="set an environment variable")
    exe.add_argument("-w", "--workdir", metavar="DIR", help="working directory inside the container")
    exe.add_argument("container", metavar="CONTAINER", help="name or id")
    exe.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD")
    exe.set_defaults(handler=cmd_exec)
    stop = verb("stop", help="stop containers: SIGTERM to PID 1, SIGKILL after the grace time")
    stop.add_argument("-t", "--time", type=float, metavar="SECONDS",
                      help="grace time (default: the container's --stop-timeout, else 10)")
    stop.add_argument("containers", nargs="+", metavar="CONTAINER")
    stop.set_defaults(handler=cmd_stop)
    kill = verb("kill", help="send a signal to containers' PID 1 (default SIGKILL: all of it)")
    kill.add_argument("-s", "--signal", default="KILL", metavar="SIGNAL", help="name or number (default KILL)")
    kill.add_argument("containers", nargs="+", metavar="CONTAINER")
    kill.set_defaults(handler=cmd_kill)
    rm = verb("rm", help="remove exited containers")
    rm.add_argument("-f", "--force", action="store_true", help="kill and remove a running one too")
    rm.add_argument("containers", nargs="+", metavar="CONTAINER")
    rm.set_defaults(handler=cmd_rm)
    ins = verb("inspect", help="a container's spec, state, pid, network, limits and image as JSON")
    ins.add_argument("containers", nargs="+", metavar="CONTAINER")
    ins.set_defaults(handler=cmd_inspect)
    port = verb("port", help="a container's published ports (or where CONTAINER_PORT is published)")
    port.add_argument("container", metavar="CONTAINER", help="name or id")
    port.add_argument("port", nargs="?", metavar="CONTAINER_PORT[/tcp|udp]")
    port.set_defaults(handler=cmd_port)
    wait = verb("wait", help="wait for containers to end and print their exit statuses")
    wait.add_argument("containers", nargs="+", metavar="CONTAINER")
    wait.set_defaults(handler=cmd_wait)


def cmd_ps(args: argparse.Namespace) -> int:
    from ..detached import ports_of, status
    from ..state import list_states

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
            now = f"exited ({state['exit_code']}) {ago(time.time() - state.get('finished', time.time()))}: {state['reason']}"
        elif now == "dead":
            now = "dead (its owner was killed; `hermetic gc` clears it)"
        ports = ", ".join(str(port) for port in ports_of(state)) or "-"
        rows.append((state["id"][:12], state.get("name", ""), state.get("image", ""),
                     " ".join(state.get("command") or [])[:40], ago(time.time() - state.get("created", time.time())),
                     now, str(len(state.get("pids") or [])) if state["alive"] else "-", network, ports))
    if not args.quiet:
        table(rows)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from .. import detached

    state = detached.find(args.container)
    path = detached.logs(state)
    if path is None:
        from ..errors import ContainerStartError

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


def cmd_exec(args: argparse.Namespace) -> int:
    from .. import detached
    from ..errors import SpecError

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


def cmd_stop(args: argparse.Namespace) -> int:
    from .. import detached

    for name in args.containers:
        state = detached.find(name)
        sig, grace = detached.stop_settings(state, args.time)
        if detached.stop(state, args.time):
            say(f"{name}: did not stop within {grace:g} s of {sig.name}; killed")
        print(name)
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    from .. import detached
    from ..errors import SpecError

    text = args.signal.upper()
    try:
        sig = int(text) if text.isdigit() else signal.Signals[text if text.startswith("SIG") else f"SIG{text}"]
    except (KeyError, ValueError):
        raise SpecError(f"--signal {args.signal}: not a signal; give a name (TERM, HUP) or a number") from None
    for name in args.containers:
        detached.signal_container(detached.find(name), int(sig))
        print(name)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from .. import detached

    for name in args.containers:
        detached.remove(detached.find(name), force=args.force)
        print(name)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import json

    from .. import detached

    print(json.dumps([detached.inspect(detached.find(name)) for name in args.containers], indent=2))
    return 0


def cmd_port(args: argparse.Namespace) -> int:
    """As `docker port`: `80/tcp -> 127.0.0.1:8080` lines, or with CONTAINER_PORT its host addresses."""
    from .. import detached
    from ..errors import SpecError

    ports = detached.ports_of(detached.find(args.container))
    if args.port:
        number, _, protocol = args.port.partition("/")
        if not number.isdigit() or protocol not in ("", "tcp", "udp"):
            raise SpecError(f"port {args.port!r}: expected CONTAINER_PORT[/tcp|udp], e.g. 80 or 53/udp")
        found = [p for p in ports if p.container_port == int(number) and p.protocol == (protocol or "tcp")]
        if not found:
            raise SpecError(f"container {args.container} publishes no port {number}/{protocol or 'tcp'}")
        for p in found:
            print(str(p).split("->")[0])
        return 0
    for p in ports:
        host, _, inside = str(p).partition("->")
        print(f"{inside} -> {host}")
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    from .. import detached

    for name in args.containers:
        state = detached.find(name)
        detached.wait_owner(state)
        after = [s for s in detached.list_states() if s["id"] == state["id"]]
        print(after[0].get("exit_code", "-") if after else "-")
    return 0

