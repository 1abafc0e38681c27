"""Resolving a reference: name[:tag|@digest] -> verified manifest, index and config.

    tag or digest -> manifest or index (by the registry's Docker-Content-Digest and, for a
    digest reference, the digest itself) -> this platform's manifest (or --platform's)
    -> the image config, checked against the manifest's digest and size

Nothing here writes: ``resolve`` returns the documents for the pull to store once every
layer has arrived. Docker schema 1 images are refused with a message that says so.
References are parsed by berth.oci.reference; this adds what only a pull refuses (an
image ID is not a name).
"""

from __future__ import annotations

import json

from berth.errors import DataLoss, InvalidArgument, NotFound
from berth.image import document_kind
from berth.oci import image as oci
from berth.oci import reference as _ref
from berth.oci.record import Record


class Resolved(Record):
    """What a reference resolved to: verified documents, not stored yet."""

    digest: str  # the top document's
    raw: bytes
    index: oci.Index | None
    manifest_digest: str
    manifest_raw: bytes
    manifest: oci.Manifest
    config_raw: bytes
    config: oci.ImageConfig


def parse_reference(text: str) -> _ref.Reference:
    if _ref.looks_like_id(text) and "/" not in text:
        raise InvalidArgument(f"invalid repository name ({text}), cannot specify 64-byte "
                              "hexadecimal strings; pull by name or name@digest")
    return _ref.parse(text)


def parse_platform(text: str | None) -> oci.Platform | None:
    """``os/arch[/variant]`` -> Platform, as Docker's --platform takes it."""
    if not text:
        return None
    parts = text.lower().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise InvalidArgument(f'invalid platform "{text}": expected os/arch[/variant], for '
                              'example linux/amd64 or linux/arm64/v8')
    arch = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64"}.get(parts[1], parts[1])
    return oci.Platform(architecture=arch, os=parts[0], variant=parts[2] if len(parts) == 3 else None)


def platform_text(p: oci.Platform) -> str:
    return f"{p.os}/{p.architecture}" + (f"/{p.variant}" if p.variant else "")


def matches(entry: oci.Platform | None, want: oci.Platform) -> bool:
    if entry is None or entry.os != want.os or entry.architecture != want.architecture:
        return False
    if want.variant is None:
        return True
    # arm64's only variant is v8: an entry that names none means it
    return (entry.variant or ("v8" if entry.architecture == "arm64" else None)) == want.variant


def select(index: oci.Index, want: oci.Platform, explicit: bool) -> oci.Descriptor:
    candidates = [d for d in index.manifests if d.media_type not in oci.INDEX_TYPES
                  and matches(d.platform, want)]
    if not candidates and want.variant and not explicit:
        candidates = [d for d in index.manifests if matches(d.platform, oci.Platform(
            architecture=want.architecture, os=want.os))]
    if candidates:
        return candidates[0]
    if not explicit and index.manifests and all(d.platform is None for d in index.manifests):
        return index.manifests[0]
    offered = ", ".join(sorted({platform_text(d.platform) for d in index.manifests if d.platform}))
    raise NotFound(f"no matching manifest for {platform_text(want)} in the manifest list "
                   f"entries (it has {offered or 'none'})")


def sha256(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def document(reg, repo: str, reference: str, expected: str | None,
              expected_size: int | None = None) -> tuple[str, bytes, dict]:
    raw, media, header = reg.get_manifest(repo, reference)
    digest = sha256(raw)
    if expected and digest != expected:
        raise DataLoss(f"manifest {expected} from {reg.host} does not match its digest "
                       f"(its content hashes to {digest}); nothing was stored")
    if header and header.startswith("sha256:") and header != digest:
        raise DataLoss(f"manifest {reference} from {reg.host} does not match the digest the "
                       f"registry gave ({header}; its content hashes to {digest})")
    if expected_size is not None and len(raw) != expected_size:
        raise DataLoss(f"manifest {digest} from {reg.host} is {len(raw)} bytes, the index "
                       f"says {expected_size}")
    try:
        doc = json.loads(raw)
    except ValueError:
        raise DataLoss(f"manifest {reference} from {reg.host} is not JSON") from None
    if isinstance(doc, dict) and doc.get("schemaVersion") == 1:
        raise InvalidArgument(f"{repo}:{reference} is a Docker schema 1 image, which berth does "
                              "not support (it was deprecated in 2017); push it again with a "
                              "current client")
    if not isinstance(doc, dict) or document_kind(doc, media) is None:
        raise InvalidArgument(f"{repo}@{digest} is not an image manifest or index "
                              f"(media type {doc.get('mediaType') if isinstance(doc, dict) else media})")
    if "mediaType" not in doc and media:
        doc["mediaType"] = media
    return digest, raw, doc


def resolve(reg, ref: _ref.Reference, want: oci.Platform, explicit: bool) -> Resolved:
    from berth.oci.codec import from_dict

    repo = ref.repository
    try:
        top, raw, doc = document(reg, repo, ref.digest or ref.tag, ref.digest)
    except NotFound as exc:
        detail = str(exc).rpartition(" not found: ")[2] or "manifest unknown"
        raise NotFound(f"manifest for {ref.familiar()} not found: {detail}") from None
    index = None
    manifest_digest, manifest_raw = top, raw
    try:
        if document_kind(doc, None) == "index":
            index = from_dict(oci.Index, doc)
            chosen = select(index, want, explicit)
            manifest_digest, manifest_raw, doc = document(reg, repo, chosen.digest, chosen.digest,
                                                           chosen.size)
            if document_kind(doc, None) != "manifest":
                raise InvalidArgument(f"{repo}@{chosen.digest}: nested indexes are not supported")
        manifest = from_dict(oci.Manifest, doc)
    except ValueError as exc:
        raise DataLoss(f"manifest of {ref.familiar()} from {reg.host} is malformed: {exc}") from None
    for layer in manifest.layers:
        if layer.media_type not in oci.LAYER_COMPRESSION:
            raise InvalidArgument(f"{ref.familiar()} is not a container image: its layer "
                                  f"{layer.digest} has media type {layer.media_type}")
    cfg_desc = manifest.config
    config_raw = reg.get_blob(repo, cfg_desc.digest)
    if sha256(config_raw) != cfg_desc.digest or len(config_raw) != cfg_desc.size:
        raise DataLoss(f"image config {cfg_desc.digest} from {reg.host} does not match its "
                       "digest and size; nothing was stored")
    try:
        config = oci.ImageConfig.from_json(config_raw)
    except ValueError as exc:
        raise DataLoss(f"image config of {ref.familiar()} is malformed: {exc}") from None
    if len(config.rootfs.diff_ids) != len(manifest.layers):
        raise DataLoss(f"{ref.familiar()} is inconsistent: its config lists "
                       f"{len(config.rootfs.diff_ids)} layers, its manifest {len(manifest.layers)}")
    return Resolved(top, raw, index, manifest_digest, manifest_raw, manifest, config_raw, config)
