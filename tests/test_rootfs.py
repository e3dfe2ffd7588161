"""The union root: writes reach neither the host nor the image; commit
round trips additions, deletions, replacements and opaque directories."""

import os
import tarfile

from conftest import run_cli
from pytest_hermetic.container import Container
from pytest_hermetic.images.store import Store
from pytest_hermetic.spec import Spec


def test_host_image_writes_vanish():
    import pathlib

    target = pathlib.Path(f"/var/tmp/hermetic-written-inside-{os.getpid()}")  # /tmp is a fresh tmpfs inside
    ran = run_cli("run", "host", "sh", "-c", f"echo x > {target}; echo y > /etc/hermetic-test; cat {target} /etc/hermetic-test")
    assert ran.stdout.split() == ["x", "y"], ran.stderr
    assert not target.exists()
    assert not os.path.exists("/etc/hermetic-test")


def test_tmp_is_a_private_tmpfs():
    ran = run_cli("run", "host", "sh", "-c", "grep ' /tmp ' /proc/self/mountinfo | grep -c tmpfs; ls -A /tmp | wc -l")
    assert ran.stdout.split() == ["1", "0"]


def test_image_env_workdir_and_writes(busybox_image):
    ran = run_cli("run", busybox_image, "sh", "-c", "echo $GREETING; pwd; echo data > /root/f; cat /root/f; ls /usr/bin/python3 2>&1")
    lines = ran.stdout.splitlines()
    assert lines[:3] == ["hello", "/root", "data"]
    again = run_cli("run", busybox_image, "ls", "/root")
    assert again.stdout == ""  # the image is unchanged


def test_volumes_rw_and_ro(tmp_path, busybox_image):
    (tmp_path / "in").write_text("from host\n")
    ran = run_cli("run", "-v", f"{tmp_path}:/data", "-v", f"{tmp_path}/in:/ro-file:ro", busybox_image,
                  "sh", "-c", "cat /data/in; echo back > /data/out; echo x > /ro-file 2>/dev/null || echo ro")
    assert ran.stdout.split() == ["from", "host", "ro"], ran.stderr
    assert (tmp_path / "out").read_text() == "back\n"


def test_commit_round_trip(busybox_image, tmp_path):
    store = Store()
    base = store.resolve(busybox_image)
    change = (
        "echo added > /added; mkdir -p /etc/newdir && echo n > /etc/newdir/f; "  # additions
        "rm /etc/os-release; "  # a deletion -> whiteout
        "echo replaced > /etc/passwd; "  # a replacement
        "rm -rf /home && mkdir /home && echo only > /home/only"  # an opaque directory
    )
    with Container(Spec.build(busybox_image, ["sh", "-c", change])) as c:
        assert c.run().exit_code == 0
        image = c.commit("busybox:changed")
    assert image.layers[:-1] == base.layers and len(image.layers) == len(base.layers) + 1

    # The committed layer: OCI whiteouts, no engine files (init layer).
    blob = store.blob_path(store.layer_meta(image.layers[-1])["blob"])
    with tarfile.open(blob) as tar:
        names = set(tar.getnames())
    assert {"added", "etc/.wh.os-release", "etc/passwd", "home/.wh..wh..opq", "home/only", "etc/newdir/f"} <= names
    assert not names & {"etc/hostname", "etc/hosts", "etc/resolv.conf", "proc", "dev", "sys"}

    ran = run_cli("run", "busybox:changed", "sh", "-c",
                  "cat /added /etc/passwd /etc/newdir/f; ls /home; test -e /etc/os-release || echo deleted")
    assert ran.stdout.split() == ["added", "replaced", "n", "only", "deleted"], ran.stderr
    original = run_cli("run", busybox_image, "sh", "-c", "test -e /added || echo clean; cat /etc/os-release | head -1; ls /home | wc -l")
    assert original.stdout.split()[0] == "clean"
    assert 'NAME="hermetic busybox"' in original.stdout


def test_commit_of_host_container_replays_its_layer():
    ran = run_cli("run", "--commit", "hostplus:1", "host", "sh", "-c", "mkdir -p /opt/hermetic-demo && echo hi > /opt/hermetic-demo/x && rm -f /etc/motd")
    assert ran.returncode == 0, ran.stderr
    assert "committed hostplus:1" in ran.stderr
    again = run_cli("run", "hostplus:1", "sh", "-c", "cat /opt/hermetic-demo/x; test -e /etc/motd || echo motd-gone; python3 -c 'print(1)'")
    assert again.stdout.split() == ["hi", "motd-gone", "1"], again.stderr
    assert not os.path.exists("/opt/hermetic-demo")
    assert run_cli("rmi", "hostplus:1").returncode == 0


def test_commit_refused_after_failure(busybox_image):
    ran = run_cli("run", "--commit", "never:1", busybox_image, "sh", "-c", "touch /x; exit 4")
    assert ran.returncode == 4
    assert "not committed" in ran.stderr
    assert "never" not in run_cli("images").stdout
