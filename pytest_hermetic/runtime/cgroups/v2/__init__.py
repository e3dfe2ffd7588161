"""cgroup v2: one directory beneath the cgroup this process sits in (or
`$HERMETIC_CGROUP_PARENT`).

The no-internal-processes rule means controllers can be enabled only in a
cgroup's `cgroup.subtree_control` while it holds no process.  The engine
never writes to a cgroup it did not create, so it does not enable them
itself: it uses what the parent delegates and names the fix when a limit
needs a controller that is not delegated.
"""

from __future__ import annotations

import os

from .. import CONTROLLER_FOR, Cgroup, Hierarchy, Limits, Stats, comm, kill_frozen, kill_until_empty, read_words, not_writable, parent_path, read_pids, rmdir_retry, write
from ....errors import CgroupUnavailable
from . import cpu, memory, pids

class V2Cgroup(Cgroup):
    version = "v2"

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def create(cls, hierarchy: Hierarchy, name: str, limits: Limits, fuse: int | None = None) -> "V2Cgroup":
        assert hierarchy.unified is not None
        parent = hierarchy.unified + parent_path(hierarchy, "").rstrip("/")
        delegated = read_words(f"{parent}/cgroup.subtree_control")
        for limit in limits.requested():
            controller = CONTROLLER_FOR[limit]
            if controller not in delegated:
                raise CgroupUnavailable(
                    f"{limit} limit needs the cgroup v2 '{controller}' controller, but {parent} does not delegate it "
                    f"(its cgroup.subtree_control has: {' '.join(sorted(delegated)) or 'nothing'}); fix: set "
                    "HERMETIC_CGROUP_PARENT to a cgroup you own that holds no process and has the controller "
                    "enabled in its cgroup.subtree_control (e.g. below a `systemd-run -p Delegate=yes` unit), "
                    "or run as root"
                )
        path = f"{parent}/{name}"
        try:
            os.mkdir(path)
        except PermissionError:
            raise not_writable(parent, (limits.requested() or ["pids"])[0]) from None
        group = cls(path)
        try:
            memory.apply(path, limits.mem)
            cpu.apply(path, limits.cpus)
            if "pids" in delegated:
                pids.apply(path, limits.pids if limits.pids is not None else fuse)
        except BaseException:
            group.remove()
            raise
        return group

    def directories(self) -> list[str]:
        return [self.path]

    def join_paths(self) -> list[str]:
        return [f"{self.path}/cgroup.procs"]

    def pids(self) -> list[int]:
        return read_pids(f"{self.path}/cgroup.procs")

    def stats(self) -> Stats:
        result = Stats()
        memory.stats(self.path, result)
        cpu.stats(self.path, result)
        pids.stats(self.path, result)
        return result

    def kill(self) -> list[tuple[int, str]]:
        procs = f"{self.path}/cgroup.procs"
        if os.path.exists(f"{self.path}/cgroup.kill"):  # 5.14+: atomic, races no fork
            victims = [(pid, comm(pid)) for pid in read_pids(procs)]
            write(f"{self.path}/cgroup.kill", 1)
            return victims + [v for v in kill_until_empty(procs) if v not in victims]
        return kill_frozen(procs, lambda: _freeze(self.path, True), lambda: _freeze(self.path, False))

    def remove(self) -> None:
        if not self.path:
            return
        if read_pids(f"{self.path}/cgroup.procs"):
            self.kill()
        rmdir_retry(self.path)
        self.path = ""


def _freeze(path: str, frozen: bool) -> bool:
    try:
        write(f"{path}/cgroup.freeze", 1 if frozen else 0)
        return True
    except OSError:
        return False
