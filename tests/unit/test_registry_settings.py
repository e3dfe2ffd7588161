"""Registry settings and words, value by value: HERMETIC_REGISTRY_TIMEOUT, the registry names `login`
takes, the auth.json `login`/`logout` write (in tmp_path), the cause of a failure in words from real
resolver errors.  No root, no network (tests/images/test_pull_errors.py has the end-to-end cases)."""

from __future__ import annotations

import base64
import json
import os
import socket
import stat

import pytest

from pytest_hermetic.errors import RegistryError
from pytest_hermetic.images import auth
from pytest_hermetic.images.connections import describe, resolve, timeouts


@pytest.mark.parametrize(("value", "expected"), [
    ("", (10.0, 30.0)), ("5", (5.0, 5.0)), ("2,60", (2.0, 60.0)), (" 0.5 , 1 ", (0.5, 1.0)),
])
def test_timeouts(monkeypatch, value, expected):
    monkeypatch.setenv("HERMETIC_REGISTRY_TIMEOUT", value)
    assert timeouts() == expected


@pytest.mark.parametrize("value", ["0", "-1", "soon", "1,2,3", "nan", "inf", "1,", "99999999"])
def test_timeouts_refused(monkeypatch, value):
    monkeypatch.setenv("HERMETIC_REGISTRY_TIMEOUT", value)
    with pytest.raises(RegistryError, match=r"HERMETIC_REGISTRY_TIMEOUT=.*: use SECONDS, or CONNECT,READ"):
        timeouts()


@pytest.mark.parametrize(("text", "key"), [
    ("docker.io", "docker.io"), ("https://index.docker.io/v1/", "docker.io"), ("registry-1.docker.io", "docker.io"),
    ("http://127.0.0.1:5000/", "127.0.0.1:5000"), ("reg.lan:5000/v2/", "reg.lan:5000"), ("[::1]:5000", "[::1]:5000"),
])
def test_registry_key(text, key):
    assert auth.registry_key(text) == key


@pytest.mark.parametrize("text", ["", "reg.lan/team", "https://", "a b"])
def test_registry_key_refused(text):
    with pytest.raises(RegistryError, match="is not a registry: give HOST"):
        auth.registry_key(text)


def test_login_file_keeps_the_rest_and_is_0600(tmp_path):
    path = str(tmp_path / "conf" / "auth.json")
    assert auth.save_login("reg.lan:5000", "alice", "p:w", path) == path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_IMODE(os.stat(tmp_path / "conf").st_mode) == 0o700
    data = json.load(open(path))
    assert base64.b64decode(data["auths"]["reg.lan:5000"]["auth"]) == b"alice:p:w"
    data["auths"]["https://docker.io"] = {"auth": "old"}
    data["credsStore"] = "desktop"
    json.dump(data, open(path, "w"))
    auth.save_login("docker.io", "bob", "x", path)
    data = json.load(open(path))
    assert set(data["auths"]) == {"reg.lan:5000", "docker.io"} and data["credsStore"] == "desktop"
    assert auth.remove_login("reg.lan:5000", path) == (True, path)
    assert auth.remove_login("reg.lan:5000", path) == (False, path)
    assert set(json.load(open(path))["auths"]) == {"docker.io"}
    assert os.listdir(tmp_path / "conf") == ["auth.json"]  # no temporary file left


def test_a_broken_auth_file_is_said_not_overwritten(tmp_path):
    path = tmp_path / "auth.json"
    path.write_text("{not json")
    with pytest.raises(RegistryError, match="not a readable auth.json .*; fix or remove it"):
        auth.save_login("reg.lan", "a", "b", str(path))
    assert path.read_text() == "{not json"


def test_failure_words_from_real_errors():
    with pytest.raises(socket.gaierror) as dns:
        socket.getaddrinfo("registry-1.docker.io", 443, flags=socket.AI_NUMERICHOST)
    assert describe(dns.value)[0].startswith("DNS lookup failed (")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(ConnectionRefusedError) as refused:
        socket.create_connection(("127.0.0.1", port), timeout=5)
    assert describe(refused.value) == ("connection refused", False)


def test_resolve_parses_a_literal_address_without_a_lookup():
    assert {info[4][0] for info in resolve("127.0.0.1", 80, 0.001)} == {"127.0.0.1"}
    assert {info[4][0] for info in resolve("::1", 80, 0.001)} == {"::1"}
