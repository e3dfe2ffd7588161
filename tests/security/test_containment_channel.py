"""What a hermetic test's container writes to its pipe to pytest is read as
hostile: the pipe is the test's, but any root process of the container that
reaches it (a program of the image the test runs) writes what it likes, and
pytest runs on the host.  Each attack here writes a message of its own choosing
there; none may run code in pytest (a pickle naming `print`, which would print
a marker from the pytest process), write a host file (coverage data that is
an SQL script attaching a database file), connect pytest to an address it
does not serve itself, or call the `containers` fixture's other methods.
And the pipe is the test's own: a program it runs cannot open it.
"""

from __future__ import annotations

import socket

import pytest

from attack import inner_session, marker_options

SEND = """
import os, pickle, sys
from pytest_hermetic import hermetic
from pytest_hermetic.forked.wire import write_frame

def pipe_to_pytest():
    frame = sys._getframe()
    while "write_fd" not in frame.f_locals:  # child_main's
        frame = frame.f_back
    return frame.f_locals["write_fd"]
"""

PICKLE_SUITE = SEND + """
class Shout:
    def __reduce__(self):
        return (print, ("MARKER-" + "PRINTED-BY-PYTEST",))

@hermetic(OPTIONS)
def test_sends_a_pickle_that_calls():
    write_frame(pipe_to_pytest(), pickle.dumps(("warning", Shout())))
"""


def test_a_message_that_names_a_callable_runs_nothing_in_pytest():
    ran = inner_session(None, "channel-pickle", PICKLE_SUITE.replace("OPTIONS", marker_options()))
    assert "MARKER-PRINTED-BY-PYTEST" not in ran.stdout + ran.stderr, ran.stdout
    assert "pytest refused a message from the test's container" in ran.stdout, ran.stdout + ran.stderr
    assert "1 failed" in ran.stdout or "1 error" in ran.stdout, ran.stdout


COVERAGE_SUITE = SEND + """
import zlib

@hermetic(OPTIONS)
def test_sends_coverage_that_is_sql():
    script = "ATTACH DATABASE " + repr(os.environ["MARKER_DB"]) + " AS m; CREATE TABLE m.t (x);"
    write_frame(pipe_to_pytest(), pickle.dumps(("coverage", b"z" + zlib.compress(script.encode()))))
"""


def test_coverage_data_from_the_container_writes_no_host_file(tmp_path):
    pytest.importorskip("pytest_cov")
    marker = tmp_path / "written-by-sqlite.db"
    (tmp_path / "covered.py").write_text("X = 1\n")
    source = f"import os\nos.environ['MARKER_DB'] = {str(marker)!r}\n" + COVERAGE_SUITE.replace("OPTIONS", marker_options())
    ran = inner_session(None, "channel-coverage", source, "-p", "pytest_cov", "--cov", str(tmp_path))
    assert not marker.exists(), ran.stdout
    assert "pytest refused a message from the test's container" in ran.stdout, ran.stdout + ran.stderr


RELAY_SUITE = SEND + """
import socket

@hermetic(OPTIONS)
def test_asks_pytest_to_connect_elsewhere():
    own = socket.socket()
    own.bind(("127.0.0.1", 0))
    own.listen()
    # "Relay my listener to 127.0.0.1:PORT": a port pytest does not listen on.
    write_frame(pipe_to_pytest(), pickle.dumps(("relay", [(own.fileno(), 2, 1, "127.0.0.1", PORT)])))
    client = socket.create_connection(own.getsockname(), timeout=2)
    client.sendall(b"through pytest")
    import time
    time.sleep(1)  # (time for a relay to connect, had it begun)
"""


def test_pytest_relays_only_to_its_own_listeners():
    victim = socket.socket()
    victim.bind(("127.0.0.1", 0))
    victim.listen()
    victim.settimeout(0.5)
    try:
        source = RELAY_SUITE.replace("OPTIONS", marker_options()).replace("PORT", str(victim.getsockname()[1]))
        ran = inner_session(None, "channel-relay", source)
        assert "1 passed" in ran.stdout, ran.stdout + ran.stderr
        with pytest.raises(socket.timeout):
            victim.accept()  # nobody came
    finally:
        victim.close()


CALL_SUITE = """
import pytest
from pytest_hermetic import fixtures, hermetic

@hermetic(OPTIONS)
def test_calls_another_method(containers):
    service = containers.run("host", ["sleep", "30"])
    with pytest.raises(Exception, match="no such call of the containers fixture: 'remove'"):
        fixtures.remote.call("remove", service.key)
    assert service.wait(timeout=0) is None  # still running
"""


NO_FIXTURE_SUITE = """
import pytest
from pytest_hermetic import fixtures, hermetic

@hermetic(OPTIONS)
def test_without_the_fixture():
    with pytest.raises(Exception, match="add it to the test's arguments"):
        fixtures.remote.call("run", "host", ["sleep", "30"], privileged=True)
"""


def test_a_test_without_the_containers_fixture_gets_no_container_started():
    """Whatever runs in a test's process (code of the image it imports) may
    write a "run" call to the pipe: pytest starts containers only for a test
    that asked for the fixture (here one that would be privileged)."""
    ran = inner_session(None, "channel-no-fixture", NO_FIXTURE_SUITE.replace("OPTIONS", marker_options()))
    assert "1 passed" in ran.stdout, ran.stdout + ran.stderr


def test_the_containers_fixture_answers_only_its_own_calls():
    ran = inner_session(None, "channel-call", CALL_SUITE.replace("OPTIONS", marker_options()))
    assert "1 passed" in ran.stdout, ran.stdout + ran.stderr


OPEN_SUITE = SEND + """
import subprocess

@hermetic(OPTIONS)
def test_a_program_it_runs_cannot_open_its_pipe():
    path = f"/proc/{os.getpid()}/fd/{pipe_to_pytest()}"
    ran = subprocess.run([sys.executable, "-c", f"open({path!r}, 'wb')"], capture_output=True, text=True)
    assert ran.returncode != 0 and "PermissionError" in ran.stderr, ran.stderr
"""


def test_a_program_the_test_runs_cannot_reach_its_pipe_to_pytest():
    ran = inner_session(None, "channel-open", OPEN_SUITE.replace("OPTIONS", marker_options()))
    assert "1 passed" in ran.stdout, ran.stdout + ran.stderr



PROPERTY_SUITE = """
import datetime
from pytest_hermetic import hermetic

class Custom:
    def __repr__(self):
        return "Custom(42)"

@hermetic(OPTIONS)
def test_records_objects(record_property):
    record_property("custom", Custom())  # a class of the test's own: sent as its repr
    record_property("when", datetime.date(2026, 12, 2))  # a value type: sent as it is
"""


def test_what_pytest_would_refuse_the_test_sends_as_its_repr(tmp_path):
    """The test's own data that is no plain data (here a `record_property`
    value) is not refused: the child sends its repr, as for unpicklable data."""
    xml = tmp_path / "junit.xml"
    ran = inner_session(None, "channel-property", PROPERTY_SUITE.replace("OPTIONS", marker_options()),
                        f"--junitxml={xml}")
    assert "1 passed" in ran.stdout, ran.stdout + ran.stderr
    text = xml.read_text()
    assert 'name="custom" value="Custom(42)"' in text and 'name="when" value="2026-12-02"' in text, text


FLOOD_SUITE = SEND + """
import pytest

@pytest.fixture(scope="session", autouse=True)
def small_limit():  # (session scope: set in pytest's process; 1 GiB in earnest, the same check)
    from pytest_hermetic.forked import parent
    parent.MAX_SENT = 4 << 20

@hermetic(OPTIONS)
def test_floods_its_pipe():
    block = b"x" * 65536
    while True:  # frames that never end, or end nowhere: pytest holds them all until "done"
        os.write(pipe_to_pytest(), block)
"""


def test_a_container_that_floods_its_pipe_is_stopped_at_the_limit():
    # Without the limit pytest kept every byte (this test then wrote until
    # the inner session's own timeout, pytest's memory growing all along).
    ran = inner_session(None, "channel-flood", FLOOD_SUITE.replace("OPTIONS", marker_options()))
    assert "sent pytest more than 4 MiB" in ran.stdout, ran.stdout + ran.stderr
    assert "1 failed" in ran.stdout or "1 error" in ran.stdout, ran.stdout
