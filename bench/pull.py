#!/usr/bin/env python3
"""Pull of one image from a local registry until it is ready to run: hermetic against the floor
(`curl BLOB | tar -xz`) and skopeo + umoci.

Every contender starts from nothing local and ends with the image ready for
a container, digests checked (except the floor's, which checks nothing):

  hermetic pull             `hermetic pull -q REF` into an empty store, as root, as it comes
                            (HERMETIC_LAYER_FORMAT unset: where the kernel can, layers of 512 KiB
                            and more become EROFS images, mounted by the store at the first
                            container: docs/images.md)
  hermetic pull, dir        the same with HERMETIC_LAYER_FORMAT=dir (every layer unpacked)
  hermetic pull, rootless   the same as the unprivileged user hermetic-test, with a store of its
                            own (unpacked: EROFS cannot be mounted in a user namespace)
  skopeo copy + umoci       `skopeo copy docker://REF oci:DIR:TAG`, `umoci unpack`
  floor: curl | tar -xz     download, decompress and create the files of each layer blob
                            (`curl -s URL | tar -xz -C DIR`): no digest checked, nothing kept

Images: the busybox fixture (one 1 MB layer), a many-file layer (a copy of
this Debian system's /usr/include and /usr/lib/python3.X: ~10,000 files),
and a debootstrap minbase of the machine's Debian suite (one ~50 MB layer;
built once and cached under .cache/); all made with umoci and pushed by
skopeo into Debian's `docker-registry` on 127.0.0.1.  Each round runs every
contender once in a shuffled order; outputs are deleted between runs (not
timed), after a `sync` so one run's writeback does not land in the next.
Reports per contender the median, p10 and p90 of the wall time (s), the
median CPU time (user + system of the processes it ran, s) and the ratio of
its median to the floor's; with --strace, the system calls of one more
(untimed) run of each, counted by `strace -f -c`.  Run as root from the
repository root:

    .venv/bin/python bench/pull.py [--rounds 5] [--images busybox,many,debian] [--contenders all]
                                   [--against TREE] [--strace] [--json FILE] [--markdown]

--contenders takes a comma-separated list of: root, dir, rootless, skopeo, floor (default: all);
--against TREE adds the chosen hermetic contenders run from another checkout (an A/B, interleaved).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pwd
import random
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from hermetic_testsupport.busybox import build_rootfs as busybox_rootfs  # noqa: E402
from hermetic_testsupport.debootstrap import build_rootfs as debian_rootfs  # noqa: E402
from hermetic_testsupport.registry import RegistryServer, oci_image, skopeo_copy  # noqa: E402

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USER = os.environ.get("HERMETIC_TEST_USER", "hermetic-test")
FLOOR = "floor: curl | tar -xz"


def many_files_rootfs(dest: str) -> str:
    """A copy of this system's C headers and Python standard library: ~10,000 files."""
    stdlib = sysconfig.get_paths()["stdlib"]
    for src in ("/usr/include", stdlib):
        target = os.path.join(dest, src.lstrip("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        subprocess.run(["cp", "-a", src, target], check=True)
    return dest


class Runner:
    """Runs a command line, timing it and counting its CPU (and, when asked, its system calls)."""

    def __init__(self, strace: bool) -> None:
        self.strace = strace
        self.syscalls: dict[str, int] = {}

    def __call__(self, argv: list[str] | str, env: dict[str, str] | None = None, *, label: str = "") -> tuple[float, float]:
        shell = isinstance(argv, str)
        if self.strace and label:
            out = tempfile.mktemp(prefix="hermetic-bench-strace-")
            wrapped = ["strace", "-f", "-c", "-o", out] + (["bash", "-c", argv] if shell else argv)
            subprocess.run(wrapped, capture_output=True, env=env, check=True)
            with open(out) as f:
                total = [line.split() for line in f if line.rstrip().endswith("total")]
            os.unlink(out)
            self.syscalls[label] = self.syscalls.get(label, 0) + (int(total[-1][3]) if total else 0)
            return 0.0, 0.0
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        result = subprocess.run(["bash", "-c", argv] if shell else argv, capture_output=True, text=True, env=env)
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if result.returncode != 0:
            raise SystemExit(f"{argv} failed: {result.stderr.strip()}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return elapsed, cpu


def layer_urls(host: str, repo: str) -> list[str]:
    accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
    request = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/1", headers={"Accept": accept})
    with urllib.request.urlopen(request) as response:
        manifest = json.load(response)
    return [f"http://{host}/v2/{repo}/blobs/{layer['digest']}" for layer in manifest["layers"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--images", default="busybox,many,debian")
    parser.add_argument("--contenders", default="all",
                        help="comma-separated: root, dir, rootless, skopeo, floor (default: all; the floor always runs)")
    parser.add_argument("--against", metavar="TREE",
                        help="also run the chosen hermetic contenders with another checkout's pytest_hermetic")
    parser.add_argument("--strace", action="store_true", help="also count system calls (one more run each)")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (the rootless contender runs as the user hermetic-test)")
    for tool in ("skopeo", "umoci", "docker-registry", "curl", "setpriv") + (("strace",) if args.strace else ()):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/bin/{tool}"):
            raise SystemExit(f"{tool} is not installed; run scripts/install-deps.sh")
    user = pwd.getpwnam(USER)
    import compileall  # byte-compile as an installed package is (PYTHONDONTWRITEBYTECODE would not)

    for tree in [REPO] + ([args.against] if args.against else []):
        compileall.compile_dir(os.path.join(tree, "pytest_hermetic"), quiet=1)
    work = tempfile.mkdtemp(prefix="hermetic-bench-pull-")
    os.chmod(work, 0o755)  # the rootless contender writes below it
    run = Runner(strace=False)
    counter = Runner(strace=True)
    results: dict[str, dict[str, dict[str, list[float]]]] = {}
    wanted = args.images.split(",")
    try:
        with RegistryServer(os.path.join(work, "registry")) as registry:
            images = {}
            layout = os.path.join(work, "layout")
            if "busybox" in wanted:
                bb = busybox_rootfs(os.path.join(work, "busybox-rootfs"))
                images["busybox (1 layer, 1 MB)"] = oci_image(bb, layout, "busybox", env=[PATH_ENV])
            if "many" in wanted:
                many = many_files_rootfs(os.path.join(work, "many-rootfs"))
                images["many files (1 layer, ~10,000 files)"] = oci_image(many, layout, "many", env=[PATH_ENV])
                shutil.rmtree(many)
            if "debian" in wanted:
                images["debian minbase (1 layer, 50 MB)"] = oci_image(debian_rootfs(), layout, "debian", env=[PATH_ENV])
            refs = {}
            for label, source in images.items():
                tag = source.rsplit(":", 1)[1]
                refs[label] = (f"{registry.host}/bench/{tag}:1", f"bench/{tag}")
                skopeo_copy(source, f"docker://{refs[label][0]}")
            rng = random.Random(args.seed)
            out = os.path.join(work, "out")
            python = sys.executable
            hermetic = [python, "-m", "pytest_hermetic"]
            for label, (ref, repo) in refs.items():
                urls = layer_urls(registry.host, repo)

                def hermetic_pull(r: Runner, name: str, fmt: str = "", tree: str = REPO) -> tuple[float, float]:
                    env = {**os.environ, "HERMETIC_STORE": os.path.join(out, "store"), "PYTHONPATH": tree,
                           "HERMETIC_LAYER_FORMAT": fmt}  # ("": the default)
                    return r([*hermetic, "pull", "-q", ref], env, label=name)

                def rootless(r: Runner, name: str, tree: str = REPO) -> tuple[float, float]:
                    home = os.path.join(out, "home")
                    os.makedirs(home)
                    os.chown(out, user.pw_uid, user.pw_gid)
                    os.chown(home, user.pw_uid, user.pw_gid)
                    env = {"PATH": PATH_ENV[5:], "HOME": home, "PYTHONPATH": tree, "LANG": "C.UTF-8",
                           "HERMETIC_STORE": os.path.join(out, "store"), "XDG_RUNTIME_DIR": home}
                    return r(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups",
                              "/usr/bin/python3", "-m", "pytest_hermetic", "pull", "-q", ref], env, label=name)

                def skopeo_umoci(r: Runner, name: str) -> tuple[float, float]:
                    a = r(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"oci:{out}/oci:x"],
                          label=name)
                    b = r(["umoci", "unpack", "--image", f"{out}/oci:x", f"{out}/bundle"], label=name)
                    return a[0] + b[0], a[1] + b[1]

                def floor(r: Runner, name: str) -> tuple[float, float]:
                    # umoci's tars end without the end-of-archive blocks (as Go's archive/tar may):
                    # GNU tar then says "Unexpected EOF" and exits 2 with every file made
                    script = "; ".join(f"{{ curl -sfL {url} | tar -xz -C {out} 2>/dev/null || [ $? = 2 ]; }}"
                                       for url in urls)
                    return r(f"set -e; {script}", label=name)

                every = {
                    "root": ("hermetic pull", lambda r, n: hermetic_pull(r, n)),
                    "dir": ("hermetic pull, dir", lambda r, n: hermetic_pull(r, n, "dir")),
                    "rootless": ("hermetic pull, rootless", rootless),
                    "skopeo": ("skopeo copy + umoci unpack", skopeo_umoci),
                    "floor": (FLOOR, floor),
                }
                chosen = list(every) if args.contenders == "all" else args.contenders.split(",") + ["floor"]
                unknown = sorted(set(chosen) - set(every))
                if unknown:
                    raise SystemExit(f"--contenders: unknown {', '.join(unknown)} (choose from {', '.join(every)})")
                contenders = {name: run_it for key, (name, run_it) in every.items() if key in chosen}
                if args.against:  # the same hermetic contenders on another tree, interleaved with these
                    other = args.against
                    twins = {"root": lambda r, n: hermetic_pull(r, n, "", other),
                             "dir": lambda r, n: hermetic_pull(r, n, "dir", other),
                             "rootless": lambda r, n: rootless(r, n, other)}
                    for key in chosen:
                        if key in twins:
                            contenders[f"{every[key][0]} (against)"] = twins[key]
                runs: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in contenders}
                for round_ in range(args.rounds + 1):  # round 0 warms caches and is dropped
                    order = list(contenders)
                    rng.shuffle(order)
                    for name in order:
                        shutil.rmtree(out, ignore_errors=True)
                        os.makedirs(out)
                        os.sync()
                        wall, cpu = contenders[name](run, name)
                        if round_:
                            runs[name]["wall"].append(wall)
                            runs[name]["cpu"].append(cpu)
                        shutil.rmtree(out, ignore_errors=True)
                if args.strace:
                    for name, contender in contenders.items():
                        shutil.rmtree(out, ignore_errors=True)
                        os.makedirs(out)
                        counter.syscalls.pop(name, None)
                        contender(counter, name)
                        runs[name]["syscalls"] = [float(counter.syscalls.get(name, 0))]
                        shutil.rmtree(out, ignore_errors=True)
                results[label] = runs
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for label, runs in results.items():
        base = statistics.median(runs[FLOOR]["wall"])
        for name, values in runs.items():
            wall = sorted(values["wall"])
            median = statistics.median(wall)
            p10 = wall[max(0, int(len(wall) * 0.1))]
            p90 = wall[min(len(wall) - 1, int(len(wall) * 0.9))]
            calls = values.get("syscalls", [0])[0]
            rows.append((label, name, median, p10, p90, statistics.median(values["cpu"]), calls, median / base))
    if args.markdown:
        print("| image | contender | median (s) | p10 | p90 | CPU (s) | syscalls | this / floor |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for label, name, median, p10, p90, cpu, calls, ratio in rows:
            print(f"| {label} | {name} | {median:.3f} | {p10:.3f} | {p90:.3f} | {cpu:.2f} | "
                  f"{int(calls) if calls else '-'} | {ratio:.2f}x |")
    else:
        for label, name, median, p10, p90, cpu, calls, ratio in rows:
            print(f"{label:38} {name:28} median {median:7.3f} s  p10 {p10:7.3f}  p90 {p90:7.3f}  cpu {cpu:6.2f} s  "
                  f"syscalls {int(calls):8d}  /floor {ratio:5.2f}x")
    print(f"\n{args.rounds} rounds, {platform.node()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
          f"Python {platform.python_version()}, "
          f"{subprocess.run(['skopeo', '--version'], capture_output=True, text=True).stdout.strip()}, "
          f"{subprocess.run(['umoci', '--version'], capture_output=True, text=True).stdout.strip()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
