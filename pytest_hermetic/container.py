"""`Container`: the one object the plugin, the magics and the CLI use.

    with Container(Spec.build("host", ["sh", "-c", "echo hi"], mem="64M")) as c:
        result = c.run()          # start + wait (with the spec's timeout)
        print(result.exit_code, result.reason)

A container owns a state folder (`STATE/containers/<id>/`: its read-write
layer, overlay work dir and `state.json`), a cgroup, and its PID 1.
`remove()` (or leaving the `with` block) kills what is left and deletes all
three; `hermetic gc` does the same for containers whose owner died.  With
`Spec(ephemeral=True)` the read-write layer lives on a tmpfs inside the
container's own mount namespace instead: it vanishes with the container and
cannot be committed (the plugin, and `hermetic run` without --commit/--name).

One concern, one container's life from start to removal (it is longer than
most modules for that): its state folder is `state.py`'s, the clean-up after
dead owners `gc.py`'s, the kernel work the runtime's.
"""

from __future__ import annotations

import os
import time
from ._record import record, factory
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
else:  # signal's C half, without signal.py's enums (enum, functools, collections: ~3 ms of `hermetic run`)
    import _signal as signal
if TYPE_CHECKING:  # typing is not imported at run time: it costs start-up
    from typing import Callable

    from .networks import Network
    from .runtime.file_relay import FileRelay
    from .runtime.rootfs.tmpfs import TmpfsMount
    from .spec import Tmpfs

from ._fs import rmtree
from ._proc import descendants, owner, owner_key, signal_name
from .errors import ContainerNotFound, ContainerStartError, HermeticError, NetworkError, SpecError, StoreError
from .images.resolve import resolve_or_pull
from .images.store import Image, Keep, Store
from .options import DEFAULT_PIDS
from .paths import make_owned, make_private, state_root
from .runtime import cgroups, descriptors, process, seccomp
from .runtime.namespaces import default_user_namespace
from .runtime.network import NetworkConfig
from .runtime.rootfs import OVERLAY_MAX_LOWERS, Bind, RootfsConfig
from .spec import Spec, Volume, format_size
from .state import containers_dir, doomed_dir, list_states, staging_dir, write_state


@record
class Result:
    """How a container ended, and why, in words a user can act on."""

    status: process.ExitStatus
    oom_killed: bool = False
    timed_out: float | None = None  # the timeout that expired, in seconds
    killed: list[tuple[int, str]] = factory(list)
    stats: cgroups.Stats = factory(cgroups.Stats)

    @property
    def exit_code(self) -> int:
        """As `docker run` reports it: 137 for OOM and timeout kills."""
        if self.oom_killed or self.timed_out is not None:
            return 137
        return self.status.shell_code

    @property
    def reason(self) -> str | None:
        """None for a clean exit 0; otherwise what happened, in one line."""
        if self.oom_killed:
            return f"out of memory (limit {format_size(self.stats.memory_limit)}, peak {format_size(self.stats.memory_peak)})"
        if self.timed_out is not None:
            names = ", ".join(name for _, name in self.killed)
            count = len(self.killed)
            return f"timeout after {self.timed_out:g} s: killed {count} process{'es' if count != 1 else ''}" + (f" ({names})" if names else "")
        if self.status.signal is not None:
            text = f"killed by signal {signal_name(self.status.signal)}"
            if self.stats.pids_limit_hits:
                text += f" (the PIDs limit of {self.stats.pids_limit} was hit {_times(self.stats.pids_limit_hits)})"
            return text
        if self.status.code:
            text = f"exited with status {self.status.code}"
            if self.stats.pids_limit_hits:
                text += f" (the PIDs limit of {self.stats.pids_limit} was hit {_times(self.stats.pids_limit_hits)})"
            return text
        return None


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


class Container:
    """A container made from a `Spec`; nothing happens until `start()`."""

    def __init__(self, spec: Spec, *, store: Store | None = None, network: "Network | None" = None,
                 image: Image | None = None) -> None:
        """`network`: the network `spec.net` names, when the caller resolved it
        (a pytest test's private one); else it is looked up at start.
        `image`: `spec.image` as the caller resolved it in `store` (the
        plugin does, for the bindings), so it is not resolved twice."""
        self.spec = spec
        self.network = network
        self.address: str | None = None  # on its network, once started
        self._attached = False
        self._owns_network = False
        self.id = os.urandom(16).hex()
        self.store = store or Store()
        self.image: Image | None = None
        self._resolved = image
        self.cgroup: cgroups.Cgroup | None = None
        self.process: process.ContainerProcess | None = None
        self.tty: int | None = None  # the master of its terminal, started with `tty`
        self._prepared: process.ProcessConfig | None = None  # made by `prepare()`, for `start()`
        self._files: FileRelay | None = None  # the caller's written files, reached through pipes
        self.result: Result | None = None
        self.started_at: float | None = None
        # Untracked (the plugin's per-test containers): no folder of their
        # own; the scratch mount point is shared, since each container mounts
        # its own tmpfs on it in its own mount namespace.
        self.state_dir = os.path.join(containers_dir(), self.id) if spec.tracked else None
        # A committable rw layer lives on the store's (disk) file system, named
        # for its owner: gc removes it only once that process is gone.
        self.rw_dir = None if spec.ephemeral else os.path.join(self.store.root, "containers", f"{owner_key()}-{self.id}")
        self._use: Keep | None = None  # the store's record of the layers this container runs on
        self.userns = spec.userns if spec.userns is not None else os.geteuid() != 0
        if spec.userns and os.geteuid() == 0:
            # Root's user namespace maps container root to a private range
            # (0 -> 100000), where the image's files, owned by the host's
            # root, are unmapped: overlayfs refuses them (EOVERFLOW) without
            # idmapped layers, which the engine does not make yet.
            raise SpecError("userns=True as root is not supported yet: the image's files would be owned by an "
                            "unmapped user (idmapped layers are missing); fix: leave it off as root (capabilities, "
                            "seccomp and masks still apply), or run as an unprivileged user, who always gets one")

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def name(self) -> str:
        return self.spec.name or self.short_id

    @property
    def hostname(self) -> str:
        return self.spec.hostname or self.spec.name or self.short_id

    @property
    def pid(self) -> int | None:
        """Host pid of the container's PID 1 while it runs."""
        return self.process.init_pid if self.process else None

    # -- start ----------------------------------------------------------------

    def start(self, target: Callable[[], int | None] | None = None, *, stdin: int | None = None,
              stdout: int | None = None, stderr: int | None = None, log: bool = False,
              tty: bytes | None = None, prepare_next: bool = False,
              meanwhile: Callable[[], None] | None = None, keep_fds: tuple[int, ...] = (),
              caller_copies: bool = False, unconfirmed: bool = False,
              forker: process.Forker | None = None) -> "Container":
        """Create everything and start PID 1: the spec's command (or the
        image's), or with `target` a Python callable run as PID 2.
        `stdin`/`stdout`/`stderr` are fds for the command (default: ours);
        with `log` (a tracked container's) stdout and stderr go to
        `log_path` in its state folder instead (`hermetic run -d`).  With
        `tty` (a struct winsize, 8 bytes) the command runs on a pty of the
        container's own instead, and `self.tty` is its master's fd (the
        caller's to read, write and close).  `prepare_next`: while this one
        builds its root, make the next container's network, IPC and UTS
        namespaces (runtime/spare.py; the pytest plugin, which starts one
        container after another).  `keep_fds`: descriptors a callable needs
        as they are (a pipe's read end it reads: the others are blanked, see
        runtime/descriptors.py).  `meanwhile`: the caller's own work, done
        then too (it must not raise).  The caller's named files open for
        writing reach the container as pipes (runtime/file_relay.py) that a
        thread of this process copies into them; with `caller_copies` the
        caller does, in a wait loop of its own: `copy_file` for each of
        `file_pipes` that is ready (the pytest plugin: no thread in pytest).
        `unconfirmed` (a prepared container): return once forked, without
        waiting for the child's set-up; `confirm_start` then does (the
        plugin starts the next test's container while a test runs).
        `forker`: who forks a callable's child instead of this process, where
        it can (see process.spawn: the pytest plugin's zygote)."""
        if self.process is not None:
            raise ContainerStartError(f"container {self.name} was already started")
        prepared, self._prepared = self._prepared, None
        if prepared is not None and (target is None or log or tty is not None):
            self.remove()
            raise ContainerStartError("a prepared container starts a Python callable, without a log or a terminal")
        if prepared is not None:
            assert self.image is not None
            image = self.image
        else:
            image = self.image = self._resolve_and_use()
        argv = None
        if target is None:
            argv = command_line(self.spec, image)
            if not argv:
                self.remove()
                if self.spec.entrypoint is not None:
                    raise SpecError("--entrypoint '' and no command: nothing to run; give a command")
                raise SpecError(f"no command given and image {image.familiar} has no default command (Cmd); give one")
        pair = None
        try:
            if prepared is None:
                self._make_cgroup()
                self._make_state_dir()
                config = self._process_config(image, argv)
            else:
                config = prepared
            log_fd = None
            if log:
                assert self.log_path is not None, "a log needs a state folder (a tracked container)"
                log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
                stdout = stderr = log_fd
            config.stdio = (stdin, stdout, stderr)
            config.make_spare = prepare_next
            config.meanwhile = meanwhile
            config.keep_fds = keep_fds if log_fd is None else (*keep_fds, log_fd)  # (the log is its own)
            if not log and tty is None:
                self._relay_files(config, everything=target is not None, pumped=not caller_copies)
            if tty is not None:
                if target is not None:
                    raise SpecError("a terminal (tty) is for a command, not for a Python callable")
                from .runtime.console import Pair  # lazily: socket, which only a terminal needs

                pair = Pair(tty)
                config.tty = pair.console
            if self.spec.net is not False:
                self._join_network(config)
                if self.state_dir is not None:
                    self._write_state()  # its network and address, before the start
            if target is not None and self.spec.env:
                target = with_environment(target, dict(self.spec.env))
            self.started_at = time.monotonic()
            try:
                self.process = process.spawn(config, target, confirm=not (unconfirmed and prepared is not None),
                                             forker=forker)
            finally:
                if log_fd is not None:
                    os.close(log_fd)
                if pair is not None:
                    pair.started()
            if self._files is not None:
                self._files.started()
            if pair is not None:
                self.tty = pair.receive()
        except BaseException:
            if pair is not None:
                pair.close()
            self.remove()
            raise
        return self

    def confirm_start(self) -> None:
        """After `start(unconfirmed=True)`: wait for the child's set-up and
        raise why it failed (the container then removed).  Its timeout
        counts from now: the set-up was made ahead."""
        assert self.process is not None
        try:
            self.process.confirm()
        except BaseException:
            self.remove()
            raise
        self.started_at = time.monotonic()

    def _relay_files(self, config: process.ProcessConfig, everything: bool, pumped: bool) -> None:
        """The caller's named files open for writing among what the child
        keeps (all its fds for a callable, else the command's stdio; not
        `keep_fds`), each made a pipe that this process copies into the file
        (file_relay.py)."""
        if everything:
            fds = [int(name) for name in os.listdir("/proc/self/fd")]
        else:
            fds = list(descriptors.stdio_fds(config.stdio))
        needing = [fd for fd in fds if fd not in config.keep_fds and descriptors.needs_relay(fd)]
        if not needing:
            self._files = None
            return  # (file_relay's import, with its pump's, is only for those that do)
        from .runtime.file_relay import FileRelay

        self._files = FileRelay.of(needing, pumped)
        if self._files is not None:
            config.relayed, config.relay_pipes = self._files.child_ends, self._files.pipes()

    def file_pipes(self) -> list[int]:
        """With `start(caller_copies=True)`: the pipes to wait on."""
        return self._files.read_ends() if self._files is not None else []

    def copy_file(self, pipe: int) -> bool:
        """With `start(caller_copies=True)`: copy what `pipe` (one of
        `file_pipes`, ready) holds; False once it has ended."""
        return self._files.copy(pipe) if self._files is not None else False

    def flush_files(self) -> None:
        """Copy into the caller's files what the container has written to
        them so far (before the caller writes there itself)."""
        if self._files is not None:
            self._files.flush()

    def prepare(self) -> "Container":
        """Do now what `start(target=...)` does before it forks: take the
        image, make the cgroup and the state folder, resolve what the child
        needs; `start()` then goes straight to the fork.  For a callable
        without a log or terminal, with no network or the host's bridge
        (joined at `start`: its address is taken then), not a named one
        (the pytest plugin prepares the next test's container while the
        current test runs); `remove()` undoes it."""
        if self.process is not None or self._prepared is not None:
            return self
        if self.spec.net is not False and self.spec.net is not True:
            raise ContainerStartError("only a container without a network or on the host's bridge can be prepared")
        image = self.image = self._resolve_and_use()
        try:
            self._make_cgroup()
            self._make_state_dir()
            self._prepared = self._process_config(image, None)
        except BaseException:
            self.remove()
            raise
        return self

    def _make_cgroup(self) -> None:
        # The owner's pid in the name lets `gc` clear the cgroup of a
        # killed owner at once (an untracked container has no state file,
        # a tracked one none yet): made first, so state.json, written
        # with the folder, names it, and is written once without a network.
        limits = cgroups.Limits(mem=self.spec.mem, cpus=self.spec.cpus, pids=self.spec.pids,
                                accounting=self.spec.accounting)
        self.cgroup = cgroups.create(f"{self.short_id}-{os.getpid()}", limits, default_pids=DEFAULT_PIDS)

    @property
    def log_path(self) -> str | None:
        """The output of a container started with `log=True`."""
        return None if self.state_dir is None else log_path(self.state_dir)

    def exec_settings(self) -> dict:
        """What another process needs to `exec` in this running container
        (`hermetic exec` of a detached one): JSON-able, kept in its state."""
        assert self.image is not None and self.process is not None
        return {"env": self._env(self.image), "cwd": self.spec.workdir or self.image.config.get("WorkingDir") or "/",
                "cgroup_procs": self.cgroup.join_paths() if self.cgroup else [], "userns": self.userns,
                "privileged": self.spec.privileged, "seccomp": _seccomp_filter(self.spec) is not None,
                "user": self.spec.user or self.image.config.get("User") or None, "caps": capability_mask(self.spec)}

    def _resolve_and_use(self) -> Image:
        """The image, with its layers recorded as this container's in the
        store before anything reads them, so no `gc` takes them from under
        it.  Once more if a moved tag's old layers went meanwhile."""
        for attempt in (0, 1):
            image = (self._resolved if attempt == 0 and self._resolved is not None
                     else resolve_or_pull(self.store, self.spec.image, self.spec.platform))
            try:
                self._use = self.store.use(image, self.id, self.name)
                return image
            except StoreError:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _join_usermode_network(self, config: process.ProcessConfig) -> None:
        """Rootless: `net=True` through slirp4netns; bridges need root."""
        from .runtime import usermode_net  # lazily: 4 ms of imports only rootless net=True needs

        if self.network is not None and hasattr(self.network, "userns_path"):
            # A rootless private network: join its holder's user namespace.
            config.userns_join = self.network.userns_path
            self._attach(config)
            return
        if self.spec.net is not True:
            raise NetworkError(
                f"net={self.spec.net!r}: named networks need root in this version (a rootless bridge needs a "
                "process to hold it, and the command line has no daemon); rootless containers get net=False, "
                "net=True (slirp4netns) and, in pytest, private networks per test")
        usermode_net.check_available()
        config.network = NetworkConfig(mode="usermode", api_socket=self._api_socket() if self.spec.publish else None)
        self.address = usermode_net.ADDRESS
        config.rootfs.init_files["etc/hosts"] = (
            f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{usermode_net.ADDRESS}\t{self.hostname}\n")
        config.rootfs.init_files["etc/resolv.conf"] = (
            f"# hermetic: net=True through slirp4netns (the host is {usermode_net.GATEWAY})\n"
            f"nameserver {usermode_net.DNS}\n")

    def _join_network(self, config: process.ProcessConfig) -> None:
        if self.userns:
            self._join_usermode_network(config)
            return
        if self.network is None:
            from .networks import is_shared, resolve  # lazily: 8 ms of imports a container without a network skips

            self.network = resolve(self.spec.net)
            assert self.network is not None  # net is not False here
            self._owns_network = not is_shared(self.network)
        self._attach(config)

    def _attach(self, config: process.ProcessConfig) -> None:
        """Take an address on `self.network`; the veth comes at spawn (`network_hook`)."""
        assert self.network is not None
        attachment = self.network.attach(self.id, self.hostname)
        self._attached = True
        self.address = attachment.address
        config.network = attachment.config
        config.network_hook = attachment.connect
        config.network_netns_hook = attachment.connect_netns
        config.rootfs.init_files["etc/hosts"] = attachment.hosts
        config.rootfs.init_files["etc/resolv.conf"] = attachment.resolv_conf
        if attachment.hosts_bind:
            config.rootfs.binds.append(Bind(attachment.hosts_bind, "/etc/hosts", True))

    def _api_socket(self) -> str:
        """Where slirp4netns takes a rootless container's published ports (in its state folder)."""
        path = os.path.join(self.state_dir or "", "slirp.sock")
        if self.state_dir is None or len(path.encode()) > 107:  # sockaddr_un's sun_path
            raise SpecError(f"-p: the state folder's path is too long for slirp4netns's socket ({path}); "
                            "set HERMETIC_STATE (or XDG_RUNTIME_DIR) to a shorter folder")
        return path

    @property
    def _scratch(self) -> str:
        if self.state_dir is None:
            return os.path.join(state_root(), "scratch")
        return os.path.join(self.state_dir, "scratch")

    def _make_state_dir(self) -> None:
        make_owned(state_root())
        if self.state_dir is None:
            os.makedirs(self._scratch, exist_ok=True)
            return
        os.makedirs(containers_dir(), exist_ok=True)
        # Made under a name that says its owner and renamed whole, with its
        # state.json: `gc` never sees a container folder without its owner.
        staging = staging_dir(self.id)
        os.mkdir(staging, 0o700)
        # `scratch` becomes a tmpfs inside the container's mount namespace
        # (init layer, mount point; the rw layer too when ephemeral): it
        # needs no clean-up and costs no disk operations.
        os.mkdir(os.path.join(staging, "scratch"), 0o755)
        self._write_state(staging)
        os.rename(staging, self.state_dir)
        if self.rw_dir is not None:
            make_private(self.store.root)
            os.makedirs(os.path.dirname(self.rw_dir), exist_ok=True)
            os.mkdir(self.rw_dir, 0o700)
            for sub in ("upper", "work"):
                os.mkdir(os.path.join(self.rw_dir, sub), 0o755)

    def _layer_dirs(self, image: Image) -> tuple[list[str], list[str]]:
        """(lower dirs, top first; layer tars to replay)."""
        # Beside the image's layers the overlay stacks the init layer (and the host's "/").
        most = OVERLAY_MAX_LOWERS - (2 if image.is_host else 1)
        if len(image.layers) > most:
            raise ContainerStartError(
                f"image {image.familiar} has {len(image.layers)} layers, more than a container can stack: overlayfs "
                f"takes at most {OVERLAY_MAX_LOWERS} lower layers, so {most} image layers"
                f"{' on top of host' if image.is_host else ''}; fix: rebuild the image with fewer layers")
        if image.is_host and image.layers:
            # Store layers sit on the host's root filesystem, and overlayfs
            # refuses a lower below another lower ("/"): replay them instead.
            blobs = [self.store.blob_path(self.store.layer_meta(d)["blob"]) for d in image.layers]
            return [], blobs
        # Their presence was checked when the store recorded this container's
        # use of them (`Store.use`), under the lock gc respects.  A layer kept
        # as an EROFS image is mounted by the store, once, on first use.
        return [self.store.layer_lower(diff_id) for diff_id in reversed(image.layers)], []

    def _process_config(self, image: Image, argv: list[str] | None) -> process.ProcessConfig:
        spec = self.spec
        lowers, replay = self._layer_dirs(image)
        scratch = self._scratch
        replay_dirs = [f"{scratch}/replay/{i}" for i in range(len(replay))]
        all_lowers = [f"{scratch}/init", *reversed(replay_dirs), *lowers] + (["/"] if image.is_host else [])
        rw = self.rw_dir or scratch
        host_tmp = image.is_host and _host_tmp(spec, self.userns)
        binds = [Bind(v.source, v.target, v.readonly, v.overlay) for v in spec.volumes
                 if not (host_tmp and _of_host_tmp(v))]  # (the root's overlay shows that one)
        env = self._env(image)
        rootfs = RootfsConfig(
            lowers=all_lowers,
            upper=f"{rw}/upper",
            work=f"{rw}/work",
            merged=f"{scratch}/merged",
            scratch=scratch,
            host_root=image.is_host,
            userns=self.userns,
            privileged=spec.privileged,
            binds=binds,
            cgroup_v2=cgroups.detect().version == "v2",
            init_files=_init_files(self.hostname),
            replay=list(zip(replay, replay_dirs)),
            unpack_layer=_layer_unpacker(self.userns) if replay else None,
            layers_dir=self.store.lowers_base(lowers) if lowers else "",
            shm_size=spec.shm_size or min(host_shm_size(), spec.mem or host_shm_size()),
            read_only=spec.read_only,
            workdir=(spec.workdir or image.config.get("WorkingDir") or "") if spec.read_only else "",
            tmpfs=[_tmpfs_mount(t) for t in spec.tmpfs],
            host_tmp=host_tmp,
        )
        return process.ProcessConfig(
            rootfs=rootfs,
            hostname=self.hostname,
            argv=argv,
            env=env,
            cwd=spec.workdir or image.config.get("WorkingDir") or "/",
            user=spec.user or image.config.get("User") or None,
            cgroup_procs=self.cgroup.join_paths() if self.cgroup else [],
            userns=default_user_namespace() if self.userns else None,
            privileged=spec.privileged,
            caps=capability_mask(spec),
            seccomp=_seccomp_filter(spec),
            init=spec.init,
        )

    def _env(self, image: Image) -> dict[str, str]:
        """The image's environment, HOME and HOSTNAME, then the spec's."""
        env = _env_dict(image.env)
        env.setdefault("HOME", "/root")
        env["HOSTNAME"] = self.hostname
        env.update(self.spec.env)
        return env

    # -- while it runs ---------------------------------------------------------

    def wait(self, timeout: float | None = None) -> Result | None:
        """Wait for PID 1 to end.  The spec's timeout counts from `start()`:
        when it expires everything in the container is killed and the
        result says so.  With `timeout` (this call's own patience) and the
        container still running when it passes, return None."""
        if self.result is not None:
            return self.result
        if self.process is None:
            raise ContainerStartError(f"container {self.name} was not started")
        assert self.started_at is not None
        call_deadline = None if timeout is None else time.monotonic() + timeout
        kill_deadline = None if self.spec.timeout is None else self.started_at + self.spec.timeout
        while True:
            deadlines = [d for d in (call_deadline, kill_deadline) if d is not None]
            remaining = None if not deadlines else max(0.0, min(deadlines) - time.monotonic())
            status = self.process.wait(remaining)
            if status is not None:
                return self._finish(status, timed_out=None, killed=[])
            now = time.monotonic()
            if kill_deadline is not None and now >= kill_deadline:
                killed = self._kill_all()
                status = self.process.wait()
                assert status is not None
                return self._finish(status, timed_out=self.spec.timeout, killed=killed)
            if call_deadline is not None and now >= call_deadline:
                return None

    def run(self) -> Result:
        """Start the spec's command and wait for it."""
        self.start()
        result = self.wait()
        assert result is not None
        return result

    def _finish(self, status: process.ExitStatus, timed_out: float | None, killed: list[tuple[int, str]]) -> Result:
        stats = self.stats()
        oom = stats.oom_kills > 0 and (status.signal is not None or bool(status.code))
        if self.cgroup is not None and self.cgroup.pids():
            # PID 1 is gone, so the kernel is killing the rest of its PID
            # namespace; wait until the cgroup is empty for exact stats.
            self.cgroup.kill()
        self.result = Result(status, oom_killed=oom and timed_out is None, timed_out=timed_out, killed=killed, stats=stats)
        self.flush_files()
        return self.result

    def _kill_all(self) -> list[tuple[int, str]]:
        if self.cgroup is not None:
            return self.cgroup.kill()
        assert self.process is not None
        # No cgroup (rootless without delegation): our direct child is PID 1,
        # the rootless relay or the callable; killing it and PID 1 (whose
        # death takes its PID namespace along, and whom PR_SET_PDEATHSIG
        # ties to the relay) ends everything.
        victims = _descendants(self.process.pid)
        for pid in {self.process.pid, self.process.init_pid}:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        # The relay is bookkeeping, not part of the container.
        return [v for v in victims if v[0] != self.process.pid or self.process.pid == self.process.init_pid]

    def kill(self, sig: int = signal.SIGKILL, group: bool = False) -> None:
        """Send `sig` to PID 1 (with `group`, to its process group: PID 1
        and the children that stayed in it); SIGKILL kills everything in
        the container."""
        if self.process is None or self.result is not None:
            return
        if sig == signal.SIGKILL:
            self._kill_all()
        else:
            self.process.send_signal(sig, group)

    def stats(self) -> cgroups.Stats:
        return self.cgroup.stats() if self.cgroup is not None else cgroups.Stats()

    def exec(self, argv: list[str], *, env: dict[str, str] | None = None, workdir: str | None = None,
             stdin: int | None = None, stdout: int | None = None, stderr: int | None = None,
             user: str | None = None, tty: bytes | None = None) -> process.ContainerProcess:
        """Start `argv` in this running container; wait on the returned handle.
        `user` defaults to the container's; with `tty` (a struct winsize) it
        runs on a pty of the container's own, whose master is the handle's `tty`."""
        from .runtime.enter import enter  # lazily: 1 ms of imports that `hermetic run` never needs

        if self.process is None or self.result is not None:
            raise ContainerStartError(f"container {self.name} is not running")
        assert self.image is not None
        full_env = {**self._env(self.image), **(env or {})}
        cwd = workdir or self.spec.workdir or self.image.config.get("WorkingDir") or "/"
        return enter(self.process.init_pid, argv, full_env, cwd, self.cgroup.join_paths() if self.cgroup else [],
                     self.userns, self.spec.privileged, (stdin, stdout, stderr), _seccomp_filter(self.spec),
                     user or self.spec.user or self.image.config.get("User") or None, tty, capability_mask(self.spec),
                     cwd_asked=workdir is not None)

    # -- after ----------------------------------------------------------------

    def commit(self, ref: str, *, message: str = "") -> Image:
        """Turn the read-write layer into a new image: the old image plus one layer."""
        from .images.commit import commit_upper  # lazily: 6 ms of imports (the layer writer) a run without commit skips

        if self.image is None:
            raise ContainerStartError(f"container {self.name} was never started: nothing to commit")
        if self.spec.ephemeral:
            raise ContainerStartError(
                f"container {self.name} kept its read-write layer in memory (ephemeral=True), so it cannot be "
                "committed; start it with ephemeral=False (the CLI does so for --commit and --name)"
            )
        assert self.rw_dir is not None
        return commit_upper(self.store, self.image, f"{self.rw_dir}/upper", ref, userns=self.userns,
                            comment=message or f"hermetic commit {self.short_id}")

    def remove(self, keep_state: bool = False) -> None:
        """Kill what is left and delete the cgroup and the state folder
        (with `keep_state`, the folder stays: an exited detached container's
        state.json and log, until `hermetic rm` or `gc`)."""
        self._prepared = None
        if self.process is not None and self.process.pid_later is not None:
            try:
                self.process.confirm()  # (its fork asked for but not yet known: now)
            except HermeticError:
                pass  # never forked (its exit status says so) or its set-up failed: gone either way
        if self.process is not None and self.process.exit_status is None:
            if not self.process.kill_namespace():
                self._kill_all()
            self.process.wait()
        # Whatever PID 1 left behind goes with its PID namespace; the cgroup
        # removal below kills stragglers (a process that left the namespace).
        if self.cgroup is not None:
            try:
                self.cgroup.remove()
            finally:
                self.cgroup = None
        if self._files is not None:  # its last writer gone (but one that left the cgroup, which gets EPIPE)
            self._files.close()
            self._files = None
        if self.network is not None and self._attached:
            self._attached = False
            self.network.detach(self.id)
        if self.network is not None and self._owns_network:
            self._owns_network = False
            self.network.close()
        self.store.release(self._use)
        self._use = None
        if self.state_dir is not None and os.path.isdir(self.state_dir) and not keep_state:
            # Out of `ps`'s and gc's sight at once, under a name that says
            # whose it is (should we be killed half way through).
            doomed = doomed_dir(self.id)
            os.rename(self.state_dir, doomed)
            rmtree(doomed)
        if self.rw_dir is not None and os.path.isdir(self.rw_dir):
            rmtree(self.rw_dir)

    def __enter__(self) -> "Container":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # -- state on disk (for `ps` and `gc`) --------------------------------------

    def _write_state(self, folder: str | None = None) -> None:
        data = {
            "id": self.id,
            "name": self.name,
            "image": self.spec.image,
            "command": list(self.spec.command or []),
            "created": time.time(),
            **owner(),
            "cgroup": self.cgroup.directories() if self.cgroup else [],
            "rw_dir": self.rw_dir,
            "network": None if self.network is None else self.network.name,
            "address": self.address,
        }
        folder = folder or self.state_dir
        assert folder is not None  # a tracked container's
        write_state(folder, data)


def log_path(state_dir: str) -> str:
    """Where a detached container's output goes, in its state folder."""
    return os.path.join(state_dir, "container.log")


def command_line(spec: Spec, image: Image) -> list[str]:
    """What PID 1 runs, as Docker decides it: the ENTRYPOINT (the spec's
    `entrypoint` if set, `()` for none, else the image's), then the spec's
    command as its arguments, or without one the image's CMD (dropped when
    the spec sets its own entrypoint, as Docker drops it).  A real image's
    ENTRYPOINT (postgres's docker-entrypoint.sh) prepares what the command
    needs.  Front ends whose command is a whole script to run as it is (a
    notebook cell, a build's RUN) give `entrypoint=()`."""
    if spec.entrypoint is not None:
        return [*spec.entrypoint, *(spec.command or ())]
    entrypoint = list(image.config.get("Entrypoint") or [])
    if spec.command:
        return entrypoint + list(spec.command)
    return entrypoint + list(image.config.get("Cmd") or [])


def capability_mask(spec: Spec) -> int | None:
    """The capabilities the spec keeps (runtime/capabilities.py's `mask`); None: Docker's default set."""
    if not spec.cap_add and not spec.cap_drop:
        return None
    from .runtime import capabilities

    if os.geteuid() == 0 and spec.userns is not True:  # (in a user namespace of its own the container has them all)
        lacking = [name for name in spec.cap_add
                   if name != "ALL" and not capabilities.permitted() & (1 << capabilities.ALL_CAPS[name])]
        if lacking:
            raise SpecError(f"--cap-add {lacking[0][4:]}: this engine's own process lacks it (it runs with a reduced "
                            "capability set, e.g. in a container), so it cannot give it; leave it out")
    return capabilities.mask(spec.cap_add, spec.cap_drop)


def _host_tmp(spec: Spec, userns: bool) -> bool:
    """Whether a `host` container's /tmp is the root overlay's view of the
    host's own (RootfsConfig.host_tmp): it is to be the host's /tmp
    copy-on-write (an overlay volume of /tmp at /tmp: the pytest plugin's,
    fixtures.with_host_tmp), and that /tmp lies on the host root's mount.
    One overlay and one tmpfs fewer per container (and the kernel's RCU
    wait at each overlay's end), ~0.3 ms of CPU a test (issue #16).  As
    root, with a writable root and no tmpfs of its own at /tmp."""
    from .runtime.rootfs.volumes import on_host_root

    return (not userns and not spec.read_only and not any(t.target.rstrip("/") == "/tmp" for t in spec.tmpfs)
            and any(_of_host_tmp(v) for v in spec.volumes) and on_host_root("/tmp"))


def _of_host_tmp(volume: Volume) -> bool:
    """The host's /tmp, copy-on-write at /tmp (fixtures.with_host_tmp)."""
    return volume.overlay and volume.source == volume.target == "/tmp"


def _tmpfs_mount(tmpfs: Tmpfs) -> TmpfsMount:
    from .runtime.rootfs.tmpfs import TmpfsMount

    options = [f"{key}={value}" for key, value in (("size", tmpfs.size), ("uid", tmpfs.uid), ("gid", tmpfs.gid))
               if value is not None]
    if tmpfs.mode is not None:
        options.append(f"mode={tmpfs.mode:o}")
    return TmpfsMount(tmpfs.target, ",".join(options), tmpfs.noexec, tmpfs.readonly)


def _seccomp_filter(spec: Spec):  # noqa: ANN202 - a runtime.seccomp.Filter or None
    """Docker's default seccomp filter, compiled once per process, unless
    the spec opts out (`seccomp=False`) or is privileged (as under Docker)."""
    if spec.privileged or not spec.seccomp:
        return None
    caps = capability_mask(spec)
    sys_admin = False
    if caps is not None:
        from .runtime.capabilities import has_sys_admin

        sys_admin = has_sys_admin(caps)  # then no TIOCSTI either (runtime/seccomp.py)
    return seccomp.default(os.path.join(make_owned(state_root()), "cache"), sys_admin)


def with_environment(target: Callable[[], int | None], env: dict[str, str]) -> Callable[[], int | None]:
    """`target` with the spec's variables (env=, env_file=) in `os.environ`:
    a callable keeps its process's environment, as a forked test keeps
    pytest's, and gets the spec's on top, as a command gets them."""
    def with_env() -> int | None:
        os.environ.update(env)
        return target()

    return with_env


def _env_dict(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def _layer_unpacker(userns: bool) -> Callable[[str, str], object]:
    """What the child calls to replay a layer of an image committed on top of `host`."""
    # Imported here, before the fork, and only for such images: ~12 ms (-X importtime).
    from .images import layers

    prefix = layers.OVERLAY_USER if userns else layers.OVERLAY_TRUSTED
    return lambda tar_path, directory: layers.extract_layer(tar_path, directory, xattr_prefix=prefix)


HOST_SHM_FALLBACK = 64 << 20  # Docker's size, where the host has no /dev/shm to measure


_host_shm: list[int] = []  # measured once (not functools.lru_cache: functools is ~1.5 ms of a `hermetic run`)


def host_shm_size() -> int:
    """The size of the host's /dev/shm, which a container's is by default:
    a test that writes 1 GB there in place does so inside too (its pages
    count against the container's memory limit, as any tmpfs's)."""
    if not _host_shm:
        try:
            info = os.statvfs("/dev/shm")
            _host_shm.append(info.f_blocks * info.f_frsize or HOST_SHM_FALLBACK)
        except OSError:
            _host_shm.append(HOST_SHM_FALLBACK)
    return _host_shm[0]


def _init_files(hostname: str) -> dict[str, str]:
    hosts = (
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        f"127.0.1.1\t{hostname}\n"
    )
    return {
        "etc/hostname": hostname + "\n",
        "etc/hosts": hosts,
        "etc/resolv.conf": "# hermetic: no network (net=False), loopback only\n",
    }


def _descendants(pid: int) -> list[tuple[int, str]]:
    """`pid` and every process below it (no cgroup to ask; /proc/PID/ns of a
    rootless container is not readable)."""
    return [(p, cgroups.comm(p)) for p in [pid, *descendants(pid)]]


def commit_running(name: str, ref: str, *, store: Store | None = None, ps: str = "`hermetic ps`") -> Image:
    """Commit the read-write layer of a running container of any process
    (`hermetic commit`, a notebook's `%container commit` of a CLI container)
    on the very image it runs on, even if that image's tag has moved since."""
    from .images.commit import commit_upper  # lazily, as in Container.commit

    for state in list_states():
        if state["alive"] and name in (state.get("name"), state["id"], state["id"][:12]):
            if not state.get("rw_dir"):
                raise ContainerStartError(f"container {name!r} keeps its read-write layer in memory; only containers "
                                          "started with --name or --commit can be committed")
            store = store or Store()
            base = store.image_of(state["id"]) or resolve_or_pull(store, state["image"])
            return commit_upper(store, base, os.path.join(state["rw_dir"], "upper"), ref,
                                userns=os.geteuid() != 0, comment=f"hermetic commit {state['id'][:12]}")
    raise ContainerNotFound(f"no running container named {name!r}; see {ps}")


__all__ = ["Container", "Result", "HermeticError", "commit_running"]
