"""The store and the state folders are closed to other users: an image's
setuid-root file (or one with file capabilities) in an unpacked layer, or in
a layer image the store mounted, is no root shell for a local user.  The attack: as an unprivileged user, reach
the setuid file of an image in root's store (and in another user's
rootless store) by its full path."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess

import pytest

from attack import HOST_PYTHON, run, user_home
from conftest import run_cli

PROBE = ("import os, sys\n"
         "for path in sys.argv[1:]:\n"
         "    try:\n"
         "        os.stat(path)\n"
         "        print('REACHED', path)\n"
         "    except PermissionError:\n"
         "        print('refused')\n")


def _as(user: str | int, *paths: str) -> str:
    entry = pwd.getpwnam(user) if isinstance(user, str) else pwd.getpwuid(user)
    ran = subprocess.run(["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups",
                          HOST_PYTHON, "-c", PROBE, *paths], capture_output=True, text=True, timeout=30, cwd="/")
    assert ran.returncode == 0, ran.stderr
    return ran.stdout


def _find(top: str, name: str) -> str:
    for directory, _, files in os.walk(top):
        if name in files:
            return os.path.join(directory, name)
    raise AssertionError(f"{name} not found under {top}")


@pytest.fixture(scope="module")
def setuid_image(busybox_rootfs, tmp_path_factory):  # noqa: ANN001, ANN201
    from pytest_hermetic.images.store import Store
    from pytest_hermetic.images.transports import import_image

    rootfs = str(tmp_path_factory.mktemp("setuid") / "rootfs")
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    shell = os.path.join(rootfs, "bin", "hermetic-suid-shell")
    shutil.copy2(os.path.join(rootfs, "bin", "busybox"), shell)
    os.chmod(shell, 0o4755)
    store = Store()
    import_image(store, f"dir:{rootfs}", "sec-setuid:1")
    return store.root


def test_a_setuid_file_in_roots_store_is_out_of_other_users_reach(setuid_image, test_user):
    from pytest_hermetic.images.store import Store

    store = Store(setuid_image)
    layer = store.local("sec-setuid:1").layers[0]
    # Unpacked in the store, or (root's default) an EROFS image the store mounts below the state root.
    top = store.layer_lower(layer)
    layer_file = _find(top, "hermetic-suid-shell")
    assert os.stat(layer_file).st_mode & stat.S_ISUID and os.stat(layer_file).st_uid == 0  # the bait is real
    closed = os.path.dirname(store.layer_mounts()) if store.layer_image(layer) else setuid_image
    assert stat.S_IMODE(os.stat(closed).st_mode) == 0o700
    out = _as(test_user, layer_file, os.path.dirname(top))
    assert out.split() == ["refused", "refused"], out


def test_the_state_folder_is_closed_too(busybox_image, test_user):
    assert run("--name", "sec-state", busybox_image, "true").returncode == 0
    state = os.environ["HERMETIC_STATE"]
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    assert _as(test_user, os.path.join(state, "containers")).split() == ["refused"]


def test_a_store_left_open_is_closed_at_its_next_use(setuid_image, busybox_rootfs):
    os.chmod(setuid_image, 0o755)
    try:
        assert run_cli("import", f"dir:{busybox_rootfs}", "sec-reclose:1").returncode == 0
        assert stat.S_IMODE(os.stat(setuid_image).st_mode) == 0o700
    finally:
        os.chmod(setuid_image, 0o700)
        run_cli("rmi", "sec-reclose:1")


def test_a_rootless_store_is_closed_to_other_users(test_user, busybox_rootfs):
    rootfs = os.path.join(user_home(test_user), "setuid-rootfs")
    shutil.rmtree(rootfs, ignore_errors=True)
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    shell = os.path.join(rootfs, "bin", "hermetic-suid-shell")
    shutil.copy2(os.path.join(rootfs, "bin", "busybox"), shell)
    os.chmod(shell, 0o4755)
    entry = pwd.getpwnam(test_user)
    for directory, dirs, files in os.walk(rootfs):
        for name in (directory, *(os.path.join(directory, n) for n in dirs + files)):
            os.lchown(name, entry.pw_uid, entry.pw_gid)
    os.chmod(shell, 0o4755)  # (chown cleared the bit)
    try:
        assert run_cli("import", f"dir:{rootfs}", "sec-setuid-rl:1", user=test_user).returncode == 0
        store = os.path.join(user_home(test_user), "data", "hermetic")
        layer_file = _find(store, "hermetic-suid-shell")  # (owned by the user; a setuid bit would make it theirs)
        assert stat.S_IMODE(os.stat(store).st_mode) == 0o700
        assert _as(65534, layer_file).split() == ["refused"]  # nobody
    finally:
        run_cli("rmi", "sec-setuid-rl:1", user=test_user)
        shutil.rmtree(rootfs, ignore_errors=True)
