"""Errors the magics raise, as types a notebook can catch."""

from __future__ import annotations

import subprocess

from pytest_hermetic.errors import HermeticError


class ContainerCellError(subprocess.CalledProcessError):
    """A `%%container` cell (or `%container exec`) ended with a non-zero status.

    Like `%%script`'s `CalledProcessError`, with `reason`: the engine's words
    for why ("out of memory (limit 32 MiB, peak 32 MiB)", "timeout after
    2 s: killed 1 process (sleep)", "killed by signal SIGSEGV")."""

    def __init__(self, returncode: int, cmd: list[str], reason: str | None, output: str | None = None,
                 stderr: str | None = None) -> None:
        super().__init__(returncode, cmd, output, stderr)
        self.reason = reason

    def __str__(self) -> str:
        text = f"the container cell exited with status {self.returncode}"
        return f"{text}: {self.reason}" if self.reason else text

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of a traceback into the extension.
        return [f"{type(self).__name__}: {self}"]


class ContainerCellInterrupted(KeyboardInterrupt):
    """The kernel was interrupted while a cell ran: its processes were
    stopped (SIGINT, then SIGKILL after a grace); the kernel and any kept
    container live on."""

    def _render_traceback_(self) -> list[str]:
        return [f"KeyboardInterrupt: {self}"]


class HelperError(HermeticError):
    """The container helper died, did not answer in time, or could not start."""
