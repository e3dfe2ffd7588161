"""`Spec`: what a container should be, parsed and validated once.

The marker, the command line and the notebook magics all build a `Spec`, so
`64M`, `1.5` and `host` mean the same everywhere and a bad value fails the
same way: a `SpecError` naming the option, the value and what would do.
"""

from __future__ import annotations

import math
import re
from ._record import factory, record, replace
TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it costs start-up
    from typing import Any, Mapping

from .errors import SpecError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
DEFAULT_PIDS = 4096


def parse_size(value: int | str | None, option: str = "mem") -> int | None:
    """`64M`, `1g`, `512MiB`, `1.5G` or an int of bytes -> bytes.

    Units are binary, as Docker's are (`64M` is 64 MiB).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise SpecError(f"{option}={value!r}: not a size; use bytes or a number with a unit, e.g. 64M, 1g, 512MiB")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise SpecError(f"{option}={value!r}: not a size; use bytes or a number with a unit, e.g. 64M, 1g, 512MiB")
        size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size <= 0:
        raise SpecError(f"{option}={value!r}: must be more than 0 bytes")
    return size


def format_size(size: int | None) -> str:
    if size is None:
        return "unlimited"
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f} {unit}" if value >= 10 or value == int(value) else f"{value:.1f} {unit}"
    return f"{size} B"


def parse_cpus(value: float | int | str | None) -> float | None:
    if value is None:
        return None
    try:
        cpus = float(value)
    except (TypeError, ValueError):
        raise SpecError(f"cpus={value!r}: not a number of CPUs; use e.g. 0.5, 1 or 1.5") from None
    if not math.isfinite(cpus) or cpus < 0.01:
        raise SpecError(f"cpus={value!r}: must be at least 0.01")
    return cpus


def parse_positive_int(value: Any, option: str) -> int | None:
    if value is None:
        return None
    try:
        number = int(str(value), 10) if not isinstance(value, int) or isinstance(value, bool) else value
    except ValueError:
        raise SpecError(f"{option}={value!r}: not a whole number") from None
    if isinstance(value, bool) or number < 1:
        raise SpecError(f"{option}={value!r}: must be a whole number of at least 1")
    return number


def parse_timeout(value: Any) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise SpecError(f"timeout={value!r}: not a number of seconds; use e.g. 2 or 0.5") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise SpecError(f"timeout={value!r}: must be more than 0 seconds")
    return seconds


@record(frozen=True)
class Volume:
    source: str
    target: str
    readonly: bool = False
    overlay: bool = False  # writable inside, writes vanish with the container

    @classmethod
    def parse(cls, text: str) -> "Volume":
        parts = text.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1] or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise SpecError(f"volume {text!r}: use SRC:DST or SRC:DST:ro")
        if not parts[1].startswith("/"):
            raise SpecError(f"volume {text!r}: the target {parts[1]!r} must be an absolute path")
        import os

        source = os.path.abspath(parts[0])
        if not os.path.exists(source):
            raise SpecError(f"volume {text!r}: the source {source} does not exist")
        return cls(source, os.path.normpath(parts[1]), len(parts) == 3 and parts[2] == "ro")


@record(frozen=True)
class Spec:
    """A container's configuration.  Build it with `Spec.build(...)`."""

    image: str = "host"
    command: tuple[str, ...] | None = None
    net: bool | str = False
    mem: int | None = None
    cpus: float | None = None
    pids: int | None = None  # None: the engine's default fuse (4096) where the pids controller is usable
    timeout: float | None = None
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
    ephemeral: bool = False  # the rw layer lives in memory in the container and vanishes with it (no commit)
    tracked: bool = True  # a state folder for `hermetic ps`/`commit` (the plugin's per-test containers skip it)
    accounting: bool = True  # peak memory and CPU time even without limits

    @classmethod
    def build(cls, image: str = "host", command: Any = None, **options: Any) -> "Spec":
        """Validate everything; raise `SpecError` naming the bad option."""
        known = set(cls._fields)  # type: ignore[attr-defined]
        unknown = sorted(set(options) - known)
        if unknown:
            raise SpecError(f"unknown option {unknown[0]!r}; known options: {', '.join(sorted(known - {'image', 'command'}))}")
        if not isinstance(image, str) or not image.strip():
            raise SpecError(f"image={image!r}: give an image reference such as 'host', 'busybox:1' or 'dir:/path'")
        if isinstance(command, str):
            command = ("/bin/sh", "-c", command)
        elif command is not None:
            command = tuple(str(part) for part in command)
        net = parse_net(options.get("net", False))
        hostname = options.get("hostname")
        if hostname is not None and not _HOSTNAME.match(hostname):
            raise SpecError(f"hostname={hostname!r}: use letters, digits and '-', at most 63 characters")
        name = options.get("name")
        if name is not None and not _NAME.match(name):
            raise SpecError(f"name={name!r}: use letters, digits, '_', '.', '-', starting with a letter or digit")
        env = dict(options.get("env") or {})
        for key in env:
            if not key or "=" in key or "\0" in key:
                raise SpecError(f"env: {key!r} is not a variable name")
        volumes = tuple(v if isinstance(v, Volume) else Volume.parse(v) for v in options.get("volumes") or ())
        workdir = options.get("workdir")
        if workdir is not None and not str(workdir).startswith("/"):
            raise SpecError(f"workdir={workdir!r}: must be an absolute path")
        pids = options.get("pids")
        if not options.get("tracked", True) and not options.get("ephemeral", False):
            raise SpecError("tracked=False needs ephemeral=True: `gc` would take an untracked rw layer for a leftover")
        return cls(
            image=image.strip(),
            command=command,
            net=net,
            mem=parse_size(options.get("mem")),
            cpus=parse_cpus(options.get("cpus")),
            pids=parse_positive_int(pids, "pids"),
            timeout=parse_timeout(options.get("timeout")),
            hostname=hostname,
            env=env,
            volumes=volumes,
            workdir=workdir,
            user=options.get("user"),
            name=name,
            userns=options.get("userns"),
            privileged=bool(options.get("privileged", False)),
            seccomp=bool(options.get("seccomp", True)),
            init=bool(options.get("init", False)),
            ephemeral=bool(options.get("ephemeral", False)),
            tracked=bool(options.get("tracked", True)),
            accounting=bool(options.get("accounting", True)),
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
        if not _NAME.match(value) or len(value) > 64:
            raise SpecError(f"net={value!r}: a network name uses letters, digits, '_', '.', '-' (at most 64), "
                            "starting with a letter or digit")
        return value
    if value is True or value is False or value is None:
        return bool(value)
    raise SpecError(f"net={value!r}: use False (loopback only), True (bridged), or a network name")


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
            raise SpecError(f"-e {item!r}: use KEY=VALUE")
        if not sep:
            if key not in os.environ:
                continue
            value = os.environ[key]
        env[key] = value
    return env
