"""`@record` (pytest_hermetic/_record.py): the data classes of the start-up path
behave as `dataclasses` ones would, without importing dataclasses or typing."""

import subprocess
import sys

import pytest

from pytest_hermetic._record import factory, record, replace


@record
class Point:
    x: int
    y: int = 0
    tags: list = factory(list)


@record(frozen=True)
class Frozen:
    a: int
    b: str = "b"


@record
class Point3(Point):
    z: int = 0


def test_fields_defaults_and_a_fresh_factory_value():
    p, q = Point(1), Point(2, 3)
    assert (p.x, p.y, p.tags, q.x, q.y) == (1, 0, [], 2, 3)
    p.tags.append("one")
    assert q.tags == [] and Point(1).tags == []
    assert Point(y=5, x=4) == Point(4, 5) and Point(1) != Point(2) and Point(1) != (1, 0, [])
    assert repr(Point(1)) == "Point(x=1, y=0, tags=[])"
    assert Point3(1, 2, [], 3).z == 3 and Point3._fields == ("x", "y", "tags", "z")


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Point(), "Point() is missing 'x'"),
    (lambda: Point(1, 2, [], 4), "Point() takes 3 arguments, got 4"),
    (lambda: Point(1, x=2), "Point() got 'x' twice"),
    (lambda: Point(1, w=2), "Point() got an unexpected argument 'w'"),
])
def test_wrong_arguments_are_type_errors(make, message):
    with pytest.raises(TypeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_frozen_records_hash_and_refuse_changes():
    f = Frozen(1)
    assert hash(f) == hash(Frozen(1, "b")) and {f, Frozen(1)} == {f}
    with pytest.raises(AttributeError, match="Frozen is frozen: use replace"):
        f.a = 2
    assert replace(f, a=2) == Frozen(2, "b") and f.a == 1
    with pytest.raises(TypeError):
        hash(Point(1))  # mutable: unhashable, as a dataclass


def test_no_typing_or_dataclasses_at_run_time():
    code = ("import sys, pytest_hermetic._record, pytest_hermetic.options, pytest_hermetic.spec; "
            "print(sorted(m for m in ('typing', 'typing_extensions', 'dataclasses', 'inspect') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
