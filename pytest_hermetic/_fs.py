"""Small file-system helpers shared by the store, networks and the container state."""

from __future__ import annotations

import fcntl
import os
import stat


def lock_file(path: str, how: int) -> int:
    """An fd of the file `path` (made if missing) holding `fcntl.flock(how)`;
    closing it releases.  `hermetic gc` removes lock files nobody holds: a
    lock taken on a file it unlinked meanwhile is on no path any more, so the
    file is opened again until the lock held is the one `path` names."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, how)
            held = os.fstat(fd)
            try:
                now = os.stat(path)
            except FileNotFoundError:
                now = None
        except BaseException:
            os.close(fd)
            raise
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            return fd
        os.close(fd)


def flock(path: str, *, shared: bool = False) -> "Held":
    """Hold a lock on the file `path` (made if missing) between processes and
    threads: exclusive, or shared with other shared holders (`with flock(path):`)."""
    return Held(path, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)


class Held:
    """`flock`'s lock, taken on entering the `with` block and let go on
    leaving it.  A class, not `contextlib.contextmanager`: contextlib (with
    functools and collections) is ~2 ms of a `hermetic run`'s start."""

    def __init__(self, path: str, how: int) -> None:
        self._path = path
        self._how = how
        self._fd: int | None = None

    def __enter__(self) -> None:
        self._fd = lock_file(self._path, self._how)

    def __exit__(self, *exc_info: object) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def rmtree(path: str) -> None:
    """Remove a tree of any depth: also one holding directories without write
    or search permission (overlayfs work dirs) and 0/0 whiteout devices.

    Iterative and fd-based, one directory open at a time: a layer may nest
    thousands of levels, deeper than Python's recursion limit (which
    `shutil.rmtree` hits before 3.13) and than PATH_MAX.  Never follows a
    symlink.  Gone already is fine.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    try:
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
            return
        parent = os.open(os.path.dirname(os.path.abspath(path)) or "/", _DIR)
    except FileNotFoundError:  # removed by another process meanwhile
        return
    try:
        _remove_dir(parent, os.path.basename(os.path.abspath(path)))
    finally:
        os.close(parent)


def _open_dir(parent: int, name: str) -> int:
    try:
        fd = os.open(name, _DIR, dir_fd=parent)
    except PermissionError:
        os.chmod(name, 0o700, dir_fd=parent, follow_symlinks=False)
        fd = os.open(name, _DIR, dir_fd=parent)
    if os.fstat(fd).st_mode & 0o700 != 0o700:
        try:
            os.fchmod(fd, 0o700)  # entries in it can then be removed (root needs no such bits)
        except OSError:
            pass
    return fd


def _remove_dir(top_parent: int, top: str) -> None:
    # stack: (name of a directory, names in it still to visit); the one fd held
    # is the deepest directory's, and the way back up is "..".  What cannot be
    # removed (a mount point, an immutable file) is left, as shutil's onerror did.
    try:
        fd = _open_dir(top_parent, top)
    except OSError:
        return
    stack: list[tuple[str, list[str]]] = [(top, _listdir(fd))]
    try:
        while stack:
            name, left = stack[-1]
            descended = False
            while left:
                entry = left.pop()
                try:
                    os.unlink(entry, dir_fd=fd)
                    continue
                except IsADirectoryError:
                    pass
                except PermissionError:  # EPERM is also what unlink(2) may say for a directory
                    try:
                        if not stat.S_ISDIR(os.lstat(entry, dir_fd=fd).st_mode):
                            continue
                    except OSError:
                        continue
                except OSError:
                    continue
                try:
                    child = _open_dir(fd, entry)
                except OSError:
                    continue
                os.close(fd)
                fd = child
                stack.append((entry, _listdir(fd)))
                descended = True
                break
            if descended:
                continue
            stack.pop()
            try:
                up = top_parent if not stack else os.open("..", _DIR, dir_fd=fd)
            except FileNotFoundError:  # another process removed this branch meanwhile: it finishes it
                return
            os.close(fd)
            fd = up
            try:
                os.rmdir(name, dir_fd=fd)
            except OSError:
                pass
    finally:
        if fd != top_parent:
            os.close(fd)


def _listdir(fd: int) -> list[str]:
    try:
        return os.listdir(fd)
    except OSError:
        return []
