"""An image a test names by its Containerfile: built the first time it is needed.

    from pytest_hermetic import Build, hermetic

    @hermetic(image=Build("tests/images/Containerfile", build_args={"V": "1"}))
    def test_in_it(): ...

or by a name the suite declares in its ini file and `image="build:NAME"`
(docs/pytest.md).  `Builds` resolves them for one process: each reference
is built once (later uses get the image at once), under a lock in the
store that makes two processes building the same reference (xdist workers)
take turns: the second waits, then finds every step in the cache.

Nothing here imports pytest: `for_pytest` reads what it needs of a
session's `Config` (rootdir, ini key, terminal) to make the session's `Builds`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import sys
import time
import weakref

from .._fs import lock_file
from .._record import record
from ..errors import BuildError, HermeticError, SpecError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, ContextManager, Iterator, Mapping

    from ..images.store import Image, Store

PREFIX = "build:"  # image="build:NAME" (a name from the ini key) or "build:PATH"


class Build:
    """The image built from `containerfile` (a file, or a folder holding a
    Containerfile or Dockerfile); paths relative to pytest's rootdir.

    `context` defaults to the Containerfile's folder; `tag`, if given, names
    the image too (else it is `localhost/hermetic-build:<12 hex>`).  A value:
    equal references are one build."""

    __slots__ = ("containerfile", "context", "build_args", "target", "tag")

    def __init__(self, containerfile: str | os.PathLike[str], context: str | os.PathLike[str] | None = None, *,
                 build_args: Mapping[str, str] | None = None, target: str | None = None,
                 tag: str | None = None) -> None:
        for name, value in (("containerfile", containerfile), ("context", context), ("target", target), ("tag", tag)):
            if value is None and name != "containerfile":
                continue
            if not isinstance(value, (str, os.PathLike)) or not os.fspath(value).strip():
                raise SpecError(f"Build({name}={value!r}): give a path or a name as a string")
        args = dict(build_args or {})
        for key, value in args.items():
            if not isinstance(key, str) or not key or not isinstance(value, (str, int, float)):
                raise SpecError(f"Build(build_args={{{key!r}: {value!r}}}): use string keys and string values")
        self.containerfile: str = os.fspath(containerfile)
        self.context: str | None = os.fspath(context) if context is not None else None
        self.build_args: dict[str, str] = {k: str(v) for k, v in sorted(args.items())}
        self.target = target
        self.tag = tag

    def _key(self) -> tuple:
        return (self.containerfile, self.context, tuple(self.build_args.items()), self.target, self.tag)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Build) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        extra = "".join(f", {name}={getattr(self, name)!r}" for name in ("context", "build_args", "target", "tag")
                        if getattr(self, name))
        return f"Build({self.containerfile!r}{extra})"

    def __reduce__(self) -> tuple:  # pickled to the parent by `containers.run` in a hermetic test
        return (_make, (self.containerfile, self.context, self.build_args, self.target, self.tag))

    def describe(self) -> str:
        words = [self.containerfile]
        words += [f"--build-arg {k}={v}" for k, v in self.build_args.items()]
        words += [f"--target {self.target}"] if self.target else []
        return " ".join(words)


def _make(containerfile: str, context: str | None, build_args: dict, target: str | None, tag: str | None) -> Build:
    return Build(containerfile, context, build_args=build_args, target=target, tag=tag)


def is_build(image: object) -> bool:
    """Whether an image option names a build (the plugin's only cost for other tests)."""
    return isinstance(image, Build) or (isinstance(image, str) and image.startswith(PREFIX))


def parse_declarations(lines: list[str]) -> dict[str, Build]:
    """The ini key's lines, `NAME: PATH [CONTEXT] [--build-arg K=V]... [--target STAGE] [--tag REF]`."""
    named: dict[str, Build] = {}
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, rest = line.partition(":")
        name = name.strip()
        if not sep or not name or not name.replace("-", "_").replace(".", "_").isidentifier():
            raise SpecError(f"hermetic_images line {line.strip()!r}: write NAME: PATH [CONTEXT] "
                            "[--build-arg K=V]... [--target STAGE]")
        try:
            words = shlex.split(rest)
        except ValueError as exc:
            raise SpecError(f"hermetic_images line {line.strip()!r}: {exc}") from None
        paths: list[str] = []
        args: dict[str, str] = {}
        options: dict[str, str] = {}
        while words:
            word = words.pop(0)
            if word in ("--build-arg", "--target", "--tag"):
                if not words:
                    raise SpecError(f"hermetic_images {name}: {word} needs a value")
                value = words.pop(0)
                if word == "--build-arg":
                    key, eq, val = value.partition("=")
                    if not key or not eq:
                        raise SpecError(f"hermetic_images {name}: --build-arg {value!r}: use KEY=VALUE")
                    args[key] = val
                else:
                    options[word[2:]] = value
            elif word.startswith("-"):
                raise SpecError(f"hermetic_images {name}: unknown option {word}; known: --build-arg, --target, --tag")
            else:
                paths.append(word)
        if not 1 <= len(paths) <= 2:
            raise SpecError(f"hermetic_images {name}: give the Containerfile (or its folder) and at most a context")
        if name in named:
            raise SpecError(f"hermetic_images: {name} is declared twice")
        named[name] = Build(paths[0], paths[1] if len(paths) > 1 else None, build_args=args,
                            target=options.get("target"), tag=options.get("tag"))
    return named


@record(frozen=True)
class Resolved:
    """Where a reference's files are: absolute, checked."""

    label: str  # how messages name it: the ini name, or the Containerfile as written
    containerfile: str
    context: str
    build: Build


class Builds:
    """The builds of one pytest process (or one notebook): each reference
    built at most once, its image (or its failure) remembered."""

    def __init__(self, root: str, named: Mapping[str, Build] | None = None,
                 say: Callable[[str], None] | None = None, verbose: bool = False, run_id: str | None = None) -> None:
        """`run_id`: the same for every process of one test run (xdist's
        testrunuid); a build that failed in one of them fails at once in the others."""
        self.root = root
        self.run_id = run_id
        self.named = dict(named or {})
        self.say = say or (lambda _line: None)
        self.verbose = verbose
        self.done: dict[tuple, Image | BuildError] = {}

    def check(self, image: object) -> Resolved:
        """The reference's files, or `SpecError` naming what is missing (cheap: collection calls it)."""
        label = None
        if isinstance(image, str):
            text = image[len(PREFIX):].strip()
            if text in self.named:
                label, image = text, self.named[text]
            elif not text:
                raise SpecError(f"image={image!r}: give build:NAME (hermetic_images in the ini file) or "
                                "build:PATH/Containerfile")
            elif "/" not in text and not os.path.exists(self._path(text)):
                known = ", ".join(sorted(self.named)) or "none declared"
                raise SpecError(f"image={image!r}: no build named {text!r} in hermetic_images ({known}), and no "
                                f"file {self._path(text)}")
            else:
                image = Build(text)
        if not isinstance(image, Build):
            raise SpecError(f"image={image!r}: not a build reference")
        path = self._path(image.containerfile)
        if os.path.isdir(path):
            from . import find_containerfile

            try:
                containerfile = find_containerfile(None, path)
            except BuildError as exc:
                raise SpecError(f"image=Build({image.containerfile!r}): {exc}") from None
            context = path
        elif os.path.isfile(path):
            containerfile, context = path, os.path.dirname(path)
        else:
            raise SpecError(f"image=Build({image.containerfile!r}): no such file or folder {path} "
                            f"(a relative path starts at the rootdir {self.root})")
        if image.context is not None:
            context = self._path(image.context)
            if not os.path.isdir(context):
                raise SpecError(f"image=Build({image.containerfile!r}, context={image.context!r}): "
                                f"{context} is not a folder")
        if image.tag is not None:
            from .image import target_name

            try:
                target_name(image.tag)
            except HermeticError as exc:
                raise SpecError(f"image=Build({image.containerfile!r}, tag={image.tag!r}): {exc}") from None
        return Resolved(label or os.path.relpath(containerfile, self.root), containerfile, context, image)

    def _path(self, path: str) -> str:
        return os.path.normpath(os.path.join(self.root, os.path.expanduser(path)))

    def image(self, image: object, store: Store | None = None) -> Image:
        """Build the reference (or find it built), once per process; `BuildError` if it fails.

        The lock is per reference, in the store: a second process building
        the same one waits, then runs no step (every one is cached)."""
        resolved = image if isinstance(image, Resolved) else self.check(image)
        ref = resolved.build
        key = (resolved.containerfile, resolved.context, tuple(ref.build_args.items()), ref.target, ref.tag)
        found = self.done.get(key)
        if found is None:
            try:
                found = self._build(resolved, key, store)
            except OSError as exc:  # the store's lock folder, say: one line, not a traceback
                found = BuildError(f"hermetic build of {resolved.label} ({resolved.containerfile}) failed: {exc}")
            self.done[key] = found
        if isinstance(found, BuildError):
            raise found
        return found

    def _build(self, resolved: Resolved, key: tuple, store: Store | None) -> Image | BuildError:
        from ..images.store import Store
        from . import build
        from .image import target_name

        store = store or Store()
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:32]
        layered = cached = 0
        output: list[str] = []

        def progress(line: str) -> None:
            nonlocal layered, cached
            if line.startswith("STEP "):
                if line.split(": ", 1)[-1].split(None, 1)[0].upper() in ("RUN", "COPY", "ADD"):
                    layered += 1
                self.say(f"hermetic: building {resolved.label}: {line}")
            elif line == "--> cached":
                cached += 1
            elif self.verbose:
                self.say(f"    {line}")
            output.append(line)

        started = time.monotonic()
        self.say(f"hermetic: building {resolved.label} ({resolved.build.describe()})")
        store.ensure()
        with _locked(os.path.join(store.root, "locks", f"build-{digest}")) as lock:
            waited = time.monotonic() - started
            failed = self._failure_of_this_run(lock)
            if failed is not None:
                self.say(f"hermetic: build of {resolved.label} failed in another process of this run")
                return failed
            try:
                # Named after its content, so a test gets what it built even if another session
                # retags `tag` with other content meanwhile; `tag` is a name for people.
                image = build(resolved.containerfile, resolved.context, build_args=resolved.build.build_args,
                              target=resolved.build.target, progress=progress, store=store)
                if resolved.build.tag:
                    store.tag(target_name(resolved.build.tag), store.manifest_digest(image.name))
            except HermeticError as exc:  # a BuildError, or a bad tag
                error = BuildError(f"hermetic build of {resolved.label} ({resolved.containerfile}) failed: {exc}",
                                   getattr(exc, "output", "") or "\n".join(output[-20:]))
                self.say(f"hermetic: build of {resolved.label} failed")
                self._record_failure(lock, error)
                return error
            self._record_failure(lock, None)
        wait = f", waited {waited:.1f} s for another build of it" if waited >= 0.1 else ""
        self.say(f"hermetic: built {resolved.label} as {image.familiar} in {time.monotonic() - started:.1f} s "
                 f"({_steps(layered - cached)} run, {cached} cached{wait})")
        return image

    def _failure_of_this_run(self, fd: int) -> BuildError | None:
        if self.run_id is None:
            return None
        try:
            found = json.loads(os.pread(fd, 1 << 20, 0) or b"{}")
        except ValueError:
            return None
        if found.get("run") != self.run_id:
            return None
        return BuildError(found["message"], found.get("output", ""))

    def _record_failure(self, fd: int, error: BuildError | None) -> None:
        if self.run_id is None:
            return
        os.ftruncate(fd, 0)
        if error is not None:
            os.pwrite(fd, json.dumps({"run": self.run_id, "message": str(error), "output": error.output}).encode(), 0)


def _steps(count: int) -> str:
    return f"{count} step" if count == 1 else f"{count} steps"


@contextlib.contextmanager
def _locked(path: str) -> Iterator[int]:
    """The file `path`, flock'ed: one build of a reference at a time; it
    holds the failure of this run's build, if it failed."""
    fd = lock_file(path, fcntl.LOCK_EX)
    try:
        yield fd
    finally:
        os.close(fd)


# -- the pytest session's builds (the plugin and the `containers` fixtures call this) ----------

_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def for_pytest(config: Any, outside_capture: Callable[[], ContextManager[None]]) -> Builds:
    """The builds of a pytest session (its `Config`; pytest itself is not
    imported here): paths from the rootdir, names from the `hermetic_images`
    ini key, progress on the terminal (written within `outside_capture()`),
    a failure shared by the xdist workers of one run."""
    found = _SESSIONS.get(config)
    if found is None:
        worker = getattr(config, "workerinput", {})
        found = Builds(str(config.rootpath), parse_declarations(config.getini("hermetic_images")),
                       say=_pytest_progress(config, worker.get("workerid"), outside_capture),
                       verbose=(config.getoption("verbose") or 0) > 1, run_id=worker.get("testrunuid"))
        _SESSIONS[config] = found
    return found


def _pytest_progress(config: Any, worker: str | None,
                     outside_capture: Callable[[], ContextManager[None]]) -> Callable[[str], None]:
    """Progress lines on the terminal; an xdist worker has no terminal: its
    lines go to its stderr (the controller's), prefixed with its id."""

    def say(line: str) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        with outside_capture():
            if worker is not None or reporter is None:
                sys.stderr.write(f"[{worker}] {line}\n" if worker else f"{line}\n")
                sys.stderr.flush()
            else:
                reporter.ensure_newline()
                reporter.write_line(line)

    return say


__all__ = ["PREFIX", "Build", "Builds", "Resolved", "for_pytest", "is_build", "parse_declarations"]
