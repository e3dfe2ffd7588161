"""`hermetic doctor`: check that this kernel and machine can run containers,
and say exactly how to fix what is missing.

Every check is done for real rather than guessed from configuration: a
namespace is unshared, an overlay is mounted, a cgroup is created and
removed.  Whatever changes namespaces or mounts runs in a forked child, so
the caller's process is never changed; the child reports back through a
pipe.  A check that raises is reported as FAIL with its error, never as a
traceback.

`FAIL` marks what the engine cannot do without (exit status 1); `warn` marks
what limits it (no cgroup limits, no subordinate ids) or what only other
users would miss.

One concern, one report on the machine (it is longer than most modules
for that): each section below is one check of the report, and they share
the forked-probe helpers at the end; the engine's own functions do the
mounting and parsing, so nothing here is a second implementation.
"""

from __future__ import annotations

import json
import os
import platform
import pwd
import re
import select
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import TextIO

from . import paths
from .errors import HermeticError
from .images import layers
from .runtime import cgroups, rootfs
from .runtime import syscalls as sc
from .runtime.namespaces import IdMap, UserNamespace, subordinate_range

OK, WARN, FAIL = "ok", "warn", "FAIL"
NOBODY = 65534
PR_SET_DUMPABLE = 4
PROBE_TIMEOUT = 5.0
NAME_WIDTH = 26

ROOT_FIX = "run as root (e.g. with sudo, as on CI runners)"
APPARMOR_FIX = (
    "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 "
    "(persist it in /etc/sysctl.d/), or " + ROOT_FIX
)
GOOD_FILESYSTEMS = "ext4, xfs, btrfs or tmpfs"


@dataclass(frozen=True)
class Result:
    """One line of the report; `fix` is required for every warn and FAIL."""

    status: str
    name: str
    found: str
    fix: str = ""


@dataclass(frozen=True)
class Probe:
    """What a forked child reported: its result text or its error."""

    ok: bool
    detail: str
    errno: int | None = None


@dataclass(frozen=True)
class Machine:
    """Who runs the doctor (root and rootless need different checks), and
    whether a user namespace works: everything rootless stands on it."""

    uid: int
    gid: int
    user: str
    kernel: tuple[int, int]
    userns: Probe

    @property
    def root(self) -> bool:
        return self.uid == 0


# ---------------------------------------------------------------- entry point


def run_checks(stream: TextIO) -> int:
    """Run every check, print one aligned line each; 1 if anything required fails."""
    machine = _machine()
    stream.write(f"hermetic doctor: {machine.user} ({'root' if machine.root else 'rootless'}), "
                 f"kernel {platform.release()}, {_cgroup_summary()}\n")
    stream.flush()
    counts = {OK: 0, WARN: 0, FAIL: 0}
    for label, check in _checks(machine):
        for result in _guarded(label, check, machine):
            counts[result.status] += 1
            stream.write(format_result(result))
            stream.flush()
    stream.write(f"{counts[OK]} ok, {counts[WARN]} warn, {counts[FAIL]} FAIL\n")
    return 1 if counts[FAIL] else 0


def format_result(result: Result) -> str:
    line = f"  {result.status:<4}  {result.name:<{NAME_WIDTH}}  {result.found}\n"
    if result.fix:
        line += " " * (10 + NAME_WIDTH) + f"fix: {result.fix}\n"
    return line


Check = Callable[[Machine], Iterable[Result]]


def _checks(machine: Machine) -> list[tuple[str, Check]]:
    checks: list[tuple[str, Check]] = [
        ("kernel", check_kernel),
        ("user namespaces", check_user_namespaces),
        ("namespaces", check_namespaces),
        ("overlayfs", check_overlay),
        ("store whiteouts", check_whiteouts),
        ("layer images", check_layer_images),
        ("cgroups", check_cgroups),
    ]
    if not machine.root:
        checks.append(("rootless", check_rootless_extras))
    checks.append(("networks", check_networks))
    checks.append(("directories", check_directories))
    if machine.root:
        checks.append(("native child", check_native_child))
    return checks


def check_native_child(machine: Machine) -> Iterator[Result]:
    """The C part that starts a command's container without a Python child
    (runtime/native_child.py): a warning only, everything runs without it."""
    from .runtime import native_child

    found = native_child.state()
    if found == "off":
        yield Result(WARN, "native child", "turned off (HERMETIC_NATIVE_CHILD=0)", "unset HERMETIC_NATIVE_CHILD")
    elif found == "missing":
        yield Result(WARN, "native child", "not built: each command's container starts through a Python child "
                     "(~2 ms more a start)", "apt-get install gcc python3-dev, then reinstall pytest-hermetic")
    elif found == "unusable":
        yield Result(WARN, "native child", "built, but this kernel (before 5.11) or user namespace (not the "
                     "machine's first) cannot use it: the Python child starts every container",
                     "run as the machine's root on Linux 5.11 or newer")
    else:
        yield Result(OK, "native child", "commands' containers start without a Python child")


def _guarded(label: str, check: Check, machine: Machine) -> Iterator[Result]:
    """Yield a check's results; an exception becomes a FAIL line, never a traceback."""
    try:
        yield from check(machine)
    except Exception as exc:  # noqa: BLE001 - the report must go on
        yield Result(FAIL, label, f"the check itself failed: {describe(exc)}",
                     "none known; the error above is what the kernel or machine answered")


def _machine() -> Machine:
    uid = os.geteuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = f"uid {uid}"
    match = re.match(r"(\d+)\.(\d+)", platform.release())
    kernel = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    gid = os.getegid()
    try:
        userns = probe(partial(_enter_userns, uid, gid))
    except Exception as exc:  # noqa: BLE001 - fork itself failed
        userns = Probe(False, describe(exc))
    return Machine(uid, gid, user, kernel, userns)


def _cgroup_summary() -> str:
    try:
        return cgroups.detect().describe()
    except Exception as exc:  # noqa: BLE001
        return f"cgroup unknown ({describe(exc)})"


# ---------------------------------------------------------------- kernel


def check_kernel(machine: Machine) -> Iterator[Result]:
    release, arch = platform.release(), platform.machine()
    found = f"{release} on {arch}"
    if arch not in sc.SYS_PIVOT_ROOT or arch not in sc.SYS_CAPSET:
        yield Result(FAIL, "kernel", f"{found}: no pivot_root/capset syscall numbers known for {arch}",
                     f"add {arch}'s pivot_root and capset numbers to pytest_hermetic/runtime/syscalls.py")
    elif not machine.root and machine.kernel < (5, 11):
        yield Result(WARN, "kernel", f"{found}: rootless overlayfs needs Linux >= 5.11",
                     f"upgrade the kernel to 5.11 or later, or {ROOT_FIX}")
    else:
        yield Result(OK, "kernel", found)


# ---------------------------------------------------------------- user namespaces


def read_sysctl(name: str) -> str | None:
    """The value of sysctl `name`, or None where this kernel has no such knob."""
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return f.read().strip()
    except OSError:
        return None


def apparmor_result(value: str | None, root: bool) -> Result:
    """Ubuntu 23.10+'s AppArmor switch: with 1, unprivileged user namespaces
    fail with EPERM on uid_map.  A warning only: a profile may still allow
    this program, and the real probe below decides."""
    name = "apparmor userns"
    if value is None:
        return Result(OK, name, "no AppArmor user-namespace restriction (sysctl absent)")
    if value.strip() == "0":
        return Result(OK, name, "kernel.apparmor_restrict_unprivileged_userns=0")
    who = "unprivileged users (not root)" if root else "you"
    return Result(WARN, name, f"kernel.apparmor_restrict_unprivileged_userns={value.strip()}: "
                  f"user namespaces of {who} fail with EPERM on uid_map", APPARMOR_FIX)


def userns_fix(for_root: bool = False) -> str:
    """The fix for a failed user namespace, chosen by what blocks it (the
    AppArmor and Debian switches do not restrict root)."""
    if not for_root and (read_sysctl("kernel.apparmor_restrict_unprivileged_userns") or "0") != "0":
        return APPARMOR_FIX
    if not for_root and read_sysctl("kernel.unprivileged_userns_clone") == "0":
        return f"sudo sysctl -w kernel.unprivileged_userns_clone=1, or {ROOT_FIX}"
    if read_sysctl("user.max_user_namespaces") == "0":
        return f"sudo sysctl -w user.max_user_namespaces=15000, or {ROOT_FIX}"
    blocked = ("the kernel (CONFIG_USER_NS) or a seccomp/container profile blocks user namespaces: "
               "run on a host that allows them")
    return blocked if for_root else f"{blocked}, or {ROOT_FIX}"


def check_user_namespaces(machine: Machine) -> Iterator[Result]:
    limit = read_sysctl("user.max_user_namespaces")
    if limit is None or limit == "0":
        yield Result(WARN, "user.max_user_namespaces", f"{limit or 'absent'}: no user namespaces can be made",
                     f"sudo sysctl -w user.max_user_namespaces=15000, or {ROOT_FIX}")
    else:
        yield Result(OK, "user.max_user_namespaces", limit)
    clone = read_sysctl("kernel.unprivileged_userns_clone")
    if clone is not None:  # Debian's own switch
        if clone == "0":
            yield Result(WARN, "unprivileged_userns_clone", "0: only root may make user namespaces",
                         f"sudo sysctl -w kernel.unprivileged_userns_clone=1, or {ROOT_FIX}")
        else:
            yield Result(OK, "unprivileged_userns_clone", clone)
    yield apparmor_result(read_sysctl("kernel.apparmor_restrict_unprivileged_userns"), machine.root)

    own = machine.userns
    if own.ok:
        yield Result(OK, "user namespace", "unshare(CLONE_NEWUSER) and uid_map work")
    else:  # optional as root, required rootless
        yield Result(WARN if machine.root else FAIL, "user namespace", own.detail, userns_fix(machine.root))
    if machine.root:
        nobody = probe(_nobody_userns)
        if nobody.ok:
            yield Result(OK, f"user namespace (uid {NOBODY})", "works: rootless use is open to unprivileged users")
        else:
            yield Result(WARN, f"user namespace (uid {NOBODY})",
                         f"{nobody.detail}: rootless use fails for unprivileged users", userns_fix())


def _enter_userns(uid: int, gid: int) -> str:
    """In a forked child: a new user namespace with `uid` mapped to root."""
    sc.unshare(sc.CLONE_NEWUSER)
    UserNamespace([IdMap(0, uid, 1)], [IdMap(0, gid, 1)]).write_own_maps()
    return ""


def _nobody_userns() -> str:
    """In a forked child of root: become nobody, then try a user namespace.
    Dumpable again after setuid, or /proc/self/uid_map stays root's."""
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    sc.prctl(PR_SET_DUMPABLE, 1)
    return _enter_userns(NOBODY, NOBODY)


# ---------------------------------------------------------------- other namespaces

_NAMESPACES = (
    # name, flag, kernel option, sysctl suffix of user.max_*_namespaces
    ("mount", sc.CLONE_NEWNS, "CONFIG_NAMESPACES", "mnt"),
    ("uts", sc.CLONE_NEWUTS, "CONFIG_UTS_NS", "uts"),
    ("ipc", sc.CLONE_NEWIPC, "CONFIG_IPC_NS", "ipc"),
    ("pid", sc.CLONE_NEWPID, "CONFIG_PID_NS", "pid"),
    ("net", sc.CLONE_NEWNET, "CONFIG_NET_NS", "net"),
    ("cgroup", sc.CLONE_NEWCGROUP, "CONFIG_CGROUPS", "cgroup"),
)


def check_namespaces(machine: Machine) -> Iterator[Result]:
    how = "unshare as root" if machine.root else "unshare in a user namespace"
    for name, flag, option, knob in _NAMESPACES:
        label = f"{name} namespace"
        if _needs_missing_userns(machine):
            yield _not_tried(label)
            continue
        result = probe(partial(_try_namespace, machine, flag))
        if result.ok:
            yield Result(OK, label, how + (f" ({result.detail})" if result.detail else ""))
        else:
            yield Result(FAIL, label, result.detail, _namespace_fix(machine, result.errno, option, knob))


def _needs_missing_userns(machine: Machine) -> bool:
    return not machine.root and not machine.userns.ok


def _not_tried(label: str) -> Result:
    return Result(FAIL, label, "not tried: rootless, it needs a user namespace (see above)", userns_fix())


def _isolate(machine: Machine, flags: int) -> None:
    """Unshare `flags` as the engine would: directly as root, rootless inside
    a new user namespace first."""
    if not machine.root:
        _enter_userns(machine.uid, machine.gid)
    sc.unshare(flags)


def _try_namespace(machine: Machine, flag: int) -> str:
    _isolate(machine, flag)
    if flag == sc.CLONE_NEWNS:
        sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
        return "/ made private"
    if flag == sc.CLONE_NEWUTS:
        sc.sethostname("hermetic-doctor")
        return "hostname set"
    if flag == sc.CLONE_NEWPID:  # applies to children only
        child = os.fork()
        if child == 0:
            os._exit(0 if os.getpid() == 1 else 3)
        _, status = os.waitpid(child, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError("the first child in the new PID namespace is not PID 1")
        return "child is PID 1"
    return ""


def _namespace_fix(machine: Machine, errno_: int | None, option: str, knob: str) -> str:
    if errno_ == 22:  # EINVAL: the kernel does not know the flag
        return f"use a kernel built with {option}"
    if errno_ == 28:  # ENOSPC: the per-user limit
        return f"sudo sysctl -w user.max_{knob}_namespaces=15000"
    if not machine.root:
        return userns_fix()
    return ("this process lacks CAP_SYS_ADMIN (a container or seccomp profile): "
            "run on the host, or in a privileged container")


# ---------------------------------------------------------------- overlayfs


def check_overlay(machine: Machine) -> Iterator[Result]:
    if _needs_missing_userns(machine):
        yield _not_tried("overlayfs")
        return
    listed = _overlay_listed()
    state = paths.state_root()
    try:
        with scratch(state) as base:
            lower, upper, work, merged = (os.path.join(base, d) for d in ("lower", "upper", "work", "merged"))
            for d in (lower, upper, work, merged):
                os.mkdir(d)
            with open(os.path.join(lower, "gone"), "w") as f:
                f.write("lower\n")
            result = probe(partial(_mount_overlay, machine, lower, upper, work, merged))
    except OSError as exc:
        yield _unusable_dir("overlayfs", machine, state, "HERMETIC_STATE", exc)
        return
    fs = fstype(state)
    mode = "as root" if machine.root else "with userxattr in a user namespace"
    if result.ok:
        note = "" if listed else ", module loaded on demand"
        yield Result(OK, "overlayfs", f"mounted {mode} on {fs} ({state}), whiteouts work{note}")
        return
    if result.errno == 19 or not listed:  # ENODEV
        fix = "sudo modprobe overlay (and add `overlay` to /etc/modules-load.d/overlay.conf)"
    elif not machine.root and machine.kernel < (5, 11):
        fix = f"rootless overlayfs needs Linux >= 5.11: upgrade the kernel, or {ROOT_FIX}"
    elif not machine.root and result.errno == 1:
        fix = userns_fix()
    else:
        fix = (f"set HERMETIC_STATE to a directory on {GOOD_FILESYSTEMS} (the state dir is on {fs})"
               + ("" if machine.root else f", or {ROOT_FIX}"))
    yield Result(FAIL, "overlayfs", f"{mode} on {fs} ({state}): {result.detail}", fix)


def _overlay_listed() -> bool:
    with open("/proc/filesystems") as f:
        return any(line.split()[-1:] == ["overlay"] for line in f)


def _mount_overlay(machine: Machine, lower: str, upper: str, work: str, merged: str) -> str:
    """In a forked child, in a private mount namespace: mount an overlay, then
    write a file (copy-up) and delete a lower one (whiteout) through it."""
    _isolate(machine, sc.CLONE_NEWNS)
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    options = rootfs.overlay_options([lower], upper, work, userns=not machine.root)  # the engine's very mount
    sc.mount("overlay", merged, "overlay", sc.MS_NODEV, options)
    with open(os.path.join(merged, "new"), "w") as f:
        f.write("upper\n")
    os.remove(os.path.join(merged, "gone"))
    if not os.path.exists(os.path.join(upper, "new")):
        raise RuntimeError("a file written through the overlay did not reach the upper layer")
    if not _whiteout_at(os.path.join(upper, "gone")):
        raise RuntimeError("deleting a lower file left no whiteout in the upper layer")
    sc.umount2(merged, sc.MNT_DETACH)
    return ""


def _whiteout_at(path: str) -> bool:
    try:
        return layers.is_whiteout(os.lstat(path))
    except FileNotFoundError:
        return False


def check_whiteouts(machine: Machine) -> Iterator[Result]:
    """Layers are unpacked into the store with overlay whiteouts (0/0 char
    devices) and opaque xattrs, in this process, so test exactly that."""
    store = paths.store_root()
    try:
        with scratch(store) as base:
            yield _whiteouts_in(machine, store, base)
    except OSError as exc:
        yield _unusable_dir("store whiteouts", machine, store, "HERMETIC_STORE", exc)


def _whiteouts_in(machine: Machine, store: str, base: str) -> Result:
    fs = fstype(store)
    name, fix = "store whiteouts", f"set HERMETIC_STORE to a directory on {GOOD_FILESYSTEMS}"
    try:
        os.mknod(os.path.join(base, "wh"), stat.S_IFCHR, os.makedev(0, 0))
    except OSError as exc:
        old = " (unprivileged whiteouts need Linux >= 5.8)" if not machine.root and machine.kernel < (5, 8) else ""
        return Result(FAIL, name, f"mknod 0/0 on {fs} ({store}): {describe(exc)}{old}",
                      fix + ("" if machine.root else f", or {ROOT_FIX}"))
    prefix = "trusted.overlay." if machine.root else "user.overlay."
    try:
        os.setxattr(base, prefix + "opaque", b"y")
    except OSError as exc:
        return Result(FAIL, name, f"{prefix}opaque xattr on {fs} ({store}): {describe(exc)}",
                      fix + " (with xattrs enabled)")
    return Result(OK, name, f"0/0 devices and {prefix}* xattrs work on {fs} ({store})")


def check_layer_images(machine: Machine) -> Iterator[Result]:
    """Whether a root store keeps layers as EROFS images (pulls 1.4-2.8x faster on many-file
    layers: docs/images.md): a tiny image mounted from a file on the store's filesystem; where
    the store mounts them, and how many are mounted."""
    from .images.layers.erofs import ImageBuilder
    from .images.store import Store, default_layer_format, mount_folders
    from .runtime.rootfs.images import can_mount_images, mounts_below

    name = "EROFS layer images"
    wanted = os.environ.get("HERMETIC_LAYER_FORMAT") or default_layer_format()
    if not machine.root:
        yield Result(OK, name, "not for rootless stores (EROFS is not mountable in a user namespace): layers unpacked")
        return
    store = paths.store_root()
    try:
        with scratch(store) as base:
            with open(os.path.join(base, "probe.erofs"), "xb") as out:
                ImageBuilder(out).finish()
            os.mkdir(os.path.join(base, "mnt"))
            works = can_mount_images(os.path.join(base, "probe.erofs"), os.path.join(base, "mnt"))
    except OSError as exc:
        yield _unusable_dir(name, machine, store, "HERMETIC_STORE", exc)
        return
    fs = fstype(store)
    if works:
        folder = Store(store).layer_mounts()
        gone = sum(1 for other in mount_folders().values() if not os.path.isdir(other))
        how = ("layers unpacked (HERMETIC_LAYER_FORMAT=dir)" if wanted == "dir"
               else f"layers of 512 KiB and more are kept as images, each mounted once on {folder} "
                    f"({len(mounts_below(folder))} mounted now)")
        if gone:
            yield Result(WARN, name, f"mounted from a file on {fs} ({store}); {how}; {gone} removed store(s) "
                                     "still have layers mounted", "hermetic gc")
            return
        yield Result(OK, name, f"mounted from a file on {fs} ({store}); {how}")
        return
    found = (f"this kernel does not mount EROFS images from a file on {fs} ({store}) "
             f"(Linux {'.'.join(map(str, machine.kernel))}; needs 6.12+ with EROFS)")
    fix = "upgrade to Linux 6.12+ for faster pulls; unpacked layers work meanwhile"
    if wanted == "erofs":
        yield Result(FAIL, name, found + " but HERMETIC_LAYER_FORMAT=erofs asks for images", "unset HERMETIC_LAYER_FORMAT, or " + fix)
    else:
        yield Result(OK, name, found + ": layers unpacked")


# ---------------------------------------------------------------- cgroups

_CGROUP_LIMITS = (("memory", "--mem"), ("cpu", "--cpus"), ("pids", "--pids"))


def check_cgroups(machine: Machine) -> Iterator[Result]:
    h = cgroups.detect()
    if h.version == "none":
        yield Result(WARN, "cgroup hierarchy", "no cgroup filesystem mounted: --mem, --cpus and --pids unavailable",
                     "sudo mount -t cgroup2 none /sys/fs/cgroup")
        return
    if h.version == "v2":
        found = f"v2 at {h.unified}; this process is in {h.own.get('', '?')}"
    else:
        where = ", ".join(f"{c} {h.own.get(c, '?')}" for c, _ in _CGROUP_LIMITS)
        kind = "v1" if h.version == "v1" else f"hybrid (limits via v1; v2 at {h.unified} not used)"
        found = f"{kind}; this process is in {where}"
    yield Result(OK, "cgroup hierarchy", found)
    for controller, option in _CGROUP_LIMITS:
        yield _check_controller(machine, h, controller, option)


def _check_controller(machine: Machine, h: cgroups.Hierarchy, controller: str, option: str) -> Result:
    """Missing limits are a warning: containers still run, only unlimited."""
    name, lost = f"cgroup {controller}", f"{option} unavailable"
    if h.version == "v2":
        assert h.unified is not None
        parent = h.unified + cgroups.parent_path(h, "").rstrip("/")
        delegated = cgroups.read_words(f"{parent}/cgroup.subtree_control")
        if controller not in delegated:
            have = "; not even in its cgroup.controllers" if controller not in cgroups.read_words(f"{parent}/cgroup.controllers") else ""
            return Result(WARN, name, f"{parent} does not delegate it (cgroup.subtree_control: "
                          f"{' '.join(sorted(delegated)) or 'empty'}{have}): {lost}",
                          _v2_fix(machine, h.unified, controller))
        error = _try_child_cgroup(parent)
        if error:
            return Result(WARN, name, f"cannot mkdir under {parent} ({error}): {lost}",
                          _v2_fix(machine, h.unified, controller))
    else:
        mount_point = h.v1.get(controller)
        if mount_point is None:
            return Result(WARN, name, f"v1 controller not mounted: {lost}",
                          f"sudo mkdir -p /sys/fs/cgroup/{controller} && "
                          f"sudo mount -t cgroup -o {controller} cgroup /sys/fs/cgroup/{controller}")
        parent = mount_point + cgroups.parent_path(h, controller).rstrip("/")
        error = _try_child_cgroup(parent)
        if error:
            return Result(WARN, name, f"cannot mkdir under {parent} ({error}): {lost}",
                          _v1_fix(machine, h))
    return Result(OK, name, f"can create cgroups under {parent}")


def _try_child_cgroup(parent: str) -> str:
    """mkdir + rmdir of a uniquely named child: the only write the doctor does
    to cgroups.  Returns the error text, or '' when it worked."""
    path = f"{parent}/hermetic-doctor-{os.getpid()}"
    try:
        os.mkdir(path)
    except OSError as exc:
        return exc.strerror or describe(exc)
    cgroups.rmdir_retry(path)
    return ""


_READ_ONLY_FIX = ("the cgroup filesystem is read-only here (in a container?): mount it read-write "
                  "(e.g. docker run --privileged), or set HERMETIC_CGROUP_PARENT to a writable cgroup")


def _v2_fix(machine: Machine, unified: str, controller: str) -> str:
    """v2 needs the parent cgroup to enable the controller for its children,
    and a cgroup with processes in it cannot do so."""
    if machine.root:
        leaf = f"{unified}/hermetic"
        return (f"sudo mkdir -p {leaf} && echo +{controller} | sudo tee {leaf}/cgroup.subtree_control, "
                f"then export HERMETIC_CGROUP_PARENT=/hermetic (a cgroup with no processes of its own); "
                "if the mkdir fails: " + _READ_ONLY_FIX)
    return ("run from a delegated cgroup: `systemd-run --user --scope -p Delegate=yes hermetic ...`, "
            f"or set HERMETIC_CGROUP_PARENT to a delegated cgroup with no processes of its own, or {ROOT_FIX}")


def _v1_fix(machine: Machine, h: cgroups.Hierarchy) -> str:
    """v1 has no delegation: root must hand the user a cgroup directory, at
    the same path in every v1 hierarchy the engine uses."""
    if machine.root:
        return _READ_ONLY_FIX
    user = machine.user
    mounts = " ".join(sorted(set(h.v1.values())))
    return (f"for d in {mounts}; do sudo mkdir -p $d/{user} && sudo chown -R {user} $d/{user}; done; "
            f"export HERMETIC_CGROUP_PARENT=/{user}; or {ROOT_FIX}")


# ---------------------------------------------------------------- rootless extras


def check_rootless_extras(machine: Machine) -> Iterator[Result]:
    sub_uid = subordinate_range("/etc/subuid", machine.user, machine.uid)
    sub_gid = subordinate_range("/etc/subgid", machine.user, machine.uid)
    if sub_uid and sub_gid:
        yield Result(OK, "subordinate ids", f"/etc/subuid {sub_uid[0]}+{sub_uid[1]}, /etc/subgid {sub_gid[0]}+{sub_gid[1]}")
    else:
        missing = " and ".join(p for p, r in (("/etc/subuid", sub_uid), ("/etc/subgid", sub_gid)) if not r)
        start = max(_first_free_id("/etc/subuid"), _first_free_id("/etc/subgid"))
        ids = f"{start}-{start + 65535}"
        yield Result(WARN, "subordinate ids", f"no entry for {machine.user} in {missing}: only your own uid is mapped, "
                     "so images with files of other owners fail (EOVERFLOW)",
                     f"sudo usermod --add-subuids {ids} --add-subgids {ids} {machine.user}")
    helpers = {tool: shutil.which(tool) for tool in ("newuidmap", "newgidmap")}
    missing_tools = [tool for tool, found in helpers.items() if not found]
    if missing_tools:
        yield Result(WARN, "newuidmap/newgidmap", f"{' and '.join(missing_tools)} not found: subordinate ids unusable",
                     "sudo apt-get install uidmap (Fedora: sudo dnf install shadow-utils)")
    else:
        weak = [p for p in helpers.values() if p and not _privileged_helper(p)]
        if weak:
            yield Result(WARN, "newuidmap/newgidmap", f"{' and '.join(weak)} neither setuid root nor with file capabilities",
                         "sudo apt-get install --reinstall uidmap")
        else:
            yield Result(OK, "newuidmap/newgidmap", " and ".join(p for p in helpers.values() if p))
    yield _runtime_dir_result()


def check_networks(machine: Machine) -> Iterator[Result]:
    """What `net=True` and named networks stand on (docs/networks.md)."""
    import importlib.util

    if machine.root:
        if importlib.util.find_spec("pyroute2") is None:
            yield Result(FAIL, "pyroute2", "not installed: net=True and named networks cannot make veth pairs",
                         "pip install pyroute2 (or apt-get install python3-pyroute2)")
        else:
            yield Result(OK, "pyroute2", "installed (netlink for bridges and veth pairs)")
        from .runtime import nat

        tool = nat.backend()
        if tool is None:
            yield Result(WARN, "NAT", "neither nft nor iptables found: net=True containers reach the host, not the outside",
                         "apt-get install nftables")
        else:
            yield Result(OK, "NAT", f"through {tool}")
        if nat.forwarding_enabled():
            yield Result(OK, "ip_forward", "net.ipv4.ip_forward=1: net=True containers reach the outside")
        else:
            yield Result(WARN, "ip_forward", "net.ipv4.ip_forward=0: net=True containers reach the host and each other, "
                         "not the outside (the engine never flips this host-wide switch)",
                         "sysctl -w net.ipv4.ip_forward=1 (and net.ipv4.ip_forward=1 in /etc/sysctl.d/ to keep it)")
    else:
        from .runtime import usermode_net

        if usermode_net.helper_path():
            yield Result(OK, "slirp4netns", f"{usermode_net.helper_path()} (net=True without root)")
            yield _tun_result()
        else:
            yield Result(WARN, "slirp4netns", "not found: rootless containers get loopback only (net=False)",
                         "sudo apt-get install slirp4netns")


TUN = "/dev/net/tun"


def _tun_result() -> Result:
    """slirp4netns opens the TUN device as the user (from inside the
    container's user namespace, where only its mode's "other" bits count)."""
    if os.access(TUN, os.R_OK | os.W_OK):
        return Result(OK, TUN, "readable and writable (slirp4netns's device)")
    if not os.path.exists(TUN):
        return Result(WARN, TUN, "missing: net=True without root fails", "sudo modprobe tun")
    mode = stat.S_IMODE(os.stat(TUN).st_mode)
    return Result(WARN, TUN, f"mode {mode:o}: slirp4netns cannot open it, so net=True without root fails",
                  f"sudo chmod 0666 {TUN} (the mode udev gives it on most distributions)")


def _first_free_id(path: str) -> int:
    """Where a new 65536-id range starts without overlapping the users' ranges."""
    end = 100000
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                    end = max(end, int(parts[1]) + int(parts[2]))
    except OSError:
        pass
    return end


def _privileged_helper(path: str) -> bool:
    st = os.stat(path)
    if st.st_mode & stat.S_ISUID and st.st_uid == 0:
        return True
    try:
        return bool(os.getxattr(path, "security.capability"))
    except OSError:
        return False


def _runtime_dir_result() -> Result:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK):
        return Result(OK, "XDG_RUNTIME_DIR", runtime)
    if os.environ.get("HERMETIC_STATE"):
        return Result(OK, "XDG_RUNTIME_DIR", f"{'unusable' if runtime else 'unset'}; not needed: HERMETIC_STATE is set")
    why = f"{runtime} is not a writable directory" if runtime else "unset"
    return Result(WARN, "XDG_RUNTIME_DIR", f"{why}: runtime state goes to {paths.state_root()}",
                  "log in through a systemd-logind session (it makes /run/user/$UID), "
                  "or export HERMETIC_STATE=a private directory")


# ---------------------------------------------------------------- directories


def check_directories(machine: Machine) -> Iterator[Result]:
    for name, root, variable in (("store dir", paths.store_root(), "HERMETIC_STORE"),
                                 ("state dir", paths.state_root(), "HERMETIC_STATE")):
        try:
            with scratch(root) as base, open(os.path.join(base, "probe"), "w") as f:
                f.write("ok\n")
        except OSError as exc:
            yield _unusable_dir(name, machine, root, variable, exc)
        else:
            yield Result(OK, name, f"{root} ({fstype(root)}) writable")


def _unusable_dir(name: str, machine: Machine, root: str, variable: str, exc: OSError) -> Result:
    grant = f"sudo chown -R {machine.user} {root}" if os.path.exists(root) else f"sudo install -d -o {machine.user} {root}"
    return Result(FAIL, name, f"cannot write in {root}: {describe(exc)}",
                  f"export {variable}=a directory you can write, or {grant}")


# ---------------------------------------------------------------- helpers


def probe(fn: Callable[[], str], timeout: float = PROBE_TIMEOUT) -> Probe:
    """Run `fn` in a forked child and return what it reported.  Namespaces
    and mounts it changes die with the child, never touching the caller."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report through the pipe, then _exit, whatever happens
        try:
            os.close(read_fd)
            try:
                payload = {"ok": True, "detail": fn() or ""}
            except BaseException as exc:  # noqa: BLE001
                payload = {"ok": False, "detail": describe(exc)[:2000], "errno": errno_of(exc)}
            os.write(write_fd, json.dumps(payload).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    try:
        data = _read_until_eof(read_fd, timeout)
    finally:
        os.close(read_fd)
    if data is None:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if data is None:
        return Probe(False, f"no answer within {timeout:g}s")
    if not data:
        return Probe(False, f"the probe process died ({_exit_text(status)})")
    payload = json.loads(data)
    return Probe(bool(payload["ok"]), str(payload["detail"]), payload.get("errno"))


def _read_until_eof(fd: int, timeout: float) -> bytes | None:
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _exit_text(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    return f"killed by signal {-code}" if code < 0 else f"exit status {code}"


@contextmanager
def scratch(root: str) -> Iterator[str]:
    """A temporary directory inside `root` (made if missing, and kept: the
    engine needs it anyway), removed with everything in it afterwards."""
    os.makedirs(root, exist_ok=True)
    path = tempfile.mkdtemp(prefix=f".doctor-{os.getpid()}-", dir=root)
    try:
        yield path
    finally:
        # overlayfs leaves work/work with mode 000: open it up so a rootless
        # caller can remove it.
        for top, dirs, _files in os.walk(path):
            for d in dirs:
                if not os.path.islink(os.path.join(top, d)):
                    os.chmod(os.path.join(top, d), 0o700)
        shutil.rmtree(path)


def fstype(path: str) -> str:
    """The type of the filesystem holding `path` (or its nearest existing parent)."""
    path = os.path.realpath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    best, kind = "", "?"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            point = cgroups.unescape_mount_point(left.split()[4])
            inside = path == point or path.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, kind = point, right.split()[0]
    return kind


def errno_of(exc: BaseException) -> int | None:
    """The errno of an error.  SyscallError's `errno` attribute is lost to
    OSError.__init__, so fall back to the number its message carries."""
    number = getattr(exc, "errno", None)
    if isinstance(number, int):
        return number
    match = re.search(r"\(errno (\d+)\)", str(exc)) if isinstance(exc, HermeticError) else None
    return int(match.group(1)) if match else None


def describe(exc: BaseException) -> str:
    """An error as one line: the engine's own text, or errno and file."""
    if isinstance(exc, HermeticError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror} (errno {exc.errno})"
        return f"{text}: {exc.filename}" if exc.filename else text
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
