"""The registry's storage on disk: blobs shared by digest, per-repository links, tags, uploads.

    blobs/<alg>/<hex>                         the bytes, verified before they land
    repositories/<name>/
        _layers/<alg>/<hex>                   the blob was pushed or mounted here
        _manifests/revisions/<alg>/<hex>      the manifest is here; holds its media type
        _manifests/tags/<tag>                 holds the digest the tag points at
        _referrers/<alg>/<subject-hex>/<digest>   a referrer's descriptor (JSON)
    uploads/<uuid>/{repo,data}                an upload in progress (resumable)
    tmp/                                      temporary names of atomic writes
    lock                                      servers hold it shared, gc exclusive

Blobs are shared, so one push of a layer serves every repository, but a repository reads
only what was pushed or mounted into it: its links are the access list. A name component
never starts with "_" (the grammar), so ``_layers`` never collides with a nested repository.

Every file lands by rename from ``tmp/`` after an fsync, and in an order that keeps the
tree consistent at any kill -9: a blob before a link to it, a manifest's revision before
a tag naming it. An upload lives under ``uploads/`` until its digest is verified, so a
half blob is never visible. Methods here block (disk I/O, hashing): the server calls the
slow ones from a thread, and ``berth registry gc`` calls them directly.
"""

from __future__ import annotations

import os
import re
import time

from berth.errors import InvalidArgument
from berth.fsutil import remove_tree
from berth.oci import digest as _digest
from berth.registry.server import RegistryError

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
NAME_MAX = 255  # distribution's limit on a repository name
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
CHUNK = 1 << 20
UPLOAD_MAX_AGE = 24 * 3600  # distribution's default for purging abandoned uploads


def check_name(name: str) -> str:
    if len(name) > NAME_MAX or not NAME_RE.match(name):
        raise RegistryError("NAME_INVALID", f"invalid repository name {name[:300]!r}",
                            detail={"name": name[:300]})
    return name


def check_tag(tag: str) -> str:
    if not TAG_RE.match(tag):
        raise RegistryError("TAG_INVALID", f"invalid tag {tag[:300]!r}", detail={"tag": tag[:300]})
    return tag


def check_digest(digest: str) -> tuple[str, str]:
    """(algorithm, hex) of a well-formed sha256/sha512 digest, else DIGEST_INVALID."""
    try:
        _digest.validate(digest)
    except InvalidArgument as exc:
        raise RegistryError("DIGEST_INVALID", str(exc), detail={"digest": digest[:300]}) from None
    alg, _, hexpart = digest.partition(":")
    return alg, hexpart


def manifest_unknown(name: str, reference: str) -> RegistryError:
    shown = f"{name}@{reference}" if is_digest(reference) else f"{name}:{reference}"
    return RegistryError("MANIFEST_UNKNOWN", f"manifest unknown: {shown}",
                         detail={"name": name, "reference": reference})


def is_digest(reference: str) -> bool:
    """A manifest reference is a digest when it has a colon: tags cannot."""
    return ":" in reference


class Upload:
    """An upload in progress: its bytes on disk and, while this process has seen every byte,
    a running hash of them, so finishing a 1 GB blob does not read it all back."""

    __slots__ = ("uuid", "repo", "dir", "data", "size", "_hasher", "_hashed", "lock")

    def __init__(self, uuid: str, repo: str, directory: str) -> None:
        self.uuid = uuid
        self.repo = repo
        self.dir = directory
        self.data = os.path.join(directory, "data")
        self.size = os.stat(self.data).st_size
        self._hasher = None
        self._hashed = -1  # no running hash yet: made on the first append at offset 0
        self.lock = None   # the server's asyncio.Lock that serialises requests on this upload

    def open(self) -> int:
        return os.open(self.data, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)

    def append(self, fd: int, chunks: list[bytes]) -> None:
        """Write `chunks` at the end and hash them on the way (blocks: call from a thread).
        One writev, not a join: the bytes are copied once, into the page cache."""
        if self._hashed == -1 and self.size == 0:
            import hashlib

            self._hasher, self._hashed = hashlib.sha256(), 0
        total = sum(len(c) for c in chunks)
        try:
            written = os.writev(fd, chunks)
            if written < total:
                rest = b"".join(chunks)[written:]
                while rest:
                    rest = rest[os.write(fd, rest):]
        except OSError:
            os.ftruncate(fd, self.size)  # disk full: the upload stays what was acknowledged
            raise
        if self._hashed == self.size:
            for chunk in chunks:
                self._hasher.update(chunk)
            self._hashed += total
        self.size += total

    def truncate(self, size: int) -> None:
        """Drop what a failed request appended; the running hash no longer fits, so drop it."""
        os.truncate(self.data, size)
        self.size = size
        if self._hashed != size:
            self._hasher, self._hashed = None, -2

    def digest(self, algorithm: str) -> str:
        if algorithm == "sha256" and self._hasher is not None and self._hashed == self.size:
            return "sha256:" + self._hasher.hexdigest()
        import hashlib

        h = hashlib.new(algorithm)
        with open(self.data, "rb", buffering=0) as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return f"{algorithm}:{h.hexdigest()}"


class Storage:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        for sub in ("blobs", "repositories", "uploads", "tmp"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        self._tmp = os.path.join(self.root, "tmp")

    # -- paths -----------------------------------------------------------------------------

    def blob_path(self, digest: str) -> str:
        alg, hexpart = check_digest(digest)
        return os.path.join(self.root, "blobs", alg, hexpart)

    def _repo(self, name: str) -> str:
        return os.path.join(self.root, "repositories", check_name(name))

    def _layer_link(self, name: str, digest: str) -> str:
        alg, hexpart = check_digest(digest)
        return os.path.join(self._repo(name), "_layers", alg, hexpart)

    def _revision(self, name: str, digest: str) -> str:
        alg, hexpart = check_digest(digest)
        return os.path.join(self._repo(name), "_manifests", "revisions", alg, hexpart)

    def _tags_dir(self, name: str) -> str:
        return os.path.join(self._repo(name), "_manifests", "tags")

    def _referrers_dir(self, name: str, subject: str) -> str:
        alg, hexpart = check_digest(subject)
        return os.path.join(self._repo(name), "_referrers", alg, hexpart)

    # -- atomic writes ---------------------------------------------------------------------

    def _write(self, path: str, data: bytes, *, sync_dir: bool = False) -> None:
        """Land `data` at `path` whole or not at all: written under tmp/, fsynced, renamed."""
        tmp = os.path.join(self._tmp, os.urandom(12).hex())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        self._rename(tmp, path, sync_dir)

    @staticmethod
    def _rename(src: str, path: str, sync_dir: bool) -> None:
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        os.replace(src, path)
        if sync_dir:
            dfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    # -- blobs -----------------------------------------------------------------------------

    def blob_size(self, digest: str) -> int | None:
        try:
            return os.stat(self.blob_path(digest)).st_size
        except FileNotFoundError:
            return None

    def repo_has_blob(self, name: str, digest: str) -> bool:
        """Whether `name` may read blob `digest`: pushed or mounted there, or one of its
        manifests (distribution serves manifests from the blob endpoint too), and present."""
        linked = (os.path.exists(self._layer_link(name, digest))
                  or os.path.exists(self._revision(name, digest)))
        return linked and os.path.exists(self.blob_path(digest))

    def stat_blob(self, name: str, digest: str) -> tuple[str, int]:
        """(path, size) of a blob `name` may read, else BLOB_UNKNOWN."""
        if os.path.exists(self._layer_link(name, digest)) or os.path.exists(
                self._revision(name, digest)):
            path = self.blob_path(digest)
            try:
                return path, os.stat(path).st_size
            except FileNotFoundError:
                pass
        raise RegistryError("BLOB_UNKNOWN", f"blob unknown to registry: {digest}",
                            detail={"digest": digest})

    def link_blob(self, name: str, digest: str) -> None:
        path = self._layer_link(name, digest)
        if not os.path.exists(path):
            self._write(path, digest.encode())

    def unlink_blob(self, name: str, digest: str) -> None:
        """Forget that `name` holds the blob; the bytes stay until gc finds nothing uses them."""
        try:
            os.unlink(self._layer_link(name, digest))
        except FileNotFoundError:
            raise RegistryError("BLOB_UNKNOWN", f"blob unknown to registry: {digest}",
                                detail={"digest": digest}) from None

    # -- uploads ---------------------------------------------------------------------------

    def new_upload(self, name: str) -> Upload:
        import uuid as _uuid

        check_name(name)
        uuid = str(_uuid.uuid4())
        directory = os.path.join(self.root, "uploads", uuid)
        os.mkdir(directory)
        with open(os.path.join(directory, "data"), "xb"):
            pass
        # written last: an upload directory without its repo file is a torn one, purged
        with open(os.path.join(directory, "repo"), "x") as f:
            f.write(name)
        return Upload(uuid, name, directory)

    def get_upload(self, name: str, uuid: str) -> Upload:
        """The upload `uuid` of repository `name`, from disk (a restarted server resumes it)."""
        unknown = RegistryError("BLOB_UPLOAD_UNKNOWN", f"blob upload unknown to registry: {uuid}",
                                detail={"uuid": uuid[:100]})
        if not _UUID_RE.match(uuid):
            raise unknown
        directory = os.path.join(self.root, "uploads", uuid)
        try:
            with open(os.path.join(directory, "repo")) as f:
                repo = f.read()
            upload = Upload(uuid, repo, directory)
        except (FileNotFoundError, NotADirectoryError):
            raise unknown from None
        if repo != name:
            raise unknown
        return upload

    def commit_upload(self, upload: Upload, name: str, digest: str) -> int:
        """Verify the upload against `digest` and make it the blob; return its size.

        A mismatch removes the upload: nothing of it is stored (DIGEST_INVALID)."""
        alg, _ = check_digest(digest)
        actual = upload.digest(alg)
        if actual != digest:
            self.cancel_upload(upload)
            raise RegistryError("DIGEST_INVALID",
                                f"provided digest {digest} does not match uploaded content "
                                f"({actual})", detail={"digest": digest, "actual": actual})
        path = self.blob_path(digest)
        if not os.path.exists(path):
            fd = os.open(upload.data, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._rename(upload.data, path, sync_dir=True)
        size = os.stat(path).st_size
        self.link_blob(name, digest)
        self.cancel_upload(upload)
        return size

    def cancel_upload(self, upload: Upload) -> None:
        remove_tree(upload.dir)

    def purge_uploads(self, max_age: float = UPLOAD_MAX_AGE) -> int:
        """Remove uploads started more than `max_age` seconds ago (or torn at creation)."""
        base = os.path.join(self.root, "uploads")
        cutoff = time.time() - max_age
        removed = 0
        for entry in os.scandir(base):
            try:
                started = os.stat(os.path.join(entry.path, "repo")).st_mtime
            except FileNotFoundError:
                started = entry.stat(follow_symlinks=False).st_mtime
            except NotADirectoryError:
                started = 0
            if started < cutoff:
                remove_tree(entry.path)
                removed += 1
        for entry in os.scandir(self._tmp):  # temp names of writes a kill -9 interrupted
            if entry.stat(follow_symlinks=False).st_mtime < time.time() - 3600:
                os.unlink(entry.path)
        return removed

    # -- manifests and tags ----------------------------------------------------------------

    def missing_references(self, name: str, blobs, manifests) -> str | None:
        """The first of the digests a manifest needs that `name` does not hold, or None."""
        for digest in blobs:
            if not self.repo_has_blob(name, digest):
                return digest
        for digest in manifests:
            if not self.has_manifest(name, digest):
                return digest
        return None

    def has_manifest(self, name: str, digest: str) -> bool:
        return os.path.exists(self._revision(name, digest)) and os.path.exists(
            self.blob_path(digest))

    def put_manifest(self, name: str, digest: str, raw: bytes, media_type: str, *,
                     referrer: tuple[str, bytes] | None = None, tag: str | None = None) -> None:
        """Store a manifest as pushed; `referrer` is (subject, descriptor JSON) when it has one."""
        path = self.blob_path(digest)
        if not os.path.exists(path):
            self._write(path, raw, sync_dir=True)
        self._write(self._revision(name, digest), media_type.encode())
        if referrer is not None:
            subject, descriptor = referrer
            self._write(os.path.join(self._referrers_dir(name, subject), digest), descriptor)
        if tag is not None:
            self._write(os.path.join(self._tags_dir(name), check_tag(tag)), digest.encode())

    def resolve(self, name: str, reference: str) -> tuple[str, str]:
        """(digest, media type) of the manifest a tag or digest names in `name`."""
        if is_digest(reference):
            digest = reference
            check_digest(digest)
        else:
            try:
                with open(os.path.join(self._tags_dir(name), check_tag(reference))) as f:
                    digest = f.read().strip()
            except FileNotFoundError:
                raise manifest_unknown(name, reference) from None
        try:
            with open(self._revision(name, digest)) as f:
                media_type = f.read().strip()
        except FileNotFoundError:
            raise manifest_unknown(name, reference) from None
        return digest, media_type

    def read_blob(self, digest: str) -> bytes:
        with open(self.blob_path(digest), "rb") as f:
            return f.read()

    def delete_tag(self, name: str, tag: str) -> None:
        try:
            os.unlink(os.path.join(self._tags_dir(name), check_tag(tag)))
        except FileNotFoundError:
            raise manifest_unknown(name, tag) from None

    def delete_manifest(self, name: str, digest: str, subject: str | None) -> None:
        """Remove a manifest from `name`: the tags naming it first, its revision last."""
        revision = self._revision(name, digest)
        if not os.path.exists(revision):
            raise manifest_unknown(name, digest)
        for tag in self._list_tags(name):
            try:
                with open(os.path.join(self._tags_dir(name), tag)) as f:
                    target = f.read().strip()
            except FileNotFoundError:
                continue
            if target == digest:
                try:
                    os.unlink(os.path.join(self._tags_dir(name), tag))
                except FileNotFoundError:
                    pass
        if subject:
            try:
                os.unlink(os.path.join(self._referrers_dir(name, subject), digest))
            except FileNotFoundError:
                pass
        os.unlink(revision)

    def repo_exists(self, name: str) -> bool:
        repo = self._repo(name)
        return os.path.isdir(os.path.join(repo, "_manifests")) or os.path.isdir(
            os.path.join(repo, "_layers"))

    def _list_tags(self, name: str) -> list[str]:
        try:
            return sorted(os.listdir(self._tags_dir(name)))
        except FileNotFoundError:
            return []

    def tags(self, name: str) -> list[str]:
        if not self.repo_exists(name):
            raise RegistryError("NAME_UNKNOWN", f"repository name not known to registry: {name}",
                                detail={"name": name})
        return self._list_tags(name)

    def repositories(self) -> list[str]:
        base = os.path.join(self.root, "repositories")
        out = []
        for dirpath, dirnames, _ in os.walk(base):
            if "_manifests" in dirnames or "_layers" in dirnames:
                out.append(os.path.relpath(dirpath, base))
            dirnames[:] = [d for d in dirnames if not d.startswith("_")]
        return sorted(out)

    def revisions(self, name: str) -> list[str]:
        """The digests of every manifest in `name`."""
        base = os.path.join(self._repo(name), "_manifests", "revisions")
        out = []
        for alg in sorted(os.listdir(base)) if os.path.isdir(base) else ():
            out += [f"{alg}:{h}" for h in sorted(os.listdir(os.path.join(base, alg)))]
        return out

    def media_type(self, name: str, digest: str) -> str | None:
        """The media type `digest` was pushed with into `name`, or None if it is not there."""
        try:
            with open(self._revision(name, digest)) as f:
                return f.read().strip()
        except FileNotFoundError:
            return None

    def sweep_links(self, name: str) -> int:
        """Remove links of `name` to blobs that are gone and referrer entries of manifests
        that are gone (what gc leaves behind); return how many."""
        removed = 0
        for digest in self.layer_links(name):
            if not os.path.exists(self.blob_path(digest)):
                os.unlink(self._layer_link(name, digest))
                removed += 1
        for dirpath, _, files in os.walk(os.path.join(self._repo(name), "_referrers")):
            for digest in files:
                if not self.has_manifest(name, digest):
                    os.unlink(os.path.join(dirpath, digest))
                    removed += 1
        return removed

    def layer_links(self, name: str) -> list[str]:
        base = os.path.join(self._repo(name), "_layers")
        out = []
        for alg in sorted(os.listdir(base)) if os.path.isdir(base) else ():
            out += [f"{alg}:{h}" for h in sorted(os.listdir(os.path.join(base, alg)))]
        return out

    def referrers(self, name: str, subject: str) -> list[bytes]:
        """Descriptor JSON of each manifest in `name` whose subject is `subject`."""
        base = self._referrers_dir(name, subject)
        out = []
        for digest in sorted(os.listdir(base)) if os.path.isdir(base) else ():
            if not os.path.exists(self._revision(name, digest)):
                continue  # deleted while its entry was being removed
            try:
                with open(os.path.join(base, digest), "rb") as f:
                    out.append(f.read())
            except FileNotFoundError:
                continue
        return out

    def all_blobs(self) -> list[str]:
        base = os.path.join(self.root, "blobs")
        out = []
        for alg in sorted(os.listdir(base)):
            out += [f"{alg}:{h}" for h in sorted(os.listdir(os.path.join(base, alg)))]
        return out

    # -- the lock between servers and the collector ----------------------------------------

    def lock(self, exclusive: bool) -> int | None:
        """Hold the root's lock (shared for a server, exclusive for gc); None if it is taken.
        The lock goes with the process, kill -9 included."""
        import fcntl

        fd = os.open(os.path.join(self.root, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd
