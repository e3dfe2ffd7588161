"""A command container's PID 1 without Python in it: the plan, worked out here.

The engine's child (init.py, rootfs/, descriptors.py) is Python: after the
fork the interpreter's own work is most of what a container costs beyond
its system calls (issue #16: 1.7 ms of CPU of 6.4 ms a container).  For a
command (not a Python callable), where every step is known before the
fork, `plan_for` writes those same steps down, in the same order, with the
same arguments, and `clone_child.start` (C, an optional extension) runs
them in a child made with clone(CLONE_VM | CLONE_VFORK): no copy of the
parent, no interpreter (on cgroup v2, clone3(CLONE_INTO_CGROUP |
CLONE_VFORK): born in its cgroup).  A failing step comes back as its index
and errno; `Plan.line` words it as the Python child's line (`channel.fail`).

The plan covers the common start, and nothing is left out of it: wherever
a step depends on what the child finds, or on a parent that works while
the child sets up, `plan_for` returns None (`unsupported` says why) and the
Python child runs:

* a Python callable, `--init`, a terminal (`-t`), rootless (a user
  namespace), a network to wire, a child the parent would move into its
  cgroup (where neither `ThreadRoute` on v1 nor CLONE_INTO_CGROUP on v2
  can have it born there);
* volumes, `--tmpfs`, `--read-only`, layers replayed at start, overlay
  options beyond one page;
* a user given by name (it is looked up in the image);
* an engine not in the machine's first user namespace (its mknod would be
  refused; the Python child then binds the host's nodes), a kernel without
  close_range's CLOEXEC (before 5.11).

`HERMETIC_NATIVE_CHILD=0` turns it off (the Python child for every
container); so does an extension built from another version of the C file.
tests/test_native_child.py compares what a container sees both ways.

One concern, however long: the plan is the Python child's start written
down, step for step, and reads best in one place beside its wording of
each step's failure.
"""

from __future__ import annotations

import os
import struct
import sys

from ..errors import SyscallError
from . import capabilities, cgroups, descriptors, rootfs, start_errors
from . import syscalls as sc
from .channel import describe
from .namespaces import CONTAINER_NAMESPACES
from .rootfs import kernelfs
from .rootfs.overlay import PAGE_SIZE, overlay_options
from .syscalls import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it costs start-up
    from typing import Callable

    from .config import ProcessConfig

ABI = 2  # clone_child.c's ABI: an extension of another version is not used

# The operations of clone_child.c (its `enum op`, same order).
(PRCTL, UNSHARE, LOOPBACK_UP, MOUNT, MASK, READ_ONLY, MKDIR, MKNOD, CHOWN, UMASK_SET, UMASK_BACK, SYMLINK,
 WRITE_FILE, CHDIR, SETHOSTNAME, PIVOT_ROOT, UMOUNT2, OPEN_ON, SETSID, SESSION_KEYRING, CAPBSET_DROP,
 AMBIENT_CLEAR, SETGROUPS_NONE, SETRESGID, SETRESUID, CAPSET, SECCOMP, WORKDIR, SIGNALS_DEFAULT, DUP2,
 CLOEXEC_ABOVE_2, EXEC, CLOSE, MOUNT_IF_DIR, SETNS, REOPEN) = range(1, 37)

_REPORT = struct.Struct("=IIiI")
_REPORT_MAGIC = 0x31434E48
_STEP = struct.Struct("=iqqqI")
_LENGTH = struct.Struct("=i")
_COUNT = struct.Struct("=I")
_NO_STRING = _LENGTH.pack(-1)
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()  # (os.fsencode's)

# What a failed step was, as the Python child would have raised it: (errno,
# detail) -> the exception, or (code, line) for the exec.
Wording = "Callable[[int, int], BaseException]"

_module: object | None = None
_looked = False


def _extension(force: bool = False):  # noqa: ANN202 - the module, or None
    """The C extension, if built from this version of it and not switched
    off (HERMETIC_NATIVE_CHILD=0, unless `force`)."""
    global _module, _looked
    if not _looked:
        _looked = True
        if force or os.environ.get("HERMETIC_NATIVE_CHILD", "1") != "0":
            try:
                from . import clone_child  # type: ignore[attr-defined]  # (C: clone_child.c)
            except ImportError:
                clone_child = None
            if clone_child is not None and getattr(clone_child, "ABI", None) == ABI:
                _module = clone_child
    return _module


def state() -> str:
    """"ready"; "off" (HERMETIC_NATIVE_CHILD=0); "missing" (not built, or
    built from another version of clone_child.c); "unusable" (built, but
    the kernel is before 5.11 or this is not the machine's first user
    namespace): for `hermetic doctor`."""
    if _extension() is None:
        return "off" if _looked and os.environ.get("HERMETIC_NATIVE_CHILD") == "0" else "missing"
    return "ready" if _kernel_ready() else "unusable"


def available() -> bool:
    """Whether this process can start a command's child natively at all."""
    return _extension() is not None and _kernel_ready()


_clone3: bool | None = None


def cgroup_fd(procs_files: list[str]) -> int | None:
    """An fd on the one cgroup v2 folder of `procs_files` (its
    `cgroup.procs`), for a child born there (clone3's CLONE_INTO_CGROUP:
    no move, no hand-over); None where that cannot be had (v1 files, or
    clone3 missing or filtered here)."""
    global _clone3
    unified = cgroups.detect().unified
    if len(procs_files) != 1 or unified is None or not procs_files[0].startswith(unified.rstrip("/") + "/"):
        return None
    if _clone3 is None:
        module = _extension()
        _clone3 = module is not None and module.clone3_works()
    if not _clone3:
        return None
    try:
        return os.open(os.path.dirname(procs_files[0]), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None


def switch(on: bool | None) -> None:
    """Use the native child where it can run (True), never (False), or as
    HERMETIC_NATIVE_CHILD says (None, the default): for benchmarks and
    tests that compare both children in one process."""
    global _module, _looked
    _module, _looked = None, False
    if on is False:
        _looked = True
    elif on:
        _extension(force=True)


_kernel_ok: bool | None = None


def _kernel_ready() -> bool:
    """close_range's CLOEXEC (5.11), and the machine's first user namespace
    (mknod of the container's own device nodes), looked at once."""
    global _kernel_ok
    if _kernel_ok is None:
        try:
            with open("/proc/self/uid_map") as f:
                first_userns = f.read().split() == ["0", "0", "4294967295"]
        except OSError:
            first_userns = False
        _kernel_ok = sc.kernel_version() >= (5, 11) and first_userns
    return _kernel_ok


class Plan:
    """The child's steps, in order, and how to word each one's failure."""

    def __init__(self) -> None:
        self._steps = bytearray()  # the steps as clone_child.c reads them (`encode` puts their count first)
        self._wordings: list[Callable[[int, int], BaseException]] = []
        self.exec_wording: Callable[[int], tuple[int, str]] | None = None

    def add(self, op: int, wording: Callable[[int, int], BaseException], *strings: str | bytes | None,
            a: int = 0, b: int = 0, c: int = 0) -> None:
        # (~90 steps a container: each call is kept to plain packing, no list or fsencode)
        out = self._steps
        out += _STEP.pack(op, a, b, c, len(strings))
        for text in strings:
            if text is None:
                out += _NO_STRING
            else:
                raw = text if type(text) is bytes else text.encode(_FS_ENCODING, _FS_ERRORS)  # type: ignore[union-attr]
                out += _LENGTH.pack(len(raw))
                out += raw
                out += b"\0"
        self._wordings.append(wording)

    def encode(self) -> bytes:
        return _COUNT.pack(len(self._wordings)) + self._steps

    def start(self, err_w: int, cgroup_fd: int | None = None) -> int:
        """Run the plan in a child (born in the cgroup v2 folder open at
        `cgroup_fd`, if given); its pid, once it has exec'd or ended."""
        module = _extension()
        assert module is not None
        if cgroup_fd is None:
            return module.start(self.encode(), err_w)
        return module.start(self.encode(), err_w, cgroup_fd)

    def line(self, message: bytes) -> bytes:
        """The child's report on the set-up pipe as the Python child's line
        (`channel.fail`'s "code<TAB>text"); anything else as it came."""
        if len(message) != _REPORT.size:
            return message
        magic, index, err, detail = _REPORT.unpack(message)
        if magic != _REPORT_MAGIC:
            return message
        if index >= len(self._wordings):
            return b"125\tthe container's native set-up ended without an exec"
        if index == len(self._wordings) - 1 and self.exec_wording is not None:
            code, text = self.exec_wording(err)
        else:
            code, text = 125, describe(self._wordings[index](err, detail))
        return f"{code}\t{text}".encode()


def _os_error(*names: object) -> Callable[[int, int], BaseException]:
    """An os function's error on `names` (as os.mkdir(path) raises it)."""
    return lambda err, _detail: OSError(err, os.strerror(err), *names)


def _syscall_error(call: str, detail: str = "") -> Callable[[int, int], BaseException]:
    return lambda err, _detail: SyscallError(call, err, detail)


def _mount_error(source: str | bytes | None, target: str | bytes, fstype: str | bytes | None,
                 data: str | bytes | None) -> Callable[[int, int], BaseException]:
    return lambda err, _detail: sc.mount_error(err, source, target, fstype, data)


def _open_on_error(path: str) -> Callable[[int, int], BaseException]:
    """descriptors.finish's open of `path` (detail 0) or its dup2 (1)."""
    return lambda err, detail: OSError(err, os.strerror(err)) if detail else OSError(err, os.strerror(err), path)


def _never(err: int, _detail: int) -> BaseException:  # a step that does not fail (said all the same)
    return OSError(err, os.strerror(err))


def unsupported(config: ProcessConfig) -> str | None:
    """Why `config`'s child cannot be native (the first reason found), or
    None where it can (apart from a hand-over the caller knows of: a
    cgroup the parent moves the child into)."""
    if not available():
        return "no native child in this process (the extension, the switch, the kernel or the user namespace)"
    return _examine(config)[0]


def _examine(config: ProcessConfig) -> tuple[str | None, tuple[int, int], tuple[list, list], str]:
    """(why not, or None; the user's ids; the stdio's seal: `_stdio_seal`;
    the root overlay's options)."""
    fs = config.rootfs
    for reason, present in (
            ("a Python callable", config.argv is None), ("--init", config.init),
            ("rootless", config.userns is not None or fs.userns), ("a terminal", config.tty is not None),
            ("a network to wire", config.network_hook is not None or config.netns_ready is not None
             or config.network_go is not None or bool(config.network.address)),
            ("volumes", bool(fs.binds)),
            ("--tmpfs", bool(fs.tmpfs)), ("--read-only", fs.read_only), ("layers replayed at start", bool(fs.replay))):
        if present:
            return reason, (0, 0), ([], []), ""
    ids = _numeric_user(config.user)
    if ids is None:
        return "a user given by name", (0, 0), ([], []), ""
    if any("\0" in text for text in (*(config.argv or ()), *config.env.values())) or any(
            "=" in key or "\0" in key for key in config.env):
        return "a NUL in the command or its environment, or '=' in a name (the Python child says which)", ids, ([], []), ""
    options = overlay_options(fs.lowers, fs.upper, fs.work, False)
    if len(options) >= PAGE_SIZE:
        return "overlay options beyond one page", ids, ([], []), options
    try:
        return None, ids, _stdio_seal(config), options
    except OSError:  # a descriptor closed meanwhile (by another thread): the Python child sees what is left
        return "a standard descriptor that changed while looked at", ids, ([], []), options


def plan_for(config: ProcessConfig) -> Plan | None:
    """The plan of `config`'s child, or None where the Python child must
    run (`unsupported` says why).  As root, in the parent, after
    kernelfs.prepare()."""
    if not available():
        return None
    reason, ids, (reopen, later), options = _examine(config)
    if reason is not None:
        return None
    relayed = []
    for fd, write_end in config.relayed.items():
        try:
            relayed.append((fd, write_end, os.get_inheritable(fd)))
        except OSError:  # closed since: nothing to put in its place (as descriptors.seal)
            pass
    fs = config.rootfs
    plan = Plan()
    plan.add(PRCTL, _syscall_error("prctl", str(sc.PR_SET_PDEATHSIG)), a=sc.PR_SET_PDEATHSIG, b=9)
    if config.spare is not None:  # made ahead by the parent, `lo` up: joined (spare.enter), then a mount namespace
        from . import spare  # (imported by the parent, which made them)

        for kind, flag in spare.KINDS:
            plan.add(SETNS, _syscall_error("setns", sc.flag_names(flag)), a=config.spare[kind], b=flag)
        for fd in config.spare.values():
            plan.add(CLOSE, _never, a=fd)
        plan.add(UNSHARE, _syscall_error("unshare", sc.flag_names(sc.CLONE_NEWNS)), a=sc.CLONE_NEWNS)
    else:
        namespaces = CONTAINER_NAMESPACES
        plan.add(UNSHARE, _syscall_error("unshare", sc.flag_names(namespaces)), a=namespaces)
        plan.add(LOOPBACK_UP, _os_error())
    for fd, write_end, inheritable in relayed:  # descriptors.seal: each relayed file's pipe in its place
        plan.add(DUP2, _os_error(), a=write_end, b=fd, c=int(inheritable))
    for fd in config.relay_pipes:
        plan.add(CLOSE, _never, a=fd)
    for fd, path, flags, inheritable, regular in reopen:  # descriptors.seal (/dev/null below where it fails)
        plan.add(REOPEN, _never, path, a=flags, b=fd, c=int(inheritable) | (2 if regular else 0))
    _root(plan, config, options)
    for fd, name, access, inheritable, if_failed in later:  # descriptors.finish
        plan.add(OPEN_ON, _open_on_error(f"/dev/{name}"), f"/dev/{name}", a=access | os.O_CLOEXEC | os.O_NOCTTY, b=fd,
                 c=int(inheritable) | (2 if if_failed else 0))
    plan.add(UNSHARE, _syscall_error("unshare", sc.flag_names(sc.CLONE_NEWCGROUP)), a=sc.CLONE_NEWCGROUP)
    if fs.cgroup_v2:  # rootfs.mount_cgroup2
        flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | (0 if fs.privileged else MS_RDONLY)
        plan.add(MOUNT_IF_DIR, _mount_error("cgroup2", "/sys/fs/cgroup", "cgroup2", None),
                 "cgroup2", "/sys/fs/cgroup", "cgroup2", None, a=flags)
    plan.add(SETSID, _os_error())  # init.own_session
    plan.add(SESSION_KEYRING, lambda err, _detail: start_errors.keyring(err))
    _privileges(plan, config, *ids)
    if config.seccomp is not None:
        program = config.seccomp.program
        plan.add(SECCOMP, lambda err, _detail: start_errors.seccomp_load(err), program, a=len(program))
    _exec(plan, config)
    return plan


def _numeric_user(user: str | None) -> tuple[int, int] | None:
    """(uid, gid) where init.resolve_user needs no look at the image: no
    user, or "UID:GID" in numbers; else None."""
    if not user:
        return 0, 0
    name, _, group = user.partition(":")
    if name.isdigit() and group.isdigit():
        return int(name), int(group)
    return None


def _stdio_seal(config: ProcessConfig) -> tuple[list[tuple[int, str, int, bool, bool]], list[tuple[int, str, int, bool, bool]]]:
    """descriptors.seal of a command's stdio, decided here (the child's
    descriptors are this process's now): what to reopen on a read-only mount
    of its own before the pivot, [(fd, path, flags, inheritable, a regular
    file)]; and what descriptors.finish puts in place after it, [(fd,
    device, access, inheritable, only if its reopening failed)].  Each fd
    once (stdout and stderr may be one)."""
    reopen, later = [], []
    for fd in dict.fromkeys(descriptors.stdio_fds(config.stdio)):
        if fd in config.keep_fds or fd in config.relayed:
            continue
        kind = descriptors.classify(fd)
        if kind is descriptors.KEEP or kind is descriptors.UNNAMED:
            continue
        inheritable = os.get_inheritable(fd)
        if kind[0] in ("file", "node"):  # ("file", path, stat, flags), ("node", path, flags, a FIFO's read end)
            flags = kind[3] if kind[0] == "file" else kind[2]
            reopen.append((fd, kind[1], flags, inheritable, kind[0] == "file"))
            later.append((fd, "null", os.O_RDWR, fd <= 2, True))
            continue
        name = kind[1] if kind[0] == "own" else "null"
        access = os.O_RDWR if name == "null" else descriptors.access_mode(fd)
        later.append((fd, name, access, fd <= 2 or name != "null" and inheritable, False))
    return reopen, later


def _root(plan: Plan, config: ProcessConfig, options: str) -> None:
    """rootfs.setup, for a root of the image's layers (or the host's) alone."""
    fs = config.rootfs
    add = plan.add
    add(MOUNT, _mount_error(None, "/", None, None), None, "/", None, None, a=MS_REC | MS_PRIVATE)
    add(MOUNT, _mount_error("tmpfs", fs.scratch, "tmpfs", "mode=755"), "tmpfs", fs.scratch, "tmpfs", "mode=755",
        a=MS_NODEV | MS_NOSUID)
    nodes = f"{fs.scratch}/nodes"  # kernelfs.own_nodes
    add(MKDIR, _os_error(nodes.encode()), nodes, a=0o700)
    data = "mode=700,size=4k,nr_inodes=16"
    add(MOUNT, _mount_error(b"tmpfs", nodes.encode(), b"tmpfs", data.encode()), "tmpfs", nodes, "tmpfs", data,
        a=MS_NOSUID | MS_NOEXEC)
    add(UMASK_SET, _never, a=0)
    for name, mode, rdev, owner in kernelfs.host_nodes():
        node = nodes.encode() + b"/" + name
        add(MKNOD, _os_error(node), node, a=mode, b=rdev)
        if owner is not None:
            add(CHOWN, _os_error(node), node, a=owner[0], b=owner[1])
    add(UMASK_BACK, _never)
    for path in (fs.merged, fs.upper, fs.work):
        if path.startswith(fs.scratch + "/"):
            add(MKDIR, _os_error(path), path, a=0o755)
    _init_layer(plan, fs)
    depth = len(fs.lowers)
    add(MOUNT, lambda err, _detail: SyscallError("mount", err, f"overlay of {depth} layers on {fs.merged}"),
        "overlay", fs.merged, "overlay", options, a=MS_NODEV)
    add(CHDIR, _os_error(fs.merged), fs.merged)
    for kind, source, target, fstype, flags, data in kernelfs.kernel_steps(fs.shm_size, fs.privileged, nodes.encode()):
        if kind == "mknod":
            add(MKNOD, _os_error(target), target, a=flags)
        elif kind == "mkdir":
            add(MKDIR, _os_error(target), target, a=flags)
        elif kind == "symlink":
            add(SYMLINK, _os_error(source, target), source, target)
        else:
            add(MOUNT, _mount_error(source, target, fstype, data), source, target, fstype, data, a=flags)
    if not fs.host_tmp:
        add(MOUNT, _mount_error(b"tmpfs", b"tmp", b"tmpfs", b"mode=1777"), "tmpfs", "tmp", "tmpfs", "mode=1777",
            a=MS_NOSUID | MS_NODEV)
    if not fs.privileged:
        add(CHDIR, _os_error(fs.merged), fs.merged)
        null = nodes.encode() + b"/null"
        for target, directory in kernelfs.MASKS:
            add(MASK, _mask_error(target, null), target, null, a=int(directory))
        for target in kernelfs.READONLY_TARGETS:
            add(READ_ONLY, _read_only_error(target), target)
    add(SETHOSTNAME, _syscall_error("sethostname", config.hostname), config.hostname)
    add(CHDIR, _os_error(fs.merged), fs.merged)  # rootfs._pivot
    add(PIVOT_ROOT, _syscall_error("pivot_root", "."))
    add(UMOUNT2, _syscall_error("umount2", "."), ".", a=sc.MNT_DETACH)
    add(CHDIR, _os_error("/"), "/")


def _mask_error(target: bytes, null: bytes) -> Callable[[int, int], BaseException]:
    def word(err: int, detail: int) -> BaseException:
        if detail == 1:
            source, fstype, _flags, data = kernelfs.MASK_DIR
            return sc.mount_error(err, source, target, fstype, data)
        return sc.mount_error(err, null, target, None, None)

    return word


def _read_only_error(target: bytes) -> Callable[[int, int], BaseException]:
    def word(err: int, detail: int) -> BaseException:
        if detail == 1:
            return sc.mount_error(err, None, target, None, None)
        return sc.mount_error(err, target, target, None, None)

    return word


def _init_layer(plan: Plan, fs: rootfs.RootfsConfig) -> None:
    """rootfs.write_init_layer, with no volumes or tmpfs mounts: every
    folder is new (the layer's own tmpfs was mounted a moment ago)."""
    path = fs.lowers[0]
    plan.add(MKDIR, _os_error(path), path, a=0o755)
    made = {path}
    for name in rootfs.MOUNT_POINTS:
        if name == "tmp" and fs.host_tmp:
            continue
        plan.add(MKDIR, _os_error(f"{path}/{name}"), f"{path}/{name}", a=0o755)
        made.add(f"{path}/{name}")
    for name, text in fs.init_files.items():
        target = f"{path}/{name}"
        missing = []
        folder = os.path.dirname(target)
        while folder not in made and folder.startswith(path + "/"):
            missing.append(folder)
            folder = os.path.dirname(folder)
        for folder in reversed(missing):
            plan.add(MKDIR, _os_error(folder), folder, a=0o777)
            made.add(folder)
        content = text.encode()
        plan.add(WRITE_FILE, _os_error(target), target, content, a=len(content))


def _privileges(plan: Plan, config: ProcessConfig, uid: int, gid: int) -> None:
    """init._drop_privileges (its user in numbers) and init.become."""
    plan.add(WORKDIR, lambda err, detail: start_errors.workdir(config.cwd, os.strerror(err), made=bool(detail)), config.cwd)
    if not config.privileged:
        keep = capabilities.kept(config.cap_last, config.caps)
        dropped = sum(1 << cap for cap in capabilities.dropped(config.cap_last, keep))
        plan.add(CAPBSET_DROP, lambda err, cap: SyscallError("prctl", err, f"PR_CAPBSET_DROP {cap}"),
                 a=_signed(dropped), b=config.cap_last)
        plan.add(AMBIENT_CLEAR, _never)
    if gid != 0 or uid != 0:
        plan.add(SETGROUPS_NONE, _os_error())
        plan.add(SETRESGID, _os_error(), a=gid)
        plan.add(SETRESUID, _os_error(), a=uid)
    if not config.privileged:
        if uid == 0:
            plan.add(CAPSET, _syscall_error("capset"), a=_signed(keep))
        plan.add(PRCTL, _syscall_error("prctl", str(sc.PR_SET_NO_NEW_PRIVS)), a=sc.PR_SET_NO_NEW_PRIVS, b=1)


def _signed(mask: int) -> int:
    """A 64-bit mask as the plan's signed field holds it."""
    return mask - (1 << 64) if mask >= 1 << 63 else mask


def _exec(plan: Plan, config: ProcessConfig) -> None:
    """init._exec: signals at their defaults, stdio in place, the other
    descriptors close-on-exec, then execve along the PATH (init.execvpe)."""
    argv = config.argv
    assert argv
    plan.add(SIGNALS_DEFAULT, _never)
    for target, fd in enumerate(config.stdio):
        if fd is not None and fd != target:
            plan.add(DUP2, _os_error(), a=fd, b=target, c=1)
    if config.close_fds:
        plan.add(CLOEXEC_ABOVE_2, _syscall_error("close_range"))
    env = config.env
    if os.path.dirname(argv[0]):
        candidates = [argv[0]]
    else:
        candidates = [os.path.join(folder, argv[0]) for folder in env.get("PATH", os.defpath).split(os.pathsep)]
    environment = [f"{key}={value}" for key, value in env.items()]
    plan.add(EXEC, _never, *candidates, *argv, None, *environment, a=len(candidates), b=len(argv), c=len(environment))
    plan.exec_wording = lambda err: start_errors.exec_failure(argv[0], env, OSError(err, os.strerror(err)))
