"""Hostile-safe extraction of one layer tar into an overlay layer folder.

Extraction trusts nothing in the tar. `tarfile`'s own extraction filters had
bypasses until mid-2025 interpreters, so they are not used at all: every
member path and every hard link target is resolved one component at a time
from a directory fd of the root, opening each component with ``O_NOFOLLOW``,
and every node is created with the ``*at`` calls relative to that fd. A
symlink in the tar may point anywhere (it is resolved inside the container
later) but is never followed here.

A failed extraction leaves `dest` half written: callers extract into a
temporary folder and rename it into place, deleting it on error.

One concern in ~550 lines: every hostile-input rule (paths, links,
whiteouts, owners, modes, xattrs) goes through the one walk from the root fd
in `_Extractor`, so they are read, and reviewed, in one place.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile

from ..._record import factory, record
TYPE_CHECKING = False
if TYPE_CHECKING:  # typing (and dataclasses) cost a pull ~20 ms of imports
    from typing import BinaryIO

    from ..limits import Budget
    from .decompress import Readable, Stream

from ...errors import LayerError
from .decompress import open_layer, sniff_stream
from .format import (CHUNK, DIR_FLAGS, OVERLAY_PREFIXES, OVERLAY_TRUSTED, WH, WH_META, WH_OPAQUE, XATTR_PAX, is_whiteout,
                     proc_path)
from .pipelined import extract_pipelined
from .tarstream import TarReader, corrupt, tar_members

_MAX_DEPTH = 2048  # deeper than PATH_MAX allows anyway


def member_mode(m: tarfile.TarInfo, same_owner: bool) -> int:
    """A member's permission bits as stored: no setuid/setgid bit unless its
    owner is kept too (a rootless store cannot give the file its owner)."""
    mode = m.mode & 0o7777
    if not same_owner:
        mode &= ~(stat.S_ISUID | stat.S_ISGID)
    return mode


def member_ns(m: tarfile.TarInfo) -> int:
    """A member's mtime in nanoseconds."""
    secs = int(m.mtime)  # PAX mtimes come as floats: keep whole seconds exact
    return secs * 1_000_000_000 + int(round((m.mtime - secs) * 1_000_000_000))


@record
class ExtractStats:
    """Counts of what `extract_layer` created, and what it left out and why."""

    files: int = 0  # regular files, fifos and device nodes
    dirs: int = 0
    links: int = 0  # symlinks and hard links
    whiteouts: int = 0  # whiteouts and opaque markers
    skipped: list[str] = factory(list)


def hostile(member: str, problem: str) -> LayerError:
    """The error for a member that breaks a rule: names it, says the layer is refused."""
    shown = repr(member) if len(member) <= 120 else f"{member[:60]!r}...({len(member)} characters)"
    return LayerError(f"refusing layer member {shown}: {problem}; the layer is hostile or corrupt")


_RESOLVE_NO_SYMLINKS, _RESOLVE_BENEATH = 0x04, 0x08  # openat2(2)
_openat2_works: bool | None = None


def _current_umask() -> int:
    """The process's umask, read without changing it (Linux 4.7+), else set and set back."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def split_path(name: str, member: str, what: str = "path") -> tuple[str, ...]:
    """Normalise a tar path: a leading "/" is dropped as Docker does, ".." refused."""
    if "\x00" in name:
        raise hostile(member, f"{what} contains a NUL byte")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise hostile(member, f"{what} {name!r} has a '..' component")
    if len(parts) > _MAX_DEPTH:
        raise hostile(member, f"{what} is {len(parts)} components deep")
    return parts


def _rmtree_at(parent_fd: int, name: str) -> None:
    """Remove the directory `name` in `parent_fd` and its contents, never following links."""
    fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    # (parent fd, name, fd, entries left to look at); iterative, a tar can nest deep
    stack: list[tuple[int, str, int, list[str]]] = [(parent_fd, name, fd, os.listdir(fd))]
    try:
        while stack:
            pfd, dname, dfd, left = stack[-1]
            while left:
                entry = left.pop()
                st = os.stat(entry, dir_fd=dfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    child = os.open(entry, DIR_FLAGS, dir_fd=dfd)
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
        # What a new file gets without a chown or chmod: its mode at creation
        # less the umask, our own ids (directories stay 0o700, without setgid,
        # until `finish`, so no group is inherited).
        self._umask = _current_umask()
        self._ids = (os.geteuid(), os.getegid())
        if os.fstat(root_fd).st_mode & stat.S_ISGID:  # new files take the folder's group: chown them all
            self._ids = (-1, -1)
        # fds of the directories on the path of the last member's parent
        self._stack: list[tuple[str, int]] = []
        # directories whose mode and mtime are set last: path -> (mode, mtime ns)
        self._dirs: dict[tuple[str, ...], tuple[int, int]] = {}
        self._skipped_paths: set[tuple[str, ...]] = set()

    # -- paths ------------------------------------------------------------

    def _child_dir(
        self, parent_fd: int, comp: str, member: str, create: bool, what: str = "path"
    ) -> int:
        """Open directory `comp` in `parent_fd` without following a symlink."""
        try:
            return os.open(comp, DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            if not create:
                raise
            os.mkdir(comp, 0o755, dir_fd=parent_fd)  # implied parent, as Docker does
            return os.open(comp, DIR_FLAGS, dir_fd=parent_fd)
        except OSError as e:
            try:
                st = os.stat(comp, dir_fd=parent_fd, follow_symlinks=False)
            except OSError:
                raise e from None
            if stat.S_ISDIR(st.st_mode):
                raise e from None  # EACCES, EMFILE...: not the layer's fault
            if stat.S_ISLNK(st.st_mode):
                raise hostile(
                    member,
                    f"{what} component {comp!r} is a symlink (extraction never "
                    "follows symlinks)",
                ) from None
            if create and is_whiteout(st):
                # `.wh.D` then `D/x` in the same layer: D is replaced, so opaque
                os.unlink(comp, dir_fd=parent_fd)
                os.mkdir(comp, 0o755, dir_fd=parent_fd)
                fd = os.open(comp, DIR_FLAGS, dir_fd=parent_fd)
                self._set_opaque(fd, member)
                return fd
            raise hostile(member, f"{what} component {comp!r} is not a directory") from None

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

    def _open_dir_beneath(self, parts: tuple[str, ...]) -> int:
        """`_open_dir` in one system call where the kernel has openat2 (5.6+): the
        whole path resolved beneath the root with no symlink followed."""
        global _openat2_works
        if _openat2_works is not False and parts:
            from ...runtime import syscalls as sc  # (ctypes: not for a start that unpacks nothing)

            try:
                fd = sc.openat2(self.root_fd, "/".join(parts), DIR_FLAGS, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS)
                _openat2_works = True
                return fd
            except OSError as e:
                if e.errno not in (errno.ENOSYS, errno.EPERM):  # (EPERM: a seccomp filter without it)
                    if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EXDEV):
                        raise FileNotFoundError(e.errno, e.strerror) from None
                    raise
                _openat2_works = False
        return self._open_dir(parts, "/".join(parts) or ".")

    def close(self) -> None:
        for _, fd in self._stack:
            os.close(fd)
        self._stack.clear()

    # -- metadata ---------------------------------------------------------

    def _mode(self, m: tarfile.TarInfo) -> int:
        return member_mode(m, self.same_owner)

    _ns = staticmethod(member_ns)

    def _xattrs(self, target: int | str, m: tarfile.TarInfo, path: str, follow: bool) -> None:
        for key, value in sorted(m.pax_headers.items()):
            if not key.startswith(XATTR_PAX):
                continue
            name = key[len(XATTR_PAX) :]
            if name.startswith(OVERLAY_PREFIXES):
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

    def _meta_fd(self, fd: int, m: tarfile.TarInfo, path: str, created: int | None = None) -> None:
        """Owner, mode, xattrs, mtime; `created`: the mode the file was opened with, whose
        chmod is left out when the umask kept it whole (most files: one system call less)."""
        if self.same_owner and (m.uid, m.gid) != self._ids:
            os.fchown(fd, m.uid, m.gid)
        mode = self._mode(m)
        if created is None or created != mode or mode & self._umask:
            os.fchmod(fd, mode)  # after chown, which clears setuid
        if m.pax_headers:
            self._xattrs(fd, m, path, True)
        ns = self._ns(m)
        os.utime(fd, ns=(ns, ns))

    def _meta_at(self, pfd: int, leaf: str, m: tarfile.TarInfo, path: str, chmod: bool) -> None:
        if self.same_owner and (m.uid, m.gid) != self._ids:
            os.chown(leaf, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        if chmod:  # a node we just made, never a symlink
            os.chmod(leaf, self._mode(m), dir_fd=pfd)
        if m.pax_headers:
            self._xattrs(proc_path(pfd, leaf), m, path, False)
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
        parts = split_path(name, name)
        if parts and parts[-1].startswith(WH):
            self._whiteout(parts, m)
            return
        if not parts:
            if not m.isdir():
                raise hostile(name, "names the root but is not a directory")
            self._dir_meta(self.root_fd, (), m, ".")
            self.stats.dirs += 1
            return
        path = "/".join(parts)
        pfd = self._parent_fd(parts[:-1], name)
        leaf = parts[-1]
        if m.isdir():
            prev = None
            try:
                os.mkdir(leaf, 0o700, dir_fd=pfd)
            except FileExistsError:
                prev = self._clear(pfd, leaf, parts, keep_dir=True)
                if prev is None or not stat.S_ISDIR(prev.st_mode):
                    os.mkdir(leaf, 0o700, dir_fd=pfd)
            fd = os.open(leaf, DIR_FLAGS, dir_fd=pfd)
            try:
                if prev is not None and is_whiteout(prev):
                    self._set_opaque(fd, name)  # `.wh.D` and `D/` in one layer
                self._dir_meta(fd, parts, m, path)
            finally:
                os.close(fd)
            self.stats.dirs += 1
        elif m.isreg():
            # Plain modes are given at creation (no chmod after); setuid and
            # setgid only after the chown, which would clear them.
            mode = self._mode(m)
            created = mode if not mode & (stat.S_ISUID | stat.S_ISGID) else 0o600
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            try:  # most members are new: clear what is there only when something is
                fd = os.open(leaf, flags, created, dir_fd=pfd)
            except FileExistsError:
                self._clear(pfd, leaf, parts, keep_dir=False)
                fd = os.open(leaf, flags, created, dir_fd=pfd)
            try:
                src = tf.extractfile(m) if m.size else None
                if src is not None:
                    while True:
                        chunk = src.read(CHUNK)
                        if not chunk:
                            break
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd, view):]
                self._meta_fd(fd, m, path, created)
            finally:
                os.close(fd)
            self.stats.files += 1
        elif m.issym():
            try:
                os.symlink(m.linkname, leaf, dir_fd=pfd)
            except FileExistsError:
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
            raise hostile(name, f"unsupported tar member type {m.type!r}")

    def _dir_meta(self, fd: int, parts: tuple[str, ...], m: tarfile.TarInfo, path: str) -> None:
        if self.same_owner and (m.uid, m.gid) != self._ids:
            os.fchown(fd, m.uid, m.gid)
        self._xattrs(fd, m, path, True)
        # mode and mtime last: children change the mtime, a 0o500 mode stops writes
        self._dirs[parts] = (self._mode(m), self._ns(m))

    def _hardlink(self, pfd: int, leaf: str, parts: tuple[str, ...], m: tarfile.TarInfo) -> None:
        name = m.name
        target = split_path(m.linkname, name, "hard link target")
        if not target:
            raise hostile(name, "hard link target is the root directory")
        if target in self._skipped_paths:
            self.stats.skipped.append(
                f"{'/'.join(parts)}: hard link skipped (its target {'/'.join(target)} was skipped)"
            )
            self._skipped_paths.add(parts)
            return
        try:
            tfd = self._open_dir(target[:-1], name, f"hard link target {m.linkname!r}:")
        except FileNotFoundError:
            raise hostile(name, f"hard link target {m.linkname!r} is not in the layer") from None
        try:
            try:
                tst = os.stat(target[-1], dir_fd=tfd, follow_symlinks=False)
            except FileNotFoundError:
                raise hostile(
                    name, f"hard link target {m.linkname!r} is not in the layer"
                ) from None
            if stat.S_ISDIR(tst.st_mode):
                raise hostile(name, f"hard link target {m.linkname!r} is a directory")
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
                raise hostile(
                    name, f"hard link target {m.linkname!r} is not in the layer"
                ) from None
        finally:
            os.close(tfd)
        self.stats.links += 1

    def _whiteout(self, parts: tuple[str, ...], m: tarfile.TarInfo) -> None:
        name = m.name
        base = parts[-1]
        pfd = self._parent_fd(parts[:-1], name)
        if base == WH_OPAQUE:
            self._set_opaque(pfd, name)
            self.stats.whiteouts += 1
            return
        if base.startswith(WH_META):
            self.stats.skipped.append(f"{'/'.join(parts)}: aufs metadata skipped")
            return
        hidden = base[len(WH) :]
        if hidden in ("", ".", ".."):
            raise hostile(name, f"whiteout names {hidden!r}")
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
            fd = os.open(hidden, DIR_FLAGS, dir_fd=pfd)
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
                fd = self._open_dir_beneath(parts)
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
    try:
        feed_members(src, ex, allow_bare_end=allow_bare_end, pipelined=pipelined, budget=budget)
        try:
            ex.finish()
        except OSError as e:
            raise LayerError(f"cannot set directory metadata in {os.fspath(dest)!r}: {e}") from e
        return ex.stats
    finally:
        ex.close()
        os.close(root_fd)


def feed_members(src: Readable | str | os.PathLike[str], maker: object, *, allow_bare_end: bool = False,
                 pipelined: bool = True, budget: Budget | None = None) -> None:
    """Read the layer `src` (a path or a stream, sniffed) and hand each member to `maker.extract(tf, m)`.

    Shared by extraction into a folder and by the EROFS image writer
    (`erofs.py`): the same tar reading, end-of-archive check, budget and
    (when `pipelined`) reading thread for both.
    """
    owned: BinaryIO | None = None
    stream: Stream | None = None
    try:
        if isinstance(src, (str, os.PathLike)):
            try:
                owned = stream = open_layer(src)
            except OSError as e:
                raise LayerError(f"cannot open layer {os.fspath(src)!r}: {e}") from e
        else:
            stream = sniff_stream(src)
        reader = TarReader(stream)
        try:
            # a stream ("r|") is only read; typeshed asks every fileobj for write and seek too
            tf = tarfile.open(fileobj=reader, mode="r|")  # type: ignore[call-overload]
        except tarfile.TarError as e:
            raise corrupt(f"not a tar archive ({e})") from e
        with tf:
            if pipelined:
                handed = _Handed()

                def make(m: tarfile.TarInfo, data: object) -> None:
                    handed.data = data
                    _extract_one(maker, handed, m)

                extract_pipelined(tar_members(tf, reader, allow_bare_end, read_data=True, budget=budget), make)
            else:
                for m, _ in tar_members(tf, reader, allow_bare_end, read_data=False, budget=budget):
                    _extract_one(maker, tf, m)
    finally:
        if owned is not None:
            owned.close()
        elif stream is not None and stream is not src:
            stream.close()


def _extract_one(ex: object, tf: object, m: tarfile.TarInfo) -> None:
    try:
        ex.extract(tf, m)  # type: ignore[attr-defined]
    except LayerError:
        raise
    except tarfile.TarError as e:
        raise corrupt(f"member {m.name!r}: {e}") from e
    except (OSError, ValueError, OverflowError) as e:
        raise LayerError(f"cannot extract layer member {m.name!r}: {e}") from e


class _Handed:
    """Stands for the TarFile in the making thread: `extractfile` gives the handed-over data."""

    def __init__(self) -> None:
        self.data: object = None

    def extractfile(self, _m: tarfile.TarInfo) -> object:
        return self.data
