"""Detached containers (`hermetic run -d`) and the lifecycle verbs, with no daemon.

`run -d` double-forks a supervisor (its own session, stdio on /dev/null)
that makes the container, owns it as a foreground run's `hermetic` process
would (its pid and start time are the state folder's owner, so `gc` leaves
it alone while it lives), holds the published ports, waits for PID 1, then
takes the container down, keeps its state folder and writes the exit status
and reason into `state.json`.  Once the supervisor is gone the folder is an
exited container's: `ps -a` lists it, `logs` reads its log, `rm` or `gc`
remove it.  A supervisor killed before it could record the end leaves a
folder whose owner is dead and that has no exit status: `ps -a` says so and
`gc` clears its cgroup and layers as for any dead owner.

`stop`, `kill`, `wait`, `rm -f` act on PID 1's host pid (recorded with its
start time, so a reused pid is never signalled) and wait for the owner to
finish; they work on a foreground `run --name` container too.
"""

from __future__ import annotations

import json
import os
import signal
import time

from ._fs import rmtree
from ._proc import owner_alive, start_time
from ._record import fields
from .container import Container, log_path
from .errors import ContainerNotFound, ContainerStartError, HermeticError
from .gc import clear_dead
from .publish import attach, listen, ports_json, refuse_rootless, slirp_publishes
from .runtime.fork import fork, release_signals
from .spec import Spec
from .state import doomed_dir, list_states, write_state

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .runtime.process import ContainerProcess

STOP_GRACE = 10.0  # seconds, as `docker stop`


# -- run -d --------------------------------------------------------------------------


def start_detached(spec: Spec, remove: bool = False, interactive: bool = False, tty: bytes | None = None) -> str:
    """Start `spec` under a supervisor of its own and return the container's
    id once it runs; its start errors are raised here, as a foreground run's.
    With `interactive` its stdin stays open (a pipe the supervisor holds, as
    `docker run -di`: a shell waits instead of reading EOF); with `tty` (a
    struct winsize) it runs on a pty of its own whose output goes to the log."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    pid = fork()
    if pid == 0:  # pragma: no cover - the child's end is checked through the tests' CLI runs
        code = 125
        try:
            release_signals()  # (inside the `finally: os._exit`: see runtime/fork.py)
            os.close(read_fd)
            os.setsid()  # no terminal: the caller's Ctrl-C or hangup is not the container's
            if os.fork() == 0:
                _supervise(spec, remove, write_fd, interactive, tty)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    os.waitpid(pid, 0)
    # One line, not up to EOF: the container's processes forked from the
    # supervisor (the rootless relay) may still hold the pipe's write end.
    chunks = []
    while (chunk := os.read(read_fd, 65536)) and not chunk.endswith(b"\n"):
        chunks.append(chunk)
    chunks.append(chunk)
    os.close(read_fd)
    answer = json.loads(b"".join(chunks) or b'{"error": "the supervisor died before the container started", "code": 125}')
    if "error" in answer:
        error = ContainerStartError(answer["error"])
        error.exit_code = answer["code"]
        raise error
    return answer["id"]


def _supervise(spec: Spec, remove: bool, report_fd: int, interactive: bool = False,  # pragma: no cover
               tty: bytes | None = None) -> None:
    """The supervisor: start, report, wait, record the end; never returns."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    os.chdir("/")
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    container = Container(spec)
    forwarders: list = []
    maker = None  # a rootless container's socket helper for -p (ns_sockets.py)
    held_stdin = None  # -i: the write end of the container's stdin, held open and never written
    try:
        refuse_rootless(container)
        forwarders = listen(spec.publish, hold=not slirp_publishes(container))
        stdin = 0
        if interactive and tty is None:
            stdin, held_stdin = os.pipe2(os.O_CLOEXEC)
        container.start(stdin=stdin, log=True, tty=tty)
        if stdin != 0:
            os.close(stdin)
        if container.tty is not None:
            _log_terminal(container.tty, container.log_path)  # type: ignore[arg-type]
        maker = attach(container, forwarders)
        assert container.state_dir is not None and container.pid is not None
        state = _read(container.state_dir)
        state.update(detached=True, status="running", pid=container.pid, pid_start=start_time(container.pid),
                     exec=container.exec_settings(), ports=ports_json(forwarders), auto_remove=remove,
                     image_id=container.image.id if container.image else None, spec=_spec_json(spec),
                     started=time.time())
        write_state(container.state_dir, state)
    except BaseException as exc:
        for forwarder in forwarders:
            forwarder.close()
        if maker is not None:
            maker.close()
        container.remove()
        code = exc.exit_code if isinstance(exc, HermeticError) else 125
        text = str(exc) if isinstance(exc, HermeticError) else f"internal error ({type(exc).__name__}: {exc})"
        os.write(report_fd, json.dumps({"error": text, "code": code}).encode() + b"\n")
        os._exit(0)
    try:
        os.write(report_fd, json.dumps({"id": container.id}).encode() + b"\n")
    except OSError:
        pass  # `run -d` was killed meanwhile: the container runs on, as it would have
    os.close(report_fd)
    # SIGTERM to the supervisor (a system shutdown) goes to PID 1, as `stop` does.
    signal.signal(signal.SIGTERM, lambda *_: container.kill(signal.SIGTERM))
    result = None
    try:
        result = container.wait()
    finally:
        for forwarder in forwarders:
            forwarder.close()
        if maker is not None:
            maker.close()
        container.remove(keep_state=not remove)
        if not remove and result is not None:
            state = _read(container.state_dir)
            state.update(status="exited", exit_code=result.exit_code, reason=result.reason or "exited with status 0",
                         finished=time.time(), pid=None, cgroup=[], rw_dir=None)
            write_state(container.state_dir, state)
    os._exit(0)


def _log_terminal(master: int, path: str) -> None:  # pragma: no cover - the supervisor's
    """`run -dt`: a thread copies the container's terminal into its log
    (until the terminal's last holder closes it: EIO), as `docker logs` of a tty."""
    import threading  # lazily: only a detached container with a terminal needs it

    def copy() -> None:
        with open(path, "ab", buffering=0) as log:
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    return
                if not data:
                    return
                log.write(data)

    threading.Thread(target=copy, name="hermetic-tty-log", daemon=True).start()


def _spec_json(spec: Spec) -> dict:
    return json.loads(json.dumps({key: getattr(spec, key) for key in fields(spec)}, default=str))


def _read(folder: str) -> dict:
    with open(os.path.join(folder, "state.json")) as f:
        return json.load(f)


# -- the lifecycle verbs -----------------------------------------------------------------


def find(name: str) -> dict:
    """The state of the container called `name` (a name, an id, or a unique id prefix)."""
    states = list_states()
    for state in states:
        if name in (state.get("name"), state["id"]):
            return state
    matches = [s for s in states if len(name) >= 3 and s["id"].startswith(name)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ContainerNotFound(f"{name!r} is the start of {len(matches)} container ids; give more of it")
    raise ContainerNotFound(f"no container named {name!r}; see `hermetic ps -a`")


def status(state: dict) -> str:
    """running, exited, or dead (its owner is gone and recorded no end)."""
    if state["alive"]:
        return "running"
    return "exited" if "exit_code" in state else "dead"


def pid1(state: dict) -> int | None:
    """PID 1's host pid while it runs (not a reused pid).  A detached
    container records it; a foreground run's is found in its cgroup (the
    process that is 1 in its own PID namespace), which keeps the start of
    `hermetic run` free of one more state write."""
    if not state["alive"]:
        return None
    pid = state.get("pid")
    if "pid_start" in state:
        return pid if isinstance(pid, int) and start_time(pid) == state["pid_start"] else None
    for candidate in state.get("pids") or []:
        try:
            with open(f"/proc/{candidate}/status") as f:
                nspids = next((line.split()[1:] for line in f if line.startswith("NSpid:")), [])
        except OSError:
            continue
        if len(nspids) > 1 and nspids[-1] == "1":
            return candidate
    return None


def signal_container(state: dict, sig: int) -> None:
    """Send `sig` to PID 1 (SIGKILL: the whole container, as its PID namespace dies with PID 1)."""
    pid = pid1(state)
    if pid is None:
        if state["alive"]:
            raise ContainerStartError(f"container {state.get('name')}: its PID 1 cannot be found (a rootless "
                                      "foreground run without a cgroup); signal its `hermetic run` instead")
        raise ContainerStartError(f"container {state.get('name')} is not running ({state.get('reason') or status(state)})")
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def wait_owner(state: dict, timeout: float | None = None) -> bool:
    """Wait until the container's owner has finished (and recorded its end); False on timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.005
    while owner_alive(state):
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    return True


def stop_settings(state: dict, grace: float | None = None) -> tuple[signal.Signals, float]:
    """The signal `stop` sends first and the grace time: the container's
    (`--stop-signal`, `--stop-timeout`) unless `grace` is given."""
    spec = state.get("spec") or {}
    sig = signal.Signals[spec["stop_signal"]] if spec.get("stop_signal") else signal.SIGTERM
    if grace is None:
        grace = spec["stop_timeout"] if spec.get("stop_timeout") is not None else STOP_GRACE
    return sig, grace


def stop(state: dict, grace: float | None = None) -> bool:
    """SIGTERM (or the container's --stop-signal) to PID 1, SIGKILL after
    `grace` seconds (default: its --stop-timeout, else 10); True if it took the SIGKILL.
    A PID 1 with no SIGTERM handler ignores SIGTERM (the kernel protects a
    namespace's init), so such a container stops at the SIGKILL; under
    `--init` (the default of `run -d`) PID 1 passes SIGTERM on to the command."""
    if not state["alive"]:
        return False
    sig, grace = stop_settings(state, grace)
    signal_container(state, sig)
    if wait_owner(state, grace):
        return False
    if pid1(state) is not None:
        signal_container(state, signal.SIGKILL)
    wait_owner(state, 30)
    return True


def remove(state: dict, force: bool = False) -> None:
    """Remove an exited container (with `force`, a running one after a SIGKILL)."""
    if state["alive"]:
        if not force:
            raise ContainerStartError(f"container {state.get('name')} is running; `hermetic stop "
                                      f"{state.get('name')}` first, or `hermetic rm -f` to kill it")
        if pid1(state) is not None:
            signal_container(state, signal.SIGKILL)
        if not wait_owner(state, 30):
            raise ContainerStartError(f"container {state.get('name')}: its owner (pid {state.get('owner_pid')}) did "
                                      "not finish within 30 s of the SIGKILL")
        refreshed = [s for s in list_states() if s["id"] == state["id"]]
        if not refreshed:
            return  # a foreground run's owner removed it
        state = refreshed[0]
    try:
        if "exit_code" in state:
            doomed = doomed_dir(state["id"])
            os.rename(state["state_dir"], doomed)
            rmtree(doomed)
        else:
            clear_dead(state)
    except FileNotFoundError:
        pass  # a `gc` at the same time removed it


def logs(state: dict) -> str | None:
    """Path of its log, or None for a container that has none (a foreground run's)."""
    path = log_path(state["state_dir"])
    return path if os.path.exists(path) else None


def exec_in(state: dict, argv: list[str], env: dict[str, str], workdir: str | None,
            stdio: tuple = (None, None, None), user: str | None = None, tty: bytes | None = None) -> ContainerProcess:
    """Start `argv` in a running detached container (from any process), as
    `user` (default: the container's), with `tty` (a struct winsize) on a
    pty of the container's own (the handle's `tty` is its master)."""
    from .runtime import seccomp
    from .runtime.capabilities import has_sys_admin
    from .runtime.enter import enter

    pid = pid1(state)
    settings = state.get("exec")
    if pid is None:
        raise ContainerStartError(f"container {state.get('name')} is not running ({state.get('reason') or status(state)})")
    if not settings:
        raise ContainerStartError(f"container {state.get('name')} was started in the foreground; `hermetic exec` "
                                  "reaches containers started with `run -d`")
    caps = settings.get("caps")
    seccomp_filter = seccomp.default(sys_admin=has_sys_admin(caps)) if settings["seccomp"] else None
    return enter(pid, argv, {**settings["env"], **env}, workdir or settings["cwd"], settings["cgroup_procs"],
                 settings["userns"], settings["privileged"], stdio, seccomp_filter, user or settings.get("user"), tty, caps,
                 cwd_asked=workdir is not None)


def inspect(state: dict) -> dict:
    """What `hermetic inspect` prints: the state, with live pids and status."""
    data = {key: value for key, value in state.items() if key != "exec"}
    data["status"] = status(state)
    data["pid"] = pid1(state)
    if state.get("exec"):
        data["env"] = state["exec"]["env"]
        data["workdir"] = state["exec"]["cwd"]
    return data
