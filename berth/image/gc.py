"""Garbage collection and consistency of the image store: mark, sweep, prune, check, repair.

What is kept: every blob reachable from an image record in index.json (index -> its
manifests, recursively; manifest -> config + layers), and every snapshot whose chain ID
such an image's config yields or a container records (containers/*/container.json,
["Berth"]["ImageChain"]; read as data, so this layer imports nothing of the containers').
Everything else in the store is garbage: blobs, snapshots, and what interrupted writes
left in ingest/ and snapshots/.tmp-*.

Why one lock rather than containerd's per-object leases: every write here is a few
steps that end with a record, so "nothing is half written" is the only state the
collector needs, and a reader-writer lock gives exactly that (berth.content explains the
lock). Writers take it shared and never wait for each other; the collector takes it
exclusive, so it marks and sweeps a store that is quiet for those milliseconds, and a
pull or commit that starts meanwhile waits for the sweep instead of losing its blobs.
Temporaries are removed only when older than the collector's start, so one that a
write without a lease begins during the sweep is not taken for a leftover (a write
without a lease that began before is not safe: take the lease).

``mark`` is pure (a reader function in, sets out) so it is tested without a disk.
"""

from __future__ import annotations

import json
import os
import time

from berth.errors import BerthError, DataLoss, NotFound
from berth.fsutil import remove_tree
from berth.image import ImageStore, document_kind, host_manifest
from berth.oci import digest as _digest
from berth.oci import image as oci
from berth.oci.record import Record
from berth.snapshot import tree_size


class Marked(Record):
    blobs: frozenset  # digests reachable from the roots (present ones)
    chains: frozenset  # chain IDs of the layers of every image config reached
    missing: frozenset  # digests a document refers to that `read` could not give


def build_cache_roots(root: str) -> list:
    """The build cache's steps (<root>/build-cache/steps/*: one manifest digest each) are
    roots too: the images of intermediate steps, which have no name. Read as data, so this
    layer knows nothing of the builder."""
    steps = os.path.join(root, "build-cache", "steps")
    out = []
    for name in os.listdir(steps) if os.path.isdir(steps) else ():
        try:
            with open(os.path.join(steps, name), "rb") as f:
                digest = f.read(200).decode().strip()
        except (OSError, UnicodeDecodeError):
            continue
        if digest.startswith("sha256:"):
            out.append(oci.Descriptor(oci.OCI_MANIFEST, digest, 0))
    return out


def mark(roots, read) -> Marked:
    """Everything reachable from `roots` (descriptors of image records).

    `read(digest)` returns a document's bytes, or None when it is absent (or not to be
    trusted). Layers are never read: they are leaves. A document that is not JSON, or
    not a manifest or index, is kept but leads nowhere.
    """
    from berth.oci.codec import from_dict

    blobs: set[str] = set()
    chains: set[str] = set()
    missing: set[str] = set()
    stack = [(d.digest, d.media_type, "document") for d in roots]
    while stack:
        digest, media, role = stack.pop()
        if digest in blobs or digest in missing:
            continue
        if role == "layer":
            blobs.add(digest)
            continue
        raw = read(digest)
        if raw is None:
            missing.add(digest)
            continue
        blobs.add(digest)
        try:
            doc = json.loads(raw)
            if role == "config":
                diff_ids = from_dict(oci.ImageConfig, doc).rootfs.diff_ids
                chains.update(_digest.chain_ids([_digest.validate(d) for d in diff_ids]))
                continue
            kind = document_kind(doc, media)
            if kind == "index":
                for child in from_dict(oci.Index, doc).manifests:
                    stack.append((child.digest, child.media_type, "document"))
            elif kind == "manifest":
                manifest = from_dict(oci.Manifest, doc)
                stack.append((manifest.config.digest, manifest.config.media_type, "config"))
                stack.extend((layer.digest, layer.media_type, "layer")
                             for layer in manifest.layers)
        except (ValueError, TypeError, AttributeError, BerthError):
            continue  # unreadable: kept, for `system check` to report
    return Marked(frozenset(blobs), frozenset(chains), frozenset(missing))


class ContainerRefs(Record):
    records: tuple  # (container ID, image ID, chain IDs) of each readable record
    unreadable: tuple  # container IDs whose record cannot be read

    @property
    def image_ids(self) -> set[str]:
        return {image for _cid, image, _chains in self.records}

    @property
    def chains(self) -> set[str]:
        return {c for _cid, _image, chains in self.records for c in chains}


def container_refs(root: str) -> ContainerRefs:
    """What the containers under `root` use. A directory without a record yet is skipped:
    a create holds a lease until its record exists."""
    base = os.path.join(root, "containers")
    records, unreadable = [], []
    for cid in sorted(os.listdir(base)) if os.path.isdir(base) else ():
        if cid.startswith("."):
            continue
        try:
            with open(os.path.join(base, cid, "container.json"), "rb") as f:
                record = json.loads(f.read())
            records.append((cid, record["Image"], tuple(record["Berth"]["ImageChain"])))
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError):
            unreadable.append(cid)
    return ContainerRefs(tuple(records), tuple(unreadable))


# --- sweep ----------------------------------------------------------------------------


class SweepReport(Record):
    blobs: tuple = ()  # (digest, bytes)
    snapshots: tuple = ()  # (chain ID, bytes)
    temporaries: tuple = ()  # (path, bytes)

    @property
    def reclaimed(self) -> int:
        return sum(size for group in (self.blobs, self.snapshots, self.temporaries)
                   for _what, size in group)


class Candidates(Record):
    blobs: frozenset
    chains: frozenset


def references(store: ImageStore, image) -> Candidates:
    """What `image` refers to: the only things a delete of it may sweep."""
    marked = mark([oci.Descriptor(None, image.manifest_digest, 0)], _reader(store))
    return Candidates(marked.blobs, marked.chains | frozenset(image.chain_ids))


def _reader(store: ImageStore, trusted: set | None = None):
    def read(digest: str) -> bytes | None:
        if trusted is not None and digest not in trusted:
            return None
        try:
            return store.content.read(digest)
        except (NotFound, BerthError):
            return None
    return read


def sweep(store: ImageStore, candidates: Candidates | None = None,
          started: float | None = None) -> SweepReport:
    """Remove what nothing references. The caller holds ``store.content.lease(exclusive=True)``.

    With `candidates`, only those blobs and snapshots may go and temporaries stay (a
    delete); otherwise everything unreferenced goes, and temporaries older than `started`.
    """
    records = store.records()  # a corrupt index raises here: never sweep without roots
    marked = mark(records + build_cache_roots(store.root), _reader(store))
    refs = container_refs(store.root)
    blobs, snapshots, temporaries = [], [], []
    for digest in (candidates.blobs if candidates else store.content.list()):
        if digest in marked.blobs:
            continue
        try:
            size = store.content.size(digest)
        except (NotFound, BerthError):
            continue
        store.content.delete(digest)
        blobs.append((digest, size))
    # a container record we cannot read might use any snapshot: keep them all
    if not refs.unreadable:
        keep = marked.chains | refs.chains
        for chain in (candidates.chains if candidates else store.snapshots.list()):
            if chain in keep or not os.path.isdir(store.snapshots.path(chain)):
                continue
            size = store.snapshots.disk_usage(chain)
            store.snapshots.remove(chain)
            snapshots.append((chain, size))
    if candidates is None:
        started = time.time() if started is None else started
        for path in store.content.temporaries() + store.snapshots.temporaries():
            try:
                if os.lstat(path).st_mtime >= started:
                    continue  # a write that began after we did, and forgot its lease
            except FileNotFoundError:
                continue
            size = tree_size(path)
            remove_tree(path)
            temporaries.append((path, size))
    return SweepReport(tuple(blobs), tuple(snapshots), tuple(temporaries))


def collect(store: ImageStore) -> SweepReport:
    """A full garbage collection: waits until no write is in progress, then sweeps."""
    started = time.time()
    with store.content.lease(exclusive=True):
        return sweep(store, started=started)


def prune_images(store: ImageStore, everything: bool = False) -> tuple[list, SweepReport]:
    """Remove dangling images (no name, no container), or with `everything` every image no
    container uses, then collect. Returns the images removed and what the sweep freed."""
    started = time.time()
    with store.content.lease(exclusive=True):
        refs = container_refs(store.root)
        if refs.unreadable:
            raise DataLoss(f"the record of container {refs.unreadable[0][:12]} is unreadable, so "
                           "which images are in use is unknown; run 'berth system check'")
        used = refs.image_ids
        victims = [image for image in store.list()
                   if image.id not in used and (everything or not image.names)]
        store.remove_records(image.manifest_digest for image in victims)
        return victims, sweep(store, started=started)


# --- check and repair -----------------------------------------------------------------


class Problem(Record):
    kind: str  # corrupt | missing | broken | leftover
    subject: str  # what, as the user names it
    detail: str
    fix: tuple = ()  # (action, target) --repair applies; () when only the user can fix it

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}: {self.detail}"


class CheckResult(Record):
    problems: tuple
    counts: dict  # images, blobs, snapshots, containers examined


def check(store: ImageStore) -> CheckResult:
    with store.content.lease(exclusive=True):
        return _check(store, {})


def repair(store: ImageStore) -> tuple[list[str], CheckResult]:
    """Apply every fix `check` proposes until none is left; return what was done and the
    final result. Removing a corrupt blob breaks the records above it, and removing a
    record orphans its blobs and snapshots, so this takes a few rounds."""
    done: list[str] = []
    attempted: set = set()
    hashes: dict = {}  # blobs are immutable: hash each once across rounds
    with store.content.lease(exclusive=True):
        for _round in range(6):
            result = _check(store, hashes)
            fixes = [p for p in result.problems if p.fix and p.fix not in attempted]
            if not fixes:
                return done, result
            for problem in fixes:
                attempted.add(problem.fix)
                try:
                    verb = _apply(store, problem.fix)
                except (BerthError, OSError) as exc:
                    done.append(f"failed to repair {problem.subject}: {exc}")
                    continue
                done.append(f"{verb} {problem.kind} {problem.subject}: {problem.detail}"
                            if verb == "removed" else f"{verb} {problem.fix[1]} for {problem.subject}")
        return done, _check(store, hashes)


def _apply(store: ImageStore, fix: tuple) -> str:
    action, target = fix
    if action == "blob":
        store.content.delete(target)
    elif action == "path":
        remove_tree(target)
    elif action == "record":
        store.remove_records([target])
    elif action == "snapshot":
        store.snapshots.remove(target)
    elif action == "unpack":
        image = next(i for i in store.list() if target in i.chain_ids)
        store.ensure_unpacked(image)
        return "unpacked"
    return "removed"


def _check(store: ImageStore, hashes: dict) -> CheckResult:
    content, snaps = store.content, store.snapshots
    problems = [Problem("leftover", p, "not a blob name", ("path", p)) for p in content.strays()]
    problems += [Problem("leftover", p, "an interrupted write", ("path", p))
                 for p in content.temporaries()]
    sound = set()
    blobs = content.list()
    for digest in blobs:
        actual = hashes.get(digest)
        if actual is None:
            actual = hashes[digest] = content.hash_of(digest)
        if actual == digest:
            sound.add(digest)
        else:
            problems.append(Problem("corrupt", f"blob {digest}", f"its content hashes to {actual}",
                                    ("blob", digest)))
    try:
        records = store.records()
    except DataLoss as exc:
        problems.append(Problem("corrupt", "content/index.json", f"{exc}"))
        return CheckResult(tuple(problems), {"blobs": len(blobs)})

    grouped: dict[str, tuple[str | None, list[str]]] = {}
    for desc in records:
        names = grouped.setdefault(desc.digest, (desc.media_type, []))[1]
        name = (desc.annotations or {}).get(oci.ANNOTATION_REF_NAME)
        if name:
            names.append(name)
    for digest, (media, names) in grouped.items():
        fault = _record_fault(content, sound, digest, media)
        if fault:
            problems.append(Problem("broken", _image_label(digest, names), fault,
                                    ("record", digest)))

    marked = mark(records + build_cache_roots(store.root), _reader(store, sound))
    problems += [Problem("leftover", f"blob {d}", "referenced by no image", ("blob", d))
                 for d in sorted(sound - marked.blobs)]

    images = store.list()
    image_chains = {c for image in images for c in image.chain_ids}
    refs = container_refs(store.root)
    keep = marked.chains | refs.chains
    problems += [Problem("leftover", p, "not a snapshot", ("path", p)) for p in snaps.strays()]
    problems += [Problem("leftover", p, "an interrupted unpack or removal", ("path", p))
                 for p in snaps.temporaries()]
    present = set(snaps.list())
    for chain in sorted(present):
        fault = _snapshot_fault(snaps, chain, present)
        if fault:
            problems.append(Problem("corrupt", f"snapshot {chain}", fault, ("snapshot", chain)))
        elif chain not in keep:
            problems.append(Problem("leftover", f"snapshot {chain}", "used by no image or container",
                                    ("snapshot", chain)))

    ids = {image.id for image in images}
    for cid in refs.unreadable:
        problems.append(Problem("corrupt", f"container {cid[:12]}", "its record is unreadable"))
    for cid, image_id, chains in refs.records:
        if image_id not in ids:
            problems.append(Problem("missing", f"container {cid[:12]}",
                                    f"its image {image_id} is not in the store; remove the "
                                    "container (berth rm) or restore the image"))
        for chain in chains:
            if chain not in present:
                fix = ("unpack", chain) if chain in image_chains else ()
                problems.append(Problem("missing", f"container {cid[:12]}",
                                        f"its layer {chain} is not unpacked", fix))
    counts = {"images": len(grouped), "blobs": len(blobs), "snapshots": len(present),
              "containers": len(refs.records) + len(refs.unreadable)}
    return CheckResult(tuple(problems), counts)


def _record_fault(content, sound: set, digest: str, media: str | None, depth: int = 0) -> str | None:
    """Why the image a record stands for cannot be used (for this host), or None."""
    from berth.oci.codec import from_dict

    def state(what: str, d: str) -> str | None:
        if d in sound:
            return None
        try:
            present = content.exists(d)
        except BerthError:
            return f"its {what} has an invalid digest {d!r}"
        return f"its {what} {d} is {'corrupt' if present else 'missing'}"

    fault = state("manifest" if depth == 0 else "platform manifest", digest)
    if fault:
        return fault
    try:
        doc = json.loads(content.read(digest))
        kind = document_kind(doc, media)
        if kind == "index":
            if depth > 4:
                return "its indexes nest too deeply"
            index = from_dict(oci.Index, doc)
            try:
                entries = [host_manifest(index)]
            except NotFound:  # of no use here, yet sound if one platform is complete
                entries = list(index.manifests)
            faults = [_record_fault(content, sound, e.digest, e.media_type, depth + 1)
                      for e in entries]
            return None if None in faults else (faults[0] if faults else "its index is empty")
        if kind != "manifest":
            return f"{digest} is not an image manifest or index"
        manifest = from_dict(oci.Manifest, doc)
        fault = state("config", manifest.config.digest)
        if fault:
            return fault
        config = oci.ImageConfig.from_json(content.read(manifest.config.digest))
        for layer in manifest.layers:
            fault = state("layer", layer.digest)
            if fault:
                return fault
        if len(config.rootfs.diff_ids) != len(manifest.layers):
            return (f"its config lists {len(config.rootfs.diff_ids)} layers, its manifest "
                    f"{len(manifest.layers)}")
    except (ValueError, TypeError, AttributeError) as exc:
        return f"unreadable document: {exc}"
    return None


def _snapshot_fault(snaps, chain: str, present: set) -> str | None:
    if not os.path.isdir(snaps.fs(chain)):
        return "it has no fs directory"
    diff_id, parent = snaps.meta(chain)
    if diff_id is None:
        return "it has no diffid file"
    try:
        _digest.validate(diff_id)
        if parent is not None:
            _digest.validate(parent)
    except BerthError as exc:
        return str(exc)
    expected = diff_id if parent is None else _digest.sha256_bytes(f"{parent} {diff_id}".encode())
    if expected != chain:
        return f"its diffid and parent make chain ID {expected}"
    if parent is not None and parent not in present:
        return f"its parent {parent} is missing"
    return None


def _image_label(digest: str, names: list[str]) -> str:
    from berth.oci import reference

    shown = ", ".join(reference.parse(n).familiar() for n in names) or "<none>"
    return f"image {shown} (manifest {digest})"
