"""A terminal of the container's own (`run -t`, `exec -t`): a pty from its devpts.

The container mounts a devpts instance of its own at /dev/pts (kernelfs.py),
so a pty opened there is `/dev/pts/0` inside, and nothing of the host's.  The
container's process opens it itself, inside its mount namespace and before
it drops privileges (the parent never resolves a path the container
controls), makes the slave its controlling terminal and its stdin, stdout
and stderr, and hands the master to the caller over a unix socket
(SCM_RIGHTS) made before the fork.  The master stays on the caller's side:
the caller's own terminal never enters the container.

Imported by the parent only when a terminal is asked for (socket costs
start-up); the child finds it in `sys.modules`.
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat
import termios

from .._record import record
from ..errors import ContainerStartError

_TIOCGPTPEER = 0x5441  # _IO('T', 0x41), Linux 4.13+: the slave without a path lookup
_TIOCSPTLCK = 0x40045431
_TIOCGPTN = 0x80045430
_PTMX = (5, 2)  # the device number of every devpts instance's ptmx
WINSIZE_BYTES = 8  # struct winsize: rows, cols, xpixel, ypixel (four shorts)


@record
class Console:
    """What the container's process needs to make its terminal (ProcessConfig.tty)."""

    socket_fd: int  # the child's end: the master goes to the caller over it
    size: bytes = b"\0" * WINSIZE_BYTES  # struct winsize to start with (the caller's terminal's)
    uid: int | None = None  # owner of the slave: the container's user, resolved inside (None: root)


class Pair:
    """The caller's side of a console: the socket it receives the master on."""

    def __init__(self, size: bytes | None = None) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._mine = mine
        self._theirs: socket.socket | None = theirs
        self.console = Console(theirs.fileno(), size or b"\0" * WINSIZE_BYTES)

    def started(self) -> None:
        """The child has forked: close our copy of its end (so a child that dies is EOF)."""
        if self._theirs is not None:
            self._theirs.close()
            self._theirs = None

    def receive(self) -> int:
        """The master, which the child sent before it exec'd (so it is there already)."""
        self.started()
        try:
            self._mine.setblocking(False)
            _, fds, _, _ = socket.recv_fds(self._mine, 1, 1)
        except (BlockingIOError, OSError) as exc:
            raise ContainerStartError(f"the container did not hand over its terminal ({exc})") from None
        finally:
            self._mine.close()
        if not fds:
            raise ContainerStartError("the container did not hand over its terminal")
        return fds[0]

    def close(self) -> None:
        self.started()
        self._mine.close()


def open_pty() -> tuple[int, int]:
    """(master, slave) from the devpts at /dev/pts of the mount namespace we are in."""
    try:
        # O_NONBLOCK until it is known to be a ptmx: a FIFO put there would block the open.
        master = os.open("/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ContainerStartError(f"cannot open the container's /dev/pts/ptmx for a terminal: {exc.strerror}") from None
    try:
        st = os.fstat(master)
        # Not a devpts ptmx (a privileged container could mount anything there): refuse.
        if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != _PTMX:
            raise ContainerStartError("the container's /dev/pts/ptmx is not a pty multiplexer; cannot give it a terminal")
        os.set_blocking(master, True)
        fcntl.ioctl(master, _TIOCSPTLCK, b"\0\0\0\0")  # unlockpt
        try:
            slave = fcntl.ioctl(master, _TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError:  # before Linux 4.13: by number, in the same devpts
            number = int.from_bytes(fcntl.ioctl(master, _TIOCGPTN, b"\0\0\0\0"), "little")
            slave = os.open(f"/dev/pts/{number}", os.O_RDWR | os.O_NOCTTY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except BaseException:
        os.close(master)
        raise
    return master, slave


def attach(console: Console) -> None:
    """In the container's process, after setsid: a new pty becomes the
    controlling terminal and fds 0, 1, 2; the master goes to the caller."""
    master, slave = open_pty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, console.size)
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        if console.uid is not None:
            os.fchown(slave, console.uid, -1)
        send_fd(console.socket_fd, master)
    finally:
        os.close(master)
        os.close(console.socket_fd)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)  # the caller's descriptors are gone from this process
    os.close(slave)


def make(console: Console) -> int:
    """`attach` in two halves, for `hermetic exec`, whose process drops its
    privileges before it forks the one that holds the terminal (enter.py):
    here, still privileged, the pty is made, sized and owned and its master
    sent to the caller; returns the slave, for `adopt`."""
    master, slave = open_pty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, console.size)
        if console.uid is not None:
            os.fchown(slave, console.uid, -1)
        send_fd(console.socket_fd, master)
    except BaseException:
        os.close(slave)
        raise
    finally:
        os.close(master)
        os.close(console.socket_fd)
    return slave


def adopt(slave: int) -> None:
    """The second half, in a session leader: the slave becomes its controlling terminal and fds 0, 1, 2."""
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def send_fd(sock_fd: int, fd: int) -> None:
    sock = socket.socket(fileno=sock_fd)
    try:
        socket.send_fds(sock, [b"T"], [fd])
    finally:
        sock.detach()
