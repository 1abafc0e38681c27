"""Garbage collection of berth's registry: mark and sweep, run with the server stopped.

Mark: every manifest of every repository, and all it references: its config and layers,
its subject, an index's children, followed through children and subjects so that an
index keeps what its children need even where their own revision was deleted.
Sweep: every blob nothing marked; then the repository links that pointed at swept blobs
and the referrer entries of deleted manifests.

Like distribution's ``registry garbage-collect``, it runs with the server stopped: an
upload finished between the mark and the sweep would otherwise be swept before its
manifest arrived. That is enforced, not just documented: a server holds the root's lock
shared for its lifetime and gc takes it exclusive, refusing while any server runs.

Never a referenced blob: a manifest that cannot be read or parsed stops the collection
before anything is removed (it might reference anything). Blobs pushed but referenced by
no manifest are garbage, as in distribution; uploads in progress are not blobs and are
left to the server's purge.
"""

from __future__ import annotations

import os

from berth.errors import DataLoss, FailedPrecondition, NotFound
from berth.oci.record import Record
from berth.registry.server import RegistryError
from berth.registry.server import manifest as _manifest
from berth.registry.server.storage import Storage


class Report(Record):
    marked: int                      # blobs kept
    removed: tuple[tuple[str, int], ...]  # (digest, size) of each blob swept (or to sweep)
    links: int                       # repository links and referrer entries removed

    @property
    def freed(self) -> int:
        return sum(size for _, size in self.removed)


def mark(storage: Storage) -> set[str]:
    """Every digest some manifest in `storage` keeps alive, manifests included."""
    marked: set[str] = set()
    queue: list[tuple[str, str | None, str]] = []  # (digest, media type, where it was found)
    for name in storage.repositories():
        for digest in storage.revisions(name):
            media_type = storage.media_type(name, digest)
            if media_type is not None:
                queue.append((digest, media_type, name))
    done: set[tuple[str, bool]] = set()  # (digest, read as a revision)
    while queue:
        digest, media_type, where = queue.pop()
        marked.add(digest)
        key = (digest, media_type is not None)
        if key in done or (digest, True) in done:
            continue
        done.add(key)
        try:
            raw = storage.read_blob(digest)
        except FileNotFoundError:
            continue  # a reference to a blob that is not here: nothing below it to keep
        except OSError as exc:
            raise DataLoss(f"cannot read manifest {digest} of {where}: {exc.strerror}; "
                           "nothing was removed") from None
        try:
            parsed = _manifest.parse(raw, media_type)
        except RegistryError as exc:
            if media_type is None:  # a subject or child that is not a manifest: kept, not read
                continue
            raise DataLoss(f"manifest {digest} of {where} is unreadable ({exc}); nothing was "
                           "removed") from None
        marked.update(parsed.blobs + parsed.foreign)
        for ref in parsed.manifests + ((parsed.subject,) if parsed.subject else ()):
            queue.append((ref, None, where))
    return marked


def collect(root: str, *, dry_run: bool = False, log=None) -> Report:
    """Remove every blob of the registry at `root` that no manifest references.

    `log(line)` hears of each blob as it goes; `dry_run` only reports."""
    if not os.path.isdir(os.path.join(root, "blobs")):
        raise NotFound(f"no registry storage at {root}")
    storage = Storage(root)
    lock = storage.lock(exclusive=True)
    if lock is None:
        raise FailedPrecondition(f"a registry server is running on {storage.root}; stop it "
                                 "first: gc runs with the server stopped")
    try:
        marked = mark(storage)
        removed = []
        for digest in storage.all_blobs():
            if digest in marked:
                continue
            path = storage.blob_path(digest)
            try:
                size = os.stat(path).st_size
                if not dry_run:
                    os.unlink(path)
            except FileNotFoundError:
                continue
            removed.append((digest, size))
            if log is not None:
                log(("blob eligible for deletion: " if dry_run else "deleted blob: ") + digest)
        links = 0 if dry_run else sum(storage.sweep_links(n) for n in storage.repositories())
        if not dry_run:
            for entry in os.scandir(os.path.join(storage.root, "tmp")):
                os.unlink(entry.path)  # no writer runs: every temp name is a torn write
        return Report(len(marked), tuple(removed), links)
    finally:
        os.close(lock)

