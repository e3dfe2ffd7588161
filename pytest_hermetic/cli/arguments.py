"""The command's argparse parser: every verb's, or just the given one's.

Kept apart from `cli/__init__.py` so that a `hermetic run` its quick parser
reads (`run.quick_arguments`) does not import argparse (with `re`, `gettext`
and `locale`: ~5 ms of its start)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import VERBS
from .output import PROG, say

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it costs start-up
    from typing import Any, NoReturn


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


def build(only: str | None = None) -> argparse.ArgumentParser:
    """The command's parser; with `only`, just that verb's (the one given)."""
    top = _Parser(prog=PROG, description="Hermetic containers from namespaces, cgroups and overlayfs; no daemon.")
    top.add_argument("--version", action="store_true", help="print the version and exit (`hermetic version`: more)")
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def verb(name: str, **kwargs: "Any") -> argparse.ArgumentParser:
        return sub.add_parser(name, **kwargs) if only in (None, name) else _Skipped()  # type: ignore[return-value]

    modules = [VERBS[only]] if only in VERBS else list(dict.fromkeys(VERBS.values()))
    for name in modules:
        importlib.import_module(f"{__package__}.{name}").add_parsers(verb)
    return top
