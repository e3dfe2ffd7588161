"""What a container keeps of its caller's open descriptors: nothing that
reaches outside it.

A directory fd opened on the host's `/` gives the whole host file system
(`openat(fd, "..")` needs no privilege), a namespace fd or a pidfd a handle
on the host's processes, a socket whatever it is connected to.  A fork
inherits every descriptor, close-on-exec or not, so each path into a
container drops them:

* before exec (`close_except`): everything but 0, 1, 2 (and the set-up pipe,
  which is close-on-exec) goes; one close_range(2) call.
* a Python callable (the pytest plugin's test, the notebook helper's kept
  container) runs in a fork of a process whose Python objects still own
  their descriptors, and some of them it needs (pytest's capture files, its
  report pipe).  `seal` keeps pipes' write ends (they reach only
  themselves) and `finish` puts /dev/null in place of everything else,
  pipes' read ends too (see `_pipe_end`): closed outright, a number could
  be reused by a new file that an old object then closes under it.  A
  host device node is an inode root could chmod or chown (pytest's stdin
  is the host's /dev/null): a memory device becomes the container's own
  node, a terminal is reopened on a read-only mount.  A regular file open
  read-only still reaches its host
  file by name: `open("/proc/self/fd/N", "w")` follows the magic link to
  it, and root in the container has CAP_DAC_OVERRIDE.  So it is reopened
  on a read-only bind of its own (same file, same offset), or where that
  cannot be had, replaced by a sealed in-memory copy (see `seal`).  A
  named regular file open for writing is a pipe into it instead, which the
  caller copies (file_relay.py).  At 0, 1 and 2 (a command's stdio too)
  the same rules hold, but a socket or a pipe there stays.
"""

from __future__ import annotations

import fcntl  # imported here: after entering a container's root, no stdlib is left to import from
import os
import stat

from . import syscalls as sc

_O_PATH = 0o10000000

_cloexec_works: bool | None = None
# This process's descriptors that no container gets, whatever their kind
# (`withhold`); a fork's copy of the set names the same descriptors.
_withheld: set[int] = set()


def withhold(fd: int) -> None:
    """Never hand `fd` to a container as it is (`seal` blanks it): for a
    file without a name that this process shares with something else (a
    service container's log, which another container writes), which `seal`
    would otherwise keep as the caller's own (see `_kind`)."""
    _withheld.add(fd)


def release(fd: int) -> None:
    """`fd` is about to be closed: its number is no longer withheld."""
    _withheld.discard(fd)


def close_except(keep: tuple[int, ...] = ()) -> None:
    """Close every fd above 2 but those in `keep` (close_range where the
    kernel has it, Linux 5.9+)."""
    first = 3
    for fd in sorted(k for k in keep if k >= 3):
        _close_from(first, fd - 1)
        first = fd + 1
    _close_from(first, 0xFFFFFFFF)


def cloexec_all() -> None:
    """Mark every fd above 2 close-on-exec (Linux 5.11+), else close them
    all but the close-on-exec ones; for the moment just before exec."""
    global _cloexec_works
    if _cloexec_works is not False:
        try:
            sc.close_range(3, 0xFFFFFFFF, sc.CLOSE_RANGE_CLOEXEC)
            _cloexec_works = True
            return
        except OSError:
            _cloexec_works = False
    for fd in _open_fds():
        try:
            if fd > 2 and os.get_inheritable(fd):
                os.close(fd)
        except OSError:  # the listing's own fd, closed by now
            pass


def _close_from(first: int, last: int) -> None:
    if first > last:
        return
    try:
        sc.close_range(first, last)
    except OSError:  # before Linux 5.9
        for fd in _open_fds():
            if first <= fd <= last:
                _close(fd)


def _open_fds() -> list[int]:
    return [int(name) for name in os.listdir("/proc/self/fd")]


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def stdio_fds(stdio: tuple) -> tuple[int, ...]:
    """The fds a command's stdin, stdout and stderr will be (None: ours, 0-2)."""
    return tuple(i if fd is None else fd for i, fd in enumerate(stdio))


def seal(keep: tuple[int, ...] = (), stdio: tuple[int, ...] = (0, 1, 2), everything: bool = True,
         relayed: dict[int, int] | None = None, relay_pipes: tuple[int, ...] = ()) -> list[tuple[int, str]]:
    """Make the inherited descriptors safe to hand to the container; return
    what `finish` puts in place once the container's own /dev is there:
    [(fd, device name)], "null" for those that reach beyond themselves.
    * `relayed` ({fd: write end}, see file_relay.py): each file's pipe is
      put in its place; `relay_pipes`, the relay's own ends, are closed (no
      object of ours owns them).
    * every other named regular file open for writing is blanked, and each
      read-only one reopened read-only (see the module's docstring);
    * a host device node (an inode root could chmod or chown: /dev/null as
      pytest's stdin) becomes the container's own node of that name, a
      terminal or a named FIFO's write end the same node reopened on a
      read-only mount;
    * `stdio` (0, 1, 2, a command's stdio fds): a socket or a pipe there is
      the command's or the test's own, and stays;
    * with `everything` (a callable's), all other fds but `keep` (the
      callable's own) too: pipes' read ends, sockets, directories...
      blanked.  Without, a command's other fds are closed before its exec.
    Called in the container's fresh mount namespace before its pivot_root,
    while the paths the host's files are open at still name them there."""
    relayed = relayed or {}
    for fd, write_end in relayed.items():
        try:
            inheritable = os.get_inheritable(fd)
        except OSError:  # closed since the parent looked: an object's finalizer ran in this fork (gc)
            continue
        os.dup2(write_end, fd, inheritable=inheritable)
    for fd in relay_pipes:
        _close(fd)
    later = []
    for fd in _open_fds() if everything else stdio:
        if fd in keep or fd in relayed:
            continue
        kind = classify(fd)
        if kind is _KEEP or kind is _UNNAMED and fd in stdio:
            continue
        if kind[0] == "own":
            later.append((fd, kind[1]))
        elif kind[0] == "file" and _reopen_read_only(fd, *kind[1:]):
            continue
        elif kind[0] == "node" and (fd in stdio or not kind[3]) and _reopen_node(fd, kind[1], kind[2]):
            continue  # (a named FIFO's read end only at stdio: see _pipe_end)
        else:
            later.append((fd, "null"))
    return later


def finish(later: list[tuple[int, str]]) -> None:
    """In the container's root: each of `later` becomes its own /dev node
    of that name (closed outright, a number could be reused by a new file
    that an old object then closes under it), opened for what the
    original was ("null", for what reached beyond itself: read and write)."""
    opened: dict[tuple[str, int], int] = {}
    try:
        for fd, name in later:
            access = os.O_RDWR if name == "null" else access_mode(fd)
            node = opened.get((name, access))
            if node is None:  # (none of `later`: they are open)
                node = opened[(name, access)] = os.open(f"/dev/{name}", access | os.O_CLOEXEC | os.O_NOCTTY)
            os.dup2(node, fd, inheritable=fd <= 2 or name != "null" and os.get_inheritable(fd))
    finally:
        for node in opened.values():
            os.close(node)


_KEEP = ("keep",)
_REPLACE = ("replace",)
_UNNAMED = ("unnamed",)  # a socket, an anonymous pipe's read end or inode: on no host path
_WRITTEN = ("written",)  # a named regular file open for writing that no relay pipe replaced
_MEM_DEVICES = {3: "null", 5: "zero", 7: "full", 8: "random", 9: "urandom"}  # minors of major 1
_TTY_MAJORS = {4, 5, *range(136, 144)}


def _kind(fd: int) -> tuple:
    """What `seal` does with `fd`: _KEEP; /dev/null for _REPLACE, _WRITTEN
    and _UNNAMED (but at stdio); ("own", name) for a memory device;
    ("file", path, stat, flags) for a read-only regular file to reopen
    read-only; ("node", path, flags, a FIFO's read end) for a terminal or a
    named FIFO to reopen on a read-only mount.  A readlink, an F_GETFL and an
    fstat per fd."""
    try:
        link = os.readlink(f"/proc/self/fd/{fd}")
        if link.startswith("pipe:["):
            return _pipe_end(fcntl.fcntl(fd, fcntl.F_GETFL))
        if not link.startswith("/"):  # sockets, anonymous inodes (pidfd, eventfd, bpf...), namespaces
            return _UNNAMED
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        if flags & _O_PATH:
            return _REPLACE
        mode = os.fstat(fd)
    except OSError:  # gone meanwhile
        return _KEEP
    if stat.S_ISREG(mode.st_mode):
        if flags & os.O_ACCMODE == os.O_RDONLY:
            return ("file", link, mode, flags)
        # Written: a pipe from the caller's relay (handled before this), or
        # /dev/null if the relay did not see it (opened since); a file with
        # no name left stays (see file_relay.py).
        return _KEEP if mode.st_nlink == 0 else _WRITTEN
    if stat.S_ISFIFO(mode.st_mode):
        return ("node", link, flags, _pipe_end(flags) is not _KEEP)
    if stat.S_ISCHR(mode.st_mode):
        major, minor = os.major(mode.st_rdev), os.minor(mode.st_rdev)
        if major == 1 and minor in _MEM_DEVICES:
            return ("own", _MEM_DEVICES[minor])
        if major in _TTY_MAJORS:
            return ("node", link, flags, False)
    return _REPLACE  # directories, block devices, other character devices


def classify(fd: int) -> tuple:
    """What `seal` would do with `fd` at a command's stdio: KEEP or UNNAMED
    (it stays), ("own", device), ("file", ...) or ("node", ...) (reopened),
    or another kind (blanked with /dev/null); for a parent that decides
    before its child does (native_child.py)."""
    return _REPLACE if fd in _withheld else _kind(fd)


KEEP, UNNAMED = _KEEP, _UNNAMED


def access_mode(fd: int) -> int:
    """O_RDONLY, O_WRONLY or O_RDWR: how `fd` is open (what `finish` reopens it for)."""
    return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE


def needs_relay(fd: int) -> bool:
    """Whether `fd` is a named regular file open for writing: one the caller
    relays through a pipe (file_relay.py), and that `seal` blanks where it
    was not relayed (`_kind`'s _WRITTEN)."""
    try:
        mode = os.fstat(fd)
        if not stat.S_ISREG(mode.st_mode) or mode.st_nlink == 0:
            return False
        return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY
    except OSError:  # not open
        return False


def _pipe_end(flags: int) -> tuple:
    """A pipe's (or FIFO's) write end stays (the test's output, its
    reports); a read end goes: reopened through /proc/self/fd for writing it
    is a write end into whoever reads the pipe in the caller -- under xdist
    the worker's command stream from the controller, which executes what it
    is sent (a test's reopen of it for writing was tried: it worked).  The
    callable's own read ends are `keep`; at stdio a read end stays (a
    command's input)."""
    return _KEEP if flags & os.O_ACCMODE == os.O_WRONLY else _UNNAMED


def _reopen_node(fd: int, path: str, flags: int) -> bool:
    """Put on `fd` the same terminal or FIFO, opened as it was but on a
    read-only mount of its own: root's fchmod, fchown or utime of it (or of
    /proc/self/fd/N) get EROFS there instead of changing the host's node.
    False where that cannot be had (the caller puts /dev/null there)."""
    try:
        tree = sc.open_tree_clone(path)
    except OSError:
        return False
    try:
        sc.mount_setattr(tree, sc.MOUNT_ATTR_RDONLY | sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_NOEXEC, recursive=False)
        # Non-blocking: a FIFO's open would wait for its other end (there
        # is one, the caller's); the flags are put back below.
        reopened = os.open(f"/proc/self/fd/{tree}", (flags & os.O_ACCMODE) | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    finally:
        os.close(tree)
    try:
        if not os.path.samestat(os.fstat(reopened), os.fstat(fd)):  # another node by now at that path
            return False
        fcntl.fcntl(reopened, fcntl.F_SETFL, flags)
        os.dup2(reopened, fd, inheritable=os.get_inheritable(fd))
        return True
    except OSError:
        return False
    finally:
        os.close(reopened)


def _reopen_read_only(fd: int, path: str, original: os.stat_result, flags: int) -> bool:
    """Put on `fd` the same file, at the same offset, opened on a read-only
    mount of its own (a detached bind: nothing in the container can reach
    or remount it), so no reopening through /proc/self/fd can write it
    (EROFS), nor chmod, chown or truncate it.  (Its readlink is "/" then:
    the mount's root is the file.)  Where the path no longer
    names the file (deleted, renamed, not in this mount namespace) or the
    kernel lacks open_tree/mount_setattr (before 5.12): a sealed in-memory
    copy, up to COPY_LIMIT bytes.  False: neither (the caller puts
    /dev/null there)."""
    try:
        offset = os.lseek(fd, 0, os.SEEK_CUR)
    except OSError:
        offset = 0
    reopened = _on_read_only_mount(path, original, flags)
    if reopened is None:
        reopened = _sealed_copy(fd)
        if reopened is None:
            return False
    try:
        os.lseek(reopened, offset, os.SEEK_SET)
        os.dup2(reopened, fd, inheritable=os.get_inheritable(fd))
    except OSError:
        return False
    finally:
        os.close(reopened)
    return True


_READ_ONLY_BIND = sc.MOUNT_ATTR_RDONLY | sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_NODEV | sc.MOUNT_ATTR_NOEXEC


def _on_read_only_mount(path: str, original: os.stat_result, flags: int) -> int | None:
    try:
        tree = sc.open_tree_clone(path)
    except OSError:
        return None
    try:
        sc.mount_setattr(tree, _READ_ONLY_BIND, recursive=False)
        reopened = os.open(f"/proc/self/fd/{tree}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | (flags & os.O_NONBLOCK))
    except OSError:
        return None
    finally:
        os.close(tree)
    now = os.fstat(reopened)
    if (now.st_dev, now.st_ino) != (original.st_dev, original.st_ino):  # another file by now at that path
        os.close(reopened)
        return None
    return reopened


COPY_LIMIT = 16 << 20  # bytes; a bigger read-only file that cannot be reopened read-only becomes /dev/null
_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL


def _sealed_copy(fd: int) -> int | None:
    """A read-only fd on a sealed memfd holding the file's content (read
    with pread: the original's offset stays), or None if it is too big."""
    try:
        copy = os.memfd_create("hermetic-read-only", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except OSError:
        return None
    try:
        done = 0
        while True:
            chunk = os.pread(fd, min(1 << 20, COPY_LIMIT + 1 - done), done)
            if not chunk:
                break
            done += len(chunk)
            if done > COPY_LIMIT:
                return None
            os.write(copy, chunk)
        fcntl.fcntl(copy, fcntl.F_ADD_SEALS, _SEALS)
        return os.open(f"/proc/self/fd/{copy}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    finally:
        os.close(copy)
