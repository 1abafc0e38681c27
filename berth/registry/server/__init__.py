"""berth's own registry: the OCI distribution spec v1.1 (and the Docker Registry HTTP API v2
behaviours clients rely on), served from a directory.

    storage.py   the on-disk layout: blobs by digest, per-repository links, tags, uploads
    manifest.py  what a pushed manifest must look like, and what it references (pure)
    auth.py      htpasswd basic auth and the brake on password guessing
    app.py       the HTTP edge: routes, handlers, and the one table of codes to statuses
    gc.py        mark and sweep of blobs no manifest references (the server stopped)

Every failure a client can act on is a ``RegistryError`` carrying one of the spec's error
codes; the HTTP status of each code is in ``STATUS`` below, the one place that maps them.
"""

from __future__ import annotations

from berth.errors import BerthError

# the spec's error codes (plus distribution's RANGE_INVALID, TAG_INVALID and
# PAGINATION_NUMBER_INVALID, which clients also meet) -> HTTP status
STATUS = {
    "BLOB_UNKNOWN": 404,
    "BLOB_UPLOAD_INVALID": 400,
    "BLOB_UPLOAD_UNKNOWN": 404,
    "DIGEST_INVALID": 400,
    "MANIFEST_BLOB_UNKNOWN": 400,
    "MANIFEST_INVALID": 400,
    "MANIFEST_UNKNOWN": 404,
    "NAME_INVALID": 400,
    "NAME_UNKNOWN": 404,
    "SIZE_INVALID": 400,
    "UNAUTHORIZED": 401,
    "DENIED": 403,
    "UNSUPPORTED": 405,
    "TOOMANYREQUESTS": 429,
    "RANGE_INVALID": 416,
    "TAG_INVALID": 400,
    "PAGINATION_NUMBER_INVALID": 400,
    "UNKNOWN": 500,
}


class RegistryError(BerthError):
    """A failure with a distribution-spec error code; ``status`` overrides the code's default
    where the spec asks for another (413 for a body over the size limit, 404 for an unknown
    endpoint)."""

    def __init__(self, code: str, message: str, detail=None, status: int | None = None,
                 headers: dict | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail
        self.status = status or STATUS[code]
        self.headers = headers or {}
