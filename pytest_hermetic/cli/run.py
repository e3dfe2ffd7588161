"""`hermetic run`: a container in the foreground (or detached with -d)."""

from __future__ import annotations

import os
import sys

from .. import options
from .output import say

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
else:  # signal's C half, without signal.py's enums (enum, functools, collections: ~3 ms of `hermetic run`)
    import _signal as signal
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from . import Verb

# `run`'s own flags beside the option table's: (flags, dest, kind) as options.Option spells them.
RUN_FLAGS = ((("--commit",), "commit", "value"), (("-d", "--detach"), "detach", "switch"), (("--rm",), "rm", "switch"),
             (("-i", "--interactive"), "interactive", "switch"), (("-t", "--tty"), "tty", "switch"))


def add_parsers(verb: "Verb") -> None:
    import argparse

    run = verb("run", help="run a command in a new container")
    options.add_arguments(run.add_argument, options.CLI)
    run.add_argument("--commit", metavar="REF", help="after a successful run, save the read-write layer as image REF")
    run.add_argument("-d", "--detach", action="store_true",
                     help="run in the background: print the id and return (output: `hermetic logs`; implies --init)")
    run.add_argument("--rm", action="store_true", help="remove the container when it exits (always so without -d)")
    run.add_argument("-i", "--interactive", action="store_true",
                     help="keep stdin open (it is passed without -i too); with -t, type into the container's terminal")
    run.add_argument("-t", "--tty", action="store_true",
                     help="a terminal of the container's own (a pty: job control, full-screen programs)")
    run.add_argument("image", metavar="IMAGE", help=options.BY_NAME["image"].help)
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD", help="command and arguments (default: the image's)")

    run.set_defaults(handler=cmd_run)


class Arguments:
    """What `quick_arguments` read: the attributes argparse's Namespace would have."""

    def __init__(self, **values: object) -> None:
        self.__dict__.update(values)

    if TYPE_CHECKING:  # its attributes are argparse's, as untyped as a Namespace's
        def __getattr__(self, name: str) -> Any: ...


def quick_arguments(argv: list[str]) -> "Arguments | None":
    """`hermetic run`'s arguments (after `run`) read without argparse, whose
    import (with `re`, `gettext`, `locale`) and parser are ~7 ms of a
    ~20 ms command; None for anything but the plain shapes (exact flags,
    each value in the next word or after `--long=`), which argparse then
    reads and words the errors of.  Its answers equal argparse's
    (tests/cli/test_quick_arguments.py compares them)."""
    kinds: dict[str, tuple[str, str]] = {}
    values: dict[str, object] = {"version": False, "command": "run"}  # the top parser's
    for flags, dest, kind in [*((o.flags, o.name, o.kind) for o in options.OPTIONS if options.CLI in o.where), *RUN_FLAGS]:
        for flag in flags:
            kinds[flag] = (dest, kind)
        # argparse's defaults, as options.add_arguments and add_parsers declare them
        if kind == "list":
            values[dest] = []
        elif kind == "value":
            values[dest] = None
        else:
            values[dest] = options.BY_NAME[dest].default if dest in options.BY_NAME else False
    if "--" in argv:  # argparse's handling of it differs between Python versions
        return None
    i = 0
    while i < len(argv):
        word = argv[i]
        if not word.startswith("-"):
            if not word:
                return None
            values.update(image=word, cmd=argv[i + 1:], handler=cmd_run)
            return Arguments(**values)
        flag, equals, value = word.partition("=")
        if flag not in kinds or (equals and (not flag.startswith("--") or not value)):
            return None
        dest, kind = kinds[flag]
        if kind == "switch":
            if equals:
                return None
            values[dest] = True
            i += 1
            continue
        if not equals:
            if kind == "optional" or i + 1 == len(argv) or argv[i + 1].startswith("-"):
                return None
            value = argv[i + 1]
            i += 1
        if kind == "list":
            values[dest].append(value)  # type: ignore[attr-defined]
        else:
            values[dest] = value
        i += 1
    return None  # no image: argparse says so


def cmd_run(args: "argparse.Namespace | Arguments") -> int:
    import gc

    # The engine's imports make ~40,000 objects and no garbage: the
    # collections they would set off (~14) are ~1 ms of a `hermetic run`.
    collecting = gc.isenabled()
    gc.disable()
    try:
        from ..container import Container
        from ..spec import Spec
        from ..state import list_states
    finally:
        if collecting:
            gc.enable()

    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    given = options.from_arguments(args, options.CLI)
    size = None
    if args.tty:
        from .terminal import caller_size, check_input

        if not args.detach:
            check_input(args.interactive, "run")
        size = caller_size()
        given["env"].setdefault("TERM", os.environ.get("TERM", "xterm"))  # Docker's default with -t
    elif sys.stdin.isatty() and "TERM" in os.environ and not args.detach:
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
                from ..errors import SpecError

                if other["alive"]:
                    raise SpecError(f"--name {spec.name}: a running container already has that name")
                raise SpecError(f"--name {spec.name}: an exited container has that name; `hermetic rm {spec.name}` first")
    if args.detach:
        if args.commit:
            from ..errors import SpecError

            raise SpecError("--commit and -d: commit a detached container with `hermetic commit NAME REF` while it runs")
        from ..detached import start_detached

        print(start_detached(spec, remove=args.rm, interactive=args.interactive, tty=size))
        return 0
    if args.commit:
        from ..images.commit import target_name

        target_name(args.commit)  # a bad reference fails before the run, not after
    container = Container(spec)
    forwarders: list = []
    if spec.publish:
        from ..publish import listen, refuse_rootless, slirp_publishes

        refuse_rootless(container)
        # Before the start: a host port in use fails the run before it begins.
        forwarders = listen(spec.publish, hold=not slirp_publishes(container))
    ns_helper = None  # a rootless container's socket helper for -p (ns_sockets.py)
    session = None  # with -t: the caller's terminal wired to the container's (terminal.py)
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
        elif session is not None and signum == signal.SIGHUP:
            session.hangup()  # the caller's terminal is gone: so is the container's, as on a real hangup
        elif session is not None and signum == signal.SIGINT:
            session.signal(signum)  # to the terminal's foreground group, as a Ctrl-C
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
            container.start(tty=size)
            if container.tty is not None:
                from .terminal import Session

                session = Session(container.tty, args.interactive)
                session.open()
            while early:
                deliver(early.pop(0))
            if forwarders:
                from ..publish import attach, record_ports

                ns_helper = attach(container, forwarders)
                record_ports(container, forwarders)  # for `ps`, `port`, `inspect`
            # In slices: a signal that lands between Python's last check and
            # the blocking waitpid() would run its handler (forward) only when
            # the wait ends, and a PID 1 that never got the signal never ends.
            result = None
            while result is None:
                result = container.wait(timeout=0.1)
        finally:
            if session is not None:
                session.close()  # the rest of the output; the caller's terminal as it was
            for forwarder in forwarders:
                forwarder.close()
            if ns_helper is not None:
                ns_helper.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        assert result is not None
        if result.oom_killed or result.timed_out is not None:
            say(f"killed: {result.reason}")
        elif result.status.signal is not None and interrupts["count"] == 0:
            say(result.reason or "")
        elif result.stats.pids_limit_hits:
            say(f"note: {result.reason}")
        if args.commit:
            if result.exit_code == 0:
                image = container.commit(args.commit)
                say(f"committed {image.familiar} ({image.id[7:19]})")
            else:
                say(f"not committed: the command failed ({result.reason})")
        return result.exit_code

