"""Image metadata from anywhere (a registry, an archive, the store), checked before use.

Every JSON document an image is made of passes `load`: its size and nesting
depth are bounded *before* it is parsed (a 100,000-deep `[[[...` would blow
Python's recursion limit inside `json.loads`), then each field the engine
reads is checked for its type, so a hostile or broken image fails with one
short line naming the source and the field (`manifest.layers[0].digest: a
number, expected a sha256 digest`), never with a `TypeError` or a megabyte of
echoed input.  Fields the engine does not read are not checked.
"""

from __future__ import annotations

import itertools
import json
import re
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

MAX_DEPTH = 64  # the deepest real document (config.history, labels) nests 4 levels
MAX_LAYERS = 500  # overlayfs stacks at most 500 lower layers (OVL_MAX_STACK)
MAX_ENTRIES = 1000  # index entries, archive images
MAX_ID = (1 << 32) - 2
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_USER_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.$-]{0,31}")


def depth(data: bytes) -> int:
    """How deep arrays and objects nest in the JSON text `data` (strings skipped)."""
    brackets = _STRINGS.sub(b'""', data).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    return max(itertools.accumulate(_STEP[b] for b in brackets))


def load(data: bytes, schema: "Check", what: str, error: type[Exception], *, limit: int) -> Any:
    """Parse and check one document; raise `error` with one line naming `what` and the field."""
    if len(data) > limit:
        raise error(f"{what} is larger than {_size(limit)}; refusing it (a real one is a few KiB)")
    if depth(data) > MAX_DEPTH:
        raise error(f"{what} nests more than {MAX_DEPTH} levels deep; refusing it (a real one nests 4)")
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise error(f"{what} is not JSON ({str(exc)[:80]})") from None
    problem = schema(value, schema.name)
    if problem:
        raise error(f"{what}: {problem}")
    return value


# -- checks: each returns None when the value fits, else what is wrong -------------------------


class Check:
    """A check of one value; `name` is how the top-level value is called in messages."""

    def __init__(self, expect: str, test: Callable[[Any], bool], name: str = "value") -> None:
        self.expect, self.test, self.name = expect, test, name

    def __call__(self, value: Any, path: str) -> str | None:
        return None if self.test(value) else _wrong(path, value, self.expect)


class Obj(Check):
    def __init__(self, fields: dict[str, Check], required: tuple[str, ...] = (), name: str = "value") -> None:
        super().__init__("an object", lambda v: isinstance(v, dict), name)
        self.fields, self.required = fields, required

    def __call__(self, value: Any, path: str) -> str | None:
        if not isinstance(value, dict):
            return _wrong(path, value, "an object")
        for key in self.required:
            if key not in value:
                return f"{path}.{key} is missing"
        for key, check in self.fields.items():
            if key in value:
                problem = check(value[key], f"{path}.{key}")
                if problem:
                    return problem
        return None


class ListOf(Check):
    def __init__(self, item: Check, most: int | None = None, name: str = "value") -> None:
        super().__init__("a list", lambda v: isinstance(v, list), name)
        self.item, self.most = item, most

    def __call__(self, value: Any, path: str) -> str | None:
        if not isinstance(value, list):
            return _wrong(path, value, self.expect)
        if self.most is not None and len(value) > self.most:
            return f"{path} has {len(value)} entries, more than the {self.most} allowed"
        for i, item in enumerate(value):
            problem = self.item(item, f"{path}[{i}]")
            if problem:
                return problem
        return None


class MapOf(Check):
    def __init__(self, item: Check) -> None:
        super().__init__("an object", lambda v: isinstance(v, dict))
        self.item = item

    def __call__(self, value: Any, path: str) -> str | None:
        if not isinstance(value, dict):
            return _wrong(path, value, self.expect)
        for key, item in value.items():
            problem = self.item(item, f"{path}[{_short(key)}]")
            if problem:
                return problem
        return None


class nullable(Check):
    """`check`, or null (Docker writes `"Cmd": null`)."""

    def __init__(self, check: Check) -> None:
        super().__init__(check.expect, lambda v: True)
        self.inner = check

    def __call__(self, value: Any, path: str) -> str | None:
        return None if value is None else self.inner(value, path)


def _text(value: Any) -> bool:
    return isinstance(value, str) and "\0" not in value


def _user(value: Any) -> bool:
    if not _text(value):
        return False
    if value == "":
        return True
    name, sep, group = value.partition(":")
    return all(_USER_PART.fullmatch(p) and (not p.isdigit() or int(p) <= MAX_ID) for p in ((name, group) if sep else (name,)))


ANY = Check("anything", lambda v: True)
TEXT = Check("a string (without NUL)", _text)
SIZE = Check("a whole number of bytes", lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 53)
DIGEST = Check("a sha256 digest (sha256: and 64 hex digits)", lambda v: isinstance(v, str) and bool(_DIGEST.fullmatch(v)))
ENV = Check("NAME=VALUE without NUL", lambda v: _text(v) and v.find("=") > 0)
PATH = Check("an absolute path without NUL (or empty)", lambda v: _text(v) and (v == "" or v.startswith("/")))
USER = Check("a user name or id, optionally :group (ids up to 4294967294)", _user)

PLATFORM = Obj({"os": TEXT, "architecture": TEXT, "variant": TEXT})
DESCRIPTOR = Obj({"mediaType": TEXT, "digest": DIGEST, "size": SIZE, "annotations": nullable(MapOf(TEXT)),
                  "platform": PLATFORM}, required=("digest",))
INDEX = Obj({"manifests": ListOf(DESCRIPTOR, MAX_ENTRIES), "annotations": nullable(MapOf(TEXT))},
            required=("manifests",), name="index")
DOCUMENT = Obj({}, name="manifest")  # any object: to tell an index from a manifest before checking either
MANIFEST = Obj({"mediaType": TEXT, "config": DESCRIPTOR, "layers": nullable(ListOf(DESCRIPTOR, MAX_LAYERS)),
                "annotations": nullable(MapOf(TEXT))}, required=("config",), name="manifest")
RUN_CONFIG = Obj({"Env": nullable(ListOf(ENV)), "Cmd": nullable(ListOf(TEXT)), "Entrypoint": nullable(ListOf(TEXT)),
                  "WorkingDir": nullable(PATH), "User": nullable(USER), "Labels": nullable(MapOf(TEXT)),
                  "StopSignal": nullable(TEXT)})
CONFIG = Obj({"architecture": TEXT, "os": TEXT, "variant": TEXT, "config": nullable(RUN_CONFIG),
              "rootfs": Obj({"type": TEXT, "diff_ids": nullable(ListOf(DIGEST, MAX_LAYERS))}),
              "history": nullable(ListOf(ANY))}, name="config")
ARCHIVE_MANIFEST = ListOf(Obj({"Config": TEXT, "RepoTags": nullable(ListOf(TEXT)), "Layers": ListOf(TEXT, MAX_LAYERS)},
                              required=("Config", "Layers")), MAX_ENTRIES, name="manifest.json")
REFS = MapOf(DIGEST)
REFS.name = "refs.json"
LAYER_META = Obj({"diff_id": DIGEST, "blob": DIGEST, "size": SIZE, "media_type": TEXT},
                 required=("diff_id", "blob"), name="meta.json")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:30] + "..." + text[-6:]


def _wrong(path: str, value: Any, expect: str) -> str:
    kind = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)
    if isinstance(value, str) and "\0" in value:
        kind = "a string with a NUL byte"
    elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
        kind = f"{kind} {_short(value)}"
    return f"{path} is {kind}, expected {expect}"


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):g} {unit}"
    return f"{n} bytes"
