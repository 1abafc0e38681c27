"""A container's filesystem as data: layer trees, the view with mounts over them, and
reading and writing entries there, never mounted on the host.

Split from copy.py, which keeps `berth cp` (Docker's path rules, tar streams): this is
the filesystem those rules act on, and the volume copy-up (`populate`) uses it alone.

A `Tree` is a stack of overlay-form layer dirs (the container's upper dir, then the
image's lower dirs; a 0/0 char device hides a name below it, an opaque directory ends
the stack) or one plain directory (a volume, a bind source, a host directory). A `View`
is a root tree with mounts over it, as the container sees them. A walk of a view yields
`Entry`s; a `Writer` puts entries into a directory of a view.

Nothing here lets the kernel follow a symlink. Container paths are resolved the way the
container would resolve them (filepath-securejoin: a link is read and re-walked from the
container's root, `..` stops at the root), and every open walks from a tree's root fd,
one component at a time, with O_NOFOLLOW: a link that appears mid-walk (a running
container can make one) ends the walk instead of leading it onto the host.

Writes go to the top layer (the upper dir): parents are copied up with the metadata of
the layer below, and a file is written under a temporary name and renamed into place.
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
_CHUNK = 1 << 20


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

    # --- writes, into the top directory ------------------------------------------------

    def make_dirs(self, rel) -> list[int]:
        """Fds of directory `rel`, made (or copied up) in the top layer with its parents."""
        dirs = self.open()
        try:
            for name in rel:
                self.ensure_dir(dirs, name)
                child = self.descend(dirs, name)
                _close(dirs)
                dirs = child
        except BaseException:
            _close(dirs)
            raise
        return dirs

    def ensure_dir(self, dirs: list[int], name: str) -> None:
        top = dirs[0]
        try:
            st = os.stat(name, dir_fd=top, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            return
        below = None
        if st is not None:
            if not (self.overlay and _whiteout(st)):
                raise NotADirectoryError(name)
            os.unlink(name, dir_fd=top)  # a deleted directory made again: opaque, below
        elif self.overlay:
            below = self.lookup(dirs[1:], name)
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
            return tree, tree.make_dirs(rel), rel, parts[-1]
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
                tree.ensure_dir(dirs, name)
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
