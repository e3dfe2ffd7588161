"""The container options in one table: each option's name, default, help and
where it is offered.

`Spec` has one field per row (its typed fields and `Spec.build`'s keywords
are spelled out for type checkers; tests/test_options.py holds them to this
table), and every surface reads the table instead of keeping a list:

- the `@hermetic` marker: the options it takes and its `pytest --markers` line;
- `hermetic run`: its argparse options, by their command-line spellings
  (Docker's, where Docker has the option);
- `%%container`: its argparse options, and which of them a kept
  (`--name`) container takes per cell rather than only when it is made.

A new option is a row here and a field of `Spec` checked in `Spec.build`
(then the runtime's `ProcessConfig` or the cgroup `Limits`, where it acts).

Cheap to import (the plugin and every `hermetic` command load it): only
`_record` and `errors`.
"""

from __future__ import annotations

from ._record import record
from .errors import SpecError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it costs start-up
    from typing import Any, Callable

DEFAULT_PIDS = 4096  # the fuse against fork bombs where `pids` is not given and the pids controller is usable

# Where an option is offered (`Option.where`).
MARKER = "marker"  # @hermetic(...)
CLI = "cli"  # hermetic run
CELL = "cell"  # %%container


@record(frozen=True)
class Option:
    name: str  # Spec's field, Spec.build's keyword, the marker's keyword
    default: object  # Spec's default
    help: str
    where: tuple[str, ...] = ()  # MARKER, CLI, CELL; () for the Python API only
    flags: tuple[str, ...] = ()  # command-line spellings; Docker's where it has the option
    metavar: str | None = None
    # How a command line takes it: "value" (one), "list" (repeatable, all kept),
    # "switch" (present or not), "optional" (bare: True; or a value).
    kind: str = "value"
    cell_help: str | None = None  # where a cell means it differently
    per_cell: bool = False  # a kept `%%container --name` container takes it for each cell, not only when made


OPTIONS: tuple[Option, ...] = (
    Option("image", "host", "host, NAME[:TAG], dir:PATH, tar:FILE, oci:DIR[:TAG], docker-archive:FILE; "
           "in pytest also Build(CONTAINERFILE) or build:NAME (built when first needed)",
           (MARKER,)),  # the command line's and the cell's first positional argument
    Option("command", None, "the program and its arguments (a string: run by /bin/sh -c); None: the image's"),
    Option("net", False, "network: bare (or =bridge) the host bridge with NAT out, or a named network "
           "(`hermetic network create`); default: loopback only",
           (MARKER, CLI, CELL), ("--network", "--net"), "NAME", "optional"),
    Option("mem", None, "memory limit, e.g. 64M, 1g, 512MiB", (MARKER, CLI, CELL), ("-m", "--memory", "--mem"), "SIZE"),
    Option("cpus", None, "CPU bandwidth, e.g. 0.5 or 1.5", (MARKER, CLI, CELL), ("--cpus",), "N"),
    Option("pids", None, f"maximum number of processes (default {DEFAULT_PIDS})", (MARKER, CLI, CELL),
           ("--pids-limit", "--pids"), "N"),
    Option("shm_size", None, "size of /dev/shm, e.g. 1g (default: the host's, or the memory limit if smaller)",
           (MARKER, CLI, CELL), ("--shm-size",), "SIZE"),
    Option("timeout", None, "kill everything after S seconds", (MARKER, CLI, CELL), ("--timeout",), "S",
           cell_help="stop the cell's processes after S seconds", per_cell=True),
    Option("hostname", None, "the container's host name", (MARKER, CLI), ("--hostname",), "H"),
    Option("env", None, "environment variable; K alone passes the caller's value through", (MARKER, CLI, CELL),
           ("-e", "--env"), "K=V", "list", cell_help="environment variable; K alone passes the kernel's value through",
           per_cell=True),
    Option("volumes", None, "bind a host path (:ro read-only)", (MARKER, CLI, CELL), ("-v", "--volume"),
           "SRC:DST[:ro]", "list"),
    Option("workdir", None, "working directory (made if the image lacks it)", (MARKER, CLI, CELL), ("-w", "--workdir"),
           "DIR", cell_help="working directory of the cell", per_cell=True),
    Option("user", None, "user (and group) to run as: a name or an id", (MARKER, CLI), ("-u", "--user"),
           "USER[:GROUP]"),
    Option("name", None, "a name for `hermetic ps` and `commit`, unique among running containers", (CLI, CELL),
           ("--name",), "NAME", cell_help="keep the container after the cell; later cells with this name run in it"),
    Option("userns", None, "use a user namespace (the default, and the only choice, when not root; not supported yet as root)", (MARKER, CLI),
           ("--userns",), kind="switch"),
    Option("privileged", False, "keep all capabilities, no masks, writable /sys, no seccomp filter", (MARKER, CLI),
           ("--privileged",), kind="switch"),
    Option("seccomp", True, "seccomp=unconfined: no seccomp filter (default: Docker's default profile)",
           (MARKER, CLI, CELL), ("--security-opt",), "seccomp=unconfined", "list"),
    Option("init", False, "run the command as PID 2 under a PID 1 that reaps zombies and forwards signals", (CLI,),
           ("--init",), kind="switch"),
    Option("entrypoint", None, "the program to run instead of the image's ENTRYPOINT (the command becomes its "
           "arguments; '' for none)", (CLI,), ("--entrypoint",), "PROGRAM"),
    Option("env_file", None, "read environment variables from a file (KEY=VALUE lines; KEY alone passes the caller's; "
           "# comments); -e wins", (MARKER, CLI), ("--env-file",), "FILE", "list"),
    Option("read_only", False, "the root file system read-only (writable: --tmpfs mounts, volumes, /dev)",
           (MARKER, CLI, CELL), ("--read-only",), kind="switch"),
    Option("tmpfs", None, "mount a tmpfs (always nosuid,nodev; noexec unless exec)", (MARKER, CLI, CELL), ("--tmpfs",),
           "PATH[:size=SIZE,mode=OCTAL,exec,ro]", "list"),
    Option("cap_add", None, "add a capability (NET_ADMIN, SYS_PTRACE, ... or ALL); the seccomp filter stays "
           "Docker's default one (docs/security.md)", (MARKER, CLI, CELL), ("--cap-add",), "CAP", "list"),
    Option("cap_drop", None, "drop a capability (CHOWN, NET_RAW, ... or ALL)", (MARKER, CLI, CELL), ("--cap-drop",),
           "CAP", "list"),
    Option("publish", None, "publish a container port on the host (HOST_IP default 127.0.0.1; no HOST_PORT: a free one)",
           (CLI,), ("-p", "--publish"), "[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]", "list"),
    Option("platform", None, "the image's platform, pulled if missing (only one this machine can run)", (CLI,),
           ("--platform",), "OS/ARCH[/VARIANT]"),
    Option("stop_signal", None, "the signal `hermetic stop` sends first (default SIGTERM)", (CLI,), ("--stop-signal",),
           "SIGNAL"),
    Option("stop_timeout", None, "seconds `hermetic stop` waits before its SIGKILL (default 10)", (CLI,),
           ("--stop-timeout",), "SECONDS"),
    Option("ephemeral", False, "the read-write layer lives in memory and vanishes with the container (no commit)"),
    Option("tracked", True, "a state folder for `hermetic ps` and `commit` (needs ephemeral=False otherwise)"),
    Option("accounting", True, "peak memory and CPU time even without limits"),
)
BY_NAME = {option.name: option for option in OPTIONS}
MARKER_OPTIONS = tuple(option.name for option in OPTIONS if MARKER in option.where)
CELL_OPTIONS = tuple(option.name for option in OPTIONS if CELL in option.where)
# What a kept `%%container --name` container takes only when it is made (its name picks it).
CREATE_ONLY = tuple(option.name for option in OPTIONS
                    if CELL in option.where and not option.per_cell and option.name != "name")


def marker_help() -> str:
    """The marker's line in `pytest --markers`: every option it takes, with its default."""
    arguments = ", ".join(f"{name}={BY_NAME[name].default!r}" for name in MARKER_OPTIONS)
    return f"hermetic({arguments}): run this test in its own container (namespaces, cgroup, overlay root)"


def spelling(name: str) -> str:
    """How a command line writes option `name` (`--mem`, `--volume`, `--security-opt`)."""
    flags = BY_NAME[name].flags
    return flags[-1] if flags else name


def is_set(name: str, value: object) -> bool:
    """Whether a command line set option `name` to `value`: not to its default, nor to nothing."""
    return value is not None and value != [] and value != {} and value != BY_NAME[name].default


def add_arguments(add_argument: Callable[..., Any], where: str) -> None:
    """Declare the options offered `where` (CLI or CELL) through an
    `ArgumentParser.add_argument`; each lands under its own name (`dest`)."""
    for option in OPTIONS:
        if where not in option.where:
            continue
        settings: dict[str, Any] = {"dest": option.name,
                                    "help": option.cell_help if where == CELL and option.cell_help else option.help}
        if option.kind == "switch":
            settings.update(action="store_true", default=option.default)
        else:
            settings["metavar"] = option.metavar
            if option.kind == "list":
                settings.update(action="append", default=[])
            elif option.kind == "optional":
                settings.update(nargs="?", const=True, default=option.default)
        add_argument(*option.flags, **settings)


def from_arguments(arguments: object, where: str) -> dict[str, Any]:
    """`Spec.build`'s options from a parsed command line (`add_arguments`'s):
    `-e` and `--security-opt` parsed, a list where `Spec` takes one, and what
    was not given left out."""
    options: dict[str, Any] = {}
    for option in OPTIONS:
        if where not in option.where:
            continue
        value = getattr(arguments, option.name)
        if option.name == "env":
            value = parse_env(value)
        elif option.name == "seccomp":
            value = parse_security_opts(value).get("seccomp")
        elif option.kind == "list":
            value = list(value)
        if value is not None:
            options[option.name] = value
    return options


def parse_security_opts(items: list[str]) -> dict[str, bool]:
    """`--security-opt seccomp=unconfined` (Docker's spelling) -> {"seccomp": False}."""
    options: dict[str, bool] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if key.strip() == "seccomp" and sep and value.strip() == "unconfined":
            options["seccomp"] = False
        else:
            raise SpecError(f"--security-opt {item!r}: only seccomp=unconfined is supported (no seccomp filter); "
                            "the default is Docker's default seccomp profile")
    return options


def parse_env(items: list[str]) -> dict[str, str]:
    """`-e K=V` (or `-e K` to pass the caller's value through)."""
    import os

    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise SpecError(f"-e {short_repr(item)}: use KEY=VALUE")
        if not sep:
            if key not in os.environ:
                continue
            value = os.environ[key]
        env[key] = value
    return env


def short_repr(value: object) -> str:
    """repr, cut short: an error line names the value, it does not repeat a megabyte of it."""
    text = repr(value)
    return text if len(text) <= 80 else text[:60] + f"...' ({len(text)} characters)"
