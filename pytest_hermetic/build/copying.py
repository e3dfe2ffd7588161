"""Copying trees with the `*at` calls: no symlink on the way is ever followed.

Shared by the three places COPY moves files: the build context into a
staging folder (on the host), a stage's files out of its container
(`COPY --from`), and staged files into the container of the step (at the
destination, resolved inside the container's root after its pivot, so a
symlink in the image resolves in the image, never on the host).  Each node
is opened from its parent's descriptor with O_NOFOLLOW; a symlink is copied
as a symlink; sockets and devices are left out (a build copies files).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def listing(dir_fd: int) -> list[str]:
    return sorted(os.listdir(dir_fd), key=os.fsencode)


def copy_node(src_fd: int, name: str, dst_fd: int, dst_name: str, *, owner: tuple[int, int] | None = None,
              chmod: int | None = None, mtime: int | None = None, rel: str = "",
              skip: Callable[[str], bool] | None = None) -> None:
    """Copy `name` (under `src_fd`) to `dst_name` (under `dst_fd`), folders
    whole.  `owner`: (uid, gid) for everything, else the source's; `chmod`:
    the mode of everything, else the source's; `mtime`: seconds for
    everything, else the source's.  `skip(rel)` leaves a path out
    (`rel` is `name`'s path as the caller counts it)."""
    st = os.stat(name, dir_fd=src_fd, follow_symlinks=False)
    uid, gid = owner if owner is not None else (st.st_uid, st.st_gid)
    mode = chmod if chmod is not None else stat.S_IMODE(st.st_mode)
    times = (mtime * 10**9, mtime * 10**9) if mtime is not None else (st.st_mtime_ns, st.st_mtime_ns)
    if stat.S_ISDIR(st.st_mode):
        try:
            os.mkdir(dst_name, 0o700, dir_fd=dst_fd)
        except FileExistsError:
            if not stat.S_ISDIR(os.stat(dst_name, dir_fd=dst_fd, follow_symlinks=False).st_mode):
                os.unlink(dst_name, dir_fd=dst_fd)
                os.mkdir(dst_name, 0o700, dir_fd=dst_fd)
        sfd = os.open(name, DIR, dir_fd=src_fd)
        try:
            dfd = os.open(dst_name, DIR, dir_fd=dst_fd)
            try:
                for child in listing(sfd):
                    child_rel = f"{rel}/{child}" if rel else child
                    if skip is not None and skip(child_rel):
                        continue
                    copy_node(sfd, child, dfd, child, owner=owner, chmod=chmod, mtime=mtime, rel=child_rel, skip=skip)
                os.fchown(dfd, uid, gid)
                os.fchmod(dfd, mode)
                os.utime(dfd, ns=times)
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)
        return
    if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        remove(dst_fd, dst_name)
    if stat.S_ISREG(st.st_mode):
        sfd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_fd)
        try:
            dfd = os.open(dst_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                          dir_fd=dst_fd)
            try:
                _copy_bytes(sfd, dfd)
                os.fchown(dfd, uid, gid)
                os.fchmod(dfd, mode)  # after the chown, which clears set-id bits
                os.utime(dfd, ns=times)
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)
    elif stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(name, dir_fd=src_fd), dst_name, dir_fd=dst_fd)
        os.chown(dst_name, uid, gid, dir_fd=dst_fd, follow_symlinks=False)
        os.utime(dst_name, ns=times, dir_fd=dst_fd, follow_symlinks=False)
    elif stat.S_ISFIFO(st.st_mode):
        os.mkfifo(dst_name, 0o600, dir_fd=dst_fd)
        os.chown(dst_name, uid, gid, dir_fd=dst_fd, follow_symlinks=False)
        os.chmod(dst_name, mode, dir_fd=dst_fd)
        os.utime(dst_name, ns=times, dir_fd=dst_fd, follow_symlinks=False)


def remove(dir_fd: int, name: str) -> None:
    """Make room for a non-folder: what is there goes (a folder with all in it)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(name, DIR, dir_fd=dir_fd)
        try:
            for child in listing(fd):
                remove(fd, child)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def _copy_bytes(src: int, dst: int) -> None:
    while True:
        try:
            copied = os.copy_file_range(src, dst, 1 << 30)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            break
        if copied == 0:
            return
    while True:
        data = os.read(src, 1 << 20)
        if not data:
            return
        os.write(dst, data)


def hash_node(src_fd: int, name: str, out: hashlib._Hash, *, rel: str, skip: Callable[[str], bool] | None = None,
              owners: bool = False) -> None:
    """Feed `out` what a copy of `name` would make: paths, types, modes,
    contents, link targets (and owners with `owners`), never times."""
    st = os.stat(name, dir_fd=src_fd, follow_symlinks=False)
    head = f"{rel}\0{stat.S_IFMT(st.st_mode):o}\0{stat.S_IMODE(st.st_mode):o}\0"
    if owners:
        head += f"{st.st_uid}:{st.st_gid}\0"
    out.update(os.fsencode(head))
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(name, DIR, dir_fd=src_fd)
        try:
            for child in listing(fd):
                child_rel = f"{rel}/{child}" if rel else child
                if skip is None or not skip(child_rel):
                    hash_node(fd, child, out, rel=child_rel, skip=skip, owners=owners)
        finally:
            os.close(fd)
    elif stat.S_ISREG(st.st_mode):
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_fd)
        try:
            digest = hashlib.sha256()
            while True:
                data = os.read(fd, 1 << 20)
                if not data:
                    break
                digest.update(data)
        finally:
            os.close(fd)
        out.update(digest.digest())
    elif stat.S_ISLNK(st.st_mode):
        out.update(os.fsencode(os.readlink(name, dir_fd=src_fd)))
    out.update(b"\n")
