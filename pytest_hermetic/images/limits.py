"""How much one layer, and one image, may unpack to: decompression bombs and
sparse-file tricks are refused before they fill the store.

What counts is what extraction would write: every member's header and its
*apparent* size (a sparse member of 1 TiB counts 1 TiB however little of it
the tar holds).  The limits, checked member by member as the tar streams:

    one layer   HERMETIC_MAX_LAYER_SIZE, else 100 x its compressed size,
                at least 1 GiB and at most 64 GiB
    one image   HERMETIC_MAX_IMAGE_SIZE, else 100 x its compressed size,
                at least 4 GiB and at most 256 GiB (what one pull or
                import unpacks; layers already in the store are not counted)

Sizes take the units of `--mem` (`512M`, `2G`, `1.5T`, or bytes).
"""

from __future__ import annotations

import os
import re
import threading

from ..errors import LayerError, SpecError

RATIO = 100  # gzip of real files stays far below this; zeros reach ~1000
LAYER_FLOOR, LAYER_CAP = 1 << 30, 64 << 30
IMAGE_FLOOR, IMAGE_CAP = 4 << 30, 256 << 30
LAYER_ENV, IMAGE_ENV = "HERMETIC_MAX_LAYER_SIZE", "HERMETIC_MAX_IMAGE_SIZE"
_SIZE = re.compile(r"\s*(\d{1,20}(?:\.\d{1,20})?)\s*([kmgtp]?)(?:i?b)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


class Budget:
    """Bytes left to unpack; `charge` raises `LayerError` past the limit (and
    charges the image's budget too).  Thread-safe: layers unpack in parallel."""

    def __init__(self, limit: int, what: str, how: str, parent: Budget | None = None) -> None:
        self.limit, self.what, self.how, self.parent = limit, what, how, parent
        self.used = 0
        self._lock = threading.Lock()

    def charge(self, size: int, member: str) -> None:
        with self._lock:
            self.used += size
            over = self.used > self.limit
        if over:
            raise LayerError(f"{self.what} unpacks to more than {format_size(self.limit)} (at member {member[:80]!r}); "
                             f"the limit is {self.how}; refusing it as a decompression bomb, nothing was stored")
        if self.parent is not None:
            self.parent.charge(size, member)


def layer_budget(compressed: int | None, what: str, image: Budget | None = None) -> Budget:
    limit, how = _limit(LAYER_ENV, compressed, LAYER_FLOOR, LAYER_CAP, "one layer")
    return Budget(limit, what, how, image)


def image_budget(compressed: int | None, what: str) -> Budget:
    """The image's budget; also checks the layer setting, so a bad one fails before anything is fetched."""
    _limit(LAYER_ENV, None, LAYER_FLOOR, LAYER_CAP, "one layer")
    limit, how = _limit(IMAGE_ENV, compressed, IMAGE_FLOOR, IMAGE_CAP, "one image")
    return Budget(limit, what, how)


def _limit(env: str, compressed: int | None, floor: int, cap: int, scope: str) -> tuple[int, str]:
    text = os.environ.get(env, "").strip()
    if text:
        match = _SIZE.fullmatch(text)
        size = int(float(match.group(1)) * _UNITS[match.group(2).lower()]) if match else 0
        if size <= 0:
            raise SpecError(f"{env}={text[:40]!r}: not a size; use bytes or a number with a unit, e.g. 2G")
        return size, f"{format_size(size)} for {scope} ({env})"
    if compressed is None:
        return cap, f"{format_size(cap)} for {scope}; set {env} to change it"
    size = min(max(RATIO * compressed, floor), cap)
    return size, (f"{format_size(size)} for {scope} ({RATIO} x its compressed size, at least {format_size(floor)}, "
                  f"at most {format_size(cap)}); set {env} to change it")


def format_size(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            return f"{size / (1 << shift):.4g} {unit}"
    return f"{size} B"
