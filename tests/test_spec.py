"""Spec parsing: sizes, CPUs, options and image references."""

import pytest

from pytest_hermetic.errors import ImageReferenceError, SpecError
from pytest_hermetic.images.reference import parse
from pytest_hermetic.spec import Spec, Volume, format_size, parse_cpus, parse_env, parse_size


@pytest.mark.parametrize(
    "text, expected",
    [("64M", 64 << 20), ("1g", 1 << 30), ("512MiB", 512 << 20), ("1.5G", 3 << 29), (1024, 1024), ("100", 100), ("64k", 65536)],
)
def test_sizes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "-1", "0", "1x", "", "M", True])
def test_bad_sizes_name_the_problem_and_the_fix(text):
    with pytest.raises(SpecError, match=r"mem=.*(not a size; use bytes or a number with a unit, e.g. 64M|more than 0)"):
        parse_size(text)


def test_format_size():
    assert format_size(64 << 20) == "64 MiB"
    assert format_size(None) == "unlimited"
    assert format_size(1536 << 20) == "1.5 GiB"


def test_cpus():
    assert parse_cpus("1.5") == 1.5
    for bad in ("many", "0", "nan", "-1"):
        with pytest.raises(SpecError, match="cpus="):
            parse_cpus(bad)


def test_spec_build_validates_every_option():
    spec = Spec.build("host", "echo hi", mem="64M", cpus=0.5, pids=24, timeout="2", env={"A": "1"})
    assert spec.command == ("/bin/sh", "-c", "echo hi")
    assert (spec.mem, spec.cpus, spec.pids, spec.timeout) == (64 << 20, 0.5, 24, 2.0)
    with pytest.raises(SpecError, match="unknown option 'memory'"):
        Spec.build("host", memory="1G")
    with pytest.raises(SpecError, match="pids='x'"):
        Spec.build("host", pids="x")
    with pytest.raises(SpecError, match="timeout=-1"):
        Spec.build("host", timeout=-1)
    with pytest.raises(SpecError, match="hostname="):
        Spec.build("host", hostname="no spaces")
    with pytest.raises(SpecError, match="net='host'"):
        Spec.build("host", net="host")
    with pytest.raises(SpecError, match="net=3"):
        Spec.build("host", net=3)
    assert Spec.build("host", net="svc").net == "svc" and Spec.build("host", net="bridge").net is True


def test_volumes(tmp_path):
    volume = Volume.parse(f"{tmp_path}:/data:ro")
    assert (volume.source, volume.target, volume.readonly) == (str(tmp_path), "/data", True)
    with pytest.raises(SpecError, match="does not exist"):
        Volume.parse("/no/such/dir:/data")
    with pytest.raises(SpecError, match="SRC:DST"):
        Volume.parse("justone")
    with pytest.raises(SpecError, match="absolute"):
        Volume.parse(f"{tmp_path}:relative")


def test_env_passthrough(monkeypatch):
    monkeypatch.setenv("FROM_HOST", "yes")
    assert parse_env(["A=1", "B=", "FROM_HOST", "UNSET_ONE"]) == {"A": "1", "B": "", "FROM_HOST": "yes"}


@pytest.mark.parametrize(
    "text, name, familiar",
    [
        ("ubuntu", "docker.io/library/ubuntu:latest", "ubuntu:latest"),
        ("debian:12", "docker.io/library/debian:12", "debian:12"),
        ("localhost:5000/app:1", "localhost:5000/app:1", "localhost:5000/app:1"),
        ("127.0.0.1:5000/some/busybox:1", "127.0.0.1:5000/some/busybox:1", "127.0.0.1:5000/some/busybox:1"),
        ("user/repo", "docker.io/user/repo:latest", "user/repo:latest"),
        ("name@sha256:" + "a" * 64, "docker.io/library/name@sha256:" + "a" * 64, "name@sha256:" + "a" * 64),
        ("dir:/srv/rootfs", "dir:/srv/rootfs", "dir:/srv/rootfs"),
        ("oci:/srv/layout:v1", "oci:/srv/layout:v1", "oci:/srv/layout:v1"),
        ("host", "host", "host"),
    ],
)
def test_references(text, name, familiar):
    ref = parse(text)
    assert ref.name == name
    assert ref.familiar == familiar


@pytest.mark.parametrize("text, why", [("UBUNTU", "lowercase"), ("a b", "not a valid"), ("x@sha256:12", "bad digest"),
                                       ("x:tag!", "bad tag"), ("", "empty")])
def test_bad_references(text, why):
    with pytest.raises(ImageReferenceError, match=why):
        parse(text)
