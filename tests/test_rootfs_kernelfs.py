"""/dev and the masks over /proc and /sys, as the child now makes them (by
relative paths from inside the new root, each mask tried as its usual kind
without a stat first): the same nodes and the same masks as before, checked
from inside real containers, and the masks' fallback for a path of the other
kind, checked with real mounts in a private mount namespace."""

import errno
import os
import stat

import pytest

from conftest import run_cli
from pytest_hermetic.runtime import syscalls as sc
from pytest_hermetic.runtime.rootfs import kernelfs


def sh(script: str, *options: str, image: str = "host"):
    ran = run_cli("run", *options, image, "sh", "-c", script)
    assert ran.returncode == 0, ran.stderr
    return ran.stdout


def test_dev_holds_the_hosts_six_nodes_and_nothing_else_that_opens():
    listing = sh("for f in /dev/* /dev/.[!.]*; do [ -e \"$f\" ] || [ -L \"$f\" ] || continue; "
                 "stat -c '%n %F %a %u %g %t:%T' \"$f\"; done")
    inside = {line.split()[0]: line.split(" ", 1)[1] for line in listing.splitlines()}
    nodes = {name: info for name, info in inside.items() if "character special" in info or "block special" in info}
    assert sorted(nodes) == sorted(f"/dev/{name}" for name in kernelfs.HOST_DEVICES), inside
    for name in kernelfs.HOST_DEVICES:
        host = os.stat(f"/dev/{name}")
        kind, mode, uid, gid, dev = nodes[f"/dev/{name}"].rsplit(" ", 4)
        assert kind == "character special file"
        assert (int(mode, 8), int(uid), int(gid)) == (stat.S_IMODE(host.st_mode), host.st_uid, host.st_gid), name
        assert dev == f"{os.major(host.st_rdev):x}:{os.minor(host.st_rdev):x}", name
    for link, target in (("/dev/ptmx", "pts/ptmx"), ("/dev/fd", "/proc/self/fd"), ("/dev/stdin", "/proc/self/fd/0"),
                         ("/dev/stdout", "/proc/self/fd/1"), ("/dev/stderr", "/proc/self/fd/2"), ("/dev/core", "/proc/kcore")):
        assert "symbolic link" in inside[link], link
        assert sh(f"readlink {link}").strip() == target
    assert {"/dev/pts", "/dev/shm", "/dev/mqueue"} <= set(inside)


def test_dev_nodes_behave_and_a_new_node_opens_nothing():
    out = sh("echo x > /dev/full 2>/dev/null && echo full-written || echo full-refused; "
             "head -c 8 /dev/random | wc -c; head -c 8 /dev/urandom | wc -c; head -c 8 /dev/zero | wc -c; "
             "echo gone > /dev/null && echo null-ok; "
             "mknod /dev/mem-again c 1 1 && (head -c1 /dev/mem-again >/dev/null 2>&1 && echo mem-read || echo mem-refused); "
             "mknod /dev/disk b 8 0 && (head -c1 /dev/disk >/dev/null 2>&1 && echo disk-read || echo disk-refused); "
             "grep ' /dev ' /proc/self/mountinfo | grep -o nodev")
    assert out.split() == ["full-refused", "8", "8", "8", "null-ok", "mem-refused", "disk-refused", "nodev"], out


def _host_has(path: str) -> bool:
    return os.path.lexists(path)


def test_every_mask_and_read_only_path_of_this_kernel_is_covered():
    masked = [p for p in kernelfs.MASKED_PATHS if _host_has(p)]
    read_only = [p for p in kernelfs.READONLY_PATHS if _host_has(p)]
    assert masked and read_only
    script = "; ".join(f"echo {p} $(stat -c '%F %t:%T' {p}) $(ls -A {p} 2>/dev/null | wc -l)" for p in masked)
    script += "; cat /proc/self/mountinfo"
    out = sh(script)
    lines = out.splitlines()
    mounts = {line.split()[4]: line for line in lines[len(masked):]}
    for line in lines[:len(masked)]:
        path, rest = line.split(" ", 1)
        assert path in mounts, f"{path} not masked:\n{out}"
        if os.path.isdir(path):
            options = mounts[path].split()[5]
            assert " - tmpfs " in mounts[path] and options.startswith("ro,"), mounts[path]
            assert rest.endswith(" 0"), line  # empty
        else:
            assert rest.startswith("character special file 1:3"), line  # the host's /dev/null
    for path in read_only:
        assert path in mounts, f"{path} not read-only:\n{out}"
        assert mounts[path].split()[5].startswith("ro,"), mounts[path]


def _in_private_namespace(build) -> str:
    """Run `build(folder)` in a forked child, in a mount namespace of its own
    with a fresh tmpfs on a scratch folder; what it returns (or its error) comes back."""
    scratch = f"/var/tmp/hermetic-masks-{os.getpid()}"
    os.mkdir(scratch)
    read, write = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(read)
                sc.unshare(sc.CLONE_NEWNS)
                sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
                sc.mount("tmpfs", scratch, "tmpfs", sc.MS_NODEV | sc.MS_NOSUID, "mode=755")
                os.write(write, build(scratch).encode())
                code = 0
            except BaseException as exc:  # noqa: BLE001 - said to the parent
                os.write(write, f"error: {exc!r}".encode())
            finally:
                os._exit(code)
        os.close(write)
        with os.fdopen(read, "rb") as f:
            said = f.read().decode()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, said
        return said
    finally:
        os.rmdir(scratch)


def test_a_mask_of_the_other_kind_falls_back_to_what_the_path_is():
    """A masked path that is a file where a folder is usual (and the other
    way round) still gets masked, as what it is; missing ones are skipped."""

    def build(root: str) -> str:
        for folder in ("proc", "proc/bus", "proc/interrupts", "sys", "sys/firmware"):
            os.mkdir(f"{root}/{folder}")
        for name in ("proc/acpi", "proc/keys"):
            with open(f"{root}/{name}", "w") as f:
                f.write("secret\n")
        os.chdir(root)
        kernelfs.mask_paths()
        os.chdir("/")
        with open("/proc/self/mountinfo") as f:
            found = {line.split()[4][len(root) + 1:]: line.split(" - ")[1].split()[0] for line in f
                     if line.split()[4].startswith(root + "/")}
        checks = [f"{path}={kind}" for path, kind in sorted(found.items())]
        checks.append(f"acpi-read={open(f'{root}/proc/acpi').read()!r}")
        checks.append(f"interrupts-ro={not os.access(f'{root}/proc/interrupts', os.W_OK)}")
        try:
            open(f"{root}/proc/bus/x", "w").close()
            checks.append("bus-written")
        except OSError as exc:
            checks.append(f"bus-{exc.errno}")
        return " ".join(checks)

    said = _in_private_namespace(build).split()
    assert said == ["proc/acpi=devtmpfs", "proc/bus=tmpfs", "proc/interrupts=tmpfs", "proc/keys=devtmpfs",
                    "sys/firmware=tmpfs", "acpi-read=''", "interrupts-ro=True", f"bus-{errno.EROFS}"], said


@pytest.mark.parametrize("path", [b"/no-such-folder-of-hermetic/x", "/no-such-folder-of-hermetic/y"])
def test_a_failed_mount_says_which_and_why(path):
    """mount() with prepared bytes or with str: a failure names the call, the
    errno and the target as text."""
    with pytest.raises(OSError) as caught:
        sc.mount(b"tmpfs" if isinstance(path, bytes) else "tmpfs", path, "tmpfs", 0, b"size=0")
    text = str(caught.value)
    assert text.startswith("mount: No such file or directory (errno 2): tmpfs tmpfs on "), text
    assert os.fsdecode(path) in text and "(size=0)" in text and "b'" not in text, text


def test_own_nodes_give_way_to_the_hosts_where_mknod_is_refused(tmp_path):
    """Root in a user namespace (an engine run by a rootless container
    manager) may not mknod: own_nodes says so (None) and /dev binds the
    host's nodes, which are not that root's to change, instead of failing."""
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, sys.argv[1]); from pytest_hermetic.runtime.rootfs import kernelfs; "
            "print(kernelfs.own_nodes(sys.argv[2].encode()))")
    ran = subprocess.run(["unshare", "-Urm", "--propagation", "private", sys.executable, "-c", code,
                          os.path.dirname(os.path.dirname(os.path.abspath(__file__))), str(tmp_path / "nodes")],
                         capture_output=True, text=True, timeout=60)
    assert (ran.returncode, ran.stdout.strip()) == (0, "None"), ran.stderr
