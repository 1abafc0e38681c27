"""Blob upload sessions: the push half of the spec, over HTTP.

    POST   /v2/<name>/blobs/uploads/                   202, a session (Location, Docker-Upload-UUID)
    POST   /v2/<name>/blobs/uploads/?digest=D          201, the whole blob in one request
    POST   /v2/<name>/blobs/uploads/?mount=D&from=R    201 if R holds D, else a session (202)
    PATCH  <session>  [Content-Range: start-end]       202, appended (contiguous only, else 416)
    PUT    <session>?digest=D  [last chunk]            201, verified and stored, or DIGEST_INVALID
    GET    <session>                                   204, how much arrived (Range)
    DELETE <session>                                   204, cancelled

A session's bytes live on disk (``Storage`` uploads), so a client can resume one after
a dropped connection or a server restart. Requests on one session are serialised; the
running hash stays with the in-memory ``Upload``, so finishing a blob does not read it back.
"""

from __future__ import annotations

import asyncio
import os
import re

from aiohttp import web

from berth.registry.server import RegistryError
from berth.registry.server.storage import Storage, Upload, check_digest, check_name

READ_AHEAD = 4 << 20  # bytes of a request body buffered ahead of the disk, per upload
MIN_BATCH = 1 << 20   # the writer thread gets at least this much at once (until the end)
BATCH = 4 << 20       # and at most this much, when it was still busy with the last batch
BATCH_CHUNKS = 512    # and in at most this many pieces (writev takes up to IOV_MAX, 1024)


def too_large(what: str, limit: int) -> RegistryError:
    return RegistryError("SIZE_INVALID", f"{what} larger than this registry's limit of "
                         f"{limit} bytes", detail={"limit": limit}, status=413)


def _range(size: int) -> str:
    # distribution's form: "0-0" for an empty upload too
    return f"0-{max(size - 1, 0)}"


def _parse_content_range(text: str) -> tuple[int, int]:
    """The spec's ``<start>-<end>``; the RFC's ``bytes <start>-<end>/<total>`` is taken too."""
    match = re.match(r"^(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?$", text.strip())
    if not match:
        raise RegistryError("RANGE_INVALID", f"invalid Content-Range {text[:100]!r}")
    return int(match.group(1)), int(match.group(2))


def _blob_created(name: str, digest: str) -> web.Response:
    return web.Response(status=201, headers={"Location": f"/v2/{name}/blobs/{digest}",
                                             "Docker-Content-Digest": digest})


def _session_headers(upload: Upload) -> dict:
    return {"Location": f"/v2/{upload.repo}/blobs/uploads/{upload.uuid}",
            "Range": _range(upload.size), "Docker-Upload-UUID": upload.uuid}


class Uploads:
    """The upload sessions of one served registry."""

    def __init__(self, storage: Storage, max_upload: int | None = None) -> None:
        self.storage = storage
        self.max_upload = max_upload
        self._open: dict[str, Upload] = {}

    def forget_gone(self) -> None:
        """Drop sessions whose directory was purged."""
        for uuid, upload in list(self._open.items()):
            if not os.path.isdir(upload.dir):
                self._open.pop(uuid, None)

    def _check_size(self, size: int) -> None:
        if self.max_upload is not None and size > self.max_upload:
            raise too_large("blob", self.max_upload)

    def _remember(self, upload: Upload) -> Upload:
        upload.lock = asyncio.Lock()
        self._open[upload.uuid] = upload
        return upload

    def _session(self, name: str, uuid: str) -> Upload:
        upload = self._open.get(uuid)
        if upload is not None and os.path.isdir(upload.dir):
            if upload.repo != name:
                raise RegistryError("BLOB_UPLOAD_UNKNOWN", f"blob upload unknown to registry: "
                                    f"{uuid}", detail={"uuid": uuid})
            return upload
        self._open.pop(uuid, None)
        return self._remember(self.storage.get_upload(name, uuid))

    @staticmethod
    def _still_open(upload: Upload) -> None:
        """After waiting for a session's lock: the request before may have finished it."""
        if not os.path.isdir(upload.dir):
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry: "
                                f"{upload.uuid}", detail={"uuid": upload.uuid})

    def _drop(self, upload: Upload) -> None:
        self._open.pop(upload.uuid, None)
        self.storage.cancel_upload(upload)

    # -- the handlers ----------------------------------------------------------------------

    async def start(self, request: web.Request, name: str) -> web.Response:
        check_name(name)
        query = request.query
        mount = query.get("mount")
        if mount is not None:
            check_digest(mount)
            source = query.get("from")
            try:
                readable = bool(source) and self.storage.repo_has_blob(check_name(source), mount)
            except RegistryError:
                readable = False
            if readable:
                await asyncio.to_thread(self.storage.link_blob, name, mount)
                return _blob_created(name, mount)
            # not mountable: the spec's fallback is a plain upload session
        digest = query.get("digest")
        if digest is not None:  # monolithic: the whole blob in this request
            check_digest(digest)
            self._check_size(request.content_length or 0)
            upload = self.storage.new_upload(name)
            try:
                await self._receive(request, upload)
                await asyncio.to_thread(self.storage.commit_upload, upload, name, digest)
            finally:
                self.storage.cancel_upload(upload)
            return _blob_created(name, digest)
        upload = self._remember(self.storage.new_upload(name))
        return web.Response(status=202, headers=_session_headers(upload))

    async def status(self, request: web.Request, name: str, uuid: str) -> web.Response:
        check_name(name)
        upload = self._session(name, uuid)
        return web.Response(status=204, headers=_session_headers(upload))

    async def patch(self, request: web.Request, name: str, uuid: str) -> web.Response:
        check_name(name)
        upload = self._session(name, uuid)
        async with upload.lock:
            self._still_open(upload)
            await self._append(request, upload)
        return web.Response(status=202, headers=_session_headers(upload))

    async def finish(self, request: web.Request, name: str, uuid: str) -> web.Response:
        check_name(name)
        digest = request.query.get("digest")
        if not digest:
            raise RegistryError("DIGEST_INVALID", "digest missing: finish an upload with "
                                "PUT ...?digest=<digest>")
        check_digest(digest)
        upload = self._session(name, uuid)
        async with upload.lock:
            self._still_open(upload)
            if request.can_read_body:
                await self._append(request, upload)
            try:
                await asyncio.to_thread(self.storage.commit_upload, upload, name, digest)
            finally:
                if not os.path.isdir(upload.dir):  # stored, or refused and removed
                    self._open.pop(upload.uuid, None)
        return _blob_created(name, digest)

    async def cancel(self, request: web.Request, name: str, uuid: str) -> web.Response:
        check_name(name)
        upload = self._session(name, uuid)
        async with upload.lock:
            self._still_open(upload)
            self._drop(upload)
        return web.Response(status=204)

    # -- bodies ----------------------------------------------------------------------------

    async def _append(self, request: web.Request, upload: Upload) -> None:
        """Append the request's body to `upload`, honouring a Content-Range (contiguous only)."""
        start = upload.size
        expected = None
        content_range = request.headers.get("Content-Range")
        if content_range is not None:
            first, last = _parse_content_range(content_range)
            length = request.content_length
            if first != start or last < first or (length is not None
                                                  and length != last - first + 1):
                raise RegistryError("RANGE_INVALID", f"Content-Range {content_range} does not "
                                    f"continue the upload at {start} bytes",
                                    headers=_session_headers(upload))
            expected = last - first + 1
        try:
            self._check_size(start + (request.content_length or 0))
            received = await self._receive(request, upload)
        except RegistryError as exc:
            if exc.code == "SIZE_INVALID":
                self._drop(upload)  # it can never be finished
            raise
        if expected is not None and received != expected:
            await asyncio.to_thread(upload.truncate, start)
            raise RegistryError("RANGE_INVALID", f"Content-Range {content_range} announced "
                                f"{expected} bytes, the body had {received}",
                                headers=_session_headers(upload))

    async def _receive(self, request: web.Request, upload: Upload) -> int:
        """Stream the body onto the upload. A thread writes and hashes one batch of chunks
        while the loop gathers the next. Batches are at least MIN_BATCH (clients send
        32-64 KiB at a time, and a hand-off to a thread per piece cost more CPU than the
        hashing), grow to BATCH while the writer is busy, and are written with one writev:
        the bytes are copied once, with at most two batches in memory. (hashlib and
        os.writev release the GIL: both cores work.)"""
        content = request.content
        content.set_read_chunk_size(READ_AHEAD)
        loop = asyncio.get_running_loop()
        start = upload.size
        fd = upload.open()
        pending = None
        received = 0
        batch: list[bytes] = []
        batched = 0
        try:
            while True:
                data, _ = await content.readchunk()
                if data:
                    batch.append(data)
                    batched += len(data)
                    if len(batch) < BATCH_CHUNKS and (
                            batched < MIN_BATCH or (batched < BATCH and pending is not None
                                                    and not pending.done())):
                        continue
                elif not content.at_eof():
                    # (b"", True): a chunk of a chunked body ended after its data was read.
                    # at_eof, not is_eof: the end may have arrived with more data behind it
                    continue
                if batch:
                    received += batched
                    self._check_size(start + received)
                    if pending is not None:
                        await pending
                    pending = loop.run_in_executor(None, upload.append, fd, batch)
                    batch, batched = [], 0
                if not data:
                    break
            if pending is not None:
                await pending
        finally:
            if pending is not None and not pending.done():
                # the write still runs in its thread: the fd must outlive it
                pending.add_done_callback(lambda _f: os.close(fd))
            else:
                os.close(fd)
        return received
