"""Bad @hermetic markers: each is an error of that test only, one line naming the test, the
option and the fix; the session and the other tests of the module go on; never INTERNALERROR."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys

import pytest

# (marker arguments, words the report must hold); every one of these errors at set-up
BAD_MARKERS = [
    ("cpus=1e9", "cpus=1000000000.0: use a number of CPUs from 0.01 to 1024"),
    ("cpus='lots'", "cpus='lots': not a number of CPUs"),
    ("cpus=True", "cpus=True: not a number of CPUs"),
    ("pids=10**20", "pids=100000000000000000000: must be a whole number of at least 1 and at most 4194304"),
    ("pids=1.5", "pids=1.5: not a whole number"),
    ("mem=1", "mem=1: too little for a container to start; use at least 6M"),
    ("mem=[64]", "mem=[64]: not a size"),
    ("timeout=float('inf')", "timeout=inf"),
    ("image='../../etc'", "image='../../etc': bad registry '..'"),
    ("image='dir:/'", "image='dir:/': that is the host's whole root; use image='host'"),
    ("image=5", "image=5: give an image reference"),
    ("user=99999999999", "user=99999999999: id 99999999999 is out of range"),
    ("user=['root']", "user=['root']: use a user name or uid"),
    ("user=True", "user=True"),
    ("env='A=1'", "env='A=1': give a mapping of names to values, e.g. env={'A': '1'}"),
    ("env={'A': None}", "env: A=None: the value must be a string"),
    ("env={'A': 'x\\0y'}", "env: A=...: the value contains a NUL byte"),
    ("env={'': '1'}", "env: '' is not a variable name"),
    ("hostname=5", "hostname=5: use letters, digits and '-'"),
    ("hostname='ab\\n'", "hostname='ab\\n'"),
    ("volumes=[5]", "volumes: 5 is not a volume; use 'SRC:DST' or 'SRC:DST:ro' strings"),
    ("volumes='/tmp:/data'", "volumes='/tmp:/data': give a list"),
    ("volumes=['/tmp:/']", "cannot bind over the container's root /"),
    ("volumes=['/tmp:/proc']", "/proc is where the engine mounts its own /proc"),
    ("volumes=['/tmp:/dev']", "/dev is where the engine mounts its own /dev"),
    ("privileged='false'", "privileged='false': use True or False (a string such as 'false' is not a boolean)"),
    ("privileged=1", "privileged=1: use True or False"),
    ("seccomp='off'", "seccomp='off': use True or False"),
    ("userns='yes'", "userns='yes': use True, False or None"),
    ("workdir='relative'", "workdir='relative': use an absolute path"),
    ("net='host'", "net='host'"),
    ("net=[1]", "net=[1]"),
    ("memory='1G'", "unknown argument 'memory'"),
    ("'host', 'extra'", "takes at most one positional argument"),
]
# values that are fine: the test runs in its container (booleans are booleans, numbers are numbers)
GOOD_MARKERS = ["user=5", "env={'A': 1}", "privileged=False", "hostname='box'", "workdir='/made/by/the/marker'"]
LIMITS = ["cpus=1", "pids='64'", "mem='64M'"]  # as root only: rootless, without a delegated cgroup, limits are refused


def module_source(good: list[str] = GOOD_MARKERS) -> str:
    lines = ["import os", "import pytest", ""]
    for i, (args, _) in enumerate(BAD_MARKERS):
        lines += [f"@pytest.mark.hermetic({args})", f"def test_bad_{i}():",
                  "    open('/tmp/bad-marker-ran', 'w').write('a bad marker must never run')", ""]
    for i, args in enumerate(good):
        lines += [f"@pytest.mark.hermetic({args})", f"def test_good_{i}():", "    assert os.getpid() == 2", ""]
    lines += ["@pytest.mark.hermetic(user='nosuch')", "def test_no_such_user():", "    pass", "",
              "@pytest.mark.hermetic(image='no-such-image-for-hermetic:1')", "def test_no_such_image():", "    pass", "",
              "def test_in_place():", "    assert os.getpid() != 2", ""]
    return "\n".join(lines)


def check_outcome(output: str, good: list[str] = GOOD_MARKERS) -> None:
    assert "INTERNALERROR" not in output and "Traceback" not in output, output
    # every bad marker, the missing user and the missing image: an error of that test alone
    errors = len(BAD_MARKERS) + 2
    assert f"{len(good) + 1} passed, {errors} errors" in output, output
    for i, (_, words) in enumerate(BAD_MARKERS):
        line = next((line for line in output.splitlines() if f"test_markers.py::test_bad_{i}: bad @hermetic marker:" in line),
                    None)
        assert line is not None and words in line, (i, words, line)
    assert "hermetic: user 'nosuch' not found in the image's /etc/passwd" in output
    assert "hermetic: image 'no-such-image-for-hermetic:1' is not in the local store" in output


def test_bad_markers_are_errors_of_their_tests_only(pytester: pytest.Pytester):
    pytester.makepyfile(test_markers=module_source(GOOD_MARKERS + LIMITS))
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", "-rE",
                                           "-o", "console_output_style=classic")
    output = result.stdout.str() + result.stderr.str()
    check_outcome(output, GOOD_MARKERS + LIMITS)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert not os.path.exists("/tmp/bad-marker-ran")


def test_bad_markers_rootless(test_user):
    """The same module, run by the unprivileged test user."""
    from conftest import ROOT

    if os.path.realpath(sys.executable).startswith("/root/"):
        pytest.skip("this interpreter lives under /root, out of an unprivileged user's reach")
    entry = pwd.getpwnam(test_user)
    home = os.path.join(os.path.dirname(os.environ["HERMETIC_STATE"]), f"home-{entry.pw_uid}")
    project = os.path.join(home, "bad-markers")
    os.makedirs(project, exist_ok=True)
    with open(os.path.join(project, "test_markers.py"), "w") as f:
        f.write(module_source())
    for path in (home, project, os.path.join(project, "test_markers.py")):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    env = {"PATH": "/usr/bin:/bin", "HOME": home, "PYTHONPATH": ROOT, "HERMETIC_STATE": f"{home}/state",
           "XDG_DATA_HOME": f"{home}/data", "LANG": "C.UTF-8", "HERMETIC_OFFLINE": "1"}
    ran = subprocess.run(["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups",
                          sys.executable, "-m", "pytest", "-p", "hermetic", "-p", "no:cacheprovider", "-q", "-rE",
                          "--basetemp", f"{home}/basetemp-bad-markers", "test_markers.py"],
                         cwd=project, env=env, capture_output=True, text=True, timeout=180)
    check_outcome(ran.stdout + ran.stderr)
    assert ran.returncode == 1
