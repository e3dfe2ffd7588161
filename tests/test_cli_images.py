"""The image verbs through the real command: tag, images -q/--digests/--format json, login/logout against
real docker-registry instances (htpasswd basic auth, bearer tokens), ps/inspect/network ls --format json, version."""

from __future__ import annotations

import base64
import json
import os
import platform
import stat

import pytest

from conftest import run_cli
from hermetic_testsupport.pytest_images import PASSWORD, USER
from hermetic_testsupport.registry import skopeo_copy


@pytest.fixture
def store_with_busybox(busybox_rootfs, tmp_path) -> dict[str, str]:
    env = {"HERMETIC_STORE": str(tmp_path / "store")}
    imported = run_cli("import", f"dir:{busybox_rootfs}", "busybox:1", env=env)
    assert imported.returncode == 0, imported.stderr
    return env


def test_tag_images_quiet_digests_and_json(store_with_busybox):
    env = store_with_busybox
    assert run_cli("tag", "busybox:1", "mine/box:2", env=env).returncode == 0
    listing = json.loads(run_cli("images", "--format", "json", env=env).stdout)
    assert listing[0]["name"] == "host" and listing[0]["host"] is True
    images = {entry["name"]: entry for entry in listing[1:]}
    assert set(images) == {"busybox:1", "mine/box:2"}
    assert images["busybox:1"]["id"] == images["mine/box:2"]["id"] and images["busybox:1"]["id"].startswith("sha256:")
    assert images["busybox:1"]["digest"] == images["mine/box:2"]["digest"] and images["busybox:1"]["layers"] == 1
    assert images["busybox:1"]["size"] > 500_000
    image_id = images["busybox:1"]["id"]
    # -q: each id once (12 hex digits, as docker); --digests: the manifest digest column
    assert run_cli("images", "-q", env=env).stdout == image_id[7:19] + "\n"
    digests = run_cli("images", "--digests", env=env).stdout.splitlines()
    assert digests[0].split() == ["IMAGE", "DIGEST", "ID", "LAYERS", "SIZE", "CREATED"]
    assert any(line.split()[:3] == ["mine/box:2", images["mine/box:2"]["digest"], image_id[7:19]] for line in digests)
    # tag by id prefix, and the tagged image runs
    assert run_cli("tag", image_id[7:15], "third:1", env=env).returncode == 0
    ran = run_cli("run", "third:1", "cat", "/etc/os-release", env=env)
    assert ran.returncode == 0 and "ID=busybox" in ran.stdout, ran.stderr
    # untagging one name leaves the others
    assert run_cli("rmi", "busybox:1", env=env).returncode == 0
    assert run_cli("run", "mine/box:2", "true", env=env).returncode == 0


def test_tag_and_format_errors_are_one_line(store_with_busybox):
    env = store_with_busybox
    cases = {
        ("tag", "nosuch:1", "x:1"): "image 'nosuch:1' is not in the local store",
        ("save", "nosuch:1", "oci:/nonexistent/out"): "); `hermetic images` lists what it holds",
        ("rmi", "nosuch:1"): "); `hermetic images` lists what it holds",
        ("tag", "host", "x:1"): "`host` is the host's own / and has no manifest to tag",
        ("tag", "busybox:1", "Bad:Name"): "not a valid image reference",
        ("tag", "busybox:1", "x@sha256:" + "0" * 64): "give a name such as",
        ("images", "--format", "{{.ID}}"): "'{{.ID}}': use json or table (Go templates are not supported)",
        ("ps", "--format", "yaml"): "'yaml': use json or table",
    }
    for args, message in cases.items():
        result = run_cli(*args, env=env)
        assert result.returncode == 125 and message in result.stderr, (args, result)
        assert result.stderr.count("\n") == 1, result.stderr
    assert run_cli("tag", "nosuch:1", "x:1", env={**env, "HERMETIC_OFFLINE": "0"}).returncode == 125  # tag never pulls


@pytest.fixture(scope="module")
def private_image(basic_registry, busybox_layout) -> str:
    ref = f"{basic_registry.host}/private/busybox:1"
    skopeo_copy(busybox_layout, f"docker://{ref}", "--dest-creds", f"{USER}:{PASSWORD}")
    return ref


def test_login_checks_saves_0600_and_logout_removes(basic_registry, private_image, tmp_path):
    runtime = tmp_path / "run"
    env = {"HERMETIC_STORE": str(tmp_path / "store"), "XDG_RUNTIME_DIR": str(runtime)}
    auth = runtime / "containers" / "auth.json"
    host = basic_registry.host
    denied = run_cli("pull", "-q", private_image, env=env)
    assert denied.returncode == 125 and "no credentials for it" in denied.stderr
    wrong = run_cli("login", "-u", USER, "--password-stdin", host, input="nope\n", env=env)
    assert wrong.returncode == 125 and wrong.stderr.count("\n") == 1, wrong
    assert f"registry {host} refused the user name or password of 'alice' (HTTP 401)" in wrong.stderr
    assert not auth.exists()  # nothing saved
    ok = run_cli("login", "-u", USER, "--password-stdin", f"http://{host}/", input=PASSWORD + "\n", env=env)
    assert ok.returncode == 0 and ok.stdout == "Login Succeeded\n", ok.stderr
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600 and stat.S_IMODE(auth.parent.stat().st_mode) == 0o700
    saved = json.loads(auth.read_text())
    assert base64.b64decode(saved["auths"][host]["auth"]).decode() == f"{USER}:{PASSWORD}"
    pulled = run_cli("pull", "-q", private_image, env=env)  # the pull side reads what login wrote
    assert pulled.returncode == 0, pulled.stderr
    # a second registry's entry and other keys survive a logout
    saved["auths"]["other.example:5000"] = {"auth": "eDp5"}
    saved["credHelpers"] = {}
    auth.write_text(json.dumps(saved))
    out = run_cli("logout", host, env=env)
    assert out.returncode == 0 and out.stdout == f"Removed login credentials for {host}\n", out
    after = json.loads(auth.read_text())
    assert after == {"auths": {"other.example:5000": {"auth": "eDp5"}}, "credHelpers": {}}
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    again = run_cli("logout", host, env=env)
    assert again.returncode == 0 and again.stdout == f"Not logged in to {host}\n"
    denied = run_cli("pull", "-q", private_image, env={**env, "HERMETIC_STORE": str(tmp_path / "s2")})
    assert denied.returncode == 125 and "no credentials for it" in denied.stderr


def test_login_with_bearer_tokens_and_an_authfile(token_registry, busybox_layout, tmp_path):
    server, tokens = token_registry
    skopeo_copy(busybox_layout, f"docker://{server.host}/private/login:1", "--dest-creds", f"{USER}:{PASSWORD}")
    authfile = tmp_path / "conf" / "auth.json"
    env = {"HERMETIC_STORE": str(tmp_path / "store"), "REGISTRY_AUTH_FILE": str(tmp_path / "unused.json")}
    wrong = run_cli("login", "-u", USER, "-p", "nope", "--authfile", str(authfile), server.host, env=env)
    assert wrong.returncode == 125 and "refused the user name or password of 'alice'" in wrong.stderr, wrong
    assert "token service" in wrong.stderr and not authfile.exists()
    tokens.requests.clear()
    ok = run_cli("login", "-u", USER, "--password-stdin", "--authfile", str(authfile), server.host, input=PASSWORD, env=env)
    assert ok.returncode == 0 and ok.stdout == "Login Succeeded\n", ok.stderr
    assert [r["user"] for r in tokens.requests] == [USER]  # checked with the token service, as docker login does
    pulled = run_cli("pull", "-q", f"{server.host}/private/login:1", env={**env, "REGISTRY_AUTH_FILE": str(authfile)})
    assert pulled.returncode == 0, pulled.stderr
    assert not os.path.exists(tmp_path / "unused.json")


def test_login_usage_errors(tmp_path):
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    cases = {
        ("login", "127.0.0.1:1"): "login: give the user name with -u USER",
        ("login", "-u", "a", "127.0.0.1:1"): "login: give the password with --password-stdin",
        ("login", "-u", "a", "-p", "b", "--password-stdin", "127.0.0.1:1"): "are exclusive",
        ("login", "-u", "a", "-p", "b", "reg.lan/path"): "'reg.lan/path' is not a registry: give HOST[:PORT]",
        ("login", "-u", "a", "-p", "b", "docker.io"): "HERMETIC_OFFLINE is set, so registry docker.io cannot check",
    }
    for args, message in cases.items():
        result = run_cli(*args, env={**env, "HERMETIC_OFFLINE": "1"})
        assert result.returncode == 125 and message in result.stderr, (args, result)
        assert result.stderr.count("\n") == 1 + ("-p" in args and "--password-stdin" not in args and "docker.io" in args)
    refused = run_cli("login", "-u", "a", "--password-stdin", "127.0.0.1:1", input="b", env=env)
    assert refused.returncode == 125 and "cannot reach registry 127.0.0.1:1: connection refused" in refused.stderr


def test_ps_inspect_and_network_ls_as_json(busybox_image):
    name = f"jsonps-{os.getpid()}"
    started = run_cli("run", "-d", "--name", name, "host", "sleep", "30")
    assert started.returncode == 0, started.stderr
    try:
        listing = json.loads(run_cli("ps", "--format", "json").stdout)
        mine = [entry for entry in listing if entry["name"] == name]
        assert len(mine) == 1 and mine[0]["status"] == "running" and mine[0]["command"] == ["sleep", "30"]
        assert mine[0]["id"] == started.stdout.strip() and mine[0]["pids"]
        inspected = json.loads(run_cli("inspect", "--format", "json", name).stdout)
        assert inspected == json.loads(run_cli("inspect", name).stdout) and inspected[0]["name"] == name
    finally:
        assert run_cli("rm", "-f", name).returncode == 0
    networks = f"jsonnet{os.getpid() % 10000}"
    assert run_cli("network", "create", networks, "--subnet", "10.213.7.0/24").returncode == 0
    try:
        listed = json.loads(run_cli("network", "ls", "--format", "json").stdout)
        entry = [n for n in listed if n["name"] == networks]
        assert entry and entry[0]["subnet"] == "10.213.7.0/24" and entry[0]["containers"] == []
    finally:
        assert run_cli("network", "rm", networks).returncode == 0


def test_version(tmp_path):
    from pytest_hermetic import __version__
    from pytest_hermetic.runtime import cgroups

    short = run_cli("--version")
    assert (short.returncode, short.stdout) == (0, f"hermetic version {__version__}\n")
    info = json.loads(run_cli("version", "--format", "json").stdout)
    assert info["version"] == __version__ and info["kernel"] == os.uname().release
    assert info["python"] == platform.python_version()
    assert info["cgroups"] == cgroups.detect().version and info["cgroups"] in ("v1", "v2", "hybrid")
    assert info["mode"] == ("root" if os.geteuid() == 0 else "rootless")
    text = run_cli("version").stdout
    assert f"kernel:    {os.uname().release}" in text and f"cgroups:   {info['cgroups']}" in text


def test_version_rootless(test_user):
    info = json.loads(run_cli("version", "--format", "json", user=test_user).stdout)
    assert info["mode"] == "rootless" and info["uid"] > 0


def test_login_rootless_writes_the_users_own_auth_json(basic_registry, private_image, test_user, tmp_path):
    import pwd

    entry = pwd.getpwnam(test_user)
    ok = run_cli("login", "-u", USER, "--password-stdin", basic_registry.host, input=PASSWORD, user=test_user)
    assert ok.returncode == 0 and ok.stdout == "Login Succeeded\n", ok.stderr
    home = os.path.join(os.path.dirname(os.environ["HERMETIC_STATE"]), f"home-{entry.pw_uid}")
    auth = os.path.join(home, ".config", "containers", "auth.json")  # no XDG_RUNTIME_DIR: containers' fallback
    try:
        info = os.stat(auth)
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (entry.pw_uid, 0o600)
        pulled = run_cli("pull", "-q", private_image, user=test_user)
        assert pulled.returncode == 0, pulled.stderr
        assert run_cli("logout", basic_registry.host, user=test_user).returncode == 0
        assert json.load(open(auth)) == {"auths": {}}
    finally:
        run_cli("rmi", private_image, user=test_user)
