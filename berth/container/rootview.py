"""A container's filesystem as data: layer trees, the view with mounts over them, and
reading entries there, never mounted on the host.

Split from copy.py, which keeps `berth cp` (Docker's path rules, tar streams): this is
the filesystem those rules act on; rootwrite writes into it (`Writer`, and the volume
copy-up `populate`).

A `Tree` is a stack of overlay-form layer dirs (the container's upper dir, then the
image's lower dirs; a 0/0 char device hides a name below it, an opaque directory ends
the stack) or one plain directory (a volume, a bind source, a host directory). A `View`
is a root tree with mounts over it, as the container sees them. A walk of a view yields
`Entry`s; rootwrite's `Writer` puts entries into a directory of a view.

Nothing here lets the kernel follow a symlink. Container paths are resolved the way the
container would resolve them (filepath-securejoin: a link is read and re-walked from the
container's root, `..` stops at the root), and every open walks from a tree's root fd,
one component at a time, with O_NOFOLLOW: a link that appears mid-walk (a running
container can make one) ends the walk instead of leading it onto the host.
"""

from __future__ import annotations

import os
import stat

from berth import errors

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK|O_NOCTTY: a file swapped for a fifo or a tty before the open neither hangs
# nor becomes our terminal (fstat then tells it is not a regular file)
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_KINDS = {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "symlink",
          stat.S_IFCHR: "chr", stat.S_IFBLK: "blk", stat.S_IFIFO: "fifo"}
_OPAQUE = "trusted.overlay.opaque"
_PRIVATE_XATTRS = ("trusted.overlay.", "user.overlay.")
_MAX_LINKS = 255


def _close(fds) -> None:
    for fd in fds:
        os.close(fd)


def _whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(fd: int) -> bool:
    try:
        return os.getxattr(fd, _OPAQUE) == b"y"
    except OSError:
        return False


def _xattrs(fd: int) -> list[tuple[str, bytes]]:
    try:
        names = os.listxattr(fd)
    except OSError:
        return []
    out = []
    for name in names:
        if not name.startswith(_PRIVATE_XATTRS):
            try:
                out.append((name, os.getxattr(fd, name)))
            except OSError:
                continue
    return out


class Tree:
    """One directory tree: overlay-form layers (topmost first) or a single directory.

    A root is a path, or a directory fd the tree then owns (close() closes it).
    """

    def __init__(self, roots, *, overlay: bool = False) -> None:
        self.roots = [roots] if isinstance(roots, (str, int)) else list(roots)
        self.overlay = overlay

    def open(self) -> list[int]:
        out: list[int] = []
        try:
            for root in self.roots:
                out.append(os.dup(root) if isinstance(root, int) else
                           os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        except OSError as exc:
            _close(out)
            raise errors.NotFound(f"{exc.filename}: {exc.strerror}") from None
        return out

    def close(self) -> None:
        _close(r for r in self.roots if isinstance(r, int))
        self.roots = []

    def lookup(self, dirs: list[int], name: str):
        """(stat, fd of the layer dir holding it) of the entry `name` shows, or None."""
        for fd in dirs:
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if self.overlay and _whiteout(st):
                return None
            return st, fd
        return None

    def descend(self, dirs: list[int], name: str) -> list[int]:
        """Fds of directory `name` in each layer that shows through; [] if not a directory."""
        out: list[int] = []
        for fd in dirs:
            try:
                child = os.open(name, _DIR, dir_fd=fd)
            except FileNotFoundError:
                continue
            except OSError:
                break  # a file, a link or a whiteout: the layers below are hidden
            out.append(child)
            if not self.overlay or _opaque(child):
                break
        return out

    def listing(self, dirs: list[int]) -> list[tuple[str, os.stat_result, int]]:
        seen: dict[str, tuple[os.stat_result, int]] = {}
        hidden: set[str] = set()
        for fd in dirs:
            with os.scandir(fd) as it:
                for e in it:
                    if e.name in seen or e.name in hidden:
                        continue
                    st = e.stat(follow_symlinks=False)
                    if self.overlay and _whiteout(st):
                        hidden.add(e.name)
                    else:
                        seen[e.name] = (st, fd)
        return [(n, *seen[n]) for n in sorted(seen)]

    def walk_to(self, rel) -> list[int]:
        """Fds of the directory `rel`; NotADirectoryError if it is none."""
        dirs = self.open()
        for name in rel:
            child = self.descend(dirs, name)
            _close(dirs)
            if not child:
                raise NotADirectoryError(name)
            dirs = child
        return dirs

    def lstat(self, rel) -> os.stat_result | None:
        try:
            dirs = self.walk_to(rel[:-1] if rel else rel)
        except NotADirectoryError:
            return None
        try:
            if not rel:
                return os.fstat(dirs[0])
            found = self.lookup(dirs, rel[-1])
            return found[0] if found else None
        finally:
            _close(dirs)

    def readlink(self, rel) -> str:
        dirs = self.walk_to(rel[:-1])
        try:
            found = self.lookup(dirs, rel[-1])
            return os.readlink(rel[-1], dir_fd=found[1]) if found else ""
        finally:
            _close(dirs)


class Entry:
    """One member of a copy: a tar member, or a file found by a walk."""

    __slots__ = ("name", "kind", "mode", "uid", "gid", "mtime_ns", "link", "rdev", "size",
                 "data", "xattrs")

    def __init__(self, name: str, kind: str, mode: int, uid: int = 0, gid: int = 0,
                 mtime_ns: int = 0, link: str = "", rdev: int = 0, size: int = 0, data=None,
                 xattrs=()) -> None:
        self.name, self.kind, self.mode, self.uid, self.gid = name, kind, mode, uid, gid
        self.mtime_ns, self.link, self.rdev, self.size = mtime_ns, link, rdev, size
        self.data = data  # a callable returning (a readable binary file, its xattrs)
        self.xattrs = xattrs


class View:
    """A filesystem as a container sees it: a root tree and the trees mounted over it.

    A mount is (destination, tree, path in the tree, read-only); its tree is None when
    the kernel already shows it (a running container's own root), for its flag alone.
    """

    def __init__(self, root: Tree, mounts=(), readonly: bool = False) -> None:
        self.root = root
        self.readonly_root = readonly
        self.mounts: list[tuple[tuple[str, ...], Tree | None, list[str], bool]] = []
        # parents first, as the runtime mounts them; a destination is resolved in what is
        # mounted so far, as the runtime resolves it
        for dest, tree, prefix, ro in sorted(mounts, key=lambda m: len(split_path(m[0]))):
            self.mounts.append((tuple(self.resolve(dest)), tree, list(prefix), ro))

    def _mount_of(self, parts, with_tree: bool):
        best = None
        for mount in self.mounts:
            n = len(mount[0])
            if (tuple(parts[:n]) == mount[0] and (mount[1] is not None or not with_tree)
                    and (best is None or n >= len(best[0]))):
                best = mount
        return best

    def locate(self, parts) -> tuple[Tree, list[str]]:
        mount = self._mount_of(parts, True)
        if mount is None:
            return self.root, list(parts)
        return mount[1], mount[2] + list(parts[len(mount[0]):])

    def readonly(self, parts) -> str | None:
        """Why `parts` cannot be written to, or None."""
        mount = self._mount_of(parts, False)
        if mount is None:
            return "container rootfs is marked read-only" if self.readonly_root else None
        return "mounted volume is marked read-only" if mount[3] else None

    def is_mountpoint(self, parts) -> bool:
        return any(m[0] == tuple(parts) and m[1] is not None for m in self.mounts)

    def lstat(self, parts) -> os.stat_result | None:
        tree, rel = self.locate(parts)
        return tree.lstat(rel)

    def resolve(self, path: str, follow: bool = True) -> list[str]:
        """Path components of `path` with links resolved inside this view (securejoin)."""
        parts: list[str] = []
        pending = split_path(path)
        hops = 0
        while pending:
            part = pending.pop(0)
            if part == "..":
                if parts:
                    parts.pop()
                continue
            if not pending and not follow:
                parts.append(part)
                break
            tree, rel = self.locate(parts + [part])
            st = tree.lstat(rel)
            if st is not None and stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > _MAX_LINKS:
                    raise errors.InvalidArgument(f"too many levels of symbolic links in {path}")
                target = tree.readlink(rel)
                if target.startswith("/"):
                    parts = []
                pending = split_path(target) + pending
                continue
            parts.append(part)
        return parts

    # --- reading: a walk that yields entries --------------------------------------------

    def entries(self, parts, name: str):
        """The entry at `parts` (named `name`) and, for a directory, everything under it."""
        tree, rel = self.locate(parts)
        dirs = tree.walk_to(rel[:-1] if rel else rel)
        try:
            if rel:
                found = tree.lookup(dirs, rel[-1])
                if found is None:
                    return
                st, fd = found
                yield _entry(name, st, fd, rel[-1], {})
                if not stat.S_ISDIR(st.st_mode):
                    return
                sub = tree.descend(dirs, rel[-1])
            else:
                yield _entry(name, os.fstat(dirs[0]), None, "", {})
                sub, dirs = dirs, []
            try:
                yield from self._children(parts, tree, sub, name, {})
            finally:
                _close(sub)
        finally:
            _close(dirs)

    def _children(self, parts, tree: Tree, dirs: list[int], name: str, links: dict):
        listing = tree.listing(dirs)
        # a mount whose mount point the runtime has not made yet (never started) shows too
        below = {m[0][-1] for m in self.mounts
                 if m[1] is not None and len(m[0]) == len(parts) + 1 and m[0][:-1] == tuple(parts)}
        below -= {child for child, _, _ in listing}
        for child, st, fd in sorted(listing + [(c, None, None) for c in below],
                                    key=lambda c: c[0]):
            cparts = list(parts) + [child]
            cname = child if name in ("", ".") else f"{name}/{child}"
            if self.is_mountpoint(cparts):
                yield from self.entries(cparts, cname)
                continue
            yield _entry(cname, st, fd, child, links)
            if stat.S_ISDIR(st.st_mode):
                sub = tree.descend(dirs, child)
                try:
                    yield from self._children(cparts, tree, sub, cname, links)
                finally:
                    _close(sub)


def split_path(path: str) -> list[str]:
    """The components of a container path; "." and empty ones dropped, ".." kept."""
    return [p for p in path.split("/") if p and p != "."]


def _entry(name: str, st: os.stat_result, dir_fd: int | None, leaf: str, links: dict) -> Entry:
    kind = _KINDS.get(stat.S_IFMT(st.st_mode), "other")
    e = Entry(name, kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns,
              rdev=st.st_rdev, size=st.st_size if kind == "file" else 0)
    if kind == "symlink":
        e.link = os.readlink(leaf, dir_fd=dir_fd)
    elif kind == "file":
        if st.st_nlink > 1:
            first = links.setdefault((st.st_dev, st.st_ino), name)
            if first != name:
                e.kind, e.link, e.size = "link", first, 0
                return e
        e.data = lambda: _open_file(leaf, dir_fd)
    return e


def _open_file(leaf: str, dir_fd: int):
    fd = os.open(leaf, _FILE, dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise errors.Conflict(f"{leaf} changed while it was copied")
    return os.fdopen(fd, "rb"), _xattrs(fd)
