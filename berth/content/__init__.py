"""Content-addressed blob store in OCI image-layout form.

    <root>/oci-layout                {"imageLayoutVersion": "1.0.0"}
    <root>/index.json                the image records (see berth.image)
    <root>/blobs/sha256/<hex>        verified blobs, immutable once renamed into place
    <root>/ingest/<random>           partial writes; never read as content
    <root>/gc.lock                   the lease lock (below)

A blob is hashed while it streams in, its size and digest are checked, it is fsynced and
only then renamed into ``blobs/`` (and the directory fsynced): a reader never sees half a
blob, and a kill -9 at any moment leaves at most an orphan in ``ingest/``.

Leases. A blob is garbage the moment nothing references it, and every write is
multi-step (blob, then more blobs, then the record that refers to them), so a garbage
collector running in between would delete what a writer is still assembling. Rather
than containerd's per-object lease records, berth uses one reader-writer lock: writers
hold it shared for their whole multi-step operation (``lease()``; a Writer holds one
from open to commit), the collector holds it exclusive (``lease(exclusive=True)``), so
it only ever sees a store where nothing is half written. Writers never wait for each
other; the collector waits for writers to finish, and writers wait for one sweep,
which takes milliseconds. (Linux grants a shared lock even while an exclusive one
waits, so back-to-back overlapping writes delay a collection; they never lose to it.)

It is a POSIX record lock (fcntl), not flock: flock locks belong to the open file and
are inherited by forked children, so a container monitor forked during a write would
hold the lease for the container's lifetime; a POSIX lock belongs to the process alone
and dies with it, kill -9 included. Because closing any descriptor of the lock file
drops a process's POSIX locks, each process keeps one descriptor per lock file and
counts nested leases on it.
"""

from __future__ import annotations

import os

from berth.errors import DataLoss, NotFound
from berth.fsutil import WRITEBACK_STEP, write_atomic
from berth.oci import digest as _digest

CHUNK = 1 << 20
LOCK_NAME = "gc.lock"

# lock file (st_dev, st_ino) -> [pid, fd, exclusive, depth]: the leases this process holds.
# Keyed by inode, not path: two spellings of one root must share the one descriptor.
_HELD: dict[tuple[int, int], list] = {}


class Lease:
    """A shared (writer) or exclusive (collector) hold on a content store; re-entrant.

    A shared lease inside an exclusive one is free (the collector may unpack); an
    exclusive one inside a shared one would wait for itself, so it is refused.
    """

    def __init__(self, path: str, exclusive: bool) -> None:
        self.path = path
        self.exclusive = exclusive
        self._key: tuple[int, int] | None = None

    def acquire(self) -> "Lease":
        import fcntl

        # never open a second descriptor to find out: closing it would drop the lock
        try:
            st = os.stat(self.path)
            held = _HELD.get((st.st_dev, st.st_ino))
        except FileNotFoundError:
            held = None
        if held is not None and held[0] == os.getpid():
            if self.exclusive and not held[2]:
                raise RuntimeError("a shared lease cannot be upgraded to an exclusive one")
            held[3] += 1
            self._key = (st.st_dev, st.st_ino)
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            st = os.fstat(fd)
            fcntl.lockf(fd, fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
        self._key = (st.st_dev, st.st_ino)
        _HELD[self._key] = [os.getpid(), fd, self.exclusive, 1]
        return self

    def release(self) -> None:
        if self._key is None:
            return
        held = _HELD[self._key]
        held[3] -= 1
        if held[3] == 0:
            del _HELD[self._key]
            os.close(held[1])  # drops the lock
        self._key = None

    def __enter__(self) -> "Lease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class Writer:
    """Streams one blob into the store. Use as a context manager; call commit()."""

    def __init__(self, store: "ContentStore") -> None:
        self._store = store
        self._lease = store.lease().acquire()
        self._path = os.path.join(store.ingest_dir, os.urandom(12).hex())
        try:
            self._file = open(self._path, "xb")
        except BaseException:
            self._lease.release()
            raise
        import hashlib  # OpenSSL's sha256 (~1 GB/s); loaded only when content is written

        self._hash = hashlib.sha256()
        self.size = 0
        self._kicked = 0  # bytes handed to the disk so far
        self._done = False

    def write(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        self._file.write(data)
        self.size += len(data)
        if self.size - self._kicked >= WRITEBACK_STEP:
            # start the disk on it now, so that commit's fsync finds little left to write
            from berth.linux import syscalls

            self._file.flush()
            syscalls().start_writeback(self._file.fileno(), self._kicked, self.size - self._kicked)
            self._kicked = self.size

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
        try:
            os.fsync(self._file.fileno())
            self._file.close()
            target = self._store.path(actual)
            try:
                present = os.stat(target).st_size == self.size
            except FileNotFoundError:
                present = False
            if present:
                os.unlink(self._path)
            else:
                # absent, or a stored copy of the wrong size (damaged): ours is verified
                os.replace(self._path, target)
                self._store.sync_dir()
        except BaseException:
            self.abort()
            raise
        self._done = True
        self._lease.release()
        return actual

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        try:
            os.unlink(self._path)
        except FileNotFoundError:
            pass
        self._done = True
        self._lease.release()

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

    def lease(self, exclusive: bool = False) -> Lease:
        """Hold off garbage collection (shared), or be the collector (exclusive)."""
        if not os.path.isdir(self.root):
            os.makedirs(self.root, exist_ok=True)
        return Lease(os.path.join(self.root, LOCK_NAME), exclusive)

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

    def verify(self, digest: str) -> bool:
        """Whether the stored blob still hashes to its name (NotFound when it is absent)."""
        return self.hash_of(digest) == digest

    def hash_of(self, digest: str) -> str:
        """What the blob stored under `digest` actually hashes to."""
        import hashlib

        h = hashlib.sha256()
        with self.open(digest) as f:
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while n := f.readinto(buf):
                h.update(view[:n])
        return "sha256:" + h.hexdigest()

    def list(self) -> list[str]:
        """Digests of the stored blobs (files in blobs/ that are not blob names are left out)."""
        return ["sha256:" + n for n in _listdir(self.blob_dir) if _is_hex64(n)]

    def strays(self) -> list[str]:
        """Paths in blobs/sha256 whose names are not sha256 digests: never written by berth."""
        return [os.path.join(self.blob_dir, n) for n in _listdir(self.blob_dir) if not _is_hex64(n)]

    def temporaries(self) -> list[str]:
        """Partial writes: ingest files and atomic-write temporaries of the layout's files."""
        out = [os.path.join(self.ingest_dir, n) for n in _listdir(self.ingest_dir)]
        out += [os.path.join(self.root, n) for n in _listdir(self.root) if ".tmp-" in n]
        return out

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


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def _is_hex64(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)
