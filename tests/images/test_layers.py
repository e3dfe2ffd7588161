"""Layer extraction and commit: hostile tarballs, corrupt ones, and real overlay round trips."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from pytest_hermetic.errors import LayerError
from pytest_hermetic.images.layers import (
    OVERLAY_TRUSTED,
    OVERLAY_USER,
    ExtractStats,
    LayerDigests,
    extract_layer,
    open_layer,
    write_layer_from_dir,
    write_layer_from_upper,
)

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root")


# -- building tarballs -------------------------------------------------------


def _info(name: str, type_: bytes, **kw: object) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.mtime = kw.pop("mtime", 1_600_000_000)  # type: ignore[assignment]
    default_mode = 0o755 if type_ == tarfile.DIRTYPE else 0o644
    ti.mode = kw.pop("mode", default_mode)  # type: ignore[assignment]
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


def f(name: str, data: bytes = b"data", **kw: object) -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, tarfile.REGTYPE, size=len(data), **kw), data


def d(name: str, **kw: object) -> tuple[tarfile.TarInfo, None]:
    return _info(name, tarfile.DIRTYPE, **kw), None


def sym(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    return _info(name, tarfile.SYMTYPE, linkname=target, mode=0o777), None


def hard(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    return _info(name, tarfile.LNKTYPE, linkname=target), None


def chr_(name: str, major: int, minor: int) -> tuple[tarfile.TarInfo, None]:
    return _info(name, tarfile.CHRTYPE, devmajor=major, devminor=minor, mode=0o666), None


def make_tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in members:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def extract(data: bytes, dest: Path, **kw: object) -> ExtractStats:
    dest.mkdir(exist_ok=True)
    return extract_layer(io.BytesIO(data), dest, **kw)  # type: ignore[arg-type]


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A folder that stands for the host outside the layer root."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "secret").write_text("host secret")
    return out


def host_untouched(host: Path) -> None:
    assert sorted(p.name for p in host.iterdir()) == ["secret"]
    assert (host / "secret").read_text() == "host secret"
    assert os.stat(host / "secret").st_nlink == 1


# -- hostile layers ----------------------------------------------------------


def test_dotdot_traversal_refused(tmp_path: Path, host: Path) -> None:
    data = make_tar(f("../outside/evil"))
    with pytest.raises(LayerError, match=r"'\.\./outside/evil'.*hostile or corrupt"):
        extract(data, tmp_path / "root")
    host_untouched(host)


def test_dotdot_inside_path_refused(tmp_path: Path, host: Path) -> None:
    data = make_tar(d("a"), f("a/../../outside/evil"))
    with pytest.raises(LayerError, match=r"a/\.\./\.\./outside/evil"):
        extract(data, tmp_path / "root")
    host_untouched(host)


def test_absolute_path_stays_inside_root(tmp_path: Path, host: Path) -> None:
    # Docker strips the leading "/", so do we: the member lands inside the root.
    evil = f"{host}/evil"
    data = make_tar(f(evil, b"x"))
    root = tmp_path / "root"
    extract(data, root)
    host_untouched(host)
    assert (root / evil.lstrip("/")).read_bytes() == b"x"


def test_write_through_symlink_refused(tmp_path: Path, host: Path) -> None:
    data = make_tar(sym("a", str(host)), f("a/x"))
    with pytest.raises(LayerError, match=r"'a/x'.*'a' is a symlink"):
        extract(data, tmp_path / "root")
    host_untouched(host)


def test_symlink_to_parent_chain_refused(tmp_path: Path, host: Path) -> None:
    # a -> ..  then a/a/x would walk root/.. /.. = tmp_path if symlinks were followed
    root = tmp_path / "root"
    data = make_tar(sym("a", ".."), f("a/a/outside/x"))
    with pytest.raises(LayerError, match=r"'a/a/outside/x'.*symlink"):
        extract(data, root)
    host_untouched(host)
    assert os.readlink(root / "a") == ".."


def test_dir_member_through_symlink_refused(tmp_path: Path, host: Path) -> None:
    data = make_tar(sym("a", str(host)), d("a/newdir"))
    with pytest.raises(LayerError, match=r"'a/newdir'"):
        extract(data, tmp_path / "root")
    host_untouched(host)


def test_symlink_may_point_anywhere_and_be_replaced(tmp_path: Path, host: Path) -> None:
    root = tmp_path / "root"
    data = make_tar(sym("a", str(host)), sym("b", "../../.."), f("a", b"replaced"))
    stats = extract(data, root)
    assert (root / "a").read_bytes() == b"replaced"  # replaced, not written through
    assert os.readlink(root / "b") == "../../.."
    assert stats.links == 2 and stats.files == 1
    host_untouched(host)


@pytest.mark.parametrize("target", ["/etc/passwd", "../outside/secret", "outside/secret"])
def test_hard_link_escape_refused(tmp_path: Path, host: Path, target: str) -> None:
    passwd_links = os.stat("/etc/passwd").st_nlink
    data = make_tar(hard("l", target))
    with pytest.raises(LayerError, match=r"'l'.*hard link target"):
        extract(data, tmp_path / "root")
    host_untouched(host)
    assert os.stat("/etc/passwd").st_nlink == passwd_links
    assert not (tmp_path / "root" / "l").exists()


def test_hard_link_absolute_target_resolves_inside_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    data = make_tar(d("etc"), f("etc/passwd", b"layer passwd"), hard("p", "/etc/passwd"))
    extract(data, root)
    assert os.stat(root / "p").st_ino == os.stat(root / "etc/passwd").st_ino
    assert (root / "p").read_bytes() == b"layer passwd"


def test_hard_link_through_symlink_refused(tmp_path: Path, host: Path) -> None:
    data = make_tar(sym("s", str(host)), hard("h", "s/secret"))
    with pytest.raises(LayerError, match=r"'h'.*hard link target 's/secret'.*symlink"):
        extract(data, tmp_path / "root")
    host_untouched(host)


def test_hard_link_to_symlink_links_the_symlink(tmp_path: Path, host: Path) -> None:
    root = tmp_path / "root"
    extract(make_tar(sym("s", str(host / "secret")), hard("h", "s")), root)
    assert os.readlink(root / "h") == str(host / "secret")
    assert os.lstat(root / "h").st_ino == os.lstat(root / "s").st_ino
    host_untouched(host)


@pytest.mark.parametrize("name", [".wh...", ".wh..", ".wh.", "sub/.wh...", "sub/.wh.."])
def test_whiteout_of_dot_or_dotdot_refused(tmp_path: Path, host: Path, name: str) -> None:
    data = make_tar(d("sub"), f(name, b""))
    with pytest.raises(LayerError, match=r"whiteout names"):
        extract(data, tmp_path / "root")
    host_untouched(host)
    assert sorted(os.listdir(tmp_path)) == ["outside", "root"]


def test_whiteout_through_symlink_refused(tmp_path: Path, host: Path) -> None:
    data = make_tar(sym("a", str(host)), f("a/.wh.secret", b""))
    with pytest.raises(LayerError, match=r"'a/\.wh\.secret'.*symlink"):
        extract(data, tmp_path / "root")
    host_untouched(host)


def test_device_node_skipped_unprivileged(tmp_path: Path) -> None:
    root = tmp_path / "root"
    data = make_tar(d("dev"), chr_("dev/null", 1, 3), hard("dev/null2", "dev/null"))
    stats = extract(data, root)
    assert not os.path.lexists(root / "dev/null")
    assert not os.path.lexists(root / "dev/null2")
    assert any("dev/null: character device 1:3 skipped" in s for s in stats.skipped)
    assert any("dev/null2" in s for s in stats.skipped)


@needs_root
def test_device_node_privileged(tmp_path: Path) -> None:
    root = tmp_path / "root"
    try:
        extract(make_tar(chr_("null", 1, 3)), root, privileged=True)
    except LayerError as e:
        if "Operation not permitted" in str(e):
            pytest.skip("no CAP_MKNOD here")
        raise
    st = os.lstat(root / "null")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    assert stat.S_IMODE(st.st_mode) == 0o666


def test_overlay_private_xattrs_in_tar_dropped(tmp_path: Path) -> None:
    ti, _ = d("x")
    ti.pax_headers = {
        "SCHILY.xattr.trusted.overlay.redirect": "/etc",
        "SCHILY.xattr.user.overlay.opaque": "y",
        "SCHILY.xattr.user.kept": "yes",
    }
    root = tmp_path / "root"
    stats = extract(make_tar((ti, None)), root)
    assert os.listxattr(root / "x") == ["user.kept"]
    assert sum("overlayfs-private" in s for s in stats.skipped) == 2


def test_unsupported_member_type_refused(tmp_path: Path) -> None:
    ti = _info("vol", b"V")
    with pytest.raises(LayerError, match=r"'vol'.*unsupported tar member type"):
        extract(make_tar((ti, None)), tmp_path / "root")


# -- corrupt layers ------------------------------------------------------------


def test_truncated_data_is_corrupt(tmp_path: Path) -> None:
    data = make_tar(f("big", b"x" * 5000), f("after"))
    with pytest.raises(LayerError, match="corrupt layer"):
        extract(data[:2048], tmp_path / "root")


def test_missing_end_of_archive_is_corrupt(tmp_path: Path) -> None:
    data = make_tar(f("a", b"x" * 600))  # header + 2 data blocks
    with pytest.raises(LayerError, match="corrupt layer: truncated"):
        extract(data[: 512 * 3], tmp_path / "root")
    assert (tmp_path / "root" / "a").read_bytes() == b"x" * 600  # dest left for the caller


def test_garbage_header_mid_archive_is_corrupt(tmp_path: Path) -> None:
    data = bytearray(make_tar(f("a", b"x"), f("b", b"y")))
    data[1024:1536] = b"\x42" * 512  # second header
    with pytest.raises(LayerError, match="corrupt layer: invalid tar header at byte 1024"):
        extract(bytes(data), tmp_path / "root")


def test_empty_and_non_tar_input_is_corrupt(tmp_path: Path) -> None:
    with pytest.raises(LayerError, match="corrupt layer"):
        extract(b"", tmp_path / "r1")
    with pytest.raises(LayerError, match="corrupt layer"):
        extract(b"hello, not a tar" * 100, tmp_path / "r2")


def test_empty_layer_is_fine(tmp_path: Path) -> None:
    empty = make_tar()
    assert len(empty) == tarfile.RECORDSIZE
    assert extract(empty, tmp_path / "r1") == ExtractStats()
    assert extract(gzip.compress(b"\0" * 1024), tmp_path / "r2") == ExtractStats()
    assert os.listdir(tmp_path / "r1") == os.listdir(tmp_path / "r2") == []


def test_truncated_gzip_is_corrupt(tmp_path: Path) -> None:
    data = gzip.compress(make_tar(f("a", os.urandom(20000))))
    with pytest.raises(LayerError, match="corrupt layer"):
        extract(data[: len(data) // 2], tmp_path / "r1")
    with pytest.raises(LayerError, match="corrupt layer"):
        extract(data[:-4], tmp_path / "r2")  # only the gzip trailer's length missing


def test_zstd_needs_zstandard(tmp_path: Path) -> None:
    blob = tmp_path / "layer.zst"
    blob.write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 32)
    try:
        import zstandard  # noqa: F401
    except ImportError:
        with pytest.raises(LayerError, match="pip install zstandard"):
            open_layer(blob)
    else:
        with pytest.raises(LayerError, match="corrupt layer"):
            extract_layer(blob, tmp_path)


# -- member semantics ----------------------------------------------------------


def test_later_member_replaces_earlier(tmp_path: Path) -> None:
    root = tmp_path / "root"
    data = make_tar(
        f("x", b"one"),
        f("x", b"two"),
        d("dir"),
        f("dir/inner"),
        d("dir/sub", mode=0o500),
        d("dir/sub/deeper"),
        f("dir/sub/deeper/x"),
        sym("dir/sub/link", "/"),
        d("dir/z"),
        f("dir", b"now a file"),
        f("y"),
        d("y", mode=0o700),
        d("m"),
        f("m/1"),
        d("m", mode=0o750),
        f("m/2"),
    )
    extract(data, root)
    assert (root / "x").read_bytes() == b"two"
    assert (root / "dir").read_bytes() == b"now a file"
    assert (root / "y").is_dir() and stat.S_IMODE(os.stat(root / "y").st_mode) == 0o700
    assert sorted(os.listdir(root / "m")) == ["1", "2"]  # dir over dir merges
    assert stat.S_IMODE(os.stat(root / "m").st_mode) == 0o750


@needs_root
def test_whiteouts_become_overlay_whiteouts(tmp_path: Path) -> None:
    root = tmp_path / "root"
    data = make_tar(
        d("a"),
        f("a/.wh.gone", b""),
        f("b/.wh..wh..opq", b""),  # parent implied
        d("c"),
        f("c/kept"),
        f("c/.wh..wh..opq", b""),  # after the children: still opaque
        f("same", b"mine"),
        f(".wh.same", b""),  # same layer: the entry wins
        f(".wh.dir2", b""),
        d("dir2"),  # whiteout then dir: dir replaces lower's, so opaque
        f(".wh..wh.plnk", b""),
    )
    stats = extract(data, root)
    st = os.lstat(root / "a/gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(root / "b", OVERLAY_TRUSTED + "opaque") == b"y"
    assert os.getxattr(root / "c", OVERLAY_TRUSTED + "opaque") == b"y"
    assert (root / "c/kept").exists()
    assert (root / "same").read_bytes() == b"mine"
    assert (root / "dir2").is_dir()
    assert os.getxattr(root / "dir2", OVERLAY_TRUSTED + "opaque") == b"y"
    assert not any(n.startswith(".wh.") for _, ds, fs in os.walk(root) for n in ds + fs)
    assert stats.whiteouts == 5
    assert any("aufs" in s for s in stats.skipped)


def test_user_xattr_prefix(tmp_path: Path) -> None:
    root = tmp_path / "root"
    extract(make_tar(f("d/.wh..wh..opq", b"")), root, xattr_prefix=OVERLAY_USER)
    assert os.getxattr(root / "d", "user.overlay.opaque") == b"y"
    assert OVERLAY_TRUSTED + "opaque" not in os.listxattr(root / "d")


@needs_root
def test_ownership_and_setuid(tmp_path: Path) -> None:
    data = make_tar(f("su", mode=0o4755, uid=1234, gid=5678), d("sg", mode=0o2775, uid=7, gid=8))
    extract(data, tmp_path / "a")
    st = os.stat(tmp_path / "a/su")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o4755)
    st = os.stat(tmp_path / "a/sg")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (7, 8, 0o2775)
    extract(data, tmp_path / "b", same_owner=False)
    st = os.stat(tmp_path / "b/su")
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755)
    assert stat.S_IMODE(os.stat(tmp_path / "b/sg").st_mode) == 0o775


def test_mtimes_set_after_children(tmp_path: Path) -> None:
    root = tmp_path / "root"
    extract(make_tar(d("a", mtime=1000), d("a/b", mtime=2000), f("a/b/c", mtime=3000)), root)
    assert os.stat(root / "a").st_mtime == 1000
    assert os.stat(root / "a/b").st_mtime == 2000
    assert os.stat(root / "a/b/c").st_mtime == 3000


def test_readonly_dir_is_filled_before_its_mode(tmp_path: Path) -> None:
    root = tmp_path / "root"
    extract(make_tar(d("ro", mode=0o555), f("ro/x")), root)
    assert stat.S_IMODE(os.stat(root / "ro").st_mode) == 0o555
    assert (root / "ro/x").exists()


# -- writing and round trips ----------------------------------------------------


def snapshot(top: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Everything that matters of a tree, root excluded; hard links as groups."""
    out: dict[str, tuple] = {}
    inodes: dict[int, list[str]] = {}
    for dirpath, dirs, files in os.walk(top):
        dirs.sort()
        for name in sorted(dirs + files):
            p = Path(dirpath, name)
            rel = str(p.relative_to(top))
            if rel in skip:
                continue
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                extra: object = p.read_bytes()
                inodes.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(p)
            else:
                extra = st.st_rdev
            xattrs = {}
            if not stat.S_ISLNK(st.st_mode):
                xattrs = {k: os.getxattr(p, k) for k in os.listxattr(p) if ".overlay." not in k}
            out[rel] = (
                stat.S_IFMT(st.st_mode),
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                int(st.st_mtime),
                extra,
                xattrs,
            )
    out["<hardlinks>"] = tuple(sorted(tuple(g) for g in inodes.values() if len(g) > 1))
    return out


def tar_members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: m for m in tf.getmembers()}


def test_write_layer_from_dir_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "usr/bin").mkdir(parents=True)
    (src / "usr/bin/tool").write_bytes(b"#!/bin/sh\n")
    os.chmod(src / "usr/bin/tool", 0o4711)
    os.link(src / "usr/bin/tool", src / "usr/bin/tool2")
    os.symlink("tool", src / "usr/bin/alias")
    os.mkfifo(src / "fifo")
    (src / "empty").mkdir(mode=0o700)
    os.chmod(src / "empty", 0o700)
    os.setxattr(src / "usr/bin/tool", "user.bin", b"\xff\x00\x01value")
    os.utime(src / "usr/bin/tool", (1234567890, 1234567890))
    os.utime(src / "usr", (1111111111, 1111111111))

    out = io.BytesIO()
    digests = write_layer_from_dir(src, out)
    data = out.getvalue()
    assert isinstance(digests, LayerDigests)
    assert digests.size == len(data)
    assert digests.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    out2 = io.BytesIO()
    assert write_layer_from_dir(src, out2) == digests  # deterministic
    members = tar_members(data)
    names = list(members)
    assert names == [
        "empty", "fifo", "usr", "usr/bin", "usr/bin/alias", "usr/bin/tool", "usr/bin/tool2"
    ]
    assert members["usr/bin/tool2"].islnk() and members["usr/bin/tool2"].linkname == "usr/bin/tool"
    assert members["usr/bin/tool"].uname == ""

    dest = tmp_path / "dest"
    dest.mkdir()
    stats = extract_layer(io.BytesIO(data), dest)
    assert (stats.files, stats.dirs, stats.links) == (2, 3, 2)
    assert snapshot(dest) == snapshot(src)


# -- real overlayfs round trip ----------------------------------------------------


def mount_overlay(
    target: Path, lower: str, upper: Path | None = None, work: Path | None = None
) -> None:
    opts = f"lowerdir={lower}"
    if upper is not None:
        opts += f",upperdir={upper},workdir={work}"
    else:
        opts += ",ro"
    r = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", opts, str(target)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount overlayfs here: {r.stderr.strip()}")


def umount(target: Path) -> None:
    subprocess.run(["umount", str(target)], check=True)


@pytest.fixture
def lower(tmp_path: Path) -> Path:
    low = tmp_path / "lower"
    for sub in ("etc", "d/deep", "sub"):
        (low / sub).mkdir(parents=True)
    (low / "etc/hostname").write_text("lowerhost\n")
    (low / "keep.txt").write_text("keep")
    (low / "del.txt").write_text("delete me")
    (low / "d/old").write_text("old")
    (low / "d/deep/older").write_text("older")
    (low / "sub/f").write_text("f")
    (low / "sub/g").write_text("g")
    (low / "mode.txt").write_text("mode")
    (low / "olddir").mkdir()
    (low / "olddir/x").write_text("x")
    return low


@needs_root
@pytest.mark.parametrize("compress", ["plain", "gzip"])
def test_overlay_commit_round_trip(tmp_path: Path, lower: Path, compress: str) -> None:
    upper, work, merged = tmp_path / "upper", tmp_path / "work", tmp_path / "merged"
    for p in (upper, work, merged):
        p.mkdir()
    mount_overlay(merged, str(lower), upper, work)
    try:
        (merged / "new.txt").write_text("new")
        os.setxattr(merged / "new.txt", "user.test", b"\xff\x00bin")
        os.utime(merged / "new.txt", (1500000000, 1500000000))
        os.unlink(merged / "del.txt")
        subprocess.run(["rm", "-rf", str(merged / "d")], check=True)
        (merged / "d").mkdir()
        (merged / "d/fresh").write_text("fresh")
        os.link(merged / "keep.txt", merged / "keep-link")
        os.symlink("/keep.txt", merged / "abs-link")
        (merged / "sub/f").write_text("changed")
        os.unlink(merged / "sub/g")
        os.chmod(merged / "mode.txt", 0o600)
        subprocess.run(["rm", "-rf", str(merged / "olddir")], check=True)
        (merged / "etc/hostname").write_text("containerhost\n")
        before = snapshot(merged, skip=("etc/hostname",))
    finally:
        umount(merged)

    out = io.BytesIO()
    digests = write_layer_from_upper(upper, out, exclude=["etc/hostname", "/proc"])
    data = out.getvalue()
    assert digests.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    members = tar_members(data)
    assert ".wh.del.txt" in members and members[".wh.del.txt"].isreg()
    assert ".wh.olddir" in members
    assert "d/.wh..wh..opq" in members
    assert "sub/.wh.g" in members
    assert members["keep-link"].islnk() or members["keep.txt"].islnk()
    assert "etc/hostname" not in members
    for m in members.values():
        assert not any(".overlay." in k for k in m.pax_headers), m.name
    assert members["new.txt"].pax_headers["SCHILY.xattr.user.test"].encode(
        "utf-8", "surrogateescape"
    ) == b"\xff\x00bin"

    blob = tmp_path / "layer.tar"
    blob.write_bytes(gzip.compress(data) if compress == "gzip" else data)
    layer = tmp_path / "layer"
    layer.mkdir()
    stats = extract_layer(blob, layer)
    assert stats.whiteouts == 4
    st = os.lstat(layer / "del.txt")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(layer / "d", OVERLAY_TRUSTED + "opaque") == b"y"
    assert os.stat(layer / "keep.txt").st_ino == os.stat(layer / "keep-link").st_ino

    view = tmp_path / "view"
    view.mkdir()
    mount_overlay(view, f"{layer}:{lower}")
    try:
        after = snapshot(view, skip=("etc/hostname",))
        assert (view / "etc/hostname").read_text() == "lowerhost\n"
    finally:
        umount(view)
    assert after == before
    assert "del.txt" not in after and "d/old" not in after and "d/fresh" in after


@needs_root
def test_upper_with_xattr_whiteout(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "gone").write_bytes(b"")
    os.setxattr(upper / "gone", OVERLAY_TRUSTED + "whiteout", b"")
    os.setxattr(upper, OVERLAY_TRUSTED + "opaque", b"x")  # "has xattr whiteouts", not opaque
    out = io.BytesIO()
    write_layer_from_upper(upper, out)
    assert list(tar_members(out.getvalue())) == [".wh.gone"]


@needs_root
def test_upper_with_redirect_refused(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "moved").mkdir(parents=True)
    os.setxattr(upper / "moved", OVERLAY_TRUSTED + "redirect", b"/orig")
    with pytest.raises(LayerError, match="redirect_dir=off"):
        write_layer_from_upper(upper, io.BytesIO())


def test_open_layer_sniffs_compression(tmp_path: Path) -> None:
    data = make_tar(f("a", b"hello"))
    (tmp_path / "plain").write_bytes(data)
    (tmp_path / "gz").write_bytes(gzip.compress(data))
    for name in ("plain", "gz"):
        with open_layer(tmp_path / name) as fh:
            assert fh.read() == data
        dest = tmp_path / f"x-{name}"
        dest.mkdir()
        extract_layer(tmp_path / name, dest)
        assert (dest / "a").read_bytes() == b"hello"
    # a non-seekable gzip stream is sniffed too
    r, w = os.pipe()
    payload = gzip.compress(data)
    os.write(w, payload)
    os.close(w)
    with open(r, "rb", buffering=0) as pipe:
        dest = tmp_path / "x-pipe"
        dest.mkdir()
        extract_layer(pipe, dest)
    assert (dest / "a").read_bytes() == b"hello"
