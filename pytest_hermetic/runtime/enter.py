"""Run another process inside a running container (`Container.exec`).

The new process joins the container's cgroup, then its namespaces with
setns(2) (user first where there is one, then mount, UTS, IPC, network,
cgroup and PID), and forks once more, because joining a PID namespace only
applies to children.  The intermediate process relays the exit status.

Rootless, the container's owner joins as `nsenter -U --preserve-credentials`
does: it owns the user namespace, so setns(2) into it gives it the
capabilities there that the other namespaces then need.  But it may not
open a rootless PID 1's /proc/PID/ns: that process is forked from the
engine (never exec'd), so the kernel checks it against the host's user
namespace, and it made itself non-dumpable.  `owner_namespaces` therefore
opens them through a process of the container that was exec'd (the
command), and checks what it got: a user namespace whose parent is ours
(a container's processes cannot join a sibling's, so it is this one's), a
PID namespace one level below ours, and the other namespaces owned by that
user namespace.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time

from ..errors import ContainerStartError
from . import capabilities, descriptors
from . import syscalls as sc
from .seccomp import Filter
from .channel import describe, fail, read_all, start_error
from .file_relay import FileRelay
from .fork import fork, release_signals
from .init import become, execvpe, own_session, redirect_stdio, resolve_user, restore_signals
from .process import ContainerProcess
from .relay import exit_as

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it costs start-up
    from .console import Console

_ORDER = (("mnt", sc.CLONE_NEWNS), ("uts", sc.CLONE_NEWUTS), ("ipc", sc.CLONE_NEWIPC),
          ("net", sc.CLONE_NEWNET), ("cgroup", sc.CLONE_NEWCGROUP), ("pid", sc.CLONE_NEWPID))


def enter(init_pid: int, argv: list[str], env: dict[str, str], cwd: str, cgroup_procs: list[str],
          userns: bool, privileged: bool = False, stdio: tuple = (None, None, None),
          seccomp_filter: Filter | None = None, user: str | None = None, tty: bytes | None = None,
          caps: int | None = None, cwd_asked: bool = False) -> ContainerProcess:
    """Start `argv` inside the container whose PID 1 is host pid `init_pid`,
    as `user` (resolved in the container's /etc/passwd, as `run -u`), with
    its capabilities `caps` (a capabilities.mask; None: Docker's default
    set); with `tty` (a struct winsize) on a pty of the container's own,
    whose master is the returned handle's `tty` (console.py).  In `cwd`; a
    `cwd` the caller asked for (`exec -w`) that is not a folder there is an
    error, the container's own working folder gone falls back to /."""
    pair = None
    if tty is not None:
        from .console import Pair  # lazily: socket, which only a terminal needs

        pair = Pair(tty)
    try:
        fds = owner_namespaces(init_pid) if userns and os.geteuid() != 0 else _namespaces_of(init_pid, userns)
    except BaseException:
        if pair is not None:
            pair.close()
        raise
    # The caller's named files open for writing among the command's stdio
    # reach it as pipes (file_relay.py); not with a terminal, which is 0-2.
    files = None if tty is not None else FileRelay.of(descriptors.stdio_fds(stdio))
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = fork()
    if pid == 0:
        _enter_child(fds, argv, env, cwd, cgroup_procs, privileged, err_w, stdio, seccomp_filter, user, userns,
                     pair.console if pair is not None else None, caps, cwd_asked, files)
    for fd in fds.values():
        os.close(fd)
    if pair is not None:
        pair.started()
    if files is not None:
        files.started()
    os.close(err_w)
    try:
        message = read_all(err_r)
    finally:
        os.close(err_r)
    proc = ContainerProcess(pid, pid, None)
    proc.files = files
    if message:
        if pair is not None:
            pair.close()
        proc.wait()
        raise start_error(message)
    if pair is not None:
        proc.tty = pair.receive()
    return proc


def _namespaces_of(pid: int, userns: bool) -> dict[str, int]:
    """Descriptors on process `pid`'s namespaces (root may open any process's)."""
    fds: dict[str, int] = {}
    try:
        if userns:
            fds["user"] = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        for name, _flag in _ORDER:
            fds[name] = os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        close_all(fds)
        raise ContainerStartError(f"container process {pid} is gone: {exc.strerror}") from None
    return fds


def close_all(fds: dict[str, int]) -> None:
    for fd in fds.values():
        os.close(fd)


NS_GET_USERNS = 0xB701  # _IO(0xb7, 1), linux/nsfs.h
NS_GET_PARENT = 0xB702


def _same(fd: int, other: os.stat_result) -> bool:
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (other.st_dev, other.st_ino)


def _parent_is(fd: int, request: int, expected: os.stat_result) -> bool:
    try:
        parent = fcntl.ioctl(fd, request)
    except OSError:
        return False
    try:
        return _same(parent, expected)
    finally:
        os.close(parent)


def _depth(pid: int | str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next((len(line.split()) - 1 for line in f if line.startswith("NSpid:")), 0)


def _candidates(init_pid: int) -> list[int]:
    """PID 1, then the rest of the container's processes, breadth first (from /proc/PID/task/*/children)."""
    found: list[int] = []
    queue = [init_pid]
    while queue and len(found) < 256:
        pid = queue.pop(0)
        found.append(pid)
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    queue += [int(child) for child in f.read().split()]
            except OSError:
                continue
    return found


def _checked(pid: int, own_user: os.stat_result, depth: int) -> dict[str, int] | None:
    """`pid`'s namespaces if they are a container's of ours at its top level (see the module's text), else None."""
    fds: dict[str, int] = {}
    try:
        fds["user"] = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        for name, _flag in _ORDER:
            fds[name] = os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
        user = os.fstat(fds["user"])
        good = (_parent_is(fds["user"], NS_GET_PARENT, own_user) and _depth(pid) == depth + 1
                and all(_parent_is(fds[name], NS_GET_USERNS, user) for name, _flag in _ORDER))
    except OSError:
        good = False
    if not good:
        close_all(fds)
        return None
    return fds


def owner_namespaces(init_pid: int, wait: float = 0.0) -> dict[str, int]:
    """Descriptors on the namespaces of the rootless container whose PID 1
    is `init_pid`, opened by its owner (not root) through one of its
    exec'd processes; with `wait`, up to that many seconds for one (a
    container that has just started may not have exec'd its command yet)."""
    own_user = os.stat("/proc/self/ns/user")
    depth = _depth("self")
    deadline = time.monotonic() + wait
    while True:
        candidates = _candidates(init_pid)
        for pid in candidates:
            fds = _checked(pid, own_user, depth)
            if fds is not None:
                return fds
        if not os.path.exists(f"/proc/{init_pid}"):
            raise ContainerStartError(f"container process {init_pid} is gone")
        if time.monotonic() >= deadline:
            raise ContainerStartError(
                f"no process of the container (pids {' '.join(map(str, candidates))}) lets its owner open its "
                "namespaces: PID 1 is the engine's and not dumpable, and no command exec'd in the container is "
                "still there in its namespaces (it runs a set-user-id program, or moved into namespaces of its "
                "own); run as root, or keep a plain command running in it")
        time.sleep(0.02)


def _enter_child(fds: dict[str, int], argv: list[str], env: dict[str, str], cwd: str, cgroup_procs: list[str],
                 privileged: bool, err_w: int, stdio: tuple, seccomp_filter: Filter | None, user: str | None,
                 userns: bool, console: Console | None, caps: int | None = None, cwd_asked: bool = False,
                 files: FileRelay | None = None) -> None:
    """The forked child: join, fork into the PID namespace, exec.

    It must end in `os._exit` whatever happens, never return into the
    caller's stack."""
    try:
        try:
            release_signals()  # (inside the `finally: os._exit`: see fork.py)
            sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
            for path in cgroup_procs:
                with open(path, "w") as f:
                    f.write("0")
            if "user" in fds:
                sc.setns(fds["user"], sc.CLONE_NEWUSER)
            # The command's stdio sealed as a container's (descriptors.seal)
            # in a mount namespace of our own, where the caller's paths still
            # name its files; the container's own nodes put in once inside.
            sc.unshare(sc.CLONE_NEWNS)
            later = descriptors.seal(stdio=descriptors.stdio_fds(stdio),
                                     everything=False, relayed=files.child_ends if files else None,
                                     relay_pipes=files.pipes() if files else ())
            for name, flag in _ORDER:
                sc.setns(fds[name], flag)
            descriptors.finish(later)  # (setns into a mount namespace moved us to its root)
            uid, gid = resolve_user(user)
            # Everything that makes this process more than the container's
            # own goes before the fork: its child is born in the container's
            # PID namespace, where a process of the container could ptrace
            # it (--cap-add SYS_PTRACE) while it held the caller's
            # descriptors, more capabilities than the container's, or no
            # seccomp filter.  So the terminal is made here (`make`), and
            # only taken (`adopt`) by the child, a session leader.
            descriptors.close_except((err_w, *(fd for fd in stdio if fd is not None),
                                      *((console.socket_fd,) if console is not None else ())))
            slave = None
            if console is not None:
                from . import console as consoles  # imported by enter() before the fork

                console.uid = uid
                slave = consoles.make(console)
            own_session()  # its session keyring (keyctl is not in the filter); the child makes its own session
            become(uid, gid, privileged, capabilities.last_cap(), userns, caps)
            if seccomp_filter is not None:
                seccomp_filter.load()
            child = os.fork()
        except BaseException as exc:  # noqa: BLE001
            fail(err_w, 125, describe(exc))
        if child == 0:
            try:
                if os.path.isdir(cwd):
                    os.chdir(cwd)
                elif cwd_asked:
                    raise ContainerStartError(f"the working directory {cwd} is not a directory in the container "
                                              "(make it first, or give another to -w)")
                else:
                    os.chdir("/")
                os.setsid()
                if slave is not None:
                    consoles.adopt(slave)
                    stdio = (None, None, None)  # 0, 1, 2 are the terminal now
            except BaseException as exc:  # noqa: BLE001
                fail(err_w, 125, describe(exc))
            try:
                redirect_stdio(stdio)
                descriptors.cloexec_all()  # err_w, close-on-exec, stays until the exec
                restore_signals()
                execvpe(argv[0], argv, env)
            except FileNotFoundError:
                fail(err_w, 127, f"{argv[0]}: command not found in the container")
            except BaseException as exc:  # noqa: BLE001
                fail(err_w, 126, describe(exc))
        if slave is not None:
            os.close(slave)  # the child's now: the terminal hangs up when the command ends
        os.close(err_w)
        exit_as(child)
    finally:
        os._exit(125)
