"""No device but the engine's own few: a node made with mknod (CAP_MKNOD is
in Docker's default set) opens nothing, wherever the container can write.
The attack: mknod a block device (loop0, b 7 0) and the kernel log (kmsg,
c 1 11) in /dev, /tmp, /dev/shm, / and a volume, then open each read-only
(nothing is read or written)."""

from __future__ import annotations

import os

from attack import run, user_dir

PLACES = ("/dev", "/tmp", "/dev/shm", "/", "/vol")
HOST_NODES = ("null", "zero", "full", "random", "urandom", "tty")
ATTACK = "; ".join(
    f"n={place.rstrip('/')}/x{number}; "
    f"if mknod $n {kind} 2>/dev/null; then echo MADE $n; if true < $n 2>/dev/null; then echo OPENED $n; "
    f"else echo REFUSED $n; fi; rm -f $n; else echo NO-MKNOD $n; fi"
    for place in PLACES for number, kind in enumerate(("b 7 0", "c 1 11")))
# The nodes the engine binds from the host keep working.
USABLE = ("head -c 4 /dev/zero | wc -c; head -c 4 /dev/urandom | wc -c; head -c 4 /dev/random | wc -c; "
          "echo x > /dev/null && echo null-ok; echo x > /dev/full 2>/dev/null || echo full-ok")


def _check(stdout: str, made_expected: bool) -> None:
    lines = stdout.splitlines()
    assert not [line for line in lines if line.startswith("OPENED")], stdout
    made = [line for line in lines if line.startswith("MADE")]
    if made_expected:  # root: mknod works, so the refusal is the mount's nodev, not a missing capability
        assert len(made) == 2 * len(PLACES), stdout
        assert len([line for line in lines if line.startswith("REFUSED")]) == len(made)
    else:
        assert len([line for line in lines if line.startswith(("REFUSED", "NO-MKNOD"))]) == 2 * len(PLACES), stdout


def _writable_mounts_without_nodev(mountinfo: str) -> list[str]:
    """Writable mounts of the container that would open a device node (the
    bound host nodes aside, mounts of one node each; devpts holds only its
    own terminals: it has no mknod)."""
    bad = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 10:
            continue  # the attack's own output
        options = fields[5].split(",")
        fstype = fields[fields.index("-") + 1]
        host_node = fields[3] in {f"/{name}" for name in HOST_NODES}  # one file: /dev/null, or a mask made of it
        if "rw" in options and "nodev" not in options and fstype != "devpts" and not host_node:
            bad.append(line)
    return bad


def test_mknod_opens_nothing_anywhere_as_root(busybox_image, tmp_path):
    volume = tmp_path / "vol"
    volume.mkdir(mode=0o700)
    ran = run("-v", f"{volume}:/vol", busybox_image, "sh", "-c", f"{ATTACK}; {USABLE}; cat /proc/self/mountinfo")
    assert ran.returncode == 0, ran.stderr
    _check(ran.stdout, made_expected=True)
    assert ran.stdout.split("\n")[2 * 2 * len(PLACES):][:5] == ["4", "4", "4", "null-ok", "full-ok"], ran.stdout
    assert _writable_mounts_without_nodev(ran.stdout) == []
    assert os.listdir(volume) == []


def test_mknod_opens_nothing_in_the_host_image(tmp_path):
    volume = tmp_path / "vol"
    volume.mkdir(mode=0o700)
    ran = run("-v", f"{volume}:/vol", "host", "sh", "-c", f"{ATTACK}; cat /proc/self/mountinfo")
    assert ran.returncode == 0, ran.stderr
    _check(ran.stdout, made_expected=True)
    assert _writable_mounts_without_nodev(ran.stdout) == []


def test_mknod_opens_nothing_rootless(test_user):
    volume = user_dir(test_user, "device-volume")
    ran = run("-v", f"{volume}:/vol", "host", "sh", "-c", f"{ATTACK}; {USABLE}; cat /proc/self/mountinfo",
              user=test_user)
    assert ran.returncode == 0, ran.stderr
    _check(ran.stdout, made_expected=False)
    assert "4\n4\n4\nnull-ok\nfull-ok" in ran.stdout
    assert _writable_mounts_without_nodev(ran.stdout) == []


PLUGIN_SUITE = """
import os, stat
from pytest_hermetic import hermetic

@hermetic(OPTIONS)
def test_mknod_opens_nothing(tmp_path):
    for place in ("/dev", "/tmp", "/", "/dev/shm", str(tmp_path)):
        for number, (kind, rdev) in enumerate(((stat.S_IFBLK, os.makedev(7, 0)), (stat.S_IFCHR, os.makedev(1, 11)))):
            node = os.path.join(place, f"hermetic-mknod-{os.urandom(6).hex()}")  # (/tmp shows the host's files)
            os.mknod(node, 0o600 | kind, rdev)  # made: root keeps CAP_MKNOD
            try:
                os.close(os.open(node, os.O_RDONLY))
                raise AssertionError(f"opened {node}")
            except PermissionError:
                pass
            finally:
                os.unlink(node)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if "rw" in fields[5].split(",") and fstype != "devpts" and fields[3] not in NODES:
                assert "nodev" in fields[5].split(","), line
"""


def test_mknod_opens_nothing_in_a_hermetic_test():
    from attack import inner_session, marker_options

    nodes = {f"/{name}" for name in HOST_NODES}
    ran = inner_session(None, "devices-plugin", f"NODES = {nodes!r}\n" +
                        PLUGIN_SUITE.replace("OPTIONS", marker_options()))
    assert "1 passed" in ran.stdout, ran.stdout + ran.stderr


def test_a_folder_of_host_devices_as_a_volume_opens_nothing_unless_privileged():
    probe = "head -c 1 /hostdev/zero | wc -c; head -c 1 /single-zero | wc -c"
    plain = run("-v", "/dev:/hostdev", "-v", "/dev/zero:/single-zero", "host", "sh", "-c", probe)
    assert plain.stdout.split() == ["0", "1"], plain.stdout + plain.stderr  # the single node: an explicit grant
    privileged = run("--privileged", "-v", "/dev:/hostdev", "-v", "/dev/zero:/single-zero", "host", "sh", "-c", probe)
    assert privileged.stdout.split() == ["1", "1"], privileged.stdout + privileged.stderr


# The container's root has CAP_FOWNER and CAP_CHOWN: through a bind of the
# host's node it would change the host's /dev/null for every user of the
# machine (chmod 000: a denial of service).  The attack here changes nothing
# even where it would reach the host (the same mode, the same owner), and
# the host's inode's change time tells whether it reached it.
NODE_ATTACK = ("for f in /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty /proc/keys /proc/kcore "
               "/proc/timer_list; do test -e $f || continue; chmod 666 $f 2>/dev/null && chown 0:0 $f 2>/dev/null "
               "&& echo CHANGED $f; done; true")


def _host_change_times() -> dict[str, int]:
    return {name: os.stat(f"/dev/{name}").st_ctime_ns for name in HOST_NODES}


def test_the_containers_device_nodes_are_its_own_as_root():
    before = _host_change_times()
    ran = run("host", "sh", "-c", NODE_ATTACK)
    assert ran.returncode == 0, ran.stderr
    assert "CHANGED /dev/null" in ran.stdout and "CHANGED /proc/keys" in ran.stdout, ran.stdout  # it could, on its own
    assert _host_change_times() == before  # ... and the host's nodes were not touched


def test_the_host_device_nodes_cannot_be_changed_rootless(test_user):
    before = _host_change_times()
    ran = run("host", "sh", "-c", NODE_ATTACK, user=test_user)
    assert ran.returncode == 0, ran.stderr
    assert "CHANGED" not in ran.stdout, ran.stdout  # the host's nodes, bound: not the user's to change
    assert _host_change_times() == before


# The same through descriptors: what a test or a command inherits open on
# a host node (pytest's stdin is the host's /dev/null, `hermetic run ... <
# /dev/null` too; a session fixture's terminal) is the host's inode, which
# root could chmod or chown through the descriptor.  Same mode, same owner:
# harmless even where it lands; the change time tells.
FD_ATTACK = """
import os, stat
def change_every_node():
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            st = os.fstat(fd)
            if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
                os.fchmod(fd, stat.S_IMODE(st.st_mode))
                os.fchown(fd, st.st_uid, st.st_gid)
        except OSError:
            pass
"""

FD_SUITE = FD_ATTACK + """
import pytest
from pytest_hermetic import hermetic

@pytest.fixture(scope="session")
def nodes():
    master, slave = os.openpty()
    fifo = os.path.join(os.environ["FIFO_DIR"], "fifo")
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    held = {"/dev/null": os.open("/dev/null", os.O_WRONLY), "/dev/zero": os.open("/dev/zero", os.O_RDONLY),
            os.ttyname(slave): slave, fifo: os.open(fifo, os.O_WRONLY)}
    return held, {path: os.stat(path).st_ctime_ns for path in held}, master, reader

@hermetic(OPTIONS)
def test_change_every_node(nodes):
    held, _, _, _ = nodes
    change_every_node()
    # Still what they were, for the test's use:
    assert os.write(held["/dev/null"], b"x") == 1 and os.read(held["/dev/zero"], 2) == bytes(2)
    terminal = next(fd for path, fd in held.items() if path.startswith("/dev/pts/"))
    assert os.isatty(terminal) and os.write(terminal, b"x") == 1
    assert os.write(held[next(path for path in held if path.endswith("fifo"))], b"y") == 1

def test_the_host_nodes_are_as_they_were(nodes):
    held, before, master, reader = nodes
    assert {path: os.stat(path).st_ctime_ns for path in held} == before
    assert os.read(master, 1) == b"x" and os.read(reader, 1) == b"y"  # what the test wrote arrived
"""


def test_a_hermetic_test_cannot_change_host_nodes_it_inherits(tmp_path):
    from attack import inner_session, marker_options

    ran = inner_session(None, "devices-inherited", f"import os\nos.environ['FIFO_DIR'] = {str(tmp_path)!r}\n" +
                        FD_SUITE.replace("OPTIONS", marker_options()))
    assert "2 passed" in ran.stdout, ran.stdout + ran.stderr


def test_a_command_cannot_change_the_host_nodes_its_stdio_are():
    import subprocess
    import sys

    from attack import HOST_PYTHON, unconfined

    env = {k: v for k, v in os.environ.items() if k.startswith("HERMETIC_") or k in ("PATH", "LANG")}
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    before = _host_change_times()
    ran = subprocess.run([sys.executable, "-m", "pytest_hermetic", "run", *unconfined(), "host", HOST_PYTHON, "-c",
                          FD_ATTACK + "change_every_node()\nprint(os.read(0, 1) == b'')"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=60, cwd="/")
    assert ran.returncode == 0 and ran.stdout == "True\n", ran.stdout + ran.stderr  # stdin still reads nothing
    assert _host_change_times() == before
