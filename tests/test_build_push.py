"""Pushing what `hermetic build` made (issue #15 part 7): to the real
registry of hermetic_testsupport (Debian's docker-registry on loopback),
read back by skopeo."""

from __future__ import annotations

import json
import os

import pytest
from conftest import run_cli

from hermetic_testsupport.registry import run

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds run containers as root here (rootless: docs/build.md)")

CONTAINERFILE = """\
FROM busybox:test
ARG WHO=world
ENV GREETING="hello $WHO"
WORKDIR /app
COPY greet.sh /app/greet.sh
RUN chmod 755 /app/greet.sh && echo "{salt}" > /app/salt
ENTRYPOINT ["/app/greet.sh"]
"""


def _context(tmp_path, salt: str) -> str:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Containerfile").write_text(CONTAINERFILE.format(salt=salt))
    (context / "greet.sh").write_text('#!/bin/sh\necho "$GREETING from $(pwd)"\n')
    return str(context)


def _inspect(ref: str, *extra: str) -> dict:
    return json.loads(run("skopeo", "inspect", "--tls-verify=false", *extra, f"docker://{ref}"))


def test_push_a_built_image_under_another_name(registry, busybox_image, tmp_path):
    context = _context(tmp_path, "push")
    built = run_cli("build", "-q", "-t", "greeter:1", context, timeout=300)
    assert built.returncode == 0, built.stderr
    image_id = built.stdout.strip()
    dest = f"{registry.host}/team/greeter:1"
    pushed = run_cli("push", "greeter:1", dest)
    assert pushed.returncode == 0, pushed.stderr
    inspected = _inspect(dest)
    assert len(inspected["Layers"]) == 3  # busybox's, COPY's, RUN's
    assert inspected["Created"] == "1970-01-01T00:00:00Z"  # the build's epoch (reproducible)
    config = _inspect(dest, "--config")
    assert config["config"]["Entrypoint"] == ["/app/greet.sh"]
    assert config["config"]["WorkingDir"] == "/app"
    assert "GREETING=hello world" in config["config"]["Env"]
    # The registry holds the very image: its config digest is the local image id.
    raw = json.loads(run("skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{dest}"))
    assert raw["config"]["digest"] == image_id
    # And it runs from there: pulled back into a fresh store.
    fresh = {"HERMETIC_STORE": str(tmp_path / "fresh-store")}
    assert run_cli("pull", dest, env=fresh).returncode == 0
    ran = run_cli("run", dest, env=fresh)
    assert (ran.returncode, ran.stdout) == (0, "hello world from /app\n"), ran.stderr


def test_build_push_pushes_each_tag_that_names_a_registry(registry, busybox_image, tmp_path):
    context = _context(tmp_path, "build-push")
    one, two = f"{registry.host}/team/app:1", f"{registry.host}/team/app:latest"
    built = run_cli("build", "--push", "-t", one, "-t", two, "--build-arg", "WHO=team", context, timeout=300)
    assert built.returncode == 0, built.stderr
    assert f"pushed {one} sha256:" in built.stderr and f"pushed {two} sha256:" in built.stderr
    assert built.stdout.strip().startswith("sha256:")  # stdout stays the image id
    first, second = _inspect(one), _inspect(two)
    assert first["Digest"] == second["Digest"] and first["Layers"] == second["Layers"]
    assert "GREETING=hello team" in _inspect(one, "--config")["config"]["Env"]


def test_build_push_refuses_a_name_without_a_registry_before_building(busybox_image, tmp_path):
    context = _context(tmp_path, "refused")
    refused = run_cli("build", "--push", "-t", "app:1", context, timeout=300)
    assert refused.returncode == 125
    assert refused.stderr.strip().splitlines() == [
        "hermetic: error: --push: -t app:1 names no registry; write -t HOST[:PORT]/NAME[:TAG] (e.g. localhost:5000/app:1), "
        "or push it afterwards with `hermetic push NAME DEST`"]
    assert run_cli("build", "--push", context).returncode == 125
    assert not any(line.startswith("app ") or line.startswith("app:1 ")
                   for line in run_cli("images").stdout.splitlines())  # nothing built, nothing tagged
