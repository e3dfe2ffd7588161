"""HTTP connections to registries: timeouts, "waiting for HOST", the cause of a failure in words.

Every connection has a connect timeout (the DNS lookup and the TLS handshake
included: the system resolver's own can be longer) and then a read timeout
(no byte for that long): `HERMETIC_REGISTRY_TIMEOUT=SECONDS` or
`CONNECT,READ` (default 10,30), so a registry that accepts and never answers
fails in one line instead of hanging.  Responses are read in slices, each
telling `waiting()` that the call is alive, so a progress display can say
"waiting for HOST" after a second without a byte.  `describe` words the real
cause of a failure (DNS, refused, unreachable, TLS), and says when TLS met
what looks like a plain-HTTP server.
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl

from ..errors import RegistryError

CONNECT_TIMEOUT, READ_TIMEOUT = 10.0, 30.0
TIMEOUT_ENV = "HERMETIC_REGISTRY_TIMEOUT"
_SLICE = 32 << 10  # a response is read in slices this big, so a slow but live download is not "waiting"


def timeouts() -> tuple[float, float]:
    """(connect, read) seconds from HERMETIC_REGISTRY_TIMEOUT (`SECONDS` for both, or `CONNECT,READ`)."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return CONNECT_TIMEOUT, READ_TIMEOUT
    try:
        values = [float(part) for part in text.split(",")]
        if len(values) not in (1, 2) or not all(0 < v <= 86400 for v in values):
            raise ValueError
    except ValueError:
        raise RegistryError(f"{TIMEOUT_ENV}={text!r}: use SECONDS, or CONNECT,READ seconds, each more than 0 "
                            f"(default {CONNECT_TIMEOUT:g},{READ_TIMEOUT:g})") from None
    return values[0], values[-1]


class _Waits:
    """Per thread: the host a registry call waits on, and since when it has had no byte."""

    def __init__(self) -> None:
        self.since: dict[int, tuple[str, float]] = {}

    def begin(self, host: str) -> int | None:
        key = threading.get_ident()
        if key in self.since:
            return None  # nested (a read inside a read): the outer call owns the entry
        self.since[key] = (host, time.monotonic())
        return key

    def tick(self) -> None:
        key = threading.get_ident()
        entry = self.since.get(key)
        if entry is not None:
            self.since[key] = (entry[0], time.monotonic())

    def end(self, key: int | None) -> None:
        if key is not None:
            self.since.pop(key, None)


WAITS = _Waits()


def waiting() -> tuple[str, float] | None:
    """(host, seconds) of the registry call in this process that has gone longest without a byte; None if none runs."""
    entries = list(WAITS.since.values())
    if not entries:
        return None
    host, since = min(entries, key=lambda entry: entry[1])
    return host, time.monotonic() - since


class _TrackedResponse(http.client.HTTPResponse):
    """Read in slices, each byte that comes telling `WAITS` the call is alive."""

    host = ""
    _failed: BaseException | None = None  # raised by the next read: bytes that came before it were returned first

    def read(self, amt: int | None = None) -> bytes:
        if self._failed is not None:
            raise self._failed
        key = WAITS.begin(self.host)
        chunks: list[bytes] = []
        try:
            if amt is not None and amt <= _SLICE:
                return super().read(amt)
            left = -1 if amt is None else amt
            while left:
                data = super().read(_SLICE if left < 0 else min(left, _SLICE))
                if not data:
                    break
                chunks.append(data)
                WAITS.tick()
                if left > 0:
                    left -= len(data)
            return b"".join(chunks)
        except (OSError, http.client.HTTPException) as exc:
            if not chunks:
                raise
            self._failed = exc
            return b"".join(chunks)
        finally:
            WAITS.end(key)


class DNSTimeout(TimeoutError):
    """The resolver did not answer within the connect timeout."""


def resolve(host: str, port: int, timeout: float) -> list:
    """`getaddrinfo`, given up after `timeout` (the lookup goes on in its thread until the resolver's own
    timeouts end it); a literal address is parsed at once, without a thread."""
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        pass
    found: dict[str, object] = {}

    def lookup() -> None:
        try:
            found["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            found["error"] = exc

    thread = threading.Thread(target=lookup, name="hermetic-dns", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise DNSTimeout(f"DNS lookup of {host} did not answer within {timeout:g} s")
    if "error" in found:
        raise found["error"]  # type: ignore[misc]
    return found["infos"]  # type: ignore[return-value]


def _create_connection(address: tuple[str, int], timeout: float, source_address: object = None) -> socket.socket:
    """`socket.create_connection` with the lookup bounded by `timeout` too."""
    host, port = address
    last: OSError | None = None
    for family, kind, proto, _, sockaddr in resolve(host, port, timeout):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)  # type: ignore[arg-type]
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last or OSError(f"no address for {host}")


class Timed:
    """A connection with a connect timeout (`timeout`, TLS handshake included) and then a read timeout."""

    read_timeout = READ_TIMEOUT
    ready = False  # connected (and the TLS handshake done)
    sock: socket.socket | None
    host: str
    port: int

    def connect(self) -> None:
        self.ready = False
        self._create_connection = _create_connection
        super().connect()  # type: ignore[misc]
        assert self.sock is not None
        self.sock.settimeout(self.read_timeout)
        self.ready = True

    def getresponse(self) -> http.client.HTTPResponse:
        response = super().getresponse()  # type: ignore[misc]
        if isinstance(response, _TrackedResponse):
            response.host = f"{self.host}:{self.port}" if self.port not in (80, 443) else self.host
        return response


class HTTPConnection(Timed, http.client.HTTPConnection):
    response_class = _TrackedResponse


class HTTPSConnection(Timed, http.client.HTTPSConnection):
    response_class = _TrackedResponse


_SSL: dict[bool, ssl.SSLContext] = {}


def ssl_context(insecure: bool) -> ssl.SSLContext:
    """One context per process (loading the CA bundle takes tens of ms); ssl imported only for https."""
    import ssl

    if insecure not in _SSL:
        context = ssl.create_default_context()
        if insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        _SSL[insecure] = context
    return _SSL[insecure]


# What OpenSSL says when the other end answered a TLS hello in plain HTTP ("HTTP/1.1 400 ...").
_PLAIN_HTTP_REASONS = {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST",
                       "UNKNOWN_PROTOCOL"}


def describe(exc: BaseException) -> tuple[str, bool]:
    """(the cause in words, whether it looks like TLS spoken to a plain-HTTP server)."""
    import errno
    import ssl  # (ssl costs ~10 ms; a plain-http loopback pull never reaches here)

    if isinstance(exc, socket.gaierror):
        return f"DNS lookup failed ({exc.strerror or exc})", False
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted ({exc.verify_message or exc.reason})", False
    if isinstance(exc, ssl.SSLError):
        plain = exc.reason in _PLAIN_HTTP_REASONS
        return f"TLS error ({exc.reason or exc})", plain
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused", False
    if isinstance(exc, http.client.RemoteDisconnected):
        return "it closed the connection without an answer", False
    if isinstance(exc, ConnectionResetError):
        return "connection reset", False
    if isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return f"{exc.strerror} (no route: offline?)", False
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror, False
    if isinstance(exc, http.client.HTTPException):
        return f"not an HTTP answer ({type(exc).__name__}: {str(exc)[:80]})", False
    return str(exc) or type(exc).__name__, False
