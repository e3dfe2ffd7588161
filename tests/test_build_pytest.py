"""Images built from a Containerfile, named by tests (issue #15 part 5): real
inner pytest sessions (pytester, in a subprocess), plainly and under xdist,
whose tests run in the image they name; built once, a failing build an
error of each test that needs it, naming the step."""

from __future__ import annotations

import os
import re
import uuid
import xml.etree.ElementTree as ET

import pytest
from conftest import run_cli

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="root runs these sessions (and the rootless one as the test user)")

# `RUN date` is not reproducible: a second build that ran its step would
# make another image, with another stamp; one stamp for every test is one build.
CONTAINERFILE = """\
FROM busybox:test
ARG FLAVOUR=plain SALT={salt}
RUN echo "$FLAVOUR $(cat /proc/sys/kernel/random/uuid)" > /stamp
COPY data.txt /data.txt
"""

SUITE = r'''
import os
import pytest
from pytest_hermetic import Build, hermetic

def stamp():
    with open("/stamp") as f:
        return f.read().strip()

@hermetic(image="build:app")
def test_named_one(record_property):
    record_property("stamp", stamp())
    assert open("/data.txt").read() == "from the context\n"
    assert os.path.exists("/bin/busybox") and not os.path.exists("/usr/lib/os-release")

@hermetic(image="build:app")
def test_named_two(record_property):
    record_property("stamp", stamp())

@hermetic(image=Build("images/Containerfile", build_args={"FLAVOUR": "spicy"}, tag="spicy:dev"))
def test_object_with_a_build_arg(record_property):
    record_property("stamp", stamp())
    assert stamp().startswith("spicy ")

@hermetic(image="build:images/Containerfile")
def test_by_path(record_property):
    record_property("stamp", stamp())
    assert stamp().startswith("plain ")

def test_service_container(containers, record_property):
    svc = containers.run(Build("images"), ["sh", "-c", "cat /stamp; cat /data.txt; sleep 60"])
    svc.wait_for_log("from the context")
    record_property("stamp", svc.logs().splitlines()[0])

@pytest.fixture(scope="module")
def module_service(containers_module):
    return containers_module.run("build:app", ["sh", "-c", "cat /stamp; sleep 60"])

def test_module_service(module_service, record_property):
    module_service.wait_for_log(" ")
    record_property("stamp", module_service.logs().splitlines()[0])

@hermetic
def test_service_from_a_hermetic_test(containers):
    svc = containers.run(Build("images"), ["cat", "/data.txt"])
    assert svc.wait() is not None and "from the context" in svc.logs()
'''


def _project(pytester: pytest.Pytester) -> None:
    images = pytester.path / "images"
    images.mkdir()
    (images / "Containerfile").write_text(CONTAINERFILE.format(salt=uuid.uuid4()))  # no cache hit from another test
    (images / "data.txt").write_text("from the context\n")
    pytester.makeini("[pytest]\njunit_family = xunit1\nhermetic_images =\n    app: images/Containerfile\n")
    pytester.makepyfile(test_built=SUITE)


def _stamps(path) -> dict[str, str]:
    stamps = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        for prop in case.iter("property"):
            stamps[case.get("name")] = prop.get("value")
    return stamps


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_tests_run_in_the_image_built_once(pytester: pytest.Pytester, busybox_image: str, workers: list[str]):
    _project(pytester)
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", "--junitxml=junit.xml",
                                           "-rA", *workers, timeout=240)
    result.assert_outcomes(passed=7)
    stamps = _stamps(pytester.path / "junit.xml")
    plain = {stamps[name] for name in ("test_named_one", "test_named_two", "test_by_path", "test_service_container",
                                       "test_module_service")}
    assert len(plain) == 1, stamps  # one image for the name, the path and the service: the same reference
    assert stamps["test_object_with_a_build_arg"].startswith("spicy ")
    # The progress lines: each reference's build ran its two steps in one process at most;
    # another worker waited for it and found both cached.
    lines = (result.outlines + result.errlines)
    built = [line for line in lines if re.search(r"hermetic: built \S+ as ", line)]
    ran = [line for line in built if "(2 steps run, 0 cached" in line]
    assert len(ran) == 2, "\n".join(built)  # app and the spicy one (the path and the folder are app's files)
    assert all("(0 steps run, 2 cached" in line for line in built if line not in ran), "\n".join(built)
    assert any("hermetic: building app: STEP 3/4: RUN echo" in line for line in lines), "\n".join(lines)
    assert any(re.search(r"hermetic: built images/Containerfile as localhost/hermetic-build:", line) for line in built)
    listed = run_cli("images").stdout
    assert re.search(r"^spicy:dev +[0-9a-f]{12}", listed, re.M), listed  # tag= names it too
    if workers:
        assert all(re.match(r"\[gw\d\] hermetic: ", line) for line in built), "\n".join(built)


def test_a_failing_build_is_an_error_of_each_test_that_needs_it(pytester: pytest.Pytester, busybox_image: str,
                                                                 monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CI", "true")  # pytest then prints the summary lines whole, whatever the terminal's width
    images = pytester.path / "images"
    images.mkdir()
    (images / "Containerfile").write_text("FROM busybox:test\nRUN echo compiling\nRUN echo 'cc: no such file' >&2; exit 3\n")
    pytester.makepyfile(test_broken='''
from pytest_hermetic import Build, hermetic

@hermetic(image=Build("images/Containerfile"))
def test_one():
    pass

@hermetic(image=Build("images/Containerfile"))
def test_two():
    pass

def test_unrelated():
    pass

def test_service(containers):
    containers.run(Build("images"), ["true"])
''')
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", "-n", "2", timeout=240)
    result.assert_outcomes(passed=1, errors=2, failed=1)
    text = result.stdout.str()
    assert re.search(r"test_broken.py::test_one: hermetic build of images/Containerfile \(\S+/images/Containerfile\) "
                     r"failed: Containerfile:3: RUN \(step 3/3\) failed: exited with status 3", text), text
    assert "cc: no such file" in text  # the step's output, in the test's error
    assert text.count("failed: Containerfile:3: RUN") == 6  # each of the three in its section and its summary line
    assert re.search(r"BuildError: containers.run\(Build\('images'\)\): hermetic build of images/Containerfile "
                     r"\(\S+\) failed: Containerfile:3: RUN \(step 3/3\) failed", text), text
    both = result.outlines + result.errlines
    assert len([line for line in both if "STEP 3/3" in line]) == 1, both  # one worker ran it, the other was told


def test_a_missing_containerfile_is_a_setup_error_naming_the_rootdir(pytester: pytest.Pytester):
    pytester.makepyfile(test_missing='''
from pytest_hermetic import Build, hermetic

@hermetic(image=Build("nosuch/Containerfile"))
def test_it():
    pass

@hermetic(image="build:nosuch")
def test_unknown_name():
    pass
''')
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=2)
    text = result.stdout.str()
    assert "bad @hermetic marker: image=Build('nosuch/Containerfile'): no such file or folder" in text
    assert f"(a relative path starts at the rootdir {pytester.path})" in text
    assert "no build named 'nosuch' in hermetic_images (none declared)" in text


def test_a_bad_ini_line_stops_the_session(pytester: pytest.Pytester):
    pytester.makeini("[pytest]\nhermetic_images =\n    app images/Containerfile\n")
    pytester.makepyfile(test_x="def test_x(): pass\n")
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "hermetic_images line 'app images/Containerfile': write NAME: PATH [CONTEXT]" in result.stderr.str()


def test_the_default_image_can_be_a_build(pytester: pytest.Pytester, busybox_image: str):
    """`hermetic_image = build:NAME` with `--hermetic`: every test runs in the built image."""
    images = pytester.path / "images"
    images.mkdir()
    (images / "Containerfile").write_text(f"FROM busybox:test\nRUN echo {uuid.uuid4()} > /stamp\n")
    pytester.makeini("[pytest]\nhermetic_image = build:base\nhermetic_images =\n    base: images\n")
    pytester.makepyfile(test_default='''
import os

def test_one():
    assert os.path.exists("/stamp") and os.path.exists("/bin/busybox")

def test_two():
    assert os.path.exists("/stamp")
''')
    result = pytester.runpytest_subprocess("-p", "hermetic", "-p", "no:cacheprovider", "--hermetic", timeout=120)
    result.assert_outcomes(passed=2)
    assert len([line for line in result.outlines if "hermetic: built base as" in line]) == 1
    # Outside pytest the name means nothing: one line saying so.
    from pytest_hermetic.errors import SpecError
    from pytest_hermetic.spec import Spec

    with pytest.raises(SpecError, match=r"image='build:base': an image built from a Containerfile is named so only in "
                                        r"pytest \(the marker, containers.run\); elsewhere build it first"):
        Spec.build("build:base")


def test_a_rootless_session_builds_and_runs_in_the_image(test_user: str):
    """As the unprivileged test user: the build's steps are rootless containers, and so are the tests."""
    import pwd

    from conftest import inner_session_as

    entry = pwd.getpwnam(test_user)
    project = os.path.join(os.path.dirname(os.environ["HERMETIC_STATE"]), f"home-{entry.pw_uid}", "build-project")
    os.makedirs(project, exist_ok=True)
    containerfile = os.path.join(project, "Containerfile")
    with open(containerfile, "w") as f:
        f.write(f"FROM host\nRUN echo {uuid.uuid4()} > /etc/rootless-built\n")
    for path in (os.path.dirname(project), project, containerfile):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    ran, _home = inner_session_as(test_user, "build-project", "test_inner.py", (
        "import os\n"
        "from pytest_hermetic import Build, hermetic\n\n"
        "@hermetic(image=Build('Containerfile'))\n"
        "def test_in_the_built_image():\n"
        "    assert open('/etc/rootless-built').read().strip()\n\n"
        "def test_not_on_the_host():\n"
        "    assert not os.path.exists('/etc/rootless-built')\n"), "-rA")
    assert "2 passed" in ran.stdout, ran.stdout + ran.stderr
    assert "hermetic: built Containerfile as localhost/hermetic-build:" in ran.stdout, ran.stdout
