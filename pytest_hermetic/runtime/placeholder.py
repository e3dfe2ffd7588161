"""The placeholder PID 1 of a Python callable run as root.

A PID namespace needs a PID 1, and a PID 1 ignores every signal it has no
handler for, which a test killing itself must not meet; so the test cannot
be PID 1.  Forking the parent twice (a Python PID 1, the test as PID 2)
doubles the dominant cost: the fork and exit of a large address space
(~17 ms for 100 MiB here).  Instead PID 1 is a tiny program started with
posix_spawn (vfork: no copy), and the test is the only fork of the parent,
PID 2 and the parent's own child (`init.worker_main`).  The placeholder
holds no privilege the test could use: the kernel refuses /proc/1/root and
friends to a process with fewer capabilities, and it runs in no namespace
but the PID one.  It does not reap orphans; they go with the namespace at
the end.

It reads the parent's lifeline pipe, whose write end only the parent and
its forks hold: when they are all gone, even by SIGKILL (the forks die
with the parent, PR_SET_PDEATHSIG), it reads EOF and exits, and its
namespace with it.  Nothing else would end a placeholder of a killed run.

The program: on x86_64, 65 bytes of machine code in a static ELF made here
(`PID1_X86_64`: name itself `hermetic-pid1`, read fd 0 until EOF, exit),
exec'd from a memfd that is closed again before the test is forked; 0.06
ms of CPU per start against 0.7 for `cat`, whose dynamic loader probes the
CPU at every exec (bench figures in docs/benchmarks.md).  Elsewhere, or
where the kernel refuses to exec a memfd (vm.memfd_noexec), `cat`.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
else:  # signal's C half, without signal.py's enums (enum, functools, collections: ~3 ms of `hermetic run`)
    import _signal as signal

from . import syscalls as sc

_binary_path: str | None = None
_lifeline: tuple[int, int, int] | None = None  # (owner pid, read end, write end)
_tiny_works: bool | None = None  # None: not tried yet

# x86_64: prctl(PR_SET_NAME, NAME); do rax = read(0, rsp, 64) while rax > 0
# or rax == -EINTR; exit(0).  NAME's address is patched in at `{addr}`.
_X86_64_CODE = ("bf0f000000" "be{addr}" "b89d000000" "0f05"
                "31c0" "31ff" "4889e6" "ba40000000" "0f05" "4885c0" "7fed" "4883f8fc" "74e7"
                "b83c000000" "31ff" "0f05")
_NAME = b"hermetic-pid1\0"
_BASE = 0x400000


def tiny_elf() -> bytes:
    """The x86_64 placeholder: an ELF header, a read+execute PT_LOAD, a
    non-executable PT_GNU_STACK, the code and its name."""
    import struct

    start = 64 + 2 * 56  # code after the ELF header and two program headers
    code_len = len(_X86_64_CODE.format(addr="00000000")) // 2
    code = bytes.fromhex(_X86_64_CODE.format(addr=struct.pack("<I", _BASE + start + code_len).hex())) + _NAME
    total = start + len(code)
    header = (b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
              + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, _BASE + start, 64, 0, 0, 64, 56, 2, 0, 0, 0))
    load = struct.pack("<IIQQQQQQ", 1, 5, 0, _BASE, _BASE, total, total, 0x1000)
    stack = struct.pack("<IIQQQQQQ", 0x6474E551, 6, 0, 0, 0, 0, 0, 16)
    return header + load + stack + code


def binary() -> str | None:
    """The fallback placeholder's program (`cat`), or None where there is none."""
    global _binary_path
    if _binary_path is None:
        _binary_path = next((p for p in ("/bin/cat", "/usr/bin/cat") if os.access(p, os.X_OK)), "")
    return _binary_path or None


def available() -> bool:
    """Whether a placeholder can be started here."""
    return os.uname().machine == "x86_64" and _tiny_works is not False or binary() is not None


def _lifeline_fd() -> int:
    global _lifeline
    if _lifeline is None or _lifeline[0] != os.getpid():  # a fork makes its own
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        _lifeline = (os.getpid(), read_fd, write_fd)
    return _lifeline[1]


def start() -> int:
    """Start a placeholder (in the PID namespace the caller unshared for its children)."""
    global _tiny_works
    actions = [(os.POSIX_SPAWN_DUP2, _lifeline_fd(), 0),
               (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
    sigdef = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE)
    if _tiny_works is not False and os.uname().machine == "x86_64":
        try:
            memfd = _tiny_memfd()
        except OSError:
            _tiny_works = False
        else:
            try:
                # The vfork child opens /proc/self/fd/N, its copy of the memfd;
                # closed here before the test is forked, so no test holds it.
                pid = os.posix_spawn(f"/proc/self/fd/{memfd}", ["hermetic-pid1"], {}, file_actions=actions,
                                     setsid=True, setsigdef=sigdef)
                _tiny_works = True
                return pid
            except OSError:
                if _tiny_works:
                    raise  # it worked before: this failure is not about the program
                _tiny_works = False
            finally:
                os.close(memfd)
    program = binary()
    assert program
    return os.posix_spawn(program, [program], {}, file_actions=actions, setsid=True, setsigdef=sigdef)


_MFD_EXEC = 0x10  # Linux 6.3+: executable even under vm.memfd_noexec=1; older kernels refuse the flag


def _tiny_memfd() -> int:
    try:
        fd = os.memfd_create("hermetic-pid1", os.MFD_CLOEXEC | _MFD_EXEC)
    except OSError:
        fd = os.memfd_create("hermetic-pid1", os.MFD_CLOEXEC)
    try:
        os.write(fd, tiny_elf())
    except BaseException:
        os.close(fd)
        raise
    return fd


_ready: tuple[int, int, int] | None = None  # (owner pid, a placeholder started ahead, its PID namespace's fd)
_own_pidns: tuple[int, int] | None = None  # (pid, fd of this process's own PID namespace)


def prepare() -> None:
    """Start the next container's placeholder now, in a new PID namespace
    (the pytest plugin does while a test's child builds its root): the next
    start then only `setns`es into that namespace and forks, instead of
    waiting for a vfork and exec on its critical path.  A fresh
    namespace with nothing but a fresh placeholder in it, for one container."""
    global _ready, _own_pidns
    if not available() or (_ready is not None and _ready[0] == os.getpid()):
        return
    if _own_pidns is None or _own_pidns[0] != os.getpid():
        _own_pidns = (os.getpid(), os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC))
    sc.unshare(sc.CLONE_NEWPID)  # for our children only; our own PID namespace stays
    try:
        pid = start()
    finally:
        sc.setns(_own_pidns[1], sc.CLONE_NEWPID)
    try:
        ns = os.open(f"/proc/{pid}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        end(pid)
        raise
    _ready = (os.getpid(), pid, ns)


def take() -> tuple[int, int] | None:
    """The placeholder started ahead and its PID namespace's fd (the
    caller's to close), if one is ready and still running; else None."""
    global _ready
    ready, _ready = _ready, None
    if ready is None or ready[0] != os.getpid():
        return None  # none, or a parent's (a fork's copy is not ours)
    _, pid, ns = ready
    try:
        alive = os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        alive = False
    if not alive:  # killed meanwhile: its namespace takes no new process
        os.close(ns)
        return None
    return pid, ns


def discard_ready() -> None:
    """End the placeholder started ahead, if any (end of a session)."""
    ready = take()
    if ready is not None:
        os.close(ready[1])
        end(ready[0])


def end(pid: int) -> None:
    """PID 1's death takes whatever is left in its PID namespace along."""
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def drop_lifeline() -> None:
    """In a fork of the parent: the placeholders' lifeline is the parent's alone."""
    if _lifeline is not None:
        os.close(_lifeline[2])
