"""Cgroups: limit a container's memory, CPU and PIDs, read back what it used,
and kill everything in it.

`detect()` finds which hierarchy this process lives in (v2, v1 or hybrid)
from `/proc/self/mountinfo` and `/proc/self/cgroup`; `create()` makes one
cgroup per container *beneath the cgroup this process already sits in* (or
beneath `$HERMETIC_CGROUP_PARENT`), never anywhere else, and the returned
object is the only thing that writes to it.  Each controller has its own
module in `v1/` and `v2/`.
"""

from __future__ import annotations

import errno
import os
import time
from ..._record import record, factory
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
else:  # signal's C half, without signal.py's enums (enum, functools, collections: ~3 ms of `hermetic run`)
    import _signal as signal
if TYPE_CHECKING:  # not imported at run time: start-up cost
    from collections.abc import Iterable

from ...errors import CgroupUnavailable

CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "freezer")
CONTROLLER_FOR = {"mem": "memory", "cpus": "cpu", "pids": "pids"}  # the controller each limit needs
PREFIX = "hermetic-"


@record(frozen=True)
class Limits:
    """The limits, named as the options that ask for them (`Spec.mem`, ...)."""

    mem: int | None = None  # bytes
    cpus: float | None = None  # CPU bandwidth in cores
    pids: int | None = None
    accounting: bool = True  # peak memory and CPU time even without limits (v1: two more hierarchies)

    def requested(self) -> list[str]:
        """The limits asked for: mem, cpus, pids."""
        return [name for name in ("mem", "cpus", "pids") if getattr(self, name) is not None]


@record
class Stats:
    memory_limit: int | None = None
    memory_peak: int | None = None
    oom_kills: int = 0
    cpu_usec: int | None = None
    pids_limit: int | None = None
    pids_limit_hits: int = 0


@record(frozen=True)
class Hierarchy:
    """Where the cgroup filesystems are and where this process sits in them."""

    version: str  # "v2", "v1" or "hybrid"
    unified: str | None  # mount point of the cgroup2 hierarchy, if any
    v1: dict[str, str] = factory(dict)  # controller -> mount point
    own: dict[str, str] = factory(dict)  # controller ("" = v2) -> our cgroup path

    def describe(self) -> str:
        return f"cgroup {self.version}"


class Cgroup:
    """One container's cgroup, whatever the version (`V1Cgroup`, `V2Cgroup`)."""

    version: str

    def join_paths(self) -> list[str]:
        """The `cgroup.procs` files a process is written to, to join."""
        raise NotImplementedError

    def directories(self) -> list[str]:
        """Every directory of this cgroup (for `gc` after a crash)."""
        raise NotImplementedError

    def pids(self) -> list[int]:
        raise NotImplementedError

    def stats(self) -> Stats:
        raise NotImplementedError

    def kill(self) -> list[tuple[int, str]]:
        """SIGKILL everything in it; return (pid, name) of each victim."""
        raise NotImplementedError

    def remove(self) -> None:
        raise NotImplementedError


_detected: list[Hierarchy] = []  # once per process (not functools.lru_cache: functools is ~1.5 ms of a `hermetic run`)


def detect() -> Hierarchy:
    if not _detected:
        with open("/proc/self/mountinfo") as mountinfo, open("/proc/self/cgroup") as membership:
            _detected.append(parse_hierarchy(mountinfo, membership))
    return _detected[0]


def parse_hierarchy(mountinfo: Iterable[str], membership: Iterable[str]) -> Hierarchy:
    """The hierarchy from the lines of `/proc/self/mountinfo` and `/proc/self/cgroup`."""
    unified = None
    v1: dict[str, str] = {}
    for line in mountinfo:
        left, _, right = line.partition(" - ")
        fstype, _source, options = (right.split() + ["", ""])[:3]
        mount_point = unescape_mount_point(left.split()[4])
        if fstype == "cgroup2" and unified is None:
            unified = mount_point
        elif fstype == "cgroup":
            for opt in options.split(","):
                if opt in CONTROLLERS and opt not in v1:
                    v1[opt] = mount_point
    own: dict[str, str] = {}
    for line in membership:
        _, controllers, path = line.rstrip("\n").split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            own[name] = path
    if unified and not v1:
        version = "v2"
    elif unified:
        version = "hybrid"
    elif v1:
        version = "v1"
    else:
        version = "none"
    return Hierarchy(version, unified, v1, own)


def unescape_mount_point(path: str) -> str:
    """A mount point as `/proc/*/mountinfo` writes it (space, tab, newline, backslash octal-escaped)."""
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def parent_path(hierarchy: Hierarchy, controller: str) -> str:
    """The cgroup (relative to its hierarchy's root) to create containers under."""
    configured = os.environ.get("HERMETIC_CGROUP_PARENT")
    if configured:
        return "/" + configured.strip("/")
    return hierarchy.own.get(controller, "/")


def create(name: str, limits: Limits, *, default_pids: int | None) -> Cgroup | None:
    """Make the cgroup for container `name` and apply `limits`.

    `default_pids` is a fuse against fork bombs, applied where the pids
    controller is usable and silently left out where it is not.  Returns
    None where no cgroup can be made (rootless without delegation, no cgroup
    filesystem) and no limit was asked for; raises `CgroupUnavailable`,
    naming the fix, where a limit was asked for.
    """
    hierarchy = detect()
    fuse = default_pids if limits.pids is None else None
    try:
        # Only this host's hierarchy's code is imported (v2's: ~1.9 ms, -X importtime).
        if hierarchy.version == "v2":
            from .v2 import V2Cgroup

            return V2Cgroup.create(hierarchy, PREFIX + name, limits, fuse)
        if hierarchy.version in ("v1", "hybrid"):
            from .v1 import V1Cgroup

            return V1Cgroup.create(hierarchy, PREFIX + name, limits, fuse)
    except CgroupUnavailable:
        if limits.requested():
            raise
        return None
    if limits.requested():
        raise CgroupUnavailable(
            f"{', '.join(limits.requested())} limit needs cgroups, but no cgroup filesystem is mounted; "
            "fix: mount cgroup2 on /sys/fs/cgroup, or run without limits"
        )
    return None


def not_writable(path: str, what: str) -> CgroupUnavailable:
    return CgroupUnavailable(
        f"cannot create a cgroup under {path} for the {what} limit: not writable by uid {os.geteuid()}; "
        "fix: run as root (e.g. with sudo), or in a delegated cgroup "
        "(`systemd-run --user --scope -p Delegate=yes hermetic ...`) and point "
        "HERMETIC_CGROUP_PARENT at it, or drop the limit"
    )


def read_text(path: str) -> str:
    """A small kernel file whole: open, read, close (Python's `open()` adds
    an fstat, an ioctl and two lseeks to each, and every container reads and
    writes several of these files)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks: list[bytes] = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks).decode()
            chunks.append(chunk)
    finally:
        os.close(fd)


def read_int(path: str, default: int | None = None) -> int | None:
    try:
        text = read_text(path).strip()
    except OSError:
        return default
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return default


def read_words(path: str) -> set[str]:
    """The words of a file such as `cgroup.controllers` (empty if unreadable)."""
    try:
        return set(read_text(path).split())
    except OSError:
        return set()


def read_keyed(path: str) -> dict[str, int]:
    """Parse a flat keyed file (`memory.events`, `cpu.stat`, `pids.events`)."""
    result: dict[str, int] = {}
    try:
        text = read_text(path)
    except OSError:
        return result
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        try:
            result[key] = int(value)
        except ValueError:
            pass
    return result


def write(path: str, value: str | int) -> None:
    """One write(2) of the value, as the kernel's cgroup files want it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)  # as open(path, "w")
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def read_pids(procs_file: str) -> list[int]:
    """The pids in a cgroup; none once it is gone (ENODEV: removed while we read it)."""
    try:
        return [int(line) for line in read_text(procs_file).splitlines() if line.strip()]
    except FileNotFoundError:
        return []
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            return []
        raise


def rmdir_retry(path: str, timeout: float = 2.0) -> None:
    """Remove a cgroup directory; the kernel answers EBUSY for a short while
    after its last process died, so retry with backoff."""
    delay = 0.001
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def comm(pid: int) -> str:
    try:
        return read_text(f"/proc/{pid}/comm").strip()
    except OSError:
        return "?"


def kill_frozen(procs_file: str, freeze, thaw) -> list[tuple[int, str]]:  # noqa: ANN001
    """Freeze (if `freeze()` can), SIGKILL every process, thaw: nothing can
    fork away while the list is killed.  Then make sure it is empty."""
    frozen = freeze()
    try:
        victims = [(pid, comm(pid)) for pid in read_pids(procs_file)]
        for pid, _ in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    finally:
        if frozen:
            thaw()
    return victims + [v for v in kill_until_empty(procs_file) if v not in victims]


def kill_until_empty(procs_file: str, timeout: float = 5.0) -> list[tuple[int, str]]:
    """SIGKILL every process listed until none is left (they may fork meanwhile)."""
    killed: list[tuple[int, str]] = []
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        pids = read_pids(procs_file)
        if not pids:
            return killed
        for pid in pids:
            name = comm(pid)
            try:
                os.kill(pid, signal.SIGKILL)
                if pid not in seen:
                    seen.add(pid)
                    killed.append((pid, name))
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            return killed
        time.sleep(0.001)


class ThreadRoute:
    """Start a child *in* its v1 cgroups instead of moving it there.

    Moving a process (a pid written to `cgroup.procs`) takes the kernel's
    `cgroup_threadgroup_rwsem` for writing, which waits for an RCU grace
    period when no migration happened in the last one: 1-15 ms here, on the
    start's critical path (the child waits for it).  Moving only the calling
    thread (`0` written to a v1 `tasks` file) skips that lock, and a fork
    inherits the forking thread's cgroups; so the parent's thread steps into
    the cgroups, forks, and steps back (`home`), with no migration of the
    child at all.  v1 only: v2 has no per-thread membership for a domain
    cgroup (there `clone3(CLONE_INTO_CGROUP)` is the way)."""

    def __init__(self, into: list[str], home: list[str]) -> None:
        self.into = into  # the container's `tasks` files
        self.home = home  # the calling thread's own `tasks` files, same order
        self.moved = 0

    @classmethod
    def for_paths(cls, procs_files: list[str]) -> "ThreadRoute | None":
        """The route for a cgroup's `join_paths()`, or None where it cannot
        be taken (a v2 path, a hierarchy this thread is not in)."""
        hierarchy = detect()
        if not procs_files or hierarchy.unified is not None and any(
                p.startswith(hierarchy.unified.rstrip("/") + "/") for p in procs_files):
            return None
        mine: dict[str, str] = {}
        for line in read_text("/proc/thread-self/cgroup").splitlines():  # this thread's, now
            _, controllers, path = line.split(":", 2)
            for name in controllers.split(","):
                mine[name] = path
        into, home = [], []
        for procs in procs_files:
            directory = os.path.dirname(procs)
            mount = next((m for c, m in hierarchy.v1.items() if directory.startswith(m.rstrip("/") + "/")), None)
            controller = next((c for c, m in hierarchy.v1.items() if m == mount and c in mine), None)
            if mount is None or controller is None:
                return None
            into.append(directory + "/tasks")
            home.append(mount.rstrip("/") + mine[controller].rstrip("/") + "/tasks")
        if not all(os.access(path, os.W_OK) for path in home):  # no way back (a read-only mount): don't go
            return None
        return cls(into, home)

    def step_in(self) -> None:
        """Move the calling thread into the container's cgroups (all or,
        raising, none)."""
        try:
            for path in self.into:
                write(path, 0)
                self.moved += 1
        except BaseException:
            self.step_out()
            raise

    def step_out(self) -> None:
        """Move the calling thread back where it was.  A failure is raised:
        a thread left in a container's cgroup would be frozen and killed
        with it."""
        while self.moved:
            write(self.home[self.moved - 1], 0)
            self.moved -= 1
