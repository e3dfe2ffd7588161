"""cgroup v1 (and the v1 half of a hybrid host): one directory per
controller hierarchy, each made beneath the cgroup this process sits in."""

from __future__ import annotations

import os

from ....errors import CgroupUnavailable
from .. import CONTROLLER_FOR, Cgroup, Hierarchy, Limits, Stats, kill_frozen, kill_until_empty, not_writable, parent_path, read_pids, rmdir_retry
from . import cpu, freezer, memory, pids


def _wanted_controllers(limits: Limits) -> list[str]:
    """Each v1 hierarchy costs a mkdir, a migration and an rmdir per
    container, so only what is used: pids (the fuse) and freezer (kill
    without racing forks) always; memory and cpuacct for peak memory and CPU
    time (`accounting`) or a memory limit; cpu for a CPU limit."""
    wanted = ["pids", "freezer"]
    if limits.accounting or limits.mem is not None:
        wanted.append("memory")
    if limits.accounting or limits.cpus is not None:
        wanted.append("cpuacct")
    if limits.cpus is not None:
        wanted.append("cpu")
    return wanted


class V1Cgroup(Cgroup):
    version = "v1"

    def __init__(self, dirs: dict[str, str]) -> None:
        self.dirs = dirs  # controller -> absolute directory

    @classmethod
    def create(cls, hierarchy: Hierarchy, name: str, limits: Limits, fuse: int | None = None) -> "V1Cgroup":
        for limit in limits.requested():
            if CONTROLLER_FOR[limit] not in hierarchy.v1:
                raise CgroupUnavailable(
                    f"{limit} limit needs the cgroup v1 '{CONTROLLER_FOR[limit]}' controller, which is not mounted; "
                    "fix: mount it, or drop the limit"
                )
        if not any(os.access(mount_point + parent_path(hierarchy, c), os.W_OK) for c, mount_point in hierarchy.v1.items()):
            limit = (limits.requested() or ["pids"])[0]
            controller = CONTROLLER_FOR[limit]
            mount_point = hierarchy.v1.get(controller, "/sys/fs/cgroup")
            raise not_writable(mount_point + parent_path(hierarchy, controller), limit)
        dirs: dict[str, str] = {}
        seen_mounts: set[str] = set()
        try:
            for controller in _wanted_controllers(limits):
                mounted = hierarchy.v1.get(controller)
                if mounted is None:
                    continue
                if mounted in seen_mounts:  # co-mounted controllers (cpu,cpuacct) share a directory
                    dirs[controller] = next(d for c, d in dirs.items() if hierarchy.v1[c] == mounted)
                    continue
                seen_mounts.add(mounted)
                parent = mounted + parent_path(hierarchy, controller).rstrip("/")
                path = f"{parent}/{name}"
                try:
                    os.mkdir(path)
                except PermissionError:
                    wanted = [limit for limit in limits.requested() if CONTROLLER_FOR[limit] == controller]
                    if wanted:
                        raise not_writable(parent, wanted[0]) from None
                    continue
                dirs[controller] = path
            group = cls(dirs)
            memory.apply(dirs.get("memory"), limits.mem)
            cpu.apply(dirs.get("cpu"), limits.cpus)
            pids.apply(dirs.get("pids"), limits.pids if limits.pids is not None else fuse)
        except BaseException:
            cls(dirs).remove()
            raise
        return group

    def directories(self) -> list[str]:
        """Every directory, the one holding the pids controller first."""
        first = [self.dirs["pids"]] if "pids" in self.dirs else []
        return first + [d for d in sorted(set(self.dirs.values())) if d not in first]

    def join_paths(self) -> list[str]:
        return [f"{d}/cgroup.procs" for d in sorted(set(self.dirs.values()))]

    def _procs_file(self) -> str | None:
        for controller in ("freezer", "pids", "memory", "cpu"):
            if controller in self.dirs:
                return f"{self.dirs[controller]}/cgroup.procs"
        return None

    def pids(self) -> list[int]:
        procs = self._procs_file()
        return read_pids(procs) if procs else []

    def stats(self) -> Stats:
        result = Stats()
        memory.stats(self.dirs.get("memory"), result)
        cpu.stats(self.dirs.get("cpuacct"), result)
        pids.stats(self.dirs.get("pids"), result)
        return result

    def kill(self) -> list[tuple[int, str]]:
        procs = self._procs_file()
        if procs is None:
            return []
        path = self.dirs.get("freezer")
        if path is None:
            return kill_until_empty(procs)
        return kill_frozen(procs, lambda: freezer.freeze(path), lambda: freezer.thaw(path))

    def remove(self) -> None:
        for path in sorted(set(self.dirs.values())):
            procs = f"{path}/cgroup.procs"
            if read_pids(procs):
                kill_until_empty(procs)
            rmdir_retry(path)
        self.dirs = {}
