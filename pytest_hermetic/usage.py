"""What `hermetic top` and `hermetic stats` show: a running container's
processes, and its CPU, memory and PIDs use.

The processes are those of its cgroup (an exec'd one joins it), or, for a
container without one (rootless without a delegated cgroup), those in its
PID namespace: PID 1 and whatever /proc shows in the same namespace (root
compares /proc/PID/ns/pid; the owner of a rootless container reaches that
only for the processes it exec'd, which is all but PID 1, the engine's).
CPU time, memory and the PIDs count come from the cgroup's files (v1:
cpuacct, memory, pids; v2: cpu.stat, memory.current, pids.current); a
container without a memory or CPU accounting cgroup gets the sum over its
processes (RSS, utime + stime), as `top` would add them up.
"""

from __future__ import annotations

import os
import time

from ._record import record
from .runtime.cgroups import read_int, read_keyed, read_pids

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@record(frozen=True)
class Process:
    pid: int  # as the host sees it
    container_pid: int  # as the container sees it
    uid: int  # inside the container (its user namespace's view)
    host_uid: int
    cpu_seconds: float
    rss: int  # bytes
    command: str


@record(frozen=True)
class Usage:
    cpu_usec: int  # CPU time so far
    memory: int  # bytes (the cgroup's, less its inactive page cache, as `docker stats`; else the processes' RSS)
    memory_limit: int | None
    pids: int
    pids_limit: int | None
    source: str  # "cgroup v1", "cgroup v2" or "processes" (no cgroup)


def processes(state: dict, pid1: int) -> list[Process]:
    """The container's processes, PID 1 first."""
    groups = state.get("cgroup") or []
    pids: list[int] = []
    for folder in groups:
        pids = read_pids(f"{folder}/cgroup.procs")
        if pids:
            break
    if not pids:
        pids = _same_pid_namespace(pid1, state)
    depth = _depth(pid1)
    found = [p for p in (_process(pid, depth) for pid in sorted(set(pids) | {pid1})) if p is not None]
    return sorted(found, key=lambda p: (p.pid != pid1, p.container_pid))


def _same_pid_namespace(pid1: int, state: dict) -> list[int]:
    try:
        mine = os.stat(f"/proc/{pid1}/ns/pid")
    except PermissionError:  # rootless: through a process the container exec'd (runtime/enter.py)
        from .runtime.enter import close_all, owner_namespaces

        fds = owner_namespaces(pid1)
        mine = os.fstat(fds["pid"])
        close_all(fds)
    except FileNotFoundError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                st = os.stat(f"/proc/{entry}/ns/pid")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
                found.append(int(entry))
    return found


def _depth(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((len(line.split()) - 1 for line in f if line.startswith("NSpid:")), 0)
    except OSError:
        return 0


def _process(pid: int, depth: int) -> Process | None:
    """`pid`, if it is in a PID namespace `depth` levels deep (the
    container's; an exec's relay, in its cgroup but outside, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        with open(f"/proc/{pid}/status") as f:
            status = {key: value.split() for key, _, value in (line.partition(":") for line in f)}
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().rstrip(b"\0").split(b"\0")
        with open(f"/proc/{pid}/uid_map") as f:
            uid_map = [tuple(int(n) for n in line.split()) for line in f]
    except (OSError, ValueError):
        return None  # it ended meanwhile
    if len(status["NSpid"]) != depth:
        return None
    host_uid = int(status["Uid"][1])  # effective
    uid = next((inside + host_uid - outside for inside, outside, count in uid_map
                if outside <= host_uid < outside + count), 65534)
    command = " ".join(" ".join(arg.decode(errors="replace").split()) for arg in argv) or f"[{status['Name'][0]}]"
    return Process(pid, int(status["NSpid"][-1]), uid, host_uid,
                   (int(fields[11]) + int(fields[12])) / CLOCK_TICKS, int(fields[21]) * PAGE, command)


def usage(state: dict, pid1: int) -> Usage:
    """The container's use now (CPU time is a counter: `cpu_percent` compares two)."""
    cpu = memory = limit = pids = pids_limit = None
    version = None
    for folder in state.get("cgroup") or []:
        if os.path.exists(f"{folder}/cgroup.controllers"):  # v2: one folder, every controller
            version = "cgroup v2"
            cpu = read_keyed(f"{folder}/cpu.stat").get("usage_usec")
            current = read_int(f"{folder}/memory.current")
            if current is not None:
                memory = max(0, current - read_keyed(f"{folder}/memory.stat").get("inactive_file", 0))
            limit = read_int(f"{folder}/memory.max")
            pids, pids_limit = read_int(f"{folder}/pids.current"), read_int(f"{folder}/pids.max")
            break
        version = "cgroup v1"
        if os.path.exists(f"{folder}/cpuacct.usage"):
            ns = read_int(f"{folder}/cpuacct.usage")
            cpu = ns // 1000 if ns is not None else None
        if os.path.exists(f"{folder}/memory.usage_in_bytes"):
            current = read_int(f"{folder}/memory.usage_in_bytes") or 0
            memory = max(0, current - read_keyed(f"{folder}/memory.stat").get("total_inactive_file", 0))
            limit = read_int(f"{folder}/memory.limit_in_bytes")
            limit = limit if limit is not None and limit < (1 << 62) else None
        if os.path.exists(f"{folder}/pids.current"):
            pids, pids_limit = read_int(f"{folder}/pids.current"), read_int(f"{folder}/pids.max")
    if cpu is None or memory is None or pids is None:
        procs = processes(state, pid1)
        if cpu is None:
            cpu = int(sum(p.cpu_seconds for p in procs) * 1_000_000)
        if memory is None:
            memory = sum(p.rss for p in procs)
        if pids is None:
            pids = len(procs)
        version = f"{version} and processes" if version else "processes"
    return Usage(cpu, memory, limit, pids, pids_limit, version or "processes")


def cpu_percent(before: Usage, after: Usage, seconds: float) -> float:
    """CPU use between two readings, in percent of one core (200: two cores busy), as `docker stats`."""
    return max(0.0, (after.cpu_usec - before.cpu_usec) / (seconds * 1_000_000) * 100) if seconds > 0 else 0.0


def sample(states: list[tuple[dict, int]], interval: float = 0.5) -> list[tuple[dict, Usage, float]]:
    """Each container's use now and its CPU percent over `interval` seconds."""
    began = time.monotonic()
    first = [usage(state, pid) for state, pid in states]
    time.sleep(interval)
    took = time.monotonic() - began
    return [(state, after, cpu_percent(before, after, took))
            for (state, pid), before in zip(states, first) for after in (usage(state, pid),)]
