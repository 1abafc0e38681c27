"""Spooling an image archive for `docker load`: every regular tar member is copied once
into a staging directory under ``content/ingest`` while it is hashed.

Split from load.py, so that what the archive formats mean (load_formats.py) and how a
load is verified and published (load.py) both read members from one place. Tar members
come in any order, so nothing is interpreted here: an `Archive` is only the members by
cleaned name and the links between them; a name or link that leads outside the archive
is refused before anything is written for it.
"""

from __future__ import annotations

import json
import os

from berth.errors import DataLoss, InvalidArgument
from berth.fsutil import remove_tree
from berth.image.archive_tar import ForwardReader, HeaderProblem, strict_tarinfo_class

_CHUNK = 1 << 20
_JSON_LIMIT = 16 << 20  # a manifest, config or index larger than this is not one


class Spooled:
    __slots__ = ("path", "size", "digest")

    def __init__(self, path: str, size: int, digest: str) -> None:
        self.path, self.size, self.digest = path, size, digest


class Stage:
    """Member files of one load, under content/ingest, on the blob store's filesystem."""

    def __init__(self, ingest_dir: str) -> None:
        self.dir = os.path.join(ingest_dir, f"load-{os.urandom(8).hex()}")
        os.mkdir(self.dir, 0o700)
        self._count = 0

    def spool(self, read_into, size: int, what: str) -> Spooled:
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
        return Spooled(path, size, "sha256:" + h.hexdigest())

    def put(self, data: bytes) -> Spooled:
        import io

        return self.spool(io.BytesIO(data).readinto, len(data), "a document")

    def remove(self) -> None:
        remove_tree(self.dir)


class Archive:
    """The archive's members by cleaned name: spooled regular files, and links between them."""

    def __init__(self) -> None:
        self.files: dict[str, Spooled] = {}
        self.links: dict[str, str] = {}  # name -> target member name

    def find(self, name: str) -> Spooled | None:
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
        return parse_json(member, what)


def parse_json(member: Spooled, what: str):
    if member.size > _JSON_LIMIT:
        raise DataLoss(f"{what} is {member.size} bytes: too large to be one")
    with open(member.path, "rb") as f:
        raw = f.read()
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise DataLoss(f"{what} is not valid JSON: {exc}") from None


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


def spool(stream, stage: Stage) -> Archive:
    import tarfile

    source = ForwardReader(stream)
    archive = Archive()
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
