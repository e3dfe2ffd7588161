"""scripts/third_party_check.py's bookkeeping: modes and rounds, medians,
per-test overheads, and differences counted once per mode (pure functions,
no download, no pytest run)."""

from __future__ import annotations

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location("third_party_check", os.path.join(ROOT, "scripts", "third_party_check.py"))
assert _spec is not None and _spec.loader is not None
check = importlib.util.module_from_spec(_spec)
sys.modules["third_party_check"] = check  # (its dataclasses look their module up)
_spec.loader.exec_module(check)


def run(label: str, mode: str, seconds: float, outcomes: dict[str, str], cpu: float = 0.0) -> object:
    r = check.Run(label, mode, "1.00 1.00 1.00", cpu=cpu, seconds=seconds)
    r.cases = {k: check.Case(v, "why" if v != "passed" else "") for k, v in outcomes.items()}
    return r


def result(runs: dict[str, list]) -> object:
    r = check.Result("demo==1.0", modes=list(runs), runs=runs)
    for other in r.compared:
        check.compare(r, other)
    return r


def test_medians_overheads_and_ratio():
    tests = {f"t{i}": "passed" for i in range(100)}
    r = result({"plain": [run("plain", "plain", 1.0, tests, 0.5), run("plain#2", "plain", 3.0, tests, 0.7)],
                "forked": [run("forked", "forked", 2.0, tests), run("forked#2", "forked", 4.0, tests)],
                "hermetic": [run("hermetic", "hermetic", 3.0, tests), run("hermetic#2", "hermetic", 5.0, tests)]})
    assert r.identical and r.seconds("plain") == 2.0 and r.seconds("plain", "cpu") == 0.6
    assert r.overhead_ms("forked") == 10.0 and r.overhead_ms("hermetic") == 20.0  # (median - plain's) / 100 tests
    line = check.times_line(r)
    assert "forked 3.0s (2.0-4.0) +10.0 ms/test" in line and "hermetic / forked 1.33 (overheads 2.00)" in line
    assert [check.verdict(r, m) for m in ("forked", "hermetic")] == ["identical", "identical"]


def test_a_difference_counts_once_per_mode_however_many_rounds():
    plain = {"a": "passed", "b": "passed"}
    r = result({"plain": [run("plain", "plain", 1, plain), run("plain#2", "plain", 1, plain)],
                "forked": [run("forked", "forked", 1, {"a": "passed", "b": "failed"}),
                           run("forked#2", "forked", 1, {"a": "passed", "b": "failed"})],
                "hermetic": [run("hermetic", "hermetic", 1, plain), run("hermetic#2", "hermetic", 1, plain)]})
    assert not r.identical and r.complete
    assert [d[:3] for d in r.differences] == [("b", "passed", "forked: failed")]
    assert check.verdict(r, "forked") == "1 differ" and check.verdict(r, "hermetic") == "identical"


def test_flaky_in_plain_is_no_difference_and_a_missing_report_is_an_error():
    r = result({"plain": [run("plain", "plain", 1, {"a": "passed"}), run("plain#2", "plain", 1, {"a": "failed"})],
                "hermetic": [run("hermetic", "hermetic", 1, {"a": "failed"})]})
    assert r.identical and len(r.flaky) == 1 and check.verdict(r, "hermetic") == "identical (1 flaky)"
    broken = run("hermetic", "hermetic", 1, {})
    broken.problem = "no junit XML written"
    r = result({"plain": [run("plain", "plain", 1, {"a": "passed"})], "hermetic": [broken]})
    assert not r.complete and check.verdict(r, "hermetic") == "ERROR: no junit XML written"
