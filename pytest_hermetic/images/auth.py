"""`hermetic login` and `logout`: credentials in the auth.json that pulls read.

The file is containers-auth.json(5) (what `podman login` and `skopeo login`
write, `docker login`'s `auths` too): `{"auths": {"REGISTRY": {"auth":
base64("user:password")}}}`.  It is `$REGISTRY_AUTH_FILE` when set, else
`config.containers_auth_file()`.  Other keys and entries are kept; the file
is replaced whole (a temporary file renamed over it) with mode 0600, in a
folder made 0700, under a flock of that folder: two logins at once must not
lose each other's entry.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os

from ..errors import RegistryError
from . import config

_HUB_NAMES = ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")


def registry_key(text: str) -> str:
    """`https://index.docker.io/v1/` -> `docker.io`; `http://reg.lan:5000/` -> `reg.lan:5000`."""
    host = text.strip()
    for scheme in ("https://", "http://"):
        if host.startswith(scheme):
            host = host[len(scheme):]
    host = host.rstrip("/")
    if host.endswith("/v1") or host.endswith("/v2"):
        host = host[:-3]
    if host in _HUB_NAMES:
        return "docker.io"
    if not host or "/" in host or any(c.isspace() for c in host):
        raise RegistryError(f"{text!r} is not a registry: give HOST[:PORT] (e.g. docker.io, 127.0.0.1:5000)")
    return host


def auth_file(path: str | None = None) -> str:
    return path or os.environ.get("REGISTRY_AUTH_FILE") or config.containers_auth_file()


def _read(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(1 << 20) or b"{}")
    except FileNotFoundError:
        return {}
    except (ValueError, OSError) as exc:
        raise RegistryError(f"{path}: not a readable auth.json ({exc}); fix or remove it") from None
    if not isinstance(data, dict) or not isinstance(data.get("auths", {}), dict):
        raise RegistryError(f"{path}: not an auth.json (no \"auths\" object); fix or remove it")
    return data


def _write(path: str, data: dict) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            json.dump(data, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


@contextlib.contextmanager
def _locked(path: str):  # noqa: ANN202
    """The read-modify-write of `path`, one process at a time."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the folder: no lock file beside the file
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def save_login(registry: str, user: str, password: str, path: str | None = None) -> str:
    """Record `user:password` for `registry` (a key from `registry_key`); returns the file written."""
    path = auth_file(path)
    with _locked(path):
        data = _read(path)
        auths = data.setdefault("auths", {})
        for key in (f"https://{registry}", f"http://{registry}"):
            auths.pop(key, None)  # an older entry under a URL key would be found first by some readers
        auths[registry] = {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
        _write(path, data)
    return path


def remove_login(registry: str, path: str | None = None) -> tuple[bool, str]:
    """Drop `registry`'s entries; (whether there was one, the file)."""
    path = auth_file(path)
    keys = [registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/", f"http://{registry}/"]
    if registry == "docker.io":
        keys += ["https://index.docker.io/v1/", "index.docker.io"]
    with _locked(path):
        data = _read(path)
        auths = data.get("auths") or {}
        found = [key for key in keys if key in auths]
        for key in found:
            del auths[key]
        if found:
            _write(path, data)
    return bool(found), path
