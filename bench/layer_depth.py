#!/usr/bin/env python3
"""Start cost of a container by image depth: 1 layer against 50 (and more).

Each contender is one image in one store whose path is 150 characters long
(so 50 layers' absolute paths are three times what one page of mount
options holds, and the overlay is mounted through short links): busybox
plus N-1 tiny layers built through the store API (hermetic_testsupport/deep_image.py).
Each sample is one whole container running `true`, in process, as the
plugin starts them: `Container(Spec.build(IMAGE, ["true"])).run()` then
`.remove()`.

Method: warm-up runs, then N rounds; each round runs every depth once in a
shuffled order, so drift hits all alike.  Reports median, p10 and p90 in ms
and each depth's median over the 1-layer median (target: 50 layers within
1.2x).  Run as root; Python 3.10+ stdlib only (plus pytest_hermetic).  The
store and state live in a temp folder, removed at the end.

    python bench/layer_depth.py [--depths 1,50,125] [--rounds 30] [--warmup 3] [--json FILE] [--markdown]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # fixtures/

from machine import describe, loadavg  # bench/machine.py
from hermetic_testsupport.busybox import build_rootfs
from hermetic_testsupport.deep_image import build
from pytest_hermetic.container import Container
from pytest_hermetic.images.store import Store
from pytest_hermetic.images.transports import import_image
from pytest_hermetic.spec import Spec

STORE_PATH_LENGTH = 150
TARGET = 1.2  # 50 layers against 1


def make_store(tmp: str, depths: list[int]) -> tuple[Store, dict[int, str]]:
    """A store under a STORE_PATH_LENGTH-character path with an image per depth."""
    parent = os.path.join(tmp, "")
    root = parent + "d" * (STORE_PATH_LENGTH - len(parent) - len("/store")) + "/store"
    store = Store(root)
    import_image(store, f"dir:{build_rootfs(os.path.join(tmp, 'busybox'))}", "depth:1")
    images = {1: "depth:1"}
    for depth in depths:
        if depth > 1:
            images[depth] = build(store, "depth:1", f"depth:{depth}", depth - 1).familiar
    return store, images


def run_one(store: Store, image: str) -> None:
    container = Container(Spec.build(image, ["true"], ephemeral=True), store=store)
    try:
        result = container.run()
    finally:
        container.remove()
    if result.exit_code != 0:
        raise RuntimeError(f"{image}: {result.reason}")


def summary(samples: list[float]) -> dict[str, float]:
    deciles = statistics.quantiles(samples, n=10, method="inclusive")
    return {"median": statistics.median(samples), "p10": deciles[0], "p90": deciles[8]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depths", default="1,50,125", help="image depths in layers (default 1,50,125)")
    parser.add_argument("--rounds", type=int, default=30, help="measured rounds (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up runs per depth (default 3)")
    parser.add_argument("--seed", type=int, default=None, help="seed for the order shuffle")
    parser.add_argument("--json", metavar="FILE", help="write raw numbers (ms) and the summary here")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table for docs")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root")
    depths = sorted({1, *(int(d) for d in args.depths.split(","))})
    if args.rounds < 2:
        parser.error("--rounds must be at least 2")

    tmp = tempfile.mkdtemp(prefix="hermetic-bench-depth-")
    saved_state = os.environ.get("HERMETIC_STATE")
    os.environ["HERMETIC_STATE"] = os.path.join(tmp, "state")
    try:
        store, images = make_store(tmp, depths)
        info = describe()
        print(f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
        for key, value in info.items():
            print(f"{key}: {value}")
        print(f"store: {len(store.root)} characters")
        sys.stdout.flush()
        for depth in depths:
            for _ in range(args.warmup):
                run_one(store, images[depth])
        samples: dict[int, list[float]] = {depth: [] for depth in depths}
        rng = random.Random(args.seed)
        order = list(depths)
        for _ in range(args.rounds):
            rng.shuffle(order)
            for depth in order:
                t0 = time.perf_counter_ns()
                run_one(store, images[depth])
                samples[depth].append((time.perf_counter_ns() - t0) / 1e6)
    finally:
        if saved_state is None:
            del os.environ["HERMETIC_STATE"]
        else:
            os.environ["HERMETIC_STATE"] = saved_state
        shutil.rmtree(tmp)

    info["load average"] = f"{info['load average']} at start, {loadavg()} at end"
    stats = {depth: summary(s) for depth, s in samples.items()}
    base = stats[1]["median"]
    rows = [(f"{d} layer{'s' if d > 1 else ''}", s, s["median"] / base) for d, s in stats.items()]
    verdict = ""
    if 50 in stats:
        met = stats[50]["median"] / base <= TARGET
        verdict = f"50 layers / 1 layer: {stats[50]['median'] / base:.2f} (target <= {TARGET}: {'met' if met else 'NOT met'})"
    if args.markdown:
        print("- Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
        print(f"- {args.rounds} interleaved rounds after {args.warmup} warm-up runs each; times in ms\n")
        print("| Image depth | median | p10 | p90 | median over 1 layer |")
        print("|---|---:|---:|---:|---:|")
        for name, s, over in rows:
            print(f"| {name} | {s['median']:.1f} | {s['p10']:.1f} | {s['p90']:.1f} | {over:.2f}x |")
        print(f"\n- {verdict}" if verdict else "")
    else:
        print(f"\n{args.rounds} rounds, times in ms")
        print(f"{'image depth':<14}{'median':>9}{'p10':>9}{'p90':>9}{'over 1 layer':>14}")
        for name, s, over in rows:
            print(f"{name:<14}{s['median']:>9.1f}{s['p10']:>9.1f}{s['p90']:>9.1f}{over:>13.2f}x")
        if verdict:
            print(verdict)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "machine": info,
                       "rounds": args.rounds, "warmup": args.warmup, "summary_ms": stats, "samples_ms": samples},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
