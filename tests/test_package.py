"""What a user of the installed package has without a checkout: the
`busybox:` transport (a tiny image from the host's busybox-static), and the
package's metadata.  The wheel itself is built and tried in a fresh venv by
scripts/wheel_check.sh (a step of scripts/test)."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from conftest import ROOT, run_cli


def test_import_busybox_makes_a_runnable_image() -> None:
    ran = run_cli("import", "busybox:", "bb-package:1", "-e", "GREETING=hi", "-w", "/root")
    assert ran.returncode == 0, ran.stderr
    try:
        ran = run_cli("run", "bb-package:1", "sh", "-c", 'echo "$GREETING"; pwd; readlink /bin/sh; cat /etc/os-release; '
                      "ls -ln /bin/busybox; ls -ld /tmp; test -e /usr/bin/python3 || echo no-python")
        assert ran.returncode == 0, ran.stderr
        lines = ran.stdout.splitlines()
        assert lines[:5] == ["hi", "/root", "busybox", 'NAME="hermetic busybox"', "ID=busybox"]
        assert lines[5].split()[2:4] == ["0", "0"]  # owned by root in the image
        assert lines[6].startswith("drwxrwxrwt")
        assert lines[-1] == "no-python"  # not the host: no libc, no Python
    finally:
        run_cli("rmi", "bb-package:1")


def test_busybox_layer_is_the_same_every_time() -> None:
    """Owner root, the binary's time: one binary gives one layer (diff_id)."""
    from pytest_hermetic.images.busybox import applets, find_busybox, write_layer

    busybox = find_busybox()
    outs = [io.BytesIO(), io.BytesIO()]
    for out in outs:
        write_layer(busybox, out)
    assert outs[0].getvalue() == outs[1].getvalue()
    with tarfile.open(fileobj=io.BytesIO(outs[0].getvalue())) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert {m.uid for m in members.values()} == {0}
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "busybox"
    assert members["usr/bin/env"].linkname == "../../bin/busybox"
    assert len([m for m in members.values() if m.issym()]) == len(applets(busybox)) > 100


def test_busybox_rootfs_folder_matches_the_layer(tmp_path) -> None:
    """The test-support folder builder reuses the engine's tree."""
    import sys

    sys.path.insert(0, ROOT)
    from hermetic_testsupport.busybox import build_rootfs

    from pytest_hermetic.images.busybox import find_busybox, write_layer

    root = build_rootfs(str(tmp_path / "rootfs"))
    on_disk = set()
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            on_disk.add(os.path.relpath(os.path.join(top, name), root))
    out = io.BytesIO()
    write_layer(find_busybox(), out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        assert on_disk == set(tar.getnames())


@pytest.mark.parametrize("source, message", [
    ("busybox:/bin/ls", "busybox:/bin/ls: not a statically linked executable"),
    ("busybox:/nonexistent", "busybox:/nonexistent: no such file"),
])
def test_import_busybox_bad_binary_is_one_line(source: str, message: str) -> None:
    ran = run_cli("import", source, "bad:1")
    assert ran.returncode == 125
    assert ran.stderr.count("\n") == 1 and message in ran.stderr, ran.stderr


def test_import_busybox_rootless(test_user: str) -> None:
    ran = run_cli("import", "busybox:", "bb-rootless:1", user=test_user)
    assert ran.returncode == 0, ran.stderr
    ran = run_cli("run", "bb-rootless:1", "sh", "-c", "id -u; ls -ln /bin/busybox", user=test_user)
    assert ran.returncode == 0, ran.stderr
    first, second = ran.stdout.splitlines()
    assert first == "0" and second.split()[2:4] == ["0", "0"]
    assert run_cli("rmi", "bb-rootless:1", user=test_user).returncode == 0
