"""Tables and pull progress: HTML in a notebook, text in a terminal.

Every display carries a text/plain fallback, so a terminal IPython, a
notebook saved without HTML, or nbconvert to text still reads well.
"""

from __future__ import annotations

import html
import sys
import time
from typing import Sequence


def table_text(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def table_html(rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td style='text-align:left'><code>{html.escape(c)}</code></td>" for c in row)
                   + "</tr>" for row in rows[1:])
    if len(rows) == 1:
        body = f"<tr><td colspan='{len(rows[0])}'><em>none</em></td></tr>"
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def show_table(rows: Sequence[Sequence[str]]) -> None:
    from IPython.display import display

    display({"text/plain": table_text(rows), "text/html": table_html(rows)}, raw=True)


def human(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


class PullProgress:
    """`progress(label, done_bytes, total_or_None)` for `pull()`: one line or
    bar per layer, updated in place (a display handle in a notebook, `\\r`
    in a terminal) at most every 0.2 s."""

    INTERVAL = 0.2

    def __init__(self, reference: str, notebook: bool) -> None:
        self.reference = reference
        self.notebook = notebook
        self.items: dict[str, tuple[int, int | None]] = {}
        self.last = 0.0
        self.handle = None

    def __call__(self, label: str, done: int, total: int | None) -> None:
        self.items[label] = (done, total)
        now = time.monotonic()
        if now - self.last >= self.INTERVAL or (total is not None and done >= total):
            self.last = now
            self._show()

    def _text(self) -> str:
        lines = [f"pulling {self.reference}"]
        for label, (done, total) in self.items.items():
            if total:
                lines.append(f"  {label}: {human(done)} / {human(total)} ({100 * done // max(total, 1)}%)")
            else:
                lines.append(f"  {label}: {human(done)}")
        return "\n".join(lines)

    def _html(self) -> str:
        rows = []
        for label, (done, total) in self.items.items():
            bar = f"<progress value='{done}' max='{total}'></progress>" if total else "<progress></progress>"
            size = f"{human(done)} / {human(total)}" if total else human(done)
            rows.append(f"<tr><td><code>{html.escape(label)}</code></td><td>{bar}</td><td>{size}</td></tr>")
        return f"<div>pulling <code>{html.escape(self.reference)}</code></div><table>{''.join(rows)}</table>"

    def _show(self) -> None:
        if self.notebook:
            from IPython.display import display

            bundle = {"text/plain": self._text(), "text/html": self._html()}
            if self.handle is None:
                self.handle = display(bundle, raw=True, display_id=True)
            else:
                self.handle.update(bundle, raw=True)
        else:
            done = sum(d for d, _ in self.items.values())
            known = [t for _, t in self.items.values() if t]
            total = f" / {human(sum(known))}" if len(known) == len(self.items) else ""
            sys.stdout.write(f"\rpulling {self.reference}: {len(self.items)} blob(s), {human(done)}{total}   ")
            sys.stdout.flush()

    def close(self) -> None:
        self._show()
        if not self.notebook:
            sys.stdout.write("\n")
            sys.stdout.flush()
