"""The image service: image records over the content store, and their unpacked layers.

An image record is a name (or none, for a dangling image) pointing at a manifest, kept
in the OCI layout's own index.json, so berth's store is a valid OCI image layout that
skopeo and umoci can read. The image ID is the config digest, as in Docker.
"""

from __future__ import annotations

import fcntl
import os
import time
from berth.oci.record import Record, replace

from berth.content import ContentStore
from berth.fsutil import write_atomic
from berth.errors import Conflict, DataLoss, InvalidArgument, NotFound
from berth.oci import digest as _digest
from berth.oci import image as oci
from berth.oci import reference as _ref
from berth.snapshot import SnapshotStore

ANNOTATION_CREATED = "io.berth.image.tagged"  # when the name was set (Docker's LastTagTime)


class Image(Record):
    id: str  # config digest
    manifest_digest: str
    manifest: oci.Manifest
    config: oci.ImageConfig
    names: tuple[str, ...]  # fully qualified name:tag references

    @property
    def diff_ids(self) -> tuple[str, ...]:
        return self.config.rootfs.diff_ids

    @property
    def chain_ids(self) -> list[str]:
        return _digest.chain_ids(self.diff_ids)

    @property
    def short_id(self) -> str:
        return self.id.partition(":")[2][:12]


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


class ImageStore:
    def __init__(self, root: str) -> None:
        self.root = root
        self.content = ContentStore(os.path.join(root, "content"))
        self.snapshots = SnapshotStore(os.path.join(root, "snapshots"))
        self._index_path = os.path.join(self.content.root, "index.json")
        self._lock_path = os.path.join(self.content.root, "index.lock")

    # --- index.json, the image records ---------------------------------------------

    def _read_index(self) -> oci.Index:
        try:
            with open(self._index_path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return oci.Index(manifests=())
        try:
            return oci.Index.from_json(raw)
        except ValueError as exc:
            raise DataLoss(f"image index {self._index_path} is corrupt: {exc}") from None

    def _locked(self):
        self.content.ensure()
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return _Lock(fd)

    def _write_index(self, index: oci.Index) -> None:
        write_atomic(self._index_path, index.to_json())

    def _records(self) -> list[oci.Descriptor]:
        return list(self._read_index().manifests)

    # --- reading ---------------------------------------------------------------------

    def _load(self, manifest_digest: str, names: tuple[str, ...]) -> Image:
        manifest = oci.Manifest.from_json(self.content.read(manifest_digest))
        config = oci.ImageConfig.from_json(self.content.read(manifest.config.digest))
        return Image(manifest.config.digest, manifest_digest, manifest, config, names)

    def list(self) -> list[Image]:
        by_manifest: dict[str, list[str]] = {}
        for desc in self._records():
            names = by_manifest.setdefault(desc.digest, [])
            name = _ref_name(desc)
            if name:
                names.append(name)
        return [self._load(d, tuple(n)) for d, n in by_manifest.items()]

    def resolve(self, text: str) -> Image:
        """Find an image by name[:tag], name@digest, full ID or unique ID prefix."""
        records = self._records()
        names_of: dict[str, list[str]] = {}
        for desc in records:
            name = _ref_name(desc)
            names_of.setdefault(desc.digest, [])
            if name:
                names_of[desc.digest].append(name)
        # 1. a name
        ref = None
        try:
            ref = _ref.parse(text)
        except InvalidArgument:
            pass
        if ref is not None and not _ref.looks_like_id(text):
            for desc in records:
                name = _ref_name(desc)
                if ref.digest:
                    if desc.digest == ref.digest and (not name or name.rpartition(":")[0] == ref.name
                                                      or name.startswith(ref.name + ":")):
                        return self._load(desc.digest, tuple(names_of[desc.digest]))
                elif name == f"{ref.name}:{ref.tag}":
                    return self._load(desc.digest, tuple(names_of[desc.digest]))
        # 2. an ID or a prefix of one (config digests)
        hexpart = text.removeprefix("sha256:")
        if hexpart and all(c in "0123456789abcdef" for c in hexpart):
            matches = {}
            for digest, names in names_of.items():
                image = self._load(digest, tuple(names))
                if image.id.partition(":")[2].startswith(hexpart):
                    matches[image.id] = image
            if len(matches) == 1:
                return next(iter(matches.values()))
            if len(matches) > 1:
                raise InvalidArgument(f"image ID prefix {text!r} is ambiguous")
        shown = ref.familiar() if ref is not None else text
        raise NotFound(f"No such image: {shown}")

    def exists(self, text: str) -> bool:
        try:
            self.resolve(text)
            return True
        except NotFound:
            return False

    # --- writing ---------------------------------------------------------------------

    def add(self, manifest_digest: str, name: str | None) -> None:
        """Point `name` (or, if None, an untagged record) at a stored manifest."""
        size = self.content.size(manifest_digest)
        media = oci.Manifest.from_json(self.content.read(manifest_digest)).media_type or oci.OCI_MANIFEST
        with self._locked():
            index = self._read_index()
            records = list(index.manifests)
            if name:
                displaced = [d for d in records if _ref_name(d) == name and d.digest != manifest_digest]
                records = [d for d in records if _ref_name(d) != name
                           and not (d.digest == manifest_digest and not _ref_name(d))]
                # an image that loses its last name stays, untagged, until rmi or prune
                for d in displaced:
                    if not any(r.digest == d.digest for r in records):
                        records.append(_record(d.media_type, d.digest, d.size, None))
            elif any(d.digest == manifest_digest for d in records):
                return
            records.append(_record(media, manifest_digest, size, name))
            self._write_index(replace(index, manifests=tuple(records)))

    def tag(self, source: str, target: str) -> Image:
        image = self.resolve(source)
        ref = _ref.parse(target)
        if ref.digest:
            raise InvalidArgument(f"refusing to create a tag with a digest reference: {target}")
        self.add(image.manifest_digest, f"{ref.name}:{ref.tag}")
        return image

    def untag(self, name: str) -> None:
        with self._locked():
            index = self._read_index()
            kept = [d for d in index.manifests if _ref_name(d) != name]
            self._write_index(replace(index, manifests=tuple(kept)))

    def delete(self, image: Image) -> list[str]:
        """Remove every record of `image`, its unreferenced blobs and unused snapshots.

        Returns the layer chain IDs removed. Blobs shared with other images stay.
        """
        with self._locked():
            index = self._read_index()
            kept = tuple(d for d in index.manifests if d.digest != image.manifest_digest)
            self._write_index(replace(index, manifests=kept))
            remaining = [self._load(d.digest, ()) for d in kept]
        used_blobs = set()
        used_chains = set()
        for other in remaining:
            used_blobs.add(other.manifest_digest)
            used_blobs.add(other.manifest.config.digest)
            used_blobs.update(layer.digest for layer in other.manifest.layers)
            used_chains.update(other.chain_ids)
        for blob in [image.manifest_digest, image.manifest.config.digest,
                     *(layer.digest for layer in image.manifest.layers)]:
            if blob not in used_blobs:
                self.content.delete(blob)
        removed = []
        for chain in image.chain_ids:
            if chain not in used_chains:
                self.snapshots.remove(chain)
                removed.append(chain)
        return removed

    def write_image(self, config: oci.ImageConfig, layers: list[oci.Descriptor],
                    name: str | None) -> Image:
        """Store config and manifest for already-stored layers and record the image."""
        config_raw = config.to_json()
        config_digest = self.content.put(config_raw)
        manifest = oci.Manifest(
            config=oci.Descriptor(oci.OCI_CONFIG, config_digest, len(config_raw)),
            layers=tuple(layers))
        manifest_raw = manifest.to_json()
        manifest_digest = self.content.put(manifest_raw)
        self.add(manifest_digest, name)
        return self._load(manifest_digest, (name,) if name else ())

    def import_layer(self, stream, parent_chain: str | None = None) -> tuple[oci.Descriptor, str]:
        """Store an uncompressed layer tar from `stream` and unpack it, in one pass.

        Returns the layer's descriptor and its chain ID.
        """
        from berth.layer import apply_layer

        tmp = self.snapshots.prepare()
        writer = self.content.writer()
        try:
            tee = _Tee(stream, writer)
            apply_layer(tee, os.path.join(tmp, "fs"))
            tee.drain()
            # the blob is the uncompressed tar, so its digest is the DiffID
            diff_id = writer.commit()
            chain = diff_id if parent_chain is None else \
                _digest.sha256_bytes(f"{parent_chain} {diff_id}".encode())
            if self.snapshots.exists(chain):
                self.snapshots.abort(tmp)
            else:
                self.snapshots.commit(tmp, chain, diff_id, parent_chain)
            return oci.Descriptor(oci.OCI_LAYER, diff_id, writer.size), chain
        except BaseException:
            writer.abort()
            self.snapshots.abort(tmp)
            raise

    def ensure_unpacked(self, image: Image) -> list[str]:
        """Unpack any missing layer of `image`; return its lower dirs, topmost first."""
        chains = image.chain_ids
        for i, chain in enumerate(chains):
            if self.snapshots.exists(chain):
                continue
            layer = image.manifest.layers[i]
            self._unpack(layer, chain, chains[i - 1] if i else None, image.diff_ids[i])
        return self.snapshots.lowerdirs(chains)

    def _unpack(self, layer: oci.Descriptor, chain: str, parent: str | None, diff_id: str) -> None:
        from berth.layer import apply_layer, open_decompressed

        if layer.media_type not in oci.LAYER_COMPRESSION:
            raise InvalidArgument(f"unsupported layer media type {layer.media_type}")
        tmp = self.snapshots.prepare()
        try:
            with self.content.open(layer.digest) as raw:
                result = apply_layer(open_decompressed(raw), os.path.join(tmp, "fs"))
            if result.diff_id != diff_id:
                raise DataLoss(f"layer {layer.digest} unpacks to {result.diff_id}, "
                               f"but the image config says {diff_id}")
            self.snapshots.commit(tmp, chain, diff_id, parent)
        except BaseException:
            self.snapshots.abort(tmp)
            raise

    def in_use_check(self, image: Image, users: list[str], force: bool) -> None:
        if users and not force:
            raise Conflict(f"unable to remove image {image.short_id}: image is being used by "
                           f"container {users[0][:12]}")


def _ref_name(desc: oci.Descriptor) -> str | None:
    return (desc.annotations or {}).get(oci.ANNOTATION_REF_NAME)


def _record(media_type: str, digest: str, size: int, name: str | None) -> oci.Descriptor:
    annotations = {ANNOTATION_CREATED: now_rfc3339()}
    if name:
        annotations[oci.ANNOTATION_REF_NAME] = name
    return oci.Descriptor(media_type, digest, size, annotations)


class _Lock:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


class _Tee:
    """A reader that copies everything read through it into a content writer."""

    def __init__(self, stream, writer) -> None:
        self._stream = stream
        self._writer = writer

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        if data:
            self._writer.write(data)
        return data

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Tar readers stop at the end-of-archive marker; keep the padding that follows."""
        while self.read(1 << 20):
            pass


def import_tarball(store: ImageStore, stream, name: str | None, changes=(), message: str = "",
                   source: str = "-") -> Image:
    """`docker import`: a root filesystem tarball (plain or compressed) -> one-layer image."""
    from berth.image import changes as _changes
    from berth.layer import open_decompressed

    ref = None
    if name:
        ref = _ref.parse(name)
        if ref.digest:
            raise InvalidArgument(f"cannot import to a digest reference: {name}")
    # validate the changes before any byte is stored
    container_config = _changes.apply(oci.ContainerConfig(), list(changes))
    desc, _chain = store.import_layer(open_decompressed(stream))
    platform = oci.host_platform()
    created = now_rfc3339()
    config = oci.ImageConfig(
        architecture=platform.architecture, os=platform.os, variant=platform.variant,
        rootfs=oci.RootFS(diff_ids=(desc.digest,)),
        created=created,
        config=container_config,
        history=(oci.History(created=created, created_by="berth import",
                             comment=message or f"Imported from {source}"),),
    )
    return store.write_image(config, [desc], f"{ref.name}:{ref.tag}" if ref else None)
