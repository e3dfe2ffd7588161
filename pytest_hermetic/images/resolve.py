"""An image by reference, pulled on first use: what `Container.start`, the bindings and the CLI call.

`Store.resolve` stays local (the store does no network I/O); this is the one
place that turns "not in the store" into a pull for registry references
(HERMETIC_OFFLINE: from loopback registries only, see `pull`).
"""

from __future__ import annotations

from ..errors import HermeticError, ImageNotFound
from . import reference as refs
from .store import Image, Store


def resolve_or_pull(store: Store, text: str, platform: str | None = None) -> Image:
    """`store.resolve(text)`, or for a registry reference not in the store, `pull` it.
    With `platform` (`linux/arm64/v8`), a local image of another platform
    counts as missing (pulled again for `platform`, as `docker run --platform` does)."""
    registry = refs.parse(text).transport == "registry"
    mismatch = None
    try:
        image = store.resolve(text)
    except ImageNotFound:
        if not registry:
            raise
    else:
        if platform is None:
            return image
        from . import platforms

        wanted = platforms.parse(platform)
        got = platforms.host() if image.is_host else platforms.of_config(store.read_json(image.id))
        if platforms.matches(got, wanted):
            return image
        mismatch = f"{text} in the local store is a {platforms.format(got)} image, not {platforms.format(wanted)}"
        if not registry:
            raise ImageNotFound(mismatch)
    from .pull import pull  # http.client, threading: kept off the start of a container whose image is local

    try:
        return pull(store, text, platform=platform)
    except HermeticError as exc:
        if mismatch is None:
            raise
        raise ImageNotFound(f"{mismatch}, and pulling that platform failed: {exc}") from None
