"""`berth push`: an image record -> the registry, blobs first and the manifest last.

For each blob the manifest names (config and layers, three at a time): HEAD in the target
repository, and nothing more if it is there ("Layer already exists"); else a
cross-repository mount (POST ?mount=&from=) from a repository of the same registry that
a local record says holds it, a record pulled from or pushed to there ("Mounted from");
else an upload: POST, then PATCH (the whole blob, or ranges when the registry asks for
chunks of a minimum size), then PUT ?digest=. The manifest goes last, so a registry never
holds a manifest whose blobs are missing.

Registries serve compressed layers. A layer stored uncompressed (``berth import``,
``commit``) is gzip-compressed on the way out: with ISA-L (the ``isal`` package,
~500 MB/s) when it is installed, else zlib at level 1. The compressed blob is stored in the
content store, and the pushed name's record is pointed at the manifest that was pushed
(the same image: config, image ID and layers unchanged; only the layers' encoding
differs), which keeps the compressed blobs referenced. So the record itself is the
DiffID -> compressed-digest map: a later push of any image with that layer finds it there
instead of compressing again, and ``berth images --digests`` shows the digest the
registry has, as Docker's RepoDigests do.

An index record is pushed whole when every platform's manifest and blobs are in the store;
otherwise (a pull stores only this host's platform) this host's manifest is pushed, as
Docker does.
"""

from __future__ import annotations

import json
import threading

from berth.errors import DataLoss, InvalidArgument, NotFound
from berth.image import document_kind, host_manifest
from berth.oci import image as oci
from berth.oci import reference as _ref
from berth.oci.codec import from_dict
from berth.oci.record import Record, replace
from berth.registry import PARALLEL, Progress, connect, run_parallel

GZIP_TYPES = {oci.OCI_MANIFEST: oci.OCI_LAYER_GZIP, oci.DOCKER_MANIFEST: oci.DOCKER_LAYER_GZIP}
MIN_CHUNK = 16 << 20  # bytes per PATCH when a registry asks for chunked uploads


class PushResult(Record):
    name: str  # name:tag, fully qualified
    digest: str  # of the document pushed under the tag
    size: int


def tags_of(images, text: str) -> list[str]:
    """`push --all-tags`: every local name:tag of the repository `text` names."""
    ref = _ref.parse(text, default_tag=False)
    if ref.tag or ref.digest:
        raise InvalidArgument(f"tag can't be used with --all-tags/-a: {text}")
    names = sorted({_name_of(d) or "" for d in images.records()})
    found = [n for n in names if n.rpartition(":")[0] == ref.name]
    if not found:
        raise NotFound(f"An image does not exist locally with the tag: {ref.familiar_name}")
    return found


def push(images, ref_text: str, *, progress: Progress | None = None, cfg=None,
         chunk: int | None = None) -> PushResult:
    """Push the image named `ref_text`; `chunk` forces chunked uploads of that size."""
    from berth.registry import config as _config

    ref = _ref.parse(ref_text)
    if ref.digest:
        raise InvalidArgument(f"cannot push a digest reference: {ref_text}")
    name = f"{ref.name}:{ref.tag}"
    record = next((d for d in images.records() if _name_of(d) == name), None)
    if record is None:
        raise NotFound(f"An image does not exist locally with the tag: {ref.familiar_name}"
                       + (f":{ref.tag}" if ref.tag != _ref.DEFAULT_TAG else ""))
    progress = progress or Progress(None, quiet=True)
    progress.message(f"The push refers to repository [{ref.name}]")
    cfg = cfg or _config.load(images.root)
    reg = connect(cfg, cfg.endpoint(ref.registry))
    try:
        with images.lease():
            job = _Push(images, reg, ref, progress, chunk)
            digest, raw, media = job.document(record.digest, record.media_type, top=True)
            reg_digest = reg.put_manifest(ref.repository, ref.tag, raw, media)
            if reg_digest and reg_digest != digest:
                raise DataLoss(f"{reg.host} stored the manifest of {ref.familiar()} as "
                               f"{reg_digest}, not {digest}")
            if digest != record.digest:
                images.content.put(raw, digest)
                images.add(digest, name)
                # the name was the old encoding's last: it is the same image, not a
                # dangling one, so its untagged record goes (its blobs go with GC)
                if not any(d.digest == record.digest and _name_of(d) for d in images.records()):
                    images.remove_records([record.digest])
    finally:
        reg.transport.close()
    progress.message(f"{ref.tag}: digest: {digest} size: {len(raw)}")
    return PushResult(name, digest, len(raw))


class _Push:
    def __init__(self, images, reg, ref, progress, chunk) -> None:
        self.images, self.reg, self.ref, self.progress, self.chunk = images, reg, ref, progress, chunk
        self.repo = ref.repository
        self._known = None
        self._known_lock = threading.Lock()
        self._done: dict[str, threading.Event] = {}

    # documents

    def document(self, digest: str, media: str | None, top: bool = False) -> tuple[str, bytes, str]:
        """Push what `digest` needs and return (digest, bytes, media type) of the document
        to put: the same one, or one whose layers are now compressed."""
        store = self.images.content
        raw = store.read(digest)
        doc = json.loads(raw)
        kind = document_kind(doc, media)
        if kind == "index":
            index = from_dict(oci.Index, doc)
            if top and not all(self._complete(d) for d in index.manifests):
                desc = host_manifest(index)
                return self.document(desc.digest, desc.media_type, top=True)
            children = []
            for desc in index.manifests:
                child_digest, child_raw, child_media = self.document(desc.digest, desc.media_type)
                self.reg.put_manifest(self.repo, child_digest, child_raw, child_media)
                if not store.exists(child_digest):
                    store.put(child_raw, child_digest)
                children.append(replace(desc, digest=child_digest, size=len(child_raw),
                                        media_type=child_media))
            media = doc.get("mediaType") or oci.OCI_INDEX
            if all(c.digest == d.digest for c, d in zip(children, index.manifests)):
                return digest, raw, media
            new = replace(index, manifests=tuple(children)).to_json()
            return _sha256(new), new, media
        if kind != "manifest":
            raise InvalidArgument(f"{digest} is not an image manifest or index")
        manifest = from_dict(oci.Manifest, doc)
        media = doc.get("mediaType") or media or oci.OCI_MANIFEST
        try:
            diff_ids = oci.ImageConfig.from_json(store.read(manifest.config.digest)).rootfs.diff_ids
        except ValueError:  # not an image (an attestation, an artifact): sent as it is
            diff_ids = ()
        layers = self._blobs(manifest, diff_ids, media)
        if layers == manifest.layers:
            return digest, raw, media
        new = replace(manifest, layers=layers, media_type=doc.get("mediaType")).to_json()
        return _sha256(new), new, media

    def _complete(self, desc) -> bool:
        store = self.images.content
        if desc.media_type in oci.INDEX_TYPES or not store.exists(desc.digest):
            return False
        try:
            manifest = from_dict(oci.Manifest, json.loads(store.read(desc.digest)))
        except ValueError:
            return False
        return all(store.exists(d.digest) for d in (manifest.config,) + manifest.layers)

    # blobs

    def _blobs(self, manifest, diff_ids, media) -> tuple[oci.Descriptor, ...]:
        """Send config and layers (compressing plain ones); the layers as pushed."""
        out: list = [None] * len(manifest.layers)
        cancel = threading.Event()
        tasks = [lambda: self._send(manifest.config, None, cancel)]
        for i, layer in enumerate(manifest.layers):
            diff_id = diff_ids[i] if i < len(diff_ids) else None
            # Docker names a layer by its DiffID when pushing: the compressed digest may
            # not exist yet
            short = _short(diff_id or layer.digest)
            self.progress.status(short, "Preparing")

            def task(i=i, layer=layer, diff_id=diff_id, short=short):
                desc = layer
                if layer.media_type in oci.LAYER_COMPRESSION and \
                        oci.LAYER_COMPRESSION[layer.media_type] is None:
                    desc = self._compressed(layer, diff_id, GZIP_TYPES.get(media, oci.OCI_LAYER_GZIP))
                out[i] = desc
                self._send(desc, short, cancel)
            tasks.append(task)
        run_parallel(tasks, PARALLEL, cancel)
        return tuple(out)

    def _compressed(self, layer, diff_id, media_type: str) -> oci.Descriptor:
        known = self._known_blobs()[0].get(diff_id)
        if known is not None and self.images.content.exists(known.digest):
            return oci.Descriptor(media_type, known.digest, known.size)
        digest, size = compress(self.images.content, layer.digest)
        return oci.Descriptor(media_type, digest, size)

    def _send(self, desc, short: str | None, cancel) -> None:
        with self._known_lock:  # a blob named twice (a repeated layer) is sent once
            event = self._done.get(desc.digest)
            first = event is None
            if first:
                event = self._done[desc.digest] = threading.Event()
        if not first:
            event.wait()
            if short:
                self.progress.status(short, "Layer already exists")
            return
        try:
            self._send_once(desc, short, cancel)
        finally:
            event.set()

    def _send_once(self, desc, short, cancel) -> None:
        reg, repo = self.reg, self.repo
        if reg.blob_exists(repo, desc.digest, scopes=(f"repository:{repo}:pull,push",)):
            if short:
                self.progress.status(short, "Layer already exists")
            return
        source = self._known_blobs()[1].get(desc.digest)
        location, headers = reg.start_upload(repo, desc.digest if source else None, source)
        if location is None:
            if short:
                self.progress.status(short, "Mounted from " + _shown_repo(self.ref.registry, source))
            return
        chunk = self.chunk
        min_chunk = headers.get("OCI-Chunk-Min-Length") or headers.get("oci-chunk-min-length")
        if chunk is None and min_chunk and min_chunk.isdigit() and desc.size > int(min_chunk):
            chunk = max(int(min_chunk), MIN_CHUNK)
        path = self.images.content.path(desc.digest)

        def reader(offset: int, length: int):
            return _Window(path, offset, length, self.progress if short else None, short,
                           desc.size, cancel)

        reg.upload(repo, location, reader, desc.size, desc.digest, chunk)
        if short:
            self.progress.status(short, "Pushed")

    def _known_blobs(self):
        """(DiffID -> compressed layer descriptor, digest -> a repository of the target
        registry that holds it), from the image records: the one scan, done once."""
        with self._known_lock:
            if self._known is None:
                compressed, sources = {}, {}
                prefix = self.ref.registry + "/"
                for image in self.images.list():
                    for layer, diff in zip(image.manifest.layers, image.diff_ids):
                        if oci.LAYER_COMPRESSION.get(layer.media_type) == "gzip":
                            compressed.setdefault(diff, layer)
                    for name in image.names:
                        repo = name.rpartition(":")[0]
                        if not repo.startswith(prefix) or repo == self.ref.name:
                            continue
                        for d in (image.manifest.config,) + image.manifest.layers:
                            sources.setdefault(d.digest, repo[len(prefix):])
                self._known = (compressed, sources)
            return self._known


class _Window:
    """A byte range of a blob file, as an upload body; reports progress as it is read."""

    def __init__(self, path, offset, length, progress, short, total, cancel) -> None:
        self._f = open(path, "rb")
        self._f.seek(offset)
        self._left = length
        self._sent = offset
        self._progress, self._short, self._total, self._cancel = progress, short, total, cancel

    def read(self, n: int = -1) -> bytes:
        if self._cancel.is_set():
            raise InterruptedError("push cancelled")
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._f.read(n)
        self._left -= len(data)
        self._sent += len(data)
        if self._progress is not None:
            self._progress.bytes(self._short, "Pushing", self._sent, self._total)
        return data

    def close(self) -> None:
        self._f.close()


def compress(store, digest: str) -> tuple[str, int]:
    """gzip a stored blob into the store; (digest, size) of the compressed blob."""
    try:
        from isal import isal_zlib as z  # ISA-L: ~10x zlib's speed at a similar ratio
        level = 1
    except ImportError:
        import zlib as z
        level = 1
    comp = z.compressobj(level, z.DEFLATED, 31)  # 31: a gzip wrapper (mtime 0: reproducible)
    with store.open(digest) as src, store.writer() as w:
        while chunk := src.read(1 << 20):
            out = comp.compress(chunk)
            if out:
                w.write(out)
        w.write(comp.flush())
        return w.commit(), w.size


def _name_of(desc) -> str | None:
    return (desc.annotations or {}).get(oci.ANNOTATION_REF_NAME)


def _sha256(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def _short(digest: str) -> str:
    return digest.partition(":")[2][:12]


def _shown_repo(registry: str, repo: str) -> str:
    return repo.removeprefix("library/") if registry == _ref.DEFAULT_REGISTRY else repo
