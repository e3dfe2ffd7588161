"""Progress of pulls: a terminal display, one line per layer, redrawn in place;
and the watch that says "waiting for HOST" when a registry call has had no
byte for a second (on the display, or as a line on a stderr that is no terminal).

The display is only used when stderr is a terminal; plain ANSI, no dependency,
at most ten redraws a second so a fast loopback pull is not slowed by its own display.
"""

from __future__ import annotations

import sys
import threading
import time
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, TextIO

from ..errors import RegistryError
from .connections import TIMEOUT_ENV, timeouts, waiting

WAIT_NOTICE = 1.0  # seconds without a byte before the progress output says "waiting for HOST"

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


class Watch:
    """Calls `report(host, seconds)` four times a second while a registry call has had no byte for WAIT_NOTICE s."""

    def __init__(self, report: Callable[[str, float], None], lock: threading.Lock) -> None:
        self._report = report
        self._lock = lock
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hermetic-pull-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.25):
            found = waiting()
            if found is not None and found[1] >= WAIT_NOTICE:
                with self._lock:
                    if not self._done.is_set():
                        self._report(*found)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


class WaitingLines:
    """`waiting` for a stderr that is no terminal: one line when a wait starts, another each 10 s it goes on."""

    def __init__(self) -> None:
        self._told: tuple[str, float] | None = None
        try:
            self._limit = f"; gives up after {timeouts()[1]:g} s ({TIMEOUT_ENV})"
        except RegistryError:
            self._limit = ""

    def __call__(self, host: str, seconds: float) -> None:
        if self._told is not None and self._told[0] == host and self._told[1] <= seconds < self._told[1] + 10:
            return
        self._told = (host, seconds)
        print(f"hermetic: waiting for {host}: no answer for {seconds:.0f} s{self._limit}", file=sys.stderr, flush=True)
