#!/usr/bin/env python3
"""Cost of one container, start to finish, running `true`.

Contenders (each is one function below, timed end to end per container):

  fork+exec true         posix_spawn of true and waitpid: the floor
  hermetic (in process)  Container(Spec.build("host", ["true"])).run(), .remove()
  hermetic run (CLI)     `hermetic run host true` as a command (Python start-up included)
  bwrap --unshare-all    bubblewrap, ro bind of /, fresh /proc, /dev, /tmp
  crun run               a minimal OCI bundle (busybox rootfs, read-only),
                         pid/mount/ipc/uts/network namespaces, then deleted
  runc run               the same bundle with runc
  podman run --rm        --network=none of a busybox image imported from /bin/busybox

Method: warm-up runs, then N rounds; each round runs every contender once in a
shuffled order, so drift (other load, caches, timers) hits all alike.  Reports
median, p10 and p90 in ms.  Run as root; Python 3.10+ stdlib only (plus the
pytest_hermetic package being measured).

crun and podman run inside a private mount namespace made for this benchmark
(entered with `nsenter`, about 1 ms): their mounts die with it, and on a
hybrid cgroup host the cgroup2 mount is hidden there, because crun refuses
hybrid hosts whose cgroup2 hierarchy has controllers.  Everything the
benchmark creates (temp dirs, podman storage, crun state, cgroups that
podman/crun leave behind, podman's system dirs if it created them) is removed.

    python bench/container_cost.py [--rounds 30] [--warmup 3] [--json FILE] [--markdown]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import ExitStack

from machine import describe, loadavg  # bench/machine.py
from pytest_hermetic.container import Container
from pytest_hermetic.runtime import cgroups
from pytest_hermetic.spec import Spec

IMAGE = "localhost/hermetic-bench-busybox:latest"
# Paths podman creates on first use even with --root/--runroot/--tmpdir given;
# removed at the end when they did not exist before.
PODMAN_SYSTEM_PATHS = ["/var/lib/containers", "/run/containers", "/run/libpod", "/run/crun",
                       "/var/lib/cni", "/etc/cni/net.d/cni.lock"]


class Bench:
    """What the contenders share: tools, temp dir, the helper mount namespace."""

    def __init__(self, stack: ExitStack) -> None:
        self.tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="hermetic-bench-"))
        self.err = stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115 (closed by the stack)
        self.true = shutil.which("true") or "/bin/true"
        self.hermetic = _hermetic_command()
        self.bwrap = shutil.which("bwrap") or ""  # "" when not installed
        self.crun = shutil.which("crun") or ""
        self.runc = shutil.which("runc") or ""
        self.podman = shutil.which("podman") or ""
        self.nsenter: list[str] = []  # prefix that runs a command in the helper namespace
        self.crun_count = 0
        self.podman_cmd: list[str] = []
        self.podman_run_options: list[str] = []
        # The CLI runs as an installed package would: with a bytecode cache
        # (private to this run, warm after the warm-up), whatever
        # PYTHONDONTWRITEBYTECODE says and however stale the tree's pycs are.
        self.cli_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.cli_env["PYTHONPYCACHEPREFIX"] = f"{self.tmp}/pycache"

    def spawn_wait(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        """posix_spawn `argv` (stdin/stdout on /dev/null), wait; raise if it failed."""
        fd = self.err.fileno()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        pid = os.posix_spawn(argv[0], argv, os.environ if env is None else env, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, fd, 2),
        ])
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            os.lseek(fd, 0, os.SEEK_SET)
            lines = os.read(fd, 65536).decode(errors="replace").strip().splitlines() or ["(no message)"]
            raise RuntimeError(f"exit status {code}: {lines[-1]}")


def _hermetic_command() -> str:
    """The `hermetic` console script of this interpreter's environment."""
    beside = os.path.join(os.path.dirname(sys.executable), "hermetic")
    return beside if os.access(beside, os.X_OK) else (shutil.which("hermetic") or beside)


# --- contenders: one function each -------------------------------------------


def run_baseline(b: Bench) -> None:
    b.spawn_wait([b.true])


def run_hermetic_api(b: Bench, ephemeral: bool = True) -> None:
    # ephemeral: the rw layer on a tmpfs inside the container, as the pytest
    # plugin and `hermetic run` (without --commit/--name) use it.
    container = Container(Spec.build("host", ["true"], ephemeral=ephemeral))
    try:
        result = container.run()
    finally:
        container.remove()
    if result.exit_code != 0:
        raise RuntimeError(f"hermetic container: {result.reason}")


def run_hermetic_api_disk(b: Bench) -> None:
    run_hermetic_api(b, ephemeral=False)


def run_hermetic_cli(b: Bench) -> None:
    b.spawn_wait([b.hermetic, "run", "host", "true"], b.cli_env)


def run_bwrap(b: Bench) -> None:
    b.spawn_wait([b.bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/",
                  "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "true"])


def run_crun(b: Bench, tool: str = "crun") -> None:
    b.crun_count += 1
    cid = f"bench-{tool}-{os.getpid()}-{b.crun_count}"  # not "hermetic-": `hermetic gc` owns those
    state = f"{b.tmp}/{tool}-state"
    binary = b.crun if tool == "crun" else b.runc
    b.spawn_wait(b.nsenter + [binary, "--root", state, "run", "--bundle", f"{b.tmp}/bundle", cid])
    if os.path.exists(f"{state}/{cid}"):  # `run` deletes it on exit; make sure
        b.spawn_wait(b.nsenter + [binary, "--root", state, "delete", "--force", cid])


def run_runc(b: Bench) -> None:
    run_crun(b, "runc")


def run_podman(b: Bench) -> None:
    b.spawn_wait(b.nsenter + b.podman_cmd + ["run", "--rm", "--network=none", *b.podman_run_options, IMAGE,
                                              "/bin/true"])


# --- setup of the peers; each returns None when ready, else why it is skipped --


def start_helper_namespace(b: Bench, stack: ExitStack) -> None:
    """A sleeping process in a private mount namespace, for crun and podman."""
    hybrid = cgroups.detect().version == "hybrid"
    script = "umount /sys/fs/cgroup/unified || exit 1; " if hybrid else ""
    helper = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               script + "echo ready; exec sleep infinity"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    stack.callback(_stop, helper)
    if helper.stdout.readline() != b"ready\n":  # type: ignore[union-attr]
        raise RuntimeError("could not start the helper mount namespace (unshare/umount failed)")
    b.nsenter = [shutil.which("nsenter") or "nsenter", f"--mount=/proc/{helper.pid}/ns/mnt", "--"]


def _stop(process: subprocess.Popen) -> None:
    process.kill()  # our own child, by pid
    process.wait()


def busybox_rootfs(path: str) -> None:
    """A read-only-able rootfs: /bin/busybox, /bin/true and /bin/sh links, mount points."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    for sub in ("bin", "proc", "dev", "tmp", "sys", "etc"):
        os.makedirs(f"{path}/{sub}", exist_ok=True)
    shutil.copy2(busybox, f"{path}/bin/busybox")
    for applet in ("true", "sh"):
        os.symlink("busybox", f"{path}/bin/{applet}")


def setup_crun(b: Bench) -> str | None:
    if not b.crun and not b.runc:
        return "not installed"
    bundle = f"{b.tmp}/bundle"
    busybox_rootfs(f"{bundle}/rootfs")
    config = {
        "ociVersion": "1.0.2",
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": ["/bin/true"],
                    "env": ["PATH=/bin"], "cwd": "/", "noNewPrivileges": True},
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "bench",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
        ],
        "linux": {"namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts", "network")]},
    }
    with open(f"{bundle}/config.json", "w") as f:
        json.dump(config, f)
    return None


def setup_podman(b: Bench) -> str | None:
    if not b.podman:
        return "not installed"
    p = f"{b.tmp}/podman"
    b.podman_cmd = [b.podman, "--cgroup-manager=cgroupfs", "--events-backend=file", "--log-level=error",
                    "--root", f"{p}/root", "--runroot", f"{p}/run", "--tmpdir", f"{p}/tmp"]
    # Podman asks for RLIMIT_NOFILE 1048576 and NPROC 32768 (after lowering its
    # own NPROC to 32768); without CAP_SYS_RESOURCE raising a hard limit fails.
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nofile = 1048576 if nofile == resource.RLIM_INFINITY else min(nofile, 1048576)
    nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
    b.podman_run_options = ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]
    busybox_rootfs(f"{p}/rootfs")
    with tarfile.open(f"{p}/busybox.tar", "w") as tar:
        tar.add(f"{p}/rootfs", arcname=".")
    steps = [("podman import", ["import", "--change", "CMD=/bin/true", f"{p}/busybox.tar", IMAGE]),
             ("podman run", ["run", "--rm", "--network=none", *b.podman_run_options, IMAGE, "/bin/true"])]
    for step, arguments in steps:
        try:
            b.spawn_wait(b.nsenter + b.podman_cmd + arguments)
        except RuntimeError as exc:
            return f"cannot run here ({step}: {exc})"
    return None


def teardown_podman(b: Bench) -> None:
    try:
        b.spawn_wait(b.nsenter + b.podman_cmd + ["rm", "--all", "--force"])
        b.spawn_wait(b.nsenter + b.podman_cmd + ["rmi", "--all", "--force"])
    except RuntimeError as exc:
        print(f"warning: podman cleanup: {exc}", file=sys.stderr)
    # Any mount podman made lives in the helper namespace and dies with it.


# --- leave nothing behind -----------------------------------------------------


def cgroup_dirs() -> set[str]:
    """Cgroup directories up to three levels below each hierarchy's root."""
    found: set[str] = set()
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        if root.count("/") >= 7:
            dirs[:] = []
        found.update(os.path.join(root, d) for d in dirs)
    return found


def remove_leftovers(cgroups_before: set[str], paths_before: set[str]) -> None:
    """rmdir the cgroups podman (libpod_parent) and crun (bench-crun-*) left;
    delete podman's system paths when this run created them."""
    ours = [d for d in cgroup_dirs() - cgroups_before
            if "/libpod_parent" in d or os.path.basename(d).startswith(("bench-crun-", "bench-runc-"))]
    for path in sorted(ours, key=len, reverse=True):
        try:
            os.rmdir(path)
        except OSError as exc:
            print(f"warning: could not remove cgroup {path}: {exc}", file=sys.stderr)
    for path in PODMAN_SYSTEM_PATHS:
        if path in paths_before or not os.path.lexists(path):
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


# --- machine, tools, statistics, output ---------------------------------------


def machine() -> dict[str, str]:
    return describe()



def tool_versions(b: Bench) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        versions = {"pytest-hermetic": version("pytest-hermetic")}
    except PackageNotFoundError:
        versions = {"pytest-hermetic": "unknown"}
    for name, path in (("bwrap", b.bwrap), ("crun", b.crun), ("runc", b.runc), ("podman", b.podman)):
        if not path:
            versions[name] = "not installed"
            continue
        out = subprocess.run([path, "--version"], check=False, capture_output=True, text=True).stdout.split("\n")[0]
        versions[name] = (out.split() or ["unknown"])[-1]  # "crun version 1.8.1" -> "1.8.1"
    return versions


def summary(samples: list[float]) -> dict[str, float]:
    deciles = statistics.quantiles(samples, n=10, method="inclusive")
    return {"median": statistics.median(samples), "p10": deciles[0], "p90": deciles[8]}


def ratio(stats: dict[str, dict[str, float]], a: str, b: str) -> float | None:
    if a in stats and b in stats:
        return stats[a]["median"] / stats[b]["median"]
    return None


def print_report(args, info, versions, stats, skipped, rounds_done) -> None:
    base = stats.get("fork+exec true", {}).get("median", 0.0)
    api_bwrap = ratio(stats, "hermetic (in process)", "bwrap --unshare-all")
    cli_podman = ratio(stats, "hermetic run (CLI)", "podman run --rm")
    cli_runc = ratio(stats, "hermetic run (CLI)", "runc run")
    ratios = [
        ("in-process hermetic / bwrap", api_bwrap, "#16 target <= 1.0", api_bwrap is not None and api_bwrap <= 1.0),
        ("CLI hermetic / runc run", cli_runc, "#16 target <= 1.0", cli_runc is not None and cli_runc <= 1.0),
        ("CLI hermetic / podman run", cli_podman, "target < 0.5", cli_podman is not None and cli_podman < 0.5),
    ]
    if args.markdown:
        print("- Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
        print("- Tools: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
        print(f"- {rounds_done} interleaved rounds after {args.warmup} warm-up runs each; times in ms\n")
        print("| Contender | median | p10 | p90 | median over fork+exec |")
        print("|---|---:|---:|---:|---:|")
        for name, s in stats.items():
            print(f"| {name} | {s['median']:.1f} | {s['p10']:.1f} | {s['p90']:.1f} | {s['median'] - base:+.1f} |")
        for name, note in skipped.items():
            print(f"| {name} | {note} | | | |")
        print()
        for label, value, target, met in ratios:
            text = "n/a" if value is None else f"{value:.2f} ({target}: {'met' if met else 'NOT met'})"
            print(f"- {label}: {text}")
        return
    print(f"\n{rounds_done} rounds, times in ms")
    print(f"{'contender':<24}{'median':>9}{'p10':>9}{'p90':>9}{'over fork+exec':>16}")
    for name, s in stats.items():
        print(f"{name:<24}{s['median']:>9.1f}{s['p10']:>9.1f}{s['p90']:>9.1f}{s['median'] - base:>+16.1f}")
    for name, note in skipped.items():
        print(f"{name:<24}{note}")
    for label, value, target, met in ratios:
        print(f"{label}: " + ("n/a" if value is None else f"{value:.2f} ({target}: {'met' if met else 'NOT met'})"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="measured rounds (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up runs per contender (default 3)")
    parser.add_argument("--seed", type=int, default=None, help="seed for the order shuffle")
    parser.add_argument("--json", metavar="FILE", help="write raw numbers (ms) and the summary here")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table for docs")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root (crun, podman and the hermetic host image need it here)")
    if args.rounds < 2:
        parser.error("--rounds must be at least 2")

    cgroups_before = cgroup_dirs()
    paths_before = {p for p in PODMAN_SYSTEM_PATHS if os.path.lexists(p)}
    skipped: dict[str, str] = {}
    with ExitStack() as stack:
        b = Bench(stack)
        stack.callback(remove_leftovers, cgroups_before, paths_before)
        contenders = {
            "fork+exec true": run_baseline,
            "hermetic (in process)": run_hermetic_api,
            "hermetic (in process, rw layer on disk)": run_hermetic_api_disk,
            "hermetic run (CLI)": run_hermetic_cli,
            "bwrap --unshare-all": run_bwrap,
            "crun run": run_crun,
            "runc run": run_runc,
            "podman run --rm": run_podman,
        }
        if not b.bwrap:
            skipped["bwrap --unshare-all"] = "not installed"
        if b.crun or b.runc or b.podman:
            start_helper_namespace(b, stack)
        if (note := setup_crun(b)) is not None:
            skipped["crun run"] = skipped["runc run"] = note
        if not b.crun:
            skipped["crun run"] = "not installed"
        if not b.runc:
            skipped["runc run"] = "not installed"
        if b.podman:
            stack.callback(teardown_podman, b)  # runs before the helper namespace stops
        if (note := setup_podman(b)) is not None:
            skipped["podman run --rm"] = note
        for name in skipped:
            del contenders[name]

        info, versions = machine(), tool_versions(b)
        print(f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
        for key, value in {**info, **versions}.items():
            print(f"{key}: {value}")
        for name, note in skipped.items():
            print(f"{name}: {note}")
        sys.stdout.flush()

        for name, fn in contenders.items():
            for _ in range(args.warmup):
                try:
                    fn(b)
                except RuntimeError as exc:
                    raise SystemExit(f"{name} failed: {exc}") from None
        samples: dict[str, list[float]] = {name: [] for name in contenders}
        rng = random.Random(args.seed)
        order = list(contenders)
        rounds_done = 0
        try:
            for _ in range(args.rounds):
                rng.shuffle(order)
                for name in order:
                    t0 = time.perf_counter_ns()
                    try:
                        contenders[name](b)
                    except RuntimeError as exc:
                        raise SystemExit(f"{name} failed: {exc}") from None
                    samples[name].append((time.perf_counter_ns() - t0) / 1e6)
                rounds_done += 1
        except KeyboardInterrupt:
            print(f"interrupted after {rounds_done} rounds", file=sys.stderr)
            if rounds_done < 2:
                return 130
            samples = {name: s[:rounds_done] for name, s in samples.items()}

    info["load average"] = f"{info['load average']} at start, {loadavg()} at end"
    stats = {name: summary(s) for name, s in samples.items()}
    print_report(args, info, versions, stats, skipped, rounds_done)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                       "machine": info, "tools": versions, "rounds": rounds_done, "warmup": args.warmup,
                       "skipped": skipped, "summary_ms": stats, "samples_ms": samples}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
