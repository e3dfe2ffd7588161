"""`hermetic build`: images from a Containerfile, on the engine itself (no daemon, no buildah).

    from pytest_hermetic.build import build
    image = build("Containerfile", "context/", tags=["app:1"], progress=print)

One concern a module: `parser` (the grammar), `words` (variable expansion),
`instructions` (what metadata instructions do to the config), `ignore`
(.containerignore), `context` (the build context, safely), `copying` (trees
copied with the *at calls), `transfer` (COPY's halves that run inside a
container), `cache` (the layer cache), `steps` (one step's container),
`image` (the epoch, the names), `executor` (stages and steps).
docs/build.md says what is supported and how the cache and reproducibility work.
"""

from __future__ import annotations

import os

from ..errors import BuildError
from ..images.store import Image, Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Iterable, Mapping


def build(containerfile: str | None, context: str, *, tags: Iterable[str] = (),
          build_args: Mapping[str, str] | None = None, target: str | None = None, no_cache: bool = False,
          net: bool | str = False, progress: Callable[[str], None] | None = None, store: Store | None = None,
          epoch: int | None = None) -> Image:
    """Build `containerfile` (default: `Containerfile`, else `Dockerfile`, in `context`) and tag it.

    `progress` gets every line of output (steps, RUN output, notes); a failure
    raises `BuildError` whose `output` is the failing step's last lines.
    `epoch` (seconds) is the time written into layers and the config:
    default `$SOURCE_DATE_EPOCH`, else 0, so a rebuild gives the same image id.
    """
    from .context import Context
    from .executor import Builder
    from .image import epoch_from_env
    from .parser import parse

    path = find_containerfile(containerfile, context)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise BuildError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise BuildError(f"{path} is not UTF-8 text") from None
    say = progress or (lambda _line: None)
    source = os.path.basename(path)
    parsed = parse(text, source)
    for note in parsed.notes:
        say(note)
    ctx = Context(context, path)
    try:
        builder = Builder(store or Store(), parsed, source, ctx, build_args=dict(build_args or {}), target=target,
                          no_cache=no_cache, net=net, progress=say,
                          epoch=epoch if epoch is not None else epoch_from_env())
        return builder.run(list(tags))
    finally:
        ctx.close()


def find_containerfile(containerfile: str | None, context: str) -> str:
    if containerfile:
        if not os.path.isfile(containerfile):
            raise BuildError(f"{containerfile}: no such file (give the Containerfile with -f)")
        return containerfile
    for name in ("Containerfile", "Dockerfile"):
        path = os.path.join(context, name)
        if os.path.isfile(path):
            return path
    raise BuildError(f"no Containerfile or Dockerfile in {context}; give one with -f FILE")


__all__ = ["BuildError", "build", "find_containerfile"]
