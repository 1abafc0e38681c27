"""Writing an image archive: `docker save` in the form Docker 25+ writes.

Split from archive.py, which keeps the entry points, so that a save loads none of
load's code and a change to one format direction stays in one file.

The archive is at once a docker-archive and an OCI image layout (podman 4.3, skopeo 1.9
and Docker of every version read it):

    oci-layout, index.json          the OCI layout; one index entry per name, annotated with
                                    io.containerd.image.name (full) and ...ref.name (the tag)
    manifest.json, repositories     the docker-archive view; Config and Layers name blobs
    blobs/sha256/<hex>              configs, manifests and layers, each written once

"oci-archive" leaves out the docker files (and so never decompresses a layer). Blobs
stream from the content store, by sendfile(2) where the kernel allows it.
"""

from __future__ import annotations

import json
import os

from berth.errors import DataLoss, NotFound
from berth.image import document_kind, host_manifest
from berth.image.archive import ANNOTATION_IMAGE_NAME, BLOB_PATH
from berth.image.archive_tar import FdTarWriter
from berth.oci import digest as _digest
from berth.oci import image as oci
from berth.oci import reference as _ref

_CHUNK = 1 << 20
_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


def write_archive(store, images: list[tuple], fd: int, docker: bool) -> None:
    """Write `images` ([(Image, [names])], as select gives them) as one tar to `fd`; with
    `docker`, the docker-archive files too. Blobs are checked to exist before the first byte."""
    blobs: dict[str, str] = {}  # digest -> path in the store, in the order they are written
    expanded: dict[str, tuple[str, int]] = {}  # diff ID -> (compressed blob, plain size)
    index, manifest_json, repositories = [], [], {}
    for image, names in images:
        manifest = _own_manifest(store, image)
        blobs[image.id] = store.content.path(image.id)
        blobs[manifest.digest] = store.content.path(manifest.digest)
        layer_paths = []
        for layer, diff_id in zip(image.manifest.layers, image.diff_ids):
            blobs[layer.digest] = store.content.path(layer.digest)
            if oci.LAYER_COMPRESSION.get(layer.media_type) is None or not docker:
                layer_paths.append(BLOB_PATH + _digest.hex_of(layer.digest))
                continue
            # a docker-archive layer is a plain tar: decompress it, twice (the tar header needs
            # its size first) rather than keep a copy
            if diff_id not in expanded and diff_id not in blobs:
                expanded[diff_id] = (layer.digest, _plain_size(store, layer.digest, diff_id))
            layer_paths.append(BLOB_PATH + _digest.hex_of(diff_id))
        platform = oci.Platform(image.config.architecture, image.config.os, image.config.variant)
        for name in names or [None]:
            annotations = None
            if name:
                annotations = {ANNOTATION_IMAGE_NAME: name,
                               oci.ANNOTATION_REF_NAME: name.rpartition(":")[2]}
            index.append(oci.Descriptor(manifest.media_type, manifest.digest, manifest.size,
                                        annotations, platform))
        tags = [_ref.parse(n).familiar() for n in names]
        manifest_json.append({"Config": BLOB_PATH + _digest.hex_of(image.id),
                              "RepoTags": tags or None, "Layers": layer_paths})
        for name in names:
            repo, _, tag = _ref.parse(name).familiar().rpartition(":")
            if image.diff_ids:
                repositories.setdefault(repo, {})[tag] = _digest.hex_of(image.diff_ids[-1])
    for diff_id in [d for d in expanded if d in blobs]:
        del expanded[diff_id]  # the plain layer is stored too, and saved as it is
    for path in blobs.values():
        if not os.path.exists(path):
            raise NotFound(f"blob {os.path.basename(path)} is missing from the content store")

    out = FdTarWriter(fd)
    out.file("oci-layout", _LAYOUT)
    out.file("index.json", oci.Index(manifests=tuple(index)).to_json())
    if docker:
        out.file("manifest.json", json.dumps(manifest_json, separators=(",", ":")).encode())
        if repositories:
            out.file("repositories", json.dumps(repositories, separators=(",", ":")).encode())
    out.directory("blobs")
    out.directory("blobs/sha256")
    for digest, path in blobs.items():
        with open(path, "rb") as f:
            out.file(BLOB_PATH + _digest.hex_of(digest), size=os.fstat(f.fileno()).st_size,
                     src_fd=f.fileno())
    if expanded:
        from berth.layer import open_decompressed
    for diff_id, (digest, size) in expanded.items():
        with store.content.open(digest) as raw:
            out.stream(BLOB_PATH + _digest.hex_of(diff_id), size, open_decompressed(raw), diff_id)
    out.close()


def _own_manifest(store, image) -> oci.Descriptor:
    """The image's manifest itself: a record may point at an index, which stands for its
    manifest for this platform; only that one is saved."""
    digest, media = image.manifest_digest, None
    for _depth in range(5):
        raw = store.content.read(digest)
        doc = json.loads(raw)
        if document_kind(doc, media) != "index":
            media = doc.get("mediaType") or media or oci.OCI_MANIFEST
            return oci.Descriptor(media, digest, len(raw))
        from berth.oci.codec import from_dict

        entry = host_manifest(from_dict(oci.Index, doc))
        digest, media = entry.digest, entry.media_type
    raise DataLoss(f"image {image.short_id}: its image indexes nest too deep")


def _plain_size(store, digest: str, diff_id: str) -> int:
    import hashlib

    from berth.layer import open_decompressed

    h, size = hashlib.sha256(), 0
    with store.content.open(digest) as raw:
        plain = open_decompressed(raw)
        while chunk := plain.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    if "sha256:" + h.hexdigest() != diff_id:
        raise DataLoss(f"stored layer {digest} does not decompress to its diff ID {diff_id}")
    return size
