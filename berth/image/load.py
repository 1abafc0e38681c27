"""Reading an image archive: `docker load`, all of it or nothing.

Split from archive.py, which keeps the entry points, so that a load loads none of
save's code and a change to one format direction stays in one file. A load has three
steps, one module each:

    load_stage.py    the archive, plain or compressed, read once: tar members come in
                     any order, so each regular member is spooled into a staging
                     directory under ``content/ingest`` while it is hashed
    load_formats.py  what a docker-archive (classic ``<id>/layer.tar`` form, podman's
                     ``<hex>.tar`` form or the combined form save writes) or an OCI
                     archive says: each image, every blob checked against its digest
    load.py          every layer checked against the config's diff IDs (by unpacking
                     it, which also proves it is a safe tar); only when all of it holds
                     are blobs renamed into the store, snapshots committed and names
                     recorded. A failure leaves the store as it was.
"""

from __future__ import annotations

import os

from berth.errors import BerthError, DataLoss, InvalidArgument, NotFound
from berth.image.archive import Loaded
from berth.image.load_formats import Pending, plan_docker, plan_oci
from berth.image.load_stage import Spooled, Stage, spool
from berth.oci import digest as _digest
from berth.oci import image as oci

_CHUNK = 1 << 20


def read_archive(store, stream) -> Loaded:
    """Load every image of the uncompressed archive `stream`; all of it, or nothing."""
    stage = Stage(store.content.ingest_dir)
    snapshots: list[tuple] = []  # (tmp, chain ID, diff ID, parent, size): unpacked, uncommitted
    try:
        archive = spool(stream, stage)
        if "manifest.json" in archive.files or "manifest.json" in archive.links:
            pending = plan_docker(archive, stage)
        elif "index.json" in archive.files:
            pending = plan_oci(archive)
        else:
            raise InvalidArgument("not an image archive: it has neither manifest.json (docker) "
                                  "nor index.json (OCI)")
        if not pending:
            raise InvalidArgument("the archive contains no images")
        _verify_layers(store, pending, snapshots)
        _publish(store, stage, pending)
        for tmp, chain, diff_id, parent, size in snapshots:
            store.snapshots.commit(tmp, chain, diff_id, parent, size)
        snapshots.clear()
        return _record(store, pending)
    finally:
        for tmp, *_ in snapshots:
            store.snapshots.abort(tmp)
        stage.remove()


def _diff_id(path: str) -> str:
    import hashlib

    from berth.layer import open_decompressed

    h = hashlib.sha256()
    with open(path, "rb") as raw:
        plain = open_decompressed(raw)
        while chunk := plain.read(_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _verify_layers(store, pending: list[Pending], snapshots: list) -> None:
    """Unpack the layers the store lacks (into uncommitted snapshots), which proves each is a
    safe tar with the config's diff ID; the diff IDs of the others are checked by hashing."""
    from berth.layer import apply_layer, open_decompressed

    done: set[str] = set()  # blob digests proven
    chains_here: set[str] = set()
    for image in pending:
        chains = _digest.chain_ids(image.diff_ids)
        for i, ((desc, member), diff_id) in enumerate(zip(image.layers, image.diff_ids)):
            chain = chains[i]
            if chain not in chains_here and not store.snapshots.exists(chain):
                tmp = store.snapshots.prepare()
                entry = [tmp, chain, diff_id, chains[i - 1] if i else None, None]
                snapshots.append(entry)
                chains_here.add(chain)
                try:
                    with open(member.path, "rb") as raw:
                        result = apply_layer(open_decompressed(raw), os.path.join(tmp, "fs"))
                except BerthError as exc:
                    raise type(exc)(f"layer {desc.digest}: {exc}") from exc
                actual, entry[4] = result.diff_id, result.size
            elif desc.digest in done:
                continue
            elif oci.LAYER_COMPRESSION[desc.media_type] is None:
                actual = member.digest
            else:
                actual = _diff_id(member.path)
            if actual != diff_id:
                raise DataLoss(f"layer {desc.digest} has diff ID {actual}, but the image config "
                               f"lists {diff_id}")
            done.add(desc.digest)


def _publish(store, stage: Stage, pending: list[Pending]) -> None:
    """Rename the verified blobs into the store: each appears whole, or not at all."""
    from berth.linux import syscalls

    blobs: dict[str, Spooled] = {}
    for image in pending:
        for member in (image.manifest, image.config, *(m for _, m in image.layers)):
            blobs.setdefault(member.digest, member)
    fd = os.open(stage.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        syscalls().syncfs(fd)  # one flush for every spooled file instead of an fsync each
    finally:
        os.close(fd)
    for digest, member in blobs.items():
        target = store.content.path(digest)
        try:
            present = os.stat(target).st_size == member.size
        except FileNotFoundError:
            present = False
        if not present:  # absent, or a damaged copy (as the content Writer decides)
            os.rename(member.path, target)
    store.content.sync_dir()


def _record(store, pending: list[Pending]) -> Loaded:
    loaded, renamed = [], []
    for image in pending:
        image_id = image.config.digest
        for name in image.names:
            try:
                old = store.resolve(name)
            except NotFound:
                old = None
            if old is not None and old.id != image_id:
                renamed.append((name, old.id))
            store.add(image.manifest.digest, name)
            loaded.append((name, image_id))
        if not image.names:
            store.add(image.manifest.digest, None)
            loaded.append((None, image_id))
    return Loaded(tuple(loaded), tuple(renamed))
