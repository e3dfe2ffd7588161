"""Errors the engine raises: one type per kind of failure, each with a message
that names the problem and, where there is one, the fix.

The command line turns any `HermeticError` into one line on stderr and exit
status 125 (127 for `CommandNotFound`), as `docker run` does.
"""

from __future__ import annotations


class HermeticError(Exception):
    """Base of every error the engine raises on purpose."""

    exit_code = 125


class SpecError(HermeticError, ValueError):
    """An option has a value the engine cannot use (a size like ``lots``)."""


class ImageReferenceError(HermeticError, ValueError):
    """An image reference cannot be parsed."""


class ImageNotFound(HermeticError, LookupError):
    """The image is not in the local store (and cannot be fetched)."""


class ContainerNotFound(HermeticError, LookupError):
    """No container of that name or id exists."""


class LayerError(HermeticError):
    """A layer tarball is corrupt or hostile (path traversal, link escapes)."""


class StoreError(HermeticError):
    """The content-addressed store is inconsistent or cannot be written."""


class ImageInUse(StoreError):
    """`rmi` of an image a live container runs on (without force)."""


class SyscallError(HermeticError, OSError):
    """A system call failed; the message names the call and the errno."""

    def __init__(self, call: str, errno_: int, detail: str = "") -> None:
        import os

        text = f"{call}: {os.strerror(errno_)} (errno {errno_})"
        if detail:
            text += f": {detail}"
        super().__init__(text)
        # After OSError.__init__, which would reset errno from a 1-arg call.
        self.call = call
        self.errno = errno_

    def __str__(self) -> str:  # OSError's own __str__ would print a tuple
        return self.args[0]


class NetworkError(HermeticError):
    """A network cannot be made, found or joined."""


class CgroupUnavailable(HermeticError):
    """A limit was asked for but the cgroup controller is not writable here."""


class ContainerStartError(HermeticError):
    """The container could not be set up (mounts, namespaces, cgroups)."""


class SeccompError(ContainerStartError):
    """The seccomp filter cannot be built or loaded here."""


class CommandNotFound(ContainerStartError):
    """The command to run does not exist in the container's root."""

    exit_code = 127


class CommandNotExecutable(ContainerStartError):
    """The command exists but cannot be executed."""

    exit_code = 126


class RegistryError(HermeticError):
    """A registry answered something the engine cannot use, or not at all."""


class RegistryUnreachable(RegistryError):
    """No connection to the registry (refused, DNS, TLS, timeout).

    `reason` is the cause alone (`connection refused`); `plain_http` says the
    failure looks like TLS spoken to a plain-HTTP server."""

    def __init__(self, message: str, *, reason: str = "", plain_http: bool = False) -> None:
        super().__init__(message)
        self.reason = reason or message
        self.plain_http = plain_http


class RegistryTimeout(RegistryUnreachable):
    """The registry (or its token service) did not answer within the configured time."""


class RegistryAuthError(RegistryError):
    """The registry refused the credentials, or asked for some and there are none."""


class ContentError(HermeticError):
    """Image content is not what names it: a blob, manifest, config or layer tar,
    from a registry or a local archive."""


class DigestMismatch(ContentError):
    """Content does not hash to (or is not the size of) the digest that named it."""


class RegistryDigestMismatch(DigestMismatch, RegistryError):
    """A registry sent content that does not hash to the digest that named it
    (an `except RegistryError` catches it too)."""


class BuildError(HermeticError):
    """A Containerfile cannot be built: a bad instruction, a missing COPY
    source, a failing RUN.  `output` holds the tail of the failing step's
    output (empty where there was none); nothing was tagged."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output
