"""The filter program itself, run in a classic-BPF interpreter: the same
decisions as libseccomp makes from Docker's profile (where the machine has
libseccomp), and the aarch64 program, which this machine cannot load."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct

import pytest

from pytest_hermetic.runtime import seccomp
from pytest_hermetic.runtime import syscalls as sc, syscall_table
from pytest_hermetic.runtime.capabilities import DEFAULT_CAPS
from pytest_hermetic.runtime.seccomp_profile import PROFILE

ALLOW, KILL = seccomp.SECCOMP_RET_ALLOW, seccomp.SECCOMP_RET_KILL_PROCESS
EPERM, ENOSYS = seccomp.SECCOMP_RET_ERRNO | errno.EPERM, seccomp.SECCOMP_RET_ERRNO | errno.ENOSYS
AUDIT_ARCH = {"x86_64": 0xC000003E, "i386": 0x40000003, "aarch64": 0xC00000B7, "arm": 0x40000028}
CAPS = set(DEFAULT_CAPS)
CLONE_NEWUSER, CLONE_NEWNS, SIGCHLD, CLONE_VM = 0x10000000, 0x00020000, 17, 0x100


def run_bpf(program: bytes, nr: int, arch: int, args: tuple = ()) -> int:
    """Classic BPF as the kernel runs a seccomp filter over struct seccomp_data."""
    args = tuple(args) + (0,) * (6 - len(args))
    data = struct.pack("<iIQ6Q", nr, arch, 0, *(a & 0xFFFFFFFFFFFFFFFF for a in args))
    code = [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]
    acc, pc = 0, 0
    while True:
        op, jt, jf, k = code[pc]
        pc += 1
        if op == 0x20:  # ld [k]
            acc = struct.unpack_from("<I", data, k)[0]
        elif op == 0x54:  # and #k
            acc &= k
        elif op == 0x05:  # ja
            pc += k
        elif op in (0x15, 0x25, 0x35, 0x45):  # jeq, jgt, jge, jset
            taken = {0x15: acc == k, 0x25: acc > k, 0x35: acc >= k, 0x45: bool(acc & k)}[op]
            pc += jt if taken else jf
        elif op == 0x06:  # ret
            return k
        else:
            raise AssertionError(f"opcode {op:#x} not expected")


ARG_VECTORS = [
    (), (CLONE_NEWUSER | SIGCHLD,), (CLONE_NEWNS,), (CLONE_VM | SIGCHLD,), (SIGCHLD,),
    *[(family, 1, 0) for family in range(0, 46)],
    (0x8, ), (0x20000,), (0x20008,), (0xFFFFFFFF,), (0x0400000,), (0xFFFFFFFFFFFFFFFF,),
]


def _libseccomp_program(table: dict[str, int]) -> bytes:
    """Docker's profile compiled by libseccomp for this (x86_64) machine,
    rule by rule as moby hands it over, syscalls given by number."""
    path = ctypes.util.find_library("seccomp")
    if not path:
        pytest.skip("libseccomp is not installed: nothing to compare with")
    lib = ctypes.CDLL(path, use_errno=True)

    class ArgCmp(ctypes.Structure):
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

    ops = {"SCMP_CMP_LT": 2, "SCMP_CMP_EQ": 4, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_rule_add_exact_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                                 ctypes.POINTER(ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(EPERM)
    try:
        for rule in PROFILE["syscalls"]:
            if not seccomp._applies(rule, "amd64", CAPS, sc.kernel_version()):
                continue
            action = seccomp._action(rule, PROFILE)
            conds = rule.get("args") or []
            array = (ArgCmp * max(len(conds), 1))(*[ArgCmp(c["index"], ops[c["op"]], c["value"], c.get("valueTwo", 0))
                                                    for c in conds])
            for name in rule["names"]:
                if name in table:
                    rc = lib.seccomp_rule_add_exact_array(ctx, action, table[name], len(conds), array)
                    assert rc == 0, (name, rc)
        fd = os.memfd_create("bpf")
        try:
            assert lib.seccomp_export_bpf(ctx, fd) == 0
            size = os.lseek(fd, 0, os.SEEK_CUR)
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="compares the native x86_64 program")
def test_same_decisions_as_libseccomp_on_x86_64():
    table = syscall_table.X86_64
    ours = seccomp.compile_profile("x86_64", CAPS, sc.kernel_version()).program
    reference = _libseccomp_program(table)
    top = max(table.values())
    differences = []
    for nr in range(top + 1):
        for args in ARG_VECTORS:
            mine, theirs = run_bpf(ours, nr, AUDIT_ARCH["x86_64"], args), run_bpf(reference, nr, AUDIT_ARCH["x86_64"], args)
            if mine != theirs:
                differences.append((nr, args, hex(mine), hex(theirs)))
    # The deliberate differences (docs/seccomp.md): past the table ENOSYS,
    # as runc makes it; int arguments compared as the kernel reads them
    # (personality(2) takes an unsigned int: -1 is its 0xffffffff query).
    assert differences == [(table["personality"], (0xFFFFFFFFFFFFFFFF,), hex(ALLOW), hex(EPERM))]
    assert run_bpf(ours, top + 1, AUDIT_ARCH["x86_64"]) == ENOSYS
    assert run_bpf(reference, top + 1, AUDIT_ARCH["x86_64"]) == EPERM
    vsock_high = ((1 << 32) | 40, 1, 0)
    assert run_bpf(ours, table["socket"], AUDIT_ARCH["x86_64"], vsock_high) == EPERM
    assert run_bpf(reference, table["socket"], AUDIT_ARCH["x86_64"], vsock_high) == ALLOW


def test_aarch64_program():
    table = syscall_table.AARCH64
    program = seccomp.compile_profile("aarch64", CAPS, (6, 1)).program
    arch = AUDIT_ARCH["aarch64"]

    def decide(name: str, *args: int) -> int:
        return run_bpf(program, table[name], arch, args)

    for name in ("read", "write", "openat", "mmap", "execve", "exit_group", "futex", "rt_sigreturn", "wait4",
                 "ptrace", "fchmodat2", "mseal", "chroot", "close_range"):
        assert decide(name) == ALLOW, name
    for name in ("keyctl", "add_key", "bpf", "perf_event_open", "userfaultfd", "kexec_load", "init_module",
                 "finit_module", "open_by_handle_at", "mount", "umount2", "pivot_root", "unshare", "setns",
                 "io_uring_setup", "io_uring_enter", "swapon", "reboot", "syslog", "fsopen"):
        assert decide(name) == EPERM, name
    assert decide("clone3") == ENOSYS
    assert decide("clone", SIGCHLD) == ALLOW
    assert decide("clone", CLONE_NEWUSER | SIGCHLD) == EPERM
    assert decide("socket", 2, 1, 0) == ALLOW and decide("socket", 40, 1, 0) == EPERM and decide("socket", 39) == ALLOW
    assert decide("personality", 0xFFFFFFFF) == ALLOW and decide("personality", 0x0400000) == EPERM
    assert run_bpf(program, max(table.values()) + 1, arch) == ENOSYS
    assert run_bpf(program, table["getpid"], AUDIT_ARCH["arm"]) == KILL  # no arm32 table: killed


def test_i386_and_x32_on_x86_64():
    program = seccomp.compile_profile("x86_64", CAPS, (6, 1)).program
    i386 = syscall_table.I386
    assert run_bpf(program, i386["getpid"], AUDIT_ARCH["i386"]) == ALLOW
    assert run_bpf(program, i386["keyctl"], AUDIT_ARCH["i386"]) == EPERM
    assert run_bpf(program, i386["socketcall"], AUDIT_ARCH["i386"]) == ALLOW  # as Docker: socketcall is not filtered
    assert run_bpf(program, i386["clone"], AUDIT_ARCH["i386"], (CLONE_NEWUSER | SIGCHLD,)) == EPERM
    x32_read = 0x40000000
    assert run_bpf(program, x32_read, AUDIT_ARCH["x86_64"]) == ENOSYS
    assert run_bpf(program, 0, AUDIT_ARCH["aarch64"]) == KILL


def test_capabilities_and_kernel_decide_rules_as_in_docker():
    x86 = syscall_table.X86_64
    arch = AUDIT_ARCH["x86_64"]
    with_admin = seccomp.compile_profile("x86_64", CAPS | {"CAP_SYS_ADMIN"}, (6, 1)).program
    assert run_bpf(with_admin, x86["mount"], arch) == ALLOW
    assert run_bpf(with_admin, x86["clone"], arch, (CLONE_NEWUSER,)) == ALLOW
    assert run_bpf(with_admin, x86["clone3"], arch) == ALLOW
    old_kernel = seccomp.compile_profile("x86_64", CAPS, (4, 4)).program
    assert run_bpf(old_kernel, x86["ptrace"], arch) == EPERM  # Docker allows ptrace from Linux 4.8
    without_chroot = seccomp.compile_profile("x86_64", CAPS - {"CAP_SYS_CHROOT"}, (6, 1)).program
    assert run_bpf(without_chroot, x86["chroot"], arch) == EPERM


def test_unknown_machine_is_a_clear_error():
    with pytest.raises(seccomp.SeccompError, match="no seccomp syscall table for riscv64.*seccomp=False"):
        seccomp.compile_profile("riscv64", CAPS, (6, 1))


def test_the_cached_program_is_the_compiled_one_and_damage_is_ignored(tmp_path, monkeypatch):
    """`default(cache_dir)` keeps the program for the next process; a cache
    that was damaged (or planted short) is compiled afresh and rewritten."""
    from pytest_hermetic.runtime import seccomp

    monkeypatch.setattr(seccomp, "_default", None)
    compiled = seccomp.default(str(tmp_path))
    (cached,) = list(tmp_path.iterdir())
    monkeypatch.setattr(seccomp, "_default", None)
    assert seccomp.default(str(tmp_path)).program == compiled.program  # read back from the cache

    data = cached.read_bytes()
    for damaged in (data[:len(data) // 2], data[:20], b"HSECCOMP1" + b"\xff\xff\xff\x7f", b"not a program"):
        cached.write_bytes(damaged)
        monkeypatch.setattr(seccomp, "_default", None)
        assert seccomp.default(str(tmp_path)).program == compiled.program
        assert cached.read_bytes() == data  # the damage mended
    monkeypatch.setattr(seccomp, "_default", None)
    cached.unlink()
    seccomp.default(str(tmp_path))
    assert cached.read_bytes() == data  # written again
