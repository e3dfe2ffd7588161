"""A state folder another user made first is refused, not used.

Root's fallback state root is on /dev/shm, which every local user can
write: a user who makes `/dev/shm/hermetic` (or the layer mounts folder
below it) before root does would choose, through symlinks, where root
mounts layer images and keeps containers' state.  The attack: give root a
state folder that belongs to an unprivileged user, a symlink to a folder of
root's, or a folder others can write; root must refuse each with one line
naming the folder and the fix, and must not have changed the folder.

A rootless user's fallback (`/dev/shm/hermetic-UID`) can be made first the
same way, by any other user: the victim's containers would then keep their
state, and load their seccomp filters from a cache, in the attacker's
folder.  Refused the same way (the fix named: the user cannot remove
another user's folder from /dev/shm, so HERMETIC_STATE or XDG_RUNTIME_DIR)."""

from __future__ import annotations

import os
import pwd

import pytest

from conftest import run_cli

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the attack is on root's state folders")


def _refused(state: str, what: str, user: str | None = None) -> None:
    result = run_cli("run", "host", "true", env={"HERMETIC_STATE": state}, user=user)
    assert result.returncode == 125, (result.returncode, result.stdout, result.stderr)
    line = result.stderr.strip()
    assert "Traceback" not in result.stderr and len(line.splitlines()) == 1, result.stderr
    assert f"the state folder {state} is {what}" in line and "remove it" in line, line
    if user is not None:
        assert "HERMETIC_STATE" in line, line  # what a user who cannot remove it can do


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


def _shared_folder(name: str) -> str:
    """A folder every user can reach (where run_cli keeps the test user's home)."""
    path = os.path.join(os.path.dirname(os.environ["HERMETIC_STATE"]), name)
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o755)
    return path


def test_a_rootless_users_state_folder_made_by_another_user_is_refused(test_user):
    import shutil

    nobody = pwd.getpwnam("nobody").pw_uid
    base = _shared_folder("squat")
    try:
        squat = os.path.join(base, "state")
        os.mkdir(squat)
        os.chown(squat, nobody, nobody)
        os.chmod(squat, 0o777)  # as /dev/shm/hermetic-UID made by another user would be, so the victim can write
        _refused(squat, f"owned by uid {nobody}", user=test_user)
        assert os.listdir(squat) == []  # no state, no seccomp cache written there
        link = os.path.join(base, "link")
        os.symlink(squat, link)
        _refused(link, "a symbolic link", user=test_user)
        assert os.listdir(squat) == []
    finally:
        shutil.rmtree(base)


def test_a_rootless_users_own_state_folder_is_used(test_user):
    import shutil

    base = _shared_folder("own")
    try:
        uid = pwd.getpwnam(test_user).pw_uid
        os.chown(base, uid, uid)
        result = run_cli("run", "host", "true", env={"HERMETIC_STATE": f"{base}/state"}, user=test_user)
        assert result.returncode == 0, result.stderr
        assert os.stat(f"{base}/state").st_uid == uid and not os.stat(f"{base}/state").st_mode & 0o077
    finally:
        shutil.rmtree(base)
