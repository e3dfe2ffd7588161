"""v1 freezer: stop every task so that a kill cannot race a fork."""

from __future__ import annotations

import time

from .. import read_text, write


def freeze(path: str, timeout: float = 1.0) -> bool:
    try:
        write(f"{path}/freezer.state", "FROZEN")
    except OSError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if read_text(f"{path}/freezer.state").strip() == "FROZEN":
            return True
        time.sleep(0.001)
    return False


def thaw(path: str) -> None:
    try:
        write(f"{path}/freezer.state", "THAWED")
    except OSError:
        pass
