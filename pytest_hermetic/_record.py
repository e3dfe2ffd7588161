"""`@record`: plain data classes for the engine's start-up path.

`dataclasses` imports `inspect` and builds every class's methods with `exec`;
for the fifteen small classes `hermetic run` loads that was a fifth of its
own start-up time.  `@record` gives the same plain classes (fields from the
annotations, in order; defaults as written; `factory(list)` for a mutable
default; `frozen=True`) with shared methods and no code generation.
"""

from __future__ import annotations

_MISSING = object()


class factory:
    """A default made fresh for every instance: `items: list = factory(list)`."""

    __slots__ = ("make",)

    def __init__(self, make) -> None:  # noqa: ANN001
        self.make = make


def _init(self, *args, **kwargs) -> None:  # noqa: ANN001
    fields = type(self)._fields
    if len(args) > len(fields):
        raise TypeError(f"{type(self).__name__}() takes {len(fields)} arguments, got {len(args)}")
    values = dict(zip(fields, args))
    for key, value in kwargs.items():
        if key not in fields:
            raise TypeError(f"{type(self).__name__}() got an unexpected argument {key!r}")
        if key in values:
            raise TypeError(f"{type(self).__name__}() got {key!r} twice")
        values[key] = value
    defaults = type(self)._defaults
    for name in fields:
        if name not in values:
            default = defaults.get(name, _MISSING)
            if default is _MISSING:
                raise TypeError(f"{type(self).__name__}() is missing {name!r}")
            values[name] = default.make() if isinstance(default, factory) else default
        object.__setattr__(self, name, values[name])


def _repr(self) -> str:
    return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in self._fields)})"


def _eq(self, other: object):  # noqa: ANN202
    if type(other) is not type(self):
        return NotImplemented
    return all(getattr(self, n) == getattr(other, n) for n in self._fields)


def _hash(self) -> int:
    return hash(tuple(getattr(self, n) for n in self._fields))


def _frozen_setattr(self, name: str, value: object) -> None:
    raise AttributeError(f"{type(self).__name__} is frozen: use replace(obj, {name}=...)")


def record(cls=None, *, frozen: bool = False):  # noqa: ANN001, ANN201
    def make(cls):  # noqa: ANN001, ANN202
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
                if isinstance(cls.__dict__[name], factory):
                    delattr(cls, name)
        cls._fields = tuple(fields)
        cls._defaults = defaults
        cls.__init__ = _init
        if "__repr__" not in cls.__dict__:
            cls.__repr__ = _repr
        cls.__eq__ = _eq
        if frozen:
            cls.__setattr__ = _frozen_setattr
            cls.__hash__ = _hash
        else:
            cls.__hash__ = None
        return cls

    return make(cls) if cls is not None else make


def replace(obj, **changes):  # noqa: ANN001, ANN201
    """A copy of a record with some fields changed (as `dataclasses.replace`)."""
    values = {name: getattr(obj, name) for name in obj._fields}
    values.update(changes)
    return type(obj)(**values)
