"""Overlay upper folders and plain root filesystems -> deterministic OCI layer tars (commit, `dir:` import)."""

from __future__ import annotations

import errno
import os
import stat
import tarfile

from ..._record import record
TYPE_CHECKING = False
if TYPE_CHECKING:  # typing (and dataclasses) cost a pull ~20 ms of imports
    from typing import BinaryIO, Callable, Iterable

from ...errors import LayerError
from ..digest import HashingWriter
from .format import DIR_FLAGS, OVERLAY_PREFIXES, OVERLAY_TRUSTED, WH, WH_OPAQUE, XATTR_PAX, is_whiteout, proc_path


@record
class LayerDigests:
    """What a writer produced, hashed on the way so nobody re-reads the tar."""

    diff_id: str  # "sha256:<hex>" of the uncompressed tar
    size: int  # bytes of the uncompressed tar


def _norm_rel(path: str) -> str:
    return "/".join(p for p in path.split("/") if p not in ("", "."))


def _read_xattrs(dir_fd: int, name: str) -> dict[str, bytes]:
    path = proc_path(dir_fd, name)
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    out: dict[str, bytes] = {}
    for key in names:
        try:
            out[key] = os.getxattr(path, key, follow_symlinks=False)
        except OSError as e:
            if e.errno != errno.ENODATA:
                raise
    return out


def _write_tree(
    root: str | os.PathLike[str], out: BinaryIO, overlay: str | None, exclude: Iterable[str],
    mtime_clamp: int | None = None, owners: Callable[[int, int], tuple[int, int]] | None = None,
) -> LayerDigests:
    """Deterministic PAX tar of `root` (depth first, names sorted by bytes).

    With `overlay` (an xattr prefix) the tree is an overlay upper folder and
    its whiteouts and opaque directories become OCI ones.
    """
    skip = {_norm_rel(e) for e in exclude}
    writer = HashingWriter(out)
    tf = tarfile.open(  # type: ignore[call-overload]  # "w" writes and tells only; typeshed asks for read and seek too
        fileobj=writer,
        mode="w",
        format=tarfile.PAX_FORMAT,
        encoding="utf-8",
        errors="surrogateescape",
    )
    seen: dict[tuple[int, int], str] = {}
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    stack: list[tuple[int, str, list[str]]] = []

    def listing(fd: int) -> list[str]:
        return sorted(os.listdir(fd), key=os.fsencode, reverse=True)

    def marker(name: str) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type = tarfile.REGTYPE
        ti.mode = 0o600
        ti.uname = ti.gname = ""
        return ti

    try:
        if overlay is not None:
            root_x = _read_xattrs(root_fd, ".")
            if root_x.get(overlay + "opaque") == b"y":
                tf.addfile(marker(WH_OPAQUE))
        stack.append((root_fd, "", listing(root_fd)))
        while stack:
            dfd, prefix, names = stack[-1]
            if not names:
                stack.pop()
                if dfd != root_fd:
                    os.close(dfd)
                continue
            name = names.pop()
            rel = prefix + name
            if rel in skip:
                continue
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            mode = st.st_mode
            xattrs = _read_xattrs(dfd, name)
            if overlay is not None:
                if is_whiteout(st) or (
                    stat.S_ISREG(mode) and overlay + "whiteout" in xattrs
                ):
                    tf.addfile(marker(prefix + WH + name))
                    continue
                if overlay + "redirect" in xattrs:
                    raise LayerError(
                        f"{rel}: overlay redirect in the upper folder; mount the "
                        "container's overlay with redirect_dir=off"
                    )
                if overlay + "metacopy" in xattrs:
                    raise LayerError(
                        f"{rel}: metadata-only copy-up in the upper folder; mount the "
                        "container's overlay with metacopy=off"
                    )
            if stat.S_ISSOCK(mode):
                continue  # a tar cannot hold a socket
            ti = tarfile.TarInfo(rel)
            ti.mode = stat.S_IMODE(mode)
            ti.uid, ti.gid = owners(st.st_uid, st.st_gid) if owners else (st.st_uid, st.st_gid)
            ti.uname = ti.gname = ""
            ti.mtime = st.st_mtime_ns // 1_000_000_000
            if mtime_clamp is not None and ti.mtime > mtime_clamp:
                ti.mtime = mtime_clamp  # what the build wrote gets the build's epoch (BuildKit's rewrite-timestamp)
            ti.pax_headers = {
                XATTR_PAX + key: xattrs[key].decode("utf-8", "surrogateescape")
                for key in sorted(xattrs) if not key.startswith(OVERLAY_PREFIXES)
            }
            if not stat.S_ISDIR(mode) and st.st_nlink > 1:
                inode = (st.st_dev, st.st_ino)
                first = seen.get(inode)
                if first is not None:
                    ti.type = tarfile.LNKTYPE
                    ti.linkname = first
                    tf.addfile(ti)
                    continue
                seen[inode] = rel
            if stat.S_ISREG(mode):
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
                with open(fd, "rb") as f:
                    fst = os.fstat(fd)
                    if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
                        raise LayerError(f"{rel}: changed while it was being written")
                    ti.type = tarfile.REGTYPE
                    ti.size = fst.st_size
                    tf.addfile(ti, f)
            elif stat.S_ISDIR(mode):
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
                if overlay is not None and xattrs.get(overlay + "opaque") == b"y":
                    tf.addfile(marker(rel + "/" + WH_OPAQUE))
                cfd = os.open(name, DIR_FLAGS, dir_fd=dfd)
                try:
                    children = listing(cfd)
                except BaseException:
                    os.close(cfd)
                    raise
                stack.append((cfd, rel + "/", children))
            elif stat.S_ISLNK(mode):
                ti.type = tarfile.SYMTYPE
                ti.linkname = os.readlink(name, dir_fd=dfd)
                tf.addfile(ti)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                ti.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
                ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
                tf.addfile(ti)
            elif stat.S_ISFIFO(mode):
                ti.type = tarfile.FIFOTYPE
                tf.addfile(ti)
        tf.close()
    finally:
        for dfd, _, _ in stack:
            if dfd != root_fd:
                os.close(dfd)
        os.close(root_fd)
    writer.flush()
    return LayerDigests(diff_id=writer.digest(), size=writer.size)


def write_layer_from_upper(
    upper: str | os.PathLike[str],
    out: BinaryIO,
    *,
    xattr_prefix: str = OVERLAY_TRUSTED,
    exclude: Iterable[str] = (),
    mtime_clamp: int | None = None,
    owners: Callable[[int, int], tuple[int, int]] | None = None,
) -> LayerDigests:
    """Turn an overlayfs upper folder into an uncompressed OCI layer tar on `out` (commit).

    A 0/0 character device NAME (or a file with ``<prefix>whiteout``)
    becomes an empty ``.wh.NAME``; a directory with ``<prefix>opaque=y`` is
    written followed by ``DIR/.wh..wh..opq``. overlayfs' private xattrs are
    left out, others are kept as PAX ``SCHILY.xattr.*``. `exclude` names
    relative paths (and their subtrees) the engine owns, e.g. "etc/hostname".
    Output is deterministic: sorted depth first, numeric owners only, mtimes
    in whole seconds, hard links inside the folder kept as hard links. An
    upper with overlay redirects or metacopy files (redirect_dir=on,
    metacopy=on) cannot be expressed as a layer and raises LayerError.
    `mtime_clamp` (seconds): later mtimes are written as it (`hermetic
    build`'s SOURCE_DATE_EPOCH), so a rebuild writes the same bytes.
    `owners(uid, gid)` gives the ids to write for the host's (a rootless
    container's upper holds host ids; its layer must hold the container's).
    """
    return _write_tree(upper, out, xattr_prefix, exclude, mtime_clamp, owners)


def write_layer_from_dir(root: str | os.PathLike[str], out: BinaryIO) -> LayerDigests:
    """A plain root filesystem folder -> deterministic uncompressed layer tar (`dir:` import).

    Same format as `write_layer_from_upper` but nothing is read as a
    whiteout; overlayfs-private xattrs are still left out.
    """
    return _write_tree(root, out, None, ())
