"""The default seccomp filter: Docker's default profile as classic BPF.

The profile (runtime/seccomp_profile.py, Docker's own `default.json`) is
read as Docker reads it for a container with Docker's default capabilities
(the set runtime/capabilities.py keeps): rules that need a capability the
container lacks (CAP_SYS_ADMIN, CAP_SYS_MODULE, ...) are left out, rules
excluded by one it has are dropped, `minKernel` is checked against this
kernel.  What no rule allows fails with EPERM, as in Docker; syscalls newer
than every one the table knows fail with ENOSYS, as runc makes them, so a C
library falls back to an older call instead of failing (clone3 -> ENOSYS is
in the profile itself).  32-bit programs on x86_64 (i386, also `int 0x80`)
are filtered with their own table, as in Docker; x32 calls get ENOSYS and
arm32 programs on aarch64 are killed (docs/seccomp.md).

The program is compiled once per process, in the parent, by `default()`
(and kept in the caller's private state folder, so that the next process,
a `hermetic run`, reads 5 KB instead of importing the profile and compiling
it: 2-4 ms); the container's process only loads it (`Filter.load`: one
prctl), after it dropped its capabilities and set no_new_privs.  Own writer rather than
libseccomp: see docs/seccomp.md for the measured reasons.
"""

from __future__ import annotations

import errno
import os
import struct

from ..errors import SeccompError  # (re-exported: raised by the profile code below)
from . import start_errors
from .. import _libc as libc
from . import syscalls as sc
from .capabilities import DEFAULT_CAPS

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000

# Classic BPF opcodes (linux/filter.h).
_LD_W_ABS = 0x20
_ALU_AND_K = 0x54
_JA = 0x05
_JEQ = 0x15
_JGT = 0x25
_JGE = 0x35
_RET_K = 0x06

# struct seccomp_data: int nr; __u32 arch; __u64 ip; __u64 args[6] (little-endian here).
_NR, _ARCH = 0, 4


def _arg_lo(index: int) -> int:
    return 16 + 8 * index


# Per machine: the audit arch the kernel reports, Docker's (Go's) name of it
# for the profile's "arches" conditions, and the syscall table.
_MACHINES = {"x86_64": (0xC000003E, "amd64", "X86_64"), "aarch64": (0xC00000B7, "arm64", "AARCH64")}
# 32-bit programs on a 64-bit kernel (and `int 0x80` from a 64-bit one): filtered
# with their own table, as Docker's profile does.  arm32 on aarch64 has none yet.
_COMPAT = {"x86_64": (0x40000003, "I386")}

# Arguments the kernel reads as 32-bit ints: compared on their low word, as
# the kernel sees them (a 64-bit comparison would let socket(0x1_00000028)
# through the AF_VSOCK rule, the kernel truncating it to 40).
_INT_ARGS = {("socket", 0), ("personality", 0), ("ioctl", 1)}

# Beyond Docker's profile, for a container given CAP_SYS_ADMIN (`--cap-add
# SYS_ADMIN`; the filter is not widened for it): ioctl TIOCSTI and TIOCLINUX
# (the same numbers on x86 and arm64) fail with EPERM.  Its stdio may be the
# caller's own terminal (a foreground `hermetic run` without -t), and the
# kernel lets CAP_SYS_ADMIN push input into a terminal that is not the
# process's controlling one: type commands into the caller's shell.  Without
# it the kernel refuses that already, and TIOCSTI on a container's own
# terminal (-t) is harmless.  Docker's containers never hold the caller's terminal.
_TERMINAL_INJECTION = (0x5412, 0x541C)


class Filter:
    """A compiled program, ready to load in a child (the memory it points at
    is inherited through fork)."""

    def __init__(self, program: bytes, summary: str) -> None:
        self.program = program
        self.summary = summary
        self._buffer = libc.char_buffer(program)
        self._fprog = struct.pack("HxxxxxxQ", len(program) // 8, libc.addressof(self._buffer))
        self._fprog_buffer = libc.char_buffer(self._fprog)

    def __len__(self) -> int:
        return len(self.program) // 8

    def __reduce__(self) -> tuple:
        # (Its buffers point into this process's memory: made anew where it is unpickled.)
        return (Filter, (self.program, self.summary))

    def load(self) -> None:
        """Install the filter on the calling thread (needs no_new_privs or CAP_SYS_ADMIN)."""
        try:
            sc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, libc.addressof(self._fprog_buffer))
        except OSError as exc:  # a kernel without CONFIG_SECCOMP_FILTER says EINVAL
            raise start_errors.seccomp_load(exc.errno or 0) from None


_default: Filter | None = None
_sys_admin: Filter | None = None


def default(cache_dir: str | None = None, sys_admin: bool = False) -> Filter:
    """Docker's default profile for this machine, compiled once per process;
    with `cache_dir` (a folder only the caller can write), also kept there
    for the next process.  `sys_admin`: for a container given CAP_SYS_ADMIN
    (the same profile, and no TIOCSTI: see _TERMINAL_INJECTION)."""
    global _default, _sys_admin
    found = _sys_admin if sys_admin else _default
    if found is None:
        machine, kernel = os.uname().machine, sc.kernel_version()
        cache = _cache_path(cache_dir, machine, kernel, sys_admin) if cache_dir else None
        found = _read_cached(cache) if cache else None
        if found is None:
            found = compile_profile(machine, set(DEFAULT_CAPS), kernel, refuse_tiocsti=sys_admin)
            if cache:
                _write_cached(cache, found)  # also over a damaged one
        if sys_admin:
            _sys_admin = found
        else:
            _default = found
    return found


# A cached program: magic, program length, the program, its summary.  Its
# name changes with this machine, kernel, and the code and data that made it.
_CACHE_MAGIC = b"HSECCOMP1"
_BPF_MAXINSNS = 4096


def _cache_path(cache_dir: str, machine: str, kernel: tuple[int, int], sys_admin: bool = False) -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        stamps = [os.stat(os.path.join(here, name)) for name in
                  ("seccomp.py", "seccomp_profile.py", "syscall_table.py", "capabilities.py")]
    except OSError:
        return None
    made = "-".join(f"{st.st_size:x}.{st.st_mtime_ns:x}" for st in stamps)
    variant = "-sysadmin" if sys_admin else ""
    return os.path.join(cache_dir, f"seccomp-{machine}-{kernel[0]}.{kernel[1]}-{made}{variant}.bpf")


def _read_cached(path: str) -> Filter | None:
    try:
        with open(path, "rb") as f:
            data = f.read(64 << 10)
    except OSError:
        return None
    head = len(_CACHE_MAGIC) + 4
    if not data.startswith(_CACHE_MAGIC) or len(data) < head:
        return None
    (size,) = struct.unpack_from("<I", data, len(_CACHE_MAGIC))
    program = data[head:head + size]
    if len(program) != size or not size or size % 8 or size // 8 > _BPF_MAXINSNS:
        return None  # damaged: compiled afresh (and written again)
    return Filter(program, data[head + size:].decode(errors="replace"))


def _write_cached(path: str, compiled: Filter) -> None:
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        temp = f"{path}.{os.getpid()}.tmp"
        with open(temp, "wb") as f:
            f.write(_CACHE_MAGIC + struct.pack("<I", len(compiled.program)) + compiled.program + compiled.summary.encode())
        os.replace(temp, path)
    except OSError:
        pass  # a read-only or full state folder: compiled each time, as before


def install(config) -> None:  # noqa: ANN001 - a process.ProcessConfig (no import cycle)
    """In the container's process, after the privilege drop: load its filter, if any."""
    if config.seccomp is not None:
        config.seccomp.load()


# --- from the profile to one action per syscall ---------------------------------


def _applies(rule: dict, arch: str, caps: set[str], kernel: tuple[int, int]) -> bool:
    includes = rule.get("includes") or {}
    excludes = rule.get("excludes") or {}
    if includes.get("caps") and not set(includes["caps"]) <= caps:
        return False
    if includes.get("arches") and arch not in includes["arches"]:
        return False
    if includes.get("minKernel"):
        major, minor = (int(x) for x in includes["minKernel"].split(".")[:2])
        if kernel < (major, minor):
            return False
    if excludes.get("caps") and set(excludes["caps"]) & caps:
        return False
    if excludes.get("arches") and arch in excludes["arches"]:
        return False
    return True


def _action(rule: dict, profile: dict) -> int:
    kind = rule["action"]
    if kind == "SCMP_ACT_ALLOW":
        return SECCOMP_RET_ALLOW
    if kind == "SCMP_ACT_ERRNO":
        return SECCOMP_RET_ERRNO | int(rule.get("errnoRet", profile.get("defaultErrnoRet", errno.EPERM)))
    raise SeccompError(f"seccomp profile: action {kind} is not supported")


def resolve(profile: dict, arch: str, caps: set[str], kernel: tuple[int, int], table: dict[str, int]):
    """{syscall number: action or [(conditions, action), ...]} for the rules that apply."""
    plain: dict[int, int] = {}
    conditional: dict[int, list] = {}
    names: dict[int, str] = {}
    for rule in profile["syscalls"]:
        if not _applies(rule, arch, caps, kernel):
            continue
        action = _action(rule, profile)
        for name in rule["names"]:
            nr = table.get(name)
            if nr is None:  # not a syscall of this architecture
                continue
            names[nr] = name
            if rule.get("args"):
                conditional.setdefault(nr, []).append((rule["args"], action))
            else:
                plain.setdefault(nr, action)  # as libseccomp: an unconditional rule wins
    rules: dict[int, object] = {nr: conds for nr, conds in conditional.items() if nr not in plain}
    rules.update(plain)
    return rules, names


def _refuse_terminal_injection(rules: dict, names: dict[int, str], table: dict[str, int]) -> None:
    nr = table.get("ioctl")
    if nr is None or rules.get(nr) != SECCOMP_RET_ALLOW:
        return
    refused = SECCOMP_RET_ERRNO | errno.EPERM
    rules[nr] = [([{"index": 1, "value": cmd, "op": "SCMP_CMP_EQ"}], refused) for cmd in _TERMINAL_INJECTION]
    rules[nr].append(([], SECCOMP_RET_ALLOW))
    names[nr] = "ioctl"


# --- the BPF writer -------------------------------------------------------------


class _Assembler:
    """Instructions with symbolic jump targets.  Conditional jumps only ever
    skip 0 or 1 instruction (their offsets are 8-bit); far ones use JA."""

    def __init__(self) -> None:
        self.code: list[list] = []
        self.labels: dict[str, int] = {}
        self._next = 0

    def label(self) -> str:
        self._next += 1
        return f"L{self._next}"

    def mark(self, label: str) -> None:
        self.labels[label] = len(self.code)

    def emit(self, op: int, k: int | str = 0, jt: int = 0, jf: int = 0) -> None:
        self.code.append([op, jt, jf, k])

    def load(self, offset: int) -> None:
        self.emit(_LD_W_ABS, offset)

    def ret(self, value: int) -> None:
        self.emit(_RET_K, value)

    def goto(self, label: str) -> None:
        self.emit(_JA, label)

    def goto_if(self, op: int, k: int, label: str) -> None:
        self.emit(op, k & 0xFFFFFFFF, 0, 1)  # true: the JA below; false: past it
        self.goto(label)

    def goto_unless(self, op: int, k: int, label: str) -> None:
        self.emit(op, k & 0xFFFFFFFF, 1, 0)
        self.goto(label)

    def assemble(self) -> bytes:
        out = bytearray()
        for index, (op, jt, jf, k) in enumerate(self.code):
            if isinstance(k, str):
                k = self.labels[k] - index - 1
            out += struct.pack("=HBBI", op, jt, jf, k)
        return bytes(out)


def _condition(asm: _Assembler, arg: dict, fail: str, low_only: bool) -> None:
    """Fall through when the argument condition holds, else jump to `fail`."""
    op, index, value = arg["op"], arg["index"], int(arg["value"])
    lo, hi = _arg_lo(index), _arg_lo(index) + 4
    v_lo, v_hi = value & 0xFFFFFFFF, value >> 32
    if op == "SCMP_CMP_MASKED_EQ":
        want = int(arg.get("valueTwo", 0))
        if not low_only and (v_hi or want >> 32):
            asm.load(hi)
            asm.emit(_ALU_AND_K, v_hi)
            asm.goto_unless(_JEQ, want >> 32, fail)
        asm.load(lo)
        asm.emit(_ALU_AND_K, v_lo)
        asm.goto_unless(_JEQ, want & 0xFFFFFFFF, fail)
    elif op == "SCMP_CMP_EQ":
        if not low_only:
            asm.load(hi)
            asm.goto_unless(_JEQ, v_hi, fail)
        asm.load(lo)
        asm.goto_unless(_JEQ, v_lo, fail)
    elif op in ("SCMP_CMP_LT", "SCMP_CMP_GT"):
        less = op == "SCMP_CMP_LT"
        done = asm.label()
        if not low_only:  # decided by the high words unless they are equal
            asm.load(hi)
            asm.goto_if(_JGT, v_hi, fail if less else done)
            asm.goto_unless(_JEQ, v_hi, done if less else fail)
        asm.load(lo)
        if less:
            asm.goto_if(_JGE, v_lo, fail)
        else:
            asm.goto_unless(_JGT, v_lo, fail)
        asm.mark(done)
    else:
        raise SeccompError(f"seccomp profile: comparison {op} is not supported")


def compile_profile(machine: str, caps: set[str], kernel: tuple[int, int], profile: dict | None = None,
                    refuse_tiocsti: bool = False) -> Filter:
    """The profile as a BPF program for `machine` and a container holding `caps`."""
    if machine not in _MACHINES:
        raise SeccompError(f"no seccomp syscall table for {machine}; run with seccomp=False "
                           "(--security-opt seccomp=unconfined) on this machine")
    # Here, on the first compile: ~0.35 ms of import (-X importtime) that
    # commands starting no container (ps, images, gc) need not pay.
    from . import syscall_table

    if profile is None:
        from .seccomp_profile import PROFILE

        profile = PROFILE
    if profile["defaultAction"] != "SCMP_ACT_ERRNO":
        raise SeccompError(f"seccomp profile: default action {profile['defaultAction']} is not supported")
    default_action = SECCOMP_RET_ERRNO | int(profile.get("defaultErrnoRet", errno.EPERM))
    audit_arch, arch, table_name = _MACHINES[machine]
    # The native ABI first, then the compat one Docker's profile also covers.
    sections = [(audit_arch, table_name)]
    if machine in _COMPAT:
        sections.append(_COMPAT[machine])
    asm = _Assembler()
    labels = [asm.label() for _ in sections]
    asm.load(_ARCH)
    for (abi, _table), label in zip(sections, labels):
        asm.goto_if(_JEQ, abi, label)
    asm.ret(SECCOMP_RET_KILL_PROCESS)  # an ABI the filter has no table for
    counts = []
    for (_abi, name), label in zip(sections, labels):
        asm.mark(label)
        table = getattr(syscall_table, name)
        rules, names = resolve(profile, arch, caps, kernel, table)
        if refuse_tiocsti:
            _refuse_terminal_injection(rules, names, table)
        _section(asm, rules, names, max(table.values()), default_action)
        allowed = sum(1 for a in rules.values() if a == SECCOMP_RET_ALLOW)
        counts.append(f"{name.lower()} {allowed} allowed, {len(rules) - allowed} by argument or errno")
    program = asm.assemble()
    if len(program) // 8 > 4096:  # BPF_MAXINSNS
        raise SeccompError(f"seccomp filter too long ({len(program) // 8} instructions)")
    return Filter(program, f"{'; '.join(counts)}; {len(program) // 8} instructions")


def _section(asm: _Assembler, rules: dict, names: dict[int, str], top: int, default_action: int) -> None:
    """One ABI's part: syscall number -> action, by binary search over runs
    of numbers with the same outcome; argument checks after it."""
    runs: list[list] = []  # [first, last, key]
    for nr in range(top + 1):
        action = rules.get(nr, default_action)
        key = action if isinstance(action, int) else ("args", nr)
        if runs and runs[-1][2] == key:
            runs[-1][1] = nr
        else:
            runs.append([nr, nr, key])
    asm.load(_NR)
    asm.emit(_JGT, top, 0, 1)  # newer than the table (and x32's 0x40000000 + n): ENOSYS
    asm.ret(SECCOMP_RET_ERRNO | errno.ENOSYS)
    arg_blocks: dict[int, str] = {}

    # A node jumps over its left subtree: in one conditional jump when that
    # is at most 255 instructions long (the jump's 8-bit offset), else with
    # a JA; a shorter program costs less to load (the kernel checks and JITs
    # it at every container start).
    sizes: dict[tuple[int, int], int] = {}

    def size(lo: int, hi: int) -> int:
        if hi - lo == 1:
            return 1
        if (lo, hi) not in sizes:
            middle = (lo + hi) // 2
            left = size(lo, middle)
            sizes[lo, hi] = (1 if left <= 255 else 2) + left + size(middle, hi)
        return sizes[lo, hi]

    def tree(lo: int, hi: int) -> None:
        if hi - lo == 1:
            key = runs[lo][2]
            if isinstance(key, int):
                asm.ret(key)
            else:
                arg_blocks[key[1]] = arg_blocks.get(key[1]) or asm.label()
                asm.goto(arg_blocks[key[1]])
            return
        middle = (lo + hi) // 2
        left = size(lo, middle)
        if left <= 255:
            asm.emit(_JGE, runs[middle][0], left, 0)
        else:
            right = asm.label()
            asm.goto_if(_JGE, runs[middle][0], right)
        tree(lo, middle)
        if left > 255:
            asm.mark(right)
        tree(middle, hi)

    tree(0, len(runs))
    for nr, label in arg_blocks.items():
        asm.mark(label)
        for conditions, action in rules[nr]:
            fail = asm.label()
            for arg in conditions:
                _condition(asm, arg, fail, (names[nr], arg["index"]) in _INT_ARGS)
            asm.ret(action)
            asm.mark(fail)
        asm.ret(default_action)
