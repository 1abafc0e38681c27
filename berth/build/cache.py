"""The build cache: which image a step made from which parent, so a rebuild can skip it,
and the content hashes of COPY/ADD sources it is keyed on.

    <root>/build-cache/steps/<key>    the manifest digest of the image a step produced

A key is the sha256 of the parent image's ID and what the step does, spelled as its
history line spells it (``|1 X=5 /bin/sh -c make``, ``COPY file:<content hash> in /app``),
plus whatever else changes its outcome. That is the classic builder's rule (its cache
compares a child image's config, whose Cmd is that line), so a step hits exactly when
Docker's does: same parent, same instruction after substitution, same build args for a
RUN, same source contents for COPY/ADD.

A COPY or ADD is keyed on Docker's hash of its sources (``file:``, ``dir:``, ``multi:``):
names, modes, sizes, link targets and contents, not mtimes nor owners (docker's client
sends the context as root), so touching a file keeps the cache and chmod does not.

Entries are written atomically and never trusted blindly: an entry whose manifest,
config or layer blobs are gone (removed by ``rmi`` or a prune) is a miss. Nothing here
keeps blobs alive; the cache only remembers what still exists.
"""

from __future__ import annotations

import os
import stat

from berth.build.context import Node, Source, walk
from berth.fsutil import write_atomic


def step_key(parent: str, created_by: str, *extra: str) -> str:
    import hashlib

    h = hashlib.sha256()
    for part in (parent, created_by, *extra):
        data = part.encode("utf-8", "surrogateescape")
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


class BuildCache:
    def __init__(self, root: str) -> None:
        self.dir = os.path.join(root, "build-cache")
        self.steps = os.path.join(self.dir, "steps")

    def get(self, key: str) -> str | None:
        try:
            with open(os.path.join(self.steps, key), "rb") as f:
                value = f.read(200).decode("ascii", "replace").strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return value if value.startswith("sha256:") else None

    def put(self, key: str, manifest_digest: str) -> None:
        os.makedirs(self.steps, exist_ok=True)
        # not fsynced: a lost entry is a cache miss, and one that points at blobs that did
        # not survive is detected as a miss too
        write_atomic(os.path.join(self.steps, key), manifest_digest.encode() + b"\n",
                     durable=False)


# -- what COPY and ADD are keyed on: the content of their sources


_CHUNK = 1 << 20


def _file_sum(path: str) -> bytes:
    import hashlib

    h = hashlib.sha256()
    # O_NONBLOCK: a file swapped for a fifo since it was listed must not hang the build
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        while n := os.readv(fd, [buf]):
            h.update(view[:n])
    finally:
        os.close(fd)
    return h.digest()


def _entry_sum(name: str, node: Node, sums) -> bytes:
    """An entry's header fields (tarsum v1 less mtime and owner) and content, hashed."""
    import hashlib

    st = node.st
    mode = st.st_mode
    header = [name, oct(stat.S_IMODE(mode)), oct(stat.S_IFMT(mode))]
    if stat.S_ISREG(mode):
        header.append(str(st.st_size))
        content = sums.get(node.path, st) if sums is not None else None
        if content is None:
            content = _file_sum(node.path)
            if sums is not None:
                sums.put(node.path, st, content)
        header.append(content.hex())
    elif stat.S_ISLNK(mode):
        header.append(os.readlink(node.path))
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        header.append(f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}")
    return hashlib.sha256("\0".join(header).encode("utf-8", "surrogateescape")).digest()


def source_hash(srcs: list[Source], sums=None) -> str:
    """Docker's cache hash of a COPY/ADD's sources: file:<hex>, dir:<hex> or multi:<hex>."""
    import hashlib

    hashes = []
    for src in srcs:
        if src.data is not None:
            hashes.append("file:" + hashlib.sha256(src.name.encode() + b"\0" + src.data).hexdigest())
        elif src.is_dir:
            h = hashlib.sha256()
            h.update(_entry_sum(".", src.node, None))
            base = len(src.parts)
            for parts, node in walk(src.tree, src.parts):
                h.update(_entry_sum("/".join(parts[base:]), node, sums))
            hashes.append("dir:" + h.hexdigest())
        else:
            hashes.append("file:" + _entry_sum("/".join(src.parts), src.node, sums).hex())
    if len(hashes) == 1:
        return hashes[0]
    return "multi:" + hashlib.sha256(",".join(hashes).encode()).hexdigest()


class FileSums:
    """Content hashes of context files, remembered by (device, inode, size, mtime, ctime)
    across builds, so an unchanged rebuild does not read a large context again.

    Sound against a file changed between two builds: any write moves its ctime, which
    no user can set. A file whose ctime is within `_RACY` of the moment it was hashed is
    not remembered (a later write in the same clock tick would not move it), as git does
    with its index. Only the files a build hashed are kept for the next one.
    """

    _RACY = 0.05  # seconds: well above the filesystem's timestamp granularity

    def __init__(self, path: str) -> None:
        self.path = path
        self.entries: dict = {}
        self.used: dict = {}
        try:
            import json

            with open(path, "rb") as f:
                data = json.loads(f.read())
            if isinstance(data, dict):
                self.entries = data
        except (OSError, ValueError):
            pass

    @staticmethod
    def _stamp(st: os.stat_result) -> list:
        return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]

    def get(self, path: str, st: os.stat_result) -> bytes | None:
        entry = self.entries.get(path)
        if not (isinstance(entry, list) and len(entry) == 2 and entry[0] == self._stamp(st)):
            return None
        try:
            digest = bytes.fromhex(entry[1])
        except (ValueError, TypeError):
            return None
        self.used[path] = entry
        return digest

    def put(self, path: str, st: os.stat_result, digest: bytes) -> None:
        import time

        if time.time_ns() - st.st_ctime_ns >= self._RACY * 1e9:
            self.used[path] = [self._stamp(st), digest.hex()]

    def save(self) -> None:
        if self.used == self.entries:
            return
        import json

        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            write_atomic(self.path, json.dumps(self.used).encode(), durable=False)
        except OSError:
            pass  # only a memo: the next build hashes again
