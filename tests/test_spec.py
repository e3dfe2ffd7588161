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


@pytest.mark.parametrize("options, words", [
    ({"cpus": 1e9}, "cpus=1000000000.0: use a number of CPUs from 0.01 to 1024"),
    ({"pids": 10**20}, "pids=100000000000000000000: must be a whole number of at least 1 and at most 4194304"),
    ({"mem": 1}, "mem=1: too little for a container to start; use at least 6M"),
    ({"mem": "2E"}, "mem='2E': not a size"),
    ({"user": 99999999999}, "user=99999999999: id 99999999999 is out of range"),
    ({"user": "a:b:c"}, "user='a:b:c'"),
    ({"hostname": "ab\n"}, "hostname='ab\\n'"),
    ({"hostname": 5}, "hostname=5"),
    ({"name": "x\n"}, "name='x\\n'"),
    ({"env": "A=1"}, "env='A=1': give a mapping"),
    ({"env": {"A": b"1"}}, "env: A=b'1': the value must be a string"),
    ({"volumes": [5]}, "volumes: 5 is not a volume"),
    ({"volumes": ["/tmp:/proc/x"]}, "/proc/x is where the engine mounts its own /proc"),
    ({"volumes": [Volume("/tmp", "/dev")]}, "/dev is where the engine mounts its own /dev"),
    ({"privileged": "false"}, "privileged='false': use True or False"),
    ({"init": 1}, "init=1: use True or False"),
    ({"workdir": "a/b"}, "workdir='a/b': use an absolute path"),
    ({"timeout": float("nan")}, "timeout=nan"),
    ({"command": [None]}, "command: None is not a string"),
    ({"command": ["a\0b"]}, "contains a NUL byte"),
    ({"image": "dir:/"}, "image='dir:/': that is the host's whole root"),
    ({"image": "../../etc"}, "image='../../etc'"),
    ({"image": None}, "image=None"),
])
def test_every_surface_gets_the_same_checks(options, words):
    """The Container API (and through it the CLI, the marker and the magics) refuses
    with a SpecError naming the option; long values are cut short."""
    image = options.pop("image", "host")
    command = options.pop("command", None)
    with pytest.raises(SpecError) as info:
        Spec.build(image, command, **options)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_good_values_of_every_type():
    from pathlib import Path

    spec = Spec.build("host", ["cat", Path("/etc/hostname"), 3], user=5, env={"A": 1}, hostname="box",
                      volumes=["/tmp:/data//x/"], workdir="/a/../b", privileged=False, userns=None)
    assert spec.command == ("cat", "/etc/hostname", "3")
    assert (spec.user, spec.env, spec.workdir, spec.volumes[0].target) == ("5", {"A": "1"}, "/b", "/data/x")
    with pytest.raises(SpecError, match=r"\(5002 characters\)"):
        Spec.build("host", pids="9" * 5000)
