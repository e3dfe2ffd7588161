"""The parsers every surface shares, value by value: image references, sizes,
CPUs, counts, users, paths, networks (tests/test_spec.py checks them through
`Spec.build`; this file the edge cases of each).  No root, no kernel."""

from __future__ import annotations

import pytest

from pytest_hermetic.errors import ImageReferenceError, SpecError
from pytest_hermetic.images.reference import Reference, parse
from pytest_hermetic.spec import (
    MAX_PIDS, Volume, check_target, parse_cpus, parse_net, parse_positive_int, parse_security_opts, parse_size,
    parse_timeout, parse_user, parse_workdir,
)

DIGEST = "sha256:" + "0123456789abcdef" * 4

# ------------------------------------------------------------------ image references


@pytest.mark.parametrize("text, expected", [
    ("busybox", Reference("registry", "docker.io", "library/busybox")),
    ("  busybox:1.36  ", Reference("registry", "docker.io", "library/busybox", tag="1.36")),
    ("docker.io/library/busybox:1", Reference("registry", "docker.io", "library/busybox", tag="1")),
    ("ghcr.io/org/team/app:v2.0-rc_1", Reference("registry", "ghcr.io", "org/team/app", tag="v2.0-rc_1")),
    ("localhost/app", Reference("registry", "localhost", "app")),
    ("localhost:5000/app", Reference("registry", "localhost:5000", "app")),
    ("[::1]:5000/app:1", Reference("registry", "[::1]:5000", "app", tag="1")),
    ("my-registry.example:443/a__b/c.d-e:latest", Reference("registry", "my-registry.example:443", "a__b/c.d-e", tag="latest")),
    (f"app:1@{DIGEST}", Reference("registry", "docker.io", "library/app", tag="1", digest=DIGEST)),
    (f"localhost:5000/app@{DIGEST}", Reference("registry", "localhost:5000", "app", digest=DIGEST)),
    ("oci:/srv/layout", Reference("oci", path="/srv/layout")),
    ("oci:/srv/layout:v1", Reference("oci", path="/srv/layout", tag="v1")),
    ("docker-archive:/tmp/a.tar:app:1", Reference("docker-archive", path="/tmp/a.tar", tag="app:1")),
    ("docker-archive:/tmp/a.tar", Reference("docker-archive", path="/tmp/a.tar")),
    ("dir:/srv/root:fs", Reference("dir", path="/srv/root:fs")),  # a dir path may hold ':'
    ("tar:rootfs.tar.gz", Reference("tar", path="rootfs.tar.gz")),
    ("host", Reference("host")),
])
def test_references(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize("text, name, familiar", [
    ("ghcr.io/org/app", "ghcr.io/org/app:latest", "ghcr.io/org/app:latest"),
    (f"app:1@{DIGEST}", f"docker.io/library/app@{DIGEST}", f"app@{DIGEST}"),  # the digest wins
    ("docker.io/someone/app:2", "docker.io/someone/app:2", "someone/app:2"),
    ("docker-archive:/tmp/a.tar:app:1", "docker-archive:/tmp/a.tar:app:1", "docker-archive:/tmp/a.tar:app:1"),
    ("tar:/x.tar", "tar:/x.tar", "tar:/x.tar"),
])
def test_names_the_store_files_under_and_names_people_type(text, name, familiar):
    ref = parse(text)
    assert (ref.name, ref.familiar, str(ref)) == (name, familiar, familiar)


@pytest.mark.parametrize("text, why", [
    ("   ", "empty image reference; use e.g. 'host'"),
    ("oci:", "oci: needs a path, e.g. oci:/path"),
    ("dir:", "dir: needs a path"),
    ("app@sha256:ABC", "bad digest 'sha256:ABC'; expected sha256: and 64 hex digits"),
    ("app@md5:" + "0" * 32, "bad digest"),
    ("app:" + "t" * 129, "bad tag"),
    ("app:.hidden", "bad tag '.hidden'"),
    ("bad_host!.io/app", "bad registry 'bad_host!.io'"),
    ("reg-.io:5000/app", "bad registry 'reg-.io:5000'"),
    ("localhost:port/app", "bad registry 'localhost:port'"),
    ("Org/App", "repository names must be lowercase"),
    ("a//b", "not a valid image reference"),
    ("app-", "not a valid image reference"),
    ("x/" * 127 + "abcd", "longer than 255 characters"),
])
def test_bad_references_say_what_is_wrong(text, why):
    with pytest.raises(ImageReferenceError) as info:
        parse(text)
    assert why in str(info.value) and "\n" not in str(info.value)


def test_bad_reference_of_the_wrong_type():
    with pytest.raises(ImageReferenceError, match="empty image reference"):
        parse(None)  # type: ignore[arg-type]


# ------------------------------------------------------------------ sizes, CPUs, counts, timeouts


@pytest.mark.parametrize("text, expected", [
    ("64m", 64 << 20), ("64mb", 64 << 20), ("64MiB", 64 << 20), (" 2 G ", 2 << 30), ("1t", 1 << 40),
    ("1P", 1 << 50), ("512k", 512 << 10), ("0.5k", 512), ("7", 7), ("10b", 10), (1 << 60, 1 << 60),
])
def test_sizes_are_binary_like_dockers(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("value, words", [
    ("1.5.5G", "not a size"),
    ("64 MBs", "not a size"),
    ("2E", "not a size"),
    (b"64M", "not a size"),
    (0.5, "not a size"),
    ("0.1", "must be more than 0 bytes"),  # rounds down to nothing
    (-5, "must be more than 0 bytes"),
    ((1 << 60) + 1, "more than 1 EiB"),
    ("2048P", "more than 1 EiB"),
])
def test_bad_sizes(value, words):
    with pytest.raises(SpecError, match="^shm="):
        parse_size(value, "shm")
    with pytest.raises(SpecError) as info:
        parse_size(value)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_no_size_is_no_limit():
    assert parse_size(None) is None and parse_cpus(None) is None and parse_timeout(None) is None


@pytest.mark.parametrize("value, expected", [(0.01, 0.01), ("2", 2.0), (1024, 1024.0), (" 0.5 ", 0.5)])
def test_cpus(value, expected):
    assert parse_cpus(value) == expected


@pytest.mark.parametrize("value", [0.009, 1024.5, "inf", "-inf", "1e400", True, [1], None.__class__])
def test_bad_cpus(value):
    with pytest.raises(SpecError, match="^cpus="):
        parse_cpus(value)


@pytest.mark.parametrize("value, expected", [(1, 1), ("24", 24), (" 7 ", 7), (MAX_PIDS, MAX_PIDS)])
def test_whole_numbers(value, expected):
    assert parse_positive_int(value, "pids", MAX_PIDS) == expected


@pytest.mark.parametrize("value, words", [
    (0, "at least 1 and at most 4194304"), (MAX_PIDS + 1, "at most 4194304"), ("0x10", "not a whole number"),
    ("1.0", "not a whole number"), (1.0, "not a whole number"), (False, "not a whole number"),
])
def test_bad_whole_numbers(value, words):
    with pytest.raises(SpecError) as info:
        parse_positive_int(value, "pids", MAX_PIDS)
    assert str(info.value).startswith("pids=") and words in str(info.value)


def test_timeouts():
    assert (parse_timeout(2), parse_timeout("0.5"), parse_timeout(1e9)) == (2.0, 0.5, 1e9)
    for bad in (0, -1, "nan", "inf", 1e10, True, "soon"):
        with pytest.raises(SpecError, match="^timeout="):
            parse_timeout(bad)


# ------------------------------------------------------------------ users, paths, volumes, networks


@pytest.mark.parametrize("value, expected", [
    ("nobody", "nobody"), (1000, "1000"), ("1000:1000", "1000:1000"), ("www-data:adm", "www-data:adm"),
    ("machine$", "machine$"), ("0", "0"), (str((1 << 32) - 2), str((1 << 32) - 2)),
])
def test_users(value, expected):
    assert parse_user(value) == expected


@pytest.mark.parametrize("value, words", [
    ("", "use a user name or uid"), (True, "use a user name or uid"), ("a:", "'' is not a user"),
    (":g", "'' is not a user"), ("-rf", "'-rf' is not a user"), ("a b", "not a user"),
    (str((1 << 32) - 1), "is out of range"), ("1:4294967295", "id 4294967295 is out of range"),
])
def test_bad_users(value, words):
    with pytest.raises(SpecError) as info:
        parse_user(value)
    assert str(info.value).startswith("user=") and words in str(info.value)


def test_workdirs_are_absolute_and_normalised():
    assert parse_workdir("/src/./a/../b//") == "/src/b"
    for bad in ("src", "", "/a\0b", 5, "/" + "x" * 4095):
        with pytest.raises(SpecError, match="^workdir=.*use an absolute path"):
            parse_workdir(bad)


@pytest.mark.parametrize("target, expected", [("/data", "/data"), ("//data/./x/", "/data/x"),
                                              ("/proceeds", "/proceeds"), ("/devices/x", "/devices/x")])
def test_bind_targets(target, expected):
    assert check_target(target, "volume") == expected


@pytest.mark.parametrize("target, words", [
    ("data", "must be an absolute path"), ("/", "cannot bind over the container's root"),
    ("/data/..", "cannot bind over the container's root"), ("/sys", "where the engine mounts its own /sys"),
    ("//proc/self", "where the engine mounts its own /proc"), ("/a\0", "must be an absolute path"),
])
def test_bad_bind_targets(target, words):
    with pytest.raises(SpecError, match=f"^volume: .*{words}"):
        check_target(target, "volume")


def test_volumes_read_only_read_write_and_relative_sources(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    assert Volume.parse("src:/data:rw") == Volume(str(tmp_path / "src"), "/data", False)
    assert Volume.parse(f"{tmp_path}:/data/") == Volume(str(tmp_path), "/data", False)
    for bad in ("src:/data:rx", ":/data", "src:", "a:b:c:d"):
        with pytest.raises(SpecError, match="use SRC:DST or SRC:DST:ro"):
            Volume.parse(bad)
    with pytest.raises(SpecError, match="the source contains a NUL byte"):
        Volume.parse("s\0rc:/data")
    with pytest.raises(SpecError, match="is not a volume"):
        Volume.parse(["src", "/data"])  # type: ignore[arg-type]


@pytest.mark.parametrize("value, expected", [
    (None, False), (False, False), ("none", False), (" OFF ", False), ("", False), (True, True), ("bridge", True),
    ("Yes", True), ("svc", "svc"), ("my.net-1_a", "my.net-1_a"),
])
def test_networks(value, expected):
    assert parse_net(value) == expected


@pytest.mark.parametrize("value, words", [
    ("host", "not supported (it is not hermetic)"), ("-net", "a network name uses"), ("n" * 65, "a network name uses"),
    ("a b", "a network name uses"), (1, "use False (loopback only), True (bridged), or a network name"),
])
def test_bad_networks(value, words):
    with pytest.raises(SpecError, match="^net=") as info:
        parse_net(value)
    assert words in str(info.value)


def test_security_options():
    assert parse_security_opts([]) == {} and parse_security_opts(["seccomp=unconfined"]) == {"seccomp": False}
    for bad in ("seccomp=default.json", "apparmor=unconfined", "seccomp"):
        with pytest.raises(SpecError, match="only seccomp=unconfined is supported"):
            parse_security_opts([bad])


# ------------------------------------------------------------------ /etc/subuid


def test_subordinate_ranges_by_name_or_uid(tmp_path):
    from pytest_hermetic.runtime.namespaces import subordinate_range

    listing = tmp_path / "subuid"
    listing.write_text("# comment\nalice:100000:65536\n1001:300000:1000\nbroken:line\ncarol:x:1\n")
    assert subordinate_range(str(listing), "alice", 1000) == (100000, 65536)
    assert subordinate_range(str(listing), "bob", 1001) == (300000, 1000)
    assert subordinate_range(str(listing), "dave", 1002) is None
    assert subordinate_range(str(listing), "carol", 1003) is None  # not a number: no range, no error
    assert subordinate_range(str(tmp_path / "missing"), "alice", 1000) is None
