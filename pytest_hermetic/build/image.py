"""The built image: the time written into it and the names it gets.

The epoch is `SOURCE_DATE_EPOCH`, else 0 (1970-01-01T00:00:00Z): every time
the build writes (layers, the config's `created`, history) is it, so the
same Containerfile and context give the same image id (docs/build.md).
All names are tagged together, only once the whole build is done.
"""

from __future__ import annotations

import os
import time

from .._record import record
from ..errors import BuildError
from ..images import reference as refs
from ..images.commit import target_name
from ..images.store import Image, Store

DEFAULT_EPOCH = 0  # SOURCE_DATE_EPOCH when it is not set: 1970-01-01T00:00:00Z


@record
class State:
    """An image being built: what the next step starts from."""

    base: str | None  # "host" when stacked on the host's root
    layers: list
    config: dict
    history: list
    key: str  # the cache key of the last step


def epoch_from_env() -> int:
    text = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not text:
        return DEFAULT_EPOCH
    if not text.isdigit():
        raise BuildError(f"SOURCE_DATE_EPOCH={text!r}: not a number of seconds since 1970")
    return int(text)


def write_image(store: Store, state: State, tags: list[str], epoch: int) -> Image:
    """The final image under every name in `tags` (at least one), all tagged only now."""
    names = [target_name(tag) for tag in tags]
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    image = store.put_image(names[0], list(state.layers), state.config, base=state.base, history=state.history,
                            created=created)
    if len(names) > 1:
        digest = store.manifest_digest(names[0])
        for name in names[1:]:
            store.tag(name, digest)
    return image


def default_tag(state_key: str) -> str:
    return refs.parse(f"localhost/hermetic-build:{state_key.split(':')[-1][:12]}").name


__all__ = ["DEFAULT_EPOCH", "State", "default_tag", "epoch_from_env", "target_name", "write_image"]
