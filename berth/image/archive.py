"""Image archives: `docker save` / `docker load` tarballs, and `docker export` of a root tree.

This module is the entry points and the names the formats share; the work is done by

    save.py         writing: the form Docker 25+ writes, at once a docker-archive and an
                    OCI image layout ("oci-archive" leaves out the docker files)
    load.py         reading docker-archives and OCI archives: spooled, verified, then
                    published to the store all at once or not at all, with
    load_stage.py   the archive's members spooled to the store's ingest directory
    load_formats.py what a docker-archive's and an OCI layout's files mean
    export.py       a container's merged root tree as a tar (the CLI imports it from here)
    archive_tar.py  the tar framing of all three: an fd writer, a forward-only reader

save.py and load.py are imported on first use, so `berth save` loads none of load's code,
nor the other way round.
"""

from __future__ import annotations

from berth.errors import InvalidArgument
from berth.image.export import export_rootfs
from berth.oci import reference as _ref
from berth.oci.record import Record

__all__ = ["FORMATS", "ANNOTATION_IMAGE_NAME", "BLOB_PATH", "Loaded", "select", "save", "load",
           "export_rootfs"]

FORMATS = ("docker-archive", "oci-archive")
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"  # containerd's and Docker 25's full name
BLOB_PATH = "blobs/sha256/"  # where both archive forms keep blobs, by hex digest


# --- save --------------------------------------------------------------------------------


def select(store, refs: list[str]) -> list[tuple]:
    """Docker's rules for what `save REF...` writes: a repository without a tag means all of
    its tags; an ID saves the image untagged. Returns [(Image, [names])], in order."""
    chosen: dict[str, tuple] = {}

    def add(image, name):
        entry = chosen.setdefault(image.id, (image, []))
        if name and name not in entry[1]:
            entry[1].append(name)

    for text in refs:
        ref = None
        if not _ref.looks_like_id(text):
            try:
                ref = _ref.parse(text, default_tag=False)
            except InvalidArgument:
                pass
        if ref is not None and ref.tag is None and ref.digest is None:
            tagged = [(image, name) for image in store.list() for name in image.names
                      if name.rpartition(":")[0] == ref.name]
            for image, name in tagged:
                add(image, name)
            if tagged:
                continue
        image = store.resolve(text)
        full = f"{ref.name}:{ref.tag or _ref.DEFAULT_TAG}" if ref is not None and not ref.digest \
            else None
        add(image, full if full in image.names else None)
    return list(chosen.values())


def save(store, refs: list[str], fd: int, fmt: str = "docker-archive") -> None:
    """Write the images `refs` name as one tar to `fd`, streamed from the content store.

    Everything that can fail for a missing or corrupt blob is checked before the first byte.
    """
    if fmt not in FORMATS:
        raise InvalidArgument(f"unknown archive format {fmt!r}: use one of {', '.join(FORMATS)}")
    from berth.image.save import write_archive

    with store.lease():  # an rmi meanwhile must not take blobs from under the stream
        write_archive(store, select(store, refs), fd, fmt == "docker-archive")


# --- load --------------------------------------------------------------------------------


class Loaded(Record):
    """What `load` did, for the CLI to report as docker does."""

    images: tuple[tuple[str | None, str], ...]  # (full name, or None when untagged; image ID)
    renamed: tuple[tuple[str, str], ...]  # (name, ID of the image that lost it)


def load(store, stream) -> Loaded:
    """Load every image of the archive read from `stream`; all of it, or nothing."""
    from berth.image.load import read_archive
    from berth.layer import open_decompressed

    store.content.ensure()
    with store.lease():  # what is spooled and unpacked is garbage until the records exist
        return read_archive(store, open_decompressed(stream))
