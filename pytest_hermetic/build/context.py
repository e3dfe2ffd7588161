"""The build context: the folder COPY and ADD read, never anything outside it.

Every source is resolved from the context's descriptor with openat2's
RESOLVE_IN_ROOT: `..` and symlinks (also absolute ones) stay inside the
context, as BuildKit scopes them, so `COPY ../x` is refused and a link to
/etc/passwd names the context's own `etc/passwd`.  Inside a copied folder
symlinks are copied as symlinks (`copying.py`).  Paths left out by
`.containerignore` (or `.dockerignore`) are not in the context at all.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import posixpath
import stat

from .._record import record
from ..errors import BuildError
from ..runtime import syscalls as sc
from ..errors import LayerError
from ..images.layers import extract_layer, open_layer_stream
from . import copying, ignore

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO


@record
class Source:
    """One path a COPY source names (a glob gives several)."""

    rel: str  # as named, relative to the context ("" for the context itself)
    real: str  # where it resolved, relative to the context
    is_dir: bool


class Context:
    def __init__(self, path: str, containerfile: str | None = None) -> None:
        self.path = os.path.realpath(path)
        if not os.path.isdir(self.path):
            raise BuildError(f"the build context {path} is not a folder")
        self.patterns = ignore.read(self.path, containerfile)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self.fd)

    def excluded(self, rel: str) -> bool:
        return bool(rel) and ignore.excluded(self.patterns, rel)

    def _open(self, rel: str, flags: int = os.O_PATH) -> int:
        return sc.openat2(self.fd, rel or ".", flags | os.O_CLOEXEC, sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS)

    def _real(self, rel: str) -> str | None:
        """Where `rel` resolves inside the context (relative to it), None if nowhere."""
        try:
            fd = self._open(rel)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return None
            raise
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        if real == self.path:
            return ""
        if not real.startswith(self.path + "/"):  # cannot happen with RESOLVE_IN_ROOT; never trust it blindly
            raise BuildError(f"{rel}: resolves outside the build context")
        return real[len(self.path) + 1:]

    def sources(self, text: str, what: str) -> list[Source]:
        """The context paths a COPY/ADD source names (a glob may name several)."""
        cleaned = posixpath.normpath("/" + text).lstrip("/")  # `/x` is the context's x, as in Docker
        raw = posixpath.normpath(text)
        if raw == ".." or raw.startswith("../"):
            raise BuildError(f"{what}: {text}: outside the build context; COPY and ADD read only the context "
                             f"{self.path} (move the file into it, or give a context folder above it)")
        cleaned = "" if cleaned == "." else cleaned
        names = self._glob(cleaned) if any(c in cleaned for c in "*?[") else [cleaned]
        found = []
        for rel in names:
            if self.excluded(rel):
                continue
            real = self._real(rel)
            if real is None and os.path.islink(self._abs(rel)):
                raise BuildError(f"{what}: {text}: a symlink to {os.readlink(self._abs(rel))}, which is not in the "
                                 "build context (symlinks resolve inside the context, never on the host)")
            if real is None or self.excluded(real):
                continue
            st = os.stat(self._abs(real), follow_symlinks=False)
            found.append(Source(rel, real, stat.S_ISDIR(st.st_mode)))
        if not found:
            raise BuildError(f"{what}: {text}: no such file or folder in the build context {self.path}"
                             + (" (or left out by .containerignore)" if self.patterns else ""))
        return found

    def _abs(self, real: str) -> str:
        return os.path.join(self.path, real) if real else self.path

    def _glob(self, pattern: str) -> list[str]:
        paths = [""]
        for part in pattern.split("/"):
            following = []
            for base in paths:
                if not any(c in part for c in "*?["):
                    following.append(f"{base}/{part}" if base else part)
                    continue
                try:
                    fd = self._open(base, os.O_RDONLY | os.O_DIRECTORY)
                except OSError:
                    continue
                try:
                    names = copying.listing(fd)
                finally:
                    os.close(fd)
                following += [f"{base}/{n}" if base else n for n in names if fnmatch.fnmatchcase(n, part)]
            paths = following
        return paths

    def digest(self, sources: list[Source]) -> str:
        """The content hash of `sources` (what a copy of them makes; not their times)."""
        out = hashlib.sha256()
        for source in sources:
            parent, name = self._parent(source)
            try:
                out.update(os.fsencode(f"{source.rel}\0{int(source.is_dir)}\0"))
                copying.hash_node(parent, name, out, rel=source.real, skip=self.excluded)
            finally:
                os.close(parent)
        return "sha256:" + out.hexdigest()

    def stage(self, source: Source, dest_fd: int, dest_name: str, mtime: int) -> None:
        """Copy `source` to `dest_name` under `dest_fd` as the image gets it: owned by root (the
        caller, who is root in the step's container), modes kept, times `mtime`, left-out paths skipped."""
        parent, name = self._parent(source)
        try:
            copying.copy_node(parent, name, dest_fd, dest_name, owner=(os.geteuid(), os.getegid()), mtime=mtime,
                              rel=source.real, skip=self.excluded)
        finally:
            os.close(parent)

    def stage_all(self, sources: list[Source], staging: str, mtime: int, *, unpack: bool, xattr_prefix: str) -> None:
        """Every source into its slot of `staging` as `transfer.put` reads them (`N/d/` a folder's
        contents, `N/f/NAME` a file); with `unpack` (ADD) a tar is unpacked by the store's
        hostile-input-safe extractor instead."""
        for number, source in enumerate(sources):
            slot = os.path.join(staging, str(number))
            os.mkdir(slot, 0o755)
            slot_fd = os.open(slot, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                if source.is_dir:
                    self.stage(source, slot_fd, "d", mtime)
                    continue
                if unpack:
                    with open(self._open(source.real, os.O_RDONLY), "rb") as f:
                        if _is_tar(f):
                            os.mkdir(os.path.join(slot, "d"), 0o755)
                            extract_layer(f, os.path.join(slot, "d"), xattr_prefix=xattr_prefix)
                            continue
                os.mkdir("f", 0o755, dir_fd=slot_fd)
                leaf = os.open("f", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=slot_fd)
                try:
                    self.stage(source, leaf, os.path.basename(source.rel) or os.path.basename(self.path), mtime)
                finally:
                    os.close(leaf)
            finally:
                os.close(slot_fd)

    def _parent(self, source: Source) -> tuple[int, str]:
        """(an fd of the folder holding `source.real`, its name there); the context itself from its own parent."""
        if not source.real:
            return os.open(os.path.dirname(self.path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC), \
                os.path.basename(self.path)
        head, _, name = source.real.rpartition("/")
        return self._open(head, os.O_PATH | os.O_DIRECTORY), name


def _is_tar(f: "BinaryIO") -> bool:
    """Whether `f` holds a tar, plain or compressed (gzip, bzip2, xz, zstd): ADD unpacks those, as
    Docker does, and copies anything else (a gzip of one file too).  `f` is rewound."""
    head = b""
    try:
        stream = open_layer_stream(f)
        while len(head) < 512:
            data = stream.read(512 - len(head))
            if not data:
                break
            head += data
    except (LayerError, OSError, EOFError, ValueError):
        head = b""
    f.seek(0)
    return len(head) == 512 and head[257:262] == b"ustar"
