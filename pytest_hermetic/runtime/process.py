"""The container process as its parent sees it: the config, `spawn`, the handle.

How many forks it takes, and why (a fork of a large Python parent costs
1-4 ms here, so each one counts):

* As root, the parent unshares a PID namespace *for its children only*
  (per thread; its own PID never changes), forks once, and sets its
  children's namespace back.  That child is PID 1 of the container
  (init.py) and a direct child of the caller, so `waitpid` sees its real
  exit status.  A Python callable as root runs as PID 2 under a
  placeholder PID 1 instead (placeholder.py).
* Rootless, a user namespace has to be entered by a single-threaded process,
  so an intermediate child (relay.py) enters it (and all the others), forks
  PID 1 and relays its exit status (by exiting the same way).

As root on cgroup v1 the child is forked inside its cgroups
(cgroups.ThreadRoute); else, while it builds its root, the parent moves it
there.  The parent wires its network meanwhile; the two sides wait for
each other with the messages of channel.py, and set-up errors come back as
one line on a close-on-exec pipe (a clean exec closes it with nothing
written).  The pytest plugin's zygote may fork a callable's child instead
(`spawn`'s `forker`); the handle then learns its pid later and has it
reaped there.

One concern, however long: `spawn` and the handle it returns are the two
halves of one start (a handle returned before its child's set-up is
confirmed, or before its pid is known), each reading the other's state.
"""

from __future__ import annotations

import os
import select
from .._record import record
TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it costs start-up
    from .file_relay import FileRelay
    from typing import Callable, Protocol

    class Forker(Protocol):
        """Who forks a callable's child in the caller's place (`spawn`)."""

        def __call__(self, config: ProcessConfig, err_w: int, cgroup_tasks: list[str]) -> Callable[[], tuple[int, int]]: ...

        def reap(self, pid: int) -> int: ...

        def reaped(self, pid: int) -> int | None:
            """`reap` for a child that has ended, without waiting: None
            until the reaping process has answered (asked at the first call)."""

    from .netns_reuse import Netns
    from .usermode_net import Helper

from ..errors import ContainerStartError, HermeticError
from . import capabilities, cgroups, channel, native_child, rootfs
from . import syscalls as sc
from .channel import Channel
from .fork import bare_fork, fork
from .config import ProcessConfig  # re-exported: callers build it as process.ProcessConfig


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
        self._pid = pid  # our direct child (PID 1, the rootless relay, or the callable as PID 2)
        self._init_pid = init_pid  # host pid of the process whose namespaces are the container's
        # spawn(confirm=False) with a forker: what gives the pid once the
        # other process has forked (asked for when first needed).
        self.pid_later: Callable[[], tuple[int, int]] | None = None  # (pid, its placeholder's)
        self.placeholder = placeholder  # host pid of a placeholder PID 1, if any
        self._status_fd = status_fd
        self._pidfd: int | None = None
        self.exit_status: ExitStatus | None = None
        self.net_helper: Helper | None = None  # slirp4netns serving this container, if any
        self.tty: int | None = None  # an exec's terminal's master (exec -t): the caller's to use and close
        self.netns: Netns | None = None  # its spare network namespace, given back once PID 1 is reaped
        self.files: FileRelay | None = None  # an exec's relay of the caller's written files, ended with it
        self.unconfirmed: tuple[int, BaseException | None] | None = None  # spawn(confirm=False): (err_r, attach error)
        self.reaper: Forker | None = None  # who reaps it, where another process forked it (spawn)

    @property
    def pid(self) -> int:
        if self.pid_later is not None:
            self._resolve()
        return self._pid

    @pid.setter
    def pid(self, value: int) -> None:
        self._pid = value

    @property
    def init_pid(self) -> int:
        if self.pid_later is not None:
            self._resolve()
        return self._init_pid

    @init_pid.setter
    def init_pid(self, value: int) -> None:
        self._init_pid = value

    def _resolve(self) -> None:
        later, self.pid_later = self.pid_later, None
        assert later is not None
        try:
            self._pid, self.placeholder = later()
            self._init_pid = self._pid
        except BaseException:
            # Never forked: nothing to wait for; what was made for it goes.
            self.exit_status = ExitStatus(signal=9)
            if self.placeholder is not None:
                from . import placeholder

                placeholder.end(self.placeholder)
                self.placeholder = None
            if self.netns is not None:
                self.netns.close()
                self.netns = None
            self._close()
            raise

    def confirm(self) -> None:
        """After `spawn(confirm=False)`: wait until the child's set-up is
        done (it may well be by now); raise why it failed, once reaped."""
        if self.pid_later is not None:
            self._resolve()  # (raises why the other process did not fork)
        pending, self.unconfirmed = self.unconfirmed, None
        if pending is None:
            return
        err_r, attach_error = pending
        try:
            message = channel.read_all(err_r)
        finally:
            os.close(err_r)
        if message:
            self.wait()
            raise _first_cause(message, attach_error, None)

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
                status = os.waitpid(self.pid, 0)[1] if self.reaper is None else self.reaper.reap(self.pid)
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
        return self._ended(status)

    def poll(self) -> ExitStatus | None:
        """The exit status if the container has ended, without waiting at
        all: where another process reaps it (`Forker.reaped`), None until
        that process has answered, which it is asked now (its answer may
        wait behind its other work)."""
        if self.exit_status is not None or self.reaper is None:
            return self.wait(timeout=0)
        ready, _, _ = select.select([self.fileno()], [], [], 0)
        status = self.reaper.reaped(self.pid) if ready else None
        return None if status is None else self._ended(status)

    def _ended(self, status: int) -> ExitStatus:
        """Reaped with wait status `status`: what the container held goes."""
        result = ExitStatus.from_wait(status)
        if self.placeholder is not None:
            from . import placeholder

            placeholder.end(self.placeholder)
            self.placeholder = None
        if self.netns is not None:  # PID 1 reaped: nothing of the container is left in it
            from . import netns_reuse

            netns_reuse.give_back(self.netns)
            self.netns = None
        reported = self._read_reported_status()
        self.exit_status = reported or result
        if self.files is not None:  # what the command wrote (a straggler of its own gets EPIPE later)
            self.files.close()
            self.files = None
        self._close()
        if self.net_helper is not None:
            self.net_helper.close()
            self.net_helper = None
        return self.exit_status

    def _read_reported_status(self) -> ExitStatus | None:
        if self._status_fd is None:
            return None
        try:
            data = channel.read_exactly(self._status_fd, channel.STATUS.size)
        except OSError:
            return None
        if len(data) != channel.STATUS.size:
            return None
        return ExitStatus.from_wait(channel.STATUS.unpack(data)[0])

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

    def kill_namespace(self) -> bool:
        """SIGKILL PID 1 where it is the caller's child (or the zygote's, held
        until reaped on our word): the kernel then kills every process of its
        PID namespace, hands out no pid there meanwhile (nothing forks away),
        and lets PID 1 be reaped once all are gone.  Cheaper than the
        cgroup's frozen kill (a v1 freezer is polled) where no one asks who
        was killed: a removal.  False where PID 1 is not ours to signal (a
        placeholder's callable, the rootless relay's child: its pid may be
        free already)."""
        if self.placeholder is not None or self.pid != self.init_pid:
            return False
        try:
            os.kill(self.pid, 9)  # (SIGKILL; signal.py is not imported at run time: start-up)
        except ProcessLookupError:
            pass
        return True

    def _close(self) -> None:
        if self.unconfirmed is not None:  # never confirmed (removed unused)
            os.close(self.unconfirmed[0])
            self.unconfirmed = None
        for fd in (self._pidfd, self._status_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._pidfd = self._status_fd = None

    def __del__(self) -> None:
        self._close()
        if self.netns is not None:  # never waited for: not known to be empty, so not given back
            self.netns.close()


_own_pidns_fd: int | None = None


def _pidns_fd() -> int:
    global _own_pidns_fd
    if _own_pidns_fd is None:
        _own_pidns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    return _own_pidns_fd


def spawn(config: ProcessConfig, target: Callable[[], int | None] | None = None,
          confirm: bool = True, forker: Forker | None = None) -> ContainerProcess:
    """Start the container; return once it runs (or raise why it could not).
    Without `confirm` (as root, no network to wire but into namespaces
    made ahead), return once it is forked: its `confirm()` then waits for
    its set-up (the pytest plugin starts the next test's container while
    the current test runs).
    `forker(config, err_w, cgroup_tasks) -> (() -> (pid, placeholder pid))`,
    with `.reap(pid) -> wait status`: starts a placeholder PID 1 and forks
    the callable's child under it in this one's place, as root on cgroup v1
    in its cgroups (`cgroup_tasks`): the pytest plugin's zygote.  Used for
    a callable under a placeholder whose cgroups need no move from here."""
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    if target is None and config.init:
        target = _init().exec_target(config)
    if target is not None:
        _init().prepare_callable()
    rootless = config.userns is not None
    if rootless:
        from . import relay  # (lazily: its import, with resource's, is not a root container's)
    # A Python callable as root: the callable itself is the only fork of
    # the (large) parent, as PID 2 under a placeholder PID 1.  Not where the
    # container may trace its PID 1 (CAP_SYS_PTRACE, privileged): the
    # placeholder is the host's root in the host's namespaces but the PID
    # one, so tracing it would run code there; PID 1 is then the
    # container's own, as under Docker.
    placeholder_mode = (target is not None and not rootless and not config.init and not config.privileged
                        and not capabilities.may_trace(config.caps) and _placeholder().available())
    status_r, status_w = os.pipe2(os.O_CLOEXEC) if target is not None and not placeholder_mode else (None, None)
    maps = (relay.UserMaps() if rootless and config.userns and config.userns.mapped_from_outside and not config.userns_join
            else None)
    if rootless and (config.network.mode == "usermode" or config.network_hook is not None):
        config.network_go = Channel()
    if not rootless:
        rootfs.kernelfs.prepare()  # the host's device numbers, looked up here once, not in every child
    wire_ahead = None
    if _made_ahead and not rootless and config.network_hook is None and config.network.mode == "none":
        from . import spare

        config.spare = spare.take()  # the namespaces made ahead, if any (the plugin's next test)
    elif _made_ahead and not rootless and config.network_netns_hook is not None and config.network.mode == "bridge":
        from . import spare

        # A network to wire: into the namespace made ahead, before the fork
        # (below), so the child joins it wired and nobody waits on the other.
        config.spare = spare.take()
        if config.spare is not None:
            wire_ahead, config.network_hook = config.network_netns_hook, None
    config.network_netns_hook = None  # (used, or not usable: no spare set)
    # As root, the child is forked inside its v1 cgroups (cgroups.ThreadRoute):
    # no migration to wait for; else the parent moves it while it sets up.
    route = cgroups.ThreadRoute.for_paths(config.cgroup_procs) if not rootless and config.cgroup_procs else None
    # A command's child with nothing to hand over: native, where it can be
    # (native_child.py: its steps written down here, run by C), born in its
    # cgroup (on v1 through the route, on v2 by clone3's CLONE_INTO_CGROUP).
    plan = native_child.plan_for(config) if target is None and not rootless and config.network_hook is None else None
    into_cgroup = None
    if plan is not None and route is None and config.cgroup_procs:
        into_cgroup = native_child.cgroup_fd(config.cgroup_procs)
        if into_cgroup is None:
            plan = None
    python_child = _init() if plan is None else None  # (imported before the fork: nothing is, after it)
    attach = [] if route is not None or into_cgroup is not None else config.cgroup_procs
    joined = Channel() if attach or config.network_hook else None
    if config.network_hook is not None and not rootless:
        config.netns_ready = Channel()
    first = None
    pid_later: Callable[[], tuple[int, int]] | None = None
    try:
        if wire_ahead is not None:
            assert config.spare is not None
            wire_ahead(config.spare["net"])
        if rootless:
            pid = relay.start(config, target, err_w, status_w, maps, joined)
        elif forker is not None and placeholder_mode and joined is None:
            # (Its placeholder too: the zygote's own child, made ahead there;
            # pytest would wait for each one's vfork and exec.)
            pid_later = forker(config, err_w, config.cgroup_procs if route is not None else [])
        else:
            forker = None
            fd = _pidns_fd()
            pid = -1
            ready = _placeholder().take() if placeholder_mode else None
            if ready is not None:  # started ahead, in its own PID namespace: fork into that
                first, ready_ns = ready
                try:
                    sc.setns(ready_ns, sc.CLONE_NEWPID)
                finally:
                    os.close(ready_ns)
            else:
                sc.unshare(sc.CLONE_NEWPID)
            try:
                if placeholder_mode and first is None:
                    first = _placeholder().start()  # (before the step in: it stays in the caller's cgroup)
                if route is not None:
                    try:
                        route.step_in()
                    except OSError:  # (not seen) the parent moves the child then, as on v2
                        route, attach, plan = None, config.cgroup_procs, None
                        python_child = _init()  # (the child must be told it is attached: Python's)
                        joined = joined or Channel()
                if plan is not None:  # (returns once the child has exec'd or failed)
                    pid = plan.start(err_w, into_cgroup)
                else:
                    # A command's child runs only the set-up and execs: none of
                    # Python's after-fork work is for it (fork.bare_fork).
                    fork_now = bare_fork() if target is None else None
                    pid = fork_now() if fork_now is not None else fork()
            finally:
                if pid != 0:
                    if route is not None:
                        route.step_out()
                    sc.setns(fd, sc.CLONE_NEWPID)
            if pid == 0:
                assert python_child is not None
                if placeholder_mode:
                    python_child.worker_main(config, target, err_w, joined)
                python_child.main(config, target, err_w, status_w, joined)
    except BaseException:
        for end in (err_r, err_w, status_r, status_w, into_cgroup):
            if end is not None:
                os.close(end)
        for pipe in (joined, config.netns_ready):
            if pipe is not None:
                pipe.close()
        if first is not None:
            _placeholder().end(first)
        if config.spare is not None:
            from . import spare

            spare.lend(config.spare, False)
        raise
    if into_cgroup is not None:
        os.close(into_cgroup)
    # (A placeholder stays in the caller's cgroup: it is killed by pid.)
    # The set is the child's now; its network namespace comes back to `proc` (given back in `wait`).
    netns = None
    if config.spare is not None:
        from . import netns_reuse, spare

        # (A namespace wired here holds a veth end: never one to give back.)
        netns = spare.lend(config.spare, wire_ahead is None and netns_reuse.reusable(
            config.privileged, config.caps, config.seccomp, tuple(bind.source for bind in config.rootfs.binds)))
        config.spare = None
    attach_error = _attach([pid], attach, config, joined) if joined is not None else None
    if config.make_spare:
        prepare_next(with_placeholder=pid_later is None)  # while the child builds its root: off the next start's path
    if config.meanwhile is not None:
        config.meanwhile()
    os.close(err_w)
    if status_w is not None:
        os.close(status_w)
    lazy = pid_later is not None and not confirm
    if lazy:
        pid = -1  # (asked for at its turn)
    elif pid_later is not None:
        try:
            pid, first = pid_later()  # the other process's fork, ordered before the work above: they overlapped
        except BaseException:
            os.close(err_r)
            if netns is not None:
                netns.close()
            raise
    proc = ContainerProcess(pid, pid, status_r, first)
    proc.netns = netns
    if pid_later is not None:
        assert forker is not None
        proc.reaper = forker
        if lazy:  # (started ahead: its pid is first asked for at its turn, see confirm)
            proc.pid_later = pid_later
    if not confirm and not rootless and config.network_go is None and plan is None:
        proc.unconfirmed = (err_r, attach_error)
        return proc
    network_error = None
    try:
        if maps is not None:
            maps.parent_side(pid, config.userns)  # type: ignore[arg-type]
        if config.network_go is not None:
            proc.init_pid = relay.pid1(proc.pid)
            network_error = _start_usermode_network(proc, config.network_go, config)
        message = channel.read_all(err_r)
        if message and plan is not None:
            message = plan.line(message)
    finally:
        os.close(err_r)
    if rootless and proc.init_pid == proc.pid:
        proc.init_pid = relay.pid1(proc.pid)
    if network_error is None and not message:
        return proc
    proc.wait()
    raise _first_cause(message, attach_error, network_error)


# Whether this process (or the one it is a fork of) made anything ahead:
# until then a container's start needs none of spare.py, netns_reuse.py and
# placeholder.py, and `hermetic run` does not import them (0.36 ms).
_made_ahead = False


def _init():  # noqa: ANN202 - the module
    """init.py, the Python child: imported where a container has one (a
    command's native child needs none of it: 0.4 ms of `hermetic run`)."""
    from . import init

    return init


def _placeholder():  # noqa: ANN202 - the module
    """placeholder.py, imported where a container uses one (a callable's)."""
    from . import placeholder

    return placeholder


def prepare_next(with_placeholder: bool = True) -> None:
    """Make the next container's network, IPC and UTS namespaces (spare.py)
    and (unless another process forks it) its placeholder PID 1 in a new PID
    namespace (placeholder.py) now, while this process would wait anyway:
    the pytest plugin's parent while a test's child builds its root.  Root
    only; a failure just leaves none made."""
    global _made_ahead
    from . import placeholder, spare

    _made_ahead = True
    try:
        spare.prepare()
        if with_placeholder:
            placeholder.prepare()
    except OSError:
        pass  # the next container makes its own, as always


def discard_prepared() -> None:
    """Let go of what `prepare_next` made for a container that will not come."""
    if _made_ahead:
        from . import placeholder, spare

        spare.drop()
        placeholder.discard_ready()


def _first_cause(message: bytes, attach_error: BaseException | None,
                 network_error: BaseException | None) -> BaseException:
    """The error that made the start fail, not one of its consequences.

    A child that fails on its own (a mount, an exec) exits, and then the
    parent's steps fail too (telling it ATTACHED: EPIPE; moving it into its
    cgroup: ESRCH; wiring its network); only when the child says it stopped
    *because* it waited for the parent in vain is the parent's error the cause."""
    child_error = channel.start_error(message) if message else None
    parent_error = network_error or attach_error
    if parent_error is None or (child_error is not None and not str(child_error).endswith(channel.WAITED_IN_VAIN)):
        assert child_error is not None
        return child_error
    if parent_error is attach_error and not isinstance(attach_error, HermeticError):
        return ContainerStartError(f"cannot move the container into its cgroup: {attach_error}")
    return parent_error


def _start_usermode_network(proc: ContainerProcess, go: Channel, config: ProcessConfig) -> BaseException | None:
    """Rootless: wire the container's network (its rootless bridge's veth,
    or slirp4netns), then let it go on (or, on failure, let it stop: it
    reads EOF instead of NETWORK_WIRED)."""
    go.close_read()
    try:
        if config.network_hook is not None:
            config.network_hook(proc.init_pid)
        else:
            # Imported here, in the parent: it brings subprocess and shutil
            # (~4 ms measured with -X importtime) that only slirp4netns needs.
            from .usermode_net import Helper

            proc.net_helper = Helper(proc.init_pid, config.network.api_socket)
        go.send(channel.NETWORK_WIRED)
        return None
    except BaseException as exc:  # noqa: BLE001 - raised once the child is reaped
        return exc
    finally:
        go.close_write()


def _attach(pids: list[int], procs_files: list[str], config: ProcessConfig, joined: Channel) -> BaseException | None:
    """Move the child into its cgroup from here, while it builds its root.

    The first cgroup migration after a quiet spell waits for an RCU grace
    period (the kernel's cgroup_threadgroup_rwsem), 5-15 ms on a small VM;
    done by the parent it overlaps the child's own set-up instead of adding
    to it.  So does the network: once the child says NETNS_MADE, the parent
    puts the veth end in its network namespace.  The child waits for
    ATTACHED before it configures `eth0` and unshares its cgroup namespace
    (whose root is the cgroup it is in at that moment)."""
    joined.close_read()
    try:
        for path in procs_files:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)  # (open() would add 4 syscalls)
            try:
                for pid in pids:
                    os.write(fd, str(pid).encode())
            finally:
                os.close(fd)
        if config.netns_ready is not None:
            if not config.netns_ready.receive(channel.NETNS_MADE):
                return ContainerStartError("the container stopped before its network namespace was made")
            config.network_hook(pids[0])  # type: ignore[misc]
        joined.send(channel.ATTACHED)
        return None
    except BaseException as exc:  # noqa: BLE001 - the child sees EOF instead of ATTACHED and stops
        return exc
    finally:
        joined.close_write()
