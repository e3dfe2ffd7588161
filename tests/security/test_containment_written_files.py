"""A host file the caller holds open for writing is no host file in the
container: pytest's output sent to a file (`pytest > ci.log`, which its
capture keeps a copy of), a `--log-file`, a session fixture's open file,
`hermetic run ... > out.txt`.  Root in a container has CAP_FOWNER,
CAP_CHOWN and CAP_DAC_OVERRIDE: through the descriptor (or its
/proc/self/fd magic link) it could make the file setuid (after writing a
program into it), give it away, date it back, read what else it holds.
Each attack runs inside, on every descriptor the test has; the files are
checked from outside.  The test's own writes must still arrive, in order.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

from attack import (HOST_PYTHON, inner_session, marker_options, needs_unprivileged_python, spec_options, unconfined,
                    user_dir)

# Every change root could make to whatever regular file each of the test's
# fds is (only the tests' own files could be reached; anything else, a
# device node above all, only gets its own mode and owner again: harmless
# even where it lands); what it reads through them is searched for the
# host files' SECRET.
ATTACK = textwrap.dedent("""
    import os, stat
    def attack_every_fd():
        secrets = []
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            link = f"/proc/self/fd/{fd}"
            try:
                st = os.fstat(fd)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                actions = (lambda: os.fchmod(fd, 0o4755), lambda: os.fchown(fd, 4321, 4321),
                           lambda: os.chmod(link, 0o4755), lambda: os.utime(fd, (0, 0)))
            else:
                actions = (lambda: os.fchmod(fd, stat.S_IMODE(st.st_mode)), lambda: os.fchown(fd, st.st_uid, st.st_gid))
            for action in actions:
                try:
                    action()
                except OSError:
                    pass
            try:
                reader = os.open(link, os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                if b"SECRET" in os.pread(reader, 1 << 16, 0):
                    secrets.append((fd, os.readlink(link)))
            except OSError:  # a pipe (no pread), a directory
                pass
            finally:
                os.close(reader)
        return secrets
""")

SUITE = ATTACK + """
import logging, stat
import pytest
from pytest_hermetic import hermetic

DIR = os.environ["MARKER_DIR"]

@pytest.fixture(scope="session")
def written():
    files = {"w": open(os.path.join(DIR, "w"), "w"), "a": open(os.path.join(DIR, "a"), "a"),
             "rw": open(os.path.join(DIR, "rw"), "r+")}
    files["rw"].seek(0, os.SEEK_END)
    for f in files.values():
        f.write("parent before\\n")
        f.flush()
    return files

@hermetic(OPTIONS)
def test_written_files_are_pipes_into_them(written):
    for f in written.values():
        os.write(f.fileno(), b"test line\\n")
    print("test stdout line", flush=True)
    logging.getLogger("inner").warning("test log line")
    assert attack_every_fd() == []
    assert all(stat.S_ISFIFO(os.fstat(f.fileno()).st_mode) for f in written.values())  # no host file here
"""


def _files(directory: str, owner: tuple[int, int] | None = None) -> dict[str, os.stat_result]:
    """The host files the inner session writes, and how they were before."""
    made = {}
    for name, text in (("w", "SECRET w\n"), ("a", "SECRET a\n"), ("rw", "SECRET rw\n"),
                       ("out.log", "SECRET out\n"), ("pytest.log", "")):
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o640)
        if owner:
            os.chown(path, *owner)
        made[name] = os.stat(path)
    return made


def _assert_held(ran: subprocess.CompletedProcess, directory: str, before: dict[str, os.stat_result]) -> None:
    for name, was in before.items():
        now = os.stat(os.path.join(directory, name))
        assert (now.st_mode, now.st_uid, now.st_gid) == (was.st_mode, was.st_uid, was.st_gid), name
        assert now.st_mtime >= was.st_mtime, name  # not dated back
    expected = {"w": "parent before\ntest line\n", "a": "SECRET a\nparent before\ntest line\n",
                "rw": "SECRET rw\nparent before\ntest line\n"}
    for name, text in expected.items():
        with open(os.path.join(directory, name)) as f:
            assert f.read() == text, (name, ran.stdout)
    with open(os.path.join(directory, "out.log")) as f:
        out = f.read()
    assert out.startswith("SECRET out\n"), out
    # The test's output is in the file, before pytest's own lines after the test.
    assert out.index("test stdout line") < out.index("1 passed"), out
    with open(os.path.join(directory, "pytest.log")) as f:
        assert "test log line" in f.read()
    assert "1 passed" in ran.stdout, ran.stdout  # (the test's own checks: nothing found, pipes)


def _run(user: str | None, directory: str) -> subprocess.CompletedProcess:
    return inner_session(user, "written-files", f"import os\nos.environ['MARKER_DIR'] = {directory!r}\n" +
                         SUITE.replace("OPTIONS", marker_options()),
                         "-s", f"--log-file={directory}/pytest.log", output=os.path.join(directory, "out.log"))


def test_a_hermetic_test_cannot_change_pytests_written_files(tmp_path):
    before = _files(str(tmp_path))
    _assert_held(_run(None, str(tmp_path)), str(tmp_path), before)


def test_a_rootless_hermetic_test_cannot_change_pytests_written_files(test_user):
    import pwd

    needs_unprivileged_python()
    entry = pwd.getpwnam(test_user)
    directory = user_dir(test_user, "written-files-host")
    before = _files(directory, (entry.pw_uid, entry.pw_gid))
    _assert_held(_run(test_user, directory), directory, before)


def test_a_command_cannot_change_the_files_its_stdio_are(tmp_path):
    """`hermetic run host CMD < in.txt > out.txt`: CMD reads and writes
    them, and can change neither (in.txt is read-only in the container)."""
    stdin, stdout = tmp_path / "in.txt", tmp_path / "out.txt"
    stdin.write_text("SECRET in\n")
    stdout.write_text("SECRET out\n")
    for path in (stdin, stdout):
        path.chmod(0o640)
    before = {path: path.stat() for path in (stdin, stdout)}
    script = ATTACK + textwrap.dedent("""
        import sys
        print(sys.stdin.read().strip(), "read", flush=True)
        try:
            open("/proc/self/fd/0", "a").write("WRITTEN")
        except OSError as exc:
            print("stdin refused", exc.errno, flush=True)
        print("found", [fd for fd, _ in attack_every_fd() if fd != 0], flush=True)
    """)
    env = {k: v for k, v in os.environ.items() if k.startswith("HERMETIC_") or k in ("PATH", "LANG")}
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(stdin) as given, open(stdout, "a") as taken:
        ran = subprocess.run([sys.executable, "-m", "pytest_hermetic", "run", *unconfined(), "host",
                              HOST_PYTHON, "-c", script], stdin=given, stdout=taken, stderr=subprocess.PIPE,
                             text=True, env=env, timeout=60, cwd="/")
    assert ran.returncode == 0, ran.stderr
    out = stdout.read_text()
    assert out.startswith("SECRET out\nSECRET in read\nstdin refused 30\nfound []\n"), out  # 30: EROFS
    assert stdin.read_text() == "SECRET in\n"
    for path, was in before.items():
        now = path.stat()
        assert (now.st_mode, now.st_uid, now.st_gid) == (was.st_mode, was.st_uid, was.st_gid), path
        assert now.st_mtime >= was.st_mtime, path


def test_an_exec_cannot_change_the_files_its_stdio_are(tmp_path):
    """`hermetic exec` (`Container.exec`) with its stdout in a file and its
    stdin on the host's /dev/null."""
    from pytest_hermetic.container import Container
    from pytest_hermetic.spec import Spec

    stdout = tmp_path / "out.txt"
    stdout.write_text("SECRET out\n")
    stdout.chmod(0o640)
    before, null_before = stdout.stat(), os.stat("/dev/null").st_ctime_ns
    with Container(Spec.build("host", ["sleep", "30"], **spec_options())) as box:
        box.start()
        with open(stdout, "a") as taken, open("/dev/null") as null:
            proc = box.exec([HOST_PYTHON, "-c", ATTACK + "print('found', attack_every_fd(), flush=True)"],
                            stdin=null.fileno(), stdout=taken.fileno())
            assert proc.wait().code == 0
        box.kill()
    assert stdout.read_text() == "SECRET out\nfound []\n"
    now = stdout.stat()
    assert (now.st_mode, now.st_uid, now.st_gid) == (before.st_mode, before.st_uid, before.st_gid)
    assert now.st_mtime >= before.st_mtime
    assert os.stat("/dev/null").st_ctime_ns == null_before


MANY_SUITE = """
import pytest
from pytest_hermetic import hermetic

@hermetic(OPTIONS)
@pytest.mark.parametrize("n", range(40))
def test_line(n):
    print(f"line {n}", flush=True)

def test_pytest_has_no_thread_of_ours_after():
    # pytest itself copied the tests' output: a thread would make Python
    # 3.12+ warn at a later os.fork (a DeprecationWarning, an error under -W error).
    with open("/proc/self/status") as f:
        assert "Threads:\\t1\\n" in f.read()
"""


def test_quick_tests_output_to_a_file_arrives_in_order(tmp_path):
    """One test's relay ends (its copies of pytest's fds closed by the copying
    thread) while the next one's is made from pytest's fds: no test may fail
    to start on a descriptor closed under it, no line may be lost."""
    out = tmp_path / "out.log"
    ran = inner_session(None, "written-files-many", MANY_SUITE.replace("OPTIONS", marker_options()), "-s",
                        "-p", "no:rerunfailures", output=str(out))  # (whose server is a thread of pytest's)
    assert "41 passed" in ran.stdout, ran.stdout
    # Each after the progress dot of the test before it.
    assert re.findall(r"line (\d+)\n", ran.stdout) == [str(n) for n in range(40)], ran.stdout
