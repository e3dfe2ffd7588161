"""A container inherits no descriptor that reaches outside it.  The caller
holds a directory fd on a host folder with a marker file (and on the host's
`/`), a handle on the host's PID namespace and a socket; from inside, the
attack lists /proc/self/fd (and PID 1's) and tries each number: list the
directory (openat(fd, "..") would walk the whole host), fstat the rest."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest

from attack import HOST_PYTHON, inner_session, marker_options, needs_unprivileged_python, spec_options, unconfined

MARKER = "hermetic-fd-marker"

# argv[1:]: the numbers the caller held.  Prints what is reachable.
PROBE = textwrap.dedent(f"""
    import os, stat, sys
    own = {{}}
    for name in os.listdir("/proc/self/fd"):
        try:
            own[int(name)] = os.readlink("/proc/self/fd/" + name)
        except OSError:
            pass
    print("FDS", sorted(own))
    for number in map(int, sys.argv[1:]):
        try:
            mode = os.fstat(number).st_mode
        except OSError:
            print("closed", number)
            continue
        if stat.S_ISDIR(mode):
            print("REACHED-DIR", number, {MARKER!r} in os.listdir(number))
        elif stat.S_ISCHR(mode) and os.major(os.fstat(number).st_rdev) == 1 and os.minor(os.fstat(number).st_rdev) == 3:
            print("null", number)
        else:
            print("REACHED", number, own.get(number))
    for pid in (1, 2):
        if pid == os.getpid():
            continue
        try:
            numbers = sorted(int(n) for n in os.listdir(f"/proc/{{pid}}/fd"))
        except OSError as exc:
            print("pid", pid, "refused", exc.errno)
            continue
        print("PID", pid, "FDS", numbers)
        for number in numbers[3:]:  # (0-2: the container's own stdio)
            try:
                target = os.readlink(f"/proc/{{pid}}/fd/{{number}}")
            except OSError:
                continue
            if target != "/dev/null":  # (what a sealed fd becomes)
                print("PEEKED", pid, number, target)
""")


@pytest.fixture
def held(tmp_path):  # noqa: ANN001, ANN201
    """What a careless caller holds open: directories (a host folder with a
    marker, the host's /), a namespace handle, a socket, a pidfd."""
    (tmp_path / MARKER).write_text("host side")
    fds = [os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY), os.open("/", os.O_RDONLY | os.O_DIRECTORY),
           os.open("/proc/self/ns/pid", os.O_RDONLY), os.open("/", os.O_PATH)]
    left, right = socket.socketpair()
    fds += [left.detach(), right.detach(), os.pidfd_open(os.getpid())]
    for fd in fds:
        os.set_inheritable(fd, True)  # even those a caller passes on on purpose
    yield fds
    for fd in fds:
        os.close(fd)


def _assert_nothing_reached(stdout: str, held: list[int]) -> None:
    assert "REACHED" not in stdout and "PEEKED" not in stdout, stdout
    fds_line = next(line for line in stdout.splitlines() if line.startswith("FDS"))
    assert set(eval(fds_line[4:])) <= {0, 1, 2, 3}, stdout  # 3: the probe's own listing of /proc/self/fd
    assert all(f"closed {fd}" in stdout or f"null {fd}" in stdout for fd in held), stdout


def _cli(held: list[int], *options: str, user: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k.startswith("HERMETIC_") or k in ("PATH", "LANG")}
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return subprocess.run([sys.executable, "-m", "pytest_hermetic", "run", *unconfined(), *options, "host",
                           HOST_PYTHON, "-c", PROBE, *map(str, held)], pass_fds=held, capture_output=True, text=True,
                          env=env, timeout=60, cwd="/")


def test_a_command_inherits_nothing(held):
    ran = _cli(held)
    assert ran.returncode == 0, ran.stderr
    _assert_nothing_reached(ran.stdout, held)


def test_init_and_its_command_inherit_nothing(held):
    ran = _cli(held, "--init")
    assert ran.returncode == 0, ran.stderr
    _assert_nothing_reached(ran.stdout, held)
    assert "PEEKED" not in ran.stdout, ran.stdout  # PID 1 (the CLI's fork) is not dumpable


def test_exec_into_a_running_container_inherits_nothing(held):
    from pytest_hermetic.container import Container
    from pytest_hermetic.spec import Spec

    read_fd, write_fd = os.pipe()
    with Container(Spec.build("host", ["sleep", "30"], **spec_options())) as box:
        box.start()
        proc = box.exec([HOST_PYTHON, "-c", PROBE, *map(str, held)], stdout=write_fd)
        os.close(write_fd)
        with os.fdopen(read_fd) as out:
            stdout = out.read()
        assert proc.wait().code == 0
        box.kill()
    _assert_nothing_reached(stdout, held)


PLUGIN_SUITE = """
import os, socket, stat
import pytest
from pytest_hermetic import hermetic
from pytest_hermetic.runtime import descriptors

@pytest.fixture(scope="session")
def held():
    # Opened in pytest (the parent): every fork inherits them.
    fds = [os.open(os.environ["MARKER_DIR"], os.O_RDONLY | os.O_DIRECTORY), os.open("/", os.O_PATH),
           os.open("/proc/self/ns/pid", os.O_RDONLY), socket.socket().detach(), os.pidfd_open(os.getpid())]
    log = open(os.path.join(os.environ["MARKER_DIR"], "log"), "w")  # a regular file: the test may use it
    return fds, log

@hermetic(OPTIONS)
def test_reaches_nothing(held):
    fds, log = held
    for fd in fds:
        st = os.fstat(fd)
        assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3, os.readlink(f"/proc/self/fd/{fd}")
        with pytest.raises(NotADirectoryError):
            os.listdir(fd)
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        assert not target.startswith(("socket:", "anon_inode:", "pid:", "pidfd:", "mnt:", "net:", "user:")), target
        try:
            st = os.stat(f"/proc/self/fd/{name}")
        except OSError:
            continue
        assert not stat.S_ISDIR(st.st_mode) or int(name) > max(fds), target  # (the listing's own fd)
    for pid in (1,):
        if os.getpid() != pid:
            try:
                leaked = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            assert set(map(int, leaked)) <= {0, 1, 2}, leaked
    print("in the log", file=log, flush=True)
"""


def _plugin(user: str | None, marker_dir: str) -> subprocess.CompletedProcess:
    return inner_session(user, "descriptors-plugin", f"import os\nos.environ['MARKER_DIR'] = {marker_dir!r}\n" +
                         PLUGIN_SUITE.replace("OPTIONS", marker_options()))


def test_a_hermetic_test_reaches_none_of_pytests_descriptors(tmp_path):
    (tmp_path / MARKER).write_text("host side")
    ran = _plugin(None, str(tmp_path))
    assert "1 passed" in ran.stdout, ran.stdout + ran.stderr
    assert (tmp_path / "log").read_text() == "in the log\n"  # regular files stay usable


def test_a_rootless_hermetic_test_reaches_none_of_pytests_descriptors(test_user):
    from attack import user_dir

    needs_unprivileged_python()
    marker_dir = user_dir(test_user, "descriptor-markers")
    with open(os.path.join(marker_dir, MARKER), "w") as f:
        f.write("host side")
    ran = _plugin(test_user, marker_dir)
    assert "1 passed" in ran.stdout, ran.stdout + ran.stderr


# pytest's Ctrl-C wake-up pipe (forked/interrupt.py), made at import here so
# that every test's child is forked after it: no child may hold an end of it
# (the seal leaves a pipe's write end usable; a test could wake pytest's loop).
WAKEUP_SUITE = """
import os
from pytest_hermetic import hermetic
from pytest_hermetic.forked import interrupt

WAKEUP = {os.fstat(fd).st_ino for fd in interrupt._wakeup_fds()}

@hermetic(OPTIONS)
def test_holds_no_end_of_pytests_wakeup_pipe():
    held = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            held[int(name)] = os.fstat(int(name)).st_ino
        except OSError:
            pass
    assert not WAKEUP & set(held.values()), held

@hermetic(OPTIONS)
def test_again():
    test_holds_no_end_of_pytests_wakeup_pipe()
"""


@pytest.mark.parametrize("zygote", ["true", "false"])
def test_a_hermetic_test_holds_no_end_of_pytests_ctrl_c_pipe(zygote):
    ran = inner_session(None, f"descriptors-wakeup-{zygote}", WAKEUP_SUITE.replace("OPTIONS", marker_options()),
                        "-o", f"hermetic_zygote={zygote}")
    assert "2 passed" in ran.stdout, ran.stdout + ran.stderr


def test_a_kept_notebook_container_inherits_nothing_of_the_helper():
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "ipython_ext")
    try:
        ip.run_cell_magic("container", f"host --name fds --out result {' '.join(unconfined())}",
                          f"{HOST_PYTHON} - <<'EOF'\n{PROBE}\nEOF\n")
        stdout = ip.user_ns["result"]
        ip.run_line_magic("container", "rm fds")
    finally:
        ip.run_line_magic("unload_ext", "ipython_ext")
    assert "REACHED" not in stdout and "PEEKED" not in stdout, stdout
    assert stdout.startswith("FDS [0, 1, 2]\n"), stdout


# A read-only file the pytest process holds (a session fixture's) must stay
# read-only in the test: `/proc/self/fd/N` is a magic link to the host's
# file, and root in the container (CAP_DAC_OVERRIDE, also over the rootless
# user's own files) could otherwise reopen it for writing, chmod or truncate
# it.  `kept` is still at its path (reopened on a read-only bind), `gone` lost
# the name it was opened by (a sealed in-memory copy: a chmod of the copy
# is harmless), `big` too and is over the copy limit (/dev/null).
READ_ONLY_SUITE = """
import errno, os
import pytest
from pytest_hermetic import hermetic
from pytest_hermetic.runtime import descriptors

DIR = os.environ["MARKER_DIR"]

@pytest.fixture(scope="session")
def held():
    kept = open(os.path.join(DIR, "kept"))
    gone = open(os.path.join(DIR, "gone"))
    assert kept.read(5) == "host " and gone.read(5) == "host "  # the test goes on from there
    os.unlink(os.path.join(DIR, "gone"))  # (its other name, "gone-link", keeps it for the check after)
    # Too big for a copy: /dev/null (the limit lowered for the test, in the pytest process the child forks from).
    descriptors.COPY_LIMIT = 20  # ("gone" has 16 bytes, "big" 33)
    big = open(os.path.join(DIR, "big"))
    os.unlink(os.path.join(DIR, "big"))
    sysctl = open("/proc/sys/kernel/hostname")
    return kept, gone, sysctl, os.fstat(kept.fileno()).st_ino, big

def _refused(action):
    try:
        action()
    except OSError as exc:
        assert exc.errno in (errno.EROFS, errno.EPERM, errno.EACCES), exc
        return True
    return False

def _write(path, mode):
    with open(path, mode) as f:
        f.write("WRITTEN-FROM-THE-TEST")

@hermetic(OPTIONS)
def test_read_only_stays_read_only(held):
    kept, gone, sysctl, inode, big = held
    escaped = []
    for f in (kept, gone):
        link = f"/proc/self/fd/{f.fileno()}"
        for mode in ("r+", "a", "w"):
            if not _refused(lambda: _write(link, mode)):
                escaped.append((f.name, mode))
        if not _refused(lambda: os.truncate(link, 1)):
            escaped.append((f.name, "truncate"))
        if not _refused(lambda: os.chmod(link, 0o4777)) and f is kept:
            escaped.append((f.name, "chmod"))
    # Opened and closed, nothing written (a write would be the container's own hostname anyway).
    if not _refused(lambda: os.close(os.open(f"/proc/self/fd/{sysctl.fileno()}", os.O_WRONLY))):
        escaped.append((sysctl.name, "open for writing"))
    assert not escaped, escaped
    assert os.fstat(kept.fileno()).st_ino == inode  # the file itself, on a read-only mount
    assert os.readlink(f"/proc/self/fd/{gone.fileno()}").startswith("/memfd:")  # a copy: its path names another
    assert kept.read() == "side, kept\\n" and gone.read() == "side, gone\\n"  # same content, same offset
    assert sysctl.read() == os.uname().nodename + "\\n"
    st = os.fstat(big.fileno())
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3) and big.read() == ""  # /dev/null
"""


def _read_only_files(directory: str, owner: tuple[int, int] | None = None) -> dict[str, str]:
    files = {"kept": "host side, kept\n", "gone": "host side, gone\n", "big": "more than the lowered copy limit\n"}
    for name, text in files.items():
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o444)
        if owner:
            os.chown(path, *owner)
    os.link(os.path.join(directory, "gone"), os.path.join(directory, "gone-link"))
    return files


def _assert_read_only_held(ran: subprocess.CompletedProcess, directory: str, files: dict[str, str]) -> None:
    assert "1 passed" in ran.stdout, ran.stdout + ran.stderr
    for name, renamed in (("kept", "kept"), ("gone", "gone-link")):
        path = os.path.join(directory, renamed)
        with open(path) as f:
            assert f.read() == files[name], name
        assert os.stat(path).st_mode & 0o7777 == 0o444, name


def test_a_hermetic_test_cannot_write_pytests_read_only_files(tmp_path):
    files = _read_only_files(str(tmp_path))
    ran = inner_session(None, "descriptors-read-only", f"import os\nos.environ['MARKER_DIR'] = {str(tmp_path)!r}\n" +
                        READ_ONLY_SUITE.replace("OPTIONS", marker_options()))
    _assert_read_only_held(ran, str(tmp_path), files)


def test_a_rootless_hermetic_test_cannot_write_pytests_read_only_files(test_user):
    import pwd

    from attack import user_dir

    needs_unprivileged_python()
    entry = pwd.getpwnam(test_user)
    directory = user_dir(test_user, "descriptor-read-only")
    files = _read_only_files(directory, (entry.pw_uid, entry.pw_gid))
    ran = inner_session(test_user, "descriptors-read-only", f"import os\nos.environ['MARKER_DIR'] = {directory!r}\n" +
                        READ_ONLY_SUITE.replace("OPTIONS", marker_options()))
    _assert_read_only_held(ran, directory, files)


PIPES_SUITE = """
import fcntl, os, stat
import pytest
from pytest_hermetic import hermetic

@pytest.fixture(scope="session")
def pipe():
    return os.pipe()  # opened in pytest (the parent): its reader and writer

@hermetic(OPTIONS)
def test_no_read_end_of_pytests_pipes(pipe):
    read_end, write_end = pipe
    assert os.readlink(f"/proc/self/fd/{read_end}") == "/dev/null"
    assert os.readlink(f"/proc/self/fd/{write_end}").startswith("pipe:")  # output goes out, as in place
    read_ends = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            fifo = stat.S_ISFIFO(os.fstat(fd).st_mode)
        except OSError:
            continue
        if fd > 2 and fifo and flags & os.O_ACCMODE != os.O_WRONLY:
            read_ends.append((fd, target))
    # Reopened for writing (/proc/self/fd/N), a read end writes into its
    # reader in pytest (under xdist: the worker's commands from the
    # controller, which it executes).  One is the test's own: the answers
    # to its `containers` fixture, which only the child reads.
    assert len(read_ends) <= 1, read_ends
"""


@pytest.mark.parametrize("xdist", [False, True], ids=["plain", "xdist"])
def test_a_hermetic_test_gets_no_read_end_of_pytests_pipes(xdist):
    pytest.importorskip("xdist")
    ran = inner_session(None, "descriptors-pipes", PIPES_SUITE.replace("OPTIONS", marker_options()),
                        *(("-p", "xdist", "-n", "1") if xdist else ()))
    assert "1 passed" in ran.stdout, ran.stdout + ran.stderr
