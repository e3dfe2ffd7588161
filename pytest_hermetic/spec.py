"""`Spec`: what a container should be, parsed and validated once.

The marker, the command line and the notebook magics all build a `Spec`, so
`64M`, `1.5` and `host` mean the same everywhere and a bad value fails the
same way: a `SpecError` naming the option, the value and what would do.
Which options exist, their defaults and where each is offered: `options.py`.

One concern, however long: each option's check is a short function or a
record's `parse` (`Volume`, `Tmpfs`, `Port`), all sharing the same few
helpers and the same way of saying what is wrong; split, they would import
each other both ways.
"""

from __future__ import annotations

import math

from ._record import factory, record, replace
from .errors import SpecError
from .options import OPTIONS, parse_env, parse_security_opts, short_repr as _r  # noqa: F401 - parse_*: public here too

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it costs start-up
    from os import PathLike
    from typing import Any, Mapping, NoReturn, Sequence

# Every pattern is used with fullmatch: `$` would also accept a trailing newline.
# Patterns as text, compiled by `re` on first use (and kept in its cache):
# a container that names no size, host or user pays nothing for them.
_SIZE = r"\s*(\d{1,20}(?:\.\d{1,20})?)\s*([kmgtp]?)(i?b?)\s*"  # re.IGNORECASE
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_HOSTNAME = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
_USER = r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|\d{1,30}"  # a name (as useradd allows) or an id
MIN_MEM = 6 << 20  # as Docker: below this a container cannot even start its first process
MAX_SIZE = 1 << 60  # beyond what any cgroup or disk holds; larger numbers overflow the kernel's parsers
MAX_CPUS = 1024.0  # the kernel takes far more, but no machine has it; a cap that keeps test files portable
MAX_PIDS = 4194304  # PID_MAX_LIMIT: pids.max refuses more
MAX_TIMEOUT = 1e9  # seconds (~31 years); timers overflow beyond
MAX_ID = (1 << 32) - 2  # uid/gid 4294967295 is (uid_t)-1, "no change"
# True or False, nothing else.
_SWITCHES = ("privileged", "seccomp", "init", "read_only", "ephemeral", "tracked", "accounting")
# The engine mounts its own file systems there: a bind would hide or break them.
_RESERVED_TARGETS = ("/proc", "/sys", "/dev")


def parse_size(value: int | str | None, option: str = "mem") -> int | None:
    """`64M`, `1g`, `512MiB`, `1.5G` or an int of bytes -> bytes.

    Units are binary, as Docker's are (`64M` is 64 MiB).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise SpecError(f"{option}={_r(value)}: not a size; use bytes or a number with a unit, e.g. 64M, 1g, 512MiB")
    if isinstance(value, int):
        size = value
    else:
        import re  # in each function that needs it: `re` (and its enums) is ~2 ms of `hermetic run host true`

        match = re.fullmatch(_SIZE, value, re.IGNORECASE) if isinstance(value, str) else None
        if not match:
            raise SpecError(f"{option}={_r(value)}: not a size; use bytes or a number with a unit, e.g. 64M, 1g, 512MiB")
        size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size <= 0:
        raise SpecError(f"{option}={_r(value)}: must be more than 0 bytes")
    if size > MAX_SIZE:
        raise SpecError(f"{option}={_r(value)}: more than {MAX_SIZE >> 60} EiB; use a size such as 64M or 8G")
    return size


def format_size(size: int | None) -> str:
    if size is None:
        return "unlimited"
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f} {unit}" if value >= 10 or value == int(value) else f"{value:.1f} {unit}"
    return f"{size} B"


def _number(value: Any, error: str) -> float:
    """`value` (a number or its text, never a bool) as a float, or SpecError(error)."""
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise SpecError(error) from None


def parse_cpus(value: float | int | str | None) -> float | None:
    if value is None:
        return None
    cpus = _number(value, f"cpus={_r(value)}: not a number of CPUs; use e.g. 0.5, 1 or 1.5")
    if not math.isfinite(cpus) or cpus < 0.01 or cpus > MAX_CPUS:
        raise SpecError(f"cpus={_r(value)}: use a number of CPUs from 0.01 to {MAX_CPUS:.0f}, e.g. 0.5 or 2")
    return cpus


def parse_positive_int(value: Any, option: str, maximum: int | None = None) -> int | None:
    if value is None:
        return None
    try:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError
        number = value if isinstance(value, int) else int(value.strip(), 10)
    except ValueError:
        raise SpecError(f"{option}={_r(value)}: not a whole number; use e.g. {option}=100") from None
    if number < 1 or (maximum is not None and number > maximum):
        limit = f" and at most {maximum}" if maximum is not None else ""
        raise SpecError(f"{option}={_r(value)}: must be a whole number of at least 1{limit}")
    return number


def parse_timeout(value: Any) -> float | None:
    if value is None:
        return None
    seconds = _number(value, f"timeout={_r(value)}: not a number of seconds; use e.g. 2 or 0.5")
    if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_TIMEOUT:
        raise SpecError(f"timeout={_r(value)}: use a number of seconds more than 0 and at most {MAX_TIMEOUT:.0e}")
    return seconds


def parse_user(value: Any) -> str | None:
    """`name`, `uid`, `name:group` or `uid:gid` (an int is a uid); resolved in the container."""
    if value is None:
        return None
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not text:
        raise SpecError(f"user={_r(value)}: use a user name or uid, optionally with a group: 'nobody', '1000', '1000:1000'")
    import re

    name, sep, group = text.partition(":")
    for part in (name, group) if sep else (name,):
        if not re.fullmatch(_USER, part):
            raise SpecError(f"user={_r(value)}: {_r(part)} is not a user or group name or a numeric id; "
                            "use e.g. 'nobody', '1000' or '1000:1000'")
        if part.isdigit() and int(part) > MAX_ID:
            raise SpecError(f"user={_r(value)}: id {part} is out of range (at most {MAX_ID})")
    return text


def parse_workdir(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value or len(value) > 4095:
        raise SpecError(f"workdir={_r(value)}: use an absolute path such as /src")
    import posixpath

    return posixpath.normpath(value)


def check_target(target: str, what: str) -> str:
    """A bind's target: absolute, normalised, and not where the engine mounts its own file systems."""
    import posixpath

    if "\0" in target or not target.startswith("/"):
        raise SpecError(f"{what}: the target {_r(target)} must be an absolute path")
    target = posixpath.normpath(target)
    if target.startswith("//"):
        target = "/" + target.lstrip("/")
    if target == "/":
        raise SpecError(f"{what}: cannot bind over the container's root /; bind to a folder such as /data")
    for reserved in _RESERVED_TARGETS:
        if target == reserved or target.startswith(reserved + "/"):
            raise SpecError(f"{what}: {target} is where the engine mounts its own {reserved}; "
                            "bind to another folder such as /data")
    return target


@record(frozen=True)
class Volume:
    source: str
    target: str
    readonly: bool = False
    overlay: bool = False  # writable inside, writes vanish with the container

    @classmethod
    def parse(cls, text: str) -> "Volume":
        if not isinstance(text, str):
            raise SpecError(f"volumes: {_r(text)} is not a volume; use 'SRC:DST' or 'SRC:DST:ro' strings")
        parts = text.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1] or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise SpecError(f"volume {_r(text)}: use SRC:DST or SRC:DST:ro")
        if "\0" in parts[0]:
            raise SpecError(f"volume {_r(text)}: the source contains a NUL byte")
        target = check_target(parts[1], f"volume {_r(text)}")
        import os

        source = os.path.abspath(parts[0])
        if not os.path.exists(source):
            raise SpecError(f"volume {_r(text)}: the source {source} does not exist")
        return cls(source, target, len(parts) == 3 and parts[2] == "ro")


@record(frozen=True)
class Tmpfs:
    """`--tmpfs PATH[:OPTIONS]`: a tmpfs of the container's own; always nosuid
    and nodev, noexec unless `exec` is asked (as Docker's)."""

    target: str
    size: int | None = None  # bytes; None: the kernel's default (half the RAM, counted against `mem`)
    mode: int | None = None  # None: 1777
    uid: int | None = None
    gid: int | None = None
    noexec: bool = True
    readonly: bool = False

    @classmethod
    def parse(cls, text: Any) -> "Tmpfs":
        if isinstance(text, Tmpfs):
            check_target(text.target, f"tmpfs {text.target}")
            return text
        if not isinstance(text, str) or not text:
            raise SpecError(f"tmpfs: {_r(text)} is not a tmpfs; use 'PATH' or 'PATH:size=64m,mode=1777'")
        target, _, options = text.partition(":")
        target = check_target(target, f"tmpfs {_r(text)}")
        import re

        found: dict[str, Any] = {}
        for option in filter(None, (o.strip() for o in options.split(","))):
            key, sep, value = option.partition("=")
            key = key.lower()
            if key == "size" and sep:
                found["size"] = parse_size(value, f"tmpfs {target} size")
            elif key == "mode" and sep and re.fullmatch(r"[0-7]{1,4}", value):
                found["mode"] = int(value, 8)
            elif key in ("uid", "gid") and sep and value.isdigit() and int(value) <= MAX_ID:
                found[key] = int(value)
            elif option in ("exec", "noexec"):
                found["noexec"] = option == "noexec"
            elif option in ("ro", "rw"):
                found["readonly"] = option == "ro"
            elif option in ("nosuid", "nodev"):
                pass  # always so
            elif option in ("suid", "dev"):
                raise SpecError(f"tmpfs {_r(text)}: {option!r} is refused: every tmpfs of a container is nosuid and "
                                "nodev (a setuid file or a device node there would reach past the container)")
            else:
                raise SpecError(f"tmpfs {_r(text)}: unknown option {_r(option)}; use size=SIZE, mode=OCTAL, uid=N, "
                                "gid=N, ro, rw, exec, noexec (nosuid and nodev always apply)")
        return cls(target, **found)


@record(frozen=True)
class Port:
    """`-p [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]`: a container port
    published on the host; HOST_IP 127.0.0.1 by default (as rootless Podman),
    HOST_PORT 0 a free one the kernel picks."""

    host_ip: str
    host_port: int
    container_port: int
    protocol: str = "tcp"

    @classmethod
    def parse(cls, text: Any) -> "Port":
        if isinstance(text, Port):
            return text
        usage = ("expected [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp], e.g. -p 8080:80, -p 127.0.0.1:8080:80/udp, "
                 "-p [::1]:8080:80 or -p 80 (a free host port)")
        if not isinstance(text, str) or not text.strip():
            raise SpecError(f"-p {_r(text)}: {usage}")
        body, _, protocol = text.strip().partition("/")
        protocol = protocol.lower() or "tcp"
        if protocol not in ("tcp", "udp"):
            raise SpecError(f"-p {text}: protocol {protocol!r}: only tcp and udp can be published")
        host_ip = "127.0.0.1"
        if body.startswith("["):  # [IPv6]:HOST_PORT:CONTAINER_PORT
            address, bracket, rest = body[1:].partition("]")
            if not bracket or not rest.startswith(":"):
                raise SpecError(f"-p {text}: {usage}")
            host_ip, parts = address, rest[1:].split(":")
        else:
            parts = body.split(":")
            if len(parts) > 3:
                raise SpecError(f"-p {text}: write an IPv6 host address in brackets, e.g. -p [::1]:8080:80")
            if len(parts) == 3:
                host_ip = parts.pop(0)
        if len(parts) == 1:
            parts.insert(0, "")
        if len(parts) != 2 or any("-" in part for part in parts):
            raise SpecError(f"-p {text}: {'port ranges are not supported; publish each port' if '-' in body else usage}")
        host_port, container_port = parts
        if not container_port.isdigit() or not 0 < int(container_port) < 65536 or \
                (host_port and (not host_port.isdigit() or not 0 <= int(host_port) < 65536)):
            raise SpecError(f"-p {text}: ports are numbers from 1 to 65535 (host port 0 or none: a free one); {usage}")
        import ipaddress

        try:
            host_ip = str(ipaddress.ip_address(host_ip or "0.0.0.0"))
        except ValueError:
            raise SpecError(f"-p {text}: {host_ip!r} is not an IP address of this host; use e.g. 127.0.0.1, "
                            "0.0.0.0 (every address) or [::1]") from None
        return cls(host_ip, int(host_port or 0), int(container_port), protocol)

    def __str__(self) -> str:
        host = f"[{self.host_ip}]" if ":" in self.host_ip else self.host_ip
        return f"{host}:{self.host_port}->{self.container_port}/{self.protocol}"


@record(frozen=True)
class Spec:
    """A container's configuration.  Build it with `Spec.build(...)`.

    One field per row of `options.OPTIONS`, with the same name and default."""

    image: str = "host"
    command: tuple[str, ...] | None = None
    net: bool | str = False
    mem: int | None = None  # bytes
    cpus: float | None = None
    pids: int | None = None  # None: the engine's fuse (options.DEFAULT_PIDS) where the pids controller is usable
    shm_size: int | None = None  # bytes; None: the host's /dev/shm, or `mem` if smaller
    timeout: float | None = None  # seconds
    hostname: str | None = None
    env: Mapping[str, str] = factory(dict)
    volumes: tuple[Volume, ...] = ()
    workdir: str | None = None
    user: str | None = None
    name: str | None = None
    userns: bool | None = None  # None: only when not root
    privileged: bool = False
    seccomp: bool = True  # Docker's default seccomp filter (docs/seccomp.md); privileged implies none
    init: bool = False  # run the command as PID 2 under a PID 1 that reaps and forwards signals
    entrypoint: tuple[str, ...] | None = None  # None: the image's; (): none (the command alone)
    env_file: tuple[str, ...] = ()  # read into `env` by `build` (-e wins); kept to be shown
    read_only: bool = False  # the root file system read-only (tmpfs mounts and volumes stay as given)
    tmpfs: tuple[Tmpfs, ...] = ()
    cap_add: tuple[str, ...] = ()  # canonical names (CAP_NET_ADMIN) or ALL
    cap_drop: tuple[str, ...] = ()
    publish: tuple[Port, ...] = ()  # the command line's -p: forwarded by its caller (cli/run.py, detached.py)
    platform: str | None = None  # os/arch[/variant] of the image to pull; refused where this machine cannot run it
    stop_signal: str | None = None  # `hermetic stop`'s first signal, a name (SIGINT); None: SIGTERM
    stop_timeout: float | None = None  # seconds `hermetic stop` waits before the SIGKILL; None: 10
    ephemeral: bool = False  # the rw layer lives in memory in the container and vanishes with it (no commit)
    tracked: bool = True  # a state folder for `hermetic ps`/`commit` (the plugin's per-test containers skip it)
    accounting: bool = True  # peak memory and CPU time even without limits

    @classmethod
    def build(
        cls,
        image: str = "host",
        command: str | Sequence[str | int | float | PathLike[str]] | None = None,
        *,
        net: bool | str | None = False,
        mem: int | str | None = None,
        cpus: float | str | None = None,
        pids: int | str | None = None,
        shm_size: int | str | None = None,
        timeout: float | str | None = None,
        hostname: str | None = None,
        env: Mapping[str, str | int | float] | None = None,
        volumes: Sequence[str | Volume] | None = None,
        workdir: str | None = None,
        user: str | int | None = None,
        name: str | None = None,
        userns: bool | None = None,
        privileged: bool = False,
        seccomp: bool = True,
        init: bool = False,
        entrypoint: str | Sequence[str] | None = None,
        env_file: str | PathLike[str] | Sequence[str | PathLike[str]] | None = None,
        read_only: bool = False,
        tmpfs: str | Sequence[str | Tmpfs] | None = None,
        cap_add: str | Sequence[str] | None = None,
        cap_drop: str | Sequence[str] | None = None,
        publish: Sequence[str | Port] | None = None,
        platform: str | None = None,
        stop_signal: str | int | None = None,
        stop_timeout: float | str | None = None,
        ephemeral: bool = False,
        tracked: bool = True,
        accounting: bool = True,
        **unknown: NoReturn,  # a type checker flags any other keyword; at run time it is a SpecError
    ) -> "Spec":
        """Validate everything; raise `SpecError` naming the bad option and what would do.

        Values come from Python (the marker, the API) or from words (the command
        line, a cell, an ini file), so both `64 << 20` and `"64M"` are sizes."""
        if unknown:
            known = sorted(option.name for option in OPTIONS if option.name not in ("image", "command"))
            raise SpecError(f"unknown option {_r(next(iter(unknown)))}; known options: {', '.join(known)}")
        image = _check_image(image)
        checked_command = _check_command(command)
        checked_net = parse_net(net)
        if hostname is not None or name is not None:
            import re
        if hostname is not None and (not isinstance(hostname, str) or not re.fullmatch(_HOSTNAME, hostname)):
            raise SpecError(f"hostname={_r(hostname)}: use letters, digits and '-', at most 63 characters")
        if name is not None and (not isinstance(name, str) or not re.fullmatch(_NAME, name)):
            raise SpecError(f"name={_r(name)}: use letters, digits, '_', '.', '-', starting with a letter or digit")
        checked_env = _check_env(env)
        env_files = _paths(env_file, "env_file")
        if env_files:
            checked_env = {**read_env_files(env_files), **checked_env}  # -e wins, as Docker's
        checked_volumes = _check_volumes(volumes)
        for flag, value in zip(_SWITCHES, (privileged, seccomp, init, read_only, ephemeral, tracked, accounting)):
            if value is not True and value is not False:
                raise SpecError(f"{flag}={_r(value)}: use True or False (a string such as 'false' is not a boolean)")
        if userns is not None and userns is not True and userns is not False:
            raise SpecError(f"userns={_r(userns)}: use True, False or None (None: only when not root)")
        if not tracked and not ephemeral:
            raise SpecError("tracked=False needs ephemeral=True: `gc` would take an untracked rw layer for a leftover")
        size = parse_size(mem)
        if size is not None and size < MIN_MEM:
            raise SpecError(f"mem={_r(mem)}: too little for a container to start; use at least 6M")
        return cls(
            image=image,
            command=checked_command,
            net=checked_net,
            mem=size,
            cpus=parse_cpus(cpus),
            pids=parse_positive_int(pids, "pids", MAX_PIDS),
            shm_size=parse_size(shm_size, "shm_size"),
            timeout=parse_timeout(timeout),
            hostname=hostname,
            env=checked_env,
            volumes=checked_volumes,
            workdir=parse_workdir(workdir),
            user=parse_user(user),
            name=name,
            userns=userns,
            privileged=privileged,
            seccomp=seccomp,
            init=init,
            entrypoint=parse_entrypoint(entrypoint),
            env_file=env_files,
            read_only=read_only,
            tmpfs=tuple(Tmpfs.parse(t) for t in _items(tmpfs, "tmpfs")),
            cap_add=parse_caps(cap_add, "cap_add"),
            cap_drop=parse_caps(cap_drop, "cap_drop"),
            publish=tuple(Port.parse(p) for p in _items(publish, "publish")),
            platform=parse_platform(platform),
            stop_signal=parse_signal(stop_signal),
            stop_timeout=parse_stop_timeout(stop_timeout),
            ephemeral=ephemeral,
            tracked=tracked,
            accounting=accounting,
        )

    def with_options(self, **changes: Any) -> "Spec":
        return replace(self, **changes)


def parse_net(value: Any) -> bool | str:
    """False (loopback only), True (the host bridge, with NAT out), or the
    name of a network; "none" and "bridge" are Docker's words for the first two."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("none", "false", "no", "off", "0", ""):
            return False
        if lowered in ("bridge", "true", "yes", "on", "1"):
            return True
        if lowered == "host":
            raise SpecError("net='host': sharing the host's network namespace is not supported (it is not "
                            "hermetic); use net=True for a bridged network with the host reachable")
        import re

        if not re.fullmatch(_NAME, value) or len(value) > 64:
            raise SpecError(f"net={_r(value)}: a network name uses letters, digits, '_', '.', '-' (at most 64), "
                            "starting with a letter or digit")
        return value
    if value is True or value is False or value is None:
        return bool(value)
    raise SpecError(f"net={_r(value)}: use False (loopback only), True (bridged), or a network name")


def _check_image(image: Any) -> str:
    if not isinstance(image, str) or not image.strip():
        raise SpecError(f"image={_r(image)}: give an image reference such as 'host', 'busybox:1' or 'dir:/path'")
    image = image.strip()
    if image.startswith("build:"):  # the plugin and `containers.run` build these; Spec takes what was built
        raise SpecError(f"image={_r(image)}: an image built from a Containerfile is named so only in pytest "
                        "(the marker, containers.run); elsewhere build it first (`hermetic build -t NAME`)")
    if image == "host":
        return image
    from .errors import ImageReferenceError
    from .images.reference import parse

    try:
        ref = parse(image)
    except ImageReferenceError as exc:
        raise SpecError(f"image={_r(image)}: {str(exc).split(': ', 1)[-1]}") from None
    if ref.transport in ("dir", "tar", "oci", "docker-archive") and "\0" in ref.path:
        raise SpecError(f"image={_r(image)}: the path contains a NUL byte")
    if ref.transport == "dir" and ref.path.rstrip("/") in ("", "/."):
        raise SpecError(f"image={_r(image)}: that is the host's whole root; use image='host' to run on it")
    return image


def _check_command(command: Any) -> tuple[str, ...] | None:
    if command is None:
        return None
    if isinstance(command, str):
        command = ("/bin/sh", "-c", command)
    elif isinstance(command, (list, tuple)):
        if not command:
            raise SpecError("command=[]: give a program and its arguments, e.g. ['echo', 'hi'], or None for the image's")
        import os

        command = tuple(str(part) if isinstance(part, (int, float)) and not isinstance(part, bool)
                        else os.fspath(part) if isinstance(part, os.PathLike) else part for part in command)
        for part in command:
            if not isinstance(part, str):
                raise SpecError(f"command: {_r(part)} is not a string; give the program and its arguments as strings")
    else:
        raise SpecError(f"command={_r(command)}: give a string (run by /bin/sh -c) or a list of strings")
    for part in command:
        if "\0" in part:
            raise SpecError(f"command: {_r(part)} contains a NUL byte, which no program argument can hold")
    return command


def _check_env(env: Any) -> dict[str, str]:
    if not env:
        if env is None or isinstance(env, (dict, list, tuple)):
            return {}
    if not hasattr(env, "items") or isinstance(env, (str, bytes)):
        raise SpecError(f"env={_r(env)}: give a mapping of names to values, e.g. env={{'A': '1'}}")
    checked: dict[str, str] = {}
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise SpecError(f"env: {_r(key)} is not a variable name; use letters, digits and '_', e.g. env={{'A': '1'}}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise SpecError(f"env: {key}={_r(value)}: the value must be a string, e.g. env={{{_r(key)}: '1'}}")
        if "\0" in value:
            raise SpecError(f"env: {key}=...: the value contains a NUL byte, which no environment can hold")
        checked[key] = value
    return checked


def _check_volumes(volumes: Any) -> tuple[Volume, ...]:
    if not volumes:
        if volumes is None or isinstance(volumes, (list, tuple)):
            return ()
    if not isinstance(volumes, (list, tuple)):
        raise SpecError(f"volumes={_r(volumes)}: give a list, e.g. volumes=['/src:/data:ro']")
    result = []
    for volume in volumes:
        if isinstance(volume, Volume):
            check_target(volume.target, f"volume {volume.source}:{volume.target}")
            result.append(volume)
        else:
            result.append(Volume.parse(volume))
    return tuple(result)


def _items(value: Any, option: str) -> tuple:
    """A list option given as one string, a list or nothing."""
    if value is None or isinstance(value, str) and not value:
        return ()
    if isinstance(value, (str, Tmpfs, Port)):
        return (value,)
    if not isinstance(value, (list, tuple)):
        raise SpecError(f"{option}={_r(value)}: give a string or a list of strings")
    return tuple(value)


def _paths(value: Any, option: str) -> tuple[str, ...]:
    import os

    items = _items(value if not isinstance(value, os.PathLike) else os.fspath(value), option)
    paths = []
    for item in items:
        path = os.fspath(item) if isinstance(item, os.PathLike) else item
        if not isinstance(path, str) or not path or "\0" in path:
            raise SpecError(f"{option}: {_r(path)} is not a file path")
        paths.append(os.path.abspath(path))
    return tuple(paths)


def read_env_files(paths: Sequence[str]) -> dict[str, str]:
    """Docker's --env-file format: `KEY=VALUE` lines (the value as written,
    quotes and all), `KEY` alone passes the caller's value (if it has one),
    `#` comments and blank lines skipped; later files win."""
    import os

    env: dict[str, str] = {}
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read(1 << 20 | 1)
        except OSError as exc:
            raise SpecError(f"--env-file {path}: cannot read it ({exc.strerror})") from None
        if len(data) > 1 << 20:
            raise SpecError(f"--env-file {path}: larger than 1 MiB; is it an environment file?")
        try:
            text = data.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError as exc:
            at = data[:exc.start].count(b"\n") + 1
            raise SpecError(f"--env-file {path}, line {at}: not UTF-8 text") from None
        for number, raw in enumerate(text.split("\n"), 1):  # as Docker's scanner: \n ends a line, a \r before it goes
            line = raw.removesuffix("\r").lstrip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            if not key:
                raise SpecError(f"--env-file {path}, line {number}: no variable name before '='; write KEY=VALUE")
            if any(c.isspace() for c in key) or "\0" in key or "\0" in value:
                raise SpecError(f"--env-file {path}, line {number}: {_r(key)} is not a variable name (it holds "
                                "white space or a NUL); write KEY=VALUE, one a line")
            if sep:
                env[key] = value
            elif key in os.environ:
                env[key] = os.environ[key]
    return env


def parse_entrypoint(value: Any) -> tuple[str, ...] | None:
    """None: the image's; '' or []: none; a string: that one program (not
    split, as Docker's --entrypoint); a list: the program and its first arguments."""
    if value is None:
        return None
    if isinstance(value, str):
        value = (value,) if value else ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(part, str) for part in value):
        raise SpecError(f"entrypoint={_r(value)}: give a program ('/bin/sh'), a list (['/bin/sh', '-c']) or '' for none")
    if any("\0" in part for part in value):
        raise SpecError("entrypoint: an argument contains a NUL byte, which no program argument can hold")
    return tuple(value)


def parse_caps(value: Any, option: str) -> tuple[str, ...]:
    """Capability names with or without CAP_, any case, or ALL -> canonical names."""
    names = _items(value, option)
    if not names:
        return ()
    from .runtime.capabilities import ALL_CAPS, canonical

    checked = []
    for name in names:
        full = canonical(name) if isinstance(name, str) else None
        if full is None:
            raise SpecError(f"{option}: {_r(name)} is not a capability; use a name such as NET_ADMIN or CAP_SYS_PTRACE, "
                            f"or ALL (known: {', '.join(n[4:] for n in ALL_CAPS)})")
        if full not in checked:
            checked.append(full)
    return tuple(checked)


def parse_signal(value: Any) -> str | None:
    """`TERM`, `sigint`, `SIGUSR1`, `15` -> the signal's name (`SIGTERM`)."""
    if value is None:
        return None
    import signal

    text = str(value).strip().upper() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    try:
        if text.isdigit():
            return signal.Signals(int(text)).name
        return signal.Signals[text if text.startswith("SIG") else "SIG" + text].name
    except (KeyError, ValueError):
        raise SpecError(f"stop_signal={_r(value)}: not a signal; give a name (TERM, SIGINT, QUIT) or a number") from None


def parse_stop_timeout(value: Any) -> float | None:
    """Seconds, 0 (the SIGKILL at once) or more."""
    if value is None:
        return None
    seconds = _number(value, f"stop_timeout={_r(value)}: not a number of seconds; use e.g. 10 or 0.5")
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_TIMEOUT:
        raise SpecError(f"stop_timeout={_r(value)}: use a number of seconds from 0 to {MAX_TIMEOUT:.0e}")
    return seconds


def parse_platform(value: Any) -> str | None:
    """`os/arch[/variant]`, normalised (`linux/x86_64` -> `linux/amd64`)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise SpecError(f"platform={_r(value)}: expected OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64/v8")
    from .images import platforms

    wanted = platforms.parse(value)
    reason = platforms.cannot_run(wanted)
    if reason:
        raise SpecError(f"--platform {value}: {reason}")
    return platforms.format(wanted)
