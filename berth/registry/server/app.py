"""The HTTP edge of berth's registry: routes, handlers, and errors turned into responses.

Why aiohttp: a registry's work is many long, concurrent streams (layers of hundreds of
MB both ways), so the server must stream request bodies in bounded buffers and hand
files to the kernel with sendfile; aiohttp does both (``StreamReader`` with adjustable
read-ahead, ``FileResponse`` with ``loop.sendfile`` and Range/206 built in), parses HTTP in
C (llhttp), is asyncio-native and well kept. The stdlib's http.server is a thread per
connection with no sendfile and no streaming PATCH bodies; a WSGI stack would need a
server of its own and still could not sendfile a Range.

Repository names contain slashes, so the router cannot split paths; one catch-all route
hands every request to ``Registry.handle``, which matches the spec's endpoints in
distribution's order (upload routes before the blob route they also match).

Blocking work (fsync, hashing a resumed upload, directory walks) runs in threads; the
upload sessions of the push side are in uploads.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from urllib.parse import quote

from aiohttp import web

from berth.oci.codec import dumps, from_dict
from berth.oci.image import OCI_INDEX, Descriptor
from berth.registry.server import RegistryError
from berth.registry.server import manifest as _manifest
from berth.registry.server.auth import REALM, Brake, Htpasswd, parse_basic
from berth.registry.server.storage import (Storage, check_digest, check_name, check_tag, is_digest,
                                           manifest_unknown)
from berth.registry.server.uploads import Uploads, too_large

PURGE_EVERY = 3600.0
CATALOG_PAGE = 1000   # entries of /v2/_catalog without ?n=, as distribution's maxEntries
_WRITES = ("POST", "PUT", "PATCH", "DELETE")

_NAME = r"(?P<name>.+)"
ROUTES = (
    (re.compile(r"^/v2/?$"), {"GET": "base", "HEAD": "base"}),
    (re.compile(r"^/v2/_catalog$"), {"GET": "catalog"}),
    (re.compile(rf"^/v2/{_NAME}/tags/list$"), {"GET": "tags_list"}),
    (re.compile(rf"^/v2/{_NAME}/manifests/(?P<reference>[^/]+)$"),
     {"GET": "get_manifest", "HEAD": "get_manifest", "PUT": "put_manifest",
      "DELETE": "delete_manifest"}),
    (re.compile(rf"^/v2/{_NAME}/blobs/uploads/?$"), {"POST": "uploads.start"}),
    (re.compile(rf"^/v2/{_NAME}/blobs/uploads/(?P<uuid>[^/]+)$"),
     {"GET": "uploads.status", "PATCH": "uploads.patch", "PUT": "uploads.finish",
      "DELETE": "uploads.cancel"}),
    (re.compile(rf"^/v2/{_NAME}/blobs/(?P<digest>[^/]+)$"),
     {"GET": "get_blob", "HEAD": "get_blob", "DELETE": "delete_blob"}),
    (re.compile(rf"^/v2/{_NAME}/referrers/(?P<digest>[^/]+)$"), {"GET": "referrers"}),
)


def _error_response(request: web.Request, exc: RegistryError) -> web.Response:
    headers = dict(exc.headers)
    if request.method == "HEAD":
        return web.Response(status=exc.status, headers=headers)
    error = {"code": exc.code, "message": exc.message}
    if exc.detail is not None:
        error["detail"] = exc.detail
    return web.Response(status=exc.status, body=json.dumps({"errors": [error]}).encode(),
                        content_type="application/json", charset="utf-8", headers=headers)


def _pagination(request: web.Request) -> tuple[int | None, str | None]:
    n = request.query.get("n")
    if n is not None:
        if not n.isdigit():
            raise RegistryError("PAGINATION_NUMBER_INVALID", f"invalid number of results {n!r}",
                                detail={"n": n[:50]})
        n = int(n)
    return n, request.query.get("last")


def _page(items: list[str], n: int | None, last: str | None, url: str,
          default: int | None) -> tuple[list[str], dict]:
    """Entries after `last`, at most `n`, and a Link to the next page when more remain."""
    if last:
        items = [i for i in items if i > last]
    limit = n if n is not None else default
    if limit is None or len(items) <= limit:
        return items, {}
    page = items[:limit]
    if not page:
        return page, {}
    next_url = f"{url}?n={limit}&last={quote(page[-1], safe='')}"
    return page, {"Link": f'<{next_url}>; rel="next"'}


class Registry:
    """One served registry: its storage, its settings, and the uploads this process has seen
    (they carry the running hash that saves reading a finished blob back)."""

    def __init__(self, storage: Storage, *, htpasswd: Htpasswd | None = None,
                 max_upload: int | None = None, read_only: bool = False) -> None:
        self.storage = storage
        self.htpasswd = htpasswd
        self.read_only = read_only
        self.brake = Brake()
        self.uploads = Uploads(storage, max_upload)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_response_prepare.append(self._api_version)
        app.cleanup_ctx.append(self._purger)
        return app

    @staticmethod
    async def _api_version(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Docker-Distribution-API-Version"] = "registry/2.0"

    async def _purger(self, app: web.Application):
        """Owns the periodic purge of abandoned uploads for the app's lifetime."""
        async def loop() -> None:
            while True:
                await asyncio.sleep(PURGE_EVERY)
                await asyncio.to_thread(self.storage.purge_uploads)
                self.uploads.forget_gone()

        task = asyncio.get_running_loop().create_task(loop())
        yield
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    # -- the edge --------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            await self._authorize(request)
            path = request.path
            for pattern, methods in ROUTES:
                match = pattern.match(path)
                if match is None:
                    continue
                name = methods.get(request.method)
                if name is None:
                    raise RegistryError("UNSUPPORTED", f"method {request.method} not allowed "
                                        f"on {path}", headers={"Allow": ", ".join(methods)})
                if self.read_only and request.method in _WRITES:
                    raise RegistryError("DENIED", "the registry is read-only")
                owner, _, method = name.rpartition(".")
                handler = getattr(getattr(self, owner) if owner else self, method)
                return await handler(request, **match.groupdict())
            raise RegistryError("UNSUPPORTED", f"no such endpoint: {path[:200]}", status=404)
        except RegistryError as exc:
            return _error_response(request, exc)
        except ConnectionError:
            # the client went away mid-body; what it sent of an upload stays for a resume
            return web.Response(status=400)
        except OSError as exc:  # the host's trouble (disk full, permissions): one line
            sys.stderr.write(f"berth registry: {request.method} {request.path}: {exc}\n")
            return _error_response(request, RegistryError(
                "UNKNOWN", f"storage error: {exc.strerror or exc}"))
        except Exception as exc:  # a bug: keep serving, log it, answer the spec's UNKNOWN
            import traceback

            sys.stderr.write(f"berth registry: {request.method} {request.path}: {exc!r}\n")
            traceback.print_exc()
            return _error_response(request, RegistryError("UNKNOWN", "internal error"))

    async def _authorize(self, request: web.Request) -> None:
        if self.htpasswd is None:
            return
        address = request.remote or ""
        wait = self.brake.retry_after(address)
        if wait:
            raise RegistryError("TOOMANYREQUESTS", "too many failed logins; retry later",
                                headers={"Retry-After": str(wait)})
        credentials = parse_basic(request.headers.get("Authorization"))
        if credentials is not None:
            if self.htpasswd.known(*credentials) or await asyncio.to_thread(
                    self.htpasswd.check, *credentials):
                return
            self.brake.failed(address)
        raise RegistryError("UNAUTHORIZED", "authentication required",
                            headers={"WWW-Authenticate": f'Basic realm="{REALM}"'})

    # -- base, catalog, tags ---------------------------------------------------------------

    async def base(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def catalog(self, request: web.Request) -> web.Response:
        n, last = _pagination(request)
        repos = await asyncio.to_thread(self.storage.repositories)
        page, headers = _page(repos, n, last, "/v2/_catalog", CATALOG_PAGE)
        return web.json_response({"repositories": page}, headers=headers)

    async def tags_list(self, request: web.Request, name: str) -> web.Response:
        check_name(name)
        n, last = _pagination(request)
        tags = await asyncio.to_thread(self.storage.tags, name)
        page, headers = _page(tags, n, last, f"/v2/{name}/tags/list", None)
        return web.json_response({"name": name, "tags": page}, headers=headers)

    # -- manifests -------------------------------------------------------------------------

    @staticmethod
    def _check_reference(reference: str) -> None:
        if is_digest(reference):
            check_digest(reference)
        else:
            check_tag(reference)

    async def get_manifest(self, request: web.Request, name: str,
                           reference: str) -> web.Response:
        check_name(name)
        self._check_reference(reference)
        digest, media_type = self.storage.resolve(name, reference)
        try:
            raw = await asyncio.to_thread(self.storage.read_blob, digest)
        except FileNotFoundError:
            raise manifest_unknown(name, reference) from None
        headers = {"Docker-Content-Digest": digest, "ETag": f'"{digest}"',
                   "Content-Type": media_type}
        return web.Response(body=raw, headers=headers)

    async def put_manifest(self, request: web.Request, name: str,
                           reference: str) -> web.Response:
        import hashlib

        check_name(name)
        self._check_reference(reference)
        by_digest = is_digest(reference)
        if (request.content_length or 0) > _manifest.MAX_SIZE:
            raise too_large("manifest", _manifest.MAX_SIZE)
        raw = await self._read_capped(request, _manifest.MAX_SIZE)
        algorithm = reference.partition(":")[0] if by_digest else "sha256"
        digest = f"{algorithm}:{hashlib.new(algorithm, raw).hexdigest()}"
        if by_digest and digest != reference:
            raise RegistryError("DIGEST_INVALID", f"manifest digest {digest} does not match "
                                f"{reference}", detail={"digest": reference})
        parsed = _manifest.parse(raw, request.headers.get("Content-Type"))
        missing = await asyncio.to_thread(self.storage.missing_references, name, parsed.blobs,
                                          parsed.manifests)
        if missing is not None:
            raise RegistryError("MANIFEST_BLOB_UNKNOWN", f"manifest references {missing}, "
                                f"which {name} does not hold; push it first",
                                detail={"digest": missing})
        referrer = None
        if parsed.subject:
            referrer = (parsed.subject,
                        dumps(_manifest.referrer_descriptor(parsed, digest, len(raw))))
        await asyncio.to_thread(self.storage.put_manifest, name, digest, raw, parsed.media_type,
                                referrer=referrer, tag=None if by_digest else reference)
        headers = {"Location": f"/v2/{name}/manifests/{digest}", "Docker-Content-Digest": digest}
        if parsed.subject:
            headers["OCI-Subject"] = parsed.subject
        return web.Response(status=201, headers=headers)

    async def delete_manifest(self, request: web.Request, name: str,
                              reference: str) -> web.Response:
        check_name(name)
        self._check_reference(reference)
        if not is_digest(reference):
            self.storage.delete_tag(name, reference)
            return web.Response(status=202)
        digest, media_type = self.storage.resolve(name, reference)
        subject = None
        try:  # its subject names the referrers entry to remove with it
            subject = _manifest.parse(self.storage.read_blob(digest), media_type).subject
        except (RegistryError, OSError):
            pass
        await asyncio.to_thread(self.storage.delete_manifest, name, digest, subject)
        return web.Response(status=202)

    async def referrers(self, request: web.Request, name: str, digest: str) -> web.Response:
        check_name(name)
        check_digest(digest)
        entries = await asyncio.to_thread(self.storage.referrers, name, digest)
        found = [from_dict(Descriptor, json.loads(e)) for e in entries]
        headers = {}
        artifact_type = request.query.get("artifactType")
        if artifact_type is not None:
            found = [d for d in found if d.artifact_type == artifact_type]
            headers["OCI-Filters-Applied"] = "artifactType"
        body = b'{"schemaVersion":2,"mediaType":"%s","manifests":[%s]}' % (
            OCI_INDEX.encode(), b",".join(dumps(d) for d in found))
        headers["Content-Type"] = OCI_INDEX
        return web.Response(body=body, headers=headers)

    # -- blobs -----------------------------------------------------------------------------

    async def get_blob(self, request: web.Request, name: str, digest: str) -> web.StreamResponse:
        check_name(name)
        check_digest(digest)
        path, _ = self.storage.stat_blob(name, digest)
        # FileResponse: sendfile, Range -> 206 with Content-Range, 416 past the end
        return web.FileResponse(path, chunk_size=1 << 20, headers={
            "Docker-Content-Digest": digest, "Content-Type": "application/octet-stream"})

    async def delete_blob(self, request: web.Request, name: str, digest: str) -> web.Response:
        check_name(name)
        check_digest(digest)
        self.storage.unlink_blob(name, digest)
        return web.Response(status=202, headers={"Docker-Content-Digest": digest})

    @staticmethod
    async def _read_capped(request: web.Request, cap: int) -> bytes:
        chunks, total = [], 0
        while data := await request.content.readany():
            total += len(data)
            if total > cap:
                raise too_large("manifest", cap)
            chunks.append(data)
        return b"".join(chunks)


async def serve(storage: Storage, host: str, port: int, *, htpasswd: Htpasswd | None = None,
                max_upload: int | None = None, read_only: bool = False, ready=None) -> None:
    """Serve until SIGTERM or SIGINT; `ready(host, port)` is called once the socket listens."""
    import signal

    from concurrent.futures import ThreadPoolExecutor

    # the default pool has cpus+4 threads: a few slow fsyncs of finishing uploads would
    # hold up every other upload's writes behind them
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(32, "registry-io"))
    registry = Registry(storage, htpasswd=htpasswd, max_upload=max_upload, read_only=read_only)
    # lingering: after an early answer (401, 413) aiohttp reads and drops the rest of the
    # body so the client sees the answer, but it does not notice a client that left, and a
    # shutdown waits for that; 2 s is enough for a client to stop sending. In-flight
    # uploads at shutdown are resumable, so they get 5 s, not aiohttp's 60.
    runner = web.AppRunner(registry.app(), access_log=None, handle_signals=False,
                           lingering_time=2.0, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True, backlog=1024)
        try:
            await site.start()
        except OSError as exc:
            from berth.errors import Unavailable

            raise Unavailable(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        bound = runner.addresses[0]
        if ready is not None:
            ready(bound[0], bound[1])
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
