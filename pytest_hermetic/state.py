"""Container state folders: where they live, how they are named, what they say.

`STATE/containers/<id>/` holds a tracked container's `state.json` (who owns
it, its cgroups, its read-write layer, its network) and its scratch mount
point.  A folder is made under `.new-OWNER-<id>` and removed under
`.del-OWNER-<id>`, so `gc` never finds one that does not say whose it is.
`list_states` is what `hermetic ps`, `%container ps`, `hermetic commit` and
`gc` read.
"""

from __future__ import annotations

import os

from ._proc import owner_alive, owner_key
from .paths import state_root
from .runtime import cgroups


def containers_dir() -> str:
    return os.path.join(state_root(), "containers")


def staging_dir(container_id: str) -> str:
    """Where a state folder is made, named for its owner (this process)."""
    return os.path.join(containers_dir(), f".new-{owner_key()}-{container_id}")


def doomed_dir(container_id: str) -> str:
    """Where a state folder goes to be deleted, out of `ps`'s and gc's sight."""
    return os.path.join(containers_dir(), f".del-{owner_key()}-{container_id}")


def write_state(folder: str, data: dict) -> None:
    """`folder/state.json`, replaced whole (a reader never sees half of it)."""
    tmp = os.path.join(folder, "state.json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        text = memoryview(json_text(data).encode())  # (open() would add 4 syscalls)
        while text:
            text = text[os.write(fd, text):]
    finally:
        os.close(fd)
    os.replace(tmp, os.path.join(folder, "state.json"))


class _Unusual(Exception):
    """A value `json_text` leaves to json."""


def json_text(data: dict) -> str:
    """`json.dumps(data)`, without importing json for the plain values a
    state holds (printable ASCII strings without quotes or backslashes,
    ints, finite floats, booleans, None, lists and string-keyed dicts of
    them): json brings re and its enums, ~3 ms of a `hermetic run`.
    Anything else goes through json itself."""
    try:
        return _plain(data)
    except _Unusual:
        import json

        return json.dumps(data)


def _plain(value: object) -> str:
    if isinstance(value, str):
        if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
            return f'"{value}"'
    elif value is None:
        return "null"
    elif value is True or value is False:
        return "true" if value else "false"
    elif isinstance(value, int):
        return int.__repr__(value)
    elif isinstance(value, float):
        if value - value == 0:  # not inf or nan, which json spells its own way
            return float.__repr__(value)
    elif isinstance(value, (list, tuple)):
        return "[" + ", ".join(_plain(item) for item in value) + "]"
    elif isinstance(value, dict):
        if all(isinstance(key, str) for key in value):
            return "{" + ", ".join(f"{_plain(key)}: {_plain(item)}" for key, item in value.items()) + "}"
    raise _Unusual


def list_states() -> list[dict]:
    """Every container state folder, with `alive` telling if its owner runs."""
    import json  # lazily: see json_text

    result: list[dict] = []
    base = containers_dir()
    try:
        entries = os.listdir(base)
    except FileNotFoundError:
        return result
    for entry in sorted(entries):
        if entry.startswith("."):
            continue  # being made or removed (see Container._make_state_dir and remove)
        path = os.path.join(base, entry, "state.json")
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError):
            if not os.path.isdir(os.path.join(base, entry)):
                continue
            data = {"id": entry, "name": entry[:12]}  # an older version's, or broken: nobody's
        data["alive"] = owner_alive(data)
        groups = data.get("cgroup") or []
        data["pids"] = cgroups.read_pids(f"{groups[0]}/cgroup.procs") if groups else []
        data["state_dir"] = os.path.join(base, entry)
        result.append(data)
    return result
