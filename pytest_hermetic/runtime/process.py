"""The container process: fork, enter the namespaces, build the root, run.

How many forks it takes, and why (a fork of a large Python parent costs
1-4 ms here, so each one counts):

* As root, the parent unshares a PID namespace *for its children only*
  (per thread; its own PID never changes), forks once, and sets its
  children's namespace back.  That child is PID 1 of the container and a
  direct child of the caller, so `waitpid` sees its real exit status.
* Rootless, a user namespace has to be entered by a single-threaded process,
  so an intermediate child enters it (and all the others), forks PID 1 and
  relays its exit status (by exiting the same way).

PID 1 then joins the cgroup, unshares mount, UTS, IPC, network and cgroup
namespaces, builds the root (`rootfs.setup`), drops privileges and either
execs the command (it *is* PID 1, as under `docker run`) or, for a Python
callable (the pytest plugin), forks the callable as PID 2 and stays behind
as a reaper that forwards signals: a PID 1 ignores signals it has no handler
for, which a test killing itself must not meet.

Set-up errors travel to the parent through a close-on-exec pipe as one line
(exit code, message); a clean exec closes the pipe with nothing written.
"""

from __future__ import annotations

import errno
import os
import resource  # imported here: after entering a container's root, no stdlib is left to import from
import select
import signal
import struct
import sys
import traceback
import warnings
from .._record import record, factory
TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it costs start-up
    from typing import Callable, NoReturn

    from .usermode_net import Helper

from ..errors import CommandNotExecutable, CommandNotFound, ContainerStartError
from . import capabilities, descriptors, network, rootfs, seccomp
from . import syscalls as sc
from .namespaces import CONTAINER_NAMESPACES, UserNamespace

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH)


@record
class ProcessConfig:
    """Everything the child needs, resolved by the parent before the fork."""

    rootfs: rootfs.RootfsConfig
    hostname: str
    argv: list[str] | None = None  # exec mode; None with a callable target
    env: dict[str, str] = factory(dict)
    cwd: str = "/"
    user: str | None = None  # "uid[:gid]" or a name from the image's /etc/passwd
    network: network.NetworkConfig = factory(network.NetworkConfig)
    cgroup_procs: list[str] = factory(list)
    userns: UserNamespace | None = None
    privileged: bool = False
    seccomp: seccomp.Filter | None = None  # compiled by the parent (seccomp.default()), loaded by the child
    close_fds: bool = True  # exec mode: keep only 0, 1, 2 (runc CVE-2024-21626)
    init: bool = False  # exec mode: run the command as PID 2 under a reaping, forwarding PID 1
    cap_last: int = factory(lambda: capabilities.last_cap())  # read by the parent, once per container
    stdio: tuple = (None, None, None)  # fds for the command's stdin, stdout, stderr (None: inherit)
    network_go: tuple | None = None  # rootless networks: the parent says "G" once the network is wired
    userns_join: str | None = None  # rootless on a network: join its holder's user namespace instead of making one
    # As root on a bridge: called by the parent with the child's pid once the
    # child's network namespace exists (it puts the veth end there) while
    # the child builds its root; `netns_ready` carries the child's "N".
    network_hook: Callable[[int], None] | None = None
    netns_ready: tuple | None = None


@record(frozen=True)
class ExitStatus:
    code: int | None = None  # exit code, or None when killed by a signal
    signal: int | None = None

    @classmethod
    def from_wait(cls, status: int) -> "ExitStatus":
        if os.WIFSIGNALED(status):
            return cls(signal=os.WTERMSIG(status))
        return cls(code=os.waitstatus_to_exitcode(status))

    @property
    def shell_code(self) -> int:
        """The status as a shell reports it (128+N for signal N)."""
        return 128 + self.signal if self.signal is not None else (self.code or 0)


class ContainerProcess:
    """The parent's handle on a running container's PID 1."""

    def __init__(self, pid: int, init_pid: int, status_fd: int | None, placeholder: int | None = None) -> None:
        self.pid = pid  # our direct child (PID 1, the rootless relay, or the callable as PID 2)
        self.init_pid = init_pid  # host pid of the process whose namespaces are the container's
        self.placeholder = placeholder  # host pid of a placeholder PID 1, if any
        self._status_fd = status_fd
        self._pidfd: int | None = None
        self.exit_status: ExitStatus | None = None
        self.net_helper: Helper | None = None  # slirp4netns serving this container, if any

    def fileno(self) -> int:
        if self._pidfd is None:
            self._pidfd = os.pidfd_open(self.pid)
        return self._pidfd

    def wait(self, timeout: float | None = None) -> ExitStatus | None:
        """Wait for the container to end; None if `timeout` passed first."""
        if self.exit_status is not None:
            return self.exit_status
        if timeout is not None:
            ready, _, _ = select.select([self.fileno()], [], [], max(timeout, 0))
            if not ready:
                return None
        while True:
            try:
                _, status = os.waitpid(self.pid, 0)
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
        result = ExitStatus.from_wait(status)
        if self.placeholder is not None:
            _end_placeholder(self.placeholder)
            self.placeholder = None
        reported = self._read_reported_status()
        self.exit_status = reported or result
        self._close()
        if self.net_helper is not None:
            self.net_helper.close()
            self.net_helper = None
        return self.exit_status

    def _read_reported_status(self) -> ExitStatus | None:
        if self._status_fd is None:
            return None
        try:
            data = read_exactly(self._status_fd, 4)
        except OSError:
            return None
        if len(data) != 4:
            return None
        return ExitStatus.from_wait(struct.unpack("i", data)[0])

    def send_signal(self, sig: int, group: bool = False) -> None:
        """Signal PID 1, or with `group` its whole process group (PID 1
        leads it: what a terminal's Ctrl-C reached when the container still
        shared its caller's)."""
        try:
            if group:
                os.killpg(self.init_pid, sig)
            else:
                os.kill(self.init_pid, sig)
        except ProcessLookupError:
            pass

    def _close(self) -> None:
        for fd in (self._pidfd, self._status_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._pidfd = self._status_fd = None

    def __del__(self) -> None:
        self._close()


def fork() -> int:
    """`os.fork` (after flushing Python's stdio, or a child that flushes would
    print the parent's pending output again), also from a process with other threads (an xdist worker's
    execnet thread, a notebook's helper threads).

    Python 3.12+ warns that a threaded fork may deadlock in the child on a
    lock another thread held.  The engine's child runs only its own set-up
    (syscalls, no logging, no imports) and then execs or runs the test in a
    process of one thread, and the parent imports all the child needs
    before forking; so the warning, which would fail suites run with
    `-W error`, is silenced for these forks and no others.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*multi-threaded.*fork", category=DeprecationWarning)
        return os.fork()


_own_pidns_fd: int | None = None


def _pidns_fd() -> int:
    global _own_pidns_fd
    if _own_pidns_fd is None:
        _own_pidns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    return _own_pidns_fd


def spawn(config: ProcessConfig, target: Callable[[], int | None] | None = None) -> ContainerProcess:
    """Start the container; return once it runs (or raise why it could not)."""
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    if target is None and config.init:
        target = _exec_target(config)
    rootless = config.userns is not None
    # A Python callable as root: the callable itself is the only fork of
    # the (large) parent, as PID 2 under a placeholder PID 1; see _worker.
    placeholder_mode = target is not None and not rootless and not config.init and _placeholder_binary() is not None
    status_r, status_w = os.pipe2(os.O_CLOEXEC) if target is not None and not placeholder_mode else (None, None)
    sync = (_SyncPipes() if rootless and config.userns and config.userns.needs_helpers and not config.userns_join
            else None)
    if rootless and (config.network.mode == "usermode" or config.network_hook is not None):
        config.network_go = os.pipe2(os.O_CLOEXEC)
    joined = os.pipe2(os.O_CLOEXEC) if config.cgroup_procs or config.network_hook else None
    if config.network_hook is not None and not rootless:
        config.netns_ready = os.pipe2(os.O_CLOEXEC)
    placeholder = None
    try:
        if rootless:
            pid = _fork_relay(config, target, err_w, status_w, sync, joined)
        else:
            fd = _pidns_fd()
            pid = -1
            sc.unshare(sc.CLONE_NEWPID)
            try:
                if placeholder_mode:
                    placeholder = _spawn_placeholder()
                pid = fork()
            finally:
                if pid != 0:
                    sc.setns(fd, sc.CLONE_NEWPID)
            if pid == 0:
                if placeholder_mode:
                    _worker(config, target, err_w, joined)
                _child_main(config, target, err_w, status_w, joined)
    except BaseException:
        for fd in (err_r, err_w, status_r, status_w, *(joined or ()), *(config.netns_ready or ())):
            if fd is not None:
                os.close(fd)
        if placeholder is not None:
            _end_placeholder(placeholder)
        raise
    # (A placeholder stays in the caller's cgroup: it is killed by pid.)
    attach_error = _attach([pid], config, joined) if joined is not None else None
    os.close(err_w)
    if status_w is not None:
        os.close(status_w)
    proc = ContainerProcess(pid, pid, status_r, placeholder)
    network_error = None
    try:
        if sync is not None:
            sync.parent_side(pid, config.userns)  # type: ignore[arg-type]
        if config.network_go is not None:
            proc.init_pid = _read_relay_pid(proc)
            network_error = _start_usermode_network(proc, config.network_go, config)
        message = _read_all(err_r)
    finally:
        os.close(err_r)
    if rootless and proc.init_pid == proc.pid:
        proc.init_pid = _read_relay_pid(proc)
    if network_error is None and not message:
        return proc
    proc.wait()
    raise _first_cause(message, attach_error, network_error)


def _first_cause(message: bytes, attach_error: BaseException | None,
                 network_error: BaseException | None) -> BaseException:
    """The error that made the start fail, not one of its consequences.

    A child that fails on its own (a mount, an exec) exits, and then the
    parent's steps fail too (writing "J" to it: EPIPE; moving it into its
    cgroup: ESRCH; wiring its network); only when the child says it stopped
    *because* it waited for the parent in vain is the parent's error the cause."""
    child_error = _start_error(message) if message else None
    parent_error = network_error or attach_error
    if parent_error is None or (child_error is not None and not str(child_error).endswith(_WAITED_IN_VAIN)):
        assert child_error is not None
        return child_error
    if parent_error is attach_error and not (isinstance(attach_error, ContainerStartError)
                                             or type(attach_error).__module__.endswith("errors")):
        return ContainerStartError(f"cannot move the container into its cgroup: {attach_error}")
    return parent_error


# What a child says when it stopped because a step of the parent's failed.
_NOT_ATTACHED = "could not move the container into its cgroup"
_NOT_WIRED = "the container's network could not be wired"
_WAITED_IN_VAIN = (_NOT_ATTACHED, _NOT_WIRED)


def _start_usermode_network(proc: ContainerProcess, go: tuple[int, int], config: ProcessConfig) -> BaseException | None:
    """Rootless: wire the container's network (its rootless bridge's veth,
    or slirp4netns), then let it go on (or, on failure, let it stop: it
    reads EOF instead of "G")."""
    os.close(go[0])
    try:
        if config.network_hook is not None:
            config.network_hook(proc.init_pid)
        else:
            from .usermode_net import Helper

            proc.net_helper = Helper(proc.init_pid)
        os.write(go[1], b"G")
        return None
    except BaseException as exc:  # noqa: BLE001 - raised once the child is reaped
        return exc
    finally:
        os.close(go[1])


def _wait_network(config: ProcessConfig, err_w: int) -> None:
    if config.network_go is None:
        return
    os.close(config.network_go[1])
    if os.read(config.network_go[0], 1) != b"G":
        _fail(err_w, 125, _NOT_WIRED)
    os.close(config.network_go[0])
    network.configure(config.network)  # eth0 is there now (a rootless bridge)


# --- the placeholder PID 1 (a Python callable as root) -------------------------
#
# A PID namespace needs a PID 1, and a PID 1 ignores every signal it has no
# handler for, which a test killing itself must not meet; so the test cannot
# be PID 1.  Forking the parent twice (a Python PID 1, the test as PID 2)
# doubles the dominant cost: the fork and exit of a large address space
# (~17 ms for 100 MiB here).  Instead PID 1 is `cat`, started with
# posix_spawn (vfork: no copy), and the test is the only fork of the parent,
# PID 2 and the parent's own child.  The placeholder holds no privilege the
# test could use: the kernel refuses /proc/1/root and friends to a process
# with fewer capabilities, and it runs in no namespace but the PID one.  It
# does not reap orphans; they go with the namespace at the end.
#
# `cat` reads the parent's lifeline pipe, whose write end only the parent
# and its forks hold: when they are all gone, even by SIGKILL (the forks die
# with the parent, PR_SET_PDEATHSIG), `cat` reads EOF and exits, and its
# namespace with it.  Nothing else would end a placeholder of a killed run.

_placeholder_path: str | None = None
_lifeline: tuple[int, int, int] | None = None  # (owner pid, read end, write end)


def _placeholder_binary() -> str | None:
    global _placeholder_path
    if _placeholder_path is None:
        _placeholder_path = next((p for p in ("/bin/cat", "/usr/bin/cat") if os.access(p, os.X_OK)), "")
    return _placeholder_path or None


def _lifeline_fd() -> int:
    global _lifeline
    if _lifeline is None or _lifeline[0] != os.getpid():  # a fork makes its own
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        _lifeline = (os.getpid(), read_fd, write_fd)
    return _lifeline[1]


def _spawn_placeholder() -> int:
    binary = _placeholder_binary()
    assert binary
    actions = [(os.POSIX_SPAWN_DUP2, _lifeline_fd(), 0),
               (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
    return os.posix_spawn(binary, [binary], {}, file_actions=actions, setsid=True,
                          setsigdef=(signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE))


def _end_placeholder(pid: int) -> None:
    """PID 1's death takes whatever is left in its PID namespace along."""
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _worker(config: ProcessConfig, target, err_w: int, joined: tuple[int, int] | None) -> None:
    """PID 2 under the placeholder: build the container, run the callable."""
    code = 125
    try:
        try:
            sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
            if _lifeline is not None:
                os.close(_lifeline[2])  # the placeholders' lifeline is the parent's alone
            _enter_container(config, joined, in_namespaces=False)
            own_session()
            _drop_privileges(config)
            seccomp.install(config)
            descriptors.seal()
        except BaseException as exc:  # noqa: BLE001
            _fail(err_w, 125, _describe(exc))
        os.close(err_w)  # set-up done: start() returns in the parent
        code = _call(target)
    finally:
        os._exit(code)


def _attach(pids: list[int], config: ProcessConfig, joined: tuple[int, int]) -> BaseException | None:
    """Move the child into its cgroup from here, while it builds its root.

    The first cgroup migration after a quiet spell waits for an RCU grace
    period (the kernel's cgroup_threadgroup_rwsem), 5-15 ms on a small VM;
    done by the parent it overlaps the child's own set-up instead of adding
    to it.  So does the network: once the child says its network namespace
    exists, the parent puts the veth end in it.  The child waits for the
    byte on `joined` before it configures `eth0` and unshares its cgroup
    namespace (whose root is the cgroup it is in at that moment)."""
    read_fd, write_fd = joined
    os.close(read_fd)
    try:
        for path in config.cgroup_procs:
            for pid in pids:
                with open(path, "w") as f:
                    f.write(str(pid))
        if config.netns_ready is not None:
            ready_r, ready_w = config.netns_ready
            os.close(ready_w)
            try:
                if os.read(ready_r, 1) != b"N":
                    return ContainerStartError("the container stopped before its network namespace was made")
            finally:
                os.close(ready_r)
            config.network_hook(pids[0])  # type: ignore[misc]
        os.write(write_fd, b"J")
        return None
    except BaseException as exc:  # noqa: BLE001 - the child sees EOF instead of J and stops
        return exc
    finally:
        os.close(write_fd)


def _wait_attached(joined: tuple[int, int] | None) -> None:
    if joined is None:
        return
    os.close(joined[1])
    if os.read(joined[0], 1) != b"J":
        raise ContainerStartError(_NOT_ATTACHED)
    os.close(joined[0])


def read_exactly(fd: int, size: int) -> bytes:
    """`size` bytes from `fd`, or fewer if it reaches EOF first."""
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _start_error(message: bytes) -> ContainerStartError:
    code_text, _, text = message.decode(errors="replace").partition("\t")
    code = int(code_text) if code_text.isdigit() else 125
    kind = {127: CommandNotFound, 126: CommandNotExecutable}.get(code, ContainerStartError)
    return kind(text)


def _fail(err_w: int, code: int, text: str) -> NoReturn:
    try:
        os.write(err_w, f"{code}\t{text}".encode())
    finally:
        os._exit(code)


# --- rootless: a relay enters the user namespace, PID 1 is its child ---------


class _SyncPipes:
    """Lets the parent map the relay's user namespace with newuidmap."""

    def __init__(self) -> None:
        self.to_parent = os.pipe2(os.O_CLOEXEC)
        self.to_child = os.pipe2(os.O_CLOEXEC)

    def child_wait_for_maps(self) -> None:
        os.write(self.to_parent[1], b"U")
        if os.read(self.to_child[0], 1) != b"G":
            os._exit(125)

    def parent_side(self, pid: int, userns: UserNamespace) -> int:
        os.close(self.to_parent[1])
        os.close(self.to_child[0])
        try:
            if os.read(self.to_parent[0], 1) == b"U":
                userns.write_maps_with_helpers(pid)
                os.write(self.to_child[1], b"G")
        finally:
            os.close(self.to_parent[0])
            os.close(self.to_child[1])
        return pid


_RELAY_PID = struct.Struct("i")


def _fork_relay(config, target, err_w, status_w, sync, joined) -> int:
    relay_r, relay_w = os.pipe2(os.O_CLOEXEC)
    pid = fork()
    if pid != 0:
        os.close(relay_w)
        _relay_pid_fds[pid] = relay_r
        return pid
    # The relay (single-threaded, a fresh fork); it must never return.
    try:
        _relay_main(config, target, err_w, status_w, sync, relay_r, relay_w, joined)
    finally:
        os._exit(125)


def _relay_main(config, target, err_w, status_w, sync, relay_r, relay_w, joined) -> None:
    try:
        os.close(relay_r)
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        if config.userns_join is not None:
            fd = os.open(config.userns_join, os.O_RDONLY | os.O_CLOEXEC)
            sc.setns(fd, sc.CLONE_NEWUSER)  # already mapped: the network's own
            os.close(fd)
        else:
            sc.unshare(sc.CLONE_NEWUSER)
            if sync is not None:
                sync.child_wait_for_maps()
            else:
                config.userns.write_own_maps()
        _wait_attached(joined)
        sc.unshare(CONTAINER_NAMESPACES | sc.CLONE_NEWCGROUP | sc.CLONE_NEWPID)
        child = os.fork()
    except BaseException as exc:  # noqa: BLE001 - everything becomes a start error
        _fail(err_w, 125, _describe(exc))
    if child == 0:
        _child_main(config, target, err_w, status_w, None, in_namespaces=True)
    if config.network_go is not None:
        for fd in config.network_go:
            os.close(fd)
    os.close(err_w)
    if status_w is not None:
        os.close(status_w)
    os.write(relay_w, _RELAY_PID.pack(child))
    os.close(relay_w)
    _relay_exit(child)


_relay_pid_fds: dict[int, int] = {}


def _read_relay_pid(proc: ContainerProcess) -> int:
    fd = _relay_pid_fds.pop(proc.pid, None)
    if fd is None:
        return proc.pid
    # Exactly the pid, not up to EOF: PID 1 and its children inherited the
    # write end (no exec closes it in callable mode) and keep it open.
    try:
        data = read_exactly(fd, _RELAY_PID.size)
    finally:
        os.close(fd)
    return _RELAY_PID.unpack(data)[0] if len(data) == _RELAY_PID.size else proc.pid


def _relay_exit(child: int) -> None:
    """Wait for PID 1 and end the same way, so the caller sees its status.

    Runs in a forked child: it must end in `os._exit` whatever happens, never
    return into the caller's stack."""
    try:
        _relay_wait(child)
    finally:
        os._exit(125)


def _forwarder(pid: int):  # noqa: ANN202
    """A handler that passes the signal on to `pid`: a process of the
    container may signal its PID 1 after the target is gone, and an error
    in a handler would end the waiting PID 1 before it reports."""

    def forward(sig: int, _frame: object) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    return forward


def _relay_wait(child: int) -> None:
    for forwarded in FORWARDED_SIGNALS:
        signal.signal(forwarded, _forwarder(child))
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except ChildProcessError:
            os._exit(125)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if sig != signal.SIGKILL:  # (whose disposition cannot be set: it is always the default)
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


# --- PID 1 --------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not str(exc).startswith(type(exc).__name__):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _child_main(config: ProcessConfig, target, err_w: int, status_w: int | None,
                joined: tuple[int, int] | None, in_namespaces: bool = False) -> None:
    """PID 1 of the container.  Never returns: whatever happens ends in `os._exit`."""
    try:
        _pid1(config, target, err_w, status_w, joined, in_namespaces)
    finally:
        os._exit(125)


def _pid1(config: ProcessConfig, target, err_w: int, status_w: int | None,
          joined: tuple[int, int] | None, in_namespaces: bool) -> None:
    try:
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        _enter_container(config, joined, in_namespaces)
        _wait_network(config, err_w)
        own_session()
        _drop_privileges(config)
        seccomp.install(config)
    except BaseException as exc:  # noqa: BLE001
        _fail(err_w, 125, _describe(exc))
    if target is None:
        _exec(config, err_w)
    _run_callable(target, err_w, status_w)


def _enter_container(config: ProcessConfig, joined: tuple[int, int] | None, in_namespaces: bool) -> None:
    """Namespaces, network, root file system, cgroup namespace."""
    if not in_namespaces:
        sc.unshare(CONTAINER_NAMESPACES)
    network.loopback_up()  # before the parent's veth work: both need the kernel's RTNL lock
    if config.netns_ready is not None:  # the parent wires the veth meanwhile
        os.close(config.netns_ready[0])
        os.write(config.netns_ready[1], b"N")
        os.close(config.netns_ready[1])
    rootfs.setup(config.rootfs, config.hostname)
    if not in_namespaces:
        # Only now wait for the parent to have moved us into the cgroup (so
        # its wait overlapped all of the above); the cgroup namespace's root
        # is the cgroup we sit in when we unshare it.
        _wait_attached(joined)
        network.configure(config.network)  # eth0 is there now
        sc.unshare(sc.CLONE_NEWCGROUP)
    rootfs.mount_cgroup2(config.rootfs)


def own_session() -> None:
    """A session of the container's own, so `kill(0, sig)` (or killpg of its
    group) reaches nothing outside, and a caller's terminal is no longer its
    controlling terminal (no TIOCSTI into the caller's shell, no SIGTTIN);
    and a fresh session keyring instead of the caller's (as runc does)."""
    os.setsid()
    try:
        sc.join_new_session_keyring()
    except OSError as exc:
        # ENOSYS: no keyrings in this kernel; EPERM: the caller's own
        # seccomp filter (under Docker) blocks keyctl, for it as for us.
        if exc.errno == errno.EDQUOT:
            raise ContainerStartError("cannot give the container a session keyring of its own: this user's key "
                                      "quota is full (each running container holds one key); fix: raise "
                                      "kernel.keys.maxkeys and kernel.keys.maxbytes with sysctl") from None
        if exc.errno not in (errno.ENOSYS, errno.EPERM):
            raise


def _drop_privileges(config: ProcessConfig) -> None:
    """Become the container's user with Docker's capabilities: uid 0 (with
    any gid) keeps the default set, any other uid none at all (the kernel
    clears effective and permitted on the switch away from uid 0; the
    bounding set is cut first, so a setuid-root file could not give back
    more than the default set even without no_new_privs)."""
    uid, gid = _resolve_user(config.user)
    _enter_workdir(config.cwd)
    if not config.privileged:
        capabilities.drop_to_default(config.cap_last)
    if gid != 0 or uid != 0:
        if config.userns is None:
            os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    if not config.privileged:
        capabilities.no_new_privs()


def _enter_workdir(cwd: str) -> None:
    """chdir to the working directory, made first when the image lacks it (as Docker does)."""
    try:
        os.chdir(cwd)
        return
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ContainerStartError(f"workdir {cwd}: {exc.strerror}; use a directory of the image, or one it can hold") from None
    try:
        os.makedirs(cwd, 0o755, exist_ok=True)
        os.chdir(cwd)
    except OSError as exc:
        raise ContainerStartError(f"workdir {cwd} is not in the image and cannot be made there ({exc.strerror}); "
                                  "use a directory of the image") from None


def _resolve_user(user: str | None) -> tuple[int, int]:
    """Resolve "uid[:gid]" or "name[:group]" against the container's files."""
    if not user:
        return 0, 0
    name, _, group = user.partition(":")
    uid = gid = None
    if name.isdigit():
        uid = int(name)
    entries = _read_colon_file("/etc/passwd")
    for entry in entries:
        if len(entry) > 3 and (entry[0] == name or (uid is not None and entry[2] == name)):
            uid, gid = int(entry[2]), int(entry[3])
            break
    if uid is None:
        raise ContainerStartError(f"user {name!r} not found in the image's /etc/passwd")
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            for entry in _read_colon_file("/etc/group"):
                if entry[0] == group and len(entry) > 2:
                    gid = int(entry[2])
                    break
            else:
                raise ContainerStartError(f"group {group!r} not found in the image's /etc/group")
    return uid, gid if gid is not None else uid


def _read_colon_file(path: str) -> list[list[str]]:
    try:
        with open(path) as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except OSError:
        return []


_RESETTABLE = tuple(s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP))


def _restore_signals() -> None:
    """exec keeps ignored signals ignored and blocked ones blocked: the
    command starts with every signal at its default and none blocked,
    whatever Python changed (SIGPIPE, SIGXFSZ) or the caller inherited
    (`nohup`'s SIGHUP, a background job's SIGINT and SIGQUIT)."""
    for sig in _RESETTABLE:
        # Handlers are reset by exec itself; only "ignore" survives it.  Python
        # read every signal's disposition at start-up, so asking costs no syscall.
        if signal.getsignal(sig) is signal.SIG_IGN:
            signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def redirect_stdio(stdio: tuple) -> None:
    """Put the given fds on 0, 1, 2 (in the child, just before exec)."""
    for target, fd in enumerate(stdio):
        if fd is not None and fd != target:
            os.dup2(fd, target)


def _exec(config: ProcessConfig, err_w: int) -> None:
    assert config.argv
    _restore_signals()
    redirect_stdio(config.stdio)
    if config.close_fds:
        descriptors.cloexec_all()  # err_w, close-on-exec, stays until the exec
    try:
        os.execvpe(config.argv[0], config.argv, config.env)
    except FileNotFoundError:
        _fail(err_w, 127, f"{config.argv[0]}: command not found in the container (PATH={config.env.get('PATH', '')})")
    except PermissionError:
        _fail(err_w, 126, f"{config.argv[0]}: permission denied (not executable)")
    except OSError as exc:
        _fail(err_w, 126, f"{config.argv[0]}: cannot execute: {exc.strerror}")


def _exec_target(config: ProcessConfig) -> Callable[[], int]:
    """The command as PID 2 (`--init`): errors can no longer travel through
    the set-up pipe, so they are said on stderr with the usual exit codes."""

    def run() -> int:
        assert config.argv
        redirect_stdio(config.stdio)
        descriptors.cloexec_all()
        _restore_signals()
        try:
            os.execvpe(config.argv[0], config.argv, config.env)
        except FileNotFoundError:
            print(f"hermetic: error: {config.argv[0]}: command not found in the container", file=sys.stderr)
            return 127
        except OSError as exc:
            print(f"hermetic: error: {config.argv[0]}: cannot execute: {exc.strerror}", file=sys.stderr)
            return 126
        return 126

    return run


def _call(target) -> int:  # noqa: ANN001
    """Run the callable; its int result (or SystemExit code) is the exit code."""
    code = 1
    try:
        result = target()
        code = result if isinstance(result, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            pass
    return code


def _run_callable(target, err_w: int, status_w: int | None) -> None:
    """Fork the callable as PID 2; stay as its reaper and signal forwarder."""
    os.close(err_w)  # set-up done: start() returns in the parent
    # PID 1 holds the caller's descriptors until it closes them below, and
    # any process of the container could reach them through /proc/1/fd: not
    # dumpable, it cannot (and it stays so: nothing in it is to be looked at).
    sc.prctl(sc.PR_SET_DUMPABLE, 0)
    worker = os.fork()
    if worker == 0:
        code = 1
        try:
            if status_w is not None:
                os.close(status_w)  # PID 1's, for the true exit status
            descriptors.seal()
            sc.prctl(sc.PR_SET_DUMPABLE, 1)  # (only now: its fds are sealed)
            code = _call(target)
        finally:
            os._exit(code)
    descriptors.close_except((status_w,) if status_w is not None else ())
    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, _forwarder(worker))
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(125)
        if pid == worker:
            if status_w is not None:
                os.write(status_w, struct.pack("i", status))
            os._exit(0)
