"""Container state folders by owner, for the tests' "nothing left behind" checks.

Under pytest-xdist every worker's containers come and go in the same state
folder, so a check that compares the whole folder before and after a test
fails whenever the other worker starts or removes one meanwhile.  A check
that looks only at the folders of the processes the test started (the
notebook helper, the kernel itself) sees every one of those, and nothing else.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection

from pytest_hermetic._proc import name_owner
from pytest_hermetic.state import containers_dir


def state_folders() -> dict[str, int | None]:
    """Every entry of the containers' state folder, also one being made
    (`.new-OWNER-ID`) or removed (`.del-OWNER-ID`), with the pid of its owner;
    None where none can be read (a broken state: everybody's, see `owned_by`)."""
    base = containers_dir()
    try:
        entries = os.listdir(base)
    except FileNotFoundError:
        return {}
    found: dict[str, int | None] = {}
    for entry in entries:
        record: dict | None
        if entry.startswith("."):
            record = name_owner(entry)
        else:
            try:
                with open(os.path.join(base, entry, "state.json")) as f:
                    record = json.load(f)
            except FileNotFoundError:
                if not os.path.isdir(os.path.join(base, entry)):
                    continue  # renamed to `.del-...` meanwhile: its owner is removing it
                record = None
            except (OSError, ValueError):
                record = None
        pid = record.get("owner_pid") if isinstance(record, dict) else None
        found[entry] = pid if isinstance(pid, int) else None
    return found


def owned_by(folders: dict[str, int | None], owners: Collection[int]) -> list[str]:
    """The entries of `folders` (from `state_folders`) that `owners` own, and
    those whose owner cannot be read (no test may leave such a one either)."""
    return sorted(entry for entry, pid in folders.items() if pid is None or pid in owners)
