"""Processes as /proc tells: start times (a pid may be reused) and trees.

`gc` must not take a live process for a dead owner or the reverse, so an
owner is recorded as (pid, start time) and is alive only while both match.
"""

from __future__ import annotations

import os


def signal_name(number: int) -> str:
    """`SIGKILL` for 9; `signal 99` for a number with no name."""
    import signal  # here: its enums cost ~3 ms of start-up that a clean run never words

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def start_time(pid: int) -> int | None:
    """A process's start time in clock ticks after boot; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def owner() -> dict:
    """This process as an owner record, for state files."""
    owner_key()  # read once per process (and again after a fork)
    assert _key is not None
    return {"owner_pid": _key[0], "owner_start": _key[2]}


_key: tuple[int, str, int | None] | None = None


def owner_key() -> str:
    """`PID-START` of this process: put in the names of what it makes (staging,
    read-write layers, use records), so `gc` can tell from a name alone whether
    its maker still runs, with no window between making a thing and recording
    who owns it.  Asked again after a fork."""
    global _key
    pid = os.getpid()
    if _key is None or _key[0] != pid:
        start = start_time(pid)
        _key = (pid, f"{pid}-{start}", start)
    return _key[1]


def owned_name(prefix: str) -> str:
    """A fresh name that says its owner: `PREFIX` + `PID-START-RANDOM`."""
    return f"{prefix}{owner_key()}-{os.urandom(4).hex()}"


def name_owner(name: str) -> dict | None:
    """The owner record in a name made with `owner_key`/`owned_name`; None if it has none."""
    import re

    match = re.search(r"(?:^|[-.])(\d+)-(\d+)(?:-[0-9a-f]+)?(?:\.[a-z]+)?$", name)
    if match is None:
        return None
    return {"owner_pid": int(match.group(1)), "owner_start": int(match.group(2))}


def owner_alive(record: dict) -> bool:
    """Whether the owner recorded by `owner()` still runs (not a reused pid,
    not a zombie: a detached container's supervisor is reaped by whoever
    adopted it, which may take its time, and it owns nothing once it exited)."""
    pid = record.get("owner_pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0] != "Z" and int(fields[19]) == record.get("owner_start")
    except (OSError, IndexError, ValueError):
        return False


def started_before(pid: int, since: float) -> bool:
    """Whether process `pid` runs and started before the wall-clock time `since`."""
    ticks = start_time(pid)
    if ticks is None:
        return False
    try:
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, StopIteration, ValueError):
        return True
    return boot + ticks / os.sysconf("SC_CLK_TCK") <= since + 1


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (not `pid` itself), by parent links in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
