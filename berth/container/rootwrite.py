"""Writing entries into a container's filesystem: `Writer` and the volume copy-up.

Split from rootview, which reads a root through its layers and mounts; this writes into
it by the same rules. Every parent is resolved inside the view and opened from a tree's
root fd with O_NOFOLLOW, so a write never lands on the host through a link.

Writes go to the top layer (the upper dir): parents are copied up with the metadata of
the layer below, and a file is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import os
import stat

from berth import errors
from berth.container.rootview import _DIR, _OPAQUE, Entry, Tree, View, _close, _whiteout

_CHUNK = 1 << 20


class Writer:
    """Writes entries into a directory of a view (`base`), each parent resolved inside it.

    `owner` None keeps each entry's uid/gid; a (uid, gid) pair is given to everything.
    """

    def __init__(self, view: View, base, owner: tuple[int, int] | None) -> None:
        self.view = view
        self.base = list(base)
        self.owner = owner
        self.dir_times: list[tuple[Tree, list[str], int]] = []

    def write(self, entries) -> None:
        for e in entries:
            parts = _clean(e.name)
            if parts:
                self._put(parts, e)
        for tree, rel, mtime in reversed(self.dir_times):
            dirs = tree.walk_to(rel)
            try:
                os.utime(dirs[0], ns=(mtime, mtime))
            finally:
                _close(dirs)

    def _place(self, parts):
        """(tree, fds of the parent directory, its path in the tree, leaf name) of `parts`;
        missing parents are made, and copied up in a layered tree."""
        parent = self.view.resolve("/" + "/".join(self.base + parts[:-1]))
        tree, rel = self.view.locate(parent)
        refused = self.view.readonly(parent)
        if refused:
            raise errors.FailedPrecondition(refused)
        try:
            return tree, _make_dirs(tree, rel), rel, parts[-1]
        except NotADirectoryError as exc:
            raise errors.Conflict(f"cannot create {'/'.join(parts)}: {exc} is not a "
                                  "directory") from None

    def _put(self, parts, e: Entry) -> None:
        tree, dirs, rel, name = self._place(parts)
        try:
            shown = tree.lookup(dirs, name)
            if shown is not None:
                is_dir = stat.S_ISDIR(shown[0].st_mode)
                path = "/" + "/".join(self.base + parts)
                if is_dir and e.kind != "dir":
                    raise errors.Conflict(f'cannot overwrite directory "{path}" with '
                                          f'non-directory "{path}"')
                if not is_dir and e.kind == "dir":
                    raise errors.Conflict(f'cannot overwrite non-directory "{path}" with '
                                          f'directory "{path}"')
            uid, gid = self.owner or (e.uid, e.gid)
            if e.kind == "dir":
                _ensure_dir(tree, dirs, name)
                fd = os.open(name, _DIR, dir_fd=dirs[0])
                try:
                    os.fchown(fd, uid, gid)
                    os.fchmod(fd, e.mode)
                    for key, value in e.xattrs:
                        _setxattr(fd, key, value)
                finally:
                    os.close(fd)
                self.dir_times.append((tree, rel + [name], e.mtime_ns))
                return
            self._put_other(tree, dirs, name, e, uid, gid)
        finally:
            _close(dirs)

    def _put_other(self, tree: Tree, dirs, name: str, e: Entry, uid: int, gid: int) -> None:
        top = dirs[0]
        tmp = f".berth-cp-{os.urandom(6).hex()}"
        times = (e.mtime_ns, e.mtime_ns)
        try:
            if e.kind == "file":
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600, dir_fd=top)
                try:
                    source, xattrs = e.data() if e.data else (None, ())
                    if source is not None:
                        with source:
                            while chunk := source.read(_CHUNK):
                                os.write(fd, chunk)
                    os.fchown(fd, uid, gid)
                    os.fchmod(fd, e.mode)  # after chown, which clears set-id bits
                    for key, value in list(xattrs) + list(e.xattrs):
                        _setxattr(fd, key, value)
                    os.utime(fd, ns=times)
                finally:
                    os.close(fd)
            elif e.kind == "symlink":
                os.symlink(e.link, tmp, dir_fd=top)
                os.chown(tmp, uid, gid, dir_fd=top, follow_symlinks=False)
                os.utime(tmp, ns=times, dir_fd=top, follow_symlinks=False)
            elif e.kind == "link":
                ltree, ldirs, _, lname = self._place(_clean(e.link))
                try:
                    if ltree is not tree:
                        raise errors.InvalidArgument(f"hard link {e.name} -> {e.link} crosses "
                                                     "a mount")
                    os.link(lname, tmp, src_dir_fd=ldirs[0], dst_dir_fd=top,
                            follow_symlinks=False)
                finally:
                    _close(ldirs)
            elif e.kind in ("chr", "blk", "fifo"):
                kind = {"chr": stat.S_IFCHR, "blk": stat.S_IFBLK, "fifo": stat.S_IFIFO}[e.kind]
                os.mknod(tmp, kind | 0o600, e.rdev, dir_fd=top)
                os.chown(tmp, uid, gid, dir_fd=top, follow_symlinks=False)
                os.chmod(tmp, e.mode, dir_fd=top)
                os.utime(tmp, ns=times, dir_fd=top, follow_symlinks=False)
            else:
                return  # sockets and the like are not copied, as tar cannot hold them
            os.rename(tmp, name, src_dir_fd=top, dst_dir_fd=top)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=top)
            except OSError:
                pass
            raise


def _setxattr(fd: int, key: str, value: bytes) -> None:
    try:
        os.setxattr(fd, key, value)
    except OSError:
        pass  # a filesystem without that namespace: the data matters more


def _clean(name: str) -> list[str]:
    parts = [p for p in name.split("/") if p and p != "."]
    if ".." in parts:
        raise errors.InvalidArgument(f"invalid path in archive: {name!r}")
    return parts


def _make_dirs(tree: Tree, rel) -> list[int]:
    """Fds of directory `rel`, made (or copied up) in the top layer with its parents."""
    dirs = tree.open()
    try:
        for name in rel:
            _ensure_dir(tree, dirs, name)
            child = tree.descend(dirs, name)
            _close(dirs)
            dirs = child
    except BaseException:
        _close(dirs)
        raise
    return dirs


def _ensure_dir(tree: Tree, dirs: list[int], name: str) -> None:
    top = dirs[0]
    try:
        st = os.stat(name, dir_fd=top, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        return
    below = None
    if st is not None:
        if not (tree.overlay and _whiteout(st)):
            raise NotADirectoryError(name)
        os.unlink(name, dir_fd=top)  # a deleted directory made again: opaque, below
    elif tree.overlay:
        below = tree.lookup(dirs[1:], name)
        if below is not None and not stat.S_ISDIR(below[0].st_mode):
            raise NotADirectoryError(name)
    os.mkdir(name, 0o700, dir_fd=top)
    fd = os.open(name, _DIR, dir_fd=top)
    try:
        if below is not None:  # copy-up: the lower directory's owner, mode and times
            meta = below[0]
            os.fchown(fd, meta.st_uid, meta.st_gid)
            os.fchmod(fd, stat.S_IMODE(meta.st_mode))
            os.utime(fd, ns=(meta.st_atime_ns, meta.st_mtime_ns))
        else:
            os.fchmod(fd, 0o755)
        if st is not None:
            os.setxattr(fd, _OPAQUE, b"y")
    finally:
        os.close(fd)


# --- the volume copy-up ----------------------------------------------------------------


def populate(layers: list[str], path: str, dest: str) -> bool:
    """Docker's copy-up: the image's files at `path` into an empty volume directory `dest`.

    Owners, modes, times and links are kept; the volume directory itself takes the owner
    and mode of the image's directory. False when the image has no directory there.
    """
    view = View(Tree(layers, overlay=True))
    parts = view.resolve(path)
    st = view.lstat(parts)
    if st is None or not stat.S_ISDIR(st.st_mode):
        return False
    Writer(View(Tree(dest)), [], owner=None).write(view.entries(parts, "."))
    os.chown(dest, st.st_uid, st.st_gid)
    os.chmod(dest, stat.S_IMODE(st.st_mode))
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
    return True
