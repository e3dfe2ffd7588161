#!/usr/bin/env python3
"""Pull + unpack of one image from a local registry: `hermetic pull` vs `skopeo copy` + `umoci unpack`.

Both sides start from nothing local and end with the image's root filesystem
unpacked on disk, digests checked:

  hermetic pull        `hermetic pull -q REF` into an empty store: manifest, config,
                       layers downloaded, verified and unpacked (one pass per layer)
  skopeo+umoci         `skopeo copy docker://REF oci:DIR:TAG` then
                       `umoci unpack --image DIR:TAG BUNDLE`
  skopeo copy alone    the first half of the above, for reading where time goes

Images: the busybox fixture (one 1 MB layer) and a debootstrap minbase of the
machine's Debian suite (one ~50 MB layer, ~130 MB unpacked; built once and
cached under .cache/), both made with umoci and pushed by skopeo into Debian's
`docker-registry` on 127.0.0.1.  Each round runs every contender once in a
shuffled order; outputs are deleted between runs (not timed).  Reports the
median, p10, p90 (s) and the ratio of medians.  Run as root from the
repository root:

    .venv/bin/python bench/pull.py [--rounds 7] [--json FILE] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from hermetic_testsupport.busybox import build_rootfs as busybox_rootfs  # noqa: E402
from hermetic_testsupport.debootstrap import build_rootfs as debian_rootfs  # noqa: E402
from hermetic_testsupport.registry import RegistryServer, oci_image, skopeo_copy  # noqa: E402

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    for tool in ("skopeo", "umoci", "docker-registry"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/bin/{tool}"):
            raise SystemExit(f"{tool} is not installed; run scripts/install-deps.sh")
    hermetic = [sys.executable, "-m", "pytest_hermetic"]
    import compileall  # byte-compile as an installed package is (PYTHONDONTWRITEBYTECODE would not)

    compileall.compile_dir(os.path.join(REPO, "pytest_hermetic"), quiet=1)
    work = tempfile.mkdtemp(prefix="hermetic-bench-pull-")
    results: dict[str, dict[str, list[float]]] = {}
    try:
        with RegistryServer(os.path.join(work, "registry")) as registry:
            images = {}
            bb = busybox_rootfs(os.path.join(work, "busybox-rootfs"))
            images["busybox (1 layer, 1 MB)"] = oci_image(bb, os.path.join(work, "layout"), "busybox", env=[PATH_ENV])
            deb = debian_rootfs()
            images["debian minbase (1 layer, 50 MB)"] = oci_image(deb, os.path.join(work, "layout"), "debian", env=[PATH_ENV])
            refs = {}
            for label, source in images.items():
                tag = source.rsplit(":", 1)[1]
                refs[label] = f"{registry.host}/bench/{tag}:1"
                skopeo_copy(source, f"docker://{refs[label]}")
            rng = random.Random(args.seed)
            for label, ref in refs.items():
                runs: dict[str, list[float]] = {"hermetic pull": [], "skopeo copy + umoci unpack": [], "skopeo copy alone": []}
                out = os.path.join(work, "out")

                def hermetic_pull() -> float:
                    env = {**os.environ, "HERMETIC_STORE": os.path.join(out, "store"), "PYTHONPATH": REPO}
                    return timed([*hermetic, "pull", "-q", ref], env)

                def skopeo_umoci() -> float:
                    t = timed(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"oci:{out}/oci:x"])
                    return t + timed(["umoci", "unpack", "--image", f"{out}/oci:x", f"{out}/bundle"])

                def skopeo_alone() -> float:
                    return timed(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"oci:{out}/oci:x"])

                contenders = {"hermetic pull": hermetic_pull, "skopeo copy + umoci unpack": skopeo_umoci,
                              "skopeo copy alone": skopeo_alone}
                for round_ in range(args.rounds + 1):  # round 0 warms caches and is dropped
                    order = list(contenders)
                    rng.shuffle(order)
                    for name in order:
                        shutil.rmtree(out, ignore_errors=True)
                        os.makedirs(out)
                        elapsed = contenders[name]()
                        if round_:
                            runs[name].append(elapsed)
                        shutil.rmtree(out, ignore_errors=True)
                results[label] = runs
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for label, runs in results.items():
        base = statistics.median(runs["skopeo copy + umoci unpack"])
        for name, values in runs.items():
            values = sorted(values)
            median = statistics.median(values)
            p10 = values[max(0, int(len(values) * 0.1))]
            p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
            rows.append((label, name, median, p10, p90, base / median))
    if args.markdown:
        print("| image | contender | median (s) | p10 | p90 | skopeo+umoci / this |")
        print("|---|---|---:|---:|---:|---:|")
        for label, name, median, p10, p90, ratio in rows:
            print(f"| {label} | {name} | {median:.3f} | {p10:.3f} | {p90:.3f} | {ratio:.2f}x |")
    else:
        for label, name, median, p10, p90, ratio in rows:
            print(f"{label:34} {name:28} median {median:7.3f} s  p10 {p10:7.3f}  p90 {p90:7.3f}  ratio {ratio:5.2f}x")
    print(f"\n{args.rounds} rounds, {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{subprocess.run(['skopeo', '--version'], capture_output=True, text=True).stdout.strip()}, "
          f"{subprocess.run(['umoci', '--version'], capture_output=True, text=True).stdout.strip()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
