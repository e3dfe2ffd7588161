"""Root with any group keeps Docker's default capabilities and no more; any
other user keeps none.  The attack: mount a cgroup v1 hierarchy (the first
step of the release_agent escape) or a tmpfs from inside."""

from __future__ import annotations

import os
import shutil

import pytest

from attack import run
from pytest_hermetic.runtime.capabilities import DEFAULT_CAPS

DEFAULT = sum(1 << bit for bit in DEFAULT_CAPS.values())

ATTACK = ("grep ^Cap /proc/self/status; mkdir -p /tmp/m; "
          "mount -t cgroup -o devices cgroup /tmp/m 2>/dev/null && echo MOUNTED-CGROUP; "
          "mount -t tmpfs tmpfs /tmp/m 2>/dev/null && echo MOUNTED-TMPFS; echo done")


def _caps(stdout: str) -> dict[str, int]:
    return {line.split(":")[0][3:]: int(line.split()[1], 16) for line in stdout.splitlines() if line.startswith("Cap")}


def _assert_root_caps(ran) -> None:  # noqa: ANN001
    assert ran.returncode == 0 and "done" in ran.stdout, ran.stderr
    caps = _caps(ran.stdout)
    assert caps["Eff"] == caps["Prm"] == caps["Bnd"] == DEFAULT, {k: hex(v) for k, v in caps.items()}
    assert caps["Inh"] == caps["Amb"] == 0
    assert "MOUNTED" not in ran.stdout


@pytest.fixture(scope="module")
def odd_root_images(busybox_rootfs, tmp_path_factory):  # noqa: ANN001, ANN201
    """Images that say root with another group: in the config, and in /etc/passwd."""
    from pytest_hermetic.images.store import Store
    from pytest_hermetic.images.transports import import_image

    store = Store()
    import_image(store, f"dir:{busybox_rootfs}", "sec-root-group:1", user="0:1")
    rootfs = str(tmp_path_factory.mktemp("toor") / "rootfs")
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    with open(os.path.join(rootfs, "etc", "passwd"), "a") as f:
        f.write("toor:x:0:1:root again:/root:/bin/sh\n")
    import_image(store, f"dir:{rootfs}", "sec-toor:1")
    yield "sec-root-group:1", "sec-toor:1"
    for ref in ("sec-root-group:1", "sec-toor:1"):
        store.remove_image(ref) if hasattr(store, "remove_image") else None


@pytest.mark.parametrize("user", ["0:1", "0:65534", "0:0", "root"])
def test_root_with_any_group_keeps_only_the_default_set(busybox_image, user):
    _assert_root_caps(run("-u", user, busybox_image, "sh", "-c", f"id -g; {ATTACK}"))


def test_root_with_a_group_from_the_image_config(odd_root_images):
    ran = run(odd_root_images[0], "sh", "-c", f"id -g; {ATTACK}")
    assert ran.stdout.split()[0] == "1", ran.stdout
    _assert_root_caps(ran)


def test_root_with_a_group_from_the_image_passwd(odd_root_images):
    ran = run("-u", "toor", odd_root_images[1], "sh", "-c", f"id -g; {ATTACK}")
    assert ran.stdout.split()[0] == "1", ran.stdout
    _assert_root_caps(ran)


@pytest.mark.parametrize("user", ["1000:1000", "1000:0", "65534"])
def test_any_other_user_has_no_capabilities(busybox_image, user):
    ran = run("-u", user, busybox_image, "sh", "-c", ATTACK)
    assert ran.returncode == 0 and "done" in ran.stdout, ran.stderr
    caps = _caps(ran.stdout)
    assert caps["Eff"] == caps["Prm"] == caps["Inh"] == caps["Amb"] == 0, caps
    assert caps["Bnd"] == DEFAULT  # a setuid-root file could give back no more (and no_new_privs gives nothing)
    assert "MOUNTED" not in ran.stdout


@pytest.mark.parametrize("user", ["0:1", "0:0"])
def test_rootless_root_with_any_group_keeps_only_the_default_set(test_user, user):
    _assert_root_caps(run("-u", user, "host", "sh", "-c", ATTACK, user=test_user))
