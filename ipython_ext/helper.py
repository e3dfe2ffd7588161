"""The container helper: `python -m ipython_ext.helper FD PARENT_PID`.

A Jupyter kernel has several threads (ZMQ, heartbeat, output flushing), and
the engine starts containers with fork(): a fork of a threaded process can
deadlock on a lock another thread held.  So the kernel never forks; it
starts this process once (with `subprocess`, which execs at once) and asks
it, over a socketpair, to run cells.  This process has one thread, owns
every container the kernel started, streams each cell's stdout and stderr
back as it comes, and removes all of them when the kernel goes away: on EOF
of the socket (the kernel exited or was killed, even with SIGKILL) or on
SIGTERM (PR_SET_PDEATHSIG, in case a fork of the kernel keeps the socket
open).  If this process itself is killed with SIGKILL, each container's
PID 1 dies with it (the engine's own PDEATHSIG) and `hermetic gc` removes
the state folders, cgroups and read-write layers that are left.

It never imports IPython.

One concern, the helper process (it is longer than most modules for that):
its request loop, the containers it owns and the streaming of their output
are one state machine over one socket; the protocol is `protocol.py`'s.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import time
import traceback

from ipython_ext import protocol
from pytest_hermetic._proc import descendants
from pytest_hermetic.options import CREATE_ONLY, is_set, spelling
from pytest_hermetic.runtime.descriptors import close_except

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

    from pytest_hermetic.container import Container

GRACE = 1.0  # seconds between the interrupt's SIGINT and SIGKILL
DRAIN = 0.5  # after the cell's process ended: how long a background process may hold its output open
CELL_TOKEN = "HERMETIC_CELL"  # in each cell's environment, to find its processes in a kept container


class Stop(BaseException):
    """The kernel is gone, or asked us to stop: clean up and exit."""


class Busy(Exception):
    pass


def _keep() -> int:
    """PID 2 of a kept (`--name`) container, under the engine's reaping PID 1:
    it only waits.  It is a fork of this helper, so drop what it inherited."""
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    close_except()  # every fd above 2, however high
    while True:
        signal.pause()


def _has_token(pid: int, token: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return token in f.read().split(b"\0")
    except OSError:
        return False


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class EphemeralCell:
    """A fresh container whose PID 1 is the cell's shell."""

    def __init__(self, container, stdio: tuple[int, int, int]) -> None:  # noqa: ANN001
        self.container = container
        container.start(stdin=stdio[0], stdout=stdio[1], stderr=stdio[2])
        timeout = container.spec.timeout
        self.deadline = None if timeout is None else container.started_at + timeout

    def fileno(self) -> int:
        return self.container.process.fileno()

    def poll(self):  # noqa: ANN201
        return self.container.wait(0)

    def expire(self):  # noqa: ANN201
        return self.container.wait(0)  # past the spec's timeout: the engine kills and says so

    def signal(self, sig: int) -> None:
        cgroup = self.container.cgroup
        if cgroup is not None:
            _signal(cgroup.pids(), sig)
        else:
            self.container.kill(sig)

    def kill(self):  # noqa: ANN201
        self.container.kill()
        return self.container.wait()


class ExecCell:
    """The cell's shell run in a kept container with `Container.exec`.

    Its processes are the exec'd process's descendants, plus any process in
    the container's cgroup that carries the cell's token in its environment
    (a child re-parented to PID 1 when its shell died is no descendant)."""

    def __init__(self, container, argv: list[str], env: dict[str, str], workdir: str | None,
                 stdio: tuple[int, int, int], timeout: float | None) -> None:  # noqa: ANN001
        self.container = container
        self.token = os.urandom(8).hex()
        self.oom_before = container.stats().oom_kills
        self.timeout = timeout
        self.timed_out: float | None = None
        self.killed: list[tuple[int, str]] = []
        self.proc = container.exec(argv, env={**env, CELL_TOKEN: self.token}, workdir=workdir,
                                   stdin=stdio[0], stdout=stdio[1], stderr=stdio[2])
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def fileno(self) -> int:
        return self.proc.fileno()

    def pids(self) -> list[int]:
        found = set(descendants(self.proc.pid))
        cgroup = self.container.cgroup
        if cgroup is not None:
            token = f"{CELL_TOKEN}={self.token}".encode()
            found.update(p for p in cgroup.pids() if _has_token(p, token))
        found.discard(self.proc.pid)  # the engine's relay: it forwards signals and relays the status
        return sorted(found)

    def _result(self, status):  # noqa: ANN001, ANN202
        from pytest_hermetic.container import Result

        stats = self.container.stats()
        oom = stats.oom_kills > self.oom_before and (status.signal is not None or bool(status.code))
        return Result(status, oom_killed=oom and self.timed_out is None, timed_out=self.timed_out,
                      killed=self.killed, stats=stats)

    def poll(self):  # noqa: ANN201
        status = self.proc.wait(0)
        return None if status is None else self._result(status)

    def signal(self, sig: int) -> None:
        _signal(self.pids(), sig)

    def kill(self):  # noqa: ANN201
        from pytest_hermetic.runtime.cgroups import comm

        victims = self.pids()
        self.killed = [(p, comm(p)) for p in victims]
        _signal([*victims, self.proc.pid], signal.SIGKILL)
        return self._result(self.proc.wait())

    def expire(self):  # noqa: ANN201
        self.timed_out = self.timeout
        return self.kill()


class Helper:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = protocol.FrameReader()
        self.pending: list[tuple[int, int, object]] = []
        self.containers: dict = {}  # name -> Container, the kept ones
        self.stopped: set[str] = set()
        self.current: Container | None = None  # the running cell's ephemeral Container, if any
        self.devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)

    # -- the socket -------------------------------------------------------------

    def _fill(self) -> None:
        try:
            data = self.sock.recv(1 << 16)
        except ConnectionResetError:
            data = b""
        if not data:
            raise Stop("the kernel closed its end")
        self.reader.feed(data)
        self.pending.extend(self.reader.frames())

    def _reply(self, request: int, message: dict) -> None:
        protocol.send_json(self.sock, request, message)

    def serve(self) -> None:
        self._reply(0, {"op": "hello", "pid": os.getpid()})
        while True:
            while not self.pending:
                self._fill()
            kind, request, message = self.pending.pop(0)
            if kind != protocol.JSON or not isinstance(message, dict):
                continue
            op = message.get("op")
            if op == "interrupt":
                continue  # for a cell that already ended
            if op == "shutdown":
                self.shutdown()
                self._reply(request, {"ok": True})
                raise Stop("shutdown")
            try:
                reply = self._dispatch(request, op, message)
            except Stop:
                raise
            except BaseException as exc:  # noqa: BLE001 - every failure becomes a reply
                reply = _error_reply(exc)
            self._reply(request, reply)

    def _dispatch(self, request: int, op: str | None, message: dict) -> dict:
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            raise ValueError(f"unknown request {op!r}")
        return handler(request, message)

    # -- requests ----------------------------------------------------------------

    def op_ping(self, request: int, message: dict) -> dict:
        return {"ok": True}

    def op_list(self, request: int, message: dict) -> dict:
        rows = []
        for name, c in self.containers.items():
            rows.append({"name": name, "id": c.id, "image": c.spec.image, "pid": c.pid,
                         "status": "stopped" if name in self.stopped else "running"})
        return {"ok": True, "containers": rows}

    def op_run(self, request: int, message: dict) -> dict:
        from pytest_hermetic.container import Container
        from pytest_hermetic.state import list_states
        from pytest_hermetic.errors import SpecError
        from pytest_hermetic.spec import Spec

        name = message.get("name")
        options = message.get("options") or {}
        argv = [message.get("shell") or "/bin/sh", "-c", message["script"]]
        commit = message.get("commit")
        notes: list[str] = []
        if name:
            container = self.containers.get(name)
            if container is None:
                if any(s.get("name") == name and s["alive"] for s in list_states()):
                    raise SpecError(f"--name {name}: a container of another process already has that name; "
                                    "pick another name")
                spec = Spec.build(message["image"] or "host", None, name=name, init=True,
                                  **{k: v for k, v in options.items() if k in _CONTAINER_OPTIONS})
                container = Container(spec)
                container.start(target=_keep)
                self.containers[name] = container
            else:
                if name in self.stopped:
                    from pytest_hermetic.errors import ContainerStartError

                    raise ContainerStartError(f"container {name!r} is stopped; `%container rm {name}` to remove it "
                                              "(commit it first to keep its files)")
                if message["image"] and message["image"] != container.spec.image:
                    notes.append(f"container {name!r} already runs (image {container.spec.image}); "
                                 f"this cell runs in it, not in a new container of {message['image']}")
                ignored = sorted(k for k in _CONTAINER_OPTIONS if is_set(k, options.get(k)))
                if ignored:
                    notes.append(f"container {name!r} already runs; {', '.join(spelling(k) for k in ignored)} "
                                 "only take effect when a container is created, so they were ignored")
            cell_factory = lambda stdio: ExecCell(container, argv, options.get("env") or {},  # noqa: E731
                                                  options.get("workdir"), stdio, _float(options.get("timeout")))
            reply = self._stream(request, cell_factory)
            if commit:
                reply["committed"] = self._commit_after(container, commit, reply)
        else:
            # The cell is the whole script: no image ENTRYPOINT in front of it.
            if options.get("entrypoint") is None:
                options["entrypoint"] = ()
            spec = Spec.build(message["image"] or "host", argv, ephemeral=not commit, **options)
            container = self.current = Container(spec)
            try:
                reply = self._stream(request, lambda stdio: EphemeralCell(container, stdio))
                if commit:
                    reply["committed"] = self._commit_after(container, commit, reply)
            finally:
                self.current = None
                container.remove()
        reply["notes"] = notes + reply.get("notes", [])
        return reply

    def op_exec(self, request: int, message: dict) -> dict:
        container = self._own(message["name"], running=True)
        return self._stream(request, lambda stdio: ExecCell(container, list(message["argv"]), {}, None, stdio, None))

    def op_commit(self, request: int, message: dict) -> dict:
        name, ref = message["name"], message["ref"]
        container = self.containers.get(name)
        if container is not None:
            image = container.commit(ref)
        else:
            image = _commit_foreign(name, ref)
        return {"ok": True, "image": image.familiar, "id": image.id}

    def op_stop(self, request: int, message: dict) -> dict:
        name = message["name"]
        container = self._own(name)
        if name not in self.stopped:
            container.kill(signal.SIGTERM)  # PID 1 forwards it to the keeper, whose death ends the container
            if container.wait(GRACE) is None:
                container.kill()
                container.wait()
            self.stopped.add(name)
        return {"ok": True}

    def op_rm(self, request: int, message: dict) -> dict:
        name = message["name"]
        container = self._own(name)
        del self.containers[name]
        self.stopped.discard(name)
        container.remove()
        return {"ok": True}

    def _own(self, name: str, running: bool = False):  # noqa: ANN202
        from pytest_hermetic.errors import ContainerNotFound, ContainerStartError

        container = self.containers.get(name)
        if container is None:
            known = ", ".join(sorted(self.containers)) or "none"
            raise ContainerNotFound(f"no container named {name!r} was started by this kernel "
                                    f"(this kernel's containers: {known}); see `%container ps`")
        if running and name in self.stopped:
            raise ContainerStartError(f"container {name!r} is stopped")
        return container

    def _commit_after(self, container, ref: str, reply: dict) -> dict | None:  # noqa: ANN001
        if reply["exit_code"] != 0:
            reply.setdefault("notes", []).append(f"not committed to {ref}: the cell failed ({reply['reason']})")
            return None
        image = container.commit(ref)
        return {"image": image.familiar, "id": image.id}

    # -- a running cell ----------------------------------------------------------

    def _stream(self, request: int, start: Callable[[tuple[int, int, int]], EphemeralCell | ExecCell]) -> dict:
        """Start the cell, send its output as it comes, answer interrupts and
        pings meanwhile, and return the reply that says how it ended."""
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        try:
            cell = start((self.devnull, out_w, err_w))
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        streams = {out_r: protocol.STDOUT, err_r: protocol.STDERR}
        result = ended = kill_at = None
        interrupted = False
        try:
            while True:
                now = time.monotonic()
                if result is None and cell.deadline is not None and now >= cell.deadline:
                    result = cell.expire()
                if result is None and kill_at is not None and now >= kill_at:
                    result = cell.kill()
                if result is not None:
                    ended = ended or now
                    if not streams or now >= ended + DRAIN:
                        break
                waits = [t for t in (cell.deadline, kill_at) if t is not None and result is None]
                if ended is not None:
                    waits.append(ended + DRAIN)
                timeout = max(0.0, min(waits) - now) if waits else None
                watched: list[socket.socket | int | EphemeralCell | ExecCell] = [self.sock, *streams]
                if result is None:
                    watched.append(cell)
                ready, _, _ = select.select(watched, [], [], timeout)
                for item in ready:
                    if item is self.sock:
                        self._fill()
                        for kind, req, message in self._take_control():
                            op = message.get("op")
                            if op == "interrupt" and req == request and not interrupted and result is None:
                                interrupted = True
                                cell.signal(signal.SIGINT)
                                kill_at = time.monotonic() + GRACE
                            elif op == "ping":
                                self._reply(req, {"ok": True})
                            elif op == "shutdown":
                                raise Stop("shutdown")
                            elif op != "interrupt":
                                self._reply(req, _error_reply(Busy("a cell is running; wait for it to end")))
                    elif item is cell:
                        result = cell.poll()
                    elif isinstance(item, int):  # an output pipe
                        data = os.read(item, 1 << 16)
                        if data:
                            protocol.send(self.sock, streams[item], request, data)
                        else:
                            del streams[item]
                            os.close(item)
            if interrupted and isinstance(cell, ExecCell):
                cell.signal(signal.SIGKILL)  # what the cell left in the background goes too
        finally:
            for fd in streams:
                os.close(fd)
        return {"ok": True, "exit_code": result.exit_code, "reason": result.reason, "interrupted": interrupted,
                "oom": result.oom_killed, "timed_out": result.timed_out}

    def _take_control(self) -> list:
        taken = [f for f in self.pending if f[0] == protocol.JSON and isinstance(f[2], dict)]
        self.pending = []
        return taken

    # -- the end -----------------------------------------------------------------

    def shutdown(self) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for container in [self.current, *self.containers.values()]:
            if container is None:
                continue
            try:
                container.remove()
            except BaseException:  # noqa: BLE001 - remove the others anyway
                traceback.print_exc()
        self.containers.clear()
        self.current = None


_CONTAINER_OPTIONS = CREATE_ONLY  # a kept container takes the others (env, workdir, timeout) for each cell


def _float(value: object) -> float | None:
    from pytest_hermetic.spec import parse_timeout

    return parse_timeout(value)


def _commit_foreign(name: str, ref: str):  # noqa: ANN202
    """A running container of another process (`hermetic run --name`), as `hermetic commit` does."""
    from pytest_hermetic.container import commit_running

    return commit_running(name, ref, ps="`%container ps`")


def _error_reply(exc: BaseException) -> dict:
    from pytest_hermetic.errors import HermeticError

    if not isinstance(exc, (HermeticError, Busy, OSError)):
        traceback.print_exc()  # a bug: its traceback goes to the helper's log
    return {"ok": False, "error": {"type": type(exc).__name__, "message": str(exc)}}


def _stop(signum: int, _frame: object) -> None:
    raise Stop(f"signal {signum}")


def main(argv: list[str]) -> int:
    fd, parent = int(argv[0]), int(argv[1])
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    # The kernel's interrupt reaches its whole process group; we are in our
    # own session anyway, and the kernel decides what an interrupt stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from pytest_hermetic.runtime import syscalls as sc

    if "--pdeathsig" in argv:
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        return 0  # the kernel died before PDEATHSIG was armed
    # Import now what the requests need: a fork must not import later, and
    # the first cell should not pay for it.
    import pytest_hermetic.container  # noqa: F401
    import pytest_hermetic.runtime.enter  # noqa: F401

    helper = Helper(socket.socket(fileno=fd))
    try:
        helper.serve()
    except Stop:
        pass
    finally:
        # A killed kernel gives EOF and, through PDEATHSIG, SIGTERM at about
        # the same moment: a Stop raised here, before or inside shutdown,
        # would end the helper with its containers still there.  Ignore the
        # signals first (process-wide), and start over if one came in between.
        while True:
            try:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                helper.shutdown()
                break
            except Stop:
                continue
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
