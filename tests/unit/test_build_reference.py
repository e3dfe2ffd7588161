"""The build references tests name (pytest_hermetic/build/reference.py):
`Build`, the `hermetic_images` ini lines, and where their files are."""

import pickle

import pytest

from pytest_hermetic.build.reference import Build, Builds, is_build, parse_declarations
from pytest_hermetic.errors import SpecError


def test_build_is_a_value_that_pickles():
    one = Build("images/Containerfile", build_args={"B": 2, "A": "1"}, target="test")
    assert one == Build("images/Containerfile", build_args={"A": "1", "B": "2"}, target="test")
    assert hash(one) == hash(Build("images/Containerfile", build_args={"A": "1", "B": "2"}, target="test"))
    assert one != Build("images/Containerfile")
    assert pickle.loads(pickle.dumps(one)) == one  # containers.run in a hermetic test sends it to its parent
    assert repr(one) == "Build('images/Containerfile', build_args={'A': '1', 'B': '2'}, target='test')"


@pytest.mark.parametrize("bad, message", [
    (lambda: Build(""), r"Build\(containerfile=''\): give a path"),
    (lambda: Build(3), r"Build\(containerfile=3\): give a path"),  # type: ignore[arg-type]
    (lambda: Build("x", build_args={"A": None}), r"build_args=\{'A': None\}\): use string keys"),
])
def test_bad_build_arguments_are_one_line(bad, message):
    with pytest.raises(SpecError, match=message):
        bad()


def test_is_build_only_for_builds():
    assert is_build(Build("x")) and is_build("build:app")
    assert not is_build("busybox:1") and not is_build("host") and not is_build(None)


def test_ini_lines():
    named = parse_declarations(["", "# a comment", "db: tests/images/db --build-arg PG=16 --target test",
                                "tools: tools/Containerfile tools --tag tools:dev"])
    assert named == {"db": Build("tests/images/db", build_args={"PG": "16"}, target="test"),
                     "tools": Build("tools/Containerfile", "tools", tag="tools:dev")}


@pytest.mark.parametrize("line, message", [
    ("db tests/images/db", "hermetic_images line 'db tests/images/db': write NAME: PATH"),
    ("db: a b c", "hermetic_images db: give the Containerfile"),
    ("db: a --build-arg X", "--build-arg 'X': use KEY=VALUE"),
    ("db: a --target", "--target needs a value"),
    ("db: a --pull", "unknown option --pull"),
    ("db: 'a", "No closing quotation"),
])
def test_bad_ini_lines(line, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_declarations([line])


def test_paths_start_at_the_root(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "ctx").mkdir()
    builds = Builds(str(tmp_path), {"app": Build("images", "ctx")})
    by_name = builds.check("build:app")
    assert (by_name.label, by_name.containerfile, by_name.context) == (
        "app", str(tmp_path / "images" / "Dockerfile"), str(tmp_path / "ctx"))
    by_path = builds.check(Build("images/Dockerfile"))
    assert (by_path.label, by_path.context) == ("images/Dockerfile", str(tmp_path / "images"))
    with pytest.raises(SpecError, match=r"no such file or folder .*/nosuch \(a relative path starts at the rootdir"):
        builds.check(Build("nosuch"))
    with pytest.raises(SpecError, match=r"no build named 'other' in hermetic_images \(app\)"):
        builds.check("build:other")
    with pytest.raises(SpecError, match=r"tag='Bad Tag'"):
        builds.check(Build("images", tag="Bad Tag"))
