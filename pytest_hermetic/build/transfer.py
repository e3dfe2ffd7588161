"""The two halves of COPY that run inside a container (as Python callables).

`export` runs in a container of the stage COPY --from names and copies the
paths it names out to a staging folder bound at MOUNT; `put` runs in the
container of the step and copies staged sources to the destination.  Both
run after the container's pivot_root, so every path (a glob, a symlink in
the image, the destination and the folders made for it) resolves inside
that container's root and never on the host: the same guarantee as the
volumes' openat2 RESOLVE_IN_ROOT, by construction.  Staging layout, one
folder per source: `N/d/` a folder's contents, or `N/f/NAME` one file.
Errors are one line on stderr and exit status 1; the builder reports it.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import posixpath

import sys

from . import copying

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

MOUNT = "/.hermetic-build"  # the staging folder inside a step's container (never in its layer)


def export(patterns: list[str], what: str) -> int:
    """Copy what `patterns` name (relative to the root, globs allowed) to MOUNT, keeping owners, modes and times."""
    return _one_line(what, _export, patterns, what)


def _one_line(what: str, work: Callable[..., int], *args: object) -> int:
    """A failure as one line on stderr (the builder's error names the step), not a traceback."""
    try:
        return work(*args)
    except OSError as exc:
        place = f" ({exc.filename})" if exc.filename else ""
        hint = ""
        if exc.errno in (errno.EINVAL, errno.EPERM) and _in_user_namespace():
            hint = "; a rootless build has only the ids /etc/subuid and /etc/subgid give its user"
        print(f"{what}: {exc.strerror or exc}{place}{hint}", file=sys.stderr)
        return 1


def _in_user_namespace() -> bool:
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split()[1:2] != ["0"]  # root inside is not root outside
    except OSError:
        return False


def _export(patterns: list[str], what: str) -> int:
    index = 0
    out = os.open(MOUNT, copying.DIR)
    try:
        for pattern in patterns:
            cleaned = posixpath.normpath("/" + pattern)
            matches = _glob(cleaned) if any(c in cleaned for c in "*?[") else [cleaned]
            matches = [m for m in matches if os.path.lexists(m) and not m.startswith(MOUNT)]
            if not matches:
                print(f"{what}: {pattern}: no such file or folder in the source", file=sys.stderr)
                return 1
            for path in matches:
                real = os.path.realpath(path)  # the source itself is followed, inside this root
                if not os.path.lexists(real):
                    print(f"{what}: {pattern}: a symlink to {real}, which is missing", file=sys.stderr)
                    return 1
                is_dir = os.path.isdir(real)
                os.mkdir(str(index), 0o700, dir_fd=out)
                slot = os.open(str(index), copying.DIR, dir_fd=out)
                parent = os.open(os.path.dirname(real), os.O_PATH | os.O_DIRECTORY)
                try:
                    name = os.path.basename(real) or "."
                    if is_dir:
                        copying.copy_node(parent, name, slot, "d") if real != "/" else _copy_root(slot)
                    else:
                        os.mkdir("f", 0o700, dir_fd=slot)
                        leaf = os.open("f", copying.DIR, dir_fd=slot)
                        try:
                            copying.copy_node(parent, name, leaf, os.path.basename(path))
                        finally:
                            os.close(leaf)
                finally:
                    os.close(parent)
                    os.close(slot)
                index += 1
    finally:
        os.close(out)
    return 0


def _copy_root(slot: int) -> None:
    os.mkdir("d", 0o755, dir_fd=slot)
    dfd = os.open("d", copying.DIR, dir_fd=slot)
    root = os.open("/", copying.DIR)
    try:
        for child in copying.listing(root):
            if child not in ("proc", "sys", "dev", MOUNT.lstrip("/")):
                copying.copy_node(root, child, dfd, child)
    finally:
        os.close(root)
        os.close(dfd)


def _glob(pattern: str) -> list[str]:
    paths = ["/"]
    for part in pattern.strip("/").split("/"):
        following = []
        for base in paths:
            if not any(c in part for c in "*?["):
                following.append(posixpath.join(base, part))
                continue
            try:
                names = sorted(os.listdir(base))
            except OSError:
                continue
            following += [posixpath.join(base, n) for n in names if fnmatch.fnmatchcase(n, part)]
        paths = following
    return sorted(paths)


def put(dest: str, chown: str | None, chmod: int | None, keep_owner: bool, mtime: int | None, what: str) -> int:
    """Copy the staged sources at MOUNT to `dest` (relative to the working folder)."""
    return _one_line(what, _put, dest, chown, chmod, keep_owner, mtime, what)


def _put(dest: str, chown: str | None, chmod: int | None, keep_owner: bool, mtime: int | None, what: str) -> int:
    try:
        owner = _owner(chown) if chown else (None if keep_owner else (0, 0))
    except LookupError as exc:
        print(f"{what}: --chown={chown}: {exc}", file=sys.stderr)
        return 1
    made_owner = owner or (0, 0)
    slots = sorted(os.listdir(MOUNT), key=int)
    target = posixpath.normpath(posixpath.join(os.getcwd(), dest))
    if os.path.islink(target):  # the image's own symlink (dangling too), followed inside this root
        target = os.path.realpath(target)
    into_dir = dest.endswith("/") or len(slots) > 1 or os.path.isdir(target)
    for slot in slots:
        base = posixpath.join(MOUNT, slot)
        if os.path.isdir(posixpath.join(base, "d")):
            folder, names, src = target, None, posixpath.join(base, "d")
        else:
            src = posixpath.join(base, "f")
            name = os.listdir(src)[0]
            folder, names = (target, (name, name)) if into_dir else (posixpath.dirname(target), (name, posixpath.basename(target)))
        try:
            _makedirs(folder, made_owner, mtime)
            dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)  # followed inside this root: the image's own links
        except OSError as exc:
            print(f"{what}: cannot make {folder} in the image: {exc.strerror}", file=sys.stderr)
            return 1
        sfd = os.open(src, copying.DIR)
        try:
            pairs = [(n, n) for n in copying.listing(sfd)] if names is None else [names]
            for name, dst_name in pairs:
                copying.copy_node(sfd, name, dfd, dst_name, owner=owner, chmod=chmod, mtime=mtime)
        finally:
            os.close(sfd)
            os.close(dfd)
    return 0


def _makedirs(path: str, owner: tuple[int, int], mtime: int | None) -> None:
    if os.path.isdir(path):
        return
    parent = posixpath.dirname(path)
    if parent != path:
        _makedirs(parent, owner, mtime)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise NotADirectoryError(20, "not a folder", path)
    os.mkdir(path, 0o755)
    os.chown(path, *owner)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def _owner(text: str) -> tuple[int, int]:
    """`user[:group]` by name or number, in this image's /etc/passwd and /etc/group (Docker's rules:
    a user alone gives its number as the group too)."""
    user, _, group = text.partition(":")
    uid = int(user) if user.isdigit() else _lookup("/etc/passwd", user, "user")
    gid = uid if not group else int(group) if group.isdigit() else _lookup("/etc/group", group, "group")
    return uid, gid


def _lookup(path: str, name: str, what: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) > 2 and fields[0] == name and fields[2].isdigit():
                    return int(fields[2])
    except OSError:
        pass
    raise LookupError(f"no {what} {name!r} in the image's {path}")
