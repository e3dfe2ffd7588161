#!/usr/bin/env python3
"""Start cost of a container whose layers are EROFS images (mounted once by the store, on first
use, shared by every container) against the same layers unpacked.

The same images in two stores, one per layer format (HERMETIC_LAYER_FORMAT=erofs: every layer an
image, also the tiny ones; =dir: every layer unpacked): busybox (1 layer), and busybox plus 9
tiny layers (10), built through the store API (hermetic_testsupport/deep_image.py).  Each sample
is one whole container running `true`, in process, as the plugin starts them:
`Container(Spec.build(IMAGE, ["true"], ephemeral=True)).run()` then `.remove()`.

Method: warm-up runs, then N rounds; each round runs every contender once in a shuffled order.
Reports median, p10 and p90 in ms and each contender's median over its unpacked twin's.  Run as
root (only root stores keep images); the stores live in a temp folder, removed at the end.

    python bench/layer_format.py [--rounds 100] [--warmup 3] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from machine import describe  # bench/machine.py
from hermetic_testsupport.busybox import build_rootfs
from hermetic_testsupport.deep_image import build
from pytest_hermetic.container import Container
from pytest_hermetic.images.store import Store, unmount_stores_below
from pytest_hermetic.images.transports import import_image
from pytest_hermetic.spec import Spec


def make_stores(tmp: str) -> dict[str, tuple[Store, str]]:
    rootfs = build_rootfs(os.path.join(tmp, "busybox"))
    contenders = {}
    for fmt in ("erofs", "dir"):
        os.environ["HERMETIC_LAYER_FORMAT"] = fmt
        store = Store(os.path.join(tmp, f"store-{fmt}"))
        import_image(store, f"dir:{rootfs}", "fmt:1")
        build(store, "fmt:1", "fmt:10", 9)
        image = store.local("fmt:1")
        assert (store.layer_image(image.layers[0]) is not None) == (fmt == "erofs"), fmt
        contenders[f"1 layer, {fmt}"] = (store, "fmt:1")
        contenders[f"10 layers, {fmt}"] = (store, "fmt:10")
    del os.environ["HERMETIC_LAYER_FORMAT"]
    return contenders


def run_one(store: Store, image: str) -> None:
    container = Container(Spec.build(image, ["true"], ephemeral=True), store=store)
    try:
        result = container.run()
    finally:
        container.remove()
    if result.exit_code != 0:
        raise RuntimeError(f"{image}: {result.reason}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root")
    tmp = tempfile.mkdtemp(prefix="hermetic-bench-format-")
    os.environ["HERMETIC_STATE"] = os.path.join(tmp, "state")
    try:
        contenders = make_stores(tmp)
        info = describe()
        for name, (store, image) in contenders.items():
            for _ in range(args.warmup):
                run_one(store, image)
        samples: dict[str, list[float]] = {name: [] for name in contenders}
        rng = random.Random(args.seed)
        order = list(contenders)
        for _ in range(args.rounds):
            rng.shuffle(order)
            for name in order:
                store, image = contenders[name]
                t0 = time.perf_counter_ns()
                run_one(store, image)
                samples[name].append((time.perf_counter_ns() - t0) / 1e6)
    finally:
        unmount_stores_below(tmp)  # (the store's layer mounts, before its folder goes)
        shutil.rmtree(tmp)
    print("- Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print(f"- {args.rounds} interleaved rounds after {args.warmup} warm-up runs each; times in ms\n")
    print("| Image | median | p10 | p90 | median over unpacked |")
    print("|---|---:|---:|---:|---:|")
    for name, values in samples.items():
        deciles = statistics.quantiles(values, n=10, method="inclusive")
        twin = statistics.median(samples[name.rsplit(",", 1)[0] + ", dir"])
        print(f"| {name} | {statistics.median(values):.2f} | {deciles[0]:.2f} | {deciles[8]:.2f} | "
              f"{statistics.median(values) / twin:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
