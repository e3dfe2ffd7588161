"""`hermetic doctor` on the real machine: as root, as an unprivileged user, and
with user namespaces really blocked by the kernel, so that every gap shows up
with its fix and nothing is left behind."""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_hermetic import doctor
from pytest_hermetic.runtime import cgroups

REPO = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"  # the venv's interpreter may sit under /root, unreadable to others
NOBODY = 65534
LINE = re.compile(r"^  (ok|warn|FAIL) +(\S.*?) {2,}(.*)$")
HEADER = re.compile(r"^hermetic doctor: \S.* \((root|rootless)\), kernel \S+, cgroup \S+")

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="runs the doctor as root and as other users")


def parse(output: str) -> dict[str, tuple[str, str, str]]:
    """name -> (status, found, fix) for every check line."""
    results: dict[str, list[str]] = {}
    name = ""
    for line in output.splitlines():
        match = LINE.match(line)
        if match:
            name = match.group(2)
            results[name] = [match.group(1), match.group(3), ""]
        elif line.lstrip().startswith("fix: ") and name:
            results[name][2] = line.lstrip()[len("fix: "):]
    return {k: (v[0], v[1], v[2]) for k, v in results.items()}


def check_report(proc: subprocess.CompletedProcess[str], mode: str) -> dict[str, tuple[str, str, str]]:
    """What holds for every run: a header, no traceback, a fix for every gap,
    exit status 1 exactly when something FAILs."""
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert proc.stderr == ""
    header = HEADER.match(proc.stdout)
    assert header and header.group(1) == mode, proc.stdout
    results = parse(proc.stdout)
    assert len(results) >= 15, proc.stdout
    for name, (status, _found, fix) in results.items():
        assert status == "ok" or fix, f"{name}: {status} without a fix\n{proc.stdout}"
    failed = any(status == "FAIL" for status, _, _ in results.values())
    assert proc.returncode == (1 if failed else 0), proc.stdout
    counts = {s: sum(1 for r in results.values() if r[0] == s) for s in ("ok", "warn", "FAIL")}
    assert proc.stdout.rstrip().endswith(f"{counts['ok']} ok, {counts['warn']} warn, {counts['FAIL']} FAIL")
    return results


def no_leftovers(*dirs: Path) -> None:
    for d in dirs:
        assert not [p.name for p in d.iterdir() if p.name.startswith(".doctor-")], d
    h = cgroups.detect()
    parents = [h.v1[c] + cgroups.parent_path(h, c).rstrip("/") for c in ("memory", "cpu", "pids") if c in h.v1]
    if h.unified:
        parents.append(h.unified + cgroups.parent_path(h, "").rstrip("/"))
    for parent in parents:
        assert not [n for n in os.listdir(parent) if n.startswith("hermetic-doctor-")], parent


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, str]:
    store, state = tmp_path / "store", tmp_path / "state"
    return {"HERMETIC_STORE": str(store), "HERMETIC_STATE": str(state)}


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory other users can write (tmp_path's parents are root's only)."""
    path = Path(tempfile.mkdtemp(prefix="hermetic-doctor-test-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)


def run_as(uid: int, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The doctor as `uid`, with the system interpreter and this checkout."""
    if not shutil.which("setpriv") or not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip("needs setpriv and /usr/bin/python3")
    command = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", SYSTEM_PYTHON]
    full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO), "LANG": "C.UTF-8", **env}
    can_import = subprocess.run([*command, "-c", "import pytest_hermetic.doctor"], env=full_env,
                                capture_output=True, text=True)
    if can_import.returncode != 0:
        pytest.skip(f"uid {uid} cannot import this checkout with {SYSTEM_PYTHON}: {can_import.stderr.strip()}")
    return subprocess.run([*command, "-m", "pytest_hermetic", "doctor"], env=full_env,
                          capture_output=True, text=True, timeout=60)


@needs_root
def test_root_finds_a_working_machine(dirs: dict[str, str]) -> None:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest_hermetic", "doctor"], env={**os.environ, **dirs},
                          capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    results = check_report(proc, "root")
    assert proc.returncode == 0, proc.stdout
    for name in ("user namespace", "overlayfs", "store whiteouts", "cgroup memory", "cgroup pids",
                 "mount namespace", "pid namespace", "net namespace", "store dir", "state dir"):
        assert results[name][0] == "ok", proc.stdout
    assert f"user namespace (uid {NOBODY})" in results
    assert dirs["HERMETIC_STATE"] in results["overlayfs"][1]
    assert results["pyroute2"][0] == "ok" and results["NAT"][0] == "ok"
    from pytest_hermetic.images.store import Store  # doctor says what a pull would do

    before = os.environ.get("HERMETIC_LAYER_FORMAT")
    os.environ["HERMETIC_LAYER_FORMAT"] = "auto"
    try:
        images = Store(dirs["HERMETIC_STORE"]).layer_format(size=None) == "erofs"
    finally:
        if before is None:
            del os.environ["HERMETIC_LAYER_FORMAT"]
        else:
            os.environ["HERMETIC_LAYER_FORMAT"] = before
    assert results["EROFS layer images"][0] == "ok", proc.stdout  # (unpacked, the default, works anywhere)
    assert results["EROFS layer images"][1].startswith("mounted from a file" if images else "this kernel does not")
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        assert results["ip_forward"][0] == ("ok" if f.read().strip() == "1" else "warn")
    assert elapsed < 5, f"doctor took {elapsed:.1f}s"  # about 0.5 s here; slack for a loaded machine
    no_leftovers(Path(dirs["HERMETIC_STORE"]), Path(dirs["HERMETIC_STATE"]))


@needs_root
def test_the_caller_is_left_unchanged(dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in dirs.items():
        monkeypatch.setenv(key, value)

    def snapshot() -> tuple[list[str], int, str, int]:
        namespaces = sorted(os.readlink(f"/proc/self/ns/{ns}") for ns in os.listdir("/proc/self/ns"))
        with open("/proc/self/mountinfo") as f:
            mounts = len(f.readlines())
        return namespaces, mounts, socket.gethostname(), os.geteuid()

    before = snapshot()
    out = io.StringIO()
    assert doctor.run_checks(out) == 0, out.getvalue()
    assert snapshot() == before
    assert capsys.readouterr().out == ""  # everything went to the stream given
    assert "ok    overlayfs" in out.getvalue()


@needs_root
def test_unprivileged_user_gets_an_honest_report(open_dir: Path, dirs: dict[str, str]) -> None:
    as_root = check_report(subprocess.run([sys.executable, "-m", "pytest_hermetic", "doctor"],
                                          env={**os.environ, **dirs}, capture_output=True, text=True), "root")
    env = {"HOME": str(open_dir / "home"), "XDG_DATA_HOME": str(open_dir / "data"),
           "HERMETIC_STATE": str(open_dir / "state")}
    proc = run_as(NOBODY, env)
    results = check_report(proc, "rootless")
    # What root predicted for uid 65534 is what uid 65534 finds.
    assert results["user namespace"][0] == as_root[f"user namespace (uid {NOBODY})"][0], proc.stdout
    for name in ("user namespace", "mount namespace", "net namespace", "overlayfs"):
        status, _found, fix = results[name]
        assert status == "ok" or "root" in fix, proc.stdout
    for name in ("cgroup memory", "cgroup pids"):
        status, _found, fix = results[name]
        assert status == "ok" or "HERMETIC_CGROUP_PARENT" in fix, proc.stdout
    assert results["subordinate ids"][0] == "ok" or "usermod --add-subuids" in results["subordinate ids"][2]
    assert "newuidmap/newgidmap" in results and "XDG_RUNTIME_DIR" in results
    if "slirp4netns" in results and results["slirp4netns"][0] == "ok":
        # What slirp4netns opens as this user: only the mode's "other" bits count.
        usable = os.path.exists("/dev/net/tun") and os.stat("/dev/net/tun").st_mode & 0o006 == 0o006
        status, _found, fix = results["/dev/net/tun"]
        assert status == ("ok" if usable else "warn"), proc.stdout
        assert usable or "chmod 0666 /dev/net/tun" in fix or "modprobe tun" in fix, proc.stdout
    assert str(open_dir / "data" / "hermetic") in results["store dir"][1]
    no_leftovers(open_dir / "data" / "hermetic", open_dir / "state")


BLOCKED = """
import os, sys
from pytest_hermetic.runtime import syscalls as sc

unshared_r, unshared_w = os.pipe()
mapped_r, mapped_w = os.pipe()
pid = os.fork()
if pid == 0:
    sc.unshare(sc.CLONE_NEWUSER)
    os.close(unshared_w)  # tell the parent
    os.close(mapped_w)
    os.read(mapped_r, 1)  # until the parent has written our maps
    with open("/proc/sys/user/max_user_namespaces", "w") as f:
        f.write("0")  # this namespace may make no more of them
    os.setgroups([]); os.setgid(1000); os.setuid(1000)
    env = {"PATH": "/usr/bin:/bin", "HOME": sys.argv[1], "PYTHONPATH": sys.argv[2],
           "HERMETIC_STORE": sys.argv[1] + "/store", "HERMETIC_STATE": sys.argv[1] + "/state"}
    os.execve(sys.argv[3], [sys.argv[3], "-m", "pytest_hermetic", "doctor"], env)
os.close(unshared_w)
os.read(unshared_r, 1)
for name in ("uid_map", "gid_map"):
    with open(f"/proc/{pid}/{name}", "w") as f:
        f.write("0 200000 65536")
os.close(mapped_w)
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


@needs_root
def test_blocked_user_namespaces_fail_with_the_fix(open_dir: Path) -> None:
    """A user namespace whose user.max_user_namespaces is 0: a real kernel
    refusal, seen by a rootless user inside it."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip("needs /usr/bin/python3")
    proc = subprocess.run([sys.executable, "-c", BLOCKED, str(open_dir), str(REPO), SYSTEM_PYTHON],
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60)
    if "No module named" in proc.stderr:
        pytest.skip(f"the mapped user cannot import this checkout: {proc.stderr.strip()}")
    results = check_report(proc, "rootless")
    assert proc.returncode == 1
    sysctl_fix = "sudo sysctl -w user.max_user_namespaces=15000"
    assert results["user.max_user_namespaces"][0] == "warn"
    status, found, fix = results["user namespace"]
    assert status == "FAIL" and "No space left on device" in found and sysctl_fix in fix, proc.stdout
    for name in ("mount namespace", "pid namespace", "overlayfs"):
        assert results[name][0] == "FAIL" and sysctl_fix in results[name][2], proc.stdout


def test_apparmor_restriction_names_the_sysctl_and_root() -> None:
    rootless = doctor.apparmor_result("1", root=False)
    assert rootless.status == "warn"
    assert "kernel.apparmor_restrict_unprivileged_userns=1" in rootless.found
    assert "EPERM" in rootless.found
    assert rootless.fix.startswith("sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0")
    assert "run as root (e.g. with sudo" in rootless.fix
    as_root = doctor.apparmor_result("1\n", root=True)
    assert "unprivileged users" in as_root.found and as_root.fix == rootless.fix
    for value in ("0", None):
        result = doctor.apparmor_result(value, root=False)
        assert result.status == "ok" and not result.fix


def test_fix_lines_sit_under_the_found_column() -> None:
    text = doctor.format_result(doctor.Result("warn", "cgroup pids", "not writable", "run as root"))
    first, second = text.splitlines()
    assert second.index("fix:") == first.index("not writable")
    assert parse(text) == {"cgroup pids": ("warn", "not writable", "run as root")}
