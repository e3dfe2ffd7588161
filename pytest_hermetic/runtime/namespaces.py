"""Namespaces: which to create, and the user namespace's id maps.

As root the engine creates mount, UTS, IPC, PID, network and cgroup
namespaces and stays real root (a user namespace is optional, `userns=True`).
Rootless, a user namespace comes first and maps the caller to root inside;
when /etc/subuid grants the caller a range and newuidmap is installed, that
range is mapped too, so images with several owners unpack and run.
"""

from __future__ import annotations

import os
import pwd
from .._record import record, factory

from ..errors import ContainerStartError
from . import syscalls as sc

# The cgroup namespace comes apart, once the process sits in its cgroup.
CONTAINER_NAMESPACES = sc.CLONE_NEWNS | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC | sc.CLONE_NEWNET


@record(frozen=True)
class IdMap:
    inside: int
    outside: int
    count: int

    def line(self) -> str:
        return f"{self.inside} {self.outside} {self.count}"


@record(frozen=True)
class UserNamespace:
    uid_maps: list[IdMap] = factory(list)
    gid_maps: list[IdMap] = factory(list)

    @property
    def mapped_from_outside(self) -> bool:
        """Whether the maps must be written by a process outside the new
        namespace.  A process may map only its own id into a namespace it
        just made (it holds no CAP_SETUID in the parent namespace any
        more): root's private range is written by the root parent, a
        rootless caller's subordinate ranges by newuidmap/newgidmap."""
        return os.geteuid() == 0 or len(self.uid_maps) > 1 or len(self.gid_maps) > 1

    def write_own_maps(self) -> None:
        """Map this process (just after unshare(CLONE_NEWUSER)) by itself."""
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write("\n".join(m.line() for m in self.uid_maps))
        with open("/proc/self/gid_map", "w") as f:
            f.write("\n".join(m.line() for m in self.gid_maps))

    def write_maps_from_outside(self, pid: int) -> None:
        """Map process `pid`'s user namespace from its parent namespace:
        directly as root, else with the setuid helpers (which check
        /etc/subuid and /etc/subgid)."""
        if os.geteuid() == 0:
            for name, maps in (("uid_map", self.uid_maps), ("gid_map", self.gid_maps)):
                with open(f"/proc/{pid}/{name}", "w") as f:
                    f.write("\n".join(m.line() for m in maps))
            return
        import subprocess  # ~2.4 ms, rootless starts only

        for tool, maps in (("newuidmap", self.uid_maps), ("newgidmap", self.gid_maps)):
            args = [str(v) for m in maps for v in (m.inside, m.outside, m.count)]
            result = subprocess.run([tool, str(pid), *args], capture_output=True, text=True)
            if result.returncode != 0:
                raise ContainerStartError(
                    f"{tool} failed: {result.stderr.strip() or result.returncode}; "
                    f"fix: check the caller's entry in /etc/sub{tool[3:6]}"
                )


def subordinate_range(path: str, user: str, uid: int) -> tuple[int, int] | None:
    """(start, count) of `user`'s (or `uid`'s) line in /etc/subuid or /etc/subgid, if any."""
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in (user, str(uid)):
                    return int(parts[1]), int(parts[2])
    except (OSError, ValueError):
        pass
    return None


def default_user_namespace() -> UserNamespace:
    """The caller as root inside, plus its subordinate ranges when usable."""
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0:
        # Root with userns=True: map a private range so container root is
        # nobody on the host.
        return UserNamespace([IdMap(0, 100000, 65536)], [IdMap(0, 100000, 65536)])
    uid_maps, gid_maps = [IdMap(0, uid, 1)], [IdMap(0, gid, 1)]
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    sub_uid = subordinate_range("/etc/subuid", name, uid)
    sub_gid = subordinate_range("/etc/subgid", name, uid)
    import shutil  # here: ~1.3 ms of import, rootless only

    if sub_uid and sub_gid and shutil.which("newuidmap") and shutil.which("newgidmap"):
        uid_maps.append(IdMap(1, sub_uid[0], sub_uid[1]))
        gid_maps.append(IdMap(1, sub_gid[0], sub_gid[1]))
    return UserNamespace(uid_maps, gid_maps)
