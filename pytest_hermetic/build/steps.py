"""One build step as a container: RUN's command, or COPY's callable (`transfer`).

The container runs on the image so far (an `Image` of the build's layers and
config, never tagged), with no network unless the build gives one, its
output streamed to the build's progress line by line.  Its read-write layer
(the overlay's upper folder) becomes the step's layer through the same
writer as `commit`, every time later than the build's epoch written as the
epoch, so the same step gives the same bytes; nothing changed, no layer.
"""

from __future__ import annotations

import collections
import os
import threading
import time

from .._fs import rmtree
from ..container import Container
from ..errors import BuildError, HermeticError
from ..images import layers
from ..images.store import Image, Keep, Store
from ..runtime.namespaces import default_user_namespace
from ..spec import Spec, Volume
from . import cache, transfer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

TAIL_LINES = 20  # of a failing step's output, kept for its BuildError


def run_step(store: Store, keep: Keep, image: Image, where: str, *, epoch: int, say: Callable[[str], None],
             argv: list[str] | None = None, target: Callable[[], int] | None = None,
             env: dict[str, str] | None = None, net: bool | str = False, user: str | None = None,
             volumes: list[Volume] | None = None, commit: bool = True) -> str:
    """Run the step; its layer's diff_id in the store (recorded in `keep`), or `cache.EMPTY`."""
    started = time.monotonic()
    try:
        spec = Spec.build(image.name, argv, env=env or {}, workdir=image.config.get("WorkingDir") or "/",
                          user=user, net=net, volumes=list(volumes or []))
    except HermeticError as exc:
        raise BuildError(f"{where}: {exc}") from None
    container = Container(spec, store=store, image=image)
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    reader = threading.Thread(target=_read_output, args=(read_fd, tail, say), daemon=True)
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        reader.start()
        if target is not None:  # a callable keeps the caller's stdio (the plugin's tests do): give it ours
            target = _writing_to(write_fd, target)
        try:
            container.start(target, stdin=null, stdout=write_fd, stderr=write_fd)
        except HermeticError as exc:
            raise BuildError(f"{where}: the step's container did not start: {exc}") from None
        finally:
            os.close(write_fd)
            write_fd = -1
        result = container.wait()
        reader.join()
        assert result is not None
        if result.exit_code != 0:
            output = "\n".join(tail)
            last = next((line for line in reversed(tail) if line.strip()), "")
            shown = f"; its last line of output: {last.strip()!r}" if last else " with no output"
            raise BuildError(f"{where} failed: {result.reason or f'exit status {result.exit_code}'}{shown}",
                             output=output)
        diff_id = _commit(store, keep, os.path.join(container.rw_dir, "upper"), container.userns, epoch) \
            if commit and container.rw_dir is not None else cache.EMPTY
    finally:
        if write_fd >= 0:
            os.close(write_fd)
        os.close(null)
        container.remove()
        reader.join(timeout=5)
    if commit:
        say(f"--> {diff_id[7:19] if diff_id != cache.EMPTY else 'no changes'} ({time.monotonic() - started:.2f} s)")
    return diff_id


def _writing_to(fd: int, target: Callable[[], int]) -> Callable[[], int]:
    def run() -> int:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        return target()
    return run


def _read_output(fd: int, tail: collections.deque, say: Callable[[str], None]) -> None:
    with os.fdopen(fd, "rb") as stream:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            tail.append(line)
            say(line)


def _commit(store: Store, keep: Keep, upper: str, userns: bool, epoch: int) -> str:
    mount = transfer.MOUNT.lstrip("/")
    prefix = layers.OVERLAY_USER if userns else layers.OVERLAY_TRUSTED
    if not [n for n in os.listdir(upper) if n != mount] and not _opaque(upper, prefix):
        return cache.EMPTY
    staging = store.tempdir("build-")
    try:
        tar_path = os.path.join(staging, "layer.tar")
        with open(tar_path, "wb") as out:
            digests = layers.write_layer_from_upper(upper, out, xattr_prefix=prefix, exclude=[mount],
                                                    mtime_clamp=epoch, owners=_inside_ids() if userns else None)
        diff_id, _ = store.add_layer_tar(tar_path, digests.diff_id, keep=keep)
    finally:
        rmtree(staging)
    return diff_id


def _inside_ids() -> Callable[[int, int], tuple[int, int]]:
    """Host ids -> the rootless container's ids (the caller is 0 inside, its subordinate range 1...):
    the layer says what the container saw, never the building user's host ids."""
    namespace = default_user_namespace()

    def inside(host_id: int, maps: list) -> int:
        for m in maps:
            if m.outside <= host_id < m.outside + m.count:
                return m.inside + host_id - m.outside
        return 65534  # unmapped: the kernel's overflow id, as the container saw it

    return lambda uid, gid: (inside(uid, namespace.uid_maps), inside(gid, namespace.gid_maps))


def _opaque(upper: str, prefix: str) -> bool:
    try:
        return os.getxattr(upper, prefix + "opaque") == b"y"
    except OSError:
        return False
