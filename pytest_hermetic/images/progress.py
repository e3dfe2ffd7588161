"""A terminal progress display for pulls: one line per layer, redrawn in place.

Only used when stderr is a terminal; plain ANSI, no dependency, at most ten
redraws a second so a fast loopback pull is not slowed by its own display.
"""

from __future__ import annotations

import time
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO

_WIDTH = 30


class TerminalProgress:
    def __init__(self, stream: TextIO, title: str) -> None:
        self._stream = stream
        self._title = title
        self._layers: dict[str, tuple[int, int | None]] = {}
        self._drawn = 0  # lines on screen from the last draw
        self._last = 0.0
        self._start = time.monotonic()
        self._waiting = ""  # "waiting for HOST: ..." while a registry call has had no byte for a while

    def waiting(self, host: str, seconds: float) -> None:
        self._waiting = f"waiting for {host}: no answer for {seconds:.0f} s"
        self._draw()

    def update(self, label: str, done: int, total: int | None) -> None:
        self._layers[label] = (done, total)
        self._waiting = ""
        now = time.monotonic()
        if now - self._last >= 0.1 or (total is not None and done >= total):
            self._last = now
            self._draw()

    def _draw(self) -> None:
        lines = [f"pulling {self._title}"]
        for label, (done, total) in self._layers.items():
            if total:
                filled = int(_WIDTH * min(done, total) / total)
                bar = "#" * filled + "." * (_WIDTH - filled)
                state = "done" if done >= total else f"{_mb(done)}/{_mb(total)}"
                lines.append(f"  {label}  [{bar}] {state}")
            else:
                lines.append(f"  {label}  {_mb(done)}")
        if self._waiting:
            lines.append(f"  {self._waiting}")
        elif self._drawn > len(lines):  # the waiting line went: blank it
            lines.append("")
        out = ("\x1b[%dA" % self._drawn if self._drawn else "") + "".join(f"\r{line}\x1b[K\n" for line in lines)
        self._stream.write(out)
        self._stream.flush()
        self._drawn = len(lines)

    def close(self) -> None:
        self._waiting = ""
        if self._layers or self._drawn:
            self._draw()


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
