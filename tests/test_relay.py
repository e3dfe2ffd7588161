"""The pytest process's own servers, reached from hermetic tests (issue 13):
each kind of listener a wider-scope fixture may start, root and rootless,
in place, with `--hermetic` and with xdist."""

from __future__ import annotations

import pytest

# Servers of the kinds real suites start in session or module fixtures, on
# threads of the pytest process: a raw TCP loop (tornado's shape: not
# socketserver), UDP, on 127.0.0.1, ::1, 0.0.0.0 and :: (dual stack).
RELAYED = r'''
import socket, threading
import pytest

def tcp_echo(family, address):
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, 0))
    server.listen()
    def loop():
        while True:
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"tcp " + conn.recv(100))
    threading.Thread(target=loop, daemon=True).start()
    return server.getsockname()[1]

def udp_echo(family, address):
    server = socket.socket(family, socket.SOCK_DGRAM)
    server.bind((address, 0))
    def loop():
        while True:
            data, peer = server.recvfrom(100)
            server.sendto(b"udp " + data, peer)
    threading.Thread(target=loop, daemon=True).start()
    return server.getsockname()[1]

@pytest.fixture(scope="session")
def servers():
    return {(kind, address): (tcp_echo if kind == "tcp" else udp_echo)(
                socket.AF_INET6 if ":" in address else socket.AF_INET, address)
            for kind in ("tcp", "udp") for address in ("127.0.0.1", "::1", "0.0.0.0", "::")}

@pytest.mark.parametrize("kind", ["tcp", "udp"])
@pytest.mark.parametrize("address,reach", [("127.0.0.1", "127.0.0.1"), ("::1", "::1"), ("0.0.0.0", "127.0.0.1"),
                                           ("::", "::1"), ("::", "127.0.0.1")])
def test_reaches(servers, kind, address, reach):
    port = servers[(kind, address)]
    family = socket.AF_INET6 if ":" in reach else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM) as s:
        s.settimeout(10)
        s.connect((reach, port))
        s.send(b"hello")
        assert s.recv(100) == kind.encode() + b" hello"
'''

# pytest-httpserver's shape: a socketserver-based server (werkzeug's, here
# http.server's) on a thread of a session fixture; the test tells it what to
# answer, in its own memory, and then asks.
SERVED_AGAIN = r'''
import threading, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import pytest

class Server(ThreadingHTTPServer):
    expected = {}

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.server.expected.get(self.path, b"no handler")
        self.send_response(200 if self.path in self.server.expected else 500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

@pytest.fixture(scope="session")
def httpserver():
    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()

@pytest.fixture
def fresh(httpserver):
    yield httpserver
    httpserver.expected.clear()

@pytest.mark.parametrize("n", range(3))
def test_answers_what_the_test_expects(fresh, n):
    fresh.expected[f"/{n}"] = f"answer {n}".encode()
    url = f"http://127.0.0.1:{fresh.server_address[1]}/{n}"
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.read() == f"answer {n}".encode()

def test_nothing_expected_is_an_error(fresh):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{fresh.server_address[1]}/0", timeout=10)
    except urllib.error.HTTPError as error:
        assert error.code == 500
    else:
        raise AssertionError("the last test's expectation reached this one")
'''

MODES = [[], ["--hermetic"], ["--hermetic", "-n", "2"]]


@pytest.mark.parametrize("mode", MODES, ids=["in-place", "hermetic", "xdist"])
def test_listeners_of_every_kind_are_reachable(pytester: pytest.Pytester, mode):
    pytester.makepyfile(test_inner=RELAYED)
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", "-p", "no:randomly", *mode,
                                           timeout=120)
    result.assert_outcomes(passed=10)


@pytest.mark.parametrize("mode", MODES, ids=["in-place", "hermetic", "xdist"])
def test_a_socketserver_of_a_wider_fixture_serves_the_tests_state(pytester: pytest.Pytester, mode):
    pytester.makepyfile(test_inner=SERVED_AGAIN)
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", "-p", "no:randomly", *mode,
                                           timeout=120)
    result.assert_outcomes(passed=4)


def test_listeners_are_reachable_rootless(test_user):
    from conftest import inner_session_as

    for source, passed in ((RELAYED, 10), (SERVED_AGAIN, 4)):
        ran, _ = inner_session_as(test_user, "relay", "test_relay_inner.py", source, "--hermetic", "-p", "no:randomly")
        assert f"{passed} passed" in ran.stdout, ran.stdout + ran.stderr
