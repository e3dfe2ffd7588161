"""`RUN apt-get install` through a package proxy on the host (issue #15 part 4).

The proxy is a small HTTP proxy this test starts on the host bridge's
address.  It never forwards anything: it answers every request from one
folder, a flat apt repository that the host filled with `apt-get download`
(the machine's own apt configuration, by package name) and
`dpkg-scanpackages`.  The build's `RUN` is on the host bridge (`--net`),
told of the proxy by the `http_proxy` build argument (which reaches `RUN`
without an `ARG` and stays out of the cache key), and its sources name a
repository under a `.invalid` host that only the proxy answers: the
container talks to the proxy and to nothing else (with the host's
`ip_forward` off, as here, it could reach nothing else anyway).
docs/build.md#networks-in-a-build has the recipe with apt-cacher-ng.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import threading
import urllib.parse

import pytest
from conftest import run_cli

from pytest_hermetic.build import build
from pytest_hermetic.images.store import Store

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the host bridge and the build run as root here")

PACKAGE = "figlet"  # small (137 kB), only libc6 as a dependency, not installed on the host


class RepositoryProxy(http.server.SimpleHTTPRequestHandler):
    """A proxy's request (`GET http://HOST/PATH`) answered from the folder; nothing is forwarded."""

    requests: list[str]

    def translate_path(self, path: str) -> str:
        return super().translate_path(urllib.parse.urlsplit(path).path or "/")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        self.requests.append(self.requestline)


@pytest.fixture
def package_proxy(tmp_path):  # noqa: ANN201
    if shutil.which("dpkg-scanpackages") is None:
        pytest.skip("dpkg-scanpackages is missing (apt-get install dpkg-dev)")
    repo = tmp_path / "repo"
    repo.mkdir()
    fetched = subprocess.run(["apt-get", "download", "-q", PACKAGE], cwd=repo, capture_output=True, text=True,
                             timeout=120)
    if fetched.returncode != 0:
        pytest.skip(f"this machine's apt cannot fetch {PACKAGE}: {fetched.stderr.strip().splitlines()[-1:]}")
    index = subprocess.run(["dpkg-scanpackages", ".", "/dev/null"], cwd=repo, capture_output=True, text=True, check=True)
    (repo / "Packages").write_text(index.stdout)
    from pytest_hermetic.networks.host_bridge import hold_host_bridge, host_gateway, release_host_bridge

    hold_host_bridge()
    handler = type("Handler", (RepositoryProxy,), {"requests": []})
    server = http.server.ThreadingHTTPServer((host_gateway(), 0), functools.partial(handler, directory=str(repo)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host_gateway()}:{server.server_address[1]}", handler.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        release_host_bridge()


CONTAINERFILE = f"""\
FROM host
ARG SALT
RUN echo "deb [trusted=yes] http://packages.invalid/ ./" > /etc/apt/sources.list \\
 && rm -f /etc/apt/sources.list.d/* \\
 && apt-get update -q && apt-get install -y -q --no-install-recommends {PACKAGE}
"""


def test_apt_get_install_through_a_proxy_on_the_host(package_proxy, tmp_path):
    proxy, requests = package_proxy
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Containerfile").write_text(CONTAINERFILE)
    lines: list[str] = []
    store = Store()
    image = build(None, str(context), tags=["with-figlet:1"], build_args={"http_proxy": proxy, "SALT": str(tmp_path)},
                  net=True, progress=lines.append, store=store)
    assert f"Setting up {PACKAGE} (" in "\n".join(lines)
    assert len(image.layers) == 1  # FROM host: the RUN's layer on the host's root
    # Every request the container made went to the proxy, for the repository only it answers.
    assert requests and all(r.startswith("GET http://packages.invalid/") for r in requests), requests
    assert any(r.startswith(f"GET http://packages.invalid/./{PACKAGE}_") for r in requests), requests
    # The proxy is not part of the image or its cache key: the same build without it is all cached.
    again: list[str] = []
    same = build(None, str(context), tags=["with-figlet:1"], build_args={"SALT": str(tmp_path)}, net=False,
                 progress=again.append, store=store)
    assert same.id == image.id and "--> cached" in again
    assert not any("http_proxy" in str(v) for v in image.config.get("Env", []))
    ran = run_cli("run", "with-figlet:1", f"/usr/bin/{PACKAGE}", "hi")
    assert ran.returncode == 0 and ran.stdout.strip(), ran.stderr
    assert run_cli("rmi", "with-figlet:1").returncode == 0
