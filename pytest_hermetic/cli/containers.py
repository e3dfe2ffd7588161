"""The lifecycle of kept containers: ps, logs, exec, stop, kill, rm, inspect, wait,
top, stats (the work is in `detached.py` and `usage.py`)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from .. import options
from .output import ago, output_format, say, table

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..runtime.process import ContainerProcess, ExitStatus
    from . import Verb


def add_parsers(verb: "Verb") -> None:
    ps = verb("ps", help="list running containers")
    ps.add_argument("-a", "--all", action="store_true", help="exited ones too (kept until `rm` or `gc`)")
    ps.add_argument("-q", "--quiet", action="store_true", help="only the ids")
    ps.add_argument("--format", type=output_format, default="table", metavar="json|table", help="json: one JSON array")
    ps.set_defaults(handler=cmd_ps)
    logs = verb("logs", help="the output of a detached container")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the container ends")
    logs.add_argument("-n", "--tail", metavar="N", type=int, help="only the last N lines")
    logs.add_argument("container", metavar="CONTAINER", help="name or id")
    logs.set_defaults(handler=cmd_logs)
    exe = verb("exec", help="run a command in a running detached container")
    exe.add_argument("-e", "--env", action="append", default=[], metavar="K=V", help="set an environment variable")
    exe.add_argument("-w", "--workdir", metavar="DIR", help="working directory inside the container")
    exe.add_argument("-u", "--user", metavar="USER[:GROUP]", help="a name or an id (default: the container's user)")
    exe.add_argument("-i", "--interactive", action="store_true", help="keep stdin open (it is passed without -i too)")
    exe.add_argument("-t", "--tty", action="store_true", help="a terminal of the container's own (a pty)")
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
    ins.add_argument("--format", type=output_format, default="json", metavar="json", help="JSON already (accepted as docker's)")
    ins.add_argument("containers", nargs="+", metavar="CONTAINER")
    ins.set_defaults(handler=cmd_inspect)
    port = verb("port", help="a container's published ports (or where CONTAINER_PORT is published)")
    port.add_argument("container", metavar="CONTAINER", help="name or id")
    port.add_argument("port", nargs="?", metavar="CONTAINER_PORT[/tcp|udp]")
    port.set_defaults(handler=cmd_port)
    wait = verb("wait", help="wait for containers to end and print their exit statuses")
    wait.add_argument("containers", nargs="+", metavar="CONTAINER")
    wait.set_defaults(handler=cmd_wait)
    top = verb("top", help="a running container's processes (pids inside and outside, user, command)")
    top.add_argument("--format", type=output_format, default="table", metavar="json|table", help="json: one JSON array")
    top.add_argument("container", metavar="CONTAINER", help="name or id")
    top.set_defaults(handler=cmd_top)
    stats = verb("stats", help="running containers' CPU, memory and PIDs use, refreshed each second")
    stats.add_argument("--no-stream", action="store_true", help="one reading, then return")
    stats.add_argument("--format", type=output_format, default="table", metavar="json|table",
                       help="json: one JSON array per reading")
    stats.add_argument("containers", nargs="*", metavar="CONTAINER", help="names or ids (default: all running)")
    stats.set_defaults(handler=cmd_stats)


def cmd_ps(args: argparse.Namespace) -> int:
    from ..detached import status
    from ..publish import ports_of
    from ..state import list_states

    rows = [("CONTAINER ID", "NAME", "IMAGE", "COMMAND", "CREATED", "STATUS", "PIDS", "NETWORK", "PORTS")]
    shown = [state for state in list_states() if state["alive"] or args.all]
    if args.format == "json" and not args.quiet:
        from .output import print_json

        print_json([_ps_json(state, status(state)) for state in shown])
        return 0
    for state in shown:
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


def _ps_json(state: dict, now: str) -> dict:
    from ..publish import ports_of

    return {"id": state["id"], "name": state.get("name", ""), "image": state.get("image", ""),
            "command": list(state.get("command") or []), "created": state.get("created"), "status": now,
            "exit_code": state.get("exit_code"), "reason": state.get("reason"), "finished": state.get("finished"),
            "pids": list(state.get("pids") or []) if state["alive"] else [], "network": state.get("network"),
            "address": state.get("address"),
            "ports": [{"host_ip": p.host_ip, "host_port": p.host_port, "container_port": p.container_port,
                       "protocol": p.protocol} for p in ports_of(state)]}


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
    user = None
    if args.user is not None:
        from ..spec import parse_user

        user = parse_user(args.user)
    env = options.parse_env(args.env)
    size = None
    if args.tty:
        from .terminal import caller_size, check_input

        check_input(args.interactive, "exec")
        size = caller_size()
        env.setdefault("TERM", os.environ.get("TERM", "xterm"))
    state = detached.find(args.container)
    proc = detached.exec_in(state, command, env, args.workdir, user=user, tty=size)
    if proc.tty is None:
        status = proc.wait()
    else:
        status = _wait_with_terminal(proc, args.interactive)
    assert status is not None
    return status.shell_code


def _wait_with_terminal(proc: "ContainerProcess", interactive: bool) -> "ExitStatus | None":
    """`exec -t`: the caller's terminal wired to the process's until it ends.
    SIGHUP or SIGTERM to us hangs its terminal up (a shell ends) and passes
    SIGTERM on; a second signal leaves it running with its terminal hung up,
    as a killed `docker exec` does; the caller's terminal is restored either way."""
    from .terminal import Session

    session = Session(proc.tty, interactive)  # type: ignore[arg-type]
    hits: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        hits.append(signum)
        if len(hits) > 1:
            raise SystemExit(128 + signum)
        if signum == signal.SIGINT:
            session.signal(signum)  # to its terminal's foreground group, as a Ctrl-C
            return
        session.hangup()
        if signum == signal.SIGTERM:
            proc.send_signal(signal.SIGTERM)  # (its relay passes it on)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        session.open()
        return proc.wait()
    finally:
        session.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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

    from ..publish import ports_of

    ports = ports_of(detached.find(args.container))
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



def _running(name: str) -> "tuple[dict, int]":
    from .. import detached
    from ..errors import ContainerStartError

    state = detached.find(name)
    pid = detached.pid1(state)
    if pid is None:
        raise ContainerStartError(f"container {name} is not running ({state.get('reason') or detached.status(state)})")
    return state, pid


def cmd_top(args: argparse.Namespace) -> int:
    from ..usage import processes

    state, pid = _running(args.container)
    found = processes(state, pid)
    if args.format == "json":
        from .output import print_json

        print_json([{"pid": p.pid, "container_pid": p.container_pid, "uid": p.uid, "host_uid": p.host_uid,
                     "cpu_seconds": p.cpu_seconds, "command": p.command} for p in found])
        return 0
    rows = [("PID", "CONTAINER PID", "UID", "HOST UID", "TIME", "COMMAND")]
    for p in found:
        seconds = int(p.cpu_seconds)
        rows.append((str(p.pid), str(p.container_pid), str(p.uid), str(p.host_uid),
                     f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}", p.command[:200]))
    table(rows)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """As `docker stats`: all running containers (or the named ones), redrawn each second until Ctrl-C."""
    from .. import detached
    from ..usage import sample
    from .output import human

    while True:
        if args.containers:
            chosen = [_running(name) for name in args.containers]
        else:
            chosen = [(state, pid) for state in detached.list_states() if state["alive"]
                      for pid in (detached.pid1(state),) if pid is not None]
        readings = sample(chosen)
        if args.format == "json":
            from .output import print_json

            print_json([{"id": state["id"], "name": state.get("name", ""), "cpu_percent": round(cpu, 2),
                         "memory": use.memory, "memory_limit": use.memory_limit, "pids": use.pids,
                         "pids_limit": use.pids_limit, "source": use.source} for state, use, cpu in readings])
        else:
            rows = [("CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS")]
            for state, use, cpu in readings:
                limit = human(use.memory_limit) if use.memory_limit else "-"
                share = f"{use.memory / use.memory_limit * 100:.2f}%" if use.memory_limit else "-"
                rows.append((state["id"][:12], state.get("name", ""), f"{cpu:.2f}%", f"{human(use.memory)} / {limit}",
                             share, str(use.pids)))
            if not args.no_stream and sys.stdout.isatty():
                sys.stdout.write("\033[H\033[J")  # redrawn in place, as docker's
            table(rows)
        sys.stdout.flush()
        if args.no_stream:
            return 0
        time.sleep(0.5)  # (sample took the other half of the second)
