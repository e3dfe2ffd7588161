"""What the metadata instructions do to an image config (no layer, no container).

ENV, LABEL, WORKDIR, USER, EXPOSE, ENTRYPOINT, CMD, VOLUME, STOPSIGNAL,
HEALTHCHECK and SHELL change the OCI config's `config` object as Docker's
builder does; each is a function of the config, the instruction and the
variables in scope, so the same Containerfile gives the same config.
"""

from __future__ import annotations

import posixpath
import re

from ..errors import BuildError
from . import words
from .parser import Instruction

DEFAULT_SHELL = ["/bin/sh", "-c"]
METADATA = ("ENV", "LABEL", "WORKDIR", "USER", "EXPOSE", "ENTRYPOINT", "CMD", "VOLUME", "STOPSIGNAL",
            "HEALTHCHECK", "SHELL")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def env_dict(config: dict) -> dict[str, str]:
    return dict(item.split("=", 1) if "=" in item else (item, "") for item in config.get("Env") or [])


def set_env(config: dict, key: str, value: str) -> None:
    items = [item for item in config.get("Env") or [] if item.split("=", 1)[0] != key]
    config["Env"] = [*items, f"{key}={value}"]


def pairs(ins: Instruction, scope: dict[str, str], escape: str, where: str) -> list[tuple[str, str]]:
    """`KEY=VALUE ...`, or the old `KEY VALUE WITH SPACES` form (ENV, LABEL)."""
    parts = words.split(ins.text, scope, escape)
    if not parts:
        raise BuildError(f"{where} needs at least one KEY=VALUE")
    if "=" not in parts[0]:  # the old form: the first word is the key, the rest its value
        key, _, rest = ins.text.partition(" ")
        if not rest.strip():
            raise BuildError(f"{where} {key} needs a value (KEY=VALUE or KEY VALUE)")
        return [(words.expand(key, scope, escape), words.expand(rest.strip(), scope, escape))]
    result = []
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise BuildError(f"{where}: {part!r} is not KEY=VALUE")
        result.append((key, value))
    return result


def command(ins: Instruction, config: dict) -> list[str]:
    """The argv of RUN/CMD/ENTRYPOINT: the exec form as written, else the shell and the text."""
    if ins.exec_form is not None:
        return list(ins.exec_form)
    return [*(config.get("Shell") or DEFAULT_SHELL), ins.text]


def apply(ins: Instruction, config: dict, scope: dict[str, str], escape: str, where: str, state: dict) -> None:
    """Change `config` as `ins` says; `state` holds per-stage facts (whether CMD was set)."""
    kw = ins.keyword
    if kw == "ENV":
        for key, value in pairs(ins, scope, escape, where):
            set_env(config, key, value)
            scope[key] = value
    elif kw == "LABEL":
        labels = dict(config.get("Labels") or {})
        labels.update(pairs(ins, scope, escape, where))
        config["Labels"] = labels
    elif kw == "WORKDIR":
        path = words.expand(ins.text, scope, escape)
        if not path:
            raise BuildError(f"{where} needs a folder")
        config["WorkingDir"] = posixpath.normpath(posixpath.join(config.get("WorkingDir") or "/", path))
    elif kw == "USER":
        user = words.expand(ins.text, scope, escape)
        if not user:
            raise BuildError(f"{where} needs a user")
        config["User"] = user
    elif kw == "EXPOSE":
        ports = dict(config.get("ExposedPorts") or {})
        for port in words.split(ins.text, scope, escape):
            number, _, proto = port.partition("/")
            if not number.replace("-", "").isdigit() or proto not in ("", "tcp", "udp", "sctp"):
                raise BuildError(f"{where}: {port!r} is not a port such as 80 or 53/udp")
            ports[f"{number}/{proto or 'tcp'}"] = {}
        config["ExposedPorts"] = ports
    elif kw == "ENTRYPOINT":
        config["Entrypoint"] = command(ins, config) if ins.text else None
        if not state.get("cmd_set"):
            config.pop("Cmd", None)  # as Docker: an ENTRYPOINT drops the CMD the base image had
    elif kw == "CMD":
        config["Cmd"] = command(ins, config)
        state["cmd_set"] = True
    elif kw == "VOLUME":
        paths = ins.exec_form if ins.exec_form is not None else words.split(ins.text, scope, escape)
        volumes = dict(config.get("Volumes") or {})
        for path in paths:
            volumes[words.expand(path, scope, escape) if ins.exec_form is not None else path] = {}
        config["Volumes"] = volumes
    elif kw == "STOPSIGNAL":
        config["StopSignal"] = words.expand(ins.text, scope, escape)
    elif kw == "SHELL":
        if not ins.exec_form:
            raise BuildError(f"{where} takes the JSON form, e.g. SHELL [\"/bin/bash\", \"-c\"]")
        config["Shell"] = list(ins.exec_form)
    elif kw == "HEALTHCHECK":
        config["Healthcheck"] = _healthcheck(ins, config, where)
    if config.get("Entrypoint") is None:
        config.pop("Entrypoint", None)


def _healthcheck(ins: Instruction, config: dict, where: str) -> dict:
    text = ins.text
    if text.upper() == "NONE":
        return {"Test": ["NONE"]}
    head, _, rest = text.partition(" ")
    if head.upper() != "CMD":
        raise BuildError(f"{where}: use HEALTHCHECK [OPTIONS] CMD command, or HEALTHCHECK NONE")
    rest = rest.strip()
    sub = Instruction("CMD", rest, ins.line, {}, None)
    if rest.startswith("["):
        from .parser import parse  # the exec form, parsed as a CMD line

        sub = parse("CMD " + rest).instructions[0]
    test = ["CMD", *sub.exec_form] if sub.exec_form is not None else ["CMD-SHELL", rest]
    check: dict = {"Test": test}
    for flag, field in (("interval", "Interval"), ("timeout", "Timeout"), ("start-period", "StartPeriod"),
                        ("start-interval", "StartInterval")):
        if flag in ins.flags:
            check[field] = _duration(ins.flags[flag], where)
    if "retries" in ins.flags:
        if not ins.flags["retries"].isdigit():
            raise BuildError(f"{where}: --retries={ins.flags['retries']} is not a number")
        check["Retries"] = int(ins.flags["retries"])
    unknown = set(ins.flags) - {"interval", "timeout", "start-period", "start-interval", "retries"}
    if unknown:
        raise BuildError(f"{where}: unknown flag --{sorted(unknown)[0]}")
    return check


def _duration(text: str, where: str) -> int:
    total, pos = 0, 0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += int(float(match.group(1)) * _UNITS[match.group(2)])
        pos = match.end()
    if pos != len(text) or not text:
        raise BuildError(f"{where}: {text!r} is not a duration such as 30s or 1m30s")
    return total
