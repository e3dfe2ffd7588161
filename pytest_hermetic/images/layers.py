"""OCI layer tarballs <-> overlayfs layer directories.

`extract_layer` unpacks a layer so the folder can be given to overlayfs as a
lower (or upper) directory: OCI whiteouts (``.wh.NAME``, ``.wh..wh..opq``)
become overlayfs whiteouts (a 0/0 character device, an ``opaque`` xattr).
`write_layer_from_upper` does the reverse for `commit`, and
`write_layer_from_dir` tars a plain root filesystem folder.

Extraction trusts nothing in the tar. `tarfile`'s own extraction filters had
bypasses until mid-2025 interpreters, so they are not used at all: every
member path and every hard link target is resolved one component at a time
from a directory fd of the root, opening each component with ``O_NOFOLLOW``,
and every node is created with the ``*at`` calls relative to that fd. A
symlink in the tar may point anywhere (it is resolved inside the container
later) but is never followed here.

A failed extraction leaves `dest` half written: callers extract into a
temporary folder and rename it into place, deleting it on error.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import io
import lzma
import os
import stat
import tarfile
from collections import deque
from .._record import factory, record

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing (and dataclasses) cost a pull ~20 ms of imports
    from typing import IO, BinaryIO, Iterable, Protocol

    class Readable(Protocol):
        """What reading a layer needs of its source: a file, a download, a hashing reader."""

        def read(self, size: int = ..., /) -> bytes: ...

    class Stream(Readable, Protocol):
        """A reader made here (a decompressor), closed by who asked for it."""

        def close(self) -> None: ...

    from .limits import Budget

from pytest_hermetic.errors import HermeticError, LayerError

__all__ = [
    "OVERLAY_TRUSTED",
    "OVERLAY_USER",
    "ExtractStats",
    "LayerDigests",
    "extract_layer",
    "open_layer",
    "write_layer_from_dir",
    "write_layer_from_upper",
]

OVERLAY_TRUSTED = "trusted.overlay."
"""Prefix of overlayfs' private xattrs when it is mounted by real root."""
OVERLAY_USER = "user.overlay."
"""Prefix of overlayfs' private xattrs with the ``userxattr`` option (rootless)."""

_OVERLAY_PREFIXES = (OVERLAY_TRUSTED, OVERLAY_USER)
_WH = ".wh."
_WH_META = ".wh..wh."
_WH_OPAQUE = ".wh..wh..opq"
_XATTR_PAX = "SCHILY.xattr."
_MAX_DEPTH = 2048  # deeper than PATH_MAX allows anyway
_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

_MAGIC_GZIP = b"\x1f\x8b"
_MAGIC_ZSTD = b"\x28\xb5\x2f\xfd"
_MAGIC_XZ = b"\xfd7zXZ\x00"
_MAGIC_BZ2 = b"BZh"


@record
class LayerDigests:
    """What a writer produced, hashed on the way so nobody re-reads the tar."""

    diff_id: str  # "sha256:<hex>" of the uncompressed tar
    size: int  # bytes of the uncompressed tar


@record
class ExtractStats:
    """Counts of what `extract_layer` created, and what it left out and why."""

    files: int = 0  # regular files, fifos and device nodes
    dirs: int = 0
    links: int = 0  # symlinks and hard links
    whiteouts: int = 0  # whiteouts and opaque markers
    skipped: list[str] = factory(list)


# --------------------------------------------------------------------------
# reading: decompression


def _zstd_reader(raw: IO[bytes]) -> Stream:
    """A zstd decompressing reader over `raw` (which the caller closes)."""
    try:
        import zstandard
    except ImportError:
        pass
    else:
        dctx = zstandard.ZstdDecompressor()
        try:
            reader = dctx.stream_reader(raw, closefd=False, read_across_frames=True)
        except TypeError:  # zstandard < 0.16
            reader = dctx.stream_reader(raw, closefd=False)
        return reader
    try:  # Python 3.14+
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        raise LayerError(
            "layer is zstd-compressed but the zstandard module is missing: "
            "pip install zstandard"
        ) from None
    return zstd.ZstdFile(raw)


def _decompressor(head: bytes, raw: Readable) -> Stream | None:
    """Wrap `raw` in the decompressor its magic bytes `head` ask for (None: plain)."""
    # The decompressors only read it, from the start; typeshed asks for a whole file (seek, write...).
    stream: IO[bytes] = raw  # type: ignore[assignment]
    if head.startswith(_MAGIC_GZIP):
        return gzip.GzipFile(fileobj=stream, mode="rb")
    if head.startswith(_MAGIC_ZSTD):
        return _zstd_reader(stream)
    if head.startswith(_MAGIC_XZ):
        return lzma.LZMAFile(stream)
    if head.startswith(_MAGIC_BZ2):
        return bz2.BZ2File(stream)
    return None


class _Closing(io.RawIOBase):
    """A reader that closes a chain of objects (decompressor, file) with itself."""

    def __init__(self, reader: Stream, *owned: Stream) -> None:
        super().__init__()
        self._reader = reader
        self._owned = (reader, *owned)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._reader.read(size)

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._reader.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            for obj in self._owned:
                obj.close()
        super().close()


def open_layer(path: str | os.PathLike[str]) -> BinaryIO:
    """Open a layer blob, transparently decompressing gzip / zstd / plain tar.

    The format is sniffed from the magic bytes rather than trusted from a
    media type, since `docker save` archives and `tar:` files carry none.
    xz and bzip2 (older `docker import` tarballs) are read too.
    """
    raw = open(path, "rb")  # noqa: SIM115 - handed to the caller
    try:
        head = raw.read(6)
        raw.seek(0)
        dec = _decompressor(head, raw)
    except BaseException:
        raw.close()
        raise
    if dec is None:
        return raw
    return io.BufferedReader(_Closing(dec, raw), buffer_size=_CHUNK)


def media_type(path: str | os.PathLike[str]) -> str:
    """The OCI layer media type of the blob at `path`, from its magic bytes."""
    with open(path, "rb") as f:
        head = f.read(6)
    if head.startswith(_MAGIC_GZIP):
        return "application/vnd.oci.image.layer.v1.tar+gzip"
    if head.startswith(_MAGIC_ZSTD):
        return "application/vnd.oci.image.layer.v1.tar+zstd"
    if head.startswith(_MAGIC_XZ) or head.startswith(_MAGIC_BZ2):
        raise LayerError(f"{os.fspath(path)}: xz/bzip2 layers can be read but have no OCI media type")
    return "application/vnd.oci.image.layer.v1.tar"


def open_layer_stream(src: Readable) -> Stream:
    """A reader of the uncompressed tar in the stream `src` (sniffed; `src` stays open)."""
    return _sniff_stream(src)


class _Prefixed(io.RawIOBase):
    """Put back the bytes read to sniff a non-seekable stream."""

    def __init__(self, head: bytes, raw: Readable) -> None:
        super().__init__()
        self._head = head
        self._raw = raw

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size is None or size < 0:
                data, self._head = self._head + self._raw.read(), b""
                return data
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._raw.read(size)

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:  # the caller owns `raw`
        super().close()


def _sniff_stream(src: Readable) -> Stream:
    """Return a reader of the uncompressed tar in `src` (not closing `src`)."""
    head = b""
    while len(head) < 6:
        chunk = src.read(6 - len(head))
        if not chunk:
            break
        head += chunk
    raw = _Prefixed(head, src)
    dec = _decompressor(head, raw)
    return raw if dec is None else dec


def _corrupt(detail: str) -> LayerError:
    return LayerError(f"corrupt layer: {detail}")


class _Reader:
    """Counts and remembers the tail of the uncompressed tar bytes.

    `tarfile` takes a header it cannot parse, or a file that simply stops, as
    the end of the archive. Keeping the last bytes lets `check_end` insist on
    a real end-of-archive block, so a truncated layer is an error and not a
    silently shorter root filesystem. Decompression errors become LayerError.
    """

    _KEEP = 1 << 18

    def __init__(self, raw: Readable) -> None:
        self._raw = raw
        self.pos = 0
        self._chunks: deque[tuple[int, bytes]] = deque()
        self._kept = 0

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._raw.read(size)
        except HermeticError:  # LayerError, and a download's own errors (digest, registry)
            raise
        except OSError as e:
            if e.errno is not None:
                raise LayerError(f"cannot read layer: {e}") from e
            raise _corrupt(f"{e}") from e  # BadGzipFile, bz2's "Invalid data stream"
        except Exception as e:  # EOFError, zlib.error, LZMAError, ZstdError...
            raise _corrupt(f"{type(e).__name__}: {e}") from e
        if data:
            self._chunks.append((self.pos, data))
            self.pos += len(data)
            self._kept += len(data)
            while self._kept - len(self._chunks[0][1]) >= self._KEEP:
                self._kept -= len(self._chunks.popleft()[1])
        return data

    def check_end(self, offset: int, *, allow_bare_end: bool = False) -> None:
        """Require the block at `offset` (where tarfile stopped) to be zeros.

        With `allow_bare_end`, the data may also simply stop at `offset`, a
        member boundary (Go's archive/tar and umoci write such tars; Docker
        accepts them): for content whose digest is checked anyway.
        """
        while self.pos < offset + tarfile.BLOCKSIZE:
            if not self.read(tarfile.RECORDSIZE):
                if allow_bare_end and self.pos == offset:
                    return
                raise _corrupt(
                    f"truncated at byte {self.pos} (no end-of-archive block)"
                )
        first = self._chunks[0][0] if self._chunks else self.pos
        if offset < first:  # tarfile never reads that far ahead; be safe anyway
            raise _corrupt(f"cannot check the end-of-archive block at byte {offset}")
        tail = b"".join(data for _, data in self._chunks)
        block = tail[offset - first : offset - first + tarfile.BLOCKSIZE]
        if block.count(0) != tarfile.BLOCKSIZE:
            raise _corrupt(f"invalid tar header at byte {offset}")
        while self.read(_CHUNK):  # drain: lets gzip check its CRC and length
            pass


# --------------------------------------------------------------------------
# extraction


def _hostile(member: str, problem: str) -> LayerError:
    shown = repr(member) if len(member) <= 120 else f"{member[:60]!r}...({len(member)} characters)"
    return LayerError(f"refusing layer member {shown}: {problem}; the layer is hostile or corrupt")


def is_whiteout(st: os.stat_result) -> bool:
    """Whether a file is an overlay whiteout: a 0/0 character device."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _proc_path(dir_fd: int, name: str) -> str:
    """A path to `name` in `dir_fd` for calls that take no dir_fd (xattrs).

    The magic link is an intermediate component, so it is followed to the
    directory we hold; `name` itself is then used with follow_symlinks=False.
    """
    return f"/proc/self/fd/{dir_fd}/{name}"


def _rmtree_at(parent_fd: int, name: str) -> None:
    """Remove the directory `name` in `parent_fd` and its contents, never following links."""
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    # (parent fd, name, fd, entries left to look at); iterative, a tar can nest deep
    stack: list[tuple[int, str, int, list[str]]] = [(parent_fd, name, fd, os.listdir(fd))]
    try:
        while stack:
            pfd, dname, dfd, left = stack[-1]
            while left:
                entry = left.pop()
                st = os.stat(entry, dir_fd=dfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    child = os.open(entry, _DIR_FLAGS, dir_fd=dfd)
                    try:
                        names = os.listdir(child)
                    except BaseException:
                        os.close(child)
                        raise
                    stack.append((dfd, entry, child, names))
                    break
                os.unlink(entry, dir_fd=dfd)
            else:
                stack.pop()
                os.close(dfd)
                os.rmdir(dname, dir_fd=pfd)
    finally:
        for _, _, dfd, _ in stack:
            os.close(dfd)


class _Extractor:
    def __init__(
        self,
        root_fd: int,
        *,
        xattr_prefix: str,
        privileged: bool,
        same_owner: bool,
    ) -> None:
        self.root_fd = root_fd
        self.prefix = xattr_prefix
        self.privileged = privileged
        self.same_owner = same_owner
        self.stats = ExtractStats()
        # fds of the directories on the path of the last member's parent
        self._stack: list[tuple[str, int]] = []
        # directories whose mode and mtime are set last: path -> (mode, mtime ns)
        self._dirs: dict[tuple[str, ...], tuple[int, int]] = {}
        self._skipped_paths: set[tuple[str, ...]] = set()

    # -- paths ------------------------------------------------------------

    @staticmethod
    def _split(name: str, member: str, what: str = "path") -> tuple[str, ...]:
        """Normalise a tar path: a leading "/" is dropped as Docker does, ".." refused."""
        if "\x00" in name:
            raise _hostile(member, f"{what} contains a NUL byte")
        parts = tuple(p for p in name.split("/") if p not in ("", "."))
        if ".." in parts:
            raise _hostile(member, f"{what} {name!r} has a '..' component")
        if len(parts) > _MAX_DEPTH:
            raise _hostile(member, f"{what} is {len(parts)} components deep")
        return parts

    def _child_dir(
        self, parent_fd: int, comp: str, member: str, create: bool, what: str = "path"
    ) -> int:
        """Open directory `comp` in `parent_fd` without following a symlink."""
        try:
            return os.open(comp, _DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            if not create:
                raise
            os.mkdir(comp, 0o755, dir_fd=parent_fd)  # implied parent, as Docker does
            return os.open(comp, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError as e:
            try:
                st = os.stat(comp, dir_fd=parent_fd, follow_symlinks=False)
            except OSError:
                raise e from None
            if stat.S_ISDIR(st.st_mode):
                raise e from None  # EACCES, EMFILE...: not the layer's fault
            if stat.S_ISLNK(st.st_mode):
                raise _hostile(
                    member,
                    f"{what} component {comp!r} is a symlink (extraction never "
                    "follows symlinks)",
                ) from None
            if create and is_whiteout(st):
                # `.wh.D` then `D/x` in the same layer: D is replaced, so opaque
                os.unlink(comp, dir_fd=parent_fd)
                os.mkdir(comp, 0o755, dir_fd=parent_fd)
                fd = os.open(comp, _DIR_FLAGS, dir_fd=parent_fd)
                self._set_opaque(fd, member)
                return fd
            raise _hostile(member, f"{what} component {comp!r} is not a directory") from None

    def _parent_fd(self, parts: tuple[str, ...], member: str) -> int:
        """The fd of directory `parts` (created as needed), cached for the next member."""
        stack = self._stack
        i = 0
        while i < len(stack) and i < len(parts) and stack[i][0] == parts[i]:
            i += 1
        for _, fd in stack[i:]:
            os.close(fd)
        del stack[i:]
        cur = stack[-1][1] if stack else self.root_fd
        for comp in parts[i:]:
            cur = self._child_dir(cur, comp, member, create=True)
            stack.append((comp, cur))
        return cur

    def _open_dir(self, parts: tuple[str, ...], member: str, what: str = "path") -> int:
        """A new fd of existing directory `parts` (no creation, no symlinks)."""
        cur = os.dup(self.root_fd)
        try:
            for comp in parts:
                nxt = self._child_dir(cur, comp, member, create=False, what=what)
                os.close(cur)
                cur = nxt
        except BaseException:
            os.close(cur)
            raise
        return cur

    def close(self) -> None:
        for _, fd in self._stack:
            os.close(fd)
        self._stack.clear()

    # -- metadata ---------------------------------------------------------

    def _mode(self, m: tarfile.TarInfo) -> int:
        mode = m.mode & 0o7777
        if not self.same_owner:
            mode &= ~(stat.S_ISUID | stat.S_ISGID)
        return mode

    @staticmethod
    def _ns(m: tarfile.TarInfo) -> int:
        secs = int(m.mtime)  # PAX mtimes come as floats: keep whole seconds exact
        return secs * 1_000_000_000 + int(round((m.mtime - secs) * 1_000_000_000))

    def _xattrs(self, target: int | str, m: tarfile.TarInfo, path: str, follow: bool) -> None:
        for key, value in sorted(m.pax_headers.items()):
            if not key.startswith(_XATTR_PAX):
                continue
            name = key[len(_XATTR_PAX) :]
            if name.startswith(_OVERLAY_PREFIXES):
                self.stats.skipped.append(f"{path}: xattr {name} dropped (overlayfs-private)")
                continue
            data = value.encode("utf-8", "surrogateescape")
            try:
                os.setxattr(target, name, data, follow_symlinks=follow)
            except OSError as e:
                if e.errno not in (
                    errno.EPERM,
                    errno.EACCES,
                    errno.ENOTSUP,
                    errno.EOPNOTSUPP,
                    errno.EINVAL,
                    errno.ERANGE,
                    errno.E2BIG,
                ):
                    raise
                self.stats.skipped.append(f"{path}: xattr {name} not set ({e.strerror})")

    def _set_opaque(self, dir_fd: int, member: str) -> None:
        try:
            os.setxattr(dir_fd, self.prefix + "opaque", b"y")
        except OSError as e:
            raise LayerError(
                f"layer member {member!r}: cannot set xattr {self.prefix}opaque: "
                f"{e.strerror} (rootless stores need xattr_prefix=OVERLAY_USER and "
                "a filesystem with user xattrs)"
            ) from e

    def _meta_fd(self, fd: int, m: tarfile.TarInfo, path: str) -> None:
        if self.same_owner:
            os.fchown(fd, m.uid, m.gid)
        os.fchmod(fd, self._mode(m))  # after chown, which clears setuid
        self._xattrs(fd, m, path, True)
        ns = self._ns(m)
        os.utime(fd, ns=(ns, ns))

    def _meta_at(self, pfd: int, leaf: str, m: tarfile.TarInfo, path: str, chmod: bool) -> None:
        if self.same_owner:
            os.chown(leaf, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        if chmod:  # a node we just made, never a symlink
            os.chmod(leaf, self._mode(m), dir_fd=pfd)
        self._xattrs(_proc_path(pfd, leaf), m, path, False)
        ns = self._ns(m)
        os.utime(leaf, ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)

    # -- members ----------------------------------------------------------

    def _clear(
        self, pfd: int, leaf: str, parts: tuple[str, ...], keep_dir: bool
    ) -> os.stat_result | None:
        """Remove what is at `leaf` so a later member replaces it; keep a dir for a dir."""
        try:
            st = os.stat(leaf, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return st
            _rmtree_at(pfd, leaf)
            n = len(parts)
            for key in [k for k in self._dirs if k[:n] == parts]:
                del self._dirs[key]
        else:
            os.unlink(leaf, dir_fd=pfd)
        return st

    def extract(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        name = m.name
        parts = self._split(name, name)
        if parts and parts[-1].startswith(_WH):
            self._whiteout(parts, m)
            return
        if not parts:
            if not m.isdir():
                raise _hostile(name, "names the root but is not a directory")
            self._dir_meta(self.root_fd, (), m, ".")
            self.stats.dirs += 1
            return
        path = "/".join(parts)
        pfd = self._parent_fd(parts[:-1], name)
        leaf = parts[-1]
        if m.isdir():
            prev = self._clear(pfd, leaf, parts, keep_dir=True)
            if prev is None or not stat.S_ISDIR(prev.st_mode):
                os.mkdir(leaf, 0o700, dir_fd=pfd)
            fd = os.open(leaf, _DIR_FLAGS, dir_fd=pfd)
            try:
                if prev is not None and is_whiteout(prev):
                    self._set_opaque(fd, name)  # `.wh.D` and `D/` in one layer
                self._dir_meta(fd, parts, m, path)
            finally:
                os.close(fd)
            self.stats.dirs += 1
        elif m.isreg():
            self._clear(pfd, leaf, parts, keep_dir=False)
            fd = os.open(
                leaf,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=pfd,
            )
            try:
                src = tf.extractfile(m)
                if src is not None:
                    with open(fd, "wb", closefd=False) as dst:
                        while True:
                            chunk = src.read(_CHUNK)
                            if not chunk:
                                break
                            dst.write(chunk)
                self._meta_fd(fd, m, path)
            finally:
                os.close(fd)
            self.stats.files += 1
        elif m.issym():
            self._clear(pfd, leaf, parts, keep_dir=False)
            os.symlink(m.linkname, leaf, dir_fd=pfd)
            self._meta_at(pfd, leaf, m, path, chmod=False)
            self.stats.links += 1
        elif m.islnk():
            self._hardlink(pfd, leaf, parts, m)
        elif m.ischr() or m.isblk():
            kind = "character" if m.ischr() else "block"
            if not self.privileged:
                self.stats.skipped.append(
                    f"{path}: {kind} device {m.devmajor}:{m.devminor} skipped (not privileged)"
                )
                self._skipped_paths.add(parts)
                return
            self._clear(pfd, leaf, parts, keep_dir=False)
            fmt = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            os.mknod(leaf, fmt | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=pfd)
            self._meta_at(pfd, leaf, m, path, chmod=True)
            self.stats.files += 1
        elif m.isfifo():
            self._clear(pfd, leaf, parts, keep_dir=False)
            os.mkfifo(leaf, 0o600, dir_fd=pfd)
            self._meta_at(pfd, leaf, m, path, chmod=True)
            self.stats.files += 1
        else:
            raise _hostile(name, f"unsupported tar member type {m.type!r}")

    def _dir_meta(self, fd: int, parts: tuple[str, ...], m: tarfile.TarInfo, path: str) -> None:
        if self.same_owner:
            os.fchown(fd, m.uid, m.gid)
        self._xattrs(fd, m, path, True)
        # mode and mtime last: children change the mtime, a 0o500 mode stops writes
        self._dirs[parts] = (self._mode(m), self._ns(m))

    def _hardlink(self, pfd: int, leaf: str, parts: tuple[str, ...], m: tarfile.TarInfo) -> None:
        name = m.name
        target = self._split(m.linkname, name, "hard link target")
        if not target:
            raise _hostile(name, "hard link target is the root directory")
        if target in self._skipped_paths:
            self.stats.skipped.append(
                f"{'/'.join(parts)}: hard link skipped (its target {'/'.join(target)} was skipped)"
            )
            self._skipped_paths.add(parts)
            return
        try:
            tfd = self._open_dir(target[:-1], name, f"hard link target {m.linkname!r}:")
        except FileNotFoundError:
            raise _hostile(name, f"hard link target {m.linkname!r} is not in the layer") from None
        try:
            try:
                tst = os.stat(target[-1], dir_fd=tfd, follow_symlinks=False)
            except FileNotFoundError:
                raise _hostile(
                    name, f"hard link target {m.linkname!r} is not in the layer"
                ) from None
            if stat.S_ISDIR(tst.st_mode):
                raise _hostile(name, f"hard link target {m.linkname!r} is a directory")
            try:
                cur = os.stat(leaf, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                cur = None
            if cur is not None and (cur.st_dev, cur.st_ino) == (tst.st_dev, tst.st_ino):
                self.stats.links += 1  # already that very file
                return
            self._clear(pfd, leaf, parts, keep_dir=False)
            try:
                os.link(target[-1], leaf, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                raise _hostile(
                    name, f"hard link target {m.linkname!r} is not in the layer"
                ) from None
        finally:
            os.close(tfd)
        self.stats.links += 1

    def _whiteout(self, parts: tuple[str, ...], m: tarfile.TarInfo) -> None:
        name = m.name
        base = parts[-1]
        pfd = self._parent_fd(parts[:-1], name)
        if base == _WH_OPAQUE:
            self._set_opaque(pfd, name)
            self.stats.whiteouts += 1
            return
        if base.startswith(_WH_META):
            self.stats.skipped.append(f"{'/'.join(parts)}: aufs metadata skipped")
            return
        hidden = base[len(_WH) :]
        if hidden in ("", ".", ".."):
            raise _hostile(name, f"whiteout names {hidden!r}")
        try:
            st = os.stat(hidden, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is None:
            try:
                os.mknod(hidden, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
            except OSError as e:
                raise LayerError(
                    f"layer member {name!r}: cannot create an overlay whiteout "
                    f"(0/0 character device): {e.strerror} (needs root or Linux >= 5.8)"
                ) from e
        elif stat.S_ISDIR(st.st_mode):
            # The whiteout hides the lower layers' D; this layer's own D stays.
            fd = os.open(hidden, _DIR_FLAGS, dir_fd=pfd)
            try:
                self._set_opaque(fd, name)
            finally:
                os.close(fd)
        # else: a non-directory of this layer already hides the lower ones
        self.stats.whiteouts += 1

    def finish(self) -> None:
        """Set directory modes and mtimes, deepest first."""
        self.close()
        for parts in sorted(self._dirs, key=len, reverse=True):
            mode, ns = self._dirs[parts]
            try:
                fd = self._open_dir(parts, "/".join(parts) or ".")
            except (FileNotFoundError, LayerError):
                continue  # replaced by a later member
            try:
                os.fchmod(fd, mode)
                os.utime(fd, ns=(ns, ns))
            finally:
                os.close(fd)


def extract_layer(
    src: Readable | str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    xattr_prefix: str = OVERLAY_TRUSTED,
    privileged: bool = False,
    same_owner: bool | None = None,
    allow_bare_end: bool = False,
    pipelined: bool = True,
    budget: Budget | None = None,
) -> ExtractStats:
    """Unpack one OCI layer tar into the empty directory `dest`, ready to be an overlay layer.

    `src` is a path (opened with `open_layer`) or a binary stream, compressed
    or not (sniffed). OCI whiteouts become overlayfs ones: ``.wh.NAME`` a 0/0
    character device NAME, ``D/.wh..wh..opq`` the xattr ``<prefix>opaque=y``
    on D wherever it stands in the tar. A whiteout and an entry of the same
    name in one layer keep the entry (a directory then becomes opaque), since
    whiteouts hide lower layers only.

    Device nodes are made only when `privileged`, else listed in
    ``skipped``. Owners are set when `same_owner` (default: running as
    root); without it setuid/setgid bits are dropped. A member that would
    land or link outside `dest`, or write through a symlink, raises
    LayerError naming it, as does a truncated or corrupt tar. On error `dest`
    is left half written: extract into a temporary folder, then rename.
    `allow_bare_end` accepts a tar that stops at a member boundary without
    the end-of-archive blocks (for digest-verified blobs; see `check_end`).
    `pipelined` reads, decompresses and parses the tar in a second thread
    while this one makes the files: the system calls (the bulk of the time
    on most disks) release the GIL, so the two overlap.
    `budget` (`limits.Budget`) is charged every member's header and apparent
    size before it is made: a bomb is refused before it fills the disk.
    """
    if same_owner is None:
        same_owner = os.geteuid() == 0
    try:
        root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise LayerError(f"cannot open layer destination {os.fspath(dest)!r}: {e}") from e
    ex = _Extractor(
        root_fd, xattr_prefix=xattr_prefix, privileged=privileged, same_owner=same_owner
    )
    owned: BinaryIO | None = None
    stream: Stream | None = None
    try:
        if isinstance(src, (str, os.PathLike)):
            try:
                owned = stream = open_layer(src)
            except OSError as e:
                raise LayerError(f"cannot open layer {os.fspath(src)!r}: {e}") from e
        else:
            stream = _sniff_stream(src)
        reader = _Reader(stream)
        try:
            # a stream ("r|") is only read; typeshed asks every fileobj for write and seek too
            tf = tarfile.open(fileobj=reader, mode="r|")  # type: ignore[call-overload]
        except tarfile.TarError as e:
            raise _corrupt(f"not a tar archive ({e})") from e
        with tf:
            if pipelined:
                _extract_pipelined(tf, reader, ex, allow_bare_end, budget)
            else:
                for m, _ in _members(tf, reader, allow_bare_end, read_data=False, budget=budget):
                    _extract_one(ex, tf, m)
        try:
            ex.finish()
        except OSError as e:
            raise LayerError(f"cannot set directory metadata in {os.fspath(dest)!r}: {e}") from e
        return ex.stats
    finally:
        ex.close()
        os.close(root_fd)
        if owned is not None:
            owned.close()
        elif stream is not None and stream is not src:
            stream.close()


def _members(tf: tarfile.TarFile, reader: _Reader, allow_bare_end: bool, *, read_data: bool,
             budget: Budget | None = None):
    """(member, its data or None) in tar order, then the end-of-archive check."""
    bare_end = False
    while True:
        try:
            m = tf.next()
        except tarfile.TarError as e:
            # umoci (Go's archive/tar never closed) can end a layer inside the
            # last member's zero padding: fine when a digest vouches for it
            if allow_bare_end and str(e) == "unexpected end of data" and tf.offset - reader.pos < tarfile.BLOCKSIZE:
                bare_end = True
                break
            raise _corrupt(str(e)) from e
        except (ValueError, UnicodeError, OverflowError, EOFError) as e:
            raise _corrupt(f"bad tar header: {e}") from e
        if m is None:
            break
        if budget is not None:  # m.size is the apparent size, also of a sparse member
            budget.charge(tarfile.BLOCKSIZE + max(m.size, 0), m.name)
        # stream mode keeps them all otherwise (typeshed leaves the real attribute out)
        tf.members.clear()  # type: ignore[attr-defined]
        yield m, (tf.extractfile(m) if read_data and m.isreg() else None)
    if not bare_end:
        reader.check_end(tf.offset, allow_bare_end=allow_bare_end)


def _extract_one(ex: _Extractor, tf: object, m: tarfile.TarInfo) -> None:
    try:
        ex.extract(tf, m)  # type: ignore[arg-type]
    except LayerError:
        raise
    except tarfile.TarError as e:
        raise _corrupt(f"member {m.name!r}: {e}") from e
    except (OSError, ValueError, OverflowError) as e:
        raise LayerError(f"cannot extract layer member {m.name!r}: {e}") from e


_SMALL = 1 << 20  # files up to this size travel between the threads in one piece
_QUEUE = 64  # members in flight: at most _QUEUE * _SMALL bytes buffered
_END = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Chunks:
    """A big file's data, handed over piece by piece (bounded, so memory stays small)."""

    def __init__(self, producer_done: object) -> None:
        import queue

        self.q: queue.Queue = queue.Queue(maxsize=8)
        self._producer_done = producer_done
        self._buf = b""
        self._done = False

    def read(self, n: int = -1) -> bytes:
        import queue

        while not self._buf and not self._done:
            try:
                item = self.q.get(timeout=0.2)
            except queue.Empty:
                if self._producer_done.is_set() and self.q.empty():  # type: ignore[attr-defined]
                    raise _corrupt("the reading thread stopped in the middle of a member") from None
                continue
            if item is None:
                self._done = True
            elif isinstance(item, _Failed):
                raise item.exc
            else:
                self._buf = item
        if n is None or n < 0:
            n = len(self._buf)
        data, self._buf = self._buf[:n], self._buf[n:]
        return data


class _Handed:
    """Stands for the TarFile in the making thread: `extractfile` gives the handed-over data."""

    def __init__(self) -> None:
        self.data: object = None

    def extractfile(self, _m: tarfile.TarInfo) -> object:
        return self.data


def _extract_pipelined(tf: tarfile.TarFile, reader: _Reader, ex: _Extractor, allow_bare_end: bool,
                       budget: Budget | None = None) -> None:
    import queue
    import threading

    members: queue.Queue = queue.Queue(maxsize=_QUEUE)
    stop = threading.Event()
    done = threading.Event()

    def put(q: queue.Queue, item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for m, data in _members(tf, reader, allow_bare_end, read_data=True, budget=budget):
                if data is None:
                    if not put(members, (m, None)):
                        return
                    continue
                chunks = None
                try:
                    if m.size <= _SMALL:
                        item: object = io.BytesIO(data.read())
                        if not put(members, (m, item)):
                            return
                        continue
                    chunks = _Chunks(done)
                    if not put(members, (m, chunks)):
                        return
                    while True:
                        piece = data.read(_CHUNK)
                        if not put(chunks.q, piece or None) or not piece:
                            break
                except BaseException as e:
                    error = _corrupt(f"member {m.name!r}: {e}") if isinstance(e, (tarfile.TarError, OSError, ValueError)) else e
                    if error is not e:
                        error.__cause__ = e  # before it crosses threads: `disk_full` looks for ENOSPC there
                    if chunks is not None:  # the making thread waits on this member's data
                        put(chunks.q, _Failed(error))
                    if error is e:
                        raise
                    raise error from e
            put(members, _END)
        except BaseException as e:  # handed to the making thread, which raises it
            put(members, _Failed(e))
        finally:
            done.set()

    thread = threading.Thread(target=produce, name="hermetic-untar", daemon=True)
    thread.start()
    handed = _Handed()
    try:
        while True:
            item = members.get()
            if item is _END:
                break
            if isinstance(item, _Failed):
                raise item.exc
            m, handed.data = item
            _extract_one(ex, handed, m)
    finally:
        stop.set()
        thread.join()  # the reader is the caller's again (it drains and verifies it on errors)


# --------------------------------------------------------------------------
# writing


class _HashingWriter:
    """Writes through to `out`, hashing and counting on the way."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self._out.write(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._out.flush()


def _norm_rel(path: str) -> str:
    return "/".join(p for p in path.split("/") if p not in ("", "."))


def _read_xattrs(dir_fd: int, name: str) -> dict[str, bytes]:
    path = _proc_path(dir_fd, name)
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
    root: str | os.PathLike[str], out: BinaryIO, overlay: str | None, exclude: Iterable[str]
) -> LayerDigests:
    """Deterministic PAX tar of `root` (depth first, names sorted by bytes).

    With `overlay` (an xattr prefix) the tree is an overlay upper folder and
    its whiteouts and opaque directories become OCI ones.
    """
    skip = {_norm_rel(e) for e in exclude}
    writer = _HashingWriter(out)
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
                tf.addfile(marker(_WH_OPAQUE))
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
                    tf.addfile(marker(prefix + _WH + name))
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
            ti.uid, ti.gid = st.st_uid, st.st_gid
            ti.uname = ti.gname = ""
            ti.mtime = st.st_mtime_ns // 1_000_000_000
            ti.pax_headers = {
                _XATTR_PAX + key: xattrs[key].decode("utf-8", "surrogateescape")
                for key in sorted(xattrs) if not key.startswith(_OVERLAY_PREFIXES)
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
                    tf.addfile(marker(rel + "/" + _WH_OPAQUE))
                cfd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
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
    return LayerDigests(diff_id="sha256:" + writer.sha.hexdigest(), size=writer.size)


def write_layer_from_upper(
    upper: str | os.PathLike[str],
    out: BinaryIO,
    *,
    xattr_prefix: str = OVERLAY_TRUSTED,
    exclude: Iterable[str] = (),
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
    """
    return _write_tree(upper, out, xattr_prefix, exclude)


def write_layer_from_dir(root: str | os.PathLike[str], out: BinaryIO) -> LayerDigests:
    """A plain root filesystem folder -> deterministic uncompressed layer tar (`dir:` import).

    Same format as `write_layer_from_upper` but nothing is read as a
    whiteout; overlayfs-private xattrs are still left out.
    """
    return _write_tree(root, out, None, ())
