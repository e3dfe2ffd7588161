"""Shared test set-up: a private store and state root for the session, a
busybox image built from Debian's busybox-static, the CLI as a subprocess,
an unprivileged user for the rootless checks, and the leak check.

The leak check counts, before and after the whole session, everything a
container could leave behind on the host: mounts, `hermetic-*` cgroups,
network namespaces, veth ends and the host bridge (with its NAT rules),
child processes, container and network state folders, and `hermetic-*`
files in the temp folder.  A leak fails the session even when every test
passed.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from typing import Any
from dataclasses import dataclass

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # fixtures/ (test data builders and the image tests' fixtures)
pytest_plugins = ["pytester", "hermetic_testsupport.pytest_images"]

TEST_USER = os.environ.get("HERMETIC_TEST_USER", "hermetic-test")


def _children_start_with_default_signals() -> None:
    """A job started in the background without job control (`nohup`, `cmd &`
    in a script, some CI runners) starts with SIGINT and SIGQUIT (and under
    nohup SIGHUP) ignored, and every process it starts inherits that: the
    tests that press Ctrl-C in a pytest session, or hang up a CLI, would
    test only the ignoring.  A signal with a handler is back at its default
    in a program this process starts (execve resets caught signals, not
    ignored ones), so each ignored one gets a handler that does nothing:
    this session still ignores it, the sessions and commands the tests
    start meet it as from a terminal."""
    import signal

    for number in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        if signal.getsignal(number) == signal.SIG_IGN:
            signal.signal(number, lambda *_: None)


_children_start_with_default_signals()


# -- the leak check ------------------------------------------------------------


def _count_mounts() -> int:
    with open("/proc/self/mountinfo") as f:
        return sum(1 for _ in f)


def _net_namespaces() -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                found.add(os.stat(f"/proc/{entry}/ns/net").st_ino)
            except OSError:
                pass
    return found


def _network_links() -> list[str]:
    """Veth ends and the host bridge, and whether the NAT rules are in."""
    from pytest_hermetic.networks import HOST_BRIDGE, VETH_PREFIX

    links = sorted(name for name in os.listdir("/sys/class/net") if name.startswith((VETH_PREFIX, HOST_BRIDGE)))
    if os.geteuid() == 0 and HOST_BRIDGE in links:
        from pytest_hermetic.networks import default_subnet
        from pytest_hermetic.runtime import nat

        links.append(f"NAT rules: {nat.present(default_subnet(), HOST_BRIDGE)}")
    return links


def _snapshot() -> dict[str, object]:
    from pytest_hermetic._proc import descendants
    from pytest_hermetic.gc import hermetic_cgroups
    from pytest_hermetic.state import containers_dir

    import glob

    try:
        states = sorted(os.listdir(containers_dir()))
    except FileNotFoundError:
        states = []
    above = os.path.dirname(os.environ["HERMETIC_STATE"])
    states += sorted(glob.glob(os.path.join(above, "home-*", "state", "containers", "*")))
    states += sorted(glob.glob(os.path.join(os.environ["HERMETIC_STORE"], "containers", "*")))  # rw layers
    states += sorted(glob.glob(os.path.join(os.environ["HERMETIC_STATE"], "networks", "*", "*")))
    for worker in sorted(glob.glob(os.path.join(above, "gw*"))):  # each xdist worker's state root and homes
        for pattern in (("state", "containers", "*"), ("home-*", "state", "containers", "*"), ("state", "networks", "*", "*")):
            states += sorted(glob.glob(os.path.join(worker, *pattern)))
    import tempfile

    # What the engine names in the temp folder (a session's own base, and
    # those of sessions running beside this one, aside).
    temp = sorted(name for name in os.listdir(tempfile.gettempdir())
                  if name.startswith("hermetic-") and not name.startswith("hermetic-tests-"))
    return {
        "temp files": temp,
        "mounts": _count_mounts(),
        "cgroups": sorted(hermetic_cgroups()),
        "netns": len(_net_namespaces()),
        "links": _network_links(),
        "processes": sorted(descendants(os.getpid())),
        "state folders": states,
    }


def _leaks(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What the session left: what is there after and was not before (a count
    that grew).  Machine-wide things that went away meanwhile (another session's
    containers ending) are no leak of this one."""
    leaks = []
    for key, was in before.items():
        now = after[key]
        if isinstance(now, int):
            grew = now > was
        else:
            grew = bool(set(now) - set(was))
        if grew:
            leaks.append(f"{key}: before {was!r}, after {now!r}")
    return leaks


def pytest_configure(config: pytest.Config) -> None:
    # One private store and state root for the session (and its children).
    base = os.environ.get("HERMETIC_TEST_BASE") or f"/tmp/hermetic-tests-{os.getpid()}"
    os.makedirs(base, exist_ok=True)
    os.chmod(base, 0o755)
    os.environ.setdefault("HERMETIC_STORE", os.path.join(base, "store"))
    os.environ.setdefault("HERMETIC_STATE", os.path.join(base, "state"))
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        # An xdist worker keeps the session's store (two workers on one store is the concurrency
        # users have) but gets a state root of its own, with its own rootless homes beside it:
        # container names, `ps` listings, `gc` and private networks are per state root, and the
        # tests name their containers and read those listings as if they ran alone.
        own = os.path.join(os.path.dirname(os.environ["HERMETIC_STATE"]), worker)
        os.makedirs(own, exist_ok=True)
        os.chmod(own, 0o755)  # (the rootless user's home is below it)
        os.environ["HERMETIC_STATE"] = os.path.join(own, "state")
    # Tests reach registries on loopback only: an unknown `name:tag` must not be looked up on the internet.
    os.environ.setdefault("HERMETIC_OFFLINE", "1")
    config._hermetic_base = base  # type: ignore[attr-defined]
    # Beside the store, which every xdist worker of the session shares.
    config._hermetic_host_network_lock = os.path.join(  # type: ignore[attr-defined]
        os.path.dirname(os.environ["HERMETIC_STORE"]), "host-network.lock")


@pytest.fixture(autouse=True)
def _host_network_turn(request: pytest.FixtureRequest):
    """The host bridge, its NAT rules and the containers' veths are the
    machine's, not a worker's: under xdist, a test marked `host_network`
    (it compares them before and after) runs while no other worker runs a
    test, each other test taking a shared turn.  Without xdist: nothing."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    import fcntl

    fd = os.open(request.config._hermetic_host_network_lock,  # type: ignore[attr-defined]
                 os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if request.node.get_closest_marker("host_network") else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config._hermetic_before = _snapshot()  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _unmount_test_stores(request: pytest.FixtureRequest):
    """A test's throwaway stores (below pytest's temp folder) end with it: detach the EROFS layer
    images they mounted (`Store.layer_lower`), as removing a store needs.  A store a later test
    uses again (module-scoped) mounts again on first use."""
    yield
    base = request.config._tmp_path_factory._basetemp  # type: ignore[attr-defined]
    if base is not None and os.geteuid() == 0:
        from pytest_hermetic.images.store import unmount_stores_below

        unmount_stores_below(str(base))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    import time

    if os.geteuid() == 0:  # the session's store and the tests' ones end here: their layer mounts go first
        from pytest_hermetic.images.store import unmount_stores_below

        unmount_stores_below(session.config._hermetic_base)  # type: ignore[attr-defined]
        factory = getattr(session.config, "_tmp_path_factory", None)
        if factory is not None and factory._basetemp is not None:
            unmount_stores_below(str(factory._basetemp))
    before = session.config._hermetic_before  # type: ignore[attr-defined]
    after = _snapshot()
    for _ in range(50):  # network namespaces die asynchronously in the kernel
        if not _leaks(before, after):
            break
        time.sleep(0.1)
        after = _snapshot()
    if not os.environ.get("HERMETIC_TEST_BASE"):
        from pytest_hermetic._fs import rmtree

        rmtree(session.config._hermetic_base)  # type: ignore[attr-defined]
    leaks = _leaks(before, after)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if leaks:
        if reporter:
            reporter.write_sep("=", "hermetic leak check: LEAKS", red=True)
            for line in leaks:
                reporter.write_line(line)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif reporter:
        reporter.write_line(
            f"hermetic leak check: nothing left behind (mounts {after['mounts']}, cgroups {len(after['cgroups'])}, "
            f"netns {after['netns']}, links {len(after['links'])}, processes {len(after['processes'])}, "
            f"state folders {len(after['state folders'])})"
        )


# -- helpers -------------------------------------------------------------------


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, user: str | None = None, input: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 60) -> Ran:
    """Run `hermetic ARGS` as a real subprocess (as `user` when given)."""
    full_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                "PYTHONPATH": ROOT}
    for key in ("HERMETIC_STORE", "HERMETIC_STATE", "HERMETIC_CGROUP_PARENT", "COVERAGE_PROCESS_START"):
        if key in os.environ and user is None:
            full_env[key] = os.environ[key]
    if "HERMETIC_OFFLINE" in os.environ:
        full_env["HERMETIC_OFFLINE"] = os.environ["HERMETIC_OFFLINE"]
    prefix: list[str] = []
    python = sys.executable
    if user is not None:
        entry = pwd.getpwnam(user)
        home = os.path.join(os.path.dirname(os.environ["HERMETIC_STATE"]), f"home-{entry.pw_uid}")
        os.makedirs(home, exist_ok=True)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        full_env.update(HOME=home, XDG_DATA_HOME=f"{home}/data", HERMETIC_STATE=f"{home}/state", USER=user)
        prefix = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups"]
        python = "/usr/bin/python3"  # readable by everybody, unlike a pyenv under /root
    full_env.update(env or {})
    result = subprocess.run([*prefix, python, "-m", "pytest_hermetic", *args], capture_output=True, text=True,
                            input=input, env=full_env, timeout=timeout, cwd="/")
    return Ran(result.returncode, result.stdout, result.stderr)


def inner_session_as(test_user: str, project_name: str, test_file: str, source: str, *args: str):  # noqa: ANN202
    """An inner `pytest -p hermetic` session run by the test user in a project of its own."""
    import pwd
    import subprocess
    import sys

    if os.path.realpath(sys.executable).startswith("/root/"):
        pytest.skip("this interpreter lives under /root, out of an unprivileged user's reach")
    entry = pwd.getpwnam(test_user)
    home = os.path.join(os.path.dirname(os.environ["HERMETIC_STATE"]), f"home-{entry.pw_uid}")
    project = os.path.join(home, project_name)
    os.makedirs(project, exist_ok=True)
    with open(os.path.join(project, test_file), "w") as f:
        f.write(source)
    for path in (home, project, os.path.join(project, test_file)):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    env = {"PATH": "/usr/bin:/bin", "HOME": home, "PYTHONPATH": ROOT, "HERMETIC_STATE": f"{home}/state",
           "XDG_DATA_HOME": f"{home}/data", "LANG": "C.UTF-8"}
    ran = subprocess.run(["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups",
                          sys.executable, "-m", "pytest", "-p", "hermetic", "-p", "no:cacheprovider", "-q",
                          "--basetemp", f"{home}/basetemp-{project_name}", *args, test_file],
                         cwd=project, env=env, capture_output=True, text=True, timeout=180)
    return ran, home


@pytest.fixture(scope="session")
def busybox_rootfs(pytestconfig: pytest.Config) -> str:
    """A busybox rootfs folder, readable by the rootless test user too."""
    sys.path.insert(0, ROOT)
    from hermetic_testsupport.busybox import build_rootfs

    return build_rootfs(os.path.join(pytestconfig._hermetic_base, "busybox-rootfs"))  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def busybox_image(busybox_rootfs: str) -> str:
    """`busybox:test` in the session's store, imported from a real rootfs."""
    from pytest_hermetic.images.store import Store
    from pytest_hermetic.images.transports import import_image

    import_image(Store(), f"dir:{busybox_rootfs}", "busybox:test", env={"GREETING": "hello"}, workdir="/root")
    return "busybox:test"


@pytest.fixture(scope="module")
def ipython_shell():  # noqa: ANN201
    """IPython's own InteractiveShell with `%load_ext ipython_ext`, unloaded
    (every container of the helper removed) when the module is done."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "ipython_ext")
    yield shell
    shell.run_line_magic("unload_ext", "ipython_ext")


@pytest.fixture(scope="session")
def test_user() -> str:
    """An unprivileged user for the rootless checks (made by scripts/install-deps.sh)."""
    if os.geteuid() != 0:
        pytest.skip("the rootless checks switch to an unprivileged user, which needs root to start from")
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        pytest.fail(f"user {TEST_USER!r} is missing; run scripts/install-deps.sh (it creates it with /etc/subuid ranges)")
    return TEST_USER
