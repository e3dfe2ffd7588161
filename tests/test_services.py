"""Service containers as testcontainers users know them: waits, logs in a
failed test's report, session-scoped services on a private network that
the test joins, in place, under --hermetic and with xdist (issue #13)."""

from __future__ import annotations

import re

import pytest

SUITE = r'''
import socket, sys, urllib.request
import pytest

ECHO = """
import socket
server = socket.create_server(("", 5000))
print("echo ready", flush=True)
while True:
    conn, _ = server.accept()
    data = conn.recv(100)
    print("echo got", data, flush=True)
    conn.sendall(data)
    conn.close()
"""


@pytest.fixture(scope="session")
def echo(containers_session):
    svc = containers_session.run("host", [sys.executable, "-u", "-c", ECHO], name="echo", net="app")
    svc.wait_for_log(r"^echo ready$")
    return svc


@pytest.fixture
def web(containers):
    svc = containers.run("host", [sys.executable, "-u", "-m", "http.server", "8000"], name="web", net="app")
    svc.wait_for_http("/", port=8000)
    return svc


def ask(echo, data):
    with socket.create_connection(echo.address(5000), timeout=5) as conn:
        conn.sendall(data)
        return conn.recv(100)


def test_the_services_talk(echo, web):
    assert ask(echo, b"hi") == b"hi"
    host, port = web.address(8000)
    assert urllib.request.urlopen(f"http://{host}:{port}/", timeout=5).status == 200
    # web reaches echo by its name on their private network
    result = web.exec(sys.executable, "-c", "import socket; c = socket.create_connection(('echo', 5000)); "
                                            "c.sendall(b'by name'); print(c.recv(9))")
    assert result.output == "b'by name'\n"
    web.wait_for("test", "-d", "/proc/1")


def test_the_session_service_is_shared(echo):
    assert ask(echo, b"again") == b"again"
    assert echo.logs().count("echo ready") == 1


def test_fails_and_shows_the_logs(echo, web):
    assert ask(echo, b"ping") == b"pong"


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
'''


@pytest.mark.parametrize("mode", [[], ["--hermetic"], ["--hermetic", "-n", "2"]], ids=["in-place", "hermetic", "xdist"])
def test_services_example(pytester: pytest.Pytester, busybox_image, mode):
    pytester.makeini("[pytest]\nhermetic_net = app\nhermetic_service_log_lines = 5\n")
    pytester.makepyfile(test_example=SUITE)
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", *mode, timeout=180)
    out = result.stdout.str()
    result.assert_outcomes(passed=4, failed=2)
    # The failed test's report shows both services' last lines, as captured output.
    report = out.split("test_fails_and_shows_the_logs _")[1].split("_ test_an_image_that_is_not_there")[0]
    assert re.search(r"- service echo \(call\): last 5 lines -+\n(.*\n)*echo got b'ping'\n", report), report
    assert re.search(r"- service web \(call\): last 5 lines -+\n(.*\n)*.*\"GET / HTTP/1.0\" 200", report), report
    # A missing image is one line at the test's call, not the engine's frames.
    missing = out.split("_ test_an_image_that_is_not_there _")[1].split("short test summary")[0]
    assert "containers.run('127.0.0.1:1/postgres:16'): cannot reach registry 127.0.0.1:1" in missing
    assert "hermetic pull 127.0.0.1:1/postgres:16" in missing
    assert "registry.py" not in missing and "container.py" not in missing, missing
