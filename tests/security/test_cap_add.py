"""What an added capability still cannot do (docs/security.md, "--cap-add").

`--cap-add` gives the capability (the container's CapEff shows it) but the
seccomp filter stays Docker's default one for the default set: unlike
Docker's, it is not widened for the added capability, since this engine has
no AppArmor profile and no device cgroup behind it.  Each test adds one
dangerous capability as root (no user namespace: the capability is the real
one) and runs the escapes it is known for, every one a harmless marker: a
tmpfs or cgroup mount in the container's own mount namespace, a namespace
made or entered, a remount of the read-only /proc/sys, Shocker's
open_by_handle_at, a ptrace of the host's process, a device node opened, a
host interface touched.  Unlike the other containment tests these keep the
filter on: it is the filter that holds here, and the last test shows so by
turning it off for the one harmless step, a tmpfs mount.
"""

from __future__ import annotations

import json
import os

import pytest

from conftest import run_cli
from pytest_hermetic.runtime.capabilities import ALL_CAPS
from pytest_hermetic.runtime.syscall_table import AARCH64, X86_64

TABLE = {"x86_64": X86_64, "aarch64": AARCH64}.get(os.uname().machine)
pytestmark = pytest.mark.skipif(TABLE is None, reason="no syscall table for this machine")

# Runs as PID 1's command in the `host` image (its python3); prints one JSON
# object: each attempt's errno name (or "OK"), and the effective capabilities.
PROBE = r'''
import ctypes, errno, json, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
nr, host_pid = json.loads(sys.argv[1]), int(sys.argv[2])
out = {}
def note(name, result):
    out[name] = "OK" if result >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
def syscall(name, *args):
    note(name, libc.syscall(nr[name], *args))
os.makedirs("/tmp/m", exist_ok=True)
note("mount tmpfs", libc.mount(b"tmpfs", b"/tmp/m", b"tmpfs", 0, None))
note("mount cgroup v1", libc.mount(b"cgroup", b"/tmp/m", b"cgroup", 0, b"devices"))
syscall("fsopen", b"tmpfs", 0)
syscall("open_tree", -100, b"/", 1)
note("remount /proc/sys rw", libc.mount(None, b"/proc/sys", None, 32 | 4096, None))  # MS_REMOUNT|MS_BIND
note("umount /proc/kcore mask", libc.umount2(b"/proc/kcore", 2))
note("unshare mount ns", libc.unshare(0x20000))
note("unshare user ns", libc.unshare(0x10000000))
fd = os.open("/proc/1/ns/mnt", os.O_RDONLY)
note("setns", libc.setns(fd, 0))
note("sethostname", libc.sethostname(b"marker", 6))
# Shocker: a handle for a file, then open_by_handle_at with it.
handle = ctypes.create_string_buffer(8 + 128)
ctypes.c_uint.from_buffer(handle).value = 128
mount_id = ctypes.c_int()
syscall("name_to_handle_at", -100, b"/etc", handle, ctypes.byref(mount_id), 0)
root = os.open("/", os.O_RDONLY)
syscall("open_by_handle_at", root, handle, 0)
# The host's processes: not there to trace or signal.
note("ptrace host process", libc.ptrace(16, host_pid, None, None))  # PTRACE_ATTACH
note("kill -0 host process", libc.kill(host_pid, 0))
out["host pid in /proc"] = os.path.exists(f"/proc/{host_pid}")
# A block device node (loop0) made and opened, read-only: nodev everywhere.
note("mknod loop0", libc.mknod(b"/tmp/loop0", 0o60600, 7 << 8))
try:
    os.close(os.open("/tmp/loop0", os.O_RDONLY))
    out["open loop0"] = "OK"
except OSError as exc:
    out["open loop0"] = errno.errorcode[exc.errno]
out["interfaces"] = sorted(name for _, name in socket.if_nameindex())
for line in open("/proc/self/status"):
    if line.startswith("CapEff:"):
        out["CapEff"] = int(line.split()[1], 16)
print(json.dumps(out))
'''
CALLS = ("fsopen", "open_tree", "name_to_handle_at", "open_by_handle_at")

# What each attempt must meet, whatever capability was added.  EPERM is the
# filter's answer (a missing capability would say EPERM too, so the test
# checks first that the capability is there).
CONTAINED = {
    "mount tmpfs": {"EPERM"},
    "mount cgroup v1": {"EPERM"},
    "fsopen": {"EPERM"},
    "open_tree": {"EPERM"},
    "remount /proc/sys rw": {"EPERM"},
    "umount /proc/kcore mask": {"EPERM"},
    "unshare mount ns": {"EPERM"},
    "unshare user ns": {"EPERM"},
    "setns": {"EPERM"},
    "sethostname": {"EPERM"},
    "open_by_handle_at": {"EPERM"},
    "ptrace host process": {"ESRCH"},
    "kill -0 host process": {"ESRCH"},
    "host pid in /proc": False,
    "open loop0": {"EACCES"},
    "interfaces": ["lo"],
}


def _probe(*options: str, user: str | None = None) -> dict:
    numbers = json.dumps({name: TABLE[name] for name in CALLS})
    ran = run_cli("run", *options, "host", "/usr/bin/python3", "-c", PROBE, numbers, str(os.getpid()), user=user)
    assert ran.returncode == 0, ran
    return json.loads(ran.stdout)


def _check_contained(found: dict) -> None:
    wrong = {}
    for name, expected in CONTAINED.items():
        ok = found[name] in expected if isinstance(expected, set) else found[name] == expected
        if not ok:
            wrong[name] = (found[name], expected)
    assert not wrong, wrong


@pytest.mark.parametrize("cap", ["SYS_ADMIN", "SYS_PTRACE", "NET_ADMIN", "DAC_READ_SEARCH", "SYS_MODULE", "SYS_RAWIO"])
def test_an_added_capability_is_there_and_the_escapes_it_is_known_for_stay_shut(cap):
    from pytest_hermetic.runtime.capabilities import permitted

    if not permitted() & (1 << ALL_CAPS[f"CAP_{cap}"]):
        pytest.skip(f"this engine's own process lacks CAP_{cap}")
    found = _probe("--cap-add", cap)
    assert found["CapEff"] & (1 << ALL_CAPS[f"CAP_{cap}"]), found
    _check_contained(found)
    assert found["mknod loop0"] == "OK"  # CAP_MKNOD (default): made, but it opens nothing


def test_every_capability_at_once_still_meets_the_same_walls():
    found = _probe("--cap-add", "ALL")
    _check_contained(found)


def test_rootless_sys_admin_meets_the_same_walls(test_user):
    found = _probe("--cap-add", "SYS_ADMIN", user=test_user)
    assert found["CapEff"] & (1 << ALL_CAPS["CAP_SYS_ADMIN"]), found
    wanted = dict(CONTAINED, **{"open loop0": {"EACCES", "ENOENT"}})  # mknod itself fails in a user namespace
    wrong = {name: found[name] for name, expected in wanted.items()
             if not (found[name] in expected if isinstance(expected, set) else found[name] == expected)}
    assert not wrong, wrong


def test_it_is_the_filter_that_holds_sys_admin():
    """With the filter off (the user's explicit choice), CAP_SYS_ADMIN mounts:
    here a tmpfs in the container's own mount namespace, which dies with it."""
    found = _probe("--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined")
    assert found["mount tmpfs"] == "OK" and found["unshare mount ns"] == "OK", found
    # The same mount without the capability: the kernel refuses it, filter or not.
    found = _probe("--security-opt", "seccomp=unconfined")
    assert found["mount tmpfs"] == "EPERM", found


def test_exec_into_a_container_gets_its_capabilities_not_more(names_cleanup):
    """`hermetic exec` runs with the container's capabilities (cap-drop ALL:
    none), as Docker's does; before its process could be seen (and traced,
    with --cap-add SYS_PTRACE) in the container, it holds no more than that."""
    ran = run_cli("run", "-d", "--name", "capexec", "--cap-drop", "ALL", "--cap-add", "SYS_PTRACE", "host",
                  "sleep", "300")
    names_cleanup.append("capexec")
    assert ran.returncode == 0, ran
    ran = run_cli("exec", "capexec", "sh", "-c", "grep -E '^(CapEff|CapBnd|Seccomp|NoNewPrivs):' /proc/self/status; "
                  "ls /proc/self/fd")
    assert ran.returncode == 0, ran
    status = dict(line.split(":\t") for line in ran.stdout.splitlines() if ":\t" in line)
    assert int(status["CapEff"], 16) == int(status["CapBnd"], 16) == 1 << ALL_CAPS["CAP_SYS_PTRACE"], status
    assert status["Seccomp"] == "2" and status["NoNewPrivs"] == "1", status
    assert ran.stdout.split()[-4:] == ["0", "1", "2", "3"]  # stdio and ls's own directory fd
    # The same through a terminal of the container's own, and as another user.
    ran = run_cli("exec", "-t", "-u", "nobody", "capexec", "sh", "-c",
                  "id -u; grep -E '^(CapEff|Seccomp):' /proc/self/status; stat -c %U $(tty)")
    assert ran.returncode == 0, ran
    assert ran.stdout.replace("\r", "").split("\n")[:4] == ["65534", "CapEff:\t0000000000000000", "Seccomp:\t2",
                                                           "nobody"], ran.stdout


@pytest.fixture
def names_cleanup():
    started: list[str] = []
    yield started
    for name in started:
        run_cli("rm", "-f", name)


INJECT = ("import fcntl, termios\ntry:\n    fcntl.ioctl(0, termios.TIOCSTI, b'Z')\n    print('INJECTED')\n"
          "except OSError as exc:\n    print('refused', exc.errno)")


def _on_a_terminal(*options: str) -> str:
    """`hermetic run OPTIONS host python3 -c INJECT` with a pty of the test's
    own as its stdio (as a user's terminal would be); what the pty shows."""
    import pty
    import select
    import sys
    import time

    from conftest import ROOT

    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child execs at once
        os.environ["PYTHONPATH"] = ROOT
        os.execv(sys.executable, [sys.executable, "-m", "pytest_hermetic", "run", *options, "host", "/usr/bin/python3",
                                  "-c", INJECT])
    shown = b""
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and select.select([fd], [], [], deadline - time.monotonic())[0]:
            try:
                data = os.read(fd, 1024)
            except OSError:  # EIO: the other side closed
                break
            if not data:
                break
            shown += data
    finally:
        os.waitpid(pid, 0)
        os.close(fd)
    return shown.decode(errors="replace")


def test_sys_admin_cannot_type_into_the_callers_terminal():
    """TIOCSTI pushes input into a terminal; the kernel allows it on one
    that is not the caller's controlling terminal only with CAP_SYS_ADMIN.
    A foreground run's stdio is the caller's terminal, so the filter refuses
    TIOCSTI for everybody (beyond Docker's profile); here the terminal is a
    pty of the test's own and the marker one letter."""
    assert "refused 1" in _on_a_terminal()  # no CAP_SYS_ADMIN: the kernel says no
    shown = _on_a_terminal("--cap-add", "SYS_ADMIN")
    assert "refused 1" in shown and "Z" not in shown.replace("refused", ""), shown
    # The filter is what holds: without it, the letter lands in the terminal.
    shown = _on_a_terminal("--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined")
    assert "INJECTED" in shown, shown


# With CAP_SYS_PTRACE a process may trace any process of its PID namespace.
# A root Python callable (a hermetic test) normally runs as PID 2 under a
# placeholder PID 1 that is the host's root in the host's namespaces but the
# PID one: traced, it would run the test's code there (PTRACE_ATTACH to it
# worked from a test with cap_add=["SYS_PTRACE"]; nothing was injected).  So
# every process the test can see must be in its own mount namespace, with no
# capability it lacks.  Reading /proc/PID/ns needs the same access as tracing.
TRACE_SUITE = """
import os
from pytest_hermetic import hermetic

def _caps(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("CapEff:")).split()[1], 16)

@hermetic(cap_add=["SYS_PTRACE"])
def test_every_traceable_process_is_inside():
    own, own_caps = os.readlink("/proc/self/ns/mnt"), _caps("self")
    seen = []
    for pid in (name for name in os.listdir("/proc") if name.isdigit()):
        try:
            seen.append((pid, os.readlink(f"/proc/{pid}/ns/mnt"), _caps(pid)))
        except OSError:
            pass
    assert "1" in [pid for pid, _, _ in seen], seen  # (it could look: the capability is there)
    outside = [(pid, ns, caps) for pid, ns, caps in seen if ns != own or caps & ~own_caps]
    assert not outside, (own, own_caps, outside)
"""


def test_a_test_that_may_trace_sees_no_process_of_the_host():
    from attack import inner_session

    ran = inner_session(None, "cap-add-trace", TRACE_SUITE)
    assert "1 passed" in ran.stdout, ran.stdout + ran.stderr


def test_a_callable_that_may_trace_sees_no_process_of_the_host():
    from pytest_hermetic.container import Container
    from pytest_hermetic.spec import Spec

    read_fd, write_fd = os.pipe()

    def target() -> int:
        own = os.readlink("/proc/self/ns/mnt")
        outside = []
        for pid in (name for name in os.listdir("/proc") if name.isdigit()):
            try:
                if os.readlink(f"/proc/{pid}/ns/mnt") != own:
                    outside.append(pid)
            except OSError:
                pass
        os.write(write_fd, json.dumps(outside).encode())
        return 0

    with Container(Spec.build("host", ephemeral=True, cap_add=["SYS_PTRACE"])) as box:
        box.start(target=target)
        os.close(write_fd)
        assert box.wait().exit_code == 0
        with os.fdopen(read_fd) as reader:
            assert json.loads(reader.read()) == []
