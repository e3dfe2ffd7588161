"""The `Container` API: callables, exec into a running container, kill, stats."""

import os
import signal
import time

import pytest

from pytest_hermetic.container import Container
from pytest_hermetic.state import list_states
from pytest_hermetic.errors import ContainerStartError
from pytest_hermetic.spec import Spec


def test_callable_runs_as_pid_2_inside(tmp_path):
    out = tmp_path / "out"

    def inside() -> int:
        # The parent's memory is inherited: the closure and its values too.
        with open("/proc/self/status") as f:
            pid_line = [line for line in f if line.startswith("Pid:")][0]
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as f:
            f.write(pid_line.split()[1] + " " + open("/etc/hostname").read().strip())
        return 7

    with Container(Spec.build("host", volumes=[f"{tmp_path}:{tmp_path}"], hostname="inner")) as c:
        result = c.start(target=inside).wait()
    assert result.status.code == 7
    assert out.read_text() == "2 inner"


def test_exec_into_a_running_container(busybox_image):
    with Container(Spec.build(busybox_image, ["sleep", "30"])) as c:
        c.start()
        proc = c.exec(["sh", "-c", "echo $$ > /tmp/exec-pid; ls /proc | grep -cE '^[0-9]+$' > /tmp/count; hostname > /tmp/h"])
        assert proc.wait().code == 0
        check = c.exec(["sh", "-c", "test $(cat /tmp/h) = $(hostname) && test $(cat /tmp/count) -le 4"])
        assert check.wait().code == 0  # same UTS and PID namespace, sees /tmp of the container
        assert c.exec(["false"]).wait().code == 1
        with pytest.raises(ContainerStartError, match="command not found"):
            c.exec(["no-such-thing"])
        # A working directory asked for is used or refused, never swapped for / unsaid (docker exec -w).
        with pytest.raises(ContainerStartError, match="the working directory /no/such/dir is not a directory"):
            c.exec(["true"], workdir="/no/such/dir")
        with pytest.raises(ContainerStartError, match="the working directory /etc/passwd is not a directory"):
            c.exec(["true"], workdir="/etc/passwd")
        assert c.exec(["sh", "-c", 'test "$(pwd)" = /etc'], workdir="/etc").wait().code == 0
        c.kill()
        result = c.wait()
    assert result.status.signal == signal.SIGKILL


def test_wait_with_patience_and_stats():
    with Container(Spec.build("host", ["sleep", "2"], mem="128M")) as c:
        c.start()
        assert c.wait(timeout=0.1) is None
        assert c.stats().memory_limit == 128 << 20
        assert any(s["id"] == c.id and s["alive"] for s in list_states())
        result = c.wait()
    assert result.exit_code == 0 and result.reason is None
    assert result.stats.cpu_usec is not None


def test_remove_kills_a_running_container_and_leaves_nothing():
    c = Container(Spec.build("host", ["sleep", "60"]))
    c.start()
    pid = c.pid
    state = c.state_dir
    c.remove()
    assert not os.path.exists(state)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_remove_ends_every_process_of_the_container_even_while_they_fork():
    """remove() kills PID 1 (the kernel then kills its whole PID namespace
    and lets no fork through): the background jobs, a detached session and a
    loop forking as fast as it can all end, and the cgroup goes."""
    script = "sleep 60 & setsid sleep 60 & (while :; do /bin/true; done) & echo started; wait"
    r, w = os.pipe()
    c = Container(Spec.build("host", ["sh", "-c", script]))
    try:
        c.start(stdout=w)
        os.close(w)
        w = -1
        with os.fdopen(r, "rb", closefd=False) as out:
            assert out.readline() == b"started\n"
        folders = c.cgroup.directories()
        pids = {pid: _started(pid) for folder in folders for pid in open(f"{folder}/cgroup.procs").read().split()}
        assert len(pids) >= 4, pids
    finally:
        if w != -1:
            os.close(w)
        os.close(r)
        c.remove()
    assert not [f for f in folders if os.path.exists(f)]
    outlived = [pid for pid, started in pids.items() if started is not None and _started(pid) == started]
    assert not outlived, f"outlived remove(): {outlived}"


def _started(pid: str) -> str | None:
    """When process `pid` started (its stat's 22nd field), None if it is
    gone: a pid the kernel gave out again later starts later."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1].split()[19]
    except (FileNotFoundError, ProcessLookupError):
        return None


def test_start_failure_cleans_up():
    c = Container(Spec.build("host", ["/no/such/binary"]))
    with pytest.raises(ContainerStartError):
        c.start()
    assert not os.path.exists(c.state_dir)
    assert c.cgroup is None


def test_parent_death_takes_the_container_along(tmp_path, monkeypatch):
    import subprocess
    import sys

    from conftest import ROOT

    # A state root of its own (the parent inherits it): a gc of the session's would clear the exited
    # containers other tests still read (another xdist worker's), and theirs could take this one first.
    monkeypatch.setenv("HERMETIC_STATE", str(tmp_path / "state"))

    code = (
        "import sys, time; sys.path.insert(0, %r)\n"
        "from pytest_hermetic.container import Container\n"
        "from pytest_hermetic.spec import Spec\n"
        "c = Container(Spec.build('host', ['sleep', '60'])); c.start(); print(c.pid, flush=True); time.sleep(60)\n"
    ) % ROOT
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    for _ in range(250):
        # Dead is enough: a zombie waits for the (slow, here) init that adopted it to reap it.
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
        except OSError:
            break
        time.sleep(0.02)
    else:
        pytest.fail("the container outlived its parent")
    from pytest_hermetic.gc import gc_containers

    removed = gc_containers()  # the killed parent left its state folder and cgroup
    assert any("container" in line for line in removed)
    assert os.listdir(tmp_path / "state" / "containers") == []


def test_output_to_a_file_arrives_whole_after_the_caller_closed_it(tmp_path):
    """A file given as stdout is a pipe in the container (runtime/file_relay.py),
    copied into the file through the relay's own copy of the caller's fd:
    the caller may close its fd once the container started (as with
    subprocess), and everything arrives, in order, by the end of `wait`."""
    path = tmp_path / "out.log"
    path.write_text("before\n")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    script = "echo first; head -c 3000000 /dev/zero | tr '\\0' x; echo; echo last"
    with Container(Spec.build("host", ["sh", "-c", script], ephemeral=True)) as box:
        box.start(stdout=fd, stderr=fd)
        os.close(fd)
        assert box.wait().exit_code == 0
        text = path.read_text()  # (not waiting for `remove`)
    assert text == "before\nfirst\n" + "x" * 3000000 + "\nlast\n"


def test_each_write_of_up_to_pipe_buf_arrives_whole_beside_other_containers(tmp_path):
    """Containers writing to one file opened O_APPEND, at once: in place the
    kernel appends each write whole; through the relay's pipes a write of up
    to PIPE_BUF (4 KiB) still arrives whole (a pipe keeps such a write in
    one piece and the relay empties a pipe before it turns to another), so
    records of that size are never cut by another container's (docs/pytest.md)."""
    import select
    import sys

    path = tmp_path / "shared.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    size, count = select.PIPE_BUF, 400
    code = f"import os, sys\nfor _ in range({count}): os.write(1, sys.argv[1].encode() * {size - 1} + b'\\n')"
    boxes = [Container(Spec.build("host", [sys.executable, "-c", code, letter], ephemeral=True)) for letter in "ABCD"]
    try:
        for box in boxes:
            box.start(stdout=fd)
        os.close(fd)
        assert [box.wait().exit_code for box in boxes] == [0, 0, 0, 0]
    finally:
        for box in boxes:
            box.remove()
    lines = path.read_bytes().split(b"\n")[:-1]
    assert len(lines) == 4 * count
    cut = [line[:20] for line in lines if len(line) != size - 1 or len(set(line)) != 1]
    assert not cut, f"{len(cut)} records cut, e.g. {cut[:3]}"


def test_a_callables_written_file_is_a_pipe_into_it(tmp_path):
    path = tmp_path / "held.log"
    with open(path, "w") as held:
        held.write("parent\n")
        held.flush()

        def target() -> int:
            import stat

            assert stat.S_ISFIFO(os.fstat(held.fileno()).st_mode)
            held.write("child\n")
            held.flush()
            return 0

        with Container(Spec.build("host", ephemeral=True)) as box:
            box.start(target=target)
            assert box.wait().exit_code == 0
        held.write("parent again\n")
    assert path.read_text() == "parent\nchild\nparent again\n"


def test_a_written_file_closed_in_the_fork_before_its_relay_starts(tmp_path):
    """The caller listed a file open for writing, and the fork closed it
    before the child's set-up (a garbage object's finalizer, run by the
    child's first collection: seen with an IPython shell's history
    database): the container starts all the same."""
    held = open(tmp_path / "held.log", "w")
    closing = [held.fileno()]
    os.register_at_fork(after_in_child=lambda: closing and os.close(closing.pop()))
    try:
        with Container(Spec.build("host", ephemeral=True)) as box:
            box.start(target=lambda: 0)
            assert box.wait().exit_code == 0
    finally:
        closing.clear()
        held.close()


def test_no_thread_is_left_once_the_files_are_copied(tmp_path):
    """The relay's copying thread runs only while a container's output is
    copied: a thread left in the caller would make Python 3.12+ warn at its
    every later os.fork."""
    import subprocess
    import sys

    script = f"""
import os
from pytest_hermetic.container import Container
from pytest_hermetic.spec import Spec
with open({str(tmp_path / "out.log")!r}, "w") as out:
    with Container(Spec.build("host", ["echo", "hi"], ephemeral=True)) as box:
        box.start(stdout=out.fileno())
        assert box.wait().exit_code == 0
with open("/proc/self/status") as f:
    print([line for line in f if line.startswith("Threads:")][0].split()[1])
"""
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))})
    assert ran.stdout == "1\n", ran.stdout + ran.stderr
    assert (tmp_path / "out.log").read_text() == "hi\n"


def test_a_copy_on_write_volume_shows_its_source_folders_mode_and_owner(tmp_path):
    # (The pytest plugin's /tmp, where the host's is a mount of its own: 1777
    # inside as outside, or no other user could write there.)
    import stat

    from pytest_hermetic.spec import Volume

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, 0, 65534)
    os.chmod(shared, 0o1777)

    def inside() -> int:
        seen = os.stat("/data")
        return 0 if (stat.S_IMODE(seen.st_mode), seen.st_uid, seen.st_gid) == (0o1777, 0, 65534) else 3

    spec = Spec.build("host").with_options(volumes=(Volume(str(shared), "/data", overlay=True),))
    with Container(spec) as box:
        assert box.start(target=inside).wait().status.code == 0
