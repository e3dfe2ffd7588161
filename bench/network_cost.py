#!/usr/bin/env python3
"""Per-test cost of container networks in a pytest session.

Generates one project per mode, N tests each, and runs each as whole
`python -m pytest -q -p hermetic` sessions, every round in a freshly shuffled
order, with one warm-up session per mode:

  plain       def test(): ...                      (no container)
  loopback    @hermetic                            (net=False: own netns, lo up)
  bridge      @hermetic(net=True)                  (veth on the host bridge hermetic0)
  service     @hermetic + a service container      (both net=False: the baseline of the next)
  private     @hermetic(net="svc") + a service     (both on a network private to the test:
              container named "db" on "svc"         its own namespace with a bridge, two veths)

Every test checks what its mode promises (an address on eth0, the service
resolvable by name), so a mode that silently lost its network fails the
benchmark instead of looking fast.  Each mode runs sessions of two sizes;
the slope between their medians is the cost of one more test, the intercept
the session's fixed cost.  Per-test cost of a network = slope of its mode -
slope of the baseline:
  net=False           loopback - plain   (the whole hermetic test, netns included)
  net=True            bridge - loopback
  private + 2 cont.   private - service  (the network, for two containers)

    python bench/network_cost.py [--tests 60] [--small 10] [--rounds 5] [--markdown]
                                 [--modes loopback,bridge] [--against OTHER_CHECKOUT]

`--against TREE` runs every mode a second time with hermetic from TREE
(`mode@base`), interleaved in the same rounds: an A/B of two trees.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time

from machine import describe, loadavg  # bench/machine.py

HEADER = "import socket\nfrom pytest_hermetic import hermetic\n\n"
BODIES = {
    "plain": "def test_{i}():\n    assert 1 + 1 == 2\n",
    "loopback": "@hermetic\ndef test_{i}():\n    assert open('/proc/net/dev').read().count(':') == 1  # lo only\n",
    "bridge": "@hermetic(net=True)\ndef test_{i}():\n    assert 'eth0' in open('/proc/net/dev').read()\n",
    "service": ("@hermetic\ndef test_{i}(containers):\n"
                "    containers.run('host', ['sleep', '60'], name='db')\n"),
    "private": ("@hermetic(net='svc')\ndef test_{i}(containers):\n"
                "    db = containers.run('host', ['sleep', '60'], name='db', net='svc')\n"
                "    assert socket.gethostbyname('db') == db.ip\n"),
}
COSTS = {"net=False": ("loopback", "plain"), "net=True": ("bridge", "loopback"),
         "private network, 2 containers": ("private", "service")}


def make_project(root: str, mode: str, tests: int) -> None:
    os.makedirs(root)
    with open(f"{root}/pytest.ini", "w") as f:
        f.write("[pytest]\n")
    with open(f"{root}/test_{mode}.py", "w") as f:
        f.write(HEADER + "\n\n".join(BODIES[mode].format(i=i) for i in range(tests)))


def run_session(project: str, tests: int, env: dict[str, str]) -> float:
    t0 = time.perf_counter_ns()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "hermetic"],
                          cwd=project, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    elapsed = (time.perf_counter_ns() - t0) / 1e9
    last = (done.stdout.strip().splitlines() or [""])[-1]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", last)}
    if done.returncode != 0 or counts.get("passed") != tests:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{project}: exit {done.returncode}, {last!r}\n{tail}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tests", type=int, default=60, help="tests in the large session")
    parser.add_argument("--small", type=int, default=10, help="tests in the small session")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--modes", default=",".join(BODIES),
                        help=f"comma-separated, of {', '.join(BODIES)} (default all)")
    parser.add_argument("--against", metavar="TREE",
                        help="also run every mode with hermetic from this checkout (first on PYTHONPATH), "
                             "interleaved, and print this tree's per-test cost over that one's")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(modes) - set(BODIES))
    if unknown:
        parser.error(f"unknown modes {unknown}; choose from {', '.join(BODIES)}")
    if os.geteuid() != 0:
        print("network_cost: bridges need root", file=sys.stderr)
        return 2
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTEST_ADDOPTS")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    sizes = (args.small, args.tests)
    envs = {"": env}
    if args.against:
        base = os.path.abspath(args.against)
        envs["@base"] = {**env, "PYTHONPATH": os.pathsep.join(p for p in (base, env.get("PYTHONPATH")) if p)}
    runs = [mode + tree for tree in envs for mode in modes]  # "bridge", "bridge@base", ...
    samples: dict[tuple[str, int], list[float]] = {(run, n): [] for run in runs for n in sizes}
    with tempfile.TemporaryDirectory(prefix="hermetic-netbench-") as tmp:
        env["PYTHONPYCACHEPREFIX"] = f"{tmp}/pycache"
        for tree_env in envs.values():
            tree_env["PYTHONPYCACHEPREFIX"] = env["PYTHONPYCACHEPREFIX"]
        projects = {}
        for mode in modes:
            for n in sizes:
                projects[mode, n] = f"{tmp}/{mode}-{n}"
                make_project(projects[mode, n], mode, n)
        for run in runs:
            mode, _, tree = run.partition("@")
            run_session(projects[mode, args.small], args.small, envs["@" + tree if tree else ""])  # warm-up
        load_before = loadavg()
        for _ in range(args.rounds):
            order = list(samples)
            random.shuffle(order)
            for run, n in order:
                mode, _, tree = run.partition("@")
                samples[run, n].append(run_session(projects[mode, n], n, envs["@" + tree if tree else ""]))
        load_after = loadavg()
    med = {key: statistics.median(s) for key, s in samples.items()}
    # The slope between the two sizes is the cost of one more test; the
    # intercept is the session's fixed cost (for networks: pyroute2's
    # import, the host bridge and its NAT rules, made once).
    per_test = {r: (med[r, args.tests] - med[r, args.small]) / (args.tests - args.small) * 1e3 for r in runs}
    fixed = {r: med[r, args.small] * 1e3 - per_test[r] * args.small for r in runs}
    info = describe()
    print(f"# network cost: sessions of {args.small} and {args.tests} tests x {args.rounds} rounds, medians; "
          f"{info.get('cpu', '')}, kernel {info.get('kernel', '')}; load {load_before} -> {load_after}")
    rows = [(r, f"{per_test[r]:.1f}", f"{fixed[r]:.0f}") for r in runs]
    costs = [(name + tree, f"{per_test[a + tree] - per_test[b + tree]:+.1f}",
              f"{fixed[a + tree] - fixed[b + tree]:+.0f}", f"{a} - {b}")
             for tree in envs for name, (a, b) in COSTS.items() if a in modes and b in modes]
    if args.markdown:
        print("\n| mode | ms per test | fixed ms per session |\n|---|---:|---:|")
        for row in rows:
            print(f"| {row[0]} | {row[1]} | {row[2]} |")
        print("\n| network | per-test cost, ms | once per session, ms | from |\n|---|---:|---:|---|")
        for row in costs:
            print(f"| {row[0]} | {row[1]} | {row[2]} | {row[3]} |")
    else:
        for row in rows:
            print(f"{row[0]:14} {row[1]:>7} ms/test   {row[2]:>6} ms/session")
        for row in costs:
            print(f"{row[0]:32} {row[1]:>7} ms/test   {row[2]:>6} ms/session   ({row[3]})")
    if args.against:
        for mode in modes:
            if per_test[mode + "@base"] > 0:
                print(f"{mode}: this tree / {args.against}, ms per test: {per_test[mode]:.1f} / "
                      f"{per_test[mode + '@base']:.1f} = {per_test[mode] / per_test[mode + '@base']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
