"""`@record`: plain data classes for the engine's start-up path.

`dataclasses` imports `inspect` and builds every class's methods with `exec`;
for the fifteen small classes `hermetic run` loads that was a fifth of its
own start-up time.  `@record` gives the same plain classes (fields from the
annotations, in order; defaults as written; `factory(list)` for a mutable
default; `frozen=True`) with shared methods and no code generation.

Type checkers see `@record` through `dataclass_transform` (an `__init__` from
the fields; `frozen=True` read-only) and `factory(list)` as the value it
makes.  Only they import `typing`; at run time it would cost start-up.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, TypeVar

    from typing_extensions import dataclass_transform  # typing's own from 3.11; checkers know both

    T = TypeVar("T")
    R = TypeVar("R")
else:
    def dataclass_transform(**_options):  # noqa: ANN001, ANN202 - a no-op at run time
        return lambda function: function

_MISSING = object()


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make: Callable[[], object]) -> None:
        self.make = make


if TYPE_CHECKING:
    def factory(make: Callable[[], T]) -> T:
        """A default made fresh for every instance: `items: list = factory(list)`."""
        ...
else:
    factory = _Factory


def _init(self: Any, *args: object, **kwargs: object) -> None:
    cls = type(self)
    fields = cls._fields
    if args:
        if len(args) > len(fields):
            raise TypeError(f"{cls.__name__}() takes {len(fields)} arguments, got {len(args)}")
        for key in fields[:len(args)]:
            if key in kwargs:
                raise TypeError(f"{cls.__name__}() got {key!r} twice")
        kwargs.update(zip(fields, args))
    if not cls._names.issuperset(kwargs):
        unknown = next(key for key in kwargs if key not in cls._names)
        raise TypeError(f"{cls.__name__}() got an unexpected argument {unknown!r}")
    defaults = cls._defaults
    for name in fields:
        value = kwargs.get(name, _MISSING)
        if value is _MISSING:
            value = defaults.get(name, _MISSING)
            if value is _MISSING:
                raise TypeError(f"{cls.__name__}() is missing {name!r}")
            if isinstance(value, _Factory):
                value = value.make()
        object.__setattr__(self, name, value)


def _repr(self: Any) -> str:
    return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in self._fields)})"


def _eq(self: Any, other: Any) -> bool:
    if type(other) is not type(self):
        return NotImplemented
    return all(getattr(self, n) == getattr(other, n) for n in self._fields)


def _hash(self: Any) -> int:
    return hash(tuple(getattr(self, n) for n in self._fields))


def _frozen_setattr(self: object, name: str, value: object) -> None:
    raise AttributeError(f"{type(self).__name__} is frozen: use replace(obj, {name}=...)")


@dataclass_transform()
def record(cls: type | None = None, *, frozen: bool = False) -> Any:
    def make(cls: type) -> type:
        fields: list[str] = []
        defaults: dict[str, object] = {}
        for base in reversed(cls.__mro__[1:]):
            fields += [f for f in getattr(base, "_fields", ()) if f not in fields]
            defaults.update(getattr(base, "_defaults", {}))
        for name in cls.__dict__.get("__annotations__", {}):
            if name not in fields:
                fields.append(name)
            if name in cls.__dict__:
                defaults[name] = cls.__dict__[name]
                if isinstance(cls.__dict__[name], _Factory):
                    delattr(cls, name)
        # setattr, not `cls.__init__ = ...`: the class is built here, not patched
        for attribute, value in (("_fields", tuple(fields)), ("_names", frozenset(fields)), ("_defaults", defaults),
                                 ("__init__", _init), ("__eq__", _eq), ("__hash__", _hash if frozen else None)):
            setattr(cls, attribute, value)
        if "__repr__" not in cls.__dict__:
            setattr(cls, "__repr__", _repr)
        if frozen:
            setattr(cls, "__setattr__", _frozen_setattr)
        return cls

    return make(cls) if cls is not None else make


def fields(obj: object) -> tuple[str, ...]:
    """The field names of a record (class or instance), in order."""
    return tuple(getattr(obj, "_fields"))


def replace(obj: R, **changes: Any) -> R:
    """A copy of a record with some fields changed (as `dataclasses.replace`)."""
    values = {name: getattr(obj, name) for name in getattr(obj, "_fields")}
    values.update(changes)
    return type(obj)(**values)
