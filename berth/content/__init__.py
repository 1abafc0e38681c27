"""Content-addressed blob store in OCI image-layout form.

    <root>/oci-layout                {"imageLayoutVersion": "1.0.0"}
    <root>/index.json                the image records (see berth.image.store)
    <root>/blobs/sha256/<hex>        verified blobs, immutable once renamed into place
    <root>/ingest/<random>           partial writes; never read as content

A blob is hashed while it streams in, its size and digest are checked, it is fsynced and
only then renamed into ``blobs/``: a reader never sees half a blob, and a kill -9 at any
moment leaves at most an orphan in ``ingest/``.
"""

from __future__ import annotations

import os

from berth.errors import DataLoss, NotFound
from berth.fsutil import write_atomic
from berth.oci import digest as _digest

CHUNK = 1 << 20


class Writer:
    """Streams one blob into the store. Use as a context manager; call commit()."""

    def __init__(self, store: "ContentStore") -> None:
        self._store = store
        fd_path = os.path.join(store.ingest_dir, os.urandom(12).hex())
        self._path = fd_path
        self._file = open(fd_path, "xb")
        import hashlib  # OpenSSL's sha256 (~1 GB/s); loaded only when content is written

        self._hash = hashlib.sha256()
        self.size = 0
        self._done = False

    def write(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        self._file.write(data)
        self.size += len(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    def commit(self, expected_digest: str | None = None, expected_size: int | None = None) -> str:
        """Verify, fsync and rename into place; return the digest."""
        self._file.flush()
        actual = self.digest
        if expected_size is not None and expected_size != self.size:
            self.abort()
            raise DataLoss(f"blob size {self.size} does not match the expected {expected_size}"
                           + (f" for {expected_digest}" if expected_digest else ""))
        if expected_digest is not None and expected_digest != actual:
            self.abort()
            raise DataLoss(f"content digest {actual} does not match the expected {expected_digest}")
        os.fsync(self._file.fileno())
        self._file.close()
        target = self._store.path(actual)
        if os.path.exists(target):
            os.unlink(self._path)
        else:
            os.replace(self._path, target)
            self._store.sync_dir()
        self._done = True
        return actual

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        try:
            os.unlink(self._path)
        except FileNotFoundError:
            pass
        self._done = True

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc) -> None:
        if not self._done:
            self.abort()


class ContentStore:
    """Provider (read) and Ingester (write) of verified blobs."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.blob_dir = os.path.join(root, "blobs", "sha256")
        self.ingest_dir = os.path.join(root, "ingest")

    def ensure(self) -> None:
        os.makedirs(self.blob_dir, exist_ok=True)
        os.makedirs(self.ingest_dir, exist_ok=True)
        layout = os.path.join(self.root, "oci-layout")
        if not os.path.exists(layout):
            write_atomic(layout, b'{"imageLayoutVersion":"1.0.0"}')

    def path(self, digest: str) -> str:
        algo, _, hexpart = _digest.validate(digest).partition(":")
        if algo != "sha256":
            raise NotFound(f"blob {digest}: only sha256 blobs are stored")
        return os.path.join(self.blob_dir, hexpart)

    def exists(self, digest: str) -> bool:
        return os.path.exists(self.path(digest))

    def size(self, digest: str) -> int:
        try:
            return os.stat(self.path(digest)).st_size
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the content store") from None

    def read(self, digest: str) -> bytes:
        try:
            with open(self.path(digest), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the content store") from None

    def open(self, digest: str):
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the content store") from None

    def writer(self) -> Writer:
        self.ensure()
        return Writer(self)

    def put(self, data: bytes, expected_digest: str | None = None) -> str:
        with self.writer() as w:
            w.write(data)
            return w.commit(expected_digest, None)

    def delete(self, digest: str) -> None:
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            pass

    def sync_dir(self) -> None:
        fd = os.open(self.blob_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
