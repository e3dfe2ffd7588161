#!/usr/bin/env python3
"""Cold and cached builds of one Containerfile: `hermetic build` next to `buildah bud`.

The Containerfile has two busybox stages (buildah has no `host` image): a
build stage whose RUN writes a script, and a final stage with ARG, ENV,
WORKDIR, COPY --from, COPY of a context folder (.containerignore), USER,
ENTRYPOINT and CMD: 6 steps with a layer, 13 in all.

Contenders, each a whole command (Python start-up included for hermetic):

  hermetic build --no-cache   every step runs (cold)
  hermetic build              nothing changed: every step from the cache
  buildah bud --no-cache      (--layers --storage-driver vfs --isolation chroot)
  buildah bud --layers        nothing changed: buildah's layer cache
  podman build                when podman is installed and runs here

plus `build()` in process (cached), which is what a pytest session pays.

Method: warm-up runs, then N rounds; each round runs every contender once in
a shuffled order, so drift hits all alike; medians, p10 and p90 in ms.  A
private store (HERMETIC_STORE) and buildah root in a temporary folder, all
removed at the end.  Run as root:

    python bench/build.py [--rounds 15] [--warmup 2] [--json FILE] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from machine import describe  # bench/machine.py

CONTAINERFILE = """\
ARG BASE=busybox:bench
FROM ${BASE} AS build
RUN mkdir -p /out && printf '#!/bin/sh\\necho "$APP_GREETING $*"\\n' > /out/hello && chmod 755 /out/hello
FROM ${BASE}
ARG SALUTE=hi
ENV APP_GREETING=$SALUTE
WORKDIR /app
COPY --from=build /out/hello /app/hello
COPY data/ /app/data/
USER app
ENTRYPOINT ["/app/hello"]
CMD ["world"]
"""


def _context(root: str) -> str:
    context = os.path.join(root, "context")
    os.makedirs(os.path.join(context, "data", "sub"))
    with open(os.path.join(context, "Containerfile"), "w") as f:
        f.write(CONTAINERFILE)
    for number in range(20):
        with open(os.path.join(context, "data", "sub" if number % 2 else "", f"file{number}.txt"), "w") as f:
            f.write(f"file {number}\n" * 100)
    with open(os.path.join(context, ".containerignore"), "w") as f:
        f.write("**/*.key\n")
    return context


def _run(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr[-2000:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run it as root (the builds run containers; buildah runs with --isolation chroot)")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from hermetic_testsupport.busybox import build_rootfs

    root = tempfile.mkdtemp(prefix="hermetic-bench-build-")
    env = {**os.environ, "HERMETIC_STORE": f"{root}/store", "HERMETIC_STATE": f"{root}/state",
           "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), sys.path[0]) if p)}
    os.environ.update({k: env[k] for k in ("HERMETIC_STORE", "HERMETIC_STATE")})
    hermetic = [sys.executable, "-m", "pytest_hermetic"]
    buildah = shutil.which("buildah")
    podman = shutil.which("podman")
    storage = ["--root", f"{root}/buildah", "--runroot", f"{root}/buildah-run", "--storage-driver", "vfs"]
    try:
        rootfs = build_rootfs(f"{root}/rootfs")
        subprocess.run([*hermetic, "import", f"dir:{rootfs}", "busybox:bench"], env=env, check=True,
                       capture_output=True)
        subprocess.run([*hermetic, "save", "busybox:bench", f"oci:{root}/layout:busybox"], env=env, check=True,
                       capture_output=True)
        context = _context(root)
        base = f"BASE=oci:{root}/layout:busybox"
        contenders = {
            "hermetic build --no-cache (cold)": lambda: _run([*hermetic, "build", "--no-cache", "-q", "-t", "b:1",
                                                             context], env),
            "hermetic build (cached)": lambda: _run([*hermetic, "build", "-q", "-t", "b:1", context], env),
        }
        from pytest_hermetic.build import build

        def in_process() -> float:
            started = time.perf_counter()
            build(None, context, tags=["b:1"])
            return time.perf_counter() - started

        contenders["hermetic build() in process (cached)"] = in_process
        if buildah:
            bud = ["buildah", *storage, "bud", "--layers", "--isolation", "chroot", "--build-arg", base, "-q",
                   "-t", "b:1"]
            contenders["buildah bud --no-cache (cold)"] = lambda: _run([*bud, "--no-cache", context], env)
            contenders["buildah bud --layers (cached)"] = lambda: _run([*bud, context], env)
        results: dict[str, list[float]] = {name: [] for name in contenders}
        for name, run in contenders.items():
            for _ in range(args.warmup):
                run()
        rng = random.Random(args.seed)
        for _ in range(args.rounds):
            order = list(contenders)
            rng.shuffle(order)
            for name in order:
                results[name].append(contenders[name]() * 1000)
    finally:
        if buildah:
            subprocess.run(["buildah", *storage, "rmi", "--all", "--force"], capture_output=True)
        subprocess.run(["umount", "-R", f"{root}/buildah"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    machine = describe()
    rows = []
    for name, values in results.items():
        values.sort()
        rows.append((name, statistics.median(values), values[len(values) // 10], values[(len(values) * 9) // 10]))
    notes = [] if buildah else ["buildah: not installed"]
    notes += [] if podman else ["podman: not installed"]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "rounds": args.rounds, "ms": results}, f, indent=1)
    if args.markdown:
        print(f"- Machine: {machine['cpu']}, {machine['cores']} cores, kernel {machine['kernel']}, "
              f"cgroup {machine['cgroup']}, Python {machine['python']}, load {machine['load average']}")
        print(f"- {args.rounds} interleaved rounds after {args.warmup} warm-up runs each; times in ms.\n")
        print("| Contender | median | p10 | p90 |\n|---|---:|---:|---:|")
        for name, median, p10, p90 in rows:
            print(f"| {name} | {median:.0f} | {p10:.0f} | {p90:.0f} |")
    else:
        for name, median, p10, p90 in rows:
            print(f"{name:40s} median {median:8.1f} ms  p10 {p10:8.1f}  p90 {p90:8.1f}")
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
