"""The native child (runtime/native_child.py, clone_child.c) against the
Python child it stands in for: what a container sees, line for line, both
ways; failures worded alike; the Python child wherever the plan cannot
hold a step; nothing left behind in the parent."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from pytest_hermetic.container import Container
from pytest_hermetic.errors import HermeticError
from pytest_hermetic.runtime import native_child
from pytest_hermetic.spec import Spec

pytestmark = pytest.mark.skipif(not native_child.available(),
                                reason="no native child here (extension not built, or not the first user namespace)")

# What a container can see of its own set-up; its ids, inode and mount
# numbers made alike (they differ between any two containers).
PROBE = r"""
cut -d' ' -f4- /proc/self/mountinfo
grep -E '^(Cap|NoNewPrivs|Seccomp|SigBlk|SigIgn|SigCgt|Uid|Gid|Groups|Umask)' /proc/self/status
for fd in /proc/self/fd/*; do echo "$fd $(readlink $fd)"; done
cut -d' ' -f1,4-8 /proc/self/stat
cat /proc/self/cgroup /proc/self/attr/current 2>/dev/null
ls -lan /dev /dev/pts /dev/shm /
cat /etc/hostname /etc/hosts /etc/resolv.conf
pwd; umask; hostname; cat /sys/class/net/lo/flags; ls /sys/class/net
for ns in /proc/self/ns/*; do echo "$ns"; done
env | sort
"""


def _alike(text: str) -> list[str]:
    # Whole words only: a capability mask (16 hex digits) is compared as it is.
    text = re.sub(r"\b[0-9a-f]{32}\b", "ID", text)
    text = re.sub(r"\b[0-9a-f]{12}\b", "SHORT", text)
    text = re.sub(r"\b\d+-\d+-ID\b", "STATE-ID", text)
    text = re.sub(r"(pipe|socket):\[\d+\]", r"\1:[N]", text)
    # ls -l: the link count and the time go (/proc's count is the processes
    # alive in the namespace at that moment; a minute may turn between two
    # containers); mode, owner, size or device numbers and name stay.
    text = re.sub(r"(?m)^([-bcdlps][-rwxsStT]{9}\S?) +\d+ +(\d+ +\d+ +.*?) +[A-Z][a-z]{2} +\d+ +[\d:]+ (.*)$",
                  lambda m: f"{m[1]} {' '.join(m[2].split())} {m[3]}", text)
    return text.splitlines()


@pytest.fixture
def native_starts(monkeypatch):
    """Count the starts the native child made (and put the switch back after)."""
    starts: list[int] = []
    start = native_child.Plan.start

    def counted(plan: native_child.Plan, err_w: int, cgroup_fd: int | None = None) -> int:
        starts.append(1)
        return start(plan, err_w, cgroup_fd)

    monkeypatch.setattr(native_child.Plan, "start", counted)
    yield starts
    native_child.switch(None)


def _run(spec: Spec, native: bool, stdin: int | None = None) -> tuple[object, str]:
    """Run `spec` with the native child or the Python one: (status or the error, its output)."""
    native_child.switch(native)
    r, w = os.pipe()
    null = os.open(os.devnull, os.O_RDONLY) if stdin is None else stdin
    container = Container(spec)
    try:
        try:
            container.start(stdin=null, stdout=w, stderr=w)
        except HermeticError as exc:
            os.close(r)
            return f"{type(exc).__name__}: {exc}", ""
        finally:
            os.close(w)
            if stdin is None:
                os.close(null)
        with os.fdopen(r, "rb") as out:
            output = out.read().decode(errors="replace")
        return container.wait().status, output
    finally:
        container.remove()


@pytest.mark.parametrize("options", [
    {},
    {"user": "1000:1000", "workdir": "/var/tmp/made/here"},
    {"cap_drop": ["ALL"], "cap_add": ["NET_RAW"], "hostname": "named", "env": {"A": "b c"}},
    {"privileged": True},
    {"seccomp": False, "shm_size": "8M"},
], ids=["defaults", "user-workdir", "caps-env", "privileged", "no-seccomp"])
def test_a_container_sees_the_same_both_ways(native_starts, options):
    spec = Spec.build("host", ["sh", "-c", PROBE], **options)
    native_status, native = _run(spec, True)
    assert len(native_starts) == 1, "the native child did not run"
    python_status, python = _run(spec, False)
    assert len(native_starts) == 1
    assert native_status == python_status
    assert _alike(native) == _alike(python)
    assert len(native.splitlines()) > 60


def test_an_image_root_is_the_same_both_ways(native_starts, busybox_image):
    spec = Spec.build(busybox_image, ["sh", "-c", PROBE])
    native_status, native = _run(spec, True)
    python_status, python = _run(spec, False)
    assert len(native_starts) == 1
    assert native_status == python_status and native_status.code == 0
    assert _alike(native) == _alike(python)


def test_what_the_native_child_gives_is_dockers_default(native_starts):
    """Not only alike: each line as a container must have it."""
    status, out = _run(Spec.build("host", ["sh", "-c", "grep -E '^(CapBnd|CapEff|NoNewPrivs|Seccomp|SigBlk|SigIgn):' "
                                                        "/proc/self/status; cat /proc/1/stat"]), True)
    assert len(native_starts) == 1 and status.code == 0
    lines = dict(line.split(":\t") for line in out.splitlines() if ":\t" in line)
    assert lines["CapBnd"] == lines["CapEff"] == "00000000a80425fb"  # Docker's 14
    assert lines["NoNewPrivs"] == "1" and lines["Seccomp"] == "2"
    assert lines["SigBlk"] == lines["SigIgn"] == "0000000000000000"  # Python ignores SIGPIPE; the command does not
    stat = out.splitlines()[-1].split()
    assert stat[0] == stat[5] == stat[4], "PID 1, its own session and group"


@pytest.mark.parametrize("argv, options", [
    (["no-such-command"], {}),
    (["/etc/passwd"], {}),
    (["/etc"], {}),
    (["/etc/shadow"], {"user": "1000:1000"}),
    (["true"], {"workdir": "/proc/no/such"}),
    (["true"], {"workdir": "/etc/passwd"}),
], ids=["not-found", "not-executable", "a-folder", "not-permitted", "workdir-unmakeable", "workdir-a-file"])
def test_failures_are_said_alike_both_ways(native_starts, argv, options):
    spec = Spec.build("host", argv, **options)
    native, _ = _run(spec, True)
    python, _ = _run(spec, False)
    assert len(native_starts) == 1
    assert isinstance(native, str) and native == python


@pytest.mark.parametrize("options, reason", [
    ({"volumes": ["/etc:/mnt/etc:ro"]}, "volumes"),
    ({"user": "nobody"}, "a user given by name"),
    ({"read_only": True}, "--read-only"),
    ({"tmpfs": "/run"}, "--tmpfs"),
    ({"init": True}, "--init"),
], ids=["volume", "named-user", "read-only", "tmpfs", "init"])
def test_the_python_child_runs_where_the_plan_cannot_hold_a_step(native_starts, monkeypatch, options, reason):
    seen = []
    examine = native_child._examine
    monkeypatch.setattr(native_child, "_examine", lambda config: seen.append(examine(config)[0]) or examine(config))
    status, out = _run(Spec.build("host", ["sh", "-c", "echo ran"], **options), True)
    assert status.code == 0 and out.strip().endswith("ran")
    assert native_starts == []
    # (--init's command is a callable of PID 1's: no plan is ever asked for)
    assert seen == ([] if reason == "--init" else [reason])


REOPENED = ("readlink /proc/self/fd/0; test -t 0 && echo a-terminal; "
            "chmod 666 /proc/self/fd/0 2>/dev/null && echo changed || echo refused; "
            "(echo x >> /proc/self/fd/0) 2>/dev/null && echo wrote || echo not-written; "
            "grep -E '^(flags|pos):' /proc/self/fdinfo/0; head -n 1; echo")


def test_a_host_file_at_stdin_is_reopened_read_only_alike(native_starts, tmp_path):
    """A named file open read-only at stdin is reopened on a read-only
    mount of its own (same offset): no chmod, no write through /proc."""
    source = tmp_path / "input"
    source.write_text("0123456789")
    seen = {}
    for native in (True, False):
        fd = os.open(source, os.O_RDONLY)
        try:
            os.read(fd, 3)  # the offset goes with it
            seen[native] = _run(Spec.build("host", ["sh", "-c", REOPENED]), native, stdin=fd)
        finally:
            os.close(fd)
    assert len(native_starts) == 1
    assert seen[True] == seen[False], seen
    status, out = seen[True]
    assert status.code == 0 and "refused" in out and "not-written" in out and "34567" in out, out
    assert source.read_text() == "0123456789" and oct(source.stat().st_mode)[-3:] != "666"


def test_a_terminal_at_stdin_is_reopened_read_only_alike(native_starts):
    """The caller's terminal, reopened on a read-only mount: still a
    terminal, but root in the container cannot chmod the host's node."""
    master, terminal = os.openpty()
    node = os.ttyname(terminal)
    mode = os.stat(node).st_mode
    seen = {}
    try:
        for native in (True, False):
            os.write(master, b"typed\n")  # (what each one's `head -c 5` reads)
            seen[native] = _run(Spec.build("host", ["sh", "-c", REOPENED]), native, stdin=terminal)
        assert os.stat(node).st_mode == mode  # (chmod 666 was refused both times)
    finally:
        os.close(terminal)
        os.close(master)
    assert len(native_starts) == 1
    assert _alike(seen[True][1]) == _alike(seen[False][1]) and seen[True][0] == seen[False][0]
    out = seen[True][1]
    assert "a-terminal" in out and "refused" in out, out


def test_a_fifo_at_stdin_is_reopened_alike(native_starts, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    seen = {}
    for native in (True, False):
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        writer = os.open(fifo, os.O_WRONLY)
        os.set_blocking(reader, True)
        os.write(writer, b"piped")
        os.close(writer)
        try:
            seen[native] = _run(Spec.build("host", ["sh", "-c", REOPENED]), native, stdin=reader)
        finally:
            os.close(reader)
    assert len(native_starts) == 1
    assert _alike(seen[True][1]) == _alike(seen[False][1]) and seen[True][0] == seen[False][0]
    assert "refused" in seen[True][1] and "piped" in seen[True][1], seen[True][1]


def test_the_switch_turns_it_off():
    code = "from pytest_hermetic.runtime import native_child; print(native_child.available())"
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "HERMETIC_NATIVE_CHILD": "0"})
    assert (on.stdout.strip(), off.stdout.strip()) == ("True", "False")


def test_the_parent_keeps_nothing_of_its_native_children(native_starts):
    """Each start maps a stack and parses a plan: both go once the child has
    exec'd or failed; its set-up pipe is closed."""

    def counts() -> tuple[int, dict[int, str]]:
        with open("/proc/self/maps") as f:
            maps = sum(1 for _ in f)
        fds = {}
        for fd in os.listdir("/proc/self/fd"):
            try:
                fds[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:  # the listing's own
                pass
        return maps, fds

    _run(Spec.build("host", ["true"]), True)
    before = counts()
    for _ in range(15):
        status, _ = _run(Spec.build("host", ["true"]), True)
        assert status.code == 0
    _run(Spec.build("host", ["no-such-command"]), True)
    assert len(native_starts) == 17
    maps, fds = counts()
    assert maps == before[0]
    assert {fd: link for fd, link in fds.items() if before[1].get(fd) != link} == {}
    assert {fd: link for fd, link in before[1].items() if fds.get(fd) != link} == {}


def test_a_plan_that_does_not_parse_is_refused():
    """The extension checks the plan's framing before any clone."""
    from pytest_hermetic.runtime import clone_child  # type: ignore[attr-defined]

    r, w = os.pipe()
    try:
        for bad in (b"", b"\x01\x00\x00\x00", native_child.Plan().encode() + b"x",
                    b"\x01\x00\x00\x00" + b"\x63\x00\x00\x00" + b"\x00" * 28):
            with pytest.raises(ValueError, match="does not parse"):
                clone_child.start(bad, w)
    finally:
        os.close(r)
        os.close(w)


def test_the_doctor_says_whether_commands_start_natively(monkeypatch):
    from pytest_hermetic import doctor

    native_child.switch(True)
    assert [(r.status, r.found) for r in doctor.check_native_child(None)] == [  # type: ignore[arg-type]
        (doctor.OK, "commands' containers start without a Python child")]
    monkeypatch.setenv("HERMETIC_NATIVE_CHILD", "0")
    native_child.switch(False)
    try:
        (result,) = doctor.check_native_child(None)  # type: ignore[arg-type]
    finally:
        monkeypatch.delenv("HERMETIC_NATIVE_CHILD")
        native_child.switch(None)
    assert (result.status, result.found, result.fix) == (
        doctor.WARN, "turned off (HERMETIC_NATIVE_CHILD=0)", "unset HERMETIC_NATIVE_CHILD")


def test_namespaces_made_ahead_are_joined_alike(native_starts):
    """The pytest plugin's parent makes the next container's network, IPC and
    UTS namespaces ahead (spare.py); a command's native child joins them as
    the Python child does."""
    from pytest_hermetic.runtime import process, spare

    seen = {}
    try:
        for native in (True, False):
            process.prepare_next(with_placeholder=False)
            assert spare._spare is not None, "no namespaces were made ahead: this test no longer covers them"
            seen[native] = _run(Spec.build("host", ["sh", "-c", PROBE]), native)
            assert spare._spare is None, "the container did not take the namespaces made ahead"
    finally:
        process.discard_prepared()
    assert len(native_starts) == 1
    assert seen[True][0] == seen[False][0] and seen[True][0].code == 0
    assert _alike(seen[True][1]) == _alike(seen[False][1])


def test_threads_start_native_children_at_once(native_starts):
    """Each start has its own stack and plan, and only its own thread waits
    for its child's exec (a notebook's helper threads, a service fixture's)."""
    import threading

    native_child.switch(True)
    results: list[object] = []
    errors: list[BaseException] = []

    def starts(number: int) -> None:
        try:
            for _ in range(4):
                with Container(Spec.build("host", ["sh", "-c", f"exit {number}"])) as container:
                    container.start(stdin=null, stdout=null, stderr=null)
                    results.append((number, container.wait().status.code))
        except BaseException as exc:  # noqa: BLE001 - said below
            errors.append(exc)

    null = os.open(os.devnull, os.O_RDWR)
    try:
        threads = [threading.Thread(target=starts, args=(number,)) for number in range(1, 5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        os.close(null)
    assert errors == []
    assert sorted(results) == [(number, number) for number in range(1, 5) for _ in range(4)]
    assert len(native_starts) == 16


def test_a_thread_route_that_fails_hands_the_start_to_the_python_child(native_starts, monkeypatch):
    """On cgroup v1 the native child is born in its cgroups through the
    parent thread's route; where stepping in fails, the parent moves the
    child instead, which only the Python child waits for."""
    import errno

    from pytest_hermetic.runtime import cgroups

    if not cgroups.detect().v1:
        pytest.skip("no v1 hierarchy here: no thread route to fail")

    def refused(route: cgroups.ThreadRoute) -> None:
        raise OSError(errno.EROFS, "refused by the test")

    monkeypatch.setattr(cgroups.ThreadRoute, "step_in", refused)
    status, out = _run(Spec.build("host", ["sh", "-c", "echo ran"], pids=64), True)
    assert (status.code, out.strip(), native_starts) == (0, "ran", [])
