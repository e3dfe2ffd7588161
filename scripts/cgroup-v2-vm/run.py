#!/usr/bin/env python3
"""Run one command inside a small qemu VM whose only cgroup hierarchy is v2.

The development hosts of this project are cgroup v1 (with an empty v2
hierarchy beside it), so the engine's cgroup v2 driver cannot be exercised
there. This tool boots Debian's stock kernel under qemu (TCG: KVM hangs on
these machines) with ``cgroup_no_v1=all``, shares the host's ``/`` read-only
over 9p, makes it the guest's root and runs the command there, so the command
sees the very same files (project tree, interpreters, packages) but a pure v2
kernel.

    python3 scripts/cgroup-v2-vm/run.py [--timeout S] [--mem 2G] [--cwd DIR]
        [--env K=V ...] -- CMD [ARGS...]

Exit status: CMD's own; 124 when --timeout ran out; 125 when the tool or the
VM failed before CMD's status was known. See README.md beside this file.

Python 3.10+, standard library only. Installs nothing: run install.sh.

Why a tool of our own and not virtme-ng (checked 2026-12-01 on a 2-vCPU dev
machine, TCG only; virtme-ng 1.42 from PyPI, qemu 1:7.2+dfsg-7+deb12u18,
Debian kernel 6.1.0-57-amd64): virtme-ng does boot Debian's stock kernel over
the live root, and `vng --run /boot/vmlinuz-6.1.0-57-amd64 --disable-kvm
--force-9p --append cgroup_no_v1=all --exec CMD` gives a pure cgroup v2
guest. It is about four times slower here, which the VM job cannot afford:

    what (wall time on the host)                   this tool   virtme-ng
    boot, run a one-line `sh -c`, power off          4.8 s      17.7 s (23 s first run)
    the same with `import pytest, pytest_hermetic.plugin, pyroute2`
                                                    19.2 s      73.6 s
    of which the imports, in the guest              13.1 s      52.6 s

Where the difference comes from, and why no option of virtme-ng removes it:
its initramfs mounts the 9p root with no cache mode (so cache=none; this tool
uses cache=loose) and no option changes that; it puts overlays on /etc, /lib,
/usr, /var, /tmp and more, so every read of the interpreter and site-packages
goes through an overlay on 9p; and it boots the compressed bzImage, whose
decompressor takes ~5 s under TCG (this tool boots the unpacked vmlinux by
PVH). virtio-fs, its faster default, needs the Rust virtiofsd: this machine's
Debian archive has no package of it (`apt-cache search virtiofs` finds
nothing), and the C virtiofsd of qemu 7.2 (/usr/lib/qemu/virtiofsd) rejects
virtme-ng's arguments (`fuse: invalid argument`), so virtme-ng falls back to
9p (61 s for the import run above). Speed aside, virtme-ng would do: the rest
of what the job needs (the delegated cgroup /hermetic-ci, a tmpfs for the
store, since an overlay's upper layer cannot be on its /var overlay, exit 124
and 125) would be a short wrapper around it. Worth a new look when Debian
ships the Rust virtiofsd and virtme-ng can set the 9p cache mode.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import io
import lzma
import os
import re
import shlex
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

PROG = "cgroup-v2-vm"
EXIT_TIMEOUT = 124
EXIT_TOOL = 125

# The kernel command line is fixed: quiet keeps the serial console readable,
# panic=-1 with qemu's -no-reboot turns a guest panic into a qemu exit instead
# of a hang.
KERNEL_CMDLINE = "console=ttyS0 cgroup_no_v1=all panic=-1 quiet"

# Modules the guest needs; their dependencies are found with modinfo and put
# first, which gives the load order (virtio_ring, virtio, virtio_pci_*_dev,
# virtio_pci, netfs, fscache, 9pnet, 9pnet_virtio, 9p on Debian's 6.1).
ROOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")

CONTROLLERS = "+cpu +memory +pids +io"
CGROUP_PARENT = "/hermetic-ci"

# Tags of the two 9p shares: the host's root (read-only) and the per-run job
# folder (writable: parameters in, output and status out).
TAG_ROOT = "hostroot"
TAG_JOB = "hvmjob"

# virtio-9p carries at most (virtqueue size - 3) pages per message; the kernel
# clamps larger values, so ask for the most it allows.
MSIZE = 512000

# Boot to the command takes 6-12 s here; a VM that has not got there after
# this long is stuck (too little memory, a kernel that does not boot), and
# the console tells why sooner than --timeout would.
BOOT_TIMEOUT = 120

DEFAULT_CACHE_DIRS = (Path("/var/cache/hermetic-vm"),)

# PID 1 of the VM (busybox ash). Generic: everything that differs per run comes
# from /job/params.sh, written by the host, so the initramfs can be cached.
INIT_SCRIPT = r"""#!/bin/busybox sh
export PATH=/bin
/bin/busybox --install -s /bin

# Anything that goes wrong before the command ran is reported on the console
# (the host shows its tail) and ends the VM at once.
fail() {
    echo "HERMETIC-VM-FAIL: $*"
    [ -d /job ] && echo "$*" > /job/fail 2>/dev/null
    sync
    poweroff -f
    sleep 3600
}

mount -t proc proc /proc || fail "mount /proc"
mount -t sysfs sysfs /sys || fail "mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "mount /dev"
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts /dev/pts || fail "mount devpts"
mount -t tmpfs -o mode=1777 tmpfs /dev/shm || fail "mount /dev/shm"

# Order matters: a module loaded before its dependencies fails with
# "Unknown symbol in module".
while read -r mod; do
    insmod "/lib/modules/$mod" || fail "insmod $mod"
done < /modules.list

mkdir -p /job
mount -t 9p -o trans=virtio,version=9p2000.L,msize=__MSIZE__ __TAG_JOB__ /job || fail "mount job share"
. /job/params.sh || fail "read /job/params.sh"

mount -t 9p -o "trans=virtio,version=9p2000.L,ro,msize=__MSIZE__,cache=$HVM_CACHE" \
    __TAG_ROOT__ /mnt || fail "mount host root (cache=$HVM_CACHE)"

# cgroup2 the way systemd mounts it; the rbind below carries it into the
# new root (a plain bind of /sys would leave /sys/fs/cgroup empty there).
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 /sys/fs/cgroup \
    || fail "mount cgroup2"
# The root cgroup is exempt from the no-internal-processes rule, so the
# command can stay there while the controllers are enabled below it.
echo "__CONTROLLERS__" > /sys/fs/cgroup/cgroup.subtree_control \
    || fail "enable controllers at the root"
mkdir /sys/fs/cgroup__CGROUP_PARENT__ || fail "mkdir __CGROUP_PARENT__"
echo "__CONTROLLERS__" > /sys/fs/cgroup__CGROUP_PARENT__/cgroup.subtree_control \
    || fail "enable controllers in __CGROUP_PARENT__"

mount --bind /proc /mnt/proc || fail "bind /proc"
mount --rbind /dev /mnt/dev || fail "bind /dev"
mount --rbind /sys /mnt/sys || fail "rbind /sys"

# The share is read-only: give the engine and the command writable places.
# /tmp and /run are fresh, as after a boot. /root keeps the host's content
# (pyenv lives there) under a tmpfs upper layer, and so does /var, so that
# /var/lib/hermetic (the engine's store as root) can be made, empty.
# A working folder below /tmp or /run (a CI checkout, say) stays visible
# (read-only, as the rest of the share) through the fresh tmpfs.
case "$HVM_CWD" in
    /tmp/*|/run/*) mkdir -p /keep && mount --bind "/mnt$HVM_CWD" /keep || fail "keep $HVM_CWD" ;;
esac
mount -t tmpfs -o mode=1777 tmpfs /mnt/tmp || fail "tmpfs /tmp"
mount -t tmpfs -o mode=755 tmpfs /mnt/run || fail "tmpfs /run"
case "$HVM_CWD" in
    /tmp/*|/run/*) mkdir -p "/mnt$HVM_CWD" && mount --move /keep "/mnt$HVM_CWD" || fail "restore $HVM_CWD" ;;
esac
mkdir -p /rw && mount -t tmpfs -o mode=755 tmpfs /rw || fail "tmpfs /rw"
for d in root var; do
    mkdir -p /rw/$d/upper /rw/$d/work
    mount -t overlay overlay -o lowerdir=/mnt/$d,upperdir=/rw/$d/upper,workdir=/rw/$d/work \
        /mnt/$d || fail "overlay /$d"
done
mkdir -p /mnt/var/lib/hermetic && mount -t tmpfs -o mode=700 tmpfs /mnt/var/lib/hermetic \
    || fail "tmpfs /var/lib/hermetic"

ip link set lo up || fail "lo up"

# Make the share the root of the mount namespace, as switch_root does, but
# keep this script's own root (the initramfs, with busybox and /job): PID 1
# stays here, and the command is chrooted into "." below. A plain
# `chroot /mnt` would leave the command "chrooted" in the kernel's eyes
# (its root is not the namespace's), and then unshare(CLONE_NEWUSER) fails
# with EPERM: no rootless engine tests.
cd /mnt || fail "cd /mnt"
mount --move . / || fail "move the share to /"
# Like a systemd host: mounts are shared, so an engine that forgets to make
# its mount namespace private leaks mounts here too, as it would there.
mount --make-rshared . || fail "make-rshared"

echo "HERMETIC-VM: ready $(cut -d' ' -f1 /proc/uptime)"
cut -d' ' -f1 /proc/uptime > /job/ready

hvm_command < /dev/null > /job/stdout 2> /job/stderr
status=$?
echo "$status" > /job/status
echo "HERMETIC-VM-EXIT=$status"
sync
poweroff -f
sleep 3600
"""


class ToolError(Exception):
    """A failure of the tool or the VM, not of the command: exit 125."""


class Interrupted(Exception):
    """SIGTERM or SIGHUP arrived: unwind so that qemu and the job folder go."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def log(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# What the host must have


def program_headers(elf: bytes) -> list[tuple[int, int, int]]:
    """(p_type, p_offset, p_filesz) of each program header of a 64-bit ELF;
    empty for anything else."""
    if len(elf) < 64 or elf[:4] != b"\x7fELF" or elf[4] != 2:
        return []
    phoff, = struct.unpack_from("<Q", elf, 32)
    phentsize, phnum = struct.unpack_from("<HH", elf, 54)
    headers = []
    for i in range(phnum):
        base = phoff + i * phentsize
        p_type, _, p_offset = struct.unpack_from("<IIQ", elf, base)
        p_filesz, = struct.unpack_from("<Q", elf, base + 32)
        headers.append((p_type, p_offset, p_filesz))
    return headers


def is_static_elf(path: Path) -> bool:
    """True for an ELF file with no PT_INTERP, i.e. one that runs without ld.so.

    Debian's dynamic busybox also installs /bin/busybox, and it would not run
    in an initramfs without libc, so the kind of binary is what counts.
    """
    try:
        headers = program_headers(path.read_bytes())
    except (OSError, struct.error):
        return False
    return bool(headers) and all(p_type != 3 for p_type, _, _ in headers)  # 3: PT_INTERP


def version_key(version: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", version)]


def find_kernel(wanted: str | None) -> tuple[str, Path] | None:
    """The newest kernel with both an image in /boot and a module tree.

    The running kernel does not matter (the host's has no modules at all):
    the VM boots whatever linux-image-amd64 installed.
    """
    candidates = []
    modroot = Path("/lib/modules")
    if modroot.is_dir():
        for d in modroot.iterdir():
            image = Path("/boot") / f"vmlinuz-{d.name}"
            if image.is_file() and (wanted is None or d.name == wanted):
                candidates.append((d.name, image))
    if not candidates:
        return None
    return max(candidates, key=lambda c: version_key(c[0]))


def check_host(kernel_wanted: str | None) -> tuple[str, Path, Path, Path]:
    """Find qemu, kernel and busybox, or name every missing package at once."""
    missing: list[str] = []
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        missing.append("qemu-system-x86")
    kernel = find_kernel(kernel_wanted)
    if kernel is None:
        missing.append("linux-image-amd64")
    busybox = Path("/bin/busybox")
    if not is_static_elf(busybox):
        missing.append("busybox-static")
    if shutil.which("modinfo") is None:
        missing.append("kmod")
    if missing:
        which = f" (kernel {kernel_wanted})" if kernel_wanted and kernel is None else ""
        raise ToolError(
            f"missing Debian packages: {' '.join(missing)}{which}. Install them with "
            f"`sh {Path(__file__).with_name('install.sh')}` (as root), i.e. "
            f"apt-get install --no-install-recommends {' '.join(missing)}")
    assert qemu is not None and kernel is not None
    kver, image = kernel
    if not os.access(image, os.R_OK):
        raise ToolError(f"{image} is not readable: run as root")
    return kver, image, Path(qemu), busybox


# --------------------------------------------------------------------------
# The initramfs


def modinfo(kver: str, field: str, name: str) -> str:
    proc = subprocess.run(["modinfo", "-k", kver, "-F", field, name],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolError(f"modinfo: no module {name!r} for kernel {kver}: "
                        f"{proc.stderr.strip()}")
    return proc.stdout.strip()


def module_load_order(kver: str) -> list[tuple[str, Path]]:
    """ROOT_MODULES and their dependencies, each after what it depends on."""
    order: list[tuple[str, Path]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in seen:
            return
        seen.add(name)
        filename = modinfo(kver, "filename", name)
        if filename in ("", "(builtin)"):
            return  # built into this kernel: nothing to load
        for dep in filter(None, modinfo(kver, "depends", name).split(",")):
            visit(dep)
        order.append((name, Path(filename)))

    for root in ROOT_MODULES:
        visit(root)
    return order


def decompress(data: bytes) -> bytes | None:
    """xz, gzip or zstd data, uncompressed (by its magic number); None for
    another format, or zstd without a decompressor (Python < 3.14 and no
    `zstd` program). Trailing bytes after the stream are ignored: the kernel
    build appends the size after a bzImage's payload."""
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)
    if data[:2] == b"\x1f\x8b":
        return zlib.decompressobj(wbits=31).decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        try:
            from compression import zstd  # Python 3.14+
            return zstd.ZstdDecompressor().decompress(data)
        except ImportError:
            if shutil.which("zstd") is None:
                return None
            return subprocess.run(["zstd", "-dc"], input=data, capture_output=True).stdout or None
    return None


def read_module(path: Path) -> bytes:
    """The module's ELF bytes: busybox insmod takes uncompressed files only."""
    data = path.read_bytes()
    if path.suffix not in (".xz", ".gz", ".zst"):
        return data
    elf = decompress(data)
    if elf is None:
        raise ToolError(f"{path}: cannot decompress it (zstd: install the Debian package zstd)")
    return elf


class Cpio:
    """Writes the "newc" cpio format, the one the kernel unpacks as initramfs."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 0

    def _entry(self, name: str, mode: int, data: bytes = b"",
               rdev: tuple[int, int] = (0, 0)) -> None:
        self.ino += 1
        encoded = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0,
                  rdev[0], rdev[1], len(encoded), 0)
        self.buf.write(b"070701" + b"".join(b"%08x" % v for v in fields))
        self.buf.write(encoded)
        self._pad()
        self.buf.write(data)
        self._pad()

    def _pad(self) -> None:
        self.buf.write(b"\0" * (-self.buf.tell() % 4))

    def dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def init_script() -> str:
    text = INIT_SCRIPT
    for key, value in {"__MSIZE__": str(MSIZE), "__TAG_JOB__": TAG_JOB,
                       "__TAG_ROOT__": TAG_ROOT, "__CONTROLLERS__": CONTROLLERS,
                       "__CGROUP_PARENT__": CGROUP_PARENT}.items():
        text = text.replace(key, value)
    return text


def build_initramfs(kver: str, busybox: Path) -> bytes:
    cpio = Cpio()
    for d in ("bin", "dev", "proc", "sys", "mnt", "job", "tmp", "lib", "lib/modules"):
        cpio.dir(d)
    # The kernel opens /dev/console for PID 1's stdio before anything is
    # mounted: without this node the init script would have no output at all.
    cpio.chardev("dev/console", 5, 1)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    cpio.file("init", init_script().encode(), 0o755)
    names = []
    for i, (name, path) in enumerate(module_load_order(kver)):
        fname = f"{i:02d}-{name}.ko"
        cpio.file(f"lib/modules/{fname}", read_module(path))
        names.append(fname)
    cpio.file("modules.list", ("\n".join(names) + "\n").encode())
    # Uncompressed on purpose: a few MB, and the TCG guest would spend longer
    # inflating it than the host spends reading it.
    return cpio.finish()


# --------------------------------------------------------------------------
# The kernel, uncompressed
#
# Under TCG the bzImage's own decompressor is the slowest part of the boot
# (about 5 s of a 12 s boot here). qemu boots an uncompressed vmlinux ELF
# directly through its PVH entry point, so the payload is unpacked once on the
# host and cached; a kernel without PVH or with an unknown compression is
# booted as is, only slower.


def has_pvh_note(elf: bytes) -> bool:
    """True when the ELF carries Xen's PHYS32_ENTRY note, which qemu needs."""
    for p_type, p_offset, p_filesz in program_headers(elf):
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == 18:  # XEN_ELFNOTE_PHYS32_ENTRY
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def extract_vmlinux(image: Path) -> bytes | None:
    """The vmlinux inside a bzImage (boot protocol 2.08+), if it boots by PVH."""
    data = image.read_bytes()
    if len(data) < 0x250 or data[0x202:0x206] != b"HdrS":
        return None
    version, = struct.unpack_from("<H", data, 0x206)
    if version < 0x208:
        return None
    setup = ((data[0x1f1] or 4) + 1) * 512
    offset, length = struct.unpack_from("<II", data, 0x248)
    try:
        elf = decompress(data[setup + offset:setup + offset + length])
    except (lzma.LZMAError, zlib.error):
        return None
    return elf if elf and has_pvh_note(elf) else None


def cache_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("HERMETIC_VM_CACHE"):
        dirs.append(Path(os.environ["HERMETIC_VM_CACHE"]))
    dirs.extend(DEFAULT_CACHE_DIRS)
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    dirs.append(Path(xdg) / "hermetic-vm")
    return dirs


def cache_key(kver: str, image: Path, busybox: Path) -> str:
    """What the cached kernel and initramfs depend on: the kernel version and
    its image (a rebuilt package may keep the version), this file (the init
    script and the module list live here) and busybox."""
    h = hashlib.sha256()
    h.update(Path(__file__).read_bytes())
    h.update(busybox.read_bytes())
    st = image.stat()
    h.update(f"{kver} {st.st_size} {st.st_mtime_ns}".encode())
    return f"{kver}-{h.hexdigest()[:16]}"


def cached(kind: str, key: str, build) -> Path | None:
    """The cache file ``{kind}-{key}``, made by ``build()`` when missing.

    ``build`` may return None ("cannot be made"): an empty file records that,
    so the work is not redone on each run. Older files of the same kind and
    kernel are removed once unused for a day: a run of another version of
    this file (another checkout) may be about to boot them.
    """
    name = f"{kind}-{key}"
    for d in cache_dirs():
        if (d / name).is_file():
            with contextlib.suppress(OSError):
                os.utime(d / name)  # in use: not "a day old" for the clean-up below
            return d / name if (d / name).stat().st_size else None
    data = build()
    for d in cache_dirs():
        try:
            d.mkdir(parents=True, exist_ok=True)
            # Written under a temporary name and renamed: concurrent runs
            # never see a half-written file.
            fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{kind}-")
            with os.fdopen(fd, "wb") as f:
                f.write(data or b"")
            os.chmod(tmp, 0o644)
            os.replace(tmp, d / name)
        except OSError:
            continue
        kver = key.rsplit("-", 1)[0]
        for old in d.glob(f"{kind}-{kver}-*"):
            with contextlib.suppress(OSError):
                if old.name != name and time.time() - old.stat().st_mtime > 86400:
                    old.unlink()
        return d / name if data else None
    raise ToolError(f"no writable cache folder for the {kind} "
                    f"(tried {', '.join(map(str, cache_dirs()))})")


# --------------------------------------------------------------------------
# The run


def guest_env(extra: list[str]) -> dict[str, str]:
    """The command's whole environment: a few of the caller's, plus --env."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "HERMETIC_IN_VM": "1",
        "HERMETIC_CGROUP_PARENT": CGROUP_PARENT,
    }
    if "CI" in os.environ:  # CI runs stay CI runs; a developer's stays not
        env["CI"] = os.environ["CI"]
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ToolError(f"--env wants K=V, got {item!r}")
        env[key] = value
    return env


def params_script(argv: list[str], cwd: str, env: dict[str, str], cache: str) -> str:
    """/job/params.sh: the per-run part of the guest's init, in POSIX sh."""
    q = shlex.quote
    env_args = " ".join(q(f"{k}={v}") for k, v in env.items())
    # The host's /bin/sh in the chroot does the cd: busybox chroot goes to /.
    inner = 'cd "$1" || { echo "cgroup-v2-vm: no folder $1 in the VM" >&2; exit 125; }; shift; exec "$@"'
    return "\n".join([
        f"HVM_CACHE={q(cache)}",
        f"HVM_CWD={q(cwd)}",
        "hvm_command() {",
        f"    /bin/env -i {env_args} /bin/chroot . /bin/sh -c {q(inner)} sh "
        f"{q(cwd)} {' '.join(q(a) for a in argv)}",
        "}",
        "",
    ])


def kill_qemu(proc: subprocess.Popen) -> None:
    """End qemu by its pid: SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def _die_with_parent() -> None:
    # If this script is SIGKILLed, its finally blocks never run; the kernel
    # then still sends qemu SIGKILL, so no VM outlives us.
    PR_SET_PDEATHSIG = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Forwarder:
    """Copies what the guest appends to a file in the job folder to our fd."""

    def __init__(self, path: Path, out) -> None:
        self.path = path
        self.out = out
        self.f = None

    def pump(self) -> None:
        if self.f is None:
            try:
                self.f = self.path.open("rb")
            except FileNotFoundError:
                return
        while chunk := self.f.read(65536):
            self.out.write(chunk)
            self.out.flush()

    def close(self) -> None:
        if self.f is not None:
            self.f.close()


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no console output)"
    return "\n".join(text.splitlines()[-lines:])


def run(args: argparse.Namespace) -> int:
    kver, image, qemu, busybox = check_host(args.kernel)
    t_build = time.monotonic()
    key = cache_key(kver, image, busybox)
    initrd = cached("initramfs", key, lambda: build_initramfs(kver, busybox))
    assert initrd is not None
    kernel = cached("vmlinux", key, lambda: extract_vmlinux(image)) or image
    t_start = time.monotonic()

    remove_stale_jobdirs()
    jobdir = Path(tempfile.mkdtemp(prefix=f"hermetic-vm-{os.getpid()}-"))
    proc = None
    forwarders: list[Forwarder] = []
    try:
        (jobdir / "params.sh").write_text(
            params_script(args.command, args.cwd, guest_env(args.env), args.cache))
        console = jobdir / "console.log"
        cmd = [
            str(qemu),
            "-machine", "accel=tcg", "-cpu", "max", "-smp", "2", "-m", args.mem,
            "-nographic", "-no-reboot", "-monitor", "none",
            "-serial", f"file:{console}",
            "-nic", "none",
            "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", KERNEL_CMDLINE,
            "-virtfs", f"local,path=/,mount_tag={TAG_ROOT},security_model=passthrough,readonly=on,multidevs=remap",
            "-virtfs", f"local,path={jobdir},mount_tag={TAG_JOB},security_model=none",
        ]
        if args.verbose:
            log("running " + shlex.join(cmd))
        # qemu's own messages go to a file: a pipe nobody reads could fill
        # and stall it.
        qemu_log = jobdir / "qemu.log"
        with qemu_log.open("wb") as qlog:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=qlog, stderr=qlog,
                                    start_new_session=True, preexec_fn=_die_with_parent)
        forwarders = [Forwarder(jobdir / "stdout", sys.stdout.buffer), Forwarder(jobdir / "stderr", sys.stderr.buffer)]
        if args.verbose:
            forwarders.append(Forwarder(console, sys.stderr.buffer))
        deadline = t_start + args.timeout
        t_ready = None
        while True:
            for fwd in forwarders:
                fwd.pump()
            if t_ready is None and (jobdir / "ready").exists():
                t_ready = time.monotonic()
            if proc.poll() is not None:
                break
            if t_ready is None and time.monotonic() > t_start + BOOT_TIMEOUT:
                kill_qemu(proc)
                raise ToolError(f"the VM did not reach the command within {BOOT_TIMEOUT} s "
                                f"(--mem {args.mem} too small?).\n"
                                f"--- console (last lines) ---\n{tail(console)}")
            if time.monotonic() > deadline:
                kill_qemu(proc)
                log(f"timed out after {args.timeout:g} s: killed the VM (qemu pid {proc.pid})")
                return EXIT_TIMEOUT
            time.sleep(0.05)
        t_end = time.monotonic()
        for fwd in forwarders:
            fwd.pump()
        qemu_output = qemu_log.read_text(errors="replace")

        status = read_status(jobdir, console)
        if args.timings:
            boot = f"{t_ready - t_start:.1f}" if t_ready else "-"
            log(f"timings: kernel and initramfs {t_start - t_build:.2f} s, boot to command {boot} s, "
                f"whole VM {t_end - t_start:.1f} s")
        if status is None:
            fail = jobdir / "fail"
            why = fail.read_text().strip() if fail.exists() else f"qemu exited {proc.returncode}"
            raise ToolError(f"the VM ended without the command's status ({why}).\n"
                            f"--- qemu ---\n{qemu_output.strip()}\n"
                            f"--- console (last lines) ---\n{tail(console)}")
        return status
    finally:
        if proc is not None:
            kill_qemu(proc)
        for fwd in forwarders:
            fwd.close()
        shutil.rmtree(jobdir, ignore_errors=True)


def remove_stale_jobdirs() -> None:
    """Remove job folders left by runs that were SIGKILLed (no finally ran).

    qemu itself died with them (PR_SET_PDEATHSIG); the folder is named after
    the run's pid, and a folder whose pid is gone is garbage.
    """
    for d in Path(tempfile.gettempdir()).glob("hermetic-vm-*-*"):
        pid = d.name.split("-")[2]
        if not pid.isdigit() or not d.is_dir():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


def read_status(jobdir: Path, console: Path) -> int | None:
    """CMD's status: the guest writes it to the job folder and, as a marker,
    to the console; the file wins, the marker covers a lost file write."""
    with contextlib.suppress(OSError, ValueError):
        return int((jobdir / "status").read_text().strip())
    with contextlib.suppress(OSError):
        m = re.search(r"^HERMETIC-VM-EXIT=(\d+)\s*$", console.read_text(errors="replace"), re.M)
        if m:
            return int(m.group(1))
    return None


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="run.py",
        description="Run CMD in a qemu VM with a pure cgroup v2 hierarchy, over the "
                    "host's root shared read-only. Exits with CMD's status, 124 on "
                    "timeout, 125 when the VM itself fails.")
    p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                   help="kill the VM and exit 124 after this long (default 600)")
    p.add_argument("--mem", default="2G", help="guest RAM, as qemu's -m takes it (default 2G)")
    p.add_argument("--cwd", default=os.getcwd(), metavar="DIR",
                   help="CMD's working folder in the VM (default: the current one)")
    p.add_argument("--env", action="append", default=[], metavar="K=V",
                   help="set a variable for CMD (repeatable)")
    p.add_argument("--cache", default="loose", choices=("none", "loose", "fscache", "mmap"),
                   help="9p cache mode of the shared root (default loose)")
    p.add_argument("--kernel", metavar="KVER",
                   help="kernel version to boot (default: the newest in /lib/modules with a /boot/vmlinuz)")
    p.add_argument("--timings", action="store_true", help="print boot and run times to stderr")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="show the qemu command and the guest console on stderr")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
    args = p.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        p.error("no command given (put it after --)")
    if not re.fullmatch(r"\d+[MGmg]?", args.mem):
        p.error(f"--mem {args.mem!r}: want e.g. 512M or 2G")
    args.cwd = os.path.abspath(args.cwd)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)

    # SIGTERM/SIGHUP end us the way Ctrl-C does, so the finally blocks kill
    # qemu and remove the job folder.
    def on_signal(signum, _frame):
        raise Interrupted(signum)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        return run(args)
    except ToolError as e:
        log(str(e))
        return EXIT_TOOL
    except KeyboardInterrupt:
        log("interrupted (SIGINT): VM stopped")
        return 128 + signal.SIGINT
    except Interrupted as e:
        log(f"interrupted ({signal.Signals(e.signum).name}): VM stopped")
        return 128 + e.signum


if __name__ == "__main__":
    sys.exit(main())
