"""Registry settings: mirrors, insecure registries, offline mode, credentials.

Environment (wins) and a registries.conf file (INI, one section per registry,
as containers' registries.conf has one [[registry]] table per location):

    HERMETIC_REGISTRY_MIRRORS="docker.io=127.0.0.1:5001,mirror.lan/hub;quay.io=..."
        (a bare list without `REGISTRY=` is for docker.io, as Docker's registry-mirrors)
    HERMETIC_INSECURE_REGISTRIES="myreg.lan:5000,other:5000"
    HERMETIC_OFFLINE=1      never contact a registry that is not on loopback
    HERMETIC_REGISTRIES_CONF=/path   (default ~/.config/hermetic/registries.conf)

    [docker.io]
    mirrors = 127.0.0.1:5001, mirror.lan/hub
    [myreg.lan:5000]
    insecure = true

A mirror may carry a path prefix (`mirror.lan/hub`): `library/debian` is
then asked for as `hub/library/debian`.  Loopback registries are always
insecure (plain HTTP allowed), as Docker treats 127.0.0.0/8.

Credentials: `$REGISTRY_AUTH_FILE`, then `$XDG_RUNTIME_DIR/containers/auth.json`
(`containers_auth_file()`: where `hermetic login` writes), then
`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`; the entry
`auths[REGISTRY].auth` is base64 of `user:password` (what `docker login` and
`skopeo login` write).  Credential helpers are not run.
"""

from __future__ import annotations

import base64
import json
import os
import socket

from ..errors import RegistryError


def _conf_path() -> str:
    return os.environ.get("HERMETIC_REGISTRIES_CONF") or os.path.join(
        os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"), "hermetic", "registries.conf")


def _conf() -> dict[str, dict[str, str]]:
    if not os.path.exists(_conf_path()):
        return {}
    import configparser  # (~1 ms) only when a registries.conf exists; most pulls have none

    parser = configparser.ConfigParser()
    try:
        parser.read(_conf_path())
    except configparser.Error as exc:
        raise RegistryError(f"{_conf_path()}: {exc}") from None
    return {section: dict(parser[section]) for section in parser.sections()}


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.replace(";", ",").split(",") if item.strip()]


def mirrors(registry: str) -> list[str]:
    """Mirror locations (`host[:port][/prefix]`) to try before `registry`, in order."""
    env = os.environ.get("HERMETIC_REGISTRY_MIRRORS", "").strip()
    if env:
        found: list[str] = []
        for part in env.split(";"):
            name, sep, locations = part.partition("=")
            if not sep:
                name, locations = "docker.io", part
            if name.strip() == registry:
                found += _split(locations)
        return found
    return _split(_conf().get(registry, {}).get("mirrors", ""))


def is_loopback(registry: str) -> bool:
    # references bracket IPv6 hosts ([::1]:5000), so the first ':' starts the port
    host = registry[1:registry.find("]")] if registry.startswith("[") else registry.split(":")[0]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    for family, loopback in ((socket.AF_INET, lambda b: b[0] == 127), (socket.AF_INET6, lambda b: b == bytes(15) + b"\x01")):
        try:
            return loopback(socket.inet_pton(family, host))
        except OSError:
            continue
    return False


def is_insecure(registry: str) -> bool:
    if is_loopback(registry):
        return True
    if registry in _split(os.environ.get("HERMETIC_INSECURE_REGISTRIES", "")):
        return True
    return _conf().get(registry, {}).get("insecure", "").lower() in ("1", "true", "yes")


def offline() -> bool:
    return os.environ.get("HERMETIC_OFFLINE", "").lower() in ("1", "true", "yes")


def containers_auth_file() -> str:
    """containers-auth.json(5)'s default, where `hermetic login` writes: `$XDG_RUNTIME_DIR/containers/auth.json`,
    without XDG_RUNTIME_DIR `/run/containers/0/auth.json` for root (as podman) and
    `$XDG_CONFIG_HOME/containers/auth.json` for other users."""
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "containers", "auth.json")
    if os.geteuid() == 0:
        return "/run/containers/0/auth.json"
    return os.path.join(os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"), "containers", "auth.json")


def _auth_files() -> list[str]:
    files = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(os.environ["REGISTRY_AUTH_FILE"])
    files.append(containers_auth_file())
    files.append(os.path.join(os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker"), "config.json"))
    return files


def _lookup(registry: str) -> tuple[str, tuple[str, str]] | None:
    keys = [registry, f"https://{registry}", f"http://{registry}"]
    if registry == "docker.io":
        keys += ["https://index.docker.io/v1/", "index.docker.io"]
    for path in _auth_files():
        try:
            with open(path) as f:
                auths = json.load(f).get("auths") or {}
        except (OSError, ValueError, AttributeError):
            continue
        for key in keys:
            entry = auths.get(key) or auths.get(key + "/")
            if isinstance(entry, dict) and entry.get("auth"):
                try:
                    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                except (ValueError, UnicodeError):
                    continue
                return path, (user, password)
    return None


def credentials(registry: str) -> tuple[str, str] | None:
    found = _lookup(registry)
    return found[1] if found else None


def credentials_source(registry: str) -> str:
    found = _lookup(registry)
    return found[0] if found else ""
