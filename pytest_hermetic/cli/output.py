"""How the command speaks: one-line messages on stderr, tables and human
sizes and ages on stdout."""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Sequence

PROG = "hermetic"
MAX_LINE = 400  # an error line names the problem; it does not repeat a megabyte of input


def say(text: str) -> None:
    """One line on stderr, prefixed with the command's name, cut to MAX_LINE."""
    text = " ".join(text.split("\n"))
    if len(text) > MAX_LINE:
        text = text[:MAX_LINE - 40] + f"... ({len(text)} characters)"
    print(f"{PROG}: {text}", file=sys.stderr, flush=True)


def table(rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell, as `docker ps` prints them."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def human(size: float) -> str:
    """A size in decimal units, as `docker images` shows it."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def ago(seconds: float) -> str:
    """An age as `docker ps` words it."""
    for unit, span in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= span:
            return f"{int(seconds // span)} {unit} ago"
    return "just now"


def output_format(value: str) -> str:
    """`--format`'s type: `json` (one JSON document) or `table` (the default); Go templates are not supported."""
    import argparse

    if value not in ("json", "table"):
        raise argparse.ArgumentTypeError(f"{value!r}: use json or table (Go templates are not supported)")
    return value


def print_json(data: object) -> None:
    import json

    print(json.dumps(data, indent=2))
