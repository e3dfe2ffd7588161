"""What a failed step of a container's start says: the words both children
use (init.py's Python child raises them, native_child.py's plan words its
C child's errno with them), so a failure reads the same either way."""

from __future__ import annotations

import errno
import os

from ..errors import ContainerStartError, SeccompError, SyscallError
from .channel import describe


def keyring(err: int) -> BaseException:
    """The container gets no session keyring of its own (errno `err`)."""
    if err == errno.EDQUOT:
        return ContainerStartError("cannot give the container a session keyring of its own: this user's key "
                                   "quota is full (each running container holds one key); fix: raise "
                                   "kernel.keys.maxkeys and kernel.keys.maxbytes with sysctl")
    return SyscallError("keyctl", err, "join a new session keyring")


def workdir(cwd: str, reason: str, made: bool) -> ContainerStartError:
    """The working directory cannot be entered (`made`: nor made, missing)."""
    if made:
        return ContainerStartError(f"workdir {cwd} is not in the image and cannot be made there ({reason}); "
                                   "use a directory of the image")
    return ContainerStartError(f"workdir {cwd}: {reason}; use a directory of the image, or one it can hold")


def exec_failure(command: str, env: dict[str, str], exc: BaseException) -> tuple[int, str]:
    """The exit code and line of an exec that failed with `exc`."""
    if isinstance(exc, FileNotFoundError):
        return 127, f"{command}: command not found in the container (PATH={env.get('PATH', '')})"
    if isinstance(exc, PermissionError):
        return 126, f"{command}: permission denied (not executable)"
    if isinstance(exc, OSError):
        return 126, f"{command}: cannot execute: {exc.strerror}"
    return 125, f"{command}: cannot execute: {describe(exc)}"


def seccomp_load(err: int) -> SeccompError:
    """The seccomp filter did not load (errno `err`)."""
    return SeccompError(f"cannot load the seccomp filter: {os.strerror(err)}; "
                        "fix: run with seccomp=False (--security-opt seccomp=unconfined)")
