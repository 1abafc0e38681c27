"""The image service: image records over the content store, and their unpacked layers.

An image record is a name (or none, for a dangling image) pointing at a manifest, kept
in the OCI layout's own index.json, so berth's store is a valid OCI image layout that
skopeo and umoci can read. The image ID is the config digest, as in Docker. A record may
point at an OCI manifest, a Docker schema2 manifest, or an index / manifest list, which
stands for its manifest for this host's platform.

Every method that writes holds a lease (see berth.content) for its own steps; a caller
that writes in several steps (import a layer, then write the image that refers to it,
as commit and load do) wraps the whole operation in ``with images.lease():`` so the
garbage collector (berth.image.gc) cannot take the first steps' blobs and snapshots
before the record that keeps them exists.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from berth.oci.record import Record, replace

from berth.content import ContentStore
from berth.fsutil import write_atomic
from berth.errors import BerthError, DataLoss, FailedPrecondition, InvalidArgument, NotFound
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

    def records(self) -> list[oci.Descriptor]:
        """The image records as stored: one descriptor per name, untagged ones without."""
        return self._records()

    def lease(self):
        """Hold off garbage collection for a multi-step write (see the module docstring)."""
        return self.content.lease()

    # --- reading ---------------------------------------------------------------------

    def _load(self, manifest_digest: str, names: tuple[str, ...],
              media_type: str | None = None) -> Image:
        shown = names[0] if names else manifest_digest
        try:
            manifest = self._manifest_for(manifest_digest, media_type)
            config = oci.ImageConfig.from_json(self.content.read(manifest.config.digest))
        except FailedPrecondition as exc:
            raise FailedPrecondition(f"image {shown}: {exc}") from None
        except NotFound as exc:
            raise DataLoss(f"image {shown} is damaged: {exc}; run 'berth system check "
                           "--repair'") from None
        except ValueError as exc:
            raise DataLoss(f"image {shown} is damaged: unreadable document ({exc}); run "
                           "'berth system check --repair'") from None
        return Image(manifest.config.digest, manifest_digest, manifest, config, names)

    def _manifest_for(self, digest: str, media_type: str | None, depth: int = 0) -> oci.Manifest:
        """The manifest a record stands for: itself, or an index's manifest for this host."""
        from berth.oci.codec import from_dict

        doc = json.loads(self.content.read(digest))
        kind = document_kind(doc, media_type)
        if kind == "manifest":
            return from_dict(oci.Manifest, doc)
        if kind != "index" or depth > 4:
            raise ValueError(f"{digest} is not an image manifest or index")
        try:
            child = host_manifest(from_dict(oci.Index, doc))
        except NotFound as exc:  # sound, but of no use on this host
            raise FailedPrecondition(str(exc)) from None
        return self._manifest_for(child.digest, child.media_type, depth + 1)

    def _grouped(self) -> dict[str, tuple[str | None, list[str]]]:
        """manifest digest -> (media type, names), in record order."""
        out: dict[str, tuple[str | None, list[str]]] = {}
        for desc in self._records():
            _media, names = out.setdefault(desc.digest, (desc.media_type, []))
            name = _ref_name(desc)
            if name:
                names.append(name)
        return out

    def list(self, broken: list | None = None) -> list[Image]:
        """Every image. One whose documents are missing or corrupt is left out, and
        reported as (manifest digest, names, error) in `broken` when it is given."""
        out = []
        for digest, (media, names) in self._grouped().items():
            try:
                out.append(self._load(digest, tuple(names), media))
            except BerthError as exc:
                if broken is not None:
                    broken.append((digest, tuple(names), exc))
        return out

    def resolve(self, text: str) -> Image:
        """Find an image by name[:tag], name@digest, full ID or unique ID prefix."""
        grouped = self._grouped()
        # 1. a name
        ref = None
        try:
            ref = _ref.parse(text)
        except InvalidArgument:
            pass
        if ref is not None and not _ref.looks_like_id(text):
            for digest, (media, names) in grouped.items():
                if ref.digest:
                    if digest == ref.digest and (not names or any(
                            n.rpartition(":")[0] == ref.name for n in names)):
                        return self._load(digest, tuple(names), media)
                elif f"{ref.name}:{ref.tag}" in names:
                    return self._load(digest, tuple(names), media)
        # 2. an ID or a prefix of one (config digests)
        hexpart = text.removeprefix("sha256:")
        if hexpart and all(c in "0123456789abcdef" for c in hexpart):
            matches = {}
            for image in self.list():
                if image.id.partition(":")[2].startswith(hexpart):
                    matches[image.id] = image
            if len(matches) == 1:
                return next(iter(matches.values()))
            if len(matches) > 1:
                raise InvalidArgument(f"image ID prefix {text!r} is ambiguous")
        shown = ref.familiar() if ref is not None else text
        raise NotFound(f"No such image: {shown}")

    def layer_sizes(self, image: Image) -> list[tuple[str, int]]:
        """(chain ID, uncompressed size) of each layer, as podman and Docker count an
        image's size; a compressed layer not unpacked yet counts as stored."""
        out = []
        for chain, layer in zip(image.chain_ids, image.manifest.layers):
            size = self.snapshots.size(chain)
            out.append((chain, layer.size if size is None else size))
        return out

    def image_size(self, image: Image) -> int:
        return sum(size for _chain, size in self.layer_sizes(image))

    def exists(self, text: str) -> bool:
        try:
            self.resolve(text)
            return True
        except NotFound:
            return False

    # --- writing ---------------------------------------------------------------------

    def add(self, manifest_digest: str, name: str | None) -> None:
        """Point `name` (or, if None, an untagged record) at a stored manifest or index."""
        with self.lease(), self._locked():
            raw = self.content.read(manifest_digest)
            try:
                doc = json.loads(raw)
                kind = document_kind(doc, None)
            except ValueError:
                kind = None
            if kind is None:
                raise InvalidArgument(f"{manifest_digest} is not an image manifest or index")
            media = doc.get("mediaType") or (oci.OCI_INDEX if kind == "index" else oci.OCI_MANIFEST)
            size = len(raw)
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

    def remove_records(self, manifest_digests) -> None:
        """Drop every record (named or not) of these manifests; their content stays for GC."""
        gone = set(manifest_digests)
        with self._locked():
            index = self._read_index()
            kept = tuple(d for d in index.manifests if d.digest not in gone)
            if len(kept) != len(index.manifests):
                self._write_index(replace(index, manifests=kept))

    def delete(self, image: Image) -> list[str]:
        """Remove every record of `image`, its unreferenced blobs and unused snapshots.

        Returns the layer chain IDs removed. Blobs shared with other images stay, and so
        do snapshots a container still uses. Must not be called while holding a lease.
        """
        from berth.image import gc

        with self.content.lease(exclusive=True):
            self.remove_records([image.manifest_digest])
            report = gc.sweep(self, candidates=gc.references(self, image))
        return [chain for chain, _size in report.snapshots]

    def write_image(self, config: oci.ImageConfig, layers: list[oci.Descriptor],
                    name: str | None) -> Image:
        """Store config and manifest for already-stored layers and record the image."""
        with self.lease():
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

        Returns the layer's descriptor and its chain ID. Both are garbage until an image
        refers to them: hold ``lease()`` from before this call until that image is written.
        """
        with self.lease():
            return self._import_layer(stream, parent_chain)

    def _import_layer(self, stream, parent_chain: str | None) -> tuple[oci.Descriptor, str]:
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
                self.snapshots.commit(tmp, chain, diff_id, parent_chain, writer.size)
            return oci.Descriptor(oci.OCI_LAYER, diff_id, writer.size), chain
        except BaseException:
            writer.abort()
            self.snapshots.abort(tmp)
            raise

    def ensure_unpacked(self, image: Image) -> list[str]:
        """Unpack any missing layer of `image`; return its lower dirs, topmost first.

        The snapshots belong to no container yet: a caller that goes on to create one
        holds ``lease()`` until the container's record is written.
        """
        chains = image.chain_ids
        if len(chains) != len(image.manifest.layers):
            raise DataLoss(f"image {image.short_id} is damaged: its config lists {len(chains)} "
                           f"layers, its manifest {len(image.manifest.layers)}")
        missing = [i for i, chain in enumerate(chains) if not self.snapshots.exists(chain)]
        if missing:
            with self.lease():
                for i in missing:
                    self._unpack(image.manifest.layers[i], chains[i], chains[i - 1] if i else None,
                                 image.diff_ids[i])
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
            self.snapshots.commit(tmp, chain, diff_id, parent, result.size)
        except BaseException:
            self.snapshots.abort(tmp)
            raise


def document_kind(doc, media_type: str | None) -> str | None:
    """"manifest" or "index" for an image document (Docker or OCI), else None.

    The document's own mediaType wins over the descriptor's; OCI allows both to be absent,
    and then the shape decides.
    """
    if not isinstance(doc, dict):
        return None
    media = doc.get("mediaType") or media_type
    if media in oci.MANIFEST_TYPES:
        return "manifest"
    if media in oci.INDEX_TYPES:
        return "index"
    if media is None or media not in (oci.DOCKER_CONFIG, oci.OCI_CONFIG):
        if isinstance(doc.get("manifests"), list):
            return "index"
        if isinstance(doc.get("config"), dict):
            return "manifest"
    return None


def platform_matches(p: oci.Platform | None, host: oci.Platform) -> bool:
    return (p is not None and p.os == host.os and p.architecture == host.architecture
            and (host.variant is None or p.variant in (None, host.variant)))


def host_manifest(index: oci.Index) -> oci.Descriptor:
    """The entry of an index for this host's platform (containerd's default matcher,
    minus its fallbacks to older variants)."""
    host = oci.host_platform()
    for desc in index.manifests:
        if platform_matches(desc.platform, host):
            return desc
    if index.manifests and all(d.platform is None for d in index.manifests):
        return index.manifests[0]  # a single-platform index that does not say which
    shown = f"{host.os}/{host.architecture}" + (f"/{host.variant}" if host.variant else "")
    raise NotFound(f"no manifest for platform {shown} in the image index")


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
    with store.lease():  # the layer is garbage until the image that refers to it is recorded
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
