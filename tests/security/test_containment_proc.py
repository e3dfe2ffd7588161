"""The masked /proc paths stay masked: a nested user, mount and PID
namespace cannot mount a fresh /proc (nor sysfs) where they would show
again.  The kernel refuses such a mount when every proc mount already in
the namespace has a locked mount over something that is not an empty
directory ("too revealing", fs/namespace.c mnt_already_visible); the masks
are those mounts, and a nested namespace's copy of them is locked.  The
attack runs with the seccomp filter off, as root and rootless."""

from __future__ import annotations

from attack import run

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


def test_a_nested_namespace_cannot_unmask_proc_rootless(test_user):
    _assert_masked(run("host", "sh", "-c", ATTACK, user=test_user))


def test_a_nested_namespace_cannot_unmask_proc_as_root():
    _assert_masked(run("host", "sh", "-c", ATTACK))
