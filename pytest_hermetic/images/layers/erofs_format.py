"""The on-disk EROFS format that `erofs.py` writes: inodes, xattrs, directory blocks, superblock.

Only the uncompressed parts every kernel since 5.4 reads (fs/erofs/erofs_fs.h),
with 4 KiB blocks: extended inodes (64 bytes: 32-bit owners, a mtime each),
inline xattrs, data FLAT_PLAIN (whole blocks) or FLAT_INLINE (whole blocks
and the last partial one right after the inode), directory blocks of
12-byte entries sorted by name (the kernel bisects them).
"""

from __future__ import annotations

import os
import stat
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO

BLOCK_BITS = 12
BLOCK = 1 << BLOCK_BITS
MAGIC = 0xE0F5E1E2
SUPERBLOCK_AT = 1024
INODE_SIZE = 64  # extended inodes: 32-bit owners, a mtime each
NAME_MAX = 255
INLINE_HELD = 64 << 20  # tails of small files kept in memory until the end, at most (then padded blocks)

# i_format: bit 0 the inode version (1: extended), bits 1-3 the data layout
FLAT_PLAIN, FLAT_INLINE = 0, 2
# dirent file types
FT = {stat.S_IFREG: 1, stat.S_IFDIR: 2, stat.S_IFCHR: 3, stat.S_IFBLK: 4, stat.S_IFIFO: 5, stat.S_IFSOCK: 6,
      stat.S_IFLNK: 7}
# xattr name prefixes EROFS can store (index, prefix), longest match first
XATTR_INDEX = (("system.posix_acl_access", 2), ("system.posix_acl_default", 3), ("user.", 1), ("trusted.", 4),
               ("security.", 6))

_INODE = struct.Struct("<HHHHQIIIIQII16x")
_DIRENT = struct.Struct("<QHBx")
_XATTR_ENTRY = struct.Struct("<BBH")


class Node:
    """One inode of the tree: a directory's `children`, a file's data blocks and tail."""

    __slots__ = ("mode", "uid", "gid", "mtime_ns", "xattrs", "children", "size", "blkaddr", "tail", "rdev",
                 "nid", "nlink")

    def __init__(self, mode: int, uid: int, gid: int, mtime_ns: int) -> None:
        self.mode, self.uid, self.gid, self.mtime_ns = mode, uid, gid, mtime_ns
        self.xattrs: dict[bytes, bytes] = {}
        self.children: dict[bytes, Node] | None = {} if stat.S_ISDIR(mode) else None
        self.size = 0
        self.blkaddr = 0  # first data block (full blocks only)
        self.tail: bytes | None = None  # the data's last partial block, inline after the inode
        self.rdev = 0
        self.nid = 0
        self.nlink = 0

    def isdir(self) -> bool:
        return self.children is not None


def xattr_bytes(xattrs: dict[bytes, bytes]) -> bytes:
    """The inline xattr body of an inode: a 12-byte header, then 4-aligned entries."""
    if not xattrs:
        return b""
    out = bytearray(12)  # h_name_filter (unused without the filter feature), h_shared_count 0, reserved
    for name, value in sorted(xattrs.items()):
        text = name.decode("utf-8", "surrogateescape")
        for prefix, index in XATTR_INDEX:
            if text.startswith(prefix):
                break
        else:  # checked when the xattr was taken
            raise AssertionError(name)
        suffix = name[len(prefix.encode()):]
        out += _XATTR_ENTRY.pack(len(suffix), index, len(value)) + suffix + value
        out += bytes(-len(out) % 4)
    return bytes(out)


def storable_xattr(name: str) -> bool:
    return any(name.startswith(prefix) for prefix, _ in XATTR_INDEX)


def encode_dev(major: int, minor: int) -> int:
    """The kernel's `new_encode_dev`, as EROFS stores rdev."""
    return (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)


def write_tree(out: BinaryIO, root: Node, next_block: int, now_ns: int) -> None:
    """Lay out and write the tree's directories, then the meta area (from block `next_block`,
    after the file data already in `out`), then the superblock (block 0)."""
    order, parents = _order(root)
    blocks = next_block
    for node in order:  # in-memory contents (directories, symlinks): full blocks here, tail inline
        if node.isdir():
            node.size = _dir_size(node)
            full = node.size - node.size % BLOCK
            if node.size % BLOCK and INODE_SIZE + len(xattr_bytes(node.xattrs)) + node.size % BLOCK > BLOCK:
                full = node.size  # no room inline: the tail gets a block of its own
            node.blkaddr = blocks if full else 0
            blocks += -(-full // BLOCK)
            node.tail = None if full == node.size else b""  # (filled once the nids are known)
        elif stat.S_ISLNK(node.mode):
            assert node.tail is not None
            if INODE_SIZE + len(xattr_bytes(node.xattrs)) + node.size > BLOCK:
                node.blkaddr = blocks
                out.write(node.tail + bytes(-node.size % BLOCK))
                blocks += 1
                node.tail = None
    meta_blkaddr = blocks
    pos = 32  # no inode at nid 0 (a directory entry of inode 0 is "deleted" to some readers)
    for node in order:
        size = INODE_SIZE + len(xattr_bytes(node.xattrs)) + (_tail_len(node))
        pos += -pos % 32
        if pos % BLOCK + size > BLOCK and size <= BLOCK:
            pos += -pos % BLOCK  # an inode with its xattrs and tail never crosses a block
        node.nid = pos // 32
        pos += size
    for node in order:  # directory blocks, in the order they were reserved
        if node.isdir():
            data = _dir_bytes(node, parents[id(node)])
            full = len(data) if node.tail is None else len(data) - len(data) % BLOCK
            if full:
                out.write(data[:full] + bytes(-full % BLOCK))
            if node.tail is not None:
                node.tail = data[full:]
    meta = bytearray()
    for node in order:
        at = node.nid * 32
        meta += bytes(at - len(meta))
        meta += _inode(node)
    meta += bytes(-len(meta) % BLOCK)
    out.write(meta)
    blocks = meta_blkaddr + len(meta) // BLOCK
    superblock = struct.pack(
        "<IIIBBHQQIIII16s16sIHHHBBIQB23x",
        MAGIC, 0, 0, BLOCK_BITS, 0, root.nid, len(order), now_ns // 1_000_000_000, now_ns % 1_000_000_000,
        blocks, meta_blkaddr, 0, os.urandom(16), b"", 0, 0, 0, 0, 0, 0, 0, 0, 0)
    assert len(superblock) == 128
    out.flush()
    os.pwrite(out.fileno(), superblock, SUPERBLOCK_AT)


def _order(root: Node) -> tuple[list[Node], dict[int, Node]]:
    """Every inode once, root first, then breadth first (a directory's entries near it); nlink and parents set."""
    order = [root]
    seen = {id(root)}
    root.nlink = 2
    parents = {id(root): root}
    i = 0
    while i < len(order):
        node = order[i]
        i += 1
        if node.children is None:
            continue
        for child in node.children.values():
            if child.isdir():
                node.nlink += 1
                child.nlink = 2
                parents[id(child)] = node
            else:
                child.nlink += 1
            if id(child) not in seen:
                seen.add(id(child))
                order.append(child)
    return order, parents


def _inode(node: Node) -> bytes:
    xattrs = xattr_bytes(node.xattrs)
    icount = (len(xattrs) - 12) // 4 + 1 if xattrs else 0
    tail = node.tail if node.tail is not None else b""
    layout = FLAT_INLINE if node.tail else FLAT_PLAIN
    fmt = stat.S_IFMT(node.mode)
    i_u = node.rdev if fmt in (stat.S_IFCHR, stat.S_IFBLK) else node.blkaddr
    secs, nsec = divmod(node.mtime_ns, 1_000_000_000)
    head = _INODE.pack(1 | (layout << 1), icount, node.mode & 0xFFFF, 0, node.size, i_u, node.nid & 0xFFFFFFFF,
                       node.uid, node.gid, secs & 0xFFFFFFFFFFFFFFFF, nsec, node.nlink)
    return head + xattrs + tail


def _tail_len(node: Node) -> int:
    if node.tail is None:
        return 0
    if node.isdir():
        return node.size % BLOCK
    return len(node.tail)


def _entries(node: Node) -> list[tuple[bytes, int, Node | None]]:
    assert node.children is not None
    items: list[tuple[bytes, int, Node | None]] = [(b".", 2, None), (b"..", 2, None)]
    items += [(name, FT.get(stat.S_IFMT(child.mode), 0), child) for name, child in node.children.items()]
    items.sort(key=lambda item: item[0])
    return items


def _blocks_of(entries: list[tuple[bytes, int, Node | None]]) -> list[list[tuple[bytes, int, Node | None]]]:
    blocks: list[list[tuple[bytes, int, Node | None]]] = [[]]
    used = 0
    for entry in entries:
        need = _DIRENT.size + len(entry[0])
        if used + need > BLOCK:
            blocks.append([])
            used = 0
        blocks[-1].append(entry)
        used += need
    return blocks


def _dir_size(node: Node) -> int:
    blocks = _blocks_of(_entries(node))
    last = sum(_DIRENT.size + len(name) for name, _, _ in blocks[-1])
    return (len(blocks) - 1) * BLOCK + last


def _dir_bytes(node: Node, parent: Node) -> bytes:
    """The directory's blocks: entries sorted by name (the kernel bisects them), all but the last padded."""
    out = bytearray()
    blocks = _blocks_of(_entries(node))
    for number, block in enumerate(blocks):
        start = len(out)
        nameoff = _DIRENT.size * len(block)
        names = bytearray()
        for name, ftype, child in block:
            nid = child.nid if child is not None else (node.nid if name == b"." else parent.nid)
            out += _DIRENT.pack(nid, nameoff + len(names), ftype)
            names += name
        out += names
        if number < len(blocks) - 1:
            out += bytes(BLOCK - (len(out) - start))
    return bytes(out)
