"""The default seccomp filter (Docker's default profile), proved from inside
real containers, as root and rootless: what it denies, that ordinary work
is untouched, and that `seccomp=False` and `privileged=True` lift it.

Every denied call is made with harmless arguments (NULL pointers, zero
lengths, a bad fd): it fails before doing anything, filter or not."""

from __future__ import annotations

import json
import os

import pytest

from conftest import run_cli
from pytest_hermetic import hermetic
from pytest_hermetic.runtime import syscall_table

TABLE = getattr(syscall_table, {"x86_64": "X86_64", "aarch64": "AARCH64"}.get(os.uname().machine, "X86_64"))
CLONE_NEWUSER = 0x10000000
SIGCHLD = 17
AF_ALG, AF_VSOCK = 38, 40

# (label, syscall, arguments, errno name the filter answers with)
DENIED = [
    ("keyctl", "keyctl", (0, -3, 0), "EPERM"),  # KEYCTL_GET_KEYRING_ID of the session keyring
    ("add_key", "add_key", (0, 0, 0, 0, 0), "EPERM"),
    ("request_key", "request_key", (0, 0, 0, 0), "EPERM"),
    ("bpf", "bpf", (0, 0, 0), "EPERM"),
    ("perf_event_open", "perf_event_open", (0, 0, -1, -1, 0), "EPERM"),
    ("userfaultfd", "userfaultfd", (0,), "EPERM"),
    ("kexec_load", "kexec_load", (0, 0, 0, 0), "EPERM"),
    ("kexec_file_load", "kexec_file_load", (-1, -1, 0, 0, 0), "EPERM"),
    ("init_module", "init_module", (0, 0, 0), "EPERM"),
    ("finit_module", "finit_module", (-1, 0, 0), "EPERM"),
    ("delete_module", "delete_module", (0, 0), "EPERM"),
    ("open_by_handle_at", "open_by_handle_at", (-1, 0, 0), "EPERM"),
    ("mount", "mount", (0, 0, 0, 0, 0), "EPERM"),
    ("umount2", "umount2", (0, 0), "EPERM"),
    ("pivot_root", "pivot_root", (0, 0), "EPERM"),
    ("unshare(CLONE_NEWUSER)", "unshare", (CLONE_NEWUSER,), "EPERM"),
    ("clone(CLONE_NEWUSER)", "clone", (CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0), "EPERM"),
    ("setns", "setns", (-1, 0), "EPERM"),
    ("clone3", "clone3", (0, 0), "ENOSYS"),  # so that the C library falls back to clone
    ("io_uring_setup", "io_uring_setup", (1, 0), "EPERM"),
    ("io_uring_enter", "io_uring_enter", (-1, 0, 0, 0, 0, 0), "EPERM"),
    ("io_uring_register", "io_uring_register", (-1, 0, 0, 0), "EPERM"),
    ("personality(READ_IMPLIES_EXEC)", "personality", (0x0400000,), "EPERM"),
    ("socket(AF_VSOCK)", "socket", (AF_VSOCK, 1, 0), "EPERM"),
    ("socket(AF_ALG)", "socket", (AF_ALG, 5, 0), "EPERM"),
    ("socket(AF_VSOCK in a 64-bit word)", "socket", ((1 << 32) | AF_VSOCK, 1, 0), "EPERM"),
    ("fsopen", "fsopen", (0, 0), "EPERM"),
    ("open_tree", "open_tree", (-1, 0, 0), "EPERM"),
    ("syslog", "syslog", (3, 0, 0), "EPERM"),  # SYSLOG_ACTION_READ_ALL with no buffer
    ("quotactl", "quotactl", (0, 0, 0, 0), "EPERM"),
    ("acct", "acct", (0,), "EPERM"),
    ("reboot", "reboot", (0, 0, 0, 0), "EPERM"),  # bad magic: EINVAL even if it got through
    ("settimeofday", "settimeofday", (0, 0), "EPERM"),  # NULL, NULL: does nothing
    ("swapon", "swapon", (0, 0), "EPERM"),
    ("lookup_dcookie", "lookup_dcookie", (0, 0, 0), "EPERM"),
    ("a number past the table", None, (), "ENOSYS"),
]
# Calls whose unfiltered answer is not EPERM here: the proof that the
# filter, not the missing capability, answered.
LIFTED = {"keyctl": "ok", "unshare(CLONE_NEWUSER)": "ok", "personality(READ_IMPLIES_EXEC)": "ok",
          "clone3": "EINVAL"}

PROBE = r'''
import ctypes, errno, json, os, socket, sys, threading, mmap, subprocess, tempfile
libc = ctypes.CDLL(None, use_errno=True)
def call(nr, args):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    if r >= 0:
        return "ok", r
    return errno.errorcode[ctypes.get_errno()], r
out = {}
for label, nr, args in json.loads(sys.argv[1]):
    answer, r = call(nr, args)
    out[label] = answer
    if answer == "ok" and label.startswith("personality"):
        call(nr, [0])  # back to Linux's default
    if answer == "ok" and label.startswith("clone") and r == 0:
        os._exit(0)
    if answer == "ok" and label.startswith("clone"):
        os.waitpid(r, 0)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
out["Seccomp"] = status["Seccomp"].strip()
# Ordinary work: processes, threads, sockets, files, memory, exec, ptrace.
pid = os.fork()
if pid == 0:
    os._exit(7)
assert os.waitpid(pid, 0)[1] >> 8 == 7
box = []
t = threading.Thread(target=box.append, args=(1,)); t.start(); t.join(); assert box == [1]
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen()
client = socket.create_connection(server.getsockname()); conn, _ = server.accept()
client.sendall(b"hi"); assert conn.recv(2) == b"hi"
a, b = socket.socketpair(); a.send(b"x"); assert b.recv(1) == b"x"
socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close()
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "f")
    with open(path, "w") as f:
        f.write("data")
    os.chmod(path, 0o600); os.rename(path, path + "2"); os.symlink(path + "2", path)
    assert open(path).read() == "data"
m = mmap.mmap(-1, 1 << 20); m[0:3] = b"abc"; m.close()
assert subprocess.run(["sh", "-c", "echo sub"], capture_output=True, text=True).stdout == "sub\n"
tracee = os.fork()
if tracee == 0:
    libc.ptrace(0, 0, 0, 0)  # PTRACE_TRACEME: Docker allows ptrace on Linux >= 4.8
    os._exit(0)
os.waitpid(tracee, 0)
out["ordinary work"] = "ok"
print(json.dumps(out))
'''


def _probe_args() -> str:
    top = max(TABLE.values())
    return json.dumps([(label, TABLE[name] if name else top + 1, list(args)) for label, name, args, _ in DENIED])


def probe(*options: str, user: str | None = None) -> dict[str, str]:
    ran = run_cli("run", *options, "host", "python3", "-c", PROBE, _probe_args(), user=user)
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout)


@pytest.mark.parametrize("who", ["root", "rootless"])
def test_default_filter_denies_as_docker_does(who, request):
    user = request.getfixturevalue("test_user") if who == "rootless" else None
    got = probe(user=user)
    assert got.pop("Seccomp") == "2"
    assert got.pop("ordinary work") == "ok"
    assert got == {label: answer for label, _, _, answer in DENIED}


@pytest.mark.parametrize("who", ["root", "rootless"])
def test_unconfined_lifts_the_filter(who, request):
    user = request.getfixturevalue("test_user") if who == "rootless" else None
    got = probe("--security-opt", "seccomp=unconfined", user=user)
    assert got["Seccomp"] == "0"
    assert {label: got[label] for label in LIFTED} == LIFTED


def test_privileged_has_no_filter():
    got = probe("--privileged")
    assert got["Seccomp"] == "0"
    assert {label: got[label] for label in LIFTED} == LIFTED


def test_exec_into_a_running_container_is_filtered_too():
    from pytest_hermetic.container import Container
    from pytest_hermetic.spec import Spec

    for seccomp, mode in ((True, "2"), (False, "0")):
        container = Container(Spec.build("host", ["sleep", "30"], seccomp=seccomp))
        container.start()
        try:
            read, write = os.pipe()
            proc = container.exec(["python3", "-c", PROBE, _probe_args()], stdout=write)
            os.close(write)
            with os.fdopen(read) as f:
                got = json.loads(f.read())
            assert proc.wait(timeout=30).code == 0
        finally:
            container.kill(9)
            container.wait()
            container.remove()
        assert got["Seccomp"] == mode
        assert got["keyctl"] == ("EPERM" if seccomp else "ok")


def test_busybox_image_runs_under_the_filter(busybox_image):
    ran = run_cli("run", busybox_image, "sh", "-c",
                  "grep Seccomp: /proc/self/status; echo x > /tmp/f && cat /tmp/f; ls / | wc -l; "
                  "(sleep 0 &); wait; chmod 600 /tmp/f && stat -c %a /tmp/f")
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.split("\n")
    assert lines[0].split() == ["Seccomp:", "2"] and lines[1] == "x" and lines[3] == "600", ran.stdout


def test_a_bad_security_opt_is_one_clear_line():
    ran = run_cli("run", "--security-opt", "seccomp=/tmp/profile.json", "host", "true")
    assert ran.returncode == 125
    assert "only seccomp=unconfined is supported" in ran.stderr and ran.stderr.count("\n") == 1


def _seccomp_mode() -> str:
    with open("/proc/self/status") as f:
        return next(line.split()[1] for line in f if line.startswith("Seccomp:"))


def _keyctl() -> str:
    import ctypes
    import errno

    libc = ctypes.CDLL(None, use_errno=True)
    r = libc.syscall(ctypes.c_long(TABLE["keyctl"]), ctypes.c_long(0), ctypes.c_long(-3), ctypes.c_long(0))
    return "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]


@hermetic
def test_a_hermetic_test_runs_under_the_filter():
    assert os.getpid() == 2  # really in a container
    assert _seccomp_mode() == "2"
    assert _keyctl() == "EPERM"


@hermetic(seccomp=False)
def test_the_marker_can_turn_it_off():
    assert os.getpid() == 2
    assert _seccomp_mode() == "0"
    assert _keyctl() == "ok"


@hermetic(privileged=True)
def test_a_privileged_hermetic_test_has_no_filter():
    assert os.getpid() == 2
    assert _seccomp_mode() == "0"


def test_filter_is_compiled_once_and_is_small():
    from pytest_hermetic.runtime import seccomp

    first = seccomp.default()
    assert seccomp.default() is first
    assert 0 < len(first) < 1024
    assert "allowed" in first.summary


def _int80(nr: int, b: int = 0, c: int = 0) -> str:
    """A syscall through the i386 ABI (`int 0x80`) from this 64-bit process."""
    import ctypes
    import errno
    import mmap
    import struct

    code = (b"\x53" + b"\xb8" + struct.pack("<I", nr) + b"\xbb" + struct.pack("<I", b & 0xFFFFFFFF)
            + b"\xb9" + struct.pack("<I", c & 0xFFFFFFFF) + b"\xcd\x80\x5b\xc3")  # push rbx .. int 0x80; pop rbx; ret
    page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    result = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))()
    return "ok" if result >= 0 else errno.errorcode[-result]


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the i386 ABI exists on x86_64 only")
@hermetic
def test_the_i386_abi_is_filtered_with_its_own_table():
    i386 = syscall_table.I386
    assert _seccomp_mode() == "2"
    assert _int80(i386["getpid"]) == "ok"
    assert _int80(i386["keyctl"], 0, -3) == "EPERM"
    assert _int80(i386["unshare"], CLONE_NEWUSER) == "EPERM"
    assert _int80(i386["clone3"]) == "ENOSYS"
