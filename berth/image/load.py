"""Reading an image archive: `docker load`, all of it or nothing.

Split from archive.py, which keeps the entry points, so that a load loads none of
save's code and a change to one format direction stays in one file.

Docker-archives (classic ``<id>/layer.tar`` form, podman's ``<hex>.tar`` form or the
combined form save writes) and OCI archives are read, plain or compressed. Tar members
come in any order, so each regular member is spooled once into a staging directory under
``content/ingest`` while it is hashed; then every blob is checked against its digest,
every layer against the config's diff IDs (by unpacking it, which also proves it is a
safe tar), and only when all of it holds are blobs renamed into the store, snapshots
committed and names recorded. A failure leaves the store as it was.
"""

from __future__ import annotations

import json
import os

from berth.errors import BerthError, DataLoss, InvalidArgument, NotFound
from berth.fsutil import remove_tree
from berth.image import host_manifest
from berth.image.archive import ANNOTATION_IMAGE_NAME, BLOB_PATH, Loaded
from berth.image.archive_tar import ForwardReader, HeaderProblem, strict_tarinfo_class
from berth.oci import digest as _digest
from berth.oci import image as oci
from berth.oci import reference as _ref

_CHUNK = 1 << 20
_JSON_LIMIT = 16 << 20  # a manifest, config or index larger than this is not one
# layers compressed these ways are stored as is; xz and bzip2 (old archives) are not OCI
# layer types, so those are stored decompressed
_STORED_AS = {"gzip": oci.OCI_LAYER_GZIP, "zstd": oci.OCI_LAYER_ZSTD, "xz": None, "bzip2": None}


def read_archive(store, stream) -> Loaded:
    """Load every image of the uncompressed archive `stream`; all of it, or nothing."""
    stage = _Stage(store.content.ingest_dir)
    snapshots: list[tuple] = []  # (tmp, chain ID, diff ID, parent, size): unpacked, uncommitted
    try:
        archive = _spool(stream, stage)
        if "manifest.json" in archive.files or "manifest.json" in archive.links:
            pending = _plan_docker(archive, stage)
        elif "index.json" in archive.files:
            pending = _plan_oci(archive)
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


class _Spooled:
    __slots__ = ("path", "size", "digest")

    def __init__(self, path: str, size: int, digest: str) -> None:
        self.path, self.size, self.digest = path, size, digest


class _Stage:
    """Member files of one load, under content/ingest, on the blob store's filesystem."""

    def __init__(self, ingest_dir: str) -> None:
        self.dir = os.path.join(ingest_dir, f"load-{os.urandom(8).hex()}")
        os.mkdir(self.dir, 0o700)
        self._count = 0

    def spool(self, read_into, size: int, what: str) -> _Spooled:
        import hashlib

        self._count += 1
        path = os.path.join(self.dir, str(self._count))
        h = hashlib.sha256()
        buf = memoryview(bytearray(min(size, _CHUNK) or 1))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            left = size
            while left:
                n = read_into(buf[:min(left, len(buf))])
                if not n:
                    raise DataLoss(f"the archive is truncated in {what}")
                chunk = buf[:n]
                h.update(chunk)
                while chunk:
                    chunk = chunk[os.write(fd, chunk):]
                left -= n
        finally:
            os.close(fd)
        return _Spooled(path, size, "sha256:" + h.hexdigest())

    def put(self, data: bytes) -> _Spooled:
        import io

        return self.spool(io.BytesIO(data).readinto, len(data), "a document")

    def remove(self) -> None:
        remove_tree(self.dir)


class _Archive:
    """The archive's members by cleaned name: spooled regular files, and links between them."""

    def __init__(self) -> None:
        self.files: dict[str, _Spooled] = {}
        self.links: dict[str, str] = {}  # name -> target member name

    def find(self, name: str) -> _Spooled | None:
        key = _clean(name)
        for _hop in range(40):
            if key is None:
                return None
            if key in self.files:
                return self.files[key]
            if key not in self.links:
                return None
            key = self.links[key]
        return None

    def read_json(self, name: str, what: str):
        member = self.find(name)
        if member is None:
            raise DataLoss(f"the archive has no {what} ({name})")
        return _parse_json(member, what)


def _parse_json(member: _Spooled, what: str):
    if member.size > _JSON_LIMIT:
        raise DataLoss(f"{what} is {member.size} bytes: too large to be one")
    with open(member.path, "rb") as f:
        raw = f.read()
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise DataLoss(f"{what} is not valid JSON: {exc}") from None


def _document(cls, member: _Spooled, what: str):
    """A JSON document of the archive as an OCI record; DataLoss if it is not one."""
    from berth.oci.codec import from_dict

    try:
        doc = from_dict(cls, _parse_json(member, what))
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


def _clean(name: str) -> str | None:
    """A member name relative to the archive root; None if it is absolute or has a "..",
    which no archive writer puts in a name."""
    if name.startswith("/") or "\0" in name or ".." in name.split("/"):
        return None
    return "/".join(part for part in name.split("/") if part and part != ".")


def _link_target(name: str, target: str, symbolic: bool) -> str | None:
    """The member a link points at: a symlink's target is relative to its own directory
    (podman writes ``<id>/layer.tar -> ../<hex>.tar``), a hard link's to the root. None if
    it leads outside the archive."""
    if target.startswith("/") or "\0" in target:
        return None
    parts = name.split("/")[:-1] if symbolic else []
    for part in target.split("/"):
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part and part != ".":
            parts.append(part)
    return "/".join(parts)


def _spool(stream, stage: _Stage) -> _Archive:
    import tarfile

    source = ForwardReader(stream)
    archive = _Archive()
    try:
        tar = tarfile.TarFile(fileobj=source, mode="r", tarinfo=strict_tarinfo_class())
        while (m := tar.next()) is not None:
            tar.members.clear()  # a stream needs no memory of the headers it passed
            name = _clean(m.name)
            if name is None:
                raise InvalidArgument(f"archive member {m.name!r} points outside the archive")
            if m.isreg():
                if m.sparse is not None:
                    raise InvalidArgument(f"archive member {m.name!r} is a sparse file")
                source.seek(m.offset_data)
                archive.links.pop(name, None)
                archive.files[name] = stage.spool(source.readinto, m.size, f"member {m.name!r}")
            elif m.issym() or m.islnk():
                target = _link_target(name, m.linkname, m.issym())
                if target is None:
                    raise InvalidArgument(f"archive member {m.name!r} links to {m.linkname!r}, "
                                          "outside the archive")
                archive.files.pop(name, None)
                archive.links[name] = target
    except (HeaderProblem, tarfile.ReadError) as exc:
        if source.tell() == 0:
            raise InvalidArgument("the input is empty: there is no archive to load") from None
        if source.tell() <= 512:
            raise InvalidArgument("the input is not a tar archive (nor a compressed one)") from None
        if isinstance(exc, HeaderProblem) and "end-of-archive" in str(exc):
            raise DataLoss(f"the archive is truncated: it {exc}") from None
        raise DataLoss(f"the archive is corrupt near byte {source.tell()}: {exc}") from None
    return archive


class _Pending:
    """One image of the archive, checked and ready to be stored."""

    __slots__ = ("manifest", "config", "diff_ids", "layers", "names")

    def __init__(self, manifest: _Spooled, config: _Spooled, diff_ids, layers, names) -> None:
        self.manifest, self.config, self.diff_ids = manifest, config, diff_ids
        self.layers, self.names = layers, names  # layers: [(descriptor, spooled blob)]


def _check_layer_count(layers, diff_ids, what: str) -> None:
    if len(layers) != len(diff_ids):
        raise DataLoss(f"{what} lists {len(layers)} layers, but its config has {len(diff_ids)} "
                       "diff IDs")


def _plan_docker(archive: _Archive, stage: _Stage) -> list[_Pending]:
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
            out.append(_Pending(member, config_file, diff_ids, layers, names))
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
        out.append(_Pending(manifest, config_file, diff_ids, layers, names))
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


def _oci_manifests(archive: _Archive) -> dict:
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


def _oci_layers(archive: _Archive, manifest: oci.Manifest, diff_ids, what: str) -> list:
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


def _blob(archive: _Archive, desc: oci.Descriptor, what: str) -> _Spooled:
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


def _manifest(archive: _Archive, desc: oci.Descriptor) -> tuple[_Spooled, oci.Manifest]:
    member = _blob(archive, desc, "manifest")
    return member, _document(oci.Manifest, member, f"manifest {desc.digest}")


def _plan_oci(archive: _Archive) -> list[_Pending]:
    layout = archive.find("oci-layout")
    if layout is not None:
        doc = _parse_json(layout, "oci-layout")
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
        out.append(_Pending(member, config_file, diff_ids, layers, [name] if name else []))
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


def _compression(member: _Spooled) -> tuple[bool, str | None]:
    """Whether a layer member is compressed, and the OCI media type it is stored under."""
    from berth.layer import detect

    with open(member.path, "rb") as f:
        kind = detect(f.read(16))
    if kind is None:
        return False, oci.OCI_LAYER
    return True, _STORED_AS[kind]


def _decompressed_copy(stage: _Stage, member: _Spooled, what: str) -> _Spooled:
    from berth.layer import open_decompressed

    with open(member.path, "rb") as raw:
        plain = open_decompressed(raw)
        size = 0
        # spool needs the size up front: count first, then copy (rare: old xz/bzip2 archives)
        while chunk := plain.read(_CHUNK):
            size += len(chunk)
    with open(member.path, "rb") as raw:
        return stage.spool(open_decompressed(raw).readinto, size, f"layer {what}")


def _diff_id(path: str) -> str:
    import hashlib

    from berth.layer import open_decompressed

    h = hashlib.sha256()
    with open(path, "rb") as raw:
        plain = open_decompressed(raw)
        while chunk := plain.read(_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _verify_layers(store, pending: list[_Pending], snapshots: list) -> None:
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


def _publish(store, stage: _Stage, pending: list[_Pending]) -> None:
    """Rename the verified blobs into the store: each appears whole, or not at all."""
    from berth.linux import syscalls

    blobs: dict[str, _Spooled] = {}
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


def _record(store, pending: list[_Pending]) -> Loaded:
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
