"""HTTP to registries: a pooling transport over http.client, and the distribution API on it.

Why the standard library with threads rather than aiohttp: the work a pull does per byte
is recv, sha256, inflate and write(2), and all four release the GIL, so one thread per
layer keeps both cores busy; an event loop would still need threads for the hashing and
unpacking, and would add a dependency and its import time to a CLI that counts
milliseconds. http.client reads a body with readinto straight from the socket, keeps
connections alive, and speaks TLS through ssl; what it lacks (a pool, redirects, proxies,
a retry on a keep-alive connection the server closed) is below, in a hundred lines.

    Transport       origin -> idle connections; request() -> Response (streamed or read)
    Registry        one endpoint of one registry: ping, auth retries (berth.registry.auth),
                    manifests, blobs, uploads; registry errors -> berth.errors, here only

Errors at this seam: OSError, ssl and http.client errors become Unavailable naming the
host; a registry's JSON errors become NotFound (404), FailedPrecondition (401/403),
DataLoss (a digest or size the registry refused), Unavailable (5xx, 429), InvalidArgument.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
from urllib.parse import urljoin, urlsplit

from berth.errors import (BerthError, DataLoss, FailedPrecondition, InvalidArgument, NotFound,
                          Unavailable)
from berth.oci import image as oci

TIMEOUT = 60.0  # seconds without a byte before a connection counts as lost
BLOCK = 1 << 20  # bytes per send() of a request body
MAX_DOCUMENT = 4 << 20  # manifests and configs larger than this are refused, as distribution does
MANIFEST_ACCEPT = ", ".join((oci.DOCKER_MANIFEST_LIST, oci.OCI_INDEX, oci.DOCKER_MANIFEST,
                             oci.OCI_MANIFEST))
_REDIRECTS = (301, 302, 303, 307, 308)
_NET_ERRORS = (OSError, http.client.HTTPException, ssl.SSLError)


class Response:
    """A response whose body is read on demand. close() returns its connection to the
    pool when the body was read to the end, and drops the connection otherwise."""

    def __init__(self, transport: "Transport", key, conn, resp: http.client.HTTPResponse,
                 url: str) -> None:
        self._transport = transport
        self._key = key
        self._conn = conn
        self._resp = resp
        self.status = resp.status
        self.headers = resp.headers
        self.url = url
        self.host = urlsplit(url).netloc

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    def read(self, size: int = -1) -> bytes:
        try:
            return self._resp.read(None if size < 0 else size)
        except _NET_ERRORS as exc:
            self.close()
            raise lost(self.host, exc) from exc

    def read_limited(self, limit: int, what: str) -> bytes:
        length = self.header("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            self.close()
            raise InvalidArgument(f"{what} is {length} bytes, over the {limit}-byte limit")
        data = self.read(limit + 1)
        if len(data) > limit:
            self.close()
            raise InvalidArgument(f"{what} is over the {limit}-byte limit")
        self.close()
        return data

    @property
    def complete(self) -> bool:
        """Whether the body was read to its end (http.client returns b"" both at the end
        and when the server closed early; only the remaining length tells them apart)."""
        return self._resp.isclosed() and not self._resp.length

    def close(self) -> None:
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        if self._resp.isclosed() and not self._resp.will_close:
            self._transport._release(self._key, conn)
        else:
            self._resp.close()
            conn.close()

    def __enter__(self) -> "Response":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def lost(host: str, exc: BaseException) -> Unavailable:
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, socket.timeout):
        reason = f"no answer for {TIMEOUT:.0f} s"
    elif isinstance(exc, http.client.IncompleteRead):
        reason = "the connection closed in the middle of a response"
    elif isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
        reason = "the registry closed the connection"
    elif isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror
    return Unavailable(f"{host}: {reason}")


class Transport:
    """Keeps idle connections per (scheme, host, TLS verification); thread-safe."""

    def __init__(self) -> None:
        self._idle: dict[tuple, list] = {}
        self._lock = threading.Lock()
        self._contexts: dict[bool, ssl.SSLContext] = {}

    def request(self, method: str, url: str, *, headers: dict | None = None, body=None,
                verify: bool = True, stream: bool = False, follow: bool = True) -> Response:
        """Send one request, following redirects for GET/HEAD when `follow`.

        `body` is None, bytes, or a callable returning a fresh file object (so the request
        can be sent again); Authorization is dropped when a redirect leaves the origin.
        """
        headers = dict(headers or {})
        for _hop in range(6):
            resp = self._send(method, url, headers, body, verify)
            if follow and resp.status in _REDIRECTS and method in ("GET", "HEAD"):
                location = resp.header("Location")
                resp.read()
                resp.close()
                if not location:
                    raise Unavailable(f"{resp.host}: a redirect without a Location")
                target = urljoin(url, location)
                if _origin(target) != _origin(url):
                    headers.pop("Authorization", None)
                url = target
                continue
            if not stream:
                try:
                    resp.body = resp.read() if method != "HEAD" else b""
                finally:
                    resp.close()
            return resp
        raise Unavailable(f"{urlsplit(url).netloc}: too many redirects")

    def _send(self, method, url, headers, body, verify) -> Response:
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc, verify)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        for attempt in (0, 1):
            conn, reused = self._acquire(key)
            data = body() if callable(body) else body
            hdrs = dict(headers)
            if data is not None and "Content-Length" not in hdrs and isinstance(data, bytes):
                hdrs["Content-Length"] = str(len(data))
            if data is None and method in ("PUT", "POST", "PATCH"):
                hdrs.setdefault("Content-Length", "0")
            try:
                conn.request(method, target if conn._berth_direct else url, body=data, headers=hdrs)
                resp = conn.getresponse()
            except _NET_ERRORS as exc:
                conn.close()
                # a kept-alive connection the server had already closed: once more, afresh,
                # if the body can be sent again
                if reused and attempt == 0 and (body is None or isinstance(body, bytes)
                                                or callable(body)):
                    continue
                raise lost(parts.netloc, exc) from exc
            finally:
                if callable(body) and hasattr(data, "close"):
                    data.close()
            return Response(self, key, conn, resp, url)
        raise AssertionError("unreachable")

    def _acquire(self, key):
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop(), True
        scheme, netloc, verify = key
        return self._connect(scheme, netloc, verify), False

    def _release(self, key, conn) -> None:
        with self._lock:
            self._idle.setdefault(key, []).append(conn)

    def close(self) -> None:
        with self._lock:
            for conns in self._idle.values():
                for conn in conns:
                    conn.close()
            self._idle.clear()

    def _connect(self, scheme: str, netloc: str, verify: bool):
        proxy = _proxy_for(scheme, netloc)
        host, port = _split_host(netloc, 443 if scheme == "https" else 80)
        if scheme == "https":
            if proxy:
                phost, pport = _split_host(urlsplit(proxy).netloc, 3128)
                conn = http.client.HTTPSConnection(phost, pport, timeout=TIMEOUT,
                                                   context=self._context(verify))
                conn.set_tunnel(host, port)
            else:
                conn = http.client.HTTPSConnection(host, port, timeout=TIMEOUT,
                                                   context=self._context(verify))
            conn._berth_direct = True
        else:
            if proxy:
                phost, pport = _split_host(urlsplit(proxy).netloc, 3128)
                conn = http.client.HTTPConnection(phost, pport, timeout=TIMEOUT)
                conn._berth_direct = False  # absolute URLs in the request line
            else:
                conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
                conn._berth_direct = True
        conn.blocksize = BLOCK
        return conn

    def _context(self, verify: bool) -> ssl.SSLContext:
        with self._lock:
            ctx = self._contexts.get(verify)
            if ctx is None:
                if verify:
                    ctx = ssl.create_default_context()
                else:  # no CA bundle to load (~20 ms) for a certificate nobody checks
                    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                self._contexts[verify] = ctx
            return ctx


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _split_host(netloc: str, default_port: int) -> tuple[str, int]:
    netloc = netloc.rpartition("@")[2]
    if netloc.startswith("["):
        host, _, rest = netloc[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    host, sep, port = netloc.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host, int(port)
    return netloc, default_port


def _proxy_for(scheme: str, netloc: str) -> str | None:
    """HTTPS_PROXY / HTTP_PROXY / NO_PROXY, as Docker honours them; never for loopback."""
    import os

    if not any(k.lower().endswith("_proxy") for k in os.environ):
        return None
    from berth.registry.config import is_loopback

    if is_loopback(netloc):
        return None
    import urllib.request

    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(scheme)
    if not proxy or urllib.request.proxy_bypass_environment(netloc.rsplit(":", 1)[0], proxies):
        return None
    return proxy


# --- the distribution API --------------------------------------------------------------


class Registry:
    """One endpoint of one registry and its auth state; the distribution API calls."""

    def __init__(self, endpoint, transport: Transport, auth) -> None:
        self.endpoint = endpoint
        self.transport = transport
        self.auth = auth
        self.base = endpoint.url
        self._pinged = False
        self._ping_lock = threading.Lock()

    @property
    def host(self) -> str:
        return urlsplit(self.base).netloc

    def url(self, path: str) -> str:
        return path if "://" in path else self.base + path

    def ping(self) -> None:
        """GET /v2/: learns the auth challenge, and whether an insecure registry speaks TLS."""
        with self._ping_lock:
            if self._pinged:
                return
            try:
                resp = self._raw("GET", "/v2/")
            except Unavailable:
                if not self.endpoint.http_fallback:
                    raise
                self.base = "http://" + self.base.split("://", 1)[1]
                resp = self._raw("GET", "/v2/")
            if resp.status == 401:
                self.auth.learn(resp)
            elif resp.status != 200:
                raise _api_error(resp, f"{self.host} does not answer as a registry "
                                       f"(GET /v2/: HTTP {resp.status})")
            self._pinged = True

    def _raw(self, method: str, path: str, **kw) -> Response:
        return self.transport.request(method, self.url(path), verify=self.endpoint.verify_tls, **kw)

    def request(self, method: str, path: str, *, scopes: tuple[str, ...], headers=None, body=None,
                stream: bool = False, follow: bool = True) -> Response:
        """A request with this registry's credentials for `scopes`; one retry after a 401."""
        self.ping()
        # credentials go to this registry only, not to an upload URL on another host
        own = "://" not in path or _origin(path) == _origin(self.base)
        for attempt in (0, 1):
            hdrs = dict(headers or {})
            auth = self.auth.header(scopes) if own else None
            if auth:
                hdrs["Authorization"] = auth
            resp = self._raw(method, path, headers=hdrs, body=body, stream=stream, follow=follow)
            if resp.status != 401 or attempt == 1:
                return resp
            if not hasattr(resp, "body"):
                resp.body = resp.read(1 << 16)
                resp.close()
            if not self.auth.learn(resp, scopes):
                return resp
        raise AssertionError("unreachable")

    # manifests

    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str | None, str | None]:
        """(raw bytes, media type, Docker-Content-Digest) of a manifest or index."""
        scopes = (pull_scope(repo),)
        resp = self.request("GET", f"/v2/{repo}/manifests/{reference}", scopes=scopes,
                            headers={"Accept": MANIFEST_ACCEPT}, stream=True)
        if resp.status != 200:
            raise _api_error(resp, f"manifest for {repo}:{reference}" if ":" not in reference
                             else f"manifest {reference} of {repo}", read=True)
        raw = resp.read_limited(MAX_DOCUMENT, f"the manifest of {repo}")
        media = (resp.header("Content-Type") or "").split(";")[0].strip() or None
        return raw, media, resp.header("Docker-Content-Digest")

    def put_manifest(self, repo: str, reference: str, raw: bytes, media_type: str) -> str | None:
        resp = self.request("PUT", f"/v2/{repo}/manifests/{reference}",
                            scopes=(push_scope(repo),), headers={"Content-Type": media_type},
                            body=raw)
        if resp.status not in (200, 201, 202):
            raise _api_error(resp, f"pushing the manifest of {repo}:{reference}")
        return resp.header("Docker-Content-Digest")

    def tags(self, repo: str) -> list[str]:
        """Every tag of `repo`, following the Link header's pages."""
        tags: list[str] = []
        path: str | None = f"/v2/{repo}/tags/list?n=1000"
        while path:
            resp = self.request("GET", path, scopes=(pull_scope(repo),))
            if resp.status != 200:
                raise _api_error(resp, f"the tags of {repo}")
            try:
                tags += [t for t in json.loads(resp.body).get("tags") or [] if isinstance(t, str)]
            except (ValueError, AttributeError):
                raise Unavailable(f"{self.host}: an unreadable tag list for {repo}") from None
            link = resp.header("Link") or ""
            path = urljoin(resp.url, link.split(";")[0].strip(" <>")) if 'rel="next"' in link \
                else None
        return tags

    # blobs

    def open_blob(self, repo: str, digest: str, offset: int = 0) -> Response:
        """A streamed GET of a blob from `offset` (a Range request); 200 or 206."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = self.request("GET", f"/v2/{repo}/blobs/{digest}", scopes=(pull_scope(repo),),
                            headers=headers, stream=True)
        if resp.status not in (200, 206):
            raise _api_error(resp, f"blob {digest} of {repo}", read=True)
        return resp

    def get_blob(self, repo: str, digest: str, limit: int = MAX_DOCUMENT) -> bytes:
        resp = self.open_blob(repo, digest)
        return resp.read_limited(limit, f"blob {digest}")

    def blob_exists(self, repo: str, digest: str, scopes: tuple[str, ...] | None = None) -> bool:
        resp = self.request("HEAD", f"/v2/{repo}/blobs/{digest}",
                            scopes=scopes or (pull_scope(repo),))
        if resp.status == 200:
            return True
        if resp.status == 404:
            return False
        raise _api_error(resp, f"checking blob {digest} in {repo}")

    def start_upload(self, repo: str, mount: str | None = None,
                     source: str | None = None) -> tuple[str | None, dict]:
        """POST an upload; with `mount`/`source` ask for a cross-repository mount first.

        Returns (None, headers) when the blob was mounted, else (upload URL, headers).
        """
        scopes = (push_scope(repo),) + ((pull_scope(source),) if source else ())
        path = f"/v2/{repo}/blobs/uploads/"
        if mount and source:
            from urllib.parse import urlencode

            path += "?" + urlencode({"mount": mount, "from": source})
        resp = self.request("POST", path, scopes=scopes)
        if resp.status == 201 and mount:
            return None, dict(resp.headers)
        if resp.status != 202:
            raise _api_error(resp, f"starting an upload to {repo}")
        location = resp.header("Location")
        if not location:
            raise Unavailable(f"{self.host}: an upload without a Location")
        return urljoin(resp.url, location), dict(resp.headers)

    def upload(self, repo: str, location: str, reader_factory, size: int, digest: str,
               chunk: int | None = None) -> None:
        """Send a blob to an upload session: PATCH (whole, or in `chunk`-byte ranges), then
        PUT ?digest=. `reader_factory(offset, length)` returns a file object for that range."""
        scopes = (push_scope(repo),)
        offset = 0
        step = chunk or size
        while offset < size:
            length = min(step, size - offset)
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
            if chunk:
                headers["Content-Range"] = f"{offset}-{offset + length - 1}"
            start = offset
            resp = self.request("PATCH", location, scopes=scopes, headers=headers,
                                body=lambda: reader_factory(start, length), follow=False)
            if resp.status != 202:
                raise _api_error(resp, f"uploading {digest} to {repo}")
            location = urljoin(resp.url, resp.header("Location") or location)
            offset += length
        sep = "&" if "?" in location else "?"
        resp = self.request("PUT", f"{location}{sep}digest={digest}", scopes=scopes, body=None,
                            follow=False)
        if resp.status not in (201, 204):
            raise _api_error(resp, f"finishing the upload of {digest} to {repo}")


def pull_scope(repo: str) -> str:
    return f"repository:{repo}:pull"


def push_scope(repo: str) -> str:
    return f"repository:{repo}:pull,push"


# --- registry errors -> berth errors, in this one place ----------------------------------


def registry_errors(resp: Response) -> list[tuple[str, str]]:
    """(code, message) pairs of a distribution error body; [] if there is none."""
    body = getattr(resp, "body", b"")
    try:
        doc = json.loads(body or b"{}")
        return [(str(e.get("code", "")), str(e.get("message", "") or e.get("code", "")))
                for e in doc.get("errors", []) if isinstance(e, dict)]
    except (ValueError, AttributeError):
        return []


def _api_error(resp: Response, what: str, read: bool = False) -> BerthError:
    if read and not hasattr(resp, "body"):
        try:
            resp.body = resp.read(1 << 16)
        except BerthError:
            resp.body = b""
        resp.close()
    errors = registry_errors(resp)
    codes = {code for code, _ in errors}
    detail = "; ".join(dict.fromkeys(
        msg if msg.lower() == code.lower().replace("_", " ") else f"{code.lower().replace('_', ' ')}: {msg}"
        for code, msg in errors)) if errors else f"HTTP {resp.status}"
    status = resp.status
    if status == 404 or codes & {"MANIFEST_UNKNOWN", "BLOB_UNKNOWN", "NAME_UNKNOWN"}:
        return NotFound(f"{what} not found: {detail}")
    if status in (401, 403) or codes & {"UNAUTHORIZED", "DENIED"}:
        return FailedPrecondition(f"{what}: access denied by {resp.host} ({detail}); "
                                  f"run 'berth login {resp.host}' if it needs credentials")
    if codes & {"DIGEST_INVALID", "SIZE_INVALID", "MANIFEST_INVALID", "BLOB_UPLOAD_INVALID",
                "MANIFEST_BLOB_UNKNOWN"}:
        return DataLoss(f"{what}: {resp.host} refused it: {detail}")
    if status == 429 or status >= 500:
        return Unavailable(f"{what}: {resp.host} failed: {detail}")
    return InvalidArgument(f"{what}: {resp.host} answered {detail}")
