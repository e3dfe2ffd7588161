"""Service containers as testcontainers users know them: waits, logs in a
failed test's report, session-scoped services on a private network that
the test joins, in place, under --hermetic and with xdist (issue #13)."""

from __future__ import annotations

import os
import re

import pytest

DOCS = os.path.join(os.path.dirname(__file__), "..", "docs", "pytest.md")


def worked_example() -> tuple[str, str]:
    """The ini and the test module of docs/pytest.md's worked example, as written there."""
    with open(DOCS) as f:
        section = f.read().split("### A worked example")[1]
    ini = section.split("```ini\n")[1].split("```")[0]
    module = section.split("```python\n")[1].split("```")[0]
    return ini, module


ERRORS = r'''
import os
import pytest
from pytest_hermetic.errors import SpecError


def test_a_wait_that_times_out_names_the_container(containers):
    svc = containers.run("busybox:test", ["sh", "-c", "echo starting; echo still starting; sleep 60"], name="slow")
    with pytest.raises(TimeoutError) as info:
        svc.wait_for_log("^ready", timeout=0.5)
    assert str(info.value).endswith("container slow: not writing a line matching '^ready' within 0.5 s; "
                                    "its last lines:\nstarting\nstill starting")
    with pytest.raises(TimeoutError, match="container slow: not accepting connections on port 1 within"):
        svc.wait_for_port(1, timeout=0.3)
    with pytest.raises(TimeoutError, match="container slow: not passing 'false' within"):
        svc.wait_for("false", timeout=0.3)


def test_a_service_that_ends_says_so(containers):
    svc = containers.run("busybox:test", ["sh", "-c", "echo bad config; exit 3"], name="broken")
    with pytest.raises(ConnectionError, match=r"container broken ended \(.*3.*\) before .*\nbad config"):
        svc.wait_for_http("/", port=80, timeout=10)


def test_an_image_that_is_not_there(containers):
    containers.run("127.0.0.1:1/postgres:16", ["true"])


def test_address_of_a_service_off_the_tests_network(containers):
    svc = containers.run("busybox:test", ["sleep", "60"], name="lone")
    if os.getpid() == 2:  # a hermetic test, on net="app": no network it shares with "lone"
        with pytest.raises(SpecError, match=r"container lone: a hermetic test reaches it only on a network they "
                                            r"share \(it has net=False, the test net='app'\); start it on a network"):
            svc.address(80)
    else:
        assert svc.address(80)[0] == "127.0.0.1"


@pytest.fixture(scope="module")
def db(containers_module):
    svc = containers_module.run("busybox:test", ["sh", "-c", "echo db up; sleep 60"], name="db", net="mod")
    svc.wait_for_log("db up")
    return svc


def test_a_module_service_and_its_network(db, containers):
    peer = containers.run("busybox:test", ["sleep", "60"], name="peer", net="mod")  # joins the module's network
    assert db.ip in peer.exec("cat", "/etc/hosts").output
    assert db.exec("hostname").output == "db\n"


def test_the_module_service_is_started_once(db):
    assert db.wait_for_log("db up") == "db up"
    assert db.logs().count("db up") == 1
'''


def failure(out: str, name: str) -> str:
    """The failure section of test `name` in pytest's output."""
    sections = re.split(r"\n_{3,} (\S+) _{3,}\n", out.split("short test summary")[0])
    return sections[sections.index(name) + 1]


@pytest.mark.parametrize("mode", [[], ["--hermetic"], ["--hermetic", "-n", "2"]], ids=["in-place", "hermetic", "xdist"])
def test_service_errors_and_scopes(pytester: pytest.Pytester, busybox_image, mode):
    ini, _ = worked_example()  # the example's network, so that hermetic tests are on "app"
    pytester.makeini(ini + "hermetic_service_log_lines = 5\n")
    pytester.makepyfile(test_errors=ERRORS)
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", *mode, timeout=180)
    out = result.stdout.str()
    result.assert_outcomes(passed=5, failed=1)
    # A missing image is one line at the test's call, not the engine's frames.
    missing = failure(out, "test_an_image_that_is_not_there")
    assert "containers.run('127.0.0.1:1/postgres:16'): cannot reach registry 127.0.0.1:1" in missing
    assert "hermetic pull 127.0.0.1:1/postgres:16" in missing
    assert "registry.py" not in missing and "container.py" not in missing, missing


HOST_TMP = r'''
import os, shutil, sys, tempfile, venv
import pytest


@pytest.fixture(scope="session")
def python_under_tmp():
    folder = tempfile.mkdtemp(prefix="hermetic-venv-")  # a virtualenv under /tmp, as CI jobs often make
    venv.create(folder, with_pip=False)
    yield os.path.join(folder, "bin", "python")
    shutil.rmtree(folder)


def test_a_host_service_runs_a_virtualenv_under_tmp(containers, python_under_tmp):
    svc = containers.run("host", [python_under_tmp, "-c", "import sys; print(sys.prefix); "
                                  "open(sys.prefix + '/written', 'w').close()"])
    assert svc.wait(60)[0] == 0, svc.logs()
    prefix = os.path.dirname(os.path.dirname(python_under_tmp))
    assert svc.logs() == prefix + "\n"
    assert not os.path.exists(prefix + "/written")  # copy-on-write: its writes are its own


def test_an_image_that_is_nowhere(containers):
    containers.run("nosuch:1", ["true"])
'''


@pytest.mark.parametrize("mode", [[], ["--hermetic"]], ids=["in-place", "hermetic"])
def test_service_containers_see_the_hosts_tmp_and_say_a_missing_image_in_one_line(pytester: pytest.Pytester, mode):
    pytester.makepyfile(test_host_tmp=HOST_TMP)
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", *mode, timeout=180)
    result.assert_outcomes(passed=1, failed=1)
    missing = failure(result.stdout.str(), "test_an_image_that_is_nowhere")
    errors = [line for line in missing.splitlines() if line.startswith("E ")]
    assert len(errors) == 1 and errors[0].split(": ", 1)[1].startswith("containers.run('nosuch:1'): "), missing
    assert "Traceback" not in missing and "pytest_hermetic/" not in missing, missing


def test_a_services_log_is_a_file_without_a_name(containers):
    """A session killed mid-test (SIGKILL: no clean-up runs) leaves no log
    behind: it never had a name in the temp folder."""
    import tempfile

    def ours() -> set[str]:
        return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("hermetic-log")}

    before = ours()
    svc = containers.run("host", ["sh", "-c", "echo one; echo two >&2; sleep 60"])
    assert svc.wait_for_log("^two$", timeout=30) == "two"
    assert svc.logs() == "one\ntwo\n"
    assert ours() == before
    assert os.readlink(f"/proc/self/fd/{svc._log_fd}").endswith(" (deleted)")
    svc.remove()
    with pytest.raises(RuntimeError, match=r"container .* was removed, and its logs with it"):
        svc.logs()


LOG_WITHHELD = r'''
import errno, os, stat, sys
import pytest

TOKEN = "token-of-the-service-log"


@pytest.fixture(scope="session")
def svc(containers_session):
    svc = containers_session.run("host", ["sh", "-c", f"echo {TOKEN}; sleep 60"], name="logger", net="app")
    svc.wait_for_log(TOKEN)
    return svc


@pytest.mark.parametrize("n", [1, 2])
def test_a_test_gets_no_descriptor_of_a_services_log(svc, n):
    assert os.getpid() == 2  # (in its container)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            mode = os.fstat(fd)
        except OSError:
            continue
        if not stat.S_ISREG(mode.st_mode) or not mode.st_size:
            continue
        try:
            data = os.pread(fd, mode.st_size, 0)
        except OSError as exc:
            if exc.errno != errno.EBADF:
                raise
            # Open for writing only: what it reaches is read through its link, as a test could.
            try:
                again = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)
            except OSError:
                continue  # (nothing to read through it either)
            try:
                data = os.pread(again, mode.st_size, 0)
            finally:
                os.close(again)
        assert TOKEN.encode() not in data, (fd, os.readlink(f"/proc/self/fd/{fd}"))
    assert TOKEN in svc.logs()  # (through pytest, as every call on a service)
'''


def test_a_hermetic_test_gets_no_descriptor_of_a_services_log(pytester: pytest.Pytester, busybox_image):
    """A service's log is a file without a name that pytest holds open; a
    test forked from pytest inherits it, and `seal` keeps such a file as
    the test's own: unless withheld, the test could read and write another
    container's output."""
    pytester.makeini("[pytest]\nhermetic_net = app\n")
    pytester.makepyfile(test_log_withheld=LOG_WITHHELD)
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", "--hermetic", timeout=180)
    result.assert_outcomes(passed=2)
