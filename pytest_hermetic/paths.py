"""Where the engine keeps things.

* The store (images, layers): `$HERMETIC_STORE`, else `/var/lib/hermetic` as
  root and `$XDG_DATA_HOME/hermetic` otherwise.
* Runtime state (one small folder per container: `state.json` and a mount
  point): `$HERMETIC_STATE`, else `/run/hermetic` as root and
  `$XDG_RUNTIME_DIR/hermetic` otherwise, when those are in memory (tmpfs);
  else a folder in `/dev/shm`.  State must not outlive a reboot, and a tmpfs
  makes each container's folder cost no disk operations.
* Read-write layers that may be committed live in the store's file system
  (`STORE/containers/<id>`), where large writes belong.
"""

from __future__ import annotations

import os


def store_root() -> str:
    configured = os.environ.get("HERMETIC_STORE")
    if configured:
        return os.path.abspath(configured)
    if os.geteuid() == 0:
        return "/var/lib/hermetic"
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "hermetic")


def state_root() -> str:
    configured = os.environ.get("HERMETIC_STATE")
    if configured:
        return os.path.abspath(configured)
    if os.geteuid() == 0:
        if _on_tmpfs("/run"):
            return "/run/hermetic"
        return "/dev/shm/hermetic"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.access(runtime, os.W_OK) and _on_tmpfs(runtime):
        return os.path.join(runtime, "hermetic")
    return f"/dev/shm/hermetic-{os.geteuid()}"


def system_state_root() -> str:
    """The machine's state folder, whatever `$HERMETIC_STATE` says: for what
    belongs to the machine rather than to one user of the engine (the host
    bridge's address leases)."""
    if os.geteuid() == 0:
        return "/run/hermetic" if _on_tmpfs("/run") else "/dev/shm/hermetic"
    return state_root()


_private: set[str] = set()


def make_private(path: str) -> str:
    """Create `path` if needed and close it to other users (0700, as Docker
    keeps /var/lib/docker at 0710): image layers may hold setuid-root files
    and containers' read-write layers anything their root wrote, which a
    local user must not reach.  A folder of another owner is left as it is.
    Checked once per process and path."""
    if path not in _private:
        os.makedirs(path, 0o700, exist_ok=True)
        st = os.stat(path)
        if st.st_uid == os.geteuid() and st.st_mode & 0o077:
            os.chmod(path, st.st_mode & 0o700)
        _private.add(path)
    return path


def make_owned(path: str) -> str:
    """`make_private` for a folder the engine mounts or keeps state below: it
    must be a real folder of this user's that no one else can change.  The
    fallback state roots are on /dev/shm, which every local user can write:
    a user who makes `/dev/shm/hermetic` (root's) or `/dev/shm/hermetic-UID`
    (another user's) first would choose, through symlinks, where root mounts
    layer images, or plant the seccomp filters the victim's containers load;
    such a folder is refused, with the fix in the message."""
    if path in _private:
        return path
    os.makedirs(path, 0o700, exist_ok=True)
    st = os.lstat(path)  # (before make_private's chmod, which would follow a link)
    import stat as _stat

    uid = os.geteuid()
    if not _stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o022:
        from .errors import StoreError

        whose = "root's" if uid == 0 else f"uid {uid}'s"
        what = ("a symbolic link" if _stat.S_ISLNK(st.st_mode) else
                f"owned by uid {st.st_uid}" if st.st_uid != uid else f"writable by others (mode {st.st_mode & 0o777:o})")
        fix = ("remove it (as root) and run again" if uid == 0 else
               "remove it if it is yours, or set HERMETIC_STATE (or XDG_RUNTIME_DIR) to a folder of yours on a tmpfs")
        raise StoreError(f"the state folder {path} is {what}, not a folder of {whose} that only it can change: "
                         f"another user may have made it first; {fix}")
    return make_private(path)


_TMPFS_MAGIC = 0x01021994


_tmpfs: dict[str, bool] = {}  # path -> on a tmpfs (not functools.lru_cache: functools is ~1.5 ms of a `hermetic run`)


def _on_tmpfs(path: str) -> bool:
    """Whether `path` is on a tmpfs (statfs's f_type; Python's statvfs lacks
    it).  Asked for every container, so asked of the kernel once."""
    if path not in _tmpfs:
        _tmpfs[path] = _statfs_tmpfs(path)
    return _tmpfs[path]


def _statfs_tmpfs(path: str) -> bool:
    from . import _libc as libc

    buf = libc.char_buffer(bytes(120))  # struct statfs, f_type first
    if libc.function("statfs", libc.c_int, libc.c_char_p, libc.c_void_p)(os.fsencode(path), buf) != 0:
        return False
    return int.from_bytes(buf.raw[:8], "little") == _TMPFS_MAGIC
