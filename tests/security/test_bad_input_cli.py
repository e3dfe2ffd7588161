"""Bad input on the command line: each is one line naming the option and the fix, exit 125
(as `docker run`), never a traceback, and nothing in the store is changed or lost."""

from __future__ import annotations

import json
import os

import pytest

from conftest import run_cli

VOLUME = "/tmp"  # exists everywhere, for the target checks

# (arguments after `hermetic`, words the one line must hold: the field and the fix)
RUN_INPUTS = [
    (["--cpus", "1e9"], "cpus='1e9': use a number of CPUs from 0.01 to 1024"),
    (["--cpus", "-1"], "cpus='-1'"),
    (["--cpus", "nan"], "cpus='nan'"),
    (["--cpus", "inf"], "cpus='inf'"),
    (["--pids", "99999999999999999999"], "pids='99999999999999999999': must be a whole number of at least 1 and at most"),
    (["--pids", "0"], "pids='0'"),
    (["--pids", "1.5"], "pids='1.5': not a whole number"),
    (["--mem", "1"], "mem='1': too little for a container to start; use at least 6M"),
    (["--mem", "5M"], "mem='5M': too little"),
    (["--mem", "99999999999999999999P"], "mem='99999999999999999999P': more than"),
    (["--mem", "lots"], "mem='lots': not a size"),
    (["-u", "99999999999"], "user='99999999999': id 99999999999 is out of range"),
    (["-u", "1000:99999999999"], "user='1000:99999999999': id 99999999999 is out of range"),
    (["-u", "a:b:c"], "user='a:b:c'"),
    (["-u", "bad name"], "user='bad name'"),
    (["-u", ""], "user=''"),
    (["--hostname", "ab\n"], "hostname='ab\\n'"),
    (["--hostname=-x"], "hostname='-x'"),
    (["--hostname", "a" * 64], "hostname="),
    (["--name", "x\n"], "name='x\\n'"),
    (["--name=-x"], "name='-x'"),
    (["-w", "relative"], "workdir='relative': use an absolute path"),
    (["-w", ""], "workdir='': use an absolute path"),
    (["-v", f"{VOLUME}:/"], "cannot bind over the container's root /"),
    (["-v", f"{VOLUME}:/proc"], "/proc is where the engine mounts its own /proc"),
    (["-v", f"{VOLUME}:/proc/sys"], "/proc/sys is where the engine mounts its own /proc"),
    (["-v", f"{VOLUME}:/sys"], "/sys is where the engine mounts its own /sys"),
    (["-v", f"{VOLUME}:/sys/fs/cgroup"], "/sys/fs/cgroup is where"),
    (["-v", f"{VOLUME}:/dev"], "/dev is where the engine mounts its own /dev"),
    (["-v", f"{VOLUME}:/dev/pts"], "/dev/pts is where"),
    (["-v", f"{VOLUME}://proc/../proc"], "/proc is where"),
    (["-v", f"{VOLUME}:relative"], "must be an absolute path"),
    (["-v", f"{VOLUME}:/x:rx"], "use SRC:DST or SRC:DST:ro"),
    (["-v", "/no/such/source:/x"], "the source /no/such/source does not exist"),
    (["-e", "=x"], "-e '=x': use KEY=VALUE"),
    (["--timeout", "1e300"], "timeout='1e300'"),
    (["--timeout", "0"], "timeout='0'"),
    (["--timeout", "nan"], "timeout='nan'"),
    (["--net=host"], "net='host'"),
    (["--net=bad name!"], "net='bad name!'"),
    (["--security-opt", "apparmor=x"], "--security-opt 'apparmor=x': only seccomp=unconfined is supported"),
]
IMAGE_INPUTS = [
    ("../../etc", "image='../../etc'"),
    ("dir:/", "image='dir:/': that is the host's whole root; use image='host'"),
    ("Bad_Ref", "image='Bad_Ref': not a valid image reference"),
    ("a" * 300, "repository name longer than 255 characters"),
    ("busybox:b\nad", "image='busybox:b\\nad': bad tag"),
]
USAGE_INPUTS = [  # argparse's errors: exit 125 too, and one line
    (["run", "--bogus", "host", "true"], "unrecognized arguments: --bogus"),
    (["run"], "the following arguments are required: IMAGE"),
    (["run", "--mem"], "argument -m/--memory/--mem: expected one argument"),
    ([], "the following arguments are required: COMMAND"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["pull"], "the following arguments are required: NAME[:TAG|@DIGEST]"),
    (["rmi"], "the following arguments are required: IMAGE"),
    (["network", "create"], "the following arguments are required: NAME"),
]


def store_state(root: str) -> dict:
    """What a bad input must not change: the names, blobs, layers and staging of the store."""
    listing = {}
    for sub in ("blobs/sha256", "layers", "tmp"):
        path = os.path.join(root, sub)
        listing[sub] = sorted(os.listdir(path)) if os.path.isdir(path) else []
    refs = os.path.join(root, "refs.json")
    listing["refs"] = json.load(open(refs)) if os.path.exists(refs) else {}
    return listing


def one_clear_line(ran, words: str, code: int = 125) -> None:
    assert ran.returncode == code, ran
    assert ran.stderr.startswith("hermetic: error: "), ran.stderr
    assert ran.stderr.count("\n") == 1 and "Traceback" not in ran.stderr, ran.stderr
    assert words in ran.stderr, ran.stderr
    assert len(ran.stderr) < 500, ran.stderr


def everything(roots: dict[str, str]) -> dict:
    """`store_state` of a store, and every path below it and below the state root with its
    type and size: what a bad input must leave as it found (no container state, read-write
    layer, lock, use record or staging folder added or removed)."""
    found = {"store": store_state(roots["HERMETIC_STORE"]), "paths": []}
    for root in roots.values():
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(folder, name)
                info = os.lstat(path)
                kind = "dir" if name in dirs else oct(info.st_mode >> 12)
                found["paths"].append((os.path.relpath(path, os.path.dirname(root)), kind,
                                       None if name in dirs else info.st_size))
    found["paths"].sort()
    return found


@pytest.fixture(scope="module")
def roots(tmp_path_factory, busybox_rootfs) -> dict[str, str]:
    """A store and a state root of this module's own (env for `run_cli`), holding `busybox:test`:
    the session's are shared with other tests, which under xdist change them at any moment, so
    "nothing changed" is checked where only this module's commands write."""
    base = tmp_path_factory.mktemp("bad-input-cli")
    env = {"HERMETIC_STORE": str(base / "store"), "HERMETIC_STATE": str(base / "state")}
    ran = run_cli("import", "-e", "GREETING=hello", "-w", "/root", f"dir:{busybox_rootfs}", "busybox:test", env=env)
    assert ran.returncode == 0, ran
    yield env
    for folder in (f"{env['HERMETIC_STORE']}/containers", f"{env['HERMETIC_STATE']}/containers"):
        assert not os.path.isdir(folder) or os.listdir(folder) == [], folder  # nothing left by the good runs


@pytest.fixture(scope="module")
def image(roots):
    return "busybox:test"


@pytest.mark.parametrize("args, words", RUN_INPUTS, ids=[" ".join(a)[:40] for a, _ in RUN_INPUTS])
def test_bad_run_option(roots, image, args, words):
    before = everything(roots)
    one_clear_line(run_cli("run", *args, image, "echo", "never", env=roots), words)
    assert everything(roots) == before


@pytest.mark.parametrize("ref, words", IMAGE_INPUTS, ids=[r[:20] for r, _ in IMAGE_INPUTS])
def test_bad_image_reference(roots, ref, words):
    before = everything(roots)
    one_clear_line(run_cli("run", ref, "true", env={**roots, "HERMETIC_OFFLINE": "1"}), words)
    assert everything(roots) == before


@pytest.mark.parametrize("args, words", USAGE_INPUTS, ids=[" ".join(a) or "nothing" for a, _ in USAGE_INPUTS])
def test_usage_errors_exit_125_in_one_line(args, words):
    ran = run_cli(*args)
    one_clear_line(ran, words)
    assert "--help`" in ran.stderr  # the fix: where the usage is


@pytest.mark.parametrize("args, words", [
    (["--cmd", "'unbalanced"], "--cmd \"'unbalanced\": No closing quotation"),
    (["-w", "relative"], "workdir='relative'"),
    (["--user", "99999999999"], "user='99999999999'"),
    (["-e", "=x"], "-e '=x'"),
])
def test_bad_import_option(roots, busybox_rootfs, args, words):
    before = everything(roots)
    one_clear_line(run_cli("import", *args, f"dir:{busybox_rootfs}", "bad-import:1", env=roots), words)
    assert everything(roots) == before


def test_a_missing_workdir_is_made_as_docker_does(roots, image):
    ran = run_cli("run", "-w", "/made/by/hermetic", image, "pwd", env=roots)
    assert (ran.returncode, ran.stdout) == (0, "/made/by/hermetic\n"), ran


def test_a_workdir_that_is_a_file_is_one_clear_line(roots, image):
    one_clear_line(run_cli("run", "-w", "/bin/busybox", image, "pwd", env=roots), "workdir /bin/busybox: Not a directory")


@pytest.mark.parametrize("args, line", [
    (["-u", "nosuchuser"], "user 'nosuchuser' not found in the image's /etc/passwd"),
    (["-u", "root:nosuchgroup"], "group 'nosuchgroup' not found in the image's /etc/group"),
    (["-w", "/proc/1/made"], "workdir /proc/1/made is not in the image and cannot be made there"),
])
def test_what_the_containers_set_up_finds_is_said_without_a_type_name(roots, image, args, line):
    """Found in the child, said by the parent: the message alone (no `ContainerStartError: `)."""
    ran = run_cli("run", *args, image, "true", env=roots)
    one_clear_line(ran, line)
    assert ran.stderr.startswith(f"hermetic: error: {line}"), ran.stderr


def test_after_all_that_the_image_is_listed_and_runs(roots, image):
    listed = run_cli("images", env=roots)
    assert listed.returncode == 0 and "busybox" in listed.stdout and listed.stderr == "", listed
    ran = run_cli("run", image, "sh", "-c", "echo $GREETING", env=roots)
    assert (ran.returncode, ran.stdout) == (0, "hello\n"), ran


ROOTLESS_INPUTS = [
    (["--cpus", "1e9"], "cpus='1e9'"),
    (["--pids", "99999999999999999999"], "pids='99999999999999999999'"),
    (["-u", "99999999999"], "user='99999999999'"),
    (["--mem", "1"], "mem='1'"),
    (["-v", f"{VOLUME}:/proc"], "/proc is where"),
    (["--hostname", "ab\n"], "hostname="),
    (["--bogus"], "unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize("args, words", ROOTLESS_INPUTS, ids=[" ".join(a)[:30] for a, _ in ROOTLESS_INPUTS])
def test_bad_input_rootless(test_user, args, words):
    one_clear_line(run_cli("run", *args, "host", "true", user=test_user), words)


def test_a_missing_workdir_is_made_rootless(test_user):
    ran = run_cli("run", "-w", "/made/rootless", "host", "pwd", user=test_user)
    assert (ran.returncode, ran.stdout) == (0, "/made/rootless\n"), ran
