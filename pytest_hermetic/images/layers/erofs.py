"""A layer tar -> one EROFS image, written while the tar streams in.

Unpacking a layer of 10,000 files costs 10,000 file creations (each an
`open(O_CREAT)`, a `chown`, a `utime`...: most of a pull).  An EROFS image
of the same tree is one sequential write, and the kernel mounts it straight
from the file (file-backed mounts, Linux 6.12+), so the container's overlay
stacks these mounts as its lower layers instead of unpacked folders.

The image (its format: `erofs_format.py`) is laid out as

    block 0     the superblock, at byte 1024
    blocks 1..  file data, in tar order, each file from a block boundary
                (written as it arrives); then the full blocks of long
                directories and symlinks
    meta area   from `meta_blkaddr` to the end: the inodes, each followed
                by its xattrs and its inline tail (the last partial block
                of its data: small files, most directories and symlinks)

Only the meta area waits for the end of the tar: the tree is kept in memory
(a few hundred bytes a member, plus the inline tails, bounded by
`INLINE_HELD`), so a hostile or broken tar is refused before anything is
kept, as extraction does.  The member rules (paths, links, whiteouts,
owners, modes, xattrs) are extraction's (`extract.py`) applied to the tree:
OCI whiteouts become overlayfs ones (a 0/0 character device, the opaque
xattr), devices are kept only when `privileged`, overlay-private xattrs are
dropped.
"""

from __future__ import annotations

import os
import stat
import tarfile
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO

    from ..limits import Budget
    from .decompress import Readable

from ...errors import LayerError
from .erofs_format import (BLOCK, INLINE_HELD, INODE_SIZE, NAME_MAX, Node, encode_dev, storable_xattr, write_tree,
                           xattr_bytes)
from .extract import ExtractStats, feed_members, hostile, member_mode, member_ns, split_path
from .format import CHUNK, OVERLAY_PREFIXES, OVERLAY_TRUSTED, WH, WH_META, WH_OPAQUE, XATTR_PAX

def write_layer_image(src: Readable | str | os.PathLike[str], dest: str | os.PathLike[str], *,
                      xattr_prefix: str = OVERLAY_TRUSTED, privileged: bool = False, same_owner: bool | None = None,
                      allow_bare_end: bool = False, pipelined: bool = True, budget: Budget | None = None) -> ExtractStats:
    """Write the EROFS image of one OCI layer tar to the new file `dest`.

    The same layer as `extract_layer` unpacks into a folder (the same rules,
    options and errors: see there), ready to be mounted read-only as an
    overlay lower layer.  On error `dest` is left half written: write it in
    a temporary place, then rename.
    """
    if same_owner is None:
        same_owner = os.geteuid() == 0
    try:
        out = open(dest, "xb", buffering=CHUNK)  # noqa: SIM115 - closed below
    except OSError as e:
        raise LayerError(f"cannot create layer image {os.fspath(dest)!r}: {e}") from e
    with out:
        builder = ImageBuilder(out, xattr_prefix=xattr_prefix, privileged=privileged, same_owner=same_owner)
        feed_members(src, builder, allow_bare_end=allow_bare_end, pipelined=pipelined, budget=budget)
        try:
            builder.finish()
        except OSError as e:
            raise LayerError(f"cannot write layer image {os.fspath(dest)!r}: {e}") from e
    return builder.stats


class ImageBuilder:
    """Tar members in, an EROFS image out (`out`, written from its current end)."""

    def __init__(self, out: BinaryIO, *, xattr_prefix: str = OVERLAY_TRUSTED, privileged: bool = False,
                 same_owner: bool = True) -> None:
        self.out = out
        self.prefix = xattr_prefix
        self.privileged = privileged
        self.same_owner = same_owner
        self.stats = ExtractStats()
        self.now_ns = time.time_ns()
        self.uid, self.gid = os.geteuid(), os.getegid()
        self.root = Node(stat.S_IFDIR | 0o755, self.uid, self.gid, self.now_ns)
        self._skipped_paths: set[tuple[str, ...]] = set()
        self._whiteouts: set[int] = set()  # id() of whiteout nodes
        out.write(bytes(BLOCK))  # block 0: the superblock's, written last
        self._blocks = 1
        self._held = 0

    # -- the tree --------------------------------------------------------------

    def _implied(self) -> Node:
        return Node(stat.S_IFDIR | 0o755, self.uid, self.gid, self.now_ns)

    def _child_dir(self, parent: Node, comp: str, member: str, create: bool, what: str = "path") -> Node:
        assert parent.children is not None
        key = os.fsencode(comp)
        node = parent.children.get(key)
        if node is None:
            if not create:
                raise FileNotFoundError(comp)
            if len(key) > NAME_MAX:
                raise LayerError(f"cannot extract layer member {member!r}: file name too long ({len(key)} bytes)")
            node = parent.children[key] = self._implied()  # an implied parent, as Docker does
            return node
        if node.isdir():
            return node
        if stat.S_ISLNK(node.mode):
            raise hostile(member, f"{what} component {comp!r} is a symlink (extraction never follows symlinks)")
        if create and id(node) in self._whiteouts:
            # `.wh.D` then `D/x` in the same layer: D is replaced, so opaque
            node = parent.children[key] = self._implied()
            self._set_opaque(node)
            return node
        raise hostile(member, f"{what} component {comp!r} is not a directory")

    def _walk(self, parts: tuple[str, ...], member: str, create: bool = True, what: str = "path") -> Node:
        node = self.root
        for comp in parts:
            node = self._child_dir(node, comp, member, create, what)
        return node

    def _set_opaque(self, node: Node) -> None:
        node.xattrs[(self.prefix + "opaque").encode()] = b"y"

    def _place(self, parent: Node, leaf: str, node: Node, member: str) -> None:
        key = os.fsencode(leaf)
        if len(key) > NAME_MAX:
            raise LayerError(f"cannot extract layer member {member!r}: file name too long ({len(key)} bytes)")
        assert parent.children is not None
        parent.children[key] = node

    # -- members ---------------------------------------------------------------

    def _mode(self, m: tarfile.TarInfo) -> int:
        return member_mode(m, self.same_owner)

    _ns = staticmethod(member_ns)

    def _node(self, kind: int, m: tarfile.TarInfo, path: str, mode: int | None = None) -> Node:
        uid, gid = (m.uid, m.gid) if self.same_owner else (self.uid, self.gid)
        node = Node(kind | (self._mode(m) if mode is None else mode), uid, gid, self._ns(m))
        self._xattrs(node, m, path)
        return node

    def _xattrs(self, node: Node, m: tarfile.TarInfo, path: str) -> None:
        for key, value in sorted(m.pax_headers.items()):
            if not key.startswith(XATTR_PAX):
                continue
            name = key[len(XATTR_PAX):]
            if name.startswith(OVERLAY_PREFIXES):
                self.stats.skipped.append(f"{path}: xattr {name} dropped (overlayfs-private)")
                continue
            data = value.encode("utf-8", "surrogateescape")
            raw = name.encode("utf-8", "surrogateescape")
            if not storable_xattr(name) or len(raw) > NAME_MAX or len(data) > 0xFFFF:
                self.stats.skipped.append(f"{path}: xattr {name} not set (Operation not supported)")
                continue
            node.xattrs[raw] = data

    def extract(self, tf: object, m: tarfile.TarInfo) -> None:
        name = m.name
        parts = split_path(name, name)
        if parts and parts[-1].startswith(WH):
            self._whiteout(parts, m)
            return
        if not parts:
            if not m.isdir():
                raise hostile(name, "names the root but is not a directory")
            self._dir_meta(self.root, m, ".")
            self.stats.dirs += 1
            return
        path = "/".join(parts)
        parent = self._walk(parts[:-1], name)
        assert parent.children is not None
        leaf = parts[-1]
        prev = parent.children.get(os.fsencode(leaf))
        if m.isdir():
            if prev is not None and prev.isdir():
                self._dir_meta(prev, m, path)
            else:
                node = self._implied()
                if prev is not None and id(prev) in self._whiteouts:
                    self._set_opaque(node)  # `.wh.D` and `D/` in one layer
                self._dir_meta(node, m, path)
                self._place(parent, leaf, node, name)
            self.stats.dirs += 1
        elif m.isreg():
            node = self._node(stat.S_IFREG, m, path)
            self._data(node, tf, m)
            self._place(parent, leaf, node, name)
            self.stats.files += 1
        elif m.issym():
            target = os.fsencode(m.linkname)
            if not target or len(target) >= 4096 or b"\0" in target:
                raise LayerError(f"cannot extract layer member {name!r}: bad symlink target ({len(target)} bytes)")
            node = self._node(stat.S_IFLNK, m, path, mode=0o777)
            node.tail, node.size = target, len(target)
            self._place(parent, leaf, node, name)
            self.stats.links += 1
        elif m.islnk():
            self._hardlink(parent, leaf, parts, m)
        elif m.ischr() or m.isblk():
            if not self.privileged:
                kind = "character" if m.ischr() else "block"
                self.stats.skipped.append(f"{path}: {kind} device {m.devmajor}:{m.devminor} skipped (not privileged)")
                self._skipped_paths.add(parts)
                return
            node = self._node(stat.S_IFCHR if m.ischr() else stat.S_IFBLK, m, path)
            node.rdev = encode_dev(m.devmajor, m.devminor)
            self._place(parent, leaf, node, name)
            self.stats.files += 1
        elif m.isfifo():
            self._place(parent, leaf, self._node(stat.S_IFIFO, m, path), name)
            self.stats.files += 1
        else:
            raise hostile(name, f"unsupported tar member type {m.type!r}")

    def _dir_meta(self, node: Node, m: tarfile.TarInfo, path: str) -> None:
        if self.same_owner:
            node.uid, node.gid = m.uid, m.gid
        self._xattrs(node, m, path)
        node.mode = stat.S_IFDIR | self._mode(m)
        node.mtime_ns = self._ns(m)

    def _data(self, node: Node, tf: object, m: tarfile.TarInfo) -> None:
        """Write the file's full blocks now; keep its tail for the meta area when it fits there."""
        size = m.size
        tail_len = size % BLOCK
        inline = (0 < tail_len and INODE_SIZE + len(xattr_bytes(node.xattrs)) + tail_len <= BLOCK
                  and self._held + tail_len <= INLINE_HELD)
        full = size - tail_len if inline else size
        node.size, node.blkaddr = size, (self._blocks if full else 0)
        src = tf.extractfile(m) if size else None  # type: ignore[attr-defined]
        written, tail = 0, b""
        while src is not None:
            chunk = src.read(CHUNK)
            if not chunk:
                break
            if written + len(chunk) > full:
                cut = max(0, full - written)
                tail += chunk[cut:]
                chunk = chunk[:cut]
            self.out.write(chunk)
            written += len(chunk)
        if written + len(tail) != size:
            raise LayerError(f"corrupt layer: member {m.name!r} has {written + len(tail)} bytes, its header says {size}")
        if written % BLOCK:
            self.out.write(bytes(BLOCK - written % BLOCK))
        self._blocks += -(-written // BLOCK)
        if inline:
            node.tail = tail
            self._held += tail_len

    def _hardlink(self, parent: Node, leaf: str, parts: tuple[str, ...], m: tarfile.TarInfo) -> None:
        name = m.name
        target = split_path(m.linkname, name, "hard link target")
        if not target:
            raise hostile(name, "hard link target is the root directory")
        if target in self._skipped_paths:
            self.stats.skipped.append(f"{'/'.join(parts)}: hard link skipped (its target {'/'.join(target)} was skipped)")
            self._skipped_paths.add(parts)
            return
        try:
            tdir = self._walk(target[:-1], name, create=False, what=f"hard link target {m.linkname!r}:")
        except FileNotFoundError:
            raise hostile(name, f"hard link target {m.linkname!r} is not in the layer") from None
        assert tdir.children is not None
        node = tdir.children.get(os.fsencode(target[-1]))
        if node is None:
            raise hostile(name, f"hard link target {m.linkname!r} is not in the layer")
        if node.isdir():
            raise hostile(name, f"hard link target {m.linkname!r} is a directory")
        self._place(parent, leaf, node, name)
        self.stats.links += 1

    def _whiteout(self, parts: tuple[str, ...], m: tarfile.TarInfo) -> None:
        name = m.name
        base = parts[-1]
        parent = self._walk(parts[:-1], name)
        assert parent.children is not None
        if base == WH_OPAQUE:
            self._set_opaque(parent)
            self.stats.whiteouts += 1
            return
        if base.startswith(WH_META):
            self.stats.skipped.append(f"{'/'.join(parts)}: aufs metadata skipped")
            return
        hidden = base[len(WH):]
        if hidden in ("", ".", ".."):
            raise hostile(name, f"whiteout names {hidden!r}")
        prev = parent.children.get(os.fsencode(hidden))
        if prev is None:
            node = Node(stat.S_IFCHR, self.uid, self.gid, self.now_ns)  # 0/0: overlayfs' whiteout
            self._whiteouts.add(id(node))
            self._place(parent, hidden, node, name)
        elif prev.isdir():
            self._set_opaque(prev)  # the whiteout hides the lower layers' D; this layer's own D stays
        # else: a non-directory of this layer already hides the lower ones
        self.stats.whiteouts += 1

    # -- the end: directories, inodes, superblock ------------------------------

    def finish(self) -> None:
        """Lay out and write the directories, the meta area and the superblock."""
        write_tree(self.out, self.root, self._blocks, self.now_ns)
