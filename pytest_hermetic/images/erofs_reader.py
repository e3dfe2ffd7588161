"""Looking up paths in a layer stored as an EROFS image, without mounting it.

The host never mounts a layer image (containers do, in their own mount
namespace), so the few host-side questions about an image's files ("does
the image have /usr/lib/python3.11?", `bindings`) read the image directly:
the superblock, inodes and directory blocks of the uncompressed format that
`layers/erofs.py` writes (and mkfs.erofs, uncompressed).  Kept outside the
`layers` package, whose import (tarfile & co.) a container start avoids.
"""

from __future__ import annotations

import os
import stat
import struct

MAGIC = 0xE0F5E1E2
_SUPER = struct.Struct("<I4xI B x H 8x 8x 4x 4x I")  # magic, feature_compat, blkszbits, root_nid, meta_blkaddr
_DIRENT = struct.Struct("<QHBx")
FLAT_PLAIN, FLAT_INLINE = 0, 2
_MAX_HOPS = 40  # symlinks followed in one lookup, as the kernel's limit


class ImageError(Exception):
    """The file is not an uncompressed EROFS image this reader understands."""


class ImageReader:
    """Read-only access to one EROFS image file: lookups, directory listings, symlink targets."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            head = os.pread(self._fd, _SUPER.size, 1024)
            if len(head) < _SUPER.size:
                raise ImageError(f"{path}: too short for an EROFS image")
            magic, _compat, bits, self.root_nid, meta = _SUPER.unpack(head)
            if magic != MAGIC or not 9 <= bits <= 16:
                raise ImageError(f"{path}: not an EROFS image")
        except BaseException:
            os.close(self._fd)
            raise
        self.block = 1 << bits
        self._meta = meta * self.block
        self._dirs: dict[int, dict[bytes, tuple[int, int]]] = {}

    def close(self) -> None:
        os.close(self._fd)

    def inode(self, nid: int) -> tuple[int, int, int, int, int]:
        """(mode, size, layout, first block, offset of the inline data) of inode `nid`."""
        at = self._meta + nid * 32
        raw = os.pread(self._fd, 64, at)
        fmt, icount, mode = struct.unpack_from("<HHH", raw)
        if fmt & 1:  # extended
            size, = struct.unpack_from("<Q", raw, 8)
            blkaddr, = struct.unpack_from("<I", raw, 16)
            isize = 64
        else:  # compact
            size, blkaddr = struct.unpack_from("<II", raw, 8)
            isize = 32
        layout = (fmt >> 1) & 7
        if layout not in (FLAT_PLAIN, FLAT_INLINE):
            raise ImageError(f"{self.path}: inode {nid} uses data layout {layout} (compressed or chunked): not read here")
        xattrs = 12 + 4 * (icount - 1) if icount else 0
        return mode, size, layout, blkaddr, at + isize + xattrs

    def data(self, nid: int) -> bytes:
        _mode, size, layout, blkaddr, inline = self.inode(nid)
        if layout == FLAT_PLAIN:
            return os.pread(self._fd, size, blkaddr * self.block) if size else b""
        full = size - size % self.block
        head = os.pread(self._fd, full, blkaddr * self.block) if full else b""
        return head + os.pread(self._fd, size - full, inline)

    def entries(self, nid: int) -> dict[bytes, tuple[int, int]]:
        """A directory's entries: name -> (nid, file type), "." and ".." included."""
        cached = self._dirs.get(nid)
        if cached is not None:
            return cached
        data = self.data(nid)
        found: dict[bytes, tuple[int, int]] = {}
        for start in range(0, len(data), self.block):
            block = data[start:start + self.block]
            first = _DIRENT.unpack_from(block, 0)
            count = first[1] // _DIRENT.size
            dirents = [_DIRENT.unpack_from(block, i * _DIRENT.size) for i in range(count)]
            for i, (child, nameoff, ftype) in enumerate(dirents):
                end = dirents[i + 1][1] if i + 1 < count else len(block)
                name = block[nameoff:end].split(b"\0", 1)[0]
                found[name] = (child, ftype)
        self._dirs[nid] = found
        return found

    def lookup(self, path: str) -> int | None:
        """The nid at `path` (from the image's root; symlinks on the way followed inside the
        image, the last component not), or None."""
        hops = 0
        todo = [os.fsencode(p) for p in path.split("/") if p not in ("", ".")]
        trail = [self.root_nid]
        while todo:
            name = todo.pop(0)
            if name == b"..":
                if len(trail) > 1:
                    trail.pop()
                continue
            mode = self.inode(trail[-1])[0]
            if not stat.S_ISDIR(mode):
                return None
            hit = self.entries(trail[-1]).get(name)
            if hit is None:
                return None
            nid = hit[0]
            if todo and stat.S_ISLNK(self.inode(nid)[0]):
                hops += 1
                if hops > _MAX_HOPS:
                    return None
                target = self.data(nid)
                if target.startswith(b"/"):
                    trail = [self.root_nid]
                todo[:0] = [p for p in target.split(b"/") if p not in (b"", b".")]
                continue
            trail.append(nid)
        return trail[-1]


def image_has(image: str, path: str) -> bool:
    """Whether the EROFS layer image file `image` has an entry at `path` (as `os.path.lexists`
    would say of the unpacked layer, with symlinks resolved inside the image).

    The image is open for this look only: a descriptor a pytest process keeps
    reaches every later test's container (sealed, and copied whole into each
    once `gc` or `rmi` removed the layer); bindings.py keeps the answers."""
    reader = ImageReader(image)
    try:
        return reader.lookup(path) is not None
    finally:
        reader.close()
