"""`pull`: an image from a registry into the store, verified, in one pass per layer.

Each missing layer is fetched by its own thread and unpacked *while it
downloads* (network -> sha256 of the blob -> decompress -> sha256 of the tar
-> safe extraction into staging), so no layer is read twice.  Nothing is
visible in the store until the blob's digest and size and the layer's
diff_id all match: the blob file is then renamed into `blobs/`, the unpacked
layer into `layers/`, and the name is tagged last.

Downloads resume: the bytes are kept in `tmp/<hex>.partial`, and a later pull
(after a kill, or a dropped connection within this one) replays them and asks
for the rest with a `Range` request.  A per-blob flock lets xdist workers
pulling the same image share the work: one fetches, the others wait and find
the layer unpacked.

A registry that cannot be reached, or stops answering, is one error that
says what the store lacks, which host was tried and why, and the ways out
(a mirror, `hermetic import`, HERMETIC_OFFLINE); while a call has waited a
second without a byte, the progress output says "waiting for HOST".

One concern, one pull from the manifest to the tag, with its verification
and its failures (the HTTP is in `registry`, the layer files in `ingest`).
"""

from __future__ import annotations

import http.client
import os
import re
import sys
import threading
import time
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

    from .limits import Budget

from ..errors import (DigestMismatch, ImageNotFound, ImageReferenceError, LayerError, RegistryAuthError,
                      RegistryDigestMismatch, RegistryError, RegistryTimeout, RegistryUnreachable, StoreError)
from . import config, limits, platforms
from . import reference as refs
from . import schema
from .digest import Hashed, sha256_digest
from .connections import TIMEOUT_ENV
from .progress import Watch, WaitingLines
from .registry import DOCKER_SCHEMA1, INDEX_TYPES, MANIFEST_TYPES, MAX_MANIFEST, Registry, api_host
from .store import Image, Store

LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
}
MAX_CONFIG = 32 << 20
WORKERS = 4
_REPORT_STEP = 1 << 20


def pull(store: Store, reference: str, *, platform: str | None = None,
         progress: Callable[[str, int, int | None], None] | None = None, quiet: bool = False,
         waiting: Callable[[str, float], None] | None = None) -> Image:
    """Pull `reference` (`busybox:1`, `HOST:PORT/app@sha256:...`) into `store`; return the image.

    `progress(label, done_bytes, total_bytes_or_None)` is called as layers
    download (label: the layer's short digest), from one thread at a time.
    Without it, a progress display goes to stderr when stderr is a terminal
    and `quiet` is false.  `waiting(host, seconds)` is called (about four
    times a second) while a registry call has had no byte for a second or
    more; without it and without `progress`, a display or a line on stderr
    says so unless `quiet`.  `platform` (`linux/arm64/v8`) picks from a
    multi-platform index; default: this machine's.
    """
    return Puller(store, platform=platform, progress=progress, quiet=quiet, waiting=waiting).pull(reference)


class Puller:
    """One pull; keeps counts for the command line's summary."""

    def __init__(self, store: Store, *, platform: str | None = None,
                 progress: Callable[[str, int, int | None], None] | None = None, quiet: bool = False,
                 waiting: Callable[[str, float], None] | None = None) -> None:
        self.store = store
        self.platform = platform
        self.quiet = quiet
        self._progress = progress
        self._waiting = waiting
        self._lock = threading.Lock()
        self.layers = 0
        self.fetched = 0  # layers downloaded by this pull
        self.bytes = 0
        self.manifest_digest = ""
        self.seconds = 0.0
        self._budget: Budget | None = None  # what the image may unpack to (`limits`), set once the manifest is read

    def report(self, label: str, done: int, total: int | None) -> None:
        if self._progress is not None:
            with self._lock:
                self._progress(label, done, total)

    def pull(self, reference: str) -> Image:
        ref = refs.parse(reference)
        if ref.transport != "registry":
            raise ImageReferenceError(f"cannot pull {reference!r}: only registry references are pulled "
                                      "(NAME[:TAG], HOST[:PORT]/NAME[:TAG], NAME@sha256:...); use `hermetic import` for transports")
        display = None
        if self._progress is None and not self.quiet and _stderr_is_tty():
            from .progress import TerminalProgress  # only on a terminal

            display = TerminalProgress(sys.stderr, ref.familiar)
            self._progress = display.update
            self._waiting = self._waiting or display.waiting
        if self._waiting is None and self._progress is None and not self.quiet:
            self._waiting = WaitingLines()
        watch = Watch(self._waiting, self._lock) if self._waiting is not None else None
        start = time.monotonic()
        try:
            return self._pull(ref)
        except (OSError, LayerError) as exc:
            from .ingest import disk_full  # (as in _unpack: ingest's imports only when needed)

            if disk_full(exc):
                raise StoreError(f"no space left on the store's disk ({self.store.root}) while pulling {ref.familiar}: "
                                 "nothing was stored; free space (`hermetic gc`, `hermetic rmi`) and pull again") from None
            raise
        finally:
            self.seconds = time.monotonic() - start
            if watch is not None:
                watch.stop()
            if display is not None:
                display.close()

    # -- manifest -------------------------------------------------------------------

    def _pull(self, ref: refs.Reference) -> Image:
        wanted = platforms.parse(self.platform) if self.platform else platforms.host()
        source, manifest_bytes = self._manifest(ref, wanted)
        registry, repository = source
        manifest = _load(manifest_bytes, schema.MANIFEST, f"{ref.familiar}: the manifest", MAX_MANIFEST)
        config_desc = manifest["config"]
        layer_descs = list(manifest.get("layers") or [])
        config_bytes = self._small_blob(registry, repository, config_desc, MAX_CONFIG)
        config = _load(config_bytes, schema.CONFIG, f"{ref.familiar}: the image config", MAX_CONFIG)
        if self.platform:
            got = platforms.of_config(config)
            if not platforms.matches(got, wanted):
                raise ImageNotFound(f"{ref.familiar} is {platforms.format(got)}, not {platforms.format(wanted)}")
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        if len(diff_ids) != len(layer_descs):
            raise RegistryError(f"{ref.familiar}: the manifest has {len(layer_descs)} layers but the config {len(diff_ids)} diff_ids")
        for desc in layer_descs:
            if desc.get("mediaType") not in LAYER_TYPES:
                raise RegistryError(f"{ref.familiar}: layer {desc.get('digest')} has media type {desc.get('mediaType')!r}, "
                                    "which is not a Linux layer tar (foreign or Windows layers are not pulled)")
            _check_digest(desc.get("digest", ""))
        self.layers = len(layer_descs)
        self._budget = limits.image_budget(sum(int(d.get("size") or 0) for d in layer_descs), ref.familiar)
        self.store.clear_dead_staging()  # a killed pull's (its resumable downloads stay)
        manifest_digest = sha256_digest(manifest_bytes)
        # What this pull brings is recorded before any of it lands: gc keeps
        # it, and never has to wait for a download.
        with self.store.keeping("pull", image=ref.familiar, layers=diff_ids,
                                blobs=[d["digest"] for d in layer_descs] + [config_desc["digest"], manifest_digest]):
            jobs = [(desc, diff_id) for desc, diff_id in zip(layer_descs, diff_ids) if not self.store.has_layer(diff_id)]
            for desc, diff_id in zip(layer_descs, diff_ids):
                if self.store.has_layer(diff_id):
                    self.report(desc["digest"][7:19], int(desc.get("size") or 0), int(desc.get("size") or 0))
            if jobs:
                self._fetch_all(registry, repository, jobs)
            self.store.put_blob_bytes(config_bytes)
            self.manifest_digest = self.store.put_blob_bytes(manifest_bytes)
            self.store.tag(ref.name, self.manifest_digest)
            return self.store.tagged(ref.name, self.manifest_digest)

    def _sources(self, ref: refs.Reference) -> list[tuple[Registry, str]]:
        """(registry, repository) to try in order: mirrors, then the registry itself."""
        found = []
        for mirror in config.mirrors(ref.registry):
            host, _, prefix = mirror.partition("/")
            found.append((Registry(host), f"{prefix.strip('/')}/{ref.repository}" if prefix else ref.repository))
        found.append((Registry(ref.registry), ref.repository))
        if config.offline():
            found = [s for s in found if config.is_loopback(s[0].registry)]
            if not found:  # no connection is attempted
                raise ImageNotFound(f"{self._in_store(ref)} and HERMETIC_OFFLINE is set, so {_registry_words(ref.registry)} "
                                    f"is not tried; ways out: a loopback mirror (HERMETIC_REGISTRY_MIRRORS={ref.registry}="
                                    "127.0.0.1:PORT), `hermetic import` (oci:, docker-archive:, tar:, dir:), or unset HERMETIC_OFFLINE")
        return found

    def _in_store(self, ref: refs.Reference) -> str:
        if ref.name in self.store.read_refs():
            return f"the local store ({self.store.root}) keeps its copy of {ref.familiar}, not updated"
        return f"image {ref.familiar!r} is not in the local store ({self.store.root})"

    def _unreachable(self, ref: refs.Reference, failures: list[tuple[Registry, RegistryUnreachable]]) -> RegistryUnreachable:
        """What a pull whose every source failed to answer says: the store, the hosts and why, the ways out."""
        registry, last = failures[-1]
        mirrors = [f"mirror {r.registry}: {e.reason}" for r, e in failures if r.registry != ref.registry]
        if registry.registry == ref.registry:
            text = str(last) + (f" (after {'; '.join(mirrors)})" if mirrors else "")
            ways = (f"ways out: a mirror (HERMETIC_REGISTRY_MIRRORS={ref.registry}=HOST:PORT), `hermetic import`, "
                    "or HERMETIC_OFFLINE=1 to never try a registry")
        else:  # HERMETIC_OFFLINE left only loopback mirrors
            text = f"cannot reach {'; '.join(mirrors)}; HERMETIC_OFFLINE is set, so {_registry_words(ref.registry)} is not tried"
            ways = "ways out: a mirror that answers, `hermetic import`, or unset HERMETIC_OFFLINE"
        return type(last)(f"{text}; {self._in_store(ref)}; {ways}", reason=last.reason, plain_http=last.plain_http)

    def _manifest(self, ref: refs.Reference, wanted: dict) -> tuple[tuple[Registry, str], bytes]:
        sources = self._sources(ref)
        failures: list[tuple[Registry, RegistryUnreachable]] = []
        for i, (registry, repository) in enumerate(sources):
            last = i == len(sources) - 1
            try:
                body, media_type, header = registry.get_manifest(repository, ref.digest or ref.tag or refs.DEFAULT_TAG)
                _verify_manifest(body, ref.digest, header, ref.familiar)
                if media_type in DOCKER_SCHEMA1:
                    raise RegistryError(f"{ref.familiar} is a Docker schema 1 image, which registries stopped serving in 2019; "
                                        "push it again with a current client")
                what = f"{ref.familiar}: the manifest"
                if media_type in INDEX_TYPES or (not media_type and "manifests" in _load(body, schema.DOCUMENT, what, MAX_MANIFEST)):
                    index = _load(body, schema.INDEX, f"{ref.familiar}: the index", MAX_MANIFEST)
                    chosen = platforms.select(index["manifests"], wanted, ref.familiar)
                    body, media_type, header = registry.get_manifest(repository, chosen["digest"])
                    _verify_manifest(body, chosen["digest"], header, ref.familiar)
                if media_type not in MANIFEST_TYPES and "layers" not in _load(body, schema.DOCUMENT, what, MAX_MANIFEST):
                    raise RegistryError(f"{ref.familiar}: unsupported manifest media type {media_type[:80]!r}")
                return (registry, repository), body
            except RegistryUnreachable as exc:
                failures.append((registry, exc))
                if last:
                    raise self._unreachable(ref, failures) from None
            except ImageNotFound as exc:
                if last:
                    raise ImageNotFound(f"{ref.familiar}: not found in registry {registry.registry} ({exc})") from None
            except (RegistryAuthError, DigestMismatch):
                if last:
                    raise
            except RegistryError:
                if last:
                    raise
        raise AssertionError("unreachable")

    def _small_blob(self, registry: Registry, repository: str, desc: dict, limit: int) -> bytes:
        digest, size = desc.get("digest", ""), int(desc.get("size") or 0)
        _check_digest(digest)
        if size > limit:
            raise RegistryError(f"blob {digest} from {registry.registry}/{repository}: the image config is larger than "
                                f"{limit >> 20} MiB (its descriptor says {size} bytes); refusing it (a real one is a few "
                                "KiB); nothing was stored")
        path = self.store.blob_path(digest)
        if os.path.exists(path):
            with open(path, "rb") as f:
                return f.read()
        response = registry.open_blob(repository, digest)
        try:
            data = response.read(limit + 1)
            if len(data) > limit:
                response.close()  # the rest is never read
                raise RegistryError(f"blob {digest} from {registry.registry}/{repository}: the image config is larger than "
                                    f"{limit >> 20} MiB; refusing it (a real one is a few KiB); nothing was stored")
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            registry.close()
            raise registry.failure(exc, f"GET blob {digest}") from None
        got = sha256_digest(data)
        if got != digest or len(data) != size:
            raise RegistryDigestMismatch(f"digest mismatch for blob {digest} from {registry.registry}/{repository}: "
                                 f"got {got} ({len(data)} bytes, expected {size}); nothing was stored")
        return data

    # -- layers ---------------------------------------------------------------------

    def _fetch_all(self, registry: Registry, repository: str, jobs: list[tuple[dict, str]]) -> None:
        if len(jobs) == 1:
            self._layer(registry, repository, *jobs[0])
            return
        from concurrent.futures import ThreadPoolExecutor  # ~20 ms: only for two layers or more

        with ThreadPoolExecutor(max_workers=min(WORKERS, len(jobs)), thread_name_prefix="hermetic-pull") as pool:
            futures = [pool.submit(self._layer, registry, repository, desc, diff_id) for desc, diff_id in jobs]
            errors = []
            for future in futures:
                try:
                    future.result()
                except BaseException as exc:  # the first error wins; the others finish or fail on their own
                    errors.append(exc)
            if errors:
                raise errors[0]

    def _layer(self, registry: Registry, repository: str, desc: dict, diff_id: str) -> None:
        digest, size = desc["digest"], int(desc.get("size") or 0)
        label = digest[7:19]
        with self.store.blob_lock(digest):
            if self.store.has_layer(diff_id):  # another process did it while we waited
                self.report(label, size, size)
                return
            partial = os.path.join(self.store.root, "tmp", digest[7:] + ".partial")
            for attempt in (0, 1):
                resumed = os.path.exists(partial) and os.path.getsize(partial) > 0
                try:
                    self._unpack(registry, repository, desc, diff_id, partial)
                    with self._lock:
                        self.fetched += 1
                        self.bytes += size
                    return
                except (DigestMismatch, LayerError, OSError) as exc:
                    from .ingest import disk_full  # (as in _unpack: ingest's imports only when needed)

                    if isinstance(exc, OSError) and not disk_full(exc):
                        raise  # kept for a later resume
                    _unlink(partial)  # wrong bytes are never resumed from; a full disk needs the space back
                    if not (resumed and attempt == 0) or disk_full(exc):
                        raise
            raise AssertionError("unreachable")

    def _unpack(self, registry: Registry, repository: str, desc: dict, diff_id: str, partial: str) -> None:
        from .ingest import Source, ingest_layer  # tarfile & co. (~16 ms): only when a layer is fetched

        digest, size = desc["digest"], int(desc.get("size") or 0)
        blob = self.store.blob_path(digest)
        if os.path.exists(blob):  # fetched earlier, never unpacked (a killed pull)
            source: Source | _BlobReader = Source(open(blob, "rb"), partial, digest=digest, size=size, name=f"blob {digest}")
        else:
            source = _BlobReader(registry, repository, digest, size, partial,
                                 lambda done: self.report(digest[7:19], done, size))
        ingest_layer(self.store, source, diff_id=diff_id, media_type=desc.get("mediaType"),  # type: ignore[arg-type]
                     image=self._budget)


class _BlobReader(Hashed):
    """The blob's bytes: first what `partial` holds, then the rest from the registry.

    Hashes and counts everything that passes and appends what comes from
    the network to `partial`; a dropped connection is picked up with a
    Range request, up to three times.
    """

    def __init__(self, registry: Registry, repository: str, digest: str, size: int, partial: str,
                 report: Callable[[int], None]) -> None:
        super().__init__()
        self.registry, self.repository, self.blob_digest = registry, repository, digest
        self.expected_size = size  # as ingest.Source names it
        self.name = f"blob {digest}"  # as ingest.Source names it too
        self._report = report
        self._reported = 0
        self._response: http.client.HTTPResponse | None = None
        self._retries = 3
        self.tmp_path = partial
        self._out = open(partial, "a+b")
        have = self._out.tell()
        if have > size:
            self._out.truncate(0)
            have = 0
        self._replay = open(partial, "rb") if have else None
        self._replay_left = have

    def __enter__(self) -> _BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        for f in (self._out, self._replay):
            if f is not None:
                f.close()
        if self._response is not None:
            self._response.close()
            self.registry.close()  # the connection was left mid-body

    def read(self, n: int = -1) -> bytes:
        n = 1 << 20 if n is None or n < 0 else n
        if self._replay_left:
            assert self._replay is not None
            data = self._replay.read(min(n, self._replay_left))
            self._replay_left -= len(data)
            return self._count(data)
        while True:
            if self.size >= self.expected_size:
                # a registry that sends more than the descriptor says is wrong
                if self._response is not None and self._response.read(1):
                    raise RegistryDigestMismatch(f"digest mismatch for blob {self.blob_digest}: more than the {self.expected_size} bytes "
                                         f"its descriptor gives; nothing was stored")
                return b""
            try:
                if self._response is None:
                    self._response = self._open()
                data = self._response.read(min(n, self.expected_size - self.size))
            except TimeoutError:
                self._drop()  # no retry: each would wait as long again; what came is kept to resume from
                raise RegistryTimeout(
                    f"{self.registry.where()} did not answer within {self.registry.read_timeout:g} s during blob "
                    f"{self.blob_digest} ({self.size} of {self.expected_size} bytes came); nothing was stored, pull again "
                    f"to resume, or set {TIMEOUT_ENV}=SECONDS to wait longer") from None
            except (OSError, http.client.HTTPException) as exc:
                data = b""
                self._drop()
                if self._retries == 0:
                    raise RegistryUnreachable(
                        f"registry {self.registry.registry}: the download of blob {self.blob_digest} broke off at "
                        f"{self.size} of {self.expected_size} bytes ({str(exc) or type(exc).__name__}); pull again to resume") from None
            if data:
                self._out.write(data)
                return self._count(data)
            # An early end.  Short of the response's own Content-Length: the connection
            # broke (resumable); a complete response short of the descriptor: a wrong blob.
            broke = self._response is not None and bool(self._response.length)
            self._drop()
            if self._retries == 0 and broke:
                raise RegistryUnreachable(
                    f"registry {self.registry.registry}: the download of blob {self.blob_digest} broke off at "
                    f"{self.size} of {self.expected_size} bytes; pull again to resume")
            if self._retries == 0:
                raise RegistryDigestMismatch(f"digest mismatch for blob {self.blob_digest}: the registry sent {self.size} bytes, "
                                     f"the descriptor says {self.expected_size}; nothing was stored")
            self._retries -= 1

    def _open(self) -> http.client.HTTPResponse:
        response = self.registry.open_blob(self.repository, self.blob_digest, self.size)
        if response.status == 200 and self.size:
            skip = self.size  # the registry ignored Range: skip what we have
            while skip:
                chunk = response.read(min(skip, 1 << 20))
                if not chunk:
                    break
                skip -= len(chunk)
        return response

    def _drop(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None
            self.registry.close()

    def _count(self, data: bytes) -> bytes:
        super()._count(data)
        if self.size - self._reported >= _REPORT_STEP or self.size == self.expected_size:
            self._reported = self.size
            self._report(self.size)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    def verify(self) -> None:
        self._out.flush()
        got = self.digest()
        if self.size != self.expected_size or got != self.blob_digest:
            raise RegistryDigestMismatch(f"digest mismatch for blob {self.blob_digest} from {self.registry.registry}/{self.repository}: "
                                 f"got {got} ({self.size} bytes, expected {self.expected_size}); nothing was stored")


def _registry_words(registry: str) -> str:
    host = api_host(registry)
    return f"registry {registry}" + (f" ({host})" if host != registry else "")


def _verify_manifest(body: bytes, expected: str | None, header: str | None, name: str) -> None:
    got = sha256_digest(body)
    for want in (expected, header if header and header.startswith("sha256:") else None):
        if want and want != got:
            raise RegistryDigestMismatch(f"digest mismatch for the manifest of {name}: expected {want}, got {got}; nothing was stored")


def _check_digest(digest: str) -> None:
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest or ""):
        raise RegistryError(f"unsupported or malformed digest {digest!r} (only sha256 is accepted)")


def _load(data: bytes, check: schema.Check, what: str, limit: int) -> dict:
    """A document from the registry, bounded and type-checked (`schema`)."""
    return schema.load(data, check, what, RegistryError, limit=limit)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False
