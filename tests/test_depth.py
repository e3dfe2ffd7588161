"""Deep images: as many layers as overlayfs stacks, whatever the store's path.

mount(2) takes one page of overlay options, which the absolute paths of 20
layers of a store under a 150-character path outgrow; rootfs then mounts
through short links on the container's private tmpfs.  Past overlayfs's own
limit (500 lower layers, the init layer among them) the start is refused
with one line naming the limit.  The images are built through the store API
(hermetic_testsupport/deep_image.py): layer i adds /etc/layers/i, rewrites
/etc/layers/top and whites out the previous layer's /etc/layers/gone-(i-1),
so a listing shows every layer there, in order.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess

import pytest

from conftest import ROOT, run_cli
from hermetic_testsupport.deep_image import build, build_layers, expected_listing
from pytest_hermetic.images.store import Store
from pytest_hermetic.images.transports import import_image
from pytest_hermetic.runtime.rootfs import OVERLAY_MAX_LOWERS

STORE_PATH_LENGTH = 150
SHOW = "ls /etc/layers; cat /etc/layers/top"


def _long_store(base: str, tag: str) -> str:
    """A store folder whose path is STORE_PATH_LENGTH characters long."""
    prefix = os.path.join(base, f"deep-{tag}-")
    path = prefix + "d" * (STORE_PATH_LENGTH - len(prefix) - len("/store")) + "/store"
    assert len(path) == STORE_PATH_LENGTH
    return path


def _shown(depth: int) -> str:
    return expected_listing(depth) + f"{depth - 1}\n"


@pytest.fixture(scope="module")
def deep_store(pytestconfig: pytest.Config, busybox_rootfs: str) -> str:
    """A root-owned store under a long path with busybox as `bb:1`."""
    root = _long_store(pytestconfig._hermetic_base, "root")  # type: ignore[attr-defined]
    import_image(Store(root), f"dir:{busybox_rootfs}", "bb:1")
    return root


@pytest.mark.parametrize("depth", [100, 125])
def test_a_deep_image_runs_from_a_store_under_a_long_path(deep_store, depth):
    build(Store(deep_store), "bb:1", f"deep:{depth}", depth)
    ran = run_cli("run", f"deep:{depth}", "sh", "-c", SHOW, env={"HERMETIC_STORE": deep_store})
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == _shown(depth)


def test_a_commit_on_top_of_a_deep_image(deep_store):
    """The rw layer is mounted through a link too: commit still reads it."""
    build(Store(deep_store), "bb:1", "deep:125", 125)
    env = {"HERMETIC_STORE": deep_store}
    changed = run_cli("run", "--commit", "deeper:1", "deep:125", "sh", "-c",
                      "echo mine > /etc/layers/top; rm /etc/layers/7", env=env)
    assert changed.returncode == 0, changed.stderr
    ran = run_cli("run", "deeper:1", "sh", "-c", "cat /etc/layers/top; ls /etc/layers | wc -l", env=env)
    assert ran.stdout.split() == ["mine", "126"], ran.stderr


def test_the_deepest_image_runs_and_one_more_layer_is_a_clear_error(deep_store):
    most = OVERLAY_MAX_LOWERS - 1  # the init layer is a lower layer too
    build(Store(deep_store), "bb:1", "deepest:1", most - 1)  # on busybox's own layer
    env = {"HERMETIC_STORE": deep_store}
    ran = run_cli("run", "deepest:1", "cat", "/etc/layers/top", env=env)
    assert (ran.returncode, ran.stdout) == (0, f"{most - 2}\n"), ran.stderr
    build(Store(deep_store), "bb:1", "too-deep:1", most)
    refused = run_cli("run", "too-deep:1", "true", env=env)
    assert refused.returncode == 125
    assert refused.stderr == (
        f"hermetic: error: image too-deep:1 has {most + 1} layers, more than a container can stack: overlayfs takes "
        f"at most {OVERLAY_MAX_LOWERS} lower layers, so {most} image layers; fix: rebuild the image with fewer layers\n")


def test_a_deep_image_on_top_of_host(deep_store):
    """Layers committed on top of `host` are replayed onto the container's tmpfs."""
    build(Store(deep_store), "host", "hdeep:125", 125)
    ran = run_cli("run", "hdeep:125", "sh", "-c", SHOW, env={"HERMETIC_STORE": deep_store})
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == _shown(125)
    assert not os.path.exists("/etc/layers")


def _host_dirs_to_hide() -> tuple[str, str]:
    """Two top-level host folders with nothing mounted below them."""
    with open("/proc/self/mountinfo") as f:
        mounted = {line.split()[4].split("/")[1] for line in f if line.split()[4] != "/"}
    found = [n for n in ("srv", "media", "opt", "home", "mnt", "var") if n not in mounted
             and os.path.isdir("/" + n) and not os.path.islink("/" + n)]
    assert len(found) >= 2, "this host has no two plain top-level folders to hide"
    return found[0], found[1]


def _top_level_layers(hide: str, opaque: str | None) -> list:
    """New top-level entries, then a whiteout of one of them and of a host
    folder, and an opaque host folder (unless None)."""
    marked = [(opaque, None), (f"{opaque}/.wh..wh..opq", ""), (f"{opaque}/only", "o\n")] if opaque else []
    return [
        [("hermetic-top", None), ("hermetic-top/a", "a\n"), ("hermetic-top-file", "f\n"),
         ("hermetic-top-link", "->hermetic-top"), ("hermetic-top-kept", "k\n")],
        [("hermetic-top", None), ("hermetic-top/b", "b\n"), (".wh.hermetic-top-file", ""), (f".wh.{hide}", ""),
         *marked],
    ]


def _show_top_level(hide: str, opaque: str | None) -> tuple[str, str]:
    """The script and what it must print."""
    script = (f"ls /hermetic-top; readlink /hermetic-top-link; cat /hermetic-top-kept; "
              f"test -e /hermetic-top-file || echo no-file; test -e /{hide} || echo no-{hide}"
              + (f"; ls -A /{opaque}" if opaque else ""))
    return script, f"a\nb\nhermetic-top\nk\nno-file\nno-{hide}\n" + ("only\n" if opaque else "")


def _user_xattrs(folder: str) -> bool:
    """Whether the file system of `folder` keeps `user.*` xattrs (tmpfs only
    from kernel 6.6): a rootless store needs them for opaque folders."""
    import tempfile

    with tempfile.NamedTemporaryFile(dir=folder) as probe:
        try:
            os.setxattr(probe.name, "user.hermetic-probe", b"1")
        except OSError:
            return False
    return True


def test_layers_on_top_of_host_at_the_top_level(deep_store):
    hide, opaque = _host_dirs_to_hide()
    build_layers(Store(deep_store), "host", "htop:1", _top_level_layers(hide, opaque))
    script, shown = _show_top_level(hide, opaque)
    ran = run_cli("run", "htop:1", "sh", "-c", script, env={"HERMETIC_STORE": deep_store})
    assert ran.stdout == shown, ran.stderr


def test_a_layer_missing_from_the_store_is_named(tmp_path, busybox_rootfs):
    """Layers are not checked one by one on every start; a failed mount names the one gone."""
    store = Store(str(tmp_path / "store"))
    import_image(store, f"dir:{busybox_rootfs}", "bb:1")
    image = build(store, "bb:1", "gap:1", 3)
    shutil.rmtree(store.layer_path(image.layers[2]))
    ran = run_cli("run", "gap:1", "true", env={"HERMETIC_STORE": store.root})
    assert ran.returncode == 125
    assert ran.stderr == (f"hermetic: error: layer {image.layers[2]} of gap:1 is missing from the store {store.root}; "
                          "fix: import or pull the image again\n")


def test_a_child_set_up_failure_reports_its_own_cause():
    """The child fails while building its root; the parent, meanwhile moving
    it into its cgroup, then finds it gone (EPIPE, ESRCH).  The child's own
    error is the one reported (it used to be "cannot move the container into
    its cgroup: Broken pipe" most of the time)."""
    for _ in range(5):
        # A file bound at /a and a folder at /a/b: the init layer cannot hold both.
        ran = run_cli("run", "--mem", "64M", "-v", "/etc/hostname:/a", "-v", "/tmp:/a/b", "host", "true")
        assert ran.returncode == 125
        assert "Not a directory" in ran.stderr and "/a/b" in ran.stderr, ran.stderr
        assert "cgroup" not in ran.stderr and ran.stderr.count("\n") == 1


# -- rootless -----------------------------------------------------------------


def _as_user(user: str, store: str, *argv: str) -> subprocess.CompletedProcess:
    """`python3 ARGV` as `user`, with its own store at `store` (as run_cli sets the user up)."""
    entry = pwd.getpwnam(user)
    home = os.path.join(os.path.dirname(os.environ["HERMETIC_STATE"]), f"home-{entry.pw_uid}")
    env = {"PATH": "/usr/bin:/bin", "HOME": home, "PYTHONPATH": ROOT, "HERMETIC_STATE": f"{home}/state",
           "HERMETIC_STORE": store, "HERMETIC_OFFLINE": "1", "LANG": "C.UTF-8"}
    return subprocess.run(["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups",
                           "/usr/bin/python3", *argv], env=env, capture_output=True, text=True, timeout=120, cwd="/")


@pytest.fixture(scope="module")
def user_deep_store(pytestconfig: pytest.Config, test_user: str, busybox_rootfs: str) -> str:
    """The test user's own store under a long path, with busybox as `bb:1`."""
    store = _long_store(pytestconfig._hermetic_base, "user")  # type: ignore[attr-defined]
    entry = pwd.getpwnam(test_user)
    os.makedirs(os.path.dirname(store))
    os.chown(os.path.dirname(store), entry.pw_uid, entry.pw_gid)
    assert run_cli("import", f"dir:{busybox_rootfs}", "bb:1", user=test_user,
                   env={"HERMETIC_STORE": store}).returncode == 0
    return store


@pytest.mark.parametrize(("base", "depth"), [("bb:1", 125), ("host", 100)])
def test_a_deep_image_runs_rootless(test_user, user_deep_store, base, depth):
    """Rootless: `userxattr` overlays; on top of `host`, one overlay per
    top-level directory, each with every replayed layer."""
    built = _as_user(test_user, user_deep_store, "-m", "hermetic_testsupport.deep_image", base, "rl-deep:1", str(depth))
    assert built.returncode == 0, built.stderr
    ran = run_cli("run", "rl-deep:1", "sh", "-c", SHOW + "; id -u", user=test_user,
                  env={"HERMETIC_STORE": user_deep_store})
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == _shown(depth) + "0\n"


def test_a_child_set_up_failure_reports_its_own_cause_rootless(test_user):
    """Rootless with a network: slirp4netns finds the child's network
    namespace gone; the child's own error is the one reported."""
    ran = run_cli("run", "--net=bridge", "-v", "/etc/hostname:/a", "-v", "/tmp:/a/b", "host", "true", user=test_user)
    assert ran.returncode == 125
    assert "Not a directory" in ran.stderr and "slirp4netns" not in ran.stderr, ran.stderr


def test_layers_on_top_of_host_at_the_top_level_rootless(test_user, user_deep_store):
    """Rootless, `host` is one overlay per top-level folder: the layers' own
    top-level entries, whiteouts and opaque folders must show as they do
    with one overlay of "/" (the root test above)."""
    hide, opaque = _host_dirs_to_hide()
    if not _user_xattrs(os.path.dirname(user_deep_store)):
        opaque = None  # such a store cannot hold an opaque folder at all (the cgroup v2 VM's 6.1 /tmp)
    code = ("from hermetic_testsupport.deep_image import build_layers; from pytest_hermetic.images.store import Store; "
            f"build_layers(Store(), 'host', 'rl-htop:1', {_top_level_layers(hide, opaque)!r})")
    built = _as_user(test_user, user_deep_store, "-c", code)
    assert built.returncode == 0, built.stderr
    script, shown = _show_top_level(hide, opaque)
    ran = run_cli("run", "rl-htop:1", "sh", "-c", script, user=test_user, env={"HERMETIC_STORE": user_deep_store})
    assert ran.stdout == shown, ran.stderr
