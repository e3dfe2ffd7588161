"""Image references: Docker-style names and skopeo-style transports.

`ubuntu` means `docker.io/library/ubuntu:latest`, as it does for Docker;
`localhost:5000/app:1` names a registry; `name@sha256:...` pins a digest.
Transports name where an image comes from instead: `oci:DIR[:TAG]`,
`docker-archive:FILE`, `dir:DIR` (a rootfs folder), `tar:FILE` (a rootfs
tarball), `busybox:` or `busybox:/PATH` (a tiny image from a static busybox
binary; `busybox:TAG` is Docker Hub's busybox).
`host` is the host's own root.
"""

from __future__ import annotations

from .._record import record

from ..errors import ImageReferenceError

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
TRANSPORTS = ("oci", "docker-archive", "dir", "tar", "busybox")

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
# Patterns, compiled on first use by re's own cache: compiling all four at
# import cost ~1 ms of every `hermetic run`, which for `host` uses none.
_REPOSITORY = rf"^{_COMPONENT}(?:/{_COMPONENT})*$"
_DOMAIN = r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?$|^\[[0-9a-fA-F:]+\](?::[0-9]+)?$"
_TAG = r"^[\w][\w.-]{0,127}$"
_DIGEST = r"^sha256:[0-9a-f]{64}$"


@record(frozen=True)
class Reference:
    """A parsed reference.  `transport` is "registry", "host" or a transport name."""

    transport: str
    registry: str = ""
    repository: str = ""
    tag: str | None = None
    digest: str | None = None
    path: str = ""  # for transports

    @property
    def name(self) -> str:
        """The canonical name the local store files the image under."""
        if self.transport == "host":
            return "host"
        if self.transport != "registry":
            return f"{self.transport}:{self.path}" + (f":{self.tag}" if self.tag else "")
        base = f"{self.registry}/{self.repository}"
        if self.digest:
            return f"{base}@{self.digest}"
        return f"{base}:{self.tag or DEFAULT_TAG}"

    @property
    def familiar(self) -> str:
        """The short form people type (`busybox:1`, not `docker.io/library/busybox:1`)."""
        if self.transport != "registry":
            return self.name
        repository = self.repository
        if self.registry == DEFAULT_REGISTRY:
            prefix = ""
            if repository.startswith("library/"):
                repository = repository[len("library/"):]
        else:
            prefix = self.registry + "/"
        suffix = f"@{self.digest}" if self.digest else f":{self.tag or DEFAULT_TAG}"
        return prefix + repository + suffix

    def __str__(self) -> str:
        return self.familiar


def parse(text: str) -> Reference:
    """Parse a reference; raise `ImageReferenceError` saying what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ImageReferenceError("empty image reference; use e.g. 'host', 'busybox:1', 'dir:/path/to/rootfs'")
    text = text.strip()
    if text == "host":
        return Reference("host")
    transport, sep, rest = text.partition(":")
    if sep and transport in TRANSPORTS and (transport != "busybox" or not rest or rest.startswith("/")):
        # `busybox:1` is Docker Hub's busybox; `busybox:` and `busybox:/PATH` the transport
        return _parse_transport(transport, rest, text)
    return _parse_docker(text)


def _parse_transport(transport: str, rest: str, text: str) -> Reference:
    if not rest and transport != "busybox":  # `busybox:` alone: the host's busybox
        raise ImageReferenceError(f"{text!r}: {transport}: needs a path, e.g. {transport}:/path")
    tag = None
    if transport == "docker-archive" and ":" in rest:
        path, _, tag = rest.partition(":")  # as skopeo: the REF (name:tag) may hold ':' itself, the path may not
    elif transport == "oci" and ":" in rest:
        path, _, tag = rest.rpartition(":")
        if not path:
            path, tag = rest, None
    else:
        path = rest
    return Reference(transport, path=path, tag=tag or None)


def _parse_docker(text: str) -> Reference:
    import re  # here: `re` (and its enums) is ~2 ms of the start of a `hermetic run host`, which needs none

    remainder, digest = text, None
    if "@" in remainder:
        remainder, _, digest = remainder.partition("@")
        if not re.fullmatch(_DIGEST, digest):
            raise ImageReferenceError(f"{text!r}: bad digest {digest!r}; expected sha256: and 64 hex digits")
    tag = None
    slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > slash:
        remainder, tag = remainder[:colon], remainder[colon + 1:]
        if not re.fullmatch(_TAG, tag):
            raise ImageReferenceError(f"{text!r}: bad tag {tag!r}; tags are letters, digits, '_', '.', '-' (at most 128)")
    first, sep, after = remainder.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, after
        if not re.fullmatch(_DOMAIN, registry):
            raise ImageReferenceError(f"{text!r}: bad registry {registry!r}")
    else:
        registry, repository = DEFAULT_REGISTRY, remainder
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = f"library/{repository}"
    if not re.fullmatch(_REPOSITORY, repository):
        hint = " (repository names must be lowercase)" if repository.lower() != repository else ""
        raise ImageReferenceError(
            f"{text!r}: not a valid image reference{hint}; use NAME[:TAG] such as 'busybox:1', "
            "'localhost:5000/app:1', or a transport such as 'dir:/path'"
        )
    if len(repository) > 255:
        raise ImageReferenceError(f"{text!r}: repository name longer than 255 characters")
    return Reference("registry", registry=registry, repository=repository, tag=tag, digest=digest)
