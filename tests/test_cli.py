"""The `hermetic` command: exit statuses, one-line errors, streams, images."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT, run_cli


def test_must_show_line():
    ran = run_cli("run", "host", "--", "sh", "-c", "echo $$; hostname; ls /sys/class/net")
    pid, hostname, nets = ran.stdout.split("\n")[:3]
    import socket

    assert (pid, nets) == ("1", "lo")
    assert hostname and hostname != socket.gethostname()


def test_exit_status_passes_through():
    assert run_cli("run", "host", "sh", "-c", "exit 3").returncode == 3


def test_stdin_passes_through():
    assert run_cli("run", "host", "cat", input="piped\n").stdout == "piped\n"


def test_stdout_and_stderr_stay_apart():
    ran = run_cli("run", "host", "sh", "-c", "echo out; echo err >&2")
    assert (ran.stdout, ran.stderr) == ("out\n", "err\n")


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["run", "--mem", "lots", "host", "true"], 125, "hermetic: error: mem='lots': not a size; use bytes or a number with a unit, e.g. 64M, 1g, 512MiB"),
        (["run", "no-such-image:1", "true"], 125, "hermetic: error: image 'no-such-image:1' is not in the local store"),
        (["run", "Bad_Ref", "true"], 125, "hermetic: error: image='Bad_Ref': not a valid image reference (repository names must be lowercase)"),
        (["run", "host", "no-such-command"], 127, "hermetic: error: no-such-command: command not found in the container"),
        (["run", "host", "/etc/hostname"], 126, "hermetic: error: /etc/hostname: permission denied"),
        (["run", "--cpus", "fast", "host", "true"], 125, "hermetic: error: cpus='fast': not a number of CPUs"),
        (["run", "--timeout", "0", "host", "true"], 125, "hermetic: error: timeout='0': use a number of seconds more than 0"),
        (["run", "-v", "/no/such:/x", "host", "true"], 125, "hermetic: error: volume '/no/such:/x': the source /no/such does not exist"),
        (["run", "--commit", "Not Valid", "host", "true"], 125, "hermetic: error: 'Not Valid': not a valid image reference"),
        (["import", "dir:/no/such/dir", "x:1"], 125, "hermetic: error: dir:/no/such/dir: no such directory"),
        (["rmi", "never-imported:1"], 125, "hermetic: error: image 'never-imported:1' is not in the local store"),
        (["save", "never-imported:1", "oci:/nonexistent/out"], 125,
         "hermetic: error: image 'never-imported:1' is not in the local store (/"),
        (["import", "/etc", "x:1"], 125, "hermetic: error: cannot import '/etc': give its transport, e.g. "
                                         "`hermetic import dir:/etc x:1`"),
        (["import", "/etc/hostname"], 125, "hermetic: error: cannot import '/etc/hostname': give its transport, e.g. "
                                           "`hermetic import tar:/etc/hostname NAME`"),
    ],
)
def test_bad_input_is_one_clear_line(args, code, message):
    ran = run_cli(*args)
    assert ran.returncode == code
    assert ran.stderr.startswith(message), ran.stderr
    assert ran.stderr.count("\n") == 1 and "Traceback" not in ran.stderr


def test_images_import_rmi_gc(busybox_rootfs, tmp_path):
    # A store and state root of its own: another xdist worker's gc could take what this one
    # expects to remove, and this gc would clear the exited containers other tests still read.
    env = {"HERMETIC_STORE": str(tmp_path / "store"), "HERMETIC_STATE": str(tmp_path / "state")}
    imported = run_cli("import", f"dir:{busybox_rootfs}", "cli-test:1", env=env)
    assert imported.returncode == 0 and imported.stdout.startswith("cli-test:1 sha256:")
    listing = run_cli("images", env=env).stdout
    assert "host" in listing and "cli-test:1" in listing
    assert run_cli("run", "cli-test:1", "true", env=env).returncode == 0
    assert run_cli("rmi", "cli-test:1", env=env).stdout == "untagged cli-test:1\n"
    assert "cli-test:1" not in run_cli("images", env=env).stdout
    gc = run_cli("gc", env=env)
    assert gc.returncode == 0 and "removed" in gc.stdout


def test_tar_import(busybox_rootfs, tmp_path):
    import tarfile

    archive = tmp_path / "rootfs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(busybox_rootfs, arcname=".")
    assert run_cli("import", f"tar:{archive}", "from-tar:1").returncode == 0
    ran = run_cli("run", "from-tar:1", "sh", "-c", "cat /etc/os-release | head -1")
    assert "hermetic busybox" in ran.stdout
    run_cli("rmi", "from-tar:1")


def test_ps_lists_a_running_named_container(busybox_image):
    import subprocess
    import sys
    import time

    from conftest import ROOT

    proc = subprocess.Popen([sys.executable, "-m", "pytest_hermetic", "run", "--name", "dozer", busybox_image, "sleep", "30"],
                            env={**__import__("os").environ, "PYTHONPATH": ROOT})
    try:
        for _ in range(100):
            if "dozer" in run_cli("ps").stdout:
                break
            time.sleep(0.05)
        listing = run_cli("ps").stdout
        assert "dozer" in listing and "busybox:test" in listing
        duplicate = run_cli("run", "--name", "dozer", busybox_image, "true")
        assert duplicate.returncode == 125 and "already has that name" in duplicate.stderr
        committed = run_cli("commit", "dozer", "from-running:1")
        assert committed.returncode == 0, committed.stderr
    finally:
        proc.terminate()  # forwarded to PID 1 (sleep), which has no handler and ignores it
        time.sleep(0.3)
        proc.terminate()  # the second one kills the container
        assert proc.wait(timeout=10) == 137
    run_cli("rmi", "from-running:1")


def test_second_interrupt_kills_the_container(busybox_image):
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    proc = subprocess.Popen([sys.executable, "-m", "pytest_hermetic", "run", "--name", "mule", busybox_image, "sleep", "60"],
                            env={**__import__("os").environ, "PYTHONPATH": ROOT}, stderr=subprocess.PIPE, text=True)
    for _ in range(100):
        if "mule" in run_cli("ps").stdout:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # PID 1 (sleep) has no handler: ignored
    time.sleep(0.3)
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)  # the second one kills the container
    assert proc.wait(timeout=10) == 137
    assert "mule" not in run_cli("ps").stdout


def test_python_dash_m_and_console_script_agree():
    import os
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(sys.executable), "hermetic")
    if not os.path.exists(script):
        pytest.skip("the console script is not installed beside this interpreter")

    assert subprocess.run([script, "run", "host", "true"]).returncode == 0


def test_the_console_script_runs_an_image_without_this_pythons_library(busybox_image):
    """The console script imports far less than `python -m` (whose runpy
    brings warnings, contextlib and more): whatever the child imports after
    entering an image's root must be imported before the fork (os.execvpe
    imports `warnings`; without it such a run ended with 125 and no word)."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    ran = subprocess.run([sys.executable, "-c", "from pytest_hermetic.cli import console; console()", "run",
                          busybox_image, "sh", "-c", "echo hi; test -e /usr/lib/python3 || echo no-python"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT}, cwd="/", timeout=60)
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "hi\nno-python\n", "")


def test_init_runs_the_command_as_pid_2_and_reaps():
    ran = run_cli("run", "--init", "host", "sh", "-c", "echo $$; (sleep 0.1 &); sleep 0.3; ps -o stat= -e | grep -c Z; kill -TERM $$")
    pid, zombies = ran.stdout.split()
    assert pid == "2" and zombies == "0"  # the orphaned sleep was reaped by PID 1
    assert ran.returncode == 143 and ran.stderr == "hermetic: killed by signal SIGTERM\n"
    missing = run_cli("run", "--init", "host", "no-such-command")
    assert missing.returncode == 127 and "command not found" in missing.stderr


def test_userns_as_root_is_refused_with_the_reason():
    """Root's private id range would leave the image's files unmapped (no
    idmapped layers yet): one line that says so, not a kernel errno."""
    ran = run_cli("run", "--userns", "host", "true")
    assert ran.returncode == 125
    assert ran.stderr.startswith("hermetic: error: userns=True as root is not supported yet")
    assert "fix:" in ran.stderr and ran.stderr.count("\n") == 1


def test_run_loads_none_of_the_heavy_modules():
    """`hermetic run` starts like runc (issue #16): none of these is on its
    path (`re` alone, with `enum`, `functools` and `collections`, was ~4 ms
    of ~28): each came back once through a module the run path imports."""
    console = ("import sys; sys.argv = ['hermetic', 'run', 'host', 'true']; "  # as the console script does (not -m: runpy)
               "from pytest_hermetic.cli import console; sys.exit(console())")
    ran = subprocess.run([sys.executable, "-X", "importtime", "-c", console],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    assert ran.returncode == 0, ran.stderr
    loaded = {line.split("|")[-1].strip() for line in ran.stderr.splitlines() if line.startswith("import time:")}
    heavy = {"re", "enum", "argparse", "json", "functools", "collections", "typing", "dataclasses", "inspect",
             "threading", "signal", "subprocess", "tempfile", "shutil", "pathlib"}
    assert loaded & heavy == set(), sorted(loaded & heavy)
