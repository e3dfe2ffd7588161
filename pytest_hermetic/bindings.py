"""Which host paths a forked Python needs inside a container of image X.

A test (or any function run with `Container.start(target=...)`) keeps
running the parent's interpreter after the fork, so inside the container it
needs the interpreter's files, the shared libraries it and its extension
modules load, the dynamic loader and the code it runs, at the same paths as
on the host.  `volumes_for` adds them to a `Spec`'s volumes where the image
lacks them.  Engine logic only: nothing here knows about pytest.
"""

from __future__ import annotations

import functools
import os
import struct
import sys
import sysconfig

from .images.erofs_reader import image_has
from .images.resolve import resolve_or_pull
from .errors import StoreError
from .images.store import Image, Store
from .spec import Spec, Volume

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it costs start-up
    from typing import Iterable

# Mounted fresh in every container: host paths below them are hidden.
_FRESH_MOUNTS = ("/tmp", "/dev", "/proc", "/sys")


def image_for(spec: Spec, store: Store) -> Image | None:
    """`spec.image` resolved in `store`, for `volumes_for` and then the
    `Container` (so once per container); None for `host`, which needs no look."""
    return None if spec.image == "host" else resolve_or_pull(store, spec.image)


def volumes_for(spec: Spec, code: Iterable[str], writable: Iterable[str] = (), *,
                store: Store | None = None, image: Image | None = None) -> list[Volume]:
    """`spec.volumes` plus what a forked Python needs at its host paths.

    `code`: the folders the code comes from (a test tree, the working
    folder): bound writable with their writes kept in an overlay that
    vanishes, as in `host`.  `writable`: folders bound read-write (e.g.
    pytest's basetemp, so `tmp_path` behaves as without isolation).  In
    `host` the tree and the interpreter are there already (bound again only
    where a fresh mount would hide them).  In any other image the Python
    must keep working even when the image has no Python or libc of its own:
    the interpreter's library folders, the shared libraries it and its
    extension modules load (also those imported only after the fork), the
    dynamic loader and the executable are bound read-only wherever the
    image has nothing at that path.  Parents come before what is mounted
    inside them.  `image`: `spec.image` as `image_for` resolved it in `store`
    (else it is resolved here).
    """
    writable = list(writable)
    code = {os.path.realpath(p) for p in code}
    executable_hops: list[Volume] = []
    if spec.image == "host":
        wanted = {p for p in code | _python_paths() if any(p == h or p.startswith(h + "/") for h in _FRESH_MOUNTS)}
    else:
        store = store or Store()
        image = image or image_for(spec, store)
        assert image is not None
        wanted = {p for p in code | _python_paths() | _library_paths() if not _image_has(store, image, p)}
        # Each hop of the interpreter's symlink chain (venv/bin/python ->
        # /usr/bin/python3 -> python3.11), so `sys.executable` runs inside.
        real = os.path.realpath(sys.executable)
        for hop in _symlink_hops(sys.executable):
            if hop != real and not _image_has(store, image, hop):
                executable_hops.append(Volume(real, hop, True))
    chosen: list[str] = []
    for path in sorted(wanted):
        if path != "/" and os.path.exists(path) and not any(path.startswith(c.rstrip("/") + "/") for c in chosen):
            chosen.append(path)
    volumes = list(spec.volumes)
    taken = {v.target for v in volumes}
    for path in chosen:
        if path not in taken:
            # The code is writable and its writes vanish, as in `host`;
            # the interpreter's own files are read-only.
            volumes.append(Volume(path, path, readonly=path not in code, overlay=path in code))
    for path in writable:
        if path not in taken:
            volumes.append(Volume(path, path))
    volumes += [v for v in executable_hops if not any(v.target.startswith(c.rstrip("/") + "/") for c in chosen)]
    return sorted(volumes, key=lambda v: v.target.count("/"))  # parents before what is mounted inside them


def _symlink_hops(path: str) -> list[str]:
    hops = []
    for _ in range(16):
        hops.append(path)
        if not os.path.islink(path):
            break
        path = os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(path)))
    return hops


@functools.lru_cache(maxsize=1)
def _python_paths() -> frozenset[str]:
    """The interpreter's prefixes, executable, library folders and sys.path."""
    paths = {sys.prefix, sys.exec_prefix, os.path.realpath(sys.executable)}
    paths.update(v for k, v in sysconfig.get_paths().items() if k in ("stdlib", "platstdlib", "purelib", "platlib"))
    paths.update(p for p in sys.path if p and os.path.isdir(p))
    return frozenset(os.path.realpath(p) for p in paths if os.path.exists(p))


def _library_paths() -> frozenset[str]:
    """Folders of the shared objects mapped now, the platform's library
    folders (for extension modules imported after the fork) and the loader."""
    names = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                name = line.split(None, 5)[-1].strip()
                if name.startswith("/") and ".so" in name:
                    names.add(name)
    except OSError:
        pass
    return _library_folders(frozenset(names))


@functools.lru_cache(maxsize=4)
def _library_folders(names: frozenset[str]) -> frozenset[str]:
    """`_library_paths` for this set of mapped objects: worked out once per
    set, as pytest's stays the same from one test to the next (a test in an
    image paid ~5 ms of pytest's time for it here, a `realpath` of each
    object, a stat per component), and a new extension a fixture loads
    makes a new set."""
    paths = {os.path.dirname(os.path.realpath(name)) for name in names}
    multiarch = sysconfig.get_config_var("MULTIARCH")
    if multiarch:
        paths.update(os.path.realpath(f"{base}/{multiarch}") for base in ("/lib", "/usr/lib"))
    interpreter = _elf_interpreter(os.path.realpath(sys.executable))
    if interpreter:
        paths.add(interpreter)  # by the path the binaries name, e.g. /lib64/ld-linux-x86-64.so.2
    return frozenset(p for p in paths if os.path.exists(p))


def _elf_interpreter(path: str) -> str | None:
    """PT_INTERP of an ELF executable (the dynamic loader it names)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only
                return None
            phoff, = struct.unpack_from("<Q", head, 32)
            phentsize, phnum = struct.unpack_from("<HH", head, 54)
            for i in range(phnum):
                f.seek(phoff + i * phentsize)
                kind, _flags, offset, _vaddr, _paddr, size = struct.unpack("<IIQQQQ", f.read(40))
                if kind == 3:  # PT_INTERP
                    f.seek(offset)
                    return f.read(size).rstrip(b"\0").decode()
    except (OSError, struct.error, UnicodeDecodeError):
        return None
    return None


# (store root, image layers, path) -> whether the layers hold the path: a
# layer never changes once stored (its id is its content's digest), and
# each look is a stat or a read of an EROFS image's directories.
_HAS: dict[tuple[str, tuple[str, ...], str], bool] = {}
_HAS_KEPT = 4096


def _image_has(store: Store, image: Image, path: str) -> bool:
    key = (store.root, tuple(image.layers), path)
    found = _HAS.get(key)
    if found is None:
        found = _HAS[key] = _layers_have(store, image, path)
        if len(_HAS) > _HAS_KEPT:
            del _HAS[next(iter(_HAS))]  # (the oldest)
    return found


def _layers_have(store: Store, image: Image, path: str) -> bool:
    """Raises StoreError, caching nothing, for a layer gone from the store
    (`rmi` and `gc` between the image's lookup and `Store.use`): "no" would
    be a wrong answer kept for the image's next pull in this process."""
    for diff_id in image.layers:
        layer_image = store.layer_image(diff_id)
        try:
            if layer_image is None:
                if os.path.lexists(store.layer_root(diff_id) + path):
                    return True
                if not store.has_layer(diff_id):
                    raise FileNotFoundError(store.layer_path(diff_id))
            elif image_has(layer_image, path):  # a layer kept as an EROFS image: read, not mounted
                return True
        except FileNotFoundError:
            raise StoreError(f"layer {diff_id} of {image.familiar} left the store {store.root} while in use "
                             "(hermetic rmi and gc); fix: pull or import the image again") from None
    return False
