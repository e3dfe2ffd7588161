#!/usr/bin/env python3
"""Run third-party projects' own test suites plainly, under pytest-forked and
with --hermetic; compare the per-test outcomes and the whole-session times.

    .venv/bin/python scripts/third_party_check.py more-itertools==11.2.1 toolz==1.2.0 six==1.17.0
    .venv/bin/python scripts/third_party_check.py jinja2==3.1.6 --rounds 3 --modes plain,forked,hermetic

(the first three when no project is named).  For each PROJECT==VERSION:

1. `pip download --no-deps --no-binary :all:` its sdist into a temp dir and
   unpack it;
2. create a venv from the base interpreter of this repo's .venv (no system
   site-packages) and install into it the unpacked project (`pip install .`),
   pytest, pytest-timeout (unless --test-timeout 0; pytest-xdist with
   --xdist), pytest-forked 1.7.5 when the forked mode runs (with
   bench/forked_compat.py, its shim for pytest 9.2, beside the packages),
   what the tests need (the built-in table below, or --deps), and this repo
   (`pip install -e REPO --config-settings editable_mode=compat`);
3. run the project's suite from the unpacked tree,
   `python -m pytest -p hermetic -p no:cacheprovider -q -rA --junitxml=FILE`,
   in each mode of --modes (default all three): `plain` (the plugin loaded,
   no `--hermetic`), `forked` (`--forked`: pytest-forked, one fork per test)
   and `hermetic` (`--hermetic`), all with `--timeout=300` so a hanging test
   fails alone; with --hermetic-xdist N also `hermetic-nN`
   (`--hermetic -n N`, pytest-xdist installed).  --rounds N runs every mode
   N times, each round in a freshly shuffled order, so load that comes and
   goes on a shared machine meets every mode alike; times are medians;
   the plain runs beyond the first (and --plain-runs) tell flaky tests;
4. read the junit XML files into {test id: outcome} and compare every other
   mode's runs with the first plain run; also the subtest counts of pytest's
   summary line, which junit XML does not list.

It prints per project the outcome counts of every run with its wall time
and the load average as it started, the median session time per mode, the
per-test overhead over plain ((median - plain's median) / tests) and
hermetic / forked, and every test whose outcome differs (with that run's
failure message); then a table of all projects.  Exit status 0 only if
every mode's runs have the plain run's outcomes (and all produced a
report); 1 otherwise; 2 when a project could not be downloaded, installed
or run.

All runs get the same PYTHONHASHSEED (0 unless --hashseed says otherwise),
so a test that depends on set or dict-of-str ordering cannot differ between
them by chance; PYTHONPATH, PYTEST_ADDOPTS, PYTEST_PLUGINS and VIRTUAL_ENV
are removed from their environment.  Temp dirs are removed at the end
(--keep leaves them, and says where).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.append(str(REPO / "bench"))
import forked_compat  # noqa: E402 - bench/forked_compat.py: pytest-forked's shim for pytest 9.2
from machine import loadavg  # noqa: E402 - bench/machine.py

# The modes a suite runs in (--modes), their options after the common ones.
# pytest-forked is loaded by its entry point (installed when its mode runs),
# its shim with -p.  --hermetic-xdist N adds `hermetic-nN`.
MODES: dict[str, tuple[str, ...]] = {
    "plain": (),
    "forked": ("-p", forked_compat.NAME, "--forked"),
    "hermetic": ("--hermetic",),
}

# What each known project's tests need beyond pytest and the project itself,
# which paths to run (relative to the unpacked sdist; empty: the project's own
# testpaths or the whole tree) and extra pytest arguments.  Keys are
# normalized names (PEP 503).  --deps / --paths / --args override per project.
DEFAULT_SPECS = ["more-itertools==11.2.1", "toolz==1.2.0", "six==1.17.0"]
KNOWN: dict[str, dict[str, list[str]]] = {
    "more-itertools": {"deps": [], "paths": ["tests"], "args": []},
    "toolz": {"deps": [], "paths": ["toolz"], "args": []},
    "six": {"deps": [], "paths": ["test_six.py"], "args": []},
    "iniconfig": {"deps": [], "paths": ["testing"], "args": []},
    "attrs": {"deps": ["hypothesis", "pympler", "cloudpickle"], "paths": ["tests"], "args": []},
    "execnet": {"deps": [], "paths": ["testing"], "args": []},
    "click": {"deps": [], "paths": ["tests"], "args": ["-W", "ignore::pytest.PytestRemovedIn10Warning"]},  # as dateutil
    "jinja2": {"deps": ["trio"], "paths": ["tests"], "args": []},
    # (not test_version.py and test_specifiers.py: 25,000 parametrized cases, whose -rA summary alone
    # takes pytest minutes)
    "packaging": {"deps": ["pretend"], "paths": ["tests/test_markers.py", "tests/test_requirements.py", "tests/test_tags.py",
                                                 "tests/test_utils.py", "tests/test_metadata.py", "tests/test_elffile.py",
                                                 "tests/test_manylinux.py", "tests/test_musllinux.py",
                                                 "tests/test_structures.py", "tests/test_licenses.py"], "args": []},
    # Issue 13's suites: a werkzeug server on a thread of a session fixture;
    # tornado/socket servers on threads of class fixtures, certificates under
    # /tmp; a large suite; a suite that monkeypatches `os`.
    "pytest-httpserver": {"deps": ["requests"], "paths": ["tests"], "args": []},
    "urllib3": {"deps": ["tornado==6.4.1", "PySocks==1.7.1", "pytest-freezegun==0.4.2", "flaky", "trustme",
                         "cryptography", "python-dateutil", "mock", "six"], "paths": ["test"],
                # its appengine conftest implements a hook with an argument pytest 9 removed
                "args": ["--ignore=test/appengine"]},
    "python-dateutil": {"deps": ["freezegun", "hypothesis", "pytest-cov"], "paths": ["tests"],
                        # its ini makes warnings errors; pytest 9 deprecates its generator parametrize
                        "args": ["-W", "ignore::pytest.PytestRemovedIn10Warning"]},
    "filelock": {"deps": ["pytest-asyncio", "pytest-mock", "virtualenv"], "paths": ["tests"], "args": []},
}
ISSUE_13 = ["pytest-httpserver==1.2.1", "urllib3==1.26.20", "python-dateutil==2.9.0.post0", "filelock==3.20.0"]

SCRUBBED_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTEST_ADDOPTS", "PYTEST_PLUGINS", "VIRTUAL_ENV",
                "PYTEST_DISABLE_PLUGIN_AUTOLOAD", "PYTEST_XDIST_AUTO_NUM_WORKERS")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Case:
    outcome: str
    message: str = ""


@dataclass
class Run:
    label: str
    mode: str = "plain"
    load: str = ""  # the load average (1, 5, 15 min) as it started
    cpu: float = 0.0  # CPU seconds (user+sys) of pytest and the processes it waited for: steadier than wall under load
    returncode: int | None = None
    seconds: float = 0.0
    cases: dict[str, Case] = field(default_factory=dict)
    log: Path | None = None
    problem: str = ""
    summary: dict[str, int] = field(default_factory=dict)  # pytest's last line: {"passed": 765, "subtests passed": ...}

    def counts(self) -> collections.Counter:
        return collections.Counter(c.outcome for c in self.cases.values())


@dataclass
class Result:
    spec: str
    modes: list[str] = field(default_factory=list)  # what was to run: plain first
    runs: dict[str, list[Run]] = field(default_factory=dict)  # mode -> its runs, in the order they ran
    differences: list[tuple[str, str, str, str]] = field(default_factory=list)  # id, plain, "run: outcome", message
    notes: list[str] = field(default_factory=list)  # same outcome, different skip/xfail reason
    flaky: list[tuple[str, str, str, str]] = field(default_factory=list)  # differs, but so do the plain runs
    problem: str = ""

    @property
    def plain(self) -> Run | None:
        """The reference run: the first plain one."""
        runs = self.runs.get("plain")
        return runs[0] if runs else None

    @property
    def more_plain(self) -> list[Run]:
        """The other plain runs (--rounds, --plain-runs): they tell flaky tests."""
        return self.runs.get("plain", [])[1:]

    @property
    def compared(self) -> list[Run]:
        """The runs compared with the plain one: every other mode's, every round's."""
        return [run for mode in self.modes if mode != "plain" for run in self.runs.get(mode, [])]

    @property
    def complete(self) -> bool:
        """Every mode ran, and every run produced a report."""
        return (not self.problem and all(self.runs.get(mode) for mode in self.modes)
                and not any(run.problem for runs in self.runs.values() for run in runs))

    @property
    def identical(self) -> bool:
        return self.complete and not self.differences

    def seconds(self, mode: str, what: str = "seconds") -> float | None:
        """The median whole-session time (`what`="cpu": CPU time) of a mode's
        runs (those with a report)."""
        times = [getattr(run, what) for run in self.runs.get(mode, []) if not run.problem]
        return statistics.median(times) if times else None

    def overhead_ms(self, mode: str) -> float | None:
        """(median session of `mode` - median plain session) per test, ms."""
        t, plain = self.seconds(mode), self.seconds("plain")
        n = len(self.plain.cases) if self.plain else 0
        return None if t is None or plain is None or not n else (t - plain) / n * 1e3


# -- helpers ----------------------------------------------------------------------


def log(message: str) -> None:
    print(message, flush=True)


def sh(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
       timeout: float | None = None, quiet: bool = True) -> subprocess.CompletedProcess:
    """Run `cmd`; on failure raise with the tail of its output."""
    log("  $ " + " ".join(cmd))
    proc = subprocess.run(cmd, cwd=cwd, env=env, timeout=timeout, text=True,
                          stdout=subprocess.PIPE if quiet else None, stderr=subprocess.STDOUT if quiet else None)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout or "").splitlines()[-40:])
        raise RuntimeError(f"{cmd[0]} ... exited {proc.returncode}\n{tail}")
    return proc


def repo_python() -> str:
    candidate = REPO / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def base_interpreter(python: str) -> str:
    """The interpreter a venv was made from (/usr/bin/python3.11 for this
    repo's .venv), so project venvs are siblings of it, not nested in it."""
    out = subprocess.run([python, "-c", "import sys; print(getattr(sys, '_base_executable', sys.executable))"],
                         text=True, capture_output=True, check=True).stdout.strip()
    return out or python


def clean_env(venv: Path, hashseed: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if hashseed != "random":
        env["PYTHONHASHSEED"] = hashseed
    return env


def unpack(archive: Path, into: Path) -> Path:
    into.mkdir(parents=True)
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            z.extractall(into)
    else:
        with tarfile.open(archive) as t:
            if hasattr(tarfile, "data_filter"):
                t.extractall(into, filter="data")
            else:  # pragma: no cover - Pythons without extraction filters
                t.extractall(into)
    entries = [p for p in into.iterdir()]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else into


# -- junit XML --------------------------------------------------------------------


def read_junit(path: Path) -> dict[str, Case]:
    """{test id: Case} from a pytest junit XML file.

    Outcome: passed (also non-strict XPASS, which junitxml writes as a pass),
    failed, error, skipped, xfailed; several of failed/error (a failing test
    whose teardown also fails) are joined with '+'.  A test listed more than
    once (a rerun plugin's attempts) counts with its last entry.
    """
    cases: dict[str, Case] = {}
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        test_id = f"{classname}::{name}" if classname else name
        kinds: list[str] = []
        messages: list[str] = []
        for child in case:
            if child.tag in ("failure", "error"):
                kinds.append("failed" if child.tag == "failure" else "error")
            elif child.tag == "skipped":
                kinds.append("xfailed" if child.get("type") == "pytest.xfail" else "skipped")
            else:
                continue
            text = (child.text or "").strip()
            message = child.get("message", "")
            messages.append(message + ("\n" + text if text and text != message else ""))
        outcome = "+".join(dict.fromkeys(kinds)) or "passed"
        # The same id again: a rerun plugin (flaky) reporting its attempts;
        # the last entry is the test's final outcome, as pytest's summary says.
        cases[test_id] = Case(outcome, "\n".join(messages))
    return cases


def read_summary(line: str) -> dict[str, int]:
    """pytest's final line, '765 passed, 21194 subtests passed in 34.26s',
    as {'passed': 765, 'subtests passed': 21194}.  It also counts what junit
    XML does not show one by one (unittest subTest / pytest subtests)."""
    line = line.strip("= ")
    line = re.sub(r" in [0-9.]+s( \([0-9:]+\))?$", "", line)
    return {m.group(2): int(m.group(1)) for m in re.finditer(r"(\d+) ([a-z][a-z ]*[a-z])", line)}


# -- one project --------------------------------------------------------------------


def run_suite(label: str, venv: Path, src: Path, work: Path, pytest_args: list[str], env: dict[str, str],
              timeout: float, flags: tuple[str, ...] = (), mode: str = "plain") -> Run:
    run = Run(label, mode, loadavg())
    junit = work / f"junit-{label}.xml"
    run.log = work / f"pytest-{label}.log"
    cmd = [str(venv / "bin" / "python"), "-m", "pytest", "-p", "hermetic", "-p", "no:cacheprovider", "-q", "-rA",
           f"--junitxml={junit}", *flags, *pytest_args]
    log(f"  $ (cd {src} && {' '.join(cmd)})")
    start, before = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(run.log, "w") as out:
        try:
            proc = subprocess.run(cmd, cwd=src, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
            run.returncode = proc.returncode
        except subprocess.TimeoutExpired:
            run.problem = f"timed out after {timeout:.0f}s"
    run.seconds = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # pytest and every process it waited for
    run.cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if junit.exists():
        try:
            run.cases = read_junit(junit)
        except ET.ParseError as exc:
            run.problem = run.problem or f"unreadable junit XML: {exc}"
    else:
        run.problem = run.problem or "no junit XML written"
    if run.returncode not in (0, 1, None) and not run.problem:
        # 2: interrupted, 3: internal error, 4: usage error, 5: no tests.
        run.problem = f"pytest exited {run.returncode}"
    summary = run.log.read_text(errors="replace").strip().splitlines()[-1:] if run.log.exists() else []
    run.summary = read_summary(summary[0]) if summary else {}
    log(f"    {label}: exit {run.returncode}, {run.seconds:.1f}s ({run.cpu:.1f}s CPU, load {run.load}), {len(run.cases)} tests"
        + (f" ({summary[0].strip('= ')})" if summary else "") + (f"  PROBLEM: {run.problem}" if run.problem else ""))
    if run.problem and run.log.exists():
        log("    last lines of its output:")
        for line in run.log.read_text(errors="replace").splitlines()[-30:]:
            log("      " + line)
    return run


def check_project(spec: str, opts: argparse.Namespace, base: str, tmp: Path) -> Result:
    result = Result(spec)
    if "==" not in spec:
        result.problem = "expected PROJECT==VERSION"
        return result
    name = normalize(spec.split("==", 1)[0])
    known = KNOWN.get(name, {"deps": [], "paths": [], "args": []})
    deps = opts.deps.get(name, known["deps"])
    paths = opts.paths.get(name, known["paths"])
    extra = opts.args.get(name, known["args"])
    work = tmp / name
    work.mkdir()
    downloads, venv = work / "download", work / "venv"
    log(f"\n=== {spec}")
    try:
        sh([repo_python(), "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", "-d", str(downloads), spec],
           timeout=opts.install_timeout)
        archives = [p for p in downloads.iterdir() if p.is_file()]
        if len(archives) != 1:
            raise RuntimeError(f"expected one sdist, pip downloaded {[a.name for a in archives]}")
        src = unpack(archives[0], work / "src")
        log(f"  sdist {archives[0].name} -> {src}")
        sh([base, "-m", "venv", str(venv)], timeout=opts.install_timeout)
        env = clean_env(venv, opts.hashseed)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        wanted = [opts.pytest, *(["pytest-xdist"] if opts.xdist or opts.hermetic_xdist else []),
                  *([opts.pytest_forked] if "forked" in opts.modes else []),
                  *(["pytest-timeout"] if opts.test_timeout else []), *deps]
        sh([*pip, str(src), *wanted], env=env, timeout=opts.install_timeout)
        sh([*pip, "-e", str(REPO), "--config-settings", "editable_mode=compat"], env=env, timeout=opts.install_timeout)
        if "forked" in opts.modes:  # the shim, beside the packages: every mode's sys.path alike
            forked_compat.install(subprocess.run([str(venv / "bin" / "python"), "-c",
                                                  "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                                 env=env, text=True, capture_output=True, check=True).stdout.strip())
        versions = subprocess.run([str(venv / "bin" / "python"), "-c",
                                   "import importlib.metadata as m, sys; print(sys.version.split()[0], "
                                   "*(f'{d}=={m.version(d)}' for d in sys.argv[1:]))", "pytest",
                                   "pytest-hermetic", spec.split("==", 1)[0],
                                   *(["pytest-forked"] if "forked" in opts.modes else [])],
                                  env=env, text=True, capture_output=True).stdout.strip()
        log(f"  venv: Python {versions}")
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        result.problem = f"set-up failed: {exc}"
        log(f"  {result.problem}")
        return result
    pytest_args = [*(["-n", str(opts.xdist)] if opts.xdist else []),
                   *([f"--timeout={opts.test_timeout:g}"] if opts.test_timeout else []), *extra, *paths]
    # Every round runs each mode once, in a freshly shuffled order: load that
    # comes and goes meets every mode alike.  Extra plain runs (--plain-runs)
    # come at the end.
    result.modes = list(opts.modes)
    order = random.Random(f"{opts.seed}:{spec}")
    rounds = [order.sample(opts.modes, len(opts.modes)) for _ in range(opts.rounds)]
    rounds += [["plain"]] * max(0, opts.plain_runs - opts.rounds)
    for modes in rounds:
        for mode in modes:
            runs = result.runs.setdefault(mode, [])
            label = mode if not runs else f"{mode}#{len(runs) + 1}"
            runs.append(run_suite(label, venv, src, work, pytest_args, env, opts.run_timeout,
                                  opts.mode_flags[mode], mode))
    for run in result.compared:
        compare(result, run)
    report_project(result, opts)
    return result


def compare(result: Result, other: Run) -> None:
    """Add to `result` every test whose outcome in `other` is not the plain run's."""
    assert result.plain is not None
    plain, herm = result.plain.cases, other.cases
    for test_id in sorted(set(plain) | set(herm)):
        a = plain[test_id].outcome if test_id in plain else "(absent)"
        b = herm[test_id].outcome if test_id in herm else "(absent)"
        others = [run.cases[test_id].outcome if test_id in run.cases else "(absent)" for run in result.more_plain]
        if a != b or any(o != a for o in others):
            message = herm[test_id].message if test_id in herm else ""
            if not message and test_id in plain:
                message = "(plain run's message) " + plain[test_id].message
            shown = "/".join(dict.fromkeys([a, *others]))
            if any(d[0] == test_id and d[2] == f"{other.mode}: {b}" for d in [*result.differences, *result.flaky]):
                continue  # the same difference in an earlier round of this mode
            # The plain runs disagree among themselves: the test is flaky here,
            # and a hermetic outcome one of them also had is no difference.
            (result.flaky if len(set([a, *others])) > 1 and b in [a, *others] else result.differences
             ).append((test_id, shown, f"{other.mode}: {b}", message if a != b else ""))
        elif a in ("skipped", "xfailed") and plain[test_id].message != herm[test_id].message:
            note = (f"{test_id}: {a} in both, but for another reason: plain "
                    f"{plain[test_id].message.splitlines()[0]!r}, {other.mode} "
                    f"{herm[test_id].message.splitlines()[0]!r}")
            if note not in result.notes:
                result.notes.append(note)
    if result.plain.summary != other.summary and not result.plain.problem and not other.problem:
        # Only the counts junit XML cannot show per test (subtests) count here;
        # per-test differences are listed already.
        subtests = {k: v for k, v in result.plain.summary.items() if "subtest" in k}
        subtests_h = {k: v for k, v in other.summary.items() if "subtest" in k}
        if subtests != subtests_h:
            result.differences.append(("(subtests, pytest's summary line)", str(subtests), f"{other.mode}: {subtests_h}",
                                       f"see the -rA summary in the {other.label} run's output (--keep)"))


def fmt_counts(run: Run | None) -> str:
    if run is None:
        return "-"
    counts = run.counts()
    order = ["passed", "failed", "error", "skipped", "xfailed"]
    keys = [k for k in order if counts.get(k)] + sorted(k for k in counts if k not in order)
    return ", ".join(f"{counts[k]} {k}" for k in keys) or "no tests"


def report_project(result: Result, opts: argparse.Namespace) -> None:
    for run in (*result.runs.get("plain", []), *result.compared):
        log(f"  {run.label:>10}: {len(run.cases)} tests: {fmt_counts(run)}; {run.seconds:.1f}s ({run.cpu:.1f}s CPU), "
            f"exit {run.returncode}, load {run.load}")
    log("  " + times_line(result))
    for note in result.notes:
        log(f"  note: {note}")
    for test_id, a, b, _ in result.flaky:
        log(f"  flaky (the plain runs disagree; not counted): {test_id}: plain {a}, {b}")
    if not result.differences:
        log("  outcomes: identical" if result.identical else "  outcomes: not compared (see PROBLEM above)")
        return
    log(f"  outcomes: {len(result.differences)} differ")
    for test_id, a, b, message in result.differences:
        log(f"  - {test_id}: plain {a}, {b}")
        lines = message.strip().splitlines()
        shown = lines if opts.full_messages or len(lines) <= 25 else lines[:5] + ["..."] + lines[-18:]
        for line in shown:
            log("      | " + line)


def times_line(result: Result) -> str:
    """Median whole-session times, per-test overheads over plain and hermetic
    / forked (of the sessions, and of the overheads), in one line."""
    parts = []
    for mode in result.modes:
        t, runs = result.seconds(mode), [run for run in result.runs.get(mode, []) if not run.problem]
        if t is None:
            parts.append(f"{mode} -")
            continue
        spread = f" ({min(r.seconds for r in runs):.1f}-{max(r.seconds for r in runs):.1f})" if len(runs) > 1 else ""
        over = result.overhead_ms(mode)
        parts.append(f"{mode} {t:.1f}s{spread}" + (f" {over:+.1f} ms/test" if mode != "plain" and over is not None else "")
                     + f" [{result.seconds(mode, 'cpu'):.1f}s CPU]")
    line = "median session (wall, [CPU]): " + ", ".join(parts)
    f, h = result.seconds("forked"), result.seconds("hermetic")
    if f and h:
        line += f"; hermetic / forked {h / f:.2f}"
        fo, ho = result.overhead_ms("forked"), result.overhead_ms("hermetic")
        if fo and ho is not None and fo > 0:
            line += f" (overheads {ho / fo:.2f})"
    return line


def parse_per_project(values: list[str], what: str) -> dict[str, list[str]]:
    """['toolz=a,b', 'six='] -> {'toolz': ['a', 'b'], 'six': []}"""
    out: dict[str, list[str]] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep:
            raise SystemExit(f"--{what} wants PROJECT=ITEM[,ITEM...], got {value!r}")
        out[normalize(name)] = [x for x in rest.split(",") if x]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("specs", nargs="*", metavar="PROJECT==VERSION",
                        help=f"default: {' '.join(DEFAULT_SPECS)}")
    parser.add_argument("--deps", action="append", default=[], metavar="PROJECT=PKG[,PKG...]",
                        help="what PROJECT's tests need (replaces the built-in table's entry; PROJECT= for nothing)")
    parser.add_argument("--paths", action="append", default=[], metavar="PROJECT=PATH[,PATH...]",
                        help="test paths to run, relative to the unpacked sdist")
    parser.add_argument("--args", action="append", default=[], metavar="PROJECT=ARG[,ARG...]",
                        help="extra pytest arguments for PROJECT, comma separated")
    parser.add_argument("--pytest", default="pytest", metavar="REQ", help="the pytest to install (default: latest)")
    parser.add_argument("--xdist", type=int, default=0, metavar="N", help="install pytest-xdist and run both with -n N")
    parser.add_argument("--hermetic-xdist", type=int, default=0, metavar="N",
                        help="also run `--hermetic -n N` (pytest-xdist installed) and compare it with the plain run")
    parser.add_argument("--issue-13", action="store_true",
                        help=f"the suites of issue 13 ({' '.join(ISSUE_13)}) with --hermetic-xdist 2")
    parser.add_argument("--python", help="interpreter to make the venvs from (default: the base of REPO/.venv)")
    parser.add_argument("--modes", default="plain,forked,hermetic",
                        help="comma-separated modes to run, plain always among them: plain, forked (pytest-forked, "
                             "installed, with bench/forked_compat.py), hermetic (default: all three)")
    parser.add_argument("--rounds", type=int, default=1, metavar="N",
                        help="run every mode N times, in a freshly shuffled order per round; times are medians")
    parser.add_argument("--seed", default="0", help="seed of the rounds' order (with the project's name)")
    parser.add_argument("--pytest-forked", default="pytest-forked==1.7.5", metavar="REQ",
                        help="the pytest-forked to install for the forked mode (default: pytest-forked==1.7.5)")
    parser.add_argument("--plain-runs", type=int, default=1, metavar="N",
                        help="run the plain suite at least N times (with --rounds, its runs count); a test whose "
                             "plain outcomes differ is reported as flaky, and an outcome another mode shares with "
                             "one of them does not count as a difference")
    parser.add_argument("--json", metavar="FILE", help="write every run's time, load, exit and counts there")
    parser.add_argument("--test-timeout", type=float, default=300, metavar="S",
                        help="install pytest-timeout and run both with --timeout=S, so a hanging test fails "
                             "instead of stalling the run (0: neither; default 300)")
    parser.add_argument("--hashseed", default="0", help="PYTHONHASHSEED for both runs ('random' to leave it unset)")
    parser.add_argument("--run-timeout", type=float, default=1800, help="seconds per pytest run (default 1800)")
    parser.add_argument("--install-timeout", type=float, default=900, help="seconds per pip/venv step (default 900)")
    parser.add_argument("--full-messages", action="store_true", help="print differing tests' messages in full")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (sdists, venvs, logs, junit XML)")
    opts = parser.parse_args(argv)
    if opts.issue_13:
        opts.specs = [*opts.specs, *ISSUE_13]
        opts.hermetic_xdist = opts.hermetic_xdist or 2
    opts.specs = opts.specs or DEFAULT_SPECS
    opts.modes = list(dict.fromkeys(m for m in opts.modes.split(",") if m))
    unknown = [m for m in opts.modes if m not in MODES]
    if unknown or "plain" not in opts.modes or opts.rounds < 1:
        parser.error(f"--modes: a comma-separated list of {', '.join(MODES)} with plain among them; got {unknown or opts.modes}"
                     if unknown or "plain" not in opts.modes else "--rounds: at least 1")
    opts.mode_flags = dict(MODES)
    if opts.hermetic_xdist:
        opts.modes.append(f"hermetic-n{opts.hermetic_xdist}")
        opts.mode_flags[opts.modes[-1]] = ("--hermetic", "-n", str(opts.hermetic_xdist))
    opts.deps = parse_per_project(opts.deps, "deps")
    opts.paths = parse_per_project(opts.paths, "paths")
    opts.args = parse_per_project(opts.args, "args")
    base = opts.python or base_interpreter(repo_python())
    tmp = Path(tempfile.mkdtemp(prefix="hermetic-third-party-"))
    log(f"repo {REPO}; venvs from {base}; work dir {tmp}")
    results: list[Result] = []
    try:
        for spec in opts.specs:
            results.append(check_project(spec, opts, base, tmp))
    finally:
        if opts.keep:
            log(f"\nkept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    log("\n=== summary")
    others = [m for m in opts.modes if m != "plain"]
    both = {"forked", "hermetic"} <= set(opts.modes)
    header = ("project", "tests", "plain", *others, *(f"t {m}" for m in opts.modes),
              *(["hermetic / forked", "CPU h / f"] if both else []), "load")
    rows = [header]
    for r in results:
        n = max([len(run.cases) for runs in r.runs.values() for run in runs] or [0])
        times = {m: r.seconds(m) for m in opts.modes}
        h, f = times.get("hermetic"), times.get("forked")
        hc, fc = r.seconds("hermetic", "cpu"), r.seconds("forked", "cpu")
        rows.append((r.spec, str(n), fmt_counts(r.plain), *(verdict(r, m) for m in others),
                     *("-" if t is None else f"{t:.1f}s" for t in times.values()),
                     *([f"{h / f:.2f}" if h and f else "-", f"{hc / fc:.2f}" if hc and fc else "-"] if both else []),
                     load_range(r)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        log("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    log(f"(times: medians of {opts.rounds} round(s), whole sessions; CPU h / f: of their CPU time (pytest and the "
        "processes it waited for); load: the 1-minute load average as runs started)")
    if opts.json:
        with open(opts.json, "w") as out:
            json.dump([{"spec": r.spec, "problem": r.problem, "identical": r.identical,
                        "differences": [d[:3] for d in r.differences], "flaky": [d[:3] for d in r.flaky],
                        "runs": {mode: [{"label": run.label, "seconds": run.seconds, "cpu": run.cpu, "load": run.load,
                                         "returncode": run.returncode, "problem": run.problem, "tests": len(run.cases),
                                         "counts": dict(run.counts())} for run in runs] for mode, runs in r.runs.items()}}
                       for r in results], out, indent=1)
    if any(not r.complete for r in results):
        return 2
    return 0 if all(r.identical for r in results) else 1


def verdict(result: Result, mode: str) -> str:
    """A mode's outcomes against the plain run's, in a few words."""
    runs = result.runs.get(mode, [])
    problems = [run.problem for run in [*result.runs.get("plain", []), *runs] if run.problem]
    if result.problem or not runs or problems:
        return "ERROR: " + (result.problem or (problems[0] if problems else "did not run")).splitlines()[0]
    differ = [d for d in result.differences if d[2].startswith(f"{mode}: ")]
    if differ:
        return f"{len(differ)} differ"
    flaky = [d for d in result.flaky if d[2].startswith(f"{mode}: ")]
    return "identical" + (f" ({len(flaky)} flaky)" if flaky else "")


def load_range(result: Result) -> str:
    loads = [float(run.load.split()[0]) for runs in result.runs.values() for run in runs if run.load]
    return f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-"


if __name__ == "__main__":
    sys.exit(main())
