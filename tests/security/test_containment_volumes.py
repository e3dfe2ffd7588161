"""Volume mount points are resolved inside the container's root.  The attack:
a first container plants symlinks in a volume (absolute, to a host folder,
and relative, climbing out with ../); a later run mounts that volume and
another one below a symlink.  The host folder must stay untouched, and the
second volume shows up where the container itself would resolve the path."""

from __future__ import annotations

import os

from attack import run, user_dir

DEPTH = "../" * 12


def _attack(image: str, volume: str, source: str, outside: str, user: str | None = None) -> None:
    plant = run("-v", f"{volume}:/data", image, "sh", "-c",
                f"ln -s {outside} /data/abs && ln -s {DEPTH}{outside.lstrip('/')} /data/rel && "
                f"ln -s {outside}/file /data/absfile", user=user)
    assert plant.returncode == 0, plant.stderr
    assert os.readlink(os.path.join(volume, "abs")) == outside  # the symlinks are really there, on the host
    ran = run("-v", f"{volume}:/data", "-v", f"{source}:/data/abs/x", "-v", f"{source}:/data/rel/deeper/y:ro",
              "-v", f"{source}/marker:/data/absfile", image, "sh", "-c",
              "cat /data/abs/x/marker /data/rel/deeper/y/marker /data/absfile; "
              f"cat {outside}/x/marker", user=user)
    assert ran.returncode == 0, ran.stderr
    # Inside: each volume where the container's own view of the path is.
    assert ran.stdout.split() == ["source"] * 4, ran.stdout
    # Outside: nothing made or mounted on the host.
    assert os.listdir(outside) == [], os.listdir(outside)


def test_symlinks_planted_in_a_volume_stay_inside(busybox_image, tmp_path):
    volume, source, outside = tmp_path / "vol", tmp_path / "src", tmp_path / "outside"
    for path in (volume, source, outside):
        path.mkdir()
    (source / "marker").write_text("source\n")
    _attack(busybox_image, str(volume), str(source), str(outside))


def test_symlinks_planted_in_a_volume_stay_inside_the_host_image(tmp_path):
    volume, source, outside = tmp_path / "vol", tmp_path / "src", tmp_path / "outside"
    for path in (volume, source, outside):
        path.mkdir()
    (source / "marker").write_text("source\n")
    # In the `host` image the container sees the host's folders copy-on-write:
    # the mount points it makes land in its own layer, not on the host.
    _attack("host", str(volume), str(source), str(outside))


def test_symlinks_planted_in_a_volume_stay_inside_rootless(test_user):
    volume, source, outside = (user_dir(test_user, name) for name in ("sym-vol", "sym-src", "sym-outside"))
    with open(os.path.join(source, "marker"), "w") as f:
        f.write("source\n")
    os.chmod(os.path.join(source, "marker"), 0o644)
    _attack("host", volume, source, outside, user=test_user)
