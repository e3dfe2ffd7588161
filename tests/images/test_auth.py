"""Registry auth against real docker-registry instances: htpasswd basic auth, and bearer tokens
from a token service in the tests (JWTs signed with an openssl key, checked by the registry)."""

from __future__ import annotations

import pytest

from conftest import run_cli
from hermetic_testsupport.pytest_images import PASSWORD, USER, auth_file
from hermetic_testsupport.registry import skopeo_copy


@pytest.fixture(scope="module")
def basic_image(basic_registry, busybox_layout) -> str:
    ref = f"{basic_registry.host}/private/busybox:1"
    skopeo_copy(busybox_layout, f"docker://{ref}", "--dest-creds", f"{USER}:{PASSWORD}")
    return ref


def test_basic_auth_needs_credentials(basic_image, basic_registry, store_env):
    result = run_cli("pull", basic_image, env=store_env)
    assert result.returncode == 125 and result.stderr.count("\n") == 1
    assert f"registry {basic_registry.host} asks for a user name and password: no credentials for it" in result.stderr
    assert "skopeo login" in result.stderr and "REGISTRY_AUTH_FILE" in result.stderr


def test_basic_auth_with_auth_file(basic_image, basic_registry, store_env, tmp_path):
    env = {**store_env, "REGISTRY_AUTH_FILE": auth_file(str(tmp_path / "auth.json"), basic_registry.host)}
    result = run_cli("run", basic_image, "sh", "-c", "echo $GREETING", env=env)
    assert (result.returncode, result.stdout) == (0, "hello from the config\n"), result.stderr


def test_basic_auth_from_docker_config_and_wrong_password(basic_image, basic_registry, store_env, tmp_path):
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    auth_file(str(home / ".docker" / "config.json"), basic_registry.host)
    ok = run_cli("pull", "-q", basic_image, env={**store_env, "HOME": str(home)})
    assert ok.returncode == 0, ok.stderr
    wrong = auth_file(str(tmp_path / "wrong.json"), basic_registry.host, password="nope")
    bad = run_cli("pull", basic_image, env={"HERMETIC_STORE": str(tmp_path / "s2"), "REGISTRY_AUTH_FILE": wrong})
    assert bad.returncode == 125
    assert f"credentials from {wrong} were refused" in bad.stderr, bad.stderr


def test_push_with_basic_auth(basic_image, basic_registry, store_env, tmp_path):
    env = {**store_env, "REGISTRY_AUTH_FILE": auth_file(str(tmp_path / "auth.json"), basic_registry.host)}
    assert run_cli("pull", "-q", basic_image, env=env).returncode == 0
    pushed = run_cli("push", basic_image, f"{basic_registry.host}/private/copy:1", env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert "mounted" in pushed.stderr or "exists" in pushed.stderr  # same registry: no upload needed


@pytest.fixture(scope="module")
def token_images(token_registry, busybox_layout):
    server, tokens = token_registry
    for repo in ("public/busybox:1", "private/busybox:1"):
        skopeo_copy(busybox_layout, f"docker://{server.host}/{repo}", "--dest-creds", f"{USER}:{PASSWORD}")
    return server, tokens


def test_bearer_token_anonymous_pull(token_images, store_env):
    server, tokens = token_images
    tokens.requests.clear()
    result = run_cli("run", f"{server.host}/public/busybox:1", "sh", "-c", "echo $GREETING", env=store_env)
    assert (result.returncode, result.stdout) == (0, "hello from the config\n"), result.stderr
    assert tokens.requests and all(r["user"] is None for r in tokens.requests)
    assert tokens.requests[0]["scope"] == ["repository:public/busybox:pull"]
    assert tokens.requests[0]["service"] == ["hermetic-test-registry"]


def test_bearer_token_private_needs_login(token_images, store_env, tmp_path):
    server, tokens = token_images
    denied = run_cli("pull", f"{server.host}/private/busybox:1", env=store_env)
    assert denied.returncode == 125 and denied.stderr.count("\n") == 1
    assert f"registry {server.host} refused access to repository:private/busybox:pull" in denied.stderr, denied.stderr
    assert "REGISTRY_AUTH_FILE" in denied.stderr
    tokens.requests.clear()
    env = {**store_env, "REGISTRY_AUTH_FILE": auth_file(str(tmp_path / "auth.json"), server.host)}
    ok = run_cli("pull", "-q", f"{server.host}/private/busybox:1", env=env)
    assert ok.returncode == 0, ok.stderr
    assert {r["user"] for r in tokens.requests} == {USER}
    wrong = {**store_env, "REGISTRY_AUTH_FILE": auth_file(str(tmp_path / "w.json"), server.host, password="x")}
    refused = run_cli("pull", f"{server.host}/private/busybox:1", env=wrong)
    assert refused.returncode == 125 and "token service refused the credentials (HTTP 401)" in refused.stderr


def test_push_with_bearer_token(token_images, store_env, tmp_path):
    server, tokens = token_images
    env = {**store_env, "REGISTRY_AUTH_FILE": auth_file(str(tmp_path / "auth.json"), server.host)}
    assert run_cli("pull", "-q", f"{server.host}/public/busybox:1", env=env).returncode == 0
    pushed = run_cli("push", f"{server.host}/public/busybox:1", f"{server.host}/private/pushed:1", env=env)
    assert pushed.returncode == 0, pushed.stderr
    anonymous = run_cli("push", f"{server.host}/public/busybox:1", f"{server.host}/public/nope:1", env=store_env)
    assert anonymous.returncode == 125 and "refused access" in anonymous.stderr, anonymous.stderr
