"""The EROFS layer writer (`layers/erofs.py`): images that erofs-utils' fsck accepts and the kernel
mounts, whose tree is the one extraction makes of the same tar, member by member; and the same
refusals as extraction for hostile tars."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from pytest_hermetic.errors import LayerError
from pytest_hermetic.images.layers import extract_layer
from pytest_hermetic.images.layers.erofs import BLOCK, write_layer_image

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="mounting an EROFS image needs root")
needs_tools = pytest.mark.skipif(shutil.which("fsck.erofs") is None,
                                 reason="erofs-utils is missing: run scripts/install-deps.sh")


def _info(name: str, type_: bytes, **kw: object) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.mtime = kw.pop("mtime", 1_600_000_000)  # type: ignore[assignment]
    ti.mode = kw.pop("mode", 0o755 if type_ == tarfile.DIRTYPE else 0o644)  # type: ignore[assignment]
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


def f(name: str, data: bytes = b"data", **kw: object) -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, tarfile.REGTYPE, size=len(data), **kw), data


def d(name: str, **kw: object) -> tuple[tarfile.TarInfo, None]:
    return _info(name, tarfile.DIRTYPE, **kw), None


def other(name: str, type_: bytes, **kw: object) -> tuple[tarfile.TarInfo, None]:
    return _info(name, type_, **kw), None


def tar_bytes(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in members:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def rich_tar() -> bytes:
    """Every kind of member and layout the writer has: inline tails, block multiples, long
    directories (more than one block of entries), long symlinks, hard links, devices, fifos,
    whiteouts, opaque directories, xattrs, owners, setuid, sub-second mtimes, replacements."""
    many = [f(f"many/entry-with-a-rather-long-name-{i:04d}", b"%d" % i, mtime=1_600_000_000 + i) for i in range(700)]
    return tar_bytes(
        d("etc", mode=0o755, uid=0, gid=0),
        f("etc/small", b"hello\n", mode=0o640, uid=1000, gid=1001),
        f("etc/empty", b""),
        f("etc/block", b"b" * BLOCK),
        f("etc/blocks-and-tail", bytes(range(256)) * 70, mtime=1_600_000_000.123456789),
        f("etc/almost-a-block", b"a" * (BLOCK - 1)),
        f("etc/big", os.urandom(3 * 1024 * 1024 + 17)),
        f("usr/bin/su", b"#!/bin/sh\n", mode=0o4755),  # implied parents usr/ and usr/bin/
        f("etc/owned-high", b"x", uid=200000, gid=300000),
        other("etc/link", tarfile.SYMTYPE, linkname="small", mode=0o777),
        other("etc/dangling", tarfile.SYMTYPE, linkname="/nowhere/" + "n" * 300, mode=0o777),
        other("etc/long-link", tarfile.SYMTYPE, linkname="l" * 4000, mode=0o777),
        other("etc/hard", tarfile.LNKTYPE, linkname="etc/small"),
        other("etc/hard2", tarfile.LNKTYPE, linkname="etc/hard"),
        other("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
        other("dev/big-minor", tarfile.BLKTYPE, devmajor=259, devminor=70000, mode=0o600),
        other("run/fifo", tarfile.FIFOTYPE, mode=0o600),
        f(".wh.gone"),
        d("opaque"), f("opaque/.wh..wh..opq"), f("opaque/kept", b"kept"),
        d("hidden-dir"), f(".wh.hidden-dir"),  # this layer's dir stays, made opaque
        f(".wh.was-whiteout"), d("was-whiteout"),  # a whiteout replaced by a directory: opaque
        f("replaced", b"first"), f("replaced", b"second"),
        d("dir-then-file"), f("dir-then-file/inner"), f("dir-then-file", b"now a file"),
        _xattrs(f("xattrs", b"x"), {"user.comment": "hi", "trusted.mark": "t", "user.binary": "\udcff\udc80",
                                    "trusted.overlay.opaque": "y"}),
        d("many", mtime=1_500_000_000),
        *many,
        d("usr", mode=0o700, mtime=1_400_000_000),  # a later member sets an implied dir's metadata
    )


def _xattrs(member: tuple[tarfile.TarInfo, bytes], xattrs: dict[str, str]) -> tuple[tarfile.TarInfo, bytes]:
    member[0].pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
    return member


WALK = r"""
import hashlib, json, os, stat, sys
root = sys.argv[1]
out, inodes = {}, {}
for top, dirs, files in os.walk(root):
    dirs.sort()
    for name in ([""] if top == root else []) + dirs + sorted(files):
        path = os.path.join(top, name) if name else top
        rel = os.path.relpath(path, root)
        st = os.lstat(path)
        entry = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid}
        if not stat.S_ISDIR(st.st_mode):
            entry["mtime"] = st.st_mtime_ns
            entry["link"] = inodes.setdefault(st.st_ino, rel)
        if stat.S_ISREG(st.st_mode):
            entry["size"] = st.st_size
            with open(path, "rb") as fh:
                entry["sha256"] = hashlib.sha256(fh.read()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            entry["target"] = os.readlink(path)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            entry["rdev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
        else:
            entry["mtime"] = st.st_mtime_ns
        entry["xattrs"] = {k: os.getxattr(path, k, follow_symlinks=False).hex()
                           for k in sorted(os.listxattr(path, follow_symlinks=False))}
        out[rel] = entry
print(json.dumps(out, sort_keys=True))
"""


def walk(path: Path, mount_image: Path | None = None) -> dict:
    """The tree at `path` (with `mount_image` mounted there first, in a private mount namespace)."""
    argv = [sys.executable, "-c", WALK, str(path)]
    if mount_image is not None:
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-ec",
                'mount -t erofs -o ro "$1" "$2"; shift 2; exec "$@"', "sh", str(mount_image), str(path), *argv]
    result = subprocess.run(argv, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def fsck(image: Path) -> None:
    result = subprocess.run(["fsck.erofs", str(image)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    dump = subprocess.run(["dump.erofs", "-S", str(image)], capture_output=True, text=True)
    assert dump.returncode == 0, dump.stdout + dump.stderr


@needs_root
@needs_tools
@pytest.mark.parametrize("pipelined", [False, True])
def test_image_mounts_as_the_extracted_tree(tmp_path: Path, pipelined: bool) -> None:
    tar = tmp_path / "layer.tar"
    tar.write_bytes(rich_tar())
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir(mode=0o755)
    want_stats = extract_layer(str(tar), unpacked, privileged=True, pipelined=pipelined)
    image = tmp_path / "layer.erofs"
    stats = write_layer_image(str(tar), image, privileged=True, pipelined=pipelined)
    assert stats == want_stats
    fsck(image)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    want, got = walk(unpacked), walk(mnt, image)
    for tree in (want, got):  # the root: the staging folder's own time, the mount's now
        tree["."].pop("mtime", None)
        for path in ("usr/bin", "dev", "run", "gone"):  # implied directories, whiteouts: made "now"
            tree[path].pop("mtime", None)
    assert sorted(got) == sorted(want)
    for path in want:
        assert got[path] == want[path], path
    # spot checks on what the comparison relies on
    assert stat.S_ISCHR(got["gone"]["mode"]) and got["gone"]["rdev"] == [0, 0]
    assert got["opaque"]["xattrs"] == {"trusted.overlay.opaque": b"y".hex()}
    assert got["hidden-dir"]["xattrs"] == got["was-whiteout"]["xattrs"] == {"trusted.overlay.opaque": b"y".hex()}
    assert "trusted.overlay.opaque" not in got["xattrs"]["xattrs"] and "user.comment" in got["xattrs"]["xattrs"]
    assert got["etc/hard2"]["link"] == got["etc/hard"]["link"] == got["etc/small"]["link"]
    assert got["usr/bin/su"]["mode"] & 0o7777 == 0o4755 and got["usr"]["mode"] & 0o7777 == 0o700
    assert got["dev/big-minor"]["rdev"] == [259, 70000] and got["etc/owned-high"]["uid"] == 200000
    assert got["etc/long-link"]["target"] == "l" * 4000
    assert abs(got["etc/blocks-and-tail"]["mtime"] - 1_600_000_000_123_456_789) < 1000  # (a float in the tar)


@needs_root
@needs_tools
def test_overlay_of_two_images_honours_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    lower = tar_bytes(d("a"), f("a/old"), f("gone", b"x"), d("o"), f("o/old"), f("keep", b"keep"))
    upper = tar_bytes(f(".wh.gone"), d("o"), f("o/.wh..wh..opq"), f("o/new"), f("a/new"))
    images = []
    for i, data in enumerate((lower, upper)):
        path = tmp_path / f"{i}.tar"
        path.write_bytes(data)
        write_layer_image(str(path), tmp_path / f"{i}.erofs")
        images.append(tmp_path / f"{i}.erofs")
    for name in ("l0", "l1", "merged"):
        (tmp_path / name).mkdir()
    script = ('mount -t erofs -o ro "$1/0.erofs" "$1/l0"; mount -t erofs -o ro "$1/1.erofs" "$1/l1"; '
              'mount -t overlay overlay -o "lowerdir=$1/l1:$1/l0" "$1/merged"; cd "$1/merged"; '
              'find . | sort')
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-ec", script, "sh",
                             str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [".", "./a", "./a/new", "./a/old", "./keep", "./o", "./o/new"]


def test_empty_layer(tmp_path: Path) -> None:
    tar = tmp_path / "empty.tar"
    tar.write_bytes(tar_bytes())
    write_layer_image(str(tar), tmp_path / "empty.erofs")
    if shutil.which("fsck.erofs"):
        fsck(tmp_path / "empty.erofs")


HOSTILE = {
    "dotdot": [f("../../evil")],
    "dotdot-inside": [d("a"), f("a/../../evil")],
    "through-symlink": [other("a", tarfile.SYMTYPE, linkname="/etc"), f("a/evil")],
    "dir-through-symlink": [other("a", tarfile.SYMTYPE, linkname="/"), d("a/etc")],
    "through-file": [f("a"), f("a/evil")],
    "hardlink-out": [other("evil", tarfile.LNKTYPE, linkname="../../etc/passwd")],
    "hardlink-missing": [other("evil", tarfile.LNKTYPE, linkname="etc/passwd")],
    "hardlink-to-dir": [d("a"), other("evil", tarfile.LNKTYPE, linkname="a")],
    "hardlink-through-symlink": [other("a", tarfile.SYMTYPE, linkname="/etc"), other("e", tarfile.LNKTYPE, linkname="a/passwd")],
    "hardlink-root": [other("evil", tarfile.LNKTYPE, linkname="./")],
    "whiteout-dotdot": [d("sub"), f("sub/.wh..")],
    "whiteout-through-symlink": [other("a", tarfile.SYMTYPE, linkname="/etc"), f("a/.wh.passwd")],
    "root-not-dir": [f("./")],
    "long-name": [f("n" * 300)],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tars_refused_as_extraction_refuses_them(tmp_path: Path, case: str) -> None:
    tar = tmp_path / "layer.tar"
    try:
        tar.write_bytes(tar_bytes(*HOSTILE[case]))
    except ValueError:
        pytest.skip("tarfile cannot write this member")
    (tmp_path / "unpacked").mkdir()
    with pytest.raises(LayerError) as extracted:
        extract_layer(str(tar), tmp_path / "unpacked")
    with pytest.raises(LayerError) as written:
        write_layer_image(str(tar), tmp_path / "layer.erofs")
    if case == "long-name":  # the kernel's words and ours differ; both name the member
        assert "n" * 60 in str(written.value) and "too long" in str(written.value)
    else:
        assert str(written.value) == str(extracted.value)


def test_corrupt_tar_refused(tmp_path: Path) -> None:
    data = tar_bytes(f("a", b"x" * 5000))
    tar = tmp_path / "layer.tar"
    tar.write_bytes(data[:1024])  # cut in the middle of the member's data
    with pytest.raises(LayerError, match="corrupt layer"):
        write_layer_image(str(tar), tmp_path / "layer.erofs")


@needs_tools
def test_reader_finds_what_the_image_holds(tmp_path: Path) -> None:
    """`erofs_reader` (the host-side lookups of `bindings`) on our images and on mkfs.erofs's."""
    from pytest_hermetic.images.erofs_reader import ImageReader

    tar = tmp_path / "layer.tar"
    tar.write_bytes(rich_tar())
    ours = tmp_path / "ours.erofs"
    write_layer_image(str(tar), ours, privileged=ROOT)
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    extract_layer(str(tar), unpacked, privileged=ROOT)
    theirs = tmp_path / "theirs.erofs"
    subprocess.run(["mkfs.erofs", "-x", "-1", str(theirs), str(unpacked)], check=True, capture_output=True)
    paths = ["", "etc/small", "etc/link", "etc/dangling", "usr/bin/su", "many/entry-with-a-rather-long-name-0699",
             "many/entry-with-a-rather-long-name-0700", "many/x", "etc/small/x", "nope", "etc/./small", "etc/../etc/big"]
    for image in (ours, theirs):
        reader = ImageReader(str(image))
        try:
            for path in paths:
                assert (reader.lookup(path) is not None) == os.path.lexists(unpacked / path), (image.name, path)
            nid = reader.lookup("etc/blocks-and-tail")
            assert nid is not None and reader.data(nid) == (unpacked / "etc/blocks-and-tail").read_bytes()
            nid = reader.lookup("etc/long-link")
            assert nid is not None and reader.data(nid) == b"l" * 4000
            assert sorted(reader.entries(reader.lookup("many") or 0)) == sorted(
                [b".", b".."] + [os.fsencode(n) for n in os.listdir(unpacked / "many")])
        finally:
            reader.close()


def test_reader_follows_symlinks_inside_the_image(tmp_path: Path) -> None:
    from pytest_hermetic.images.erofs_reader import ImageReader

    tar = tmp_path / "layer.tar"
    tar.write_bytes(tar_bytes(d("usr/lib"), f("usr/lib/libc.so"), other("lib", tarfile.SYMTYPE, linkname="usr/lib"),
                              other("abs", tarfile.SYMTYPE, linkname="/usr"), other("loop", tarfile.SYMTYPE, linkname="loop")))
    write_layer_image(str(tar), tmp_path / "l.erofs")
    reader = ImageReader(str(tmp_path / "l.erofs"))
    try:
        assert reader.lookup("lib/libc.so") is not None and reader.lookup("abs/lib/libc.so") is not None
        assert reader.lookup("loop/x") is None and reader.lookup("loop") is not None
    finally:
        reader.close()
