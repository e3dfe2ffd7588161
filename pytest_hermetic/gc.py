"""What killed runs left behind: containers of dead owners and their cgroups.

Only what is provably dead goes: its owner (pid and start time, from a
state file or from a name) no longer runs.  The store's leftovers (read-write
layers, use records, staging) are `Store.gc`'s, the networks' are
`networks.gc_networks`'s; `hermetic gc` runs all three.
"""

from __future__ import annotations

import contextlib
import os

from ._fs import rmtree
from ._proc import name_owner, owner_alive, started_before
from .runtime import cgroups
from .state import containers_dir, list_states


def clear_dead(state: dict) -> None:
    """Remove what a container of a dead owner left (a `list_states` entry):
    its cgroup (killing stragglers), its read-write layer, its state folder."""
    for path in state.get("cgroup") or []:
        remove_cgroup_dir(path)
    if state.get("rw_dir") and os.path.isdir(state["rw_dir"]):
        rmtree(state["rw_dir"])
    rmtree(state["state_dir"])


def gc_containers() -> list[str]:
    """Remove what killed runs left: state folders of dead owners, their
    cgroups and rw layers, and `hermetic-*` cgroups of dead owners.  Only
    what is provably dead: its owner (pid and start time) is gone.  The rw
    layers and use records in the store are the store's gc's (named for
    their owners, whatever state folder those used)."""
    removed = []
    live_ids = set()
    base = containers_dir()
    for entry in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        owner_record = name_owner(entry) if entry.startswith((".new-", ".del-")) else None
        if owner_record is not None and not owner_alive(owner_record):
            with contextlib.suppress(FileNotFoundError):  # (another gc at the same time)
                rmtree(os.path.join(base, entry))  # its owner died while making or removing it
    for data in list_states():
        if data["alive"]:
            live_ids.add(data["id"])
            continue
        try:
            clear_dead(data)
        except FileNotFoundError:
            continue  # another gc at the same time
        removed.append(f"container {data['id'][:12]} ({data.get('name')})")
    short_live = {i[:12] for i in live_ids}
    for path in hermetic_cgroups():
        short, _, owner_pid = os.path.basename(path)[len(cgroups.PREFIX):].partition("-")
        if short in short_live:
            continue
        # Not ours to judge if something runs in it (another state root, another
        # user), or if its owner (pid in the name; started before the cgroup,
        # so not a reused pid) still runs: a container being started or kept.
        try:
            if cgroups.read_pids(f"{path}/cgroup.procs"):
                continue
            if not owner_pid.isdigit() or started_before(int(owner_pid), os.stat(path).st_mtime):
                continue
            cgroups.rmdir_retry(path)
        except OSError:
            continue
        removed.append(f"cgroup {path}")
    return removed


def remove_cgroup_dir(path: str) -> None:
    """Kill everything in the cgroup folder `path`, then remove it (if it is there)."""
    if not os.path.isdir(path):
        return
    procs = f"{path}/cgroup.procs"
    if os.path.exists(f"{path}/cgroup.kill"):
        try:
            cgroups.write(f"{path}/cgroup.kill", 1)
        except OSError:
            pass
    cgroups.kill_until_empty(procs)
    try:
        cgroups.rmdir_retry(path)
    except OSError:
        pass


def hermetic_cgroups() -> list[str]:
    """Every `hermetic-*` cgroup folder below the parents this process uses."""
    hierarchy = cgroups.detect()
    parents = []
    if hierarchy.version == "v2" and hierarchy.unified:
        parents.append(hierarchy.unified + cgroups.parent_path(hierarchy, "").rstrip("/"))
    for controller, mount_point in hierarchy.v1.items():
        parents.append(mount_point + cgroups.parent_path(hierarchy, controller).rstrip("/"))
    found = []
    for parent in sorted(set(parents)):
        try:
            for entry in os.listdir(parent):
                if entry.startswith(cgroups.PREFIX) and os.path.isdir(os.path.join(parent, entry)):
                    found.append(os.path.join(parent, entry))
        except OSError:
            continue
    return found
