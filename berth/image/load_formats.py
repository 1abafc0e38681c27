"""What a docker-archive and an OCI archive say: each image's manifest, config, layers
and names, planned from the spooled members of a `docker load` and checked as far as
hashing goes.

Split from load.py, which verifies the layers by unpacking them and publishes all of it
at once: the two formats differ only here. Docker-archives come in the classic
``<id>/layer.tar`` form, podman's ``<hex>.tar`` form or the combined form save writes;
every JSON document is read as an OCI record and checked field by field, since the
archive is untrusted.
"""

from __future__ import annotations

from berth.errors import BerthError, DataLoss, InvalidArgument
from berth.image import host_manifest
from berth.image.archive import ANNOTATION_IMAGE_NAME, BLOB_PATH
from berth.image.load_stage import Archive, Spooled, Stage, parse_json
from berth.oci import digest as _digest
from berth.oci import image as oci
from berth.oci import reference as _ref

_CHUNK = 1 << 20
# layers compressed these ways are stored as is; xz and bzip2 (old archives) are not OCI
# layer types, so those are stored decompressed
_STORED_AS = {"gzip": oci.OCI_LAYER_GZIP, "zstd": oci.OCI_LAYER_ZSTD, "xz": None, "bzip2": None}


class Pending:
    """One image of the archive, checked and ready to be stored."""

    __slots__ = ("manifest", "config", "diff_ids", "layers", "names")

    def __init__(self, manifest: Spooled, config: Spooled, diff_ids, layers, names) -> None:
        self.manifest, self.config, self.diff_ids = manifest, config, diff_ids
        self.layers, self.names = layers, names  # layers: [(descriptor, spooled blob)]


def _check_layer_count(layers, diff_ids, what: str) -> None:
    if len(layers) != len(diff_ids):
        raise DataLoss(f"{what} lists {len(layers)} layers, but its config has {len(diff_ids)} "
                       "diff IDs")


def plan_docker(archive: Archive, stage: Stage) -> list[Pending]:
    import re

    entries = archive.read_json("manifest.json", "manifest.json")
    if not isinstance(entries, list):
        raise DataLoss("manifest.json is not a list of images")
    known = _oci_manifests(archive)
    out = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) or \
                not isinstance(entry.get("Layers"), list):
            raise DataLoss("manifest.json has an entry without Config and Layers")
        config_file = archive.find(entry["Config"])
        if config_file is None:
            raise DataLoss(f"manifest.json names config {entry['Config']}, which the archive "
                           "does not contain")
        # names that carry the digest must match it: <hex>.json, blobs/sha256/<hex>
        named = re.search(r"(?:^|/)(?:blobs/sha256/)?([0-9a-f]{64})(?:\.json)?$", entry["Config"])
        if named and config_file.digest != "sha256:" + named.group(1):
            raise DataLoss(f"config {entry['Config']} does not match its digest: its content "
                           f"hashes to {config_file.digest}")
        config = _document(oci.ImageConfig, config_file, f"config {entry['Config']}")
        diff_ids = config.rootfs.diff_ids
        names = _repo_tags(entry.get("RepoTags"))
        if config_file.digest in known:  # the combined form: keep the original manifest
            member, manifest = known[config_file.digest]
            layers = _oci_layers(archive, manifest, diff_ids, f"manifest {member.digest}")
            out.append(Pending(member, config_file, diff_ids, layers, names))
            continue
        _check_layer_count(entry["Layers"], diff_ids, f"manifest.json entry {entry['Config']}")
        layers = []
        for path, diff_id in zip(entry["Layers"], diff_ids):
            member = archive.find(str(path))
            if member is None:
                raise DataLoss(f"manifest.json names layer {path}, which the archive does not "
                               "contain")
            compressed, media = _compression(member)
            if media is None:  # xz or bzip2, which OCI has no media type for: store it plain
                member, compressed = _decompressed_copy(stage, member, path), False
                media = oci.OCI_LAYER
            if not compressed and member.digest != diff_id:
                raise DataLoss(f"layer {path} has diff ID {member.digest}, but the image config "
                               f"lists {diff_id}")
            layers.append((oci.Descriptor(media, member.digest, member.size), member))
        # a classic archive: store the OCI manifest it implies
        manifest = stage.put(oci.Manifest(
            config=oci.Descriptor(oci.OCI_CONFIG, config_file.digest, config_file.size),
            layers=tuple(d for d, _ in layers)).to_json())
        out.append(Pending(manifest, config_file, diff_ids, layers, names))
    return out


def _repo_tags(tags) -> list[str]:
    if tags is not None and not isinstance(tags, list):
        raise DataLoss("manifest.json has RepoTags that are not a list")
    names = []
    for tag in tags or ():
        try:
            ref = _ref.parse(str(tag))
        except InvalidArgument:
            raise DataLoss(f"manifest.json has an invalid image name {tag!r}") from None
        if ref.tag:
            names.append(f"{ref.name}:{ref.tag}")
    return names


def _oci_manifests(archive: Archive) -> dict:
    """The manifests of a combined archive's OCI index whose blobs are all there, by config
    digest. Docker 25.0.0 wrote manifests that list no layers; those are left out."""
    out = {}
    if "index.json" not in archive.files:
        return out
    try:
        index = _document(oci.Index, archive.files["index.json"], "index.json")
        for desc in index.manifests:
            if desc.media_type in oci.MANIFEST_TYPES:
                member, manifest = _manifest(archive, desc)
                if all(archive.find(BLOB_PATH + _digest.hex_of(d.digest)) is not None
                       for d in manifest.layers):
                    out.setdefault(manifest.config.digest, []).append((member, manifest))
    except BerthError:
        pass  # the docker view is complete without it
    return {config: found[0] for config, found in out.items() if len(found) == 1}


def _oci_layers(archive: Archive, manifest: oci.Manifest, diff_ids, what: str) -> list:
    """A manifest's layers as (descriptor, blob), each checked as far as hashing goes."""
    _check_layer_count(manifest.layers, diff_ids, what)
    layers = []
    for layer, diff_id in zip(manifest.layers, diff_ids):
        if layer.media_type not in oci.LAYER_COMPRESSION:
            raise InvalidArgument(f"layer {layer.digest} has unsupported media type "
                                  f"{layer.media_type}")
        blob = _blob(archive, layer, "layer")
        if oci.LAYER_COMPRESSION[layer.media_type] is None and blob.digest != diff_id:
            raise DataLoss(f"layer {layer.digest} is not the diff ID {diff_id} its config lists")
        layers.append((layer, blob))
    return layers


def _blob(archive: Archive, desc: oci.Descriptor, what: str) -> Spooled:
    algo, _, hexpart = _digest.validate(desc.digest).partition(":")
    if algo != "sha256":
        raise InvalidArgument(f"{what} {desc.digest}: only sha256 digests are supported")
    member = archive.find(BLOB_PATH + hexpart)
    if member is None:
        raise DataLoss(f"the archive references {what} {desc.digest}, but does not contain it")
    if member.digest != desc.digest:
        raise DataLoss(f"blob {BLOB_PATH}{hexpart} does not match its digest: its content "
                       f"hashes to {member.digest}")
    if member.size != desc.size:
        raise DataLoss(f"blob {desc.digest} is {member.size} bytes, but is described as "
                       f"{desc.size}")
    return member


def _manifest(archive: Archive, desc: oci.Descriptor) -> tuple[Spooled, oci.Manifest]:
    member = _blob(archive, desc, "manifest")
    return member, _document(oci.Manifest, member, f"manifest {desc.digest}")


def plan_oci(archive: Archive) -> list[Pending]:
    layout = archive.find("oci-layout")
    if layout is not None:
        doc = parse_json(layout, "oci-layout")
        version = str(doc.get("imageLayoutVersion", "")) if isinstance(doc, dict) else ""
        if not version.startswith("1."):
            raise InvalidArgument(f"unsupported OCI layout version {version!r}")
    index = _document(oci.Index, archive.files["index.json"], "index.json")
    out = []
    for desc in index.manifests:
        target = desc
        for _depth in range(4):
            if target.media_type not in oci.INDEX_TYPES:
                break
            target = host_manifest(_document(oci.Index, _blob(archive, target, "image index"),
                                             f"image index {target.digest}"))
        if target.media_type not in oci.MANIFEST_TYPES:
            raise InvalidArgument(f"index.json lists {desc.digest} of unsupported media type "
                                  f"{desc.media_type}")
        member, manifest = _manifest(archive, target)
        if manifest.config.media_type not in (oci.OCI_CONFIG, oci.DOCKER_CONFIG):
            raise InvalidArgument(f"manifest {target.digest} is not a container image: its config "
                                  f"is {manifest.config.media_type}")
        config_file = _blob(archive, manifest.config, "config")
        diff_ids = _document(oci.ImageConfig, config_file,
                             f"config {manifest.config.digest}").rootfs.diff_ids
        layers = _oci_layers(archive, manifest, diff_ids, f"manifest {target.digest}")
        name = _oci_name(desc.annotations or {})
        out.append(Pending(member, config_file, diff_ids, layers, [name] if name else []))
    return out


def _oci_name(annotations: dict) -> str | None:
    """containerd's rule: the full name annotation; else a ref.name with "/", ":" or "@" is a
    reference, and a bare one ("latest") only a tag, with no repository to put it in."""
    text = annotations.get(ANNOTATION_IMAGE_NAME) or annotations.get(oci.ANNOTATION_REF_NAME)
    if not isinstance(text, str) or not any(c in text for c in "/:@"):
        return None
    try:
        ref = _ref.parse(text)
    except InvalidArgument:
        raise DataLoss(f"index.json names an image {text!r}, which is not a valid name") from None
    return f"{ref.name}:{ref.tag}" if ref.tag else None


def _compression(member: Spooled) -> tuple[bool, str | None]:
    """Whether a layer member is compressed, and the OCI media type it is stored under."""
    from berth.layer import detect

    with open(member.path, "rb") as f:
        kind = detect(f.read(16))
    if kind is None:
        return False, oci.OCI_LAYER
    return True, _STORED_AS[kind]


def _decompressed_copy(stage: Stage, member: Spooled, what: str) -> Spooled:
    from berth.layer import open_decompressed

    with open(member.path, "rb") as raw:
        plain = open_decompressed(raw)
        size = 0
        # spool needs the size up front: count first, then copy (rare: old xz/bzip2 archives)
        while chunk := plain.read(_CHUNK):
            size += len(chunk)
    with open(member.path, "rb") as raw:
        return stage.spool(open_decompressed(raw).readinto, size, f"layer {what}")


def _document(cls, member: Spooled, what: str):
    """A JSON document of the archive as an OCI record; DataLoss if it is not one."""
    from berth.oci.codec import from_dict

    try:
        doc = from_dict(cls, parse_json(member, what))
    except ValueError as exc:
        raise DataLoss(f"{what} is not a valid {cls.__name__}: {exc}") from None
    if not _well_formed(doc):
        raise DataLoss(f"{what} is not a valid {cls.__name__}: a field has the wrong type")
    return doc


_SIMPLE_TYPES = {"str": str, "int": int, "bool": bool, "dict": dict}


def _well_formed(record) -> bool:
    """Whether every field holds what its annotation says. The codec takes JSON as it
    comes, and a hostile "rootfs": "x" would otherwise surface as an AttributeError."""
    for klass in type(record).__mro__:
        for field in getattr(klass, "__fields__", ()):
            spec = klass.__dict__.get("__annotations__", {}).get(field.name)
            if spec and not _fits(getattr(record, field.name), str(spec), field.of):
                return False
    return True


def _fits(value, spec: str, of) -> bool:
    for option in (o.strip() for o in spec.split("|")):
        if option == "None" and value is None:
            return True
        if option.startswith("tuple["):
            inner = option[6:].partition(",")[0].strip()
            if isinstance(value, tuple) and all(_fits(v, inner, of) for v in value):
                return True
        elif option in _SIMPLE_TYPES:
            if isinstance(value, _SIMPLE_TYPES[option]) and (option != "int" or
                                                            not isinstance(value, bool)):
                return True
        elif of is not None and isinstance(value, of) and _well_formed(value):
            return True
    return False

