"""A client of the OCI distribution API (what `docker pull` speaks), stdlib only.

One `Registry` per registry host: it pings `/v2/` once to learn the scheme
and the auth challenge, then keeps one HTTP connection per thread (layers
download in parallel) and one bearer token per scope.  Auth follows the
`WWW-Authenticate` challenge: `Bearer` (a token from the realm, anonymous or
with credentials, as Docker Hub does) or `Basic`.  Credentials come from
`$REGISTRY_AUTH_FILE` or `~/.docker/config.json` (`auths[HOST].auth`).

Plain HTTP is used only for loopback registries and ones named insecure
(`HERMETIC_INSECURE_REGISTRIES`, or `insecure = true` in registries.conf),
and only after HTTPS failed; their certificates are not checked either, as
Docker does for insecure registries.  See `config.py` for mirrors.

Connections time out (`connections.py`: HERMETIC_REGISTRY_TIMEOUT); a
failure to connect says its real cause (DNS, refused, unreachable, TLS,
timeout), and the plain-HTTP hint comes only when TLS met something that
looks like plain HTTP.  One concern, the distribution API from ping to upload.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import threading
import urllib.parse
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

from ..errors import ImageNotFound, RegistryAuthError, RegistryError, RegistryTimeout, RegistryUnreachable
from . import config as registry_config
from . import schema
from .connections import (TIMEOUT_ENV, WAITS, DNSTimeout, HTTPConnection, HTTPSConnection, Timed, describe,
                          ssl_context, timeouts)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))

MAX_MANIFEST = 4 << 20  # a manifest or index; real ones are a few KiB
_HUB_HOST = "registry-1.docker.io"  # where the reference format's `docker.io` lives


def api_host(registry: str) -> str:
    return _HUB_HOST if registry in ("docker.io", "index.docker.io") else registry


class Registry:
    """One registry host; safe to share between threads."""

    def __init__(self, registry: str, *, insecure: bool | None = None,
                 credentials: tuple[str, str] | None = None) -> None:
        self.registry = registry  # as in references (docker.io)
        self.host = api_host(registry)
        self.insecure = registry_config.is_insecure(registry) if insecure is None else insecure
        self._scheme: str | None = None
        self._challenge: tuple[str, dict[str, str]] | None = None
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._credentials = credentials or registry_config.credentials(registry)
        self.connect_timeout, self.read_timeout = timeouts()

    def where(self, netloc: str | None = None) -> str:
        """`registry docker.io at registry-1.docker.io`; another host (a token service): that host, for the registry."""
        if netloc is None or netloc == self.host:
            return f"registry {self.registry}" + (f" at {self.host}" if self.host != self.registry else "")
        return f"{netloc} (for registry {self.registry})"

    # -- connections ------------------------------------------------------------

    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        pool = self._local.__dict__.setdefault("pool", {})
        conn = pool.get((scheme, netloc))
        if conn is None:
            if scheme == "https":
                conn = HTTPSConnection(netloc, timeout=self.connect_timeout, context=ssl_context(self.insecure))
            else:
                conn = HTTPConnection(netloc, timeout=self.connect_timeout)
            conn.read_timeout = self.read_timeout
            pool[(scheme, netloc)] = conn
        return conn

    def _drop(self, scheme: str, netloc: str) -> None:
        conn = self._local.__dict__.get("pool", {}).pop((scheme, netloc), None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for conn in self._local.__dict__.get("pool", {}).values():
            conn.close()
        self._local.__dict__["pool"] = {}

    def _send(self, method: str, url: str, headers: dict[str, str], body: object = None) -> http.client.HTTPResponse:
        """One request on this thread's connection; a stale kept-alive one is retried once.

        A failure is a `RegistryUnreachable` (`RegistryTimeout`) naming the host and the cause."""
        parts = urllib.parse.urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        for attempt in (0, 1):
            conn = self._connection(parts.scheme, parts.netloc)
            reused = conn.sock is not None
            key = WAITS.begin(parts.netloc)
            try:
                conn.request(method, target, body=body, headers=headers)  # type: ignore[arg-type]
                return conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                ready = isinstance(conn, Timed) and conn.ready
                self._drop(parts.scheme, parts.netloc)
                stale = isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError))
                if stale and reused and not attempt and (body is None or isinstance(body, bytes)):
                    continue
                raise self.failure(exc, f"{method} {parts.path}", parts.netloc, ready=ready) from None
            except BaseException:
                self._drop(parts.scheme, parts.netloc)
                raise
            finally:
                WAITS.end(key)
        raise AssertionError("unreachable")

    def failure(self, exc: BaseException, what: str, netloc: str | None = None, *, ready: bool = True) -> RegistryUnreachable:
        """The one-line error for `exc` (an OSError, TLS or HTTP protocol error) during `what`."""
        where = self.where(netloc)
        if isinstance(exc, TimeoutError):
            hint = f"set {TIMEOUT_ENV}=SECONDS (or CONNECT,READ) to wait longer"
            if isinstance(exc, DNSTimeout):
                return RegistryTimeout(f"cannot reach {where}: {exc}; {hint}", reason=str(exc))
            if ready:
                return RegistryTimeout(f"{where} did not answer within {self.read_timeout:g} s ({what}); {hint}",
                                       reason=f"no answer within {self.read_timeout:g} s")
            return RegistryTimeout(f"{where}: no connection within {self.connect_timeout:g} s ({what}); {hint}",
                                   reason=f"no connection within {self.connect_timeout:g} s")
        reason, plain = describe(exc)
        return RegistryUnreachable(f"cannot reach {where}: {reason}", reason=reason, plain_http=plain)

    # -- the ping: scheme and challenge ---------------------------------------------

    def _ping(self) -> str:
        with self._lock:
            if self._scheme is not None:
                return self._scheme
            # Loopback: plain HTTP first (a TLS handshake and CA bundle load cost more than
            # the whole manifest fetch); registries named insecure: HTTPS first, as Docker.
            schemes = ["http", "https"] if registry_config.is_loopback(self.registry) else (
                ["https", "http"] if self.insecure else ["https"])
            errors: list[tuple[str, str]] = []
            plain_http = False
            for scheme in schemes:
                try:
                    response = self._send("GET", f"{scheme}://{self.host}/v2/", {})
                    response.read()
                except RegistryTimeout:
                    raise  # it is there and stalls: another scheme would only wait as long again
                except RegistryUnreachable as exc:
                    errors.append((scheme, exc.reason))
                    plain_http = plain_http or exc.plain_http
                    continue
                except (OSError, http.client.HTTPException) as exc:  # the body broke off
                    raise self.failure(exc, "GET /v2/") from None
                if response.status == 401:
                    self._challenge = _parse_challenge(response.getheader("WWW-Authenticate", ""))
                elif response.status != 200:  # 400 is what a TLS port answers to plain HTTP
                    errors.append((scheme, f"HTTP {response.status} on /v2/ (not a registry?)"))
                    continue
                self._scheme = scheme
                return scheme
            reasons = {reason for _, reason in errors}
            reason = reasons.pop() if len(reasons) == 1 else "; ".join(f"{scheme}: {why}" for scheme, why in errors)
            hint = ("; it looks like plain HTTP: if so, add it to HERMETIC_INSECURE_REGISTRIES"
                    if plain_http and not self.insecure else "")
            raise RegistryUnreachable(f"cannot reach {self.where()}: {reason}{hint}", reason=reason, plain_http=plain_http)

    # -- auth -----------------------------------------------------------------------

    def _auth_header(self, scope: str) -> dict[str, str]:
        if self._challenge is None:
            return {}
        kind, params = self._challenge
        if kind == "basic":
            if self._credentials is None:
                raise RegistryAuthError(self._login_hint("asks for a user name and password"))
            return {"Authorization": "Basic " + _basic(*self._credentials)}
        with self._lock:
            token = self._tokens.get(scope)
            if token is None:
                token = self._tokens[scope] = self._fetch_token(params, scope)
        return {"Authorization": f"Bearer {token}"}

    def _fetch_token(self, params: dict[str, str], scope: str) -> str:
        realm = params.get("realm")
        if not realm:
            raise RegistryError(f"registry {self.registry}: bearer challenge without a realm")
        query = {"service": params["service"]} if "service" in params else {}
        if scope:
            query["scope"] = scope
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        headers = {"Authorization": "Basic " + _basic(*self._credentials)} if self._credentials else {}
        response = self._send("GET", url, headers)
        try:
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise self.failure(exc, "GET token", urllib.parse.urlsplit(url).netloc) from None
        if response.status in (401, 403):
            raise RegistryAuthError(self._login_hint(f"token service refused {'the credentials' if self._credentials else 'an anonymous token'} (HTTP {response.status})"))
        if response.status != 200:
            raise RegistryError(f"token service of {self.registry} answered HTTP {response.status}")
        try:
            body = json.loads(data)
            token = body.get("token") or body["access_token"]
            if not isinstance(token, str):
                raise TypeError
            return token
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise RegistryError(f"token service of {self.registry} sent no token") from None

    def check_login(self) -> None:
        """Try the credentials given to the constructor as `docker login` does: `/v2/` with them
        (Basic), or a token for them from the token service (Bearer); `RegistryAuthError` if refused."""
        if self._credentials is None:
            raise RegistryAuthError(f"registry {self.registry}: no credentials to check")
        scheme = self._ping()
        if self._challenge is None:
            return  # it asks for nothing: any login is accepted (as docker says "Login Succeeded")
        kind, params = self._challenge
        refused = f"registry {self.registry} refused the user name or password of {self._credentials[0]!r}"
        if kind == "basic":
            response = self._send("GET", f"{scheme}://{self.host}/v2/", {"Authorization": "Basic " + _basic(*self._credentials)})
            response.read()
            if response.status != 200:
                raise RegistryAuthError(f"{refused} (HTTP {response.status})")
            return
        try:
            self._fetch_token(params, "")
        except RegistryAuthError:
            raise RegistryAuthError(f"{refused} (its token service {params.get('realm', '')} said no)") from None

    def _login_hint(self, what: str) -> str:
        source = registry_config.credentials_source(self.registry)
        have = f"credentials from {source} were refused" if self._credentials else "no credentials for it"
        return (f"registry {self.registry} {what}: {have}; log in with `hermetic login {self.registry}` "
                f"(or skopeo login, docker login), or point REGISTRY_AUTH_FILE at an auth.json with auths[{self.registry!r}]")

    # -- requests -------------------------------------------------------------------

    def request(self, method: str, path: str, *, scope: str, headers: dict[str, str] | None = None,
                body: object = None, follow: bool = True) -> http.client.HTTPResponse:
        """Send `method path` (or a full URL) with auth; follow redirects; raise on 401/5xx/unreachable.

        The caller reads the returned response to its end (or closes it).
        """
        scheme = self._ping()
        url = path if "://" in path else f"{scheme}://{self.host}{path}"
        for attempt in range(2):
            all_headers = {"User-Agent": "pytest-hermetic", **(headers or {})}
            if urllib.parse.urlsplit(url).netloc == self.host:
                all_headers.update(self._auth_header(scope))
            response = self._send(method, url, all_headers, body)
            if response.status == 401 and attempt == 0:
                response.read()
                challenge = _parse_challenge(response.getheader("WWW-Authenticate", ""))
                if challenge[0] == "bearer" and "error" in challenge[1] and self._challenge:
                    # a token for this scope was refused: insufficient scope or expired
                    with self._lock:
                        self._tokens.pop(scope, None)
                    if challenge[1].get("error") == "insufficient_scope" or not self._credentials:
                        raise RegistryAuthError(self._login_hint(f"refused access to {scope or path} ({challenge[1]['error']})"))
                self._challenge = challenge
                if hasattr(body, "seek"):
                    body.seek(0)
                continue
            if response.status == 401:
                response.read()
                raise RegistryAuthError(self._login_hint(f"refused {method} {path} (HTTP 401)"))
            if response.status in (301, 302, 303, 307, 308) and follow:
                location = response.getheader("Location") or ""
                response.read()
                url = urllib.parse.urljoin(url, location)
                if response.status == 303:
                    method, body = "GET", None
                return self._redirected(method, url, headers or {}, body)
            if response.status >= 500:
                detail = response.read()[:200].decode(errors="replace").strip()
                raise RegistryError(f"registry {self.registry}: {method} {path}: HTTP {response.status} {detail}")
            return response
        raise AssertionError("unreachable")

    def _redirected(self, method: str, url: str, headers: dict[str, str], body: object) -> http.client.HTTPResponse:
        for _ in range(5):  # blob storage elsewhere (S3 and the like): no registry auth there
            response = self._send(method, url, {"User-Agent": "pytest-hermetic", **headers}, body)
            if response.status not in (301, 302, 303, 307, 308):
                return response
            response.read()
            url = urllib.parse.urljoin(url, response.getheader("Location") or "")
        raise RegistryError(f"registry {self.registry}: too many redirects")

    # -- the distribution API ------------------------------------------------------------

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str | None]:
        """(body, media type, Docker-Content-Digest header) of a manifest or index."""
        path = f"/v2/{repository}/manifests/{reference}"
        response = self.request("GET", path, scope=_scope(repository, "pull"), headers={"Accept": ACCEPT})
        try:
            body = response.read(MAX_MANIFEST + 1)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise self.failure(exc, f"GET {path}") from None
        if len(body) > MAX_MANIFEST:
            response.close()  # the rest is never read
            raise RegistryError(f"registry {self.registry}: the manifest of {repository}:{reference} is larger than "
                                f"{MAX_MANIFEST >> 20} MiB; refusing it (a real one is a few KiB)")
        if response.status == 404:
            raise ImageNotFound(f"{self.registry}/{repository}:{reference}" if not reference.startswith("sha256:")
                                else f"{self.registry}/{repository}@{reference}")
        if response.status != 200:
            raise RegistryError(f"registry {self.registry}: GET {path}: HTTP {response.status} {_error_text(body)}")
        media_type = (response.getheader("Content-Type") or "").split(";")[0].strip()
        if not media_type or media_type in ("application/json", "text/plain"):
            try:
                found = schema.load(body, schema.DOCUMENT, "manifest", ValueError, limit=MAX_MANIFEST).get("mediaType")
                media_type = found if isinstance(found, str) and found else media_type
            except ValueError:
                pass  # the caller's own check names what is wrong
        return body, media_type, response.getheader("Docker-Content-Digest")

    def open_blob(self, repository: str, digest: str, offset: int = 0) -> http.client.HTTPResponse:
        """A response streaming the blob from `offset` (status 206), or whole (200)."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        path = f"/v2/{repository}/blobs/{digest}"
        response = self.request("GET", path, scope=_scope(repository, "pull"), headers=headers)
        if response.status == 404:
            response.read()
            raise ImageNotFound(f"blob {digest} of {self.registry}/{repository} is not in the registry (blob unknown)")
        if response.status == 416 and offset:
            response.read()
            return self.open_blob(repository, digest, 0)
        if response.status not in (200, 206):
            body = response.read()
            raise RegistryError(f"registry {self.registry}: GET {path}: HTTP {response.status} {_error_text(body)}")
        return response

    def has_blob(self, repository: str, digest: str) -> bool:
        response = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", scope=_scope(repository, "pull,push"))
        response.read()
        return response.status == 200

    def upload_blob(self, repository: str, digest: str, path: str, *, mount_from: str | None = None,
                    chunk_size: int | None = None, progress: Callable[[int], None] | None = None) -> str:
        """Upload the file at `path` as `digest`: "mounted", "uploaded" or "chunked"."""
        scope = _scope(repository, "pull,push")
        query = f"?mount={digest}&from={mount_from}" if mount_from else ""
        if mount_from:
            scope += " " + _scope(mount_from, "pull")
        response = self.request("POST", f"/v2/{repository}/blobs/uploads/{query}", scope=scope,
                                headers={"Content-Length": "0"}, body=b"")
        response.read()
        if response.status == 201:
            return "mounted"
        if response.status != 202:
            raise RegistryError(f"registry {self.registry}: cannot start an upload to {repository}: HTTP {response.status}")
        location = self._location(response)
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            if chunk_size is None or size <= chunk_size:
                response = self.request("PUT", _with_query(location, digest=digest), scope=scope, body=f,
                                        headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
                done = size
                how = "uploaded"
            else:
                done = 0
                while done < size:
                    chunk = f.read(chunk_size)
                    response = self.request("PATCH", location, scope=scope, body=chunk, headers={
                        "Content-Type": "application/octet-stream", "Content-Length": str(len(chunk)),
                        "Content-Range": f"{done}-{done + len(chunk) - 1}"})
                    response.read()
                    if response.status != 202:
                        raise RegistryError(f"registry {self.registry}: chunk upload to {repository}: HTTP {response.status}")
                    location = self._location(response)
                    done += len(chunk)
                    if progress:
                        progress(done)
                response = self.request("PUT", _with_query(location, digest=digest), scope=scope, body=b"",
                                        headers={"Content-Length": "0"})
                how = "chunked"
        body = response.read()
        if response.status != 201:
            raise RegistryError(f"registry {self.registry}: upload of {digest} to {repository}: HTTP {response.status} {_error_text(body)}")
        if progress:
            progress(done)
        return how

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str | None:
        response = self.request("PUT", f"/v2/{repository}/manifests/{reference}", scope=_scope(repository, "pull,push"),
                                body=body, headers={"Content-Type": media_type, "Content-Length": str(len(body))})
        data = response.read()
        if response.status != 201:
            raise RegistryError(f"registry {self.registry}: PUT manifest {repository}:{reference}: HTTP {response.status} {_error_text(data)}")
        return response.getheader("Docker-Content-Digest")

    def _location(self, response: http.client.HTTPResponse) -> str:
        location = response.getheader("Location")
        if not location:
            raise RegistryError(f"registry {self.registry}: upload answer without a Location")
        return urllib.parse.urljoin(f"{self._scheme}://{self.host}/", location)


def _scope(repository: str, actions: str) -> str:
    return f"repository:{repository}:{actions}"


def _with_query(url: str, **params: str) -> str:
    return url + ("&" if "?" in url else "?") + urllib.parse.urlencode(params)


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="...",scope="..."` -> ("bearer", {...})."""
    kind, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    i = 0
    while i < len(rest):
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip(" ,").lower()
        if rest[eq + 1:eq + 2] == '"':
            end = rest.find('"', eq + 2)
            end = len(rest) if end < 0 else end
            params[key] = rest[eq + 2:end]
            i = end + 1
        else:
            end = rest.find(",", eq + 1)
            end = len(rest) if end < 0 else end
            params[key] = rest[eq + 1:end].strip()
            i = end + 1
    return kind.lower(), params


def _error_text(body: bytes) -> str:
    """The first message of a distribution-spec error body, or its start."""
    try:
        errors = json.loads(body).get("errors") or []
        return "; ".join(f"{e.get('code', '')}: {e.get('message', '')}" for e in errors[:3])[:300]
    except (ValueError, AttributeError, TypeError, RecursionError):
        return body[:200].decode(errors="replace").strip()
