"""A state folder another user made first is refused, not used.

Root's fallback state root is on /dev/shm, which every local user can
write: a user who makes `/dev/shm/hermetic` (or the layer mounts folder
below it) before root does would choose, through symlinks, where root
mounts layer images and keeps containers' state.  The attack: give root a
state folder that belongs to an unprivileged user, a symlink to a folder of
root's, or a folder others can write; root must refuse each with one line
naming the folder and the fix, and must not have changed the folder."""

from __future__ import annotations

import os
import pwd

import pytest

from conftest import run_cli

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the attack is on root's state folders")


def _refused(state: str, what: str) -> None:
    result = run_cli("run", "host", "true", env={"HERMETIC_STATE": state})
    assert result.returncode == 125, (result.returncode, result.stdout, result.stderr)
    line = result.stderr.strip()
    assert "Traceback" not in result.stderr and len(line.splitlines()) == 1, result.stderr
    assert f"the state folder {state} is {what}" in line and "remove it" in line, line


def test_a_folder_of_another_user_is_refused(tmp_path, test_user):
    state = tmp_path / "state"
    state.mkdir(0o755)
    uid = pwd.getpwnam(test_user).pw_uid
    os.chown(state, uid, uid)
    _refused(str(state), f"owned by uid {uid}")
    assert os.listdir(state) == [] and os.stat(state).st_mode & 0o777 == 0o755  # untouched


def test_a_symbolic_link_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "roots"
    target.mkdir(0o755)
    os.chmod(target, 0o755)
    (tmp_path / "state").symlink_to(target)
    _refused(str(tmp_path / "state"), "a symbolic link")
    assert os.listdir(target) == [] and os.stat(target).st_mode & 0o777 == 0o755  # not chmod-ed through the link


def test_a_folder_others_can_write_is_refused(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, 0o777)
    _refused(str(state), "writable by others (mode 777)")


def test_the_layer_mounts_folder_is_checked_too():
    from pytest_hermetic.images.store import MOUNTS_DIR
    from pytest_hermetic.paths import make_owned, system_state_root

    # (the real machine folder: root's own, so accepted; the checks above are the same function)
    folder = make_owned(os.path.join(system_state_root(), MOUNTS_DIR))
    st = os.lstat(folder)
    assert st.st_uid == 0 and not st.st_mode & 0o077
