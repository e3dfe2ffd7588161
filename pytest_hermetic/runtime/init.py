"""PID 1 of a container, in the forked child: enter, set up, drop, run.

PID 1 joins the cgroup (as root on v1 it is forked inside it; else the
parent moves it and it waits for `ATTACHED`),
unshares mount, UTS, IPC, network and cgroup namespaces, builds the root
(`rootfs.setup`), makes a session of its own, drops privileges, loads the
seccomp filter and either execs the command (it *is* PID 1, as under
`docker run`) or, for a Python callable (the pytest plugin), forks the
callable as PID 2 and stays behind as a reaper that forwards signals: a
PID 1 ignores signals it has no handler for, which a test killing itself
must not meet.  As root, a callable runs as PID 2 under a placeholder PID 1
instead (`worker_main`, see placeholder.py).

Everything here runs in a fork of the caller and ends in `os._exit`; a
set-up error goes to the parent as one line (`channel.fail`).
"""

from __future__ import annotations

import errno
import os
import sys
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
else:  # signal's C half, without signal.py's enums (enum, functools, collections: ~3 ms of `hermetic run`)
    import _signal as signal
if TYPE_CHECKING:  # typing is not imported at run time: it costs start-up
    from typing import Callable, NoReturn

    from .config import ProcessConfig

from ..errors import ContainerStartError
from . import capabilities, channel, descriptors, network, rootfs, seccomp, start_errors
from . import syscalls as sc
from .channel import describe, fail
from .fork import release_signals
from .namespaces import CONTAINER_NAMESPACES

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH)


def main(config: ProcessConfig, target: Callable[[], int | None] | None, err_w: int, status_w: int | None,
         joined: channel.Channel | None, in_namespaces: bool = False) -> None:
    """PID 1 of the container.  Never returns: whatever happens ends in `os._exit`."""
    try:
        _pid1(config, target, err_w, status_w, joined, in_namespaces)
    finally:
        os._exit(125)


def _pid1(config: ProcessConfig, target: Callable[[], int | None] | None, err_w: int, status_w: int | None,
          joined: channel.Channel | None, in_namespaces: bool) -> None:
    try:
        release_signals()  # (inside main's `finally: os._exit`: see fork.py)
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        _enter_container(config, joined, in_namespaces, seal=target is not None)
        _wait_network(config, err_w)
        own_session()
        if config.tty is not None:
            _attach_console(config)
        _drop_privileges(config)
        seccomp.install(config)
    except BaseException as exc:  # noqa: BLE001
        fail(err_w, 125, describe(exc))
    if target is None:
        _exec(config, err_w)
    _run_callable(target, err_w, status_w)


def worker_main(config: ProcessConfig, target: Callable[[], int | None], err_w: int,
                joined: channel.Channel | None) -> None:
    """PID 2 under the placeholder: build the container, run the callable."""
    code = 125
    try:
        try:
            release_signals()  # (inside the `finally: os._exit`: see fork.py)
            sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
            from . import placeholder  # (imported by the parent, which started the placeholder)

            placeholder.drop_lifeline()
            _enter_container(config, joined, in_namespaces=False, seal=True)
            own_session()
            _drop_privileges(config)
            seccomp.install(config)
        except BaseException as exc:  # noqa: BLE001
            fail(err_w, 125, describe(exc))
        os.close(err_w)  # set-up done: start() returns in the parent
        code = _call(target)
    finally:
        os._exit(code)


def wait_attached(joined: channel.Channel | None) -> None:
    """Wait for the parent to have moved this process into its cgroup."""
    if joined is not None and not joined.receive(channel.ATTACHED):
        raise ContainerStartError(channel.NOT_ATTACHED)


def _enter_container(config: ProcessConfig, joined: channel.Channel | None, in_namespaces: bool,
                     seal: bool = False) -> None:
    """Namespaces, network, root file system, cgroup namespace; with `seal`
    (a callable's), the caller's descriptors sealed before the pivot."""
    if in_namespaces:
        network.loopback_up()
    elif config.spare is not None:  # made ahead by the parent, `lo` up
        from . import spare  # (imported before the fork: prepare_callable, or the parent made them)

        spare.enter(config.spare)
        sc.unshare(sc.CLONE_NEWNS)
    else:
        sc.unshare(CONTAINER_NAMESPACES)
        network.loopback_up()  # before the parent's veth work: both need the kernel's RTNL lock
    if config.netns_ready is not None:  # the parent wires the veth meanwhile
        config.netns_ready.send(channel.NETNS_MADE)
    # Sealed in our own mount namespace, while the host's paths still name
    # its files, blanked with the container's /dev/null: a callable's
    # descriptors (all but its own, the hand-overs and the console's socket,
    # which `_attach_console` uses next), a command's stdio.
    stdio = descriptors.stdio_fds(config.stdio)
    later = descriptors.seal(_kept_fds(config, joined) if seal else config.keep_fds, stdio, everything=seal,
                             relayed=config.relayed, relay_pipes=config.relay_pipes)
    rootfs.setup(config.rootfs, config.hostname)
    descriptors.finish(later)
    if not in_namespaces:
        # Only now wait for the parent to have moved us into the cgroup (so
        # its wait overlapped all of the above); the cgroup namespace's root
        # is the cgroup we sit in when we unshare it.
        wait_attached(joined)
        network.configure(config.network)  # eth0 is there now
        sc.unshare(sc.CLONE_NEWCGROUP)
    rootfs.mount_cgroup2(config.rootfs)


def _kept_fds(config: ProcessConfig, joined: channel.Channel | None) -> tuple[int, ...]:
    """What the seal leaves alone: the callable's own (`keep_fds`), the
    read ends this process still reads
    from its parent (the cgroup and network hand-overs), the console's socket."""
    kept = list(config.keep_fds)
    for pipe in (joined, config.network_go):
        if pipe is not None and pipe.read_fd >= 0:
            kept.append(pipe.read_fd)
    if config.tty is not None:
        kept.append(config.tty.socket_fd)
    return tuple(kept)


def _wait_network(config: ProcessConfig, err_w: int) -> None:
    if config.network_go is None:
        return
    if not config.network_go.receive(channel.NETWORK_WIRED):
        fail(err_w, 125, channel.NOT_WIRED)
    network.configure(config.network)  # eth0 is there now (a rootless bridge)


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
        if exc.errno not in (errno.ENOSYS, errno.EPERM):
            raise start_errors.keyring(exc.errno or 0) from None


def _attach_console(config: ProcessConfig) -> None:
    """`run -t`: a pty of the container's own on 0, 1, 2 and as the session's
    controlling terminal (console.py; the parent imported it before the fork)."""
    from . import console  # (in sys.modules already: nothing is read from the container's root)

    assert config.tty is not None
    if config.user:
        config.tty.uid = resolve_user(config.user)[0]
    console.attach(config.tty)
    config.stdio = (None, None, None)  # 0, 1, 2 are the terminal now


def _drop_privileges(config: ProcessConfig) -> None:
    uid, gid = resolve_user(config.user)
    _enter_workdir(config.cwd)
    become(uid, gid, config.privileged, config.cap_last, config.userns is not None, config.caps)


def become(uid: int, gid: int, privileged: bool, cap_last: int, userns: bool, caps: int | None = None) -> None:
    """Become the container's user with Docker's capabilities: uid 0 (with
    any gid) keeps the default set, any other uid none at all (the kernel
    clears effective and permitted on the switch away from uid 0; the
    bounding set is cut first, so a setuid-root file could not give back
    more than the default set even without no_new_privs)."""
    if not privileged:
        keep = capabilities.bound(cap_last, caps)
    if gid != 0 or uid != 0:
        # Before the effective set shrinks: CAP_SETUID and CAP_SETGID may be
        # among what is dropped (--cap-drop ALL -u 1000).
        if not userns:
            os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    if not privileged:
        if uid == 0:
            capabilities.restrict(keep)
        capabilities.no_new_privs()


def _enter_workdir(cwd: str) -> None:
    """chdir to the working directory, made first when the image lacks it (as Docker does)."""
    try:
        os.chdir(cwd)
        return
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise start_errors.workdir(cwd, exc.strerror or "", made=False) from None
    try:
        os.makedirs(cwd, 0o755, exist_ok=True)
        os.chdir(cwd)
    except OSError as exc:
        raise start_errors.workdir(cwd, exc.strerror or "", made=True) from None


def resolve_user(user: str | None) -> tuple[int, int]:
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


def restore_signals() -> None:
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


def forward_signals(pid: int) -> None:
    """Pass the signals a container's user sends (FORWARDED_SIGNALS) on to `pid`."""
    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, _forwarder(pid))


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


def _exec(config: ProcessConfig, err_w: int) -> NoReturn:
    assert config.argv
    try:
        restore_signals()
        redirect_stdio(config.stdio)
        if config.close_fds:
            descriptors.cloexec_all()  # err_w, close-on-exec, stays until the exec
    except BaseException as exc:  # noqa: BLE001
        fail(err_w, 125, describe(exc))
    try:
        execvpe(config.argv[0], config.argv, config.env)
    except BaseException as exc:  # noqa: BLE001 - said, never a silent 125 (e.g. an import inside the image's root)
        fail(err_w, *start_errors.exec_failure(config.argv[0], config.env, exc))


def execvpe(file: str, argv: list[str], env: dict[str, str]) -> NoReturn:
    """`os.execvpe`: `file` looked up in `env`'s PATH (else `os.defpath`),
    each folder tried in turn; the first error other than "not there" is
    raised, else the last.  Not os.execvpe itself: it imports `warnings`
    for each call (get_exec_path), which the root of an image cannot give
    and the caller would have to import first: ~0.2 ms of `hermetic run`."""
    if os.path.dirname(file):
        os.execve(file, argv, env)
    first: OSError | None = None
    last: OSError = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), file)
    for folder in env.get("PATH", os.defpath).split(os.pathsep):
        try:
            os.execve(os.path.join(folder, file), argv, env)
        except (FileNotFoundError, NotADirectoryError) as exc:
            last = exc
        except OSError as exc:
            last = exc
            first = first or exc
    raise first or last


def exec_target(config: ProcessConfig) -> Callable[[], int]:
    """The command as PID 2 (`--init`): errors can no longer travel through
    the set-up pipe, so they are said on stderr with the usual exit codes."""

    def run() -> int:
        assert config.argv
        redirect_stdio(config.stdio)
        if config.tty is not None:
            foreground()
        descriptors.cloexec_all()
        restore_signals()
        try:
            execvpe(config.argv[0], config.argv, config.env)
        except FileNotFoundError:
            print(f"hermetic: error: {config.argv[0]}: command not found in the container", file=sys.stderr)
            return 127
        except OSError as exc:
            print(f"hermetic: error: {config.argv[0]}: cannot execute: {exc.strerror}", file=sys.stderr)
            return 126
        return 126

    return run


def foreground() -> None:
    """Under `--init` with a terminal: the command leads a process group of
    its own, the terminal's foreground one, so a Ctrl-C reaches it (and
    what it runs) and not PID 1, which would pass it on again (as tini -t)."""
    os.setpgid(0, 0)
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # tcsetpgrp from a background group; reset before exec
    os.tcsetpgrp(0, os.getpid())


def prepare_callable() -> None:
    """In the parent, before it forks a callable: what the child imports
    (`_call`'s traceback, `_enter_container`'s spare), where the root may be
    an image without this Python's library, and where each child's import
    would cost each test a search, a read and a run of the module, or a
    whole compile where pytest cannot cache its rewritten byte code of the
    plugin (PYTHONDONTWRITEBYTECODE, a read-only install: ~3 ms a test).
    The zygote calls it before its fork, which may come before pytest's
    first import of these (tests/test_zygote.py checks a child imports
    nothing).  (Not at module level: 1.7 ms of imports a `hermetic run`
    need not pay.)"""
    import traceback  # noqa: F401

    from . import spare  # noqa: F401


def _call(target: Callable[[], int | None]) -> int:
    """Run the callable; its int result (or SystemExit code) is the exit code."""
    code = 1
    try:
        result = target()
        code = result if isinstance(result, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001
        import traceback  # already imported: by spawn, before the fork (see prepare_callable)

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            pass
    return code


def _run_callable(target: Callable[[], int | None], err_w: int, status_w: int | None) -> None:
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
            sc.prctl(sc.PR_SET_DUMPABLE, 1)  # (its fds were sealed before the pivot)
            code = _call(target)
        finally:
            os._exit(code)
    descriptors.close_except((status_w,) if status_w is not None else ())
    forward_signals(worker)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(125)
        if pid == worker:
            if status_w is not None:
                os.write(status_w, channel.STATUS.pack(status))
            os._exit(0)
