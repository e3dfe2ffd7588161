"""The `hermetic` command (also `python -m pytest_hermetic`).

Exit statuses follow `docker run`: the command's own status; 125 when the
engine fails (bad option, unknown image); 126/127 when the command cannot be
run or found; 137 when the container was killed (out of memory, timeout).
Every engine failure is one line on stderr, never a traceback.

One module per family of verbs (`run`, `images`, `containers`, `system`),
each with `add_parsers(verb)` and one short `cmd_<verb>` per verb that turns
arguments into calls of the engine and its answers into lines; the work is
elsewhere (containers' lifecycle in `detached.py`, images in `images/`).
Only the module of the verb given is imported, and the engine's modules are
imported inside the commands: `hermetic run` should not pay for what
`hermetic images` needs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..errors import HermeticError
from .output import PROG, say

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it costs start-up
    from typing import Any, Callable, NoReturn, Sequence

    Verb = Callable[..., argparse.ArgumentParser]

# Each verb and the module (in this package) that adds its parser and runs it.
VERBS = {
    "run": "run",
    "build": "build",
    "images": "images", "pull": "images", "push": "images", "save": "images", "import": "images",
    "commit": "images", "rmi": "images", "tag": "images", "login": "images", "logout": "images",
    "ps": "containers", "logs": "containers", "exec": "containers", "stop": "containers", "kill": "containers",
    "rm": "containers", "inspect": "containers", "wait": "containers", "top": "containers", "stats": "containers",
    "port": "containers",
    "gc": "system", "network": "system", "doctor": "system", "version": "system",
    "completion": "completion", "__complete": "completion",
}


class _Parser(argparse.ArgumentParser):
    """Usage errors are engine errors: one line and exit 125, as `docker run` (argparse says 2)."""

    def error(self, message: str) -> "NoReturn":
        say(f"error: {message}; see `{self.prog} --help`")
        sys.exit(125)

    _width: int | None = None

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse makes one for each add_argument (to check its metavar),
        # and each asks the terminal's size: once per process is enough
        # (about 4 µs an option, 0.13 ms of `hermetic run`'s start); and not
        # through shutil, whose import brings bz2, lzma and fnmatch (~2.5 ms).
        if _Parser._width is None:
            _Parser._width = _columns() - 2  # HelpFormatter's own default
        return self.formatter_class(prog=self.prog, width=_Parser._width)  # type: ignore[call-arg]  # HelpFormatter's


def _columns() -> int:
    """The terminal's width as shutil.get_terminal_size says it (COLUMNS, then stdout's terminal, then 80)."""
    try:
        columns = int(os.environ.get("COLUMNS", 0))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Skipped:
    """A verb's parser that is not built: `hermetic run` should not pay for
    the other verbs' arguments (about 1 ms of argparse for all of them)."""

    required = True

    def __getattr__(self, _name: str) -> "object":
        return lambda *args, **kwargs: self


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command's parser; with `only`, just that verb's (the one given)."""
    top = _Parser(prog=PROG, description="Hermetic containers from namespaces, cgroups and overlayfs; no daemon.")
    top.add_argument("--version", action="store_true", help="print the version and exit (`hermetic version`: more)")
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def verb(name: str, **kwargs: "Any") -> argparse.ArgumentParser:
        return sub.add_parser(name, **kwargs) if only in (None, name) else _Skipped()  # type: ignore[return-value]

    modules = [VERBS[only]] if only in VERBS else list(dict.fromkeys(VERBS.values()))
    for name in modules:
        importlib.import_module(f"{__name__}.{name}").add_parsers(verb)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["--version"], ["-v"]):
        from .system import version_line

        print(version_line())
        return 0
    args = parser(argv[0] if argv and argv[0] in VERBS else None).parse_args(argv)
    try:
        return args.handler(args)
    except HermeticError as exc:
        say(f"error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `hermetic images | head`: the reader left; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        say(f"error: {exc}")
        return 125
    except Exception as exc:  # a bug: still one line, the traceback on demand
        if os.environ.get("HERMETIC_DEBUG"):
            raise
        say(f"error: internal error ({type(exc).__name__}: {exc}); this is a bug: please report it with the "
            "traceback that HERMETIC_DEBUG=1 shows")
        return 125
