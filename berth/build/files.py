"""Layers made of files rather than commands: COPY, ADD and WORKDIR.

A Stager lays the new files out in a staging directory shaped like the image's root, as
they would land on the image: a directory the image already has is staged with its owner,
mode and mtime (as overlayfs copies it up), a new one gets the owner COPY gives. The
destination is resolved through the image's symlinks, inside the image. The staging dir
then is both the layer (write_layer) and, renamed into place, its unpacked snapshot, so
the files are written once.

Docker's rules (classic builder, ``copier.go``) for each source:
    a directory      its contents are copied into the destination directory
    an archive (ADD) unpacked into the destination directory
    a file           to DEST/NAME when DEST ends in "/" or is a directory, else to DEST
Files keep their mode and mtime (whole seconds, as Docker's tar writes them) and belong
to root, or to --chown's user; --chmod sets their mode.
"""

from __future__ import annotations

import os
import stat
import time

from berth.build.context import Source, Tree, is_archive, split_path, walk
from berth.errors import FailedPrecondition, InvalidArgument
from berth.fsutil import normalize_parts

_CHUNK = 1 << 30


def parse_chmod(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise InvalidArgument(f"invalid chmod parameter: {text!r}: use an octal mode such as "
                              "0755") from None
    if not 0 <= mode <= 0o7777:
        raise InvalidArgument(f"invalid chmod parameter: {text!r}")
    return mode


def _whole_seconds(ns: int) -> int:
    return ns // 1_000_000_000 * 1_000_000_000


class Stager:
    """Files placed into staging dir `fs` over the image `image` (a Tree of its layers)."""

    def __init__(self, fs: str, image: Tree, owner: tuple[int, int] | None = None,
                 chmod: int | None = None) -> None:
        self.fs = fs
        self.image = image
        self.uid, self.gid = owner or (0, 0)
        self.chmod = chmod
        self._times: dict[str, int] = {}  # staged directory -> the mtime it must end with
        # staged directories -> True for one the image does not have: nothing of the
        # image's can be below it, so a file there needs no lookup
        self._dirs: dict[tuple[str, ...], bool] = {}
        self.now = time.time_ns()

    # -- what is there: staged entries over the image's

    def _host(self, parts: list[str]) -> str:
        return os.path.join(self.fs, *parts)

    def _staged(self, parts: list[str]) -> os.stat_result | None:
        try:
            return os.lstat(self._host(parts))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _mode(self, parts: list[str]) -> tuple[int | None, str | None]:
        """(st_mode of the entry at `parts`, its link target) in the merged view."""
        st = self._staged(parts)
        if st is not None:
            target = os.readlink(self._host(parts)) if stat.S_ISLNK(st.st_mode) else None
            return st.st_mode, target
        node = self.image.lookup(parts)
        if node is None:
            return None, None
        if stat.S_ISLNK(node.st.st_mode):
            return node.st.st_mode, os.readlink(node.path)
        return node.st.st_mode, None

    def is_dir(self, parts: list[str]) -> bool:
        mode, _ = self._mode(parts)
        return mode is not None and stat.S_ISDIR(mode)

    def resolve(self, path: str, follow_last: bool = True) -> list[str]:
        """An absolute image path with the image's symlinks followed, inside the image."""
        parts = split_path(path)
        hops = 0
        i = 0
        while i < len(parts):
            if i == len(parts) - 1 and not follow_last:
                break
            mode, target = self._mode(parts[:i + 1])
            if mode is None or target is None:
                i += 1
                continue
            hops += 1
            if hops > 255:
                raise InvalidArgument(f"too many levels of symbolic links in {path}")
            base = [] if target.startswith("/") else parts[:i]
            parts = normalize_parts(base + target.split("/") + parts[i + 1:])
            i = 0
        return parts

    # -- directories

    def stage_dir(self, parts: list[str], new_mode: int = 0o755, new_times: int | None = None,
                  owner: tuple[int, int] | None = None) -> None:
        """Make directory `parts` exist in the staging dir, and its parents: those the image
        has as they are there, new ones with `new_mode` and the COPY's owner."""
        uid, gid = owner if owner is not None else (self.uid, self.gid)
        for i in range(1, len(parts) + 1):
            sub = parts[:i]
            key = tuple(sub)
            if key in self._dirs:
                continue
            st = self._staged(sub)
            path = self._host(sub)
            if st is not None:
                if stat.S_ISDIR(st.st_mode):
                    self._dirs[key] = False
                    continue
                raise InvalidArgument(f"cannot copy to /{'/'.join(sub)}: it is not a directory")
            node = self.image.lookup(sub)
            if node is not None and node.is_dir:
                os.mkdir(path)
                os.chown(path, node.st.st_uid, node.st.st_gid)
                os.chmod(path, stat.S_IMODE(node.st.st_mode))
                self._times[path] = node.st.st_mtime_ns
                self._dirs[key] = False
            elif node is not None and not stat.S_ISLNK(node.st.st_mode):
                raise InvalidArgument(f"cannot copy to /{'/'.join(sub)}: it is not a directory")
            else:
                os.mkdir(path)
                os.chown(path, uid, gid)
                last = i == len(parts)
                os.chmod(path, new_mode if last else 0o755)
                if last and new_times is not None:
                    self._times[path] = new_times
                self._dirs[key] = True

    def workdir(self, path: str) -> bool:
        """WORKDIR: create the directory (root's, 0755) unless it exists; True if it did not."""
        parts = self.resolve(path)
        if not parts or self.is_dir(parts):
            return False
        self.stage_dir(parts, owner=(0, 0))
        return True

    # -- entries

    def _replace(self, parts: list[str]) -> str:
        """Clear the way for a non-directory at `parts`; its host path in the staging dir."""
        path = self._host(parts)
        st = self._staged(parts)
        if st is not None:
            if stat.S_ISDIR(st.st_mode):
                raise InvalidArgument(f"cannot overwrite directory /{'/'.join(parts)} with a "
                                      "non-directory")
            os.unlink(path)
        else:
            node = self.image.lookup(parts)
            if node is not None and node.is_dir:
                raise InvalidArgument(f"cannot overwrite directory /{'/'.join(parts)} with a "
                                      "non-directory")
        return path

    def _create(self, parts: list[str]) -> int:
        """A new file at `parts` in the staging dir, open for writing."""
        self.stage_dir(parts[:-1])
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        if self._dirs.get(tuple(parts[:-1])):
            try:
                return os.open(self._host(parts), flags, 0o600)
            except FileExistsError:
                pass  # staged before by this same COPY: replaced below
        return os.open(self._replace(parts), flags, 0o600)

    def add_file(self, host_path: str, st: os.stat_result, parts: list[str]) -> None:
        src = os.open(host_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            dst = self._create(parts)
            try:
                _copy_data(src, dst, st.st_size)
                os.fchown(dst, self.uid, self.gid)
                os.fchmod(dst, self.chmod if self.chmod is not None else stat.S_IMODE(st.st_mode))
                mtime = _whole_seconds(st.st_mtime_ns)
                os.utime(dst, ns=(mtime, mtime))
            finally:
                os.close(dst)
        finally:
            os.close(src)

    def add_bytes(self, data: bytes, parts: list[str], mode: int = 0o644) -> None:
        fd = self._create(parts)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchown(fd, self.uid, self.gid)
            os.fchmod(fd, self.chmod if self.chmod is not None else mode)
            now = _whole_seconds(self.now)
            os.utime(fd, ns=(now, now))
        finally:
            os.close(fd)

    def add_special(self, host_path: str, st: os.stat_result, parts: list[str]) -> None:
        """A symlink, fifo or device node, as it is."""
        self.stage_dir(parts[:-1])
        path = self._replace(parts)
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            os.symlink(os.readlink(host_path), path)
        elif stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            os.mknod(path, mode, st.st_rdev)
        else:
            return  # a socket cannot be archived; Docker leaves it out too
        os.lchown(path, self.uid, self.gid)
        if not stat.S_ISLNK(mode):
            os.chmod(path, self.chmod if self.chmod is not None else stat.S_IMODE(mode))
        mtime = _whole_seconds(st.st_mtime_ns)
        os.utime(path, ns=(mtime, mtime), follow_symlinks=False)

    def add_tree(self, src: Source, parts: list[str]) -> None:
        """A directory's contents into directory `parts` (made, like the source, if new)."""
        if not self.is_dir(parts):
            mode, _ = self._mode(parts)
            if mode is not None and not stat.S_ISLNK(mode):
                raise InvalidArgument(f"cannot copy a directory to /{'/'.join(parts)}: it is "
                                      "not a directory")
            perm = self.chmod if self.chmod is not None else stat.S_IMODE(src.node.st.st_mode)
            self.stage_dir(parts[:-1])
            if mode is not None:
                self._replace(parts)
            self.stage_dir(parts, new_mode=perm,
                           new_times=_whole_seconds(src.node.st.st_mtime_ns))
        base = len(src.parts)
        for rel, node in walk(src.tree, src.parts):
            target = parts + rel[base:]
            mode = node.st.st_mode
            if stat.S_ISDIR(mode):
                if self.is_dir(target):
                    continue
                existing, _ = self._mode(target)
                if existing is not None:
                    self._replace(target)
                perm = self.chmod if self.chmod is not None else stat.S_IMODE(mode)
                self.stage_dir(target, new_mode=perm,
                               new_times=_whole_seconds(node.st.st_mtime_ns))
            elif stat.S_ISREG(mode):
                self.add_file(node.path, node.st, target)
            else:
                self.add_special(node.path, node.st, target)

    def extract(self, archive: str, parts: list[str]) -> None:
        """ADD of a local archive: unpacked into directory `parts`, owners as in the tar."""
        from berth.layer import apply_layer, open_decompressed

        if not self.is_dir(parts):
            mode, _ = self._mode(parts)
            if mode is not None and not stat.S_ISLNK(mode):
                raise InvalidArgument(f"cannot extract an archive to /{'/'.join(parts)}: it is "
                                      "not a directory")
        self.stage_dir(parts, owner=(0, 0))
        with open(archive, "rb") as f:
            apply_layer(open_decompressed(f), self._host(parts), whiteouts="apply")
        self._times.pop(self._host(parts), None)

    def finish(self) -> None:
        """Give staged directories their final mtimes, deepest first (writing into a
        directory moves its mtime)."""
        for path in sorted(self._times, key=len, reverse=True):
            try:
                os.utime(path, ns=(self._times[path], self._times[path]), follow_symlinks=False)
            except FileNotFoundError:
                pass

    def empty(self) -> bool:
        with os.scandir(self.fs) as it:
            return next(it, None) is None


def _copy_data(src: int, dst: int, size: int) -> None:
    copied = 0
    try:
        while True:
            n = os.copy_file_range(src, dst, _CHUNK)
            if n == 0:
                return
            copied += n
    except OSError as exc:
        if copied or exc.errno not in (18, 22, 38, 95, 1):  # EXDEV EINVAL ENOSYS EOPNOTSUPP EPERM
            raise FailedPrecondition(f"copying a file: {exc.strerror}") from None
    while chunk := os.read(src, 1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view):]


def copy_sources(stager: Stager, srcs: list[Source], dest: str, decompress: bool = False) -> None:
    """Docker's COPY/ADD of `srcs` to absolute image path `dest` (a trailing "/" says
    "a directory")."""
    into_dir = dest.endswith("/")
    parts = stager.resolve(dest, follow_last=False)
    if parts:
        last = stager.resolve("/".join(parts))
        if stager.is_dir(last):
            parts = last  # a link to a directory is the directory
    for src in srcs:
        if src.data is not None:
            target = parts + [src.name] if into_dir or stager.is_dir(parts) else parts
            stager.add_bytes(src.data, target)
        elif src.is_dir:
            stager.add_tree(src, parts)
        elif decompress and stat.S_ISREG(src.node.st.st_mode) and is_archive(src.node.path):
            stager.extract(src.node.path, parts)
        else:
            name = src.name or (src.parts[-1] if src.parts else "")
            target = parts + [name] if into_dir or stager.is_dir(parts) or not parts else parts
            if stat.S_ISREG(src.node.st.st_mode):
                stager.add_file(src.node.path, src.node.st, target)
            else:
                stager.add_special(src.node.path, src.node.st, target)
    stager.finish()


def chown_ids(spec: str, lowers: list[str]) -> tuple[int, int]:
    """--chown=user[:group]: names looked up in the image's /etc/passwd and /etc/group; a
    user alone gives its uid as the gid too (Docker's documented rule)."""
    from berth.errors import NotFound
    from berth.snapshot import read_layered

    user, _, group = spec.partition(":")

    def lookup(name: str, path: str, what: str) -> int:
        if name.isdigit():
            return int(name)
        raw = read_layered(lowers, path)
        for line in (raw or b"").decode(errors="replace").splitlines():
            fields = line.split(":")
            if len(fields) >= 3 and fields[0] == name and fields[2].isdigit():
                return int(fields[2])
        raise NotFound(f"unable to convert uid/gid chown string to host mapping: can't find "
                       f"{what} for {name}: no such {what} in {path} of the image")

    uid = lookup(user, "/etc/passwd", "uid")
    return uid, lookup(group, "/etc/group", "gid") if group else uid


def file_layer(images, lowers: list[str], parent_chain: str | None, fill, owner=None,
               chmod=None):
    """A layer of files staged by `fill(stager)` over `lowers`: its descriptor, or None
    when nothing was staged. The blob is written from the staging dir, which then
    becomes the layer's snapshot as it is: each file is written once."""
    from berth.layer.diff import write_layer
    from berth.oci import digest as _digest
    from berth.oci import image as oci

    snapshots = images.snapshots
    tmp = snapshots.prepare()
    try:
        fs = os.path.join(tmp, "fs")
        stager = Stager(fs, Tree(lowers), owner, chmod)
        fill(stager)
        if stager.empty():
            snapshots.abort(tmp)
            return None
        with images.content.writer() as writer:
            diff_id, size = write_layer(fs, writer)
            writer.commit(diff_id, size)
        chain = diff_id if parent_chain is None else \
            _digest.sha256_bytes(f"{parent_chain} {diff_id}".encode())
        if snapshots.exists(chain):
            snapshots.abort(tmp)
        else:
            snapshots.commit(tmp, chain, diff_id, parent_chain, size)
        return oci.Descriptor(oci.OCI_LAYER, diff_id, size)
    except BaseException:
        snapshots.abort(tmp)
        raise

