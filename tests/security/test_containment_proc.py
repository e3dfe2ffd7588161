"""The masked /proc paths stay masked: a nested user, mount and PID
namespace cannot mount a fresh /proc (nor sysfs) where they would show
again.  The kernel refuses such a mount when every proc mount already in
the namespace has a locked mount over something that is not an empty
directory ("too revealing", fs/namespace.c mnt_already_visible); the masks
are those mounts, and a nested namespace's copy of them is locked.  The
attack runs with the seccomp filter off, as root and rootless.

That refusal is the kernel's, and not every kernel makes it: Debian 12's
6.1 lets a nested user namespace mount a fresh /proc over a locked bind on
/proc/keys (seen in scripts/cgroup-v2-vm; 6.18 refuses).  There, without
seccomp, the masks do not hold (as with Docker and no AppArmor); the
default profile refuses every way to make a user namespace, so the attack
cannot start (the last test, on every kernel; tests/security/test_seccomp.py
checks each call).  `_kernel_refuses` tries the kernel itself, outside any
container, so the seccomp-off tests run wherever the kernel can pass them."""

from __future__ import annotations

import functools
import os
import subprocess

import pytest

from attack import run
from conftest import run_cli

MASKED = ("/proc/keys", "/proc/timer_list", "/proc/sched_debug")
ATTACK = ("for f in " + " ".join(MASKED) + "; do test -e $f && echo masked $f $(wc -c < $f); done; "
          # unshare(1): new user (root inside), mount and PID namespaces, then a fresh /proc.
          "unshare -Urpf --mount-proc sh -c 'echo MOUNTED-PROC; wc -c < /proc/keys' 2>/dev/null || echo refused-proc; "
          "unshare -Urmpf sh -c 'mkdir -p /tmp/p && mount -t proc proc /tmp/p && echo MOUNTED-PROC-ELSEWHERE' "
          "2>/dev/null || echo refused-elsewhere; "
          "unshare -Urmnf sh -c 'mkdir -p /tmp/s && mount -t sysfs sysfs /tmp/s && echo MOUNTED-SYSFS' "
          "2>/dev/null || echo refused-sysfs; "
          # The nested namespace itself works: the refusal is the mount's, not unshare's.
          "unshare -Urmpf sh -c 'mount -t tmpfs tmpfs /tmp && echo nested-ok'")


def _assert_masked(ran) -> None:  # noqa: ANN001
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert [line for line in lines if line.startswith("masked")], ran.stdout
    assert all(line.endswith(" 0") for line in lines if line.startswith("masked")), ran.stdout
    assert "nested-ok" in lines, ran.stdout
    assert "MOUNTED" not in ran.stdout, ran.stdout
    assert {"refused-proc", "refused-elsewhere", "refused-sysfs"} <= set(lines), ran.stdout


# Outside any container, in a private mount namespace of its own: a root of
# its own (an overlay of /, proc with /proc/keys covered, pivoted into, the
# old root detached), then a nested user namespace mounts a fresh proc.
_PROBE = ("mount -t tmpfs tmpfs /tmp && mkdir /tmp/root /tmp/upper /tmp/work && "
          "mount -t overlay overlay -o lowerdir=/,upperdir=/tmp/upper,workdir=/tmp/work /tmp/root && "
          "mount -t proc proc /tmp/root/proc && mount --bind /dev/null /tmp/root/proc/keys && "
          "mount -t tmpfs tmpfs /tmp/root/tmp && cd /tmp/root && pivot_root . . && umount -l . && cd / && "
          "unshare -Urmpf sh -c 'mkdir /tmp/p && mount -t proc proc /tmp/p 2>/dev/null && echo MOUNTED || echo refused'")


@functools.lru_cache(maxsize=None)
def _kernel_refuses() -> bool:
    ran = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", _PROBE],
                         capture_output=True, text=True, timeout=60)
    lines = ran.stdout.split()
    assert ran.returncode == 0 and lines in (["MOUNTED"], ["refused"]), (ran.returncode, ran.stdout, ran.stderr)
    return lines == ["refused"]


def _needs_the_kernels_refusal() -> None:
    if os.geteuid() != 0:
        pytest.skip("the kernel probe mounts as root")
    if not _kernel_refuses():
        pytest.skip(f"this kernel ({os.uname().release}) lets a nested user namespace mount a fresh /proc over a "
                    "locked mask: without seccomp nothing else stops it (the default profile does: last test)")


def test_a_nested_namespace_cannot_unmask_proc_rootless(test_user):
    _needs_the_kernels_refusal()
    _assert_masked(run("host", "sh", "-c", ATTACK, user=test_user))


def test_a_nested_namespace_cannot_unmask_proc_as_root():
    _needs_the_kernels_refusal()
    _assert_masked(run("host", "sh", "-c", ATTACK))


@pytest.mark.parametrize("as_user", [False, True], ids=["root", "rootless"])
def test_the_default_profile_makes_no_nested_namespace_to_unmask_proc_in(as_user, test_user):
    """On every kernel: with the default profile the attack cannot begin."""
    ran = run_cli("run", "host", "sh", "-c", ATTACK, user=test_user if as_user else None)
    assert ran.returncode != 0 or "nested-ok" not in ran.stdout, ran.stdout  # the nested namespace itself is refused
    assert "MOUNTED" not in ran.stdout, ran.stdout
    assert {"refused-proc", "refused-elsewhere", "refused-sysfs"} <= set(ran.stdout.splitlines()), ran.stdout
    assert all(line.endswith(" 0") for line in ran.stdout.splitlines() if line.startswith("masked")), ran.stdout
