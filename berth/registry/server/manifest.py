"""What a pushed manifest must look like, and what it references. Pure: bytes in, records out.

A registry stores a manifest byte for byte, so nothing here re-encodes it; it only reads
enough to refuse what no client could pull (MANIFEST_INVALID) and to know the blobs and
manifests it points at: the push checks those exist (MANIFEST_BLOB_UNKNOWN, as
distribution does), the garbage collector keeps them, and ``subject`` feeds the
referrers API.
"""

from __future__ import annotations

import json

from berth.errors import InvalidArgument
from berth.oci import digest as _digest
from berth.oci.codec import from_dict
from berth.oci.image import (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, MANIFEST_TYPES,
                             OCI_INDEX, OCI_MANIFEST, Descriptor, Index, Manifest)
from berth.oci.record import Record
from berth.registry.server import RegistryError

MAX_SIZE = 4 << 20  # distribution's limit; the spec asks registries to take at least 4 MB
KNOWN_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
# a Content-Type that says nothing about the document: sniff the document instead
_GENERIC_TYPES = ("", "application/json", "application/octet-stream", "text/plain")


class Parsed(Record):
    media_type: str
    blobs: tuple[str, ...] = ()       # config and layers that must exist in the repository
    manifests: tuple[str, ...] = ()   # an index's children, which must exist too
    foreign: tuple[str, ...] = ()     # layers with URLs: fetched from elsewhere, not checked
    subject: str | None = None
    artifact_type: str | None = None
    annotations: dict | None = None

    @property
    def references(self) -> tuple[str, ...]:
        """Every digest this manifest keeps alive: what the garbage collector marks."""
        subject = (self.subject,) if self.subject else ()
        return self.blobs + self.manifests + self.foreign + subject


def _invalid(message: str) -> RegistryError:
    return RegistryError("MANIFEST_INVALID", f"manifest invalid: {message}")


def _check_descriptor(d, where: str) -> None:
    if not isinstance(d, Descriptor):
        raise _invalid(f"{where}: not a descriptor")
    if not isinstance(d.media_type, str) or not d.media_type:
        raise _invalid(f"{where}: mediaType missing")
    if not isinstance(d.size, int) or isinstance(d.size, bool) or d.size < 0:
        raise _invalid(f"{where}: size must be a non-negative integer")
    try:
        _digest.validate(d.digest)
    except InvalidArgument as exc:
        raise _invalid(f"{where}: {exc}") from None


def _media_type(doc: dict, content_type: str | None) -> str:
    field = doc.get("mediaType")
    header = (content_type or "").partition(";")[0].strip().lower()
    if field is not None and not isinstance(field, str):
        raise _invalid("mediaType must be a string")
    if header not in _GENERIC_TYPES and header not in KNOWN_TYPES:
        raise _invalid(f"unsupported manifest media type {header!r}")
    if field and header in KNOWN_TYPES and field != header:
        raise _invalid(f"mediaType {field!r} does not match Content-Type {header!r}")
    media = field or (header if header in KNOWN_TYPES else "")
    if not media:
        media = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if media not in KNOWN_TYPES:
        raise _invalid(f"unsupported manifest media type {media!r}")
    return media


def parse(raw: bytes, content_type: str | None = None) -> Parsed:
    """Validate a manifest or index as pushed with `content_type`; raise MANIFEST_INVALID."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _invalid(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _invalid("not a JSON object")
    if doc.get("schemaVersion") != 2:
        raise _invalid("schemaVersion must be 2 (schema 1 manifests are not supported)")
    media = _media_type(doc, content_type)
    annotations = doc.get("annotations")
    if annotations is not None and not isinstance(annotations, dict):
        raise _invalid("annotations must be an object")
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise _invalid("artifactType must be a string")
    try:
        subject = None
        if doc.get("subject") is not None:
            subject_desc = from_dict(Descriptor, doc["subject"])
            _check_descriptor(subject_desc, "subject")
            subject = subject_desc.digest
        if media in MANIFEST_TYPES:
            if not isinstance(doc.get("layers", []), list):
                raise _invalid("layers must be a list")
            m = from_dict(Manifest, doc)
        else:
            if not isinstance(doc.get("manifests"), list):
                raise _invalid("manifests must be a list")
            m = from_dict(Index, doc)
    except (ValueError, TypeError, AttributeError) as exc:
        raise _invalid(str(exc)) from None
    if media in MANIFEST_TYPES:
        _check_descriptor(m.config, "config")
        blobs, foreign = [m.config.digest], []
        for i, (layer, raw_layer) in enumerate(zip(m.layers, doc.get("layers") or ())):
            _check_descriptor(layer, f"layers[{i}]")
            (foreign if isinstance(raw_layer, dict) and raw_layer.get("urls") else blobs).append(
                layer.digest)
        return Parsed(media, tuple(blobs), (), tuple(foreign), subject,
                      artifact_type or m.config.media_type, annotations)
    children = []
    for i, child in enumerate(m.manifests):
        _check_descriptor(child, f"manifests[{i}]")
        children.append(child.digest)
    return Parsed(media, (), tuple(children), (), subject, artifact_type, annotations)


def referrer_descriptor(parsed: Parsed, digest: str, size: int) -> Descriptor:
    """The entry the referrers API lists for a manifest whose subject is set: its own
    descriptor, with the artifact type and annotations a client filters on."""
    return Descriptor(parsed.media_type, digest, size, annotations=parsed.annotations or None,
                      artifact_type=parsed.artifact_type)
