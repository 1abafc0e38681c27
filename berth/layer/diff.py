"""A directory as a layer: the tar of an overlayfs upper dir, and what changed in it.

``write_layer(upper, out)`` streams the uncompressed OCI layer tar of a container's upper
dir, hashing as it goes: overlay whiteouts (0/0 char devices) become ``.wh.NAME`` members
and an opaque directory gains a ``.wh..wh..opq`` member, as Docker's overlay2 driver
writes them. ``changes(upper, lowers)`` is ``docker diff``: A, C and D entries against the
merged view of the lower dirs. ``compare_trees(a, b)`` compares the merged trees of two
stacks of unpacked layers, for ``berth image diff``.

The upper dir belongs to a container that may still be running, so it is walked through
directory fds with ``O_NOFOLLOW``: a directory swapped for a symlink mid-walk cannot send
the walk (and the host's files) into the layer.

The tar is what Docker writes: names sorted, parents before children, whole-second
mtimes, no atime/ctime. Its bytes are ``berth.layer.tarwriter``'s: header encoding (as
Go's archive/tar, PAX only where USTAR cannot say it) and the buffered, hashed output.
"""

from __future__ import annotations

import os
import stat

from berth.errors import FailedPrecondition, InvalidArgument
from berth.layer.tarwriter import TarWriter, header

_CHUNK = 1 << 20  # reads when comparing file contents
_WH = b".wh."
_WH_OPAQUE = b".wh..wh..opq"
_OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
_RESERVED_XATTRS = ("trusted.overlay.", "user.overlay.")
# overlayfs features whose upper entries are not self-contained: a redirected directory
# takes its content from elsewhere in the lower dirs, a metacopy file its data
_INCOMPLETE_XATTRS = ("trusted.overlay.redirect", "trusted.overlay.metacopy",
                      "user.overlay.redirect", "user.overlay.metacopy")
_DIR_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK|O_NOCTTY: should a running container swap a file for a fifo or a tty between
# the listing and the open, the open neither hangs nor adopts a terminal (fstat tells)
_FILE_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(target: int | bytes) -> bool:
    """Whether a directory (an fd, or a path that is never followed) is overlay-opaque."""
    for attr in _OPAQUE_XATTRS:
        try:
            value = (os.getxattr(target, attr) if isinstance(target, int)
                     else os.getxattr(target, attr, follow_symlinks=False))
        except OSError:
            continue
        if value == b"y":
            return True
    return False


def _same_owner_mode(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_mode, a.st_uid, a.st_gid) == (b.st_mode, b.st_uid, b.st_gid)


# -- the lower dirs, merged


class _Merged:
    """An entry of the tree that overlay-form layer dirs merge into, read lazily.

    A directory keeps its `sources`: the same directory in each layer that shows through,
    topmost first. Its children are read from them on first use: a whiteout hides the
    name in the layers below, an opaque directory or a non-directory ends the sources of
    a directory. The layers themselves are never mounted.
    """

    __slots__ = ("path", "st", "sources", "_open", "_children")

    def __init__(self, path: bytes, st, sources: list[bytes] | None, open_below: bool) -> None:
        self.path = path  # where the entry lives: its topmost layer's copy
        self.st = st
        self.sources = sources  # None for a non-directory
        self._open = open_below  # lower layers may still add to this directory
        self._children: dict[bytes, _Merged] | None = None

    @property
    def children(self) -> dict[bytes, "_Merged"]:
        if self._children is None:
            kids: dict[bytes, _Merged] = {}
            hidden: set[bytes] = set()
            for source in self.sources or ():
                with os.scandir(source) as it:
                    entries = [(os.fsencode(e.name), e.stat(follow_symlinks=False)) for e in it]
                for name, st in entries:
                    if name in hidden:
                        continue
                    path = source + b"/" + name
                    child = kids.get(name)
                    if child is None:
                        if _is_whiteout(st):
                            hidden.add(name)
                        elif stat.S_ISDIR(st.st_mode):
                            kids[name] = _Merged(path, st, [path], not _opaque(path))
                        else:
                            kids[name] = _Merged(path, st, None, False)
                    elif child._open:
                        if stat.S_ISDIR(st.st_mode):
                            child.sources.append(path)
                            child._open = not _opaque(path)
                        else:
                            child._open = False
            self._children = kids
        return self._children

    def lookup(self, rel: bytes) -> "_Merged | None":
        node = self
        for part in rel.split(b"/"):
            if node.sources is None:
                return None
            node = node.children.get(part)
            if node is None:
                return None
        return node


def _merged(layers) -> _Merged:
    """The merged tree of `layers`, topmost first."""
    return _Merged(b"", None, [os.fsencode(layer) for layer in layers], True)


# -- the engine's stubs


class _Skips:
    """Entries of an upper dir that are the engine's, not the container's.

    The runtime creates mount points for /etc/hosts, /proc and the like in the upper dir
    when the image lacks them; Docker keeps those in an "init" layer of its own, so they
    are in neither its diff nor its commits. An excluded path is skipped while it is an
    empty file or an empty directory, and so is a directory that holds only such stubs
    and is either new or copied up from the lowers with its owner and mode unchanged.
    """

    def __init__(self, exclude, lowers: _Merged) -> None:
        self.paths = {os.fsencode(p.strip("/")) for p in exclude}
        self.ancestors = set()
        for p in self.paths:
            parts = p.split(b"/")
            self.ancestors.update(b"/".join(parts[:i]) for i in range(1, len(parts)))
        self.lowers = lowers

    def skip(self, dfd: int, name: bytes, rel: bytes, st: os.stat_result) -> bool:
        if rel not in self.paths and rel not in self.ancestors:
            return False
        if stat.S_ISREG(st.st_mode):
            return rel in self.paths and st.st_size == 0
        if not stat.S_ISDIR(st.st_mode):
            return False
        fd = os.open(name, _DIR_OPEN, dir_fd=dfd)
        try:
            if _opaque(fd):
                return False
            with os.scandir(fd) as it:
                children = [(os.fsencode(e.name), e.stat(follow_symlinks=False)) for e in it]
            if not all(self.skip(fd, n, rel + b"/" + n, s) for n, s in children):
                return False
        finally:
            os.close(fd)
        if rel in self.paths:
            return True
        below = self.lowers.lookup(rel)
        return below is None or (below.sources is not None and _same_owner_mode(st, below.st))


# -- the layer tar


def _xattrs(target, what: bytes) -> list[tuple[str, bytes]]:
    """The entry's xattrs worth keeping, sorted; `target` is an fd or a /proc path."""
    kw = {} if isinstance(target, int) else {"follow_symlinks": False}
    try:
        names = os.listxattr(target, **kw)
    except OSError:
        return []  # a filesystem without xattrs
    out = []
    for attr in sorted(names):
        if attr.startswith(_RESERVED_XATTRS):
            if attr.startswith(_INCOMPLETE_XATTRS):
                raise FailedPrecondition(
                    f"/{os.fsdecode(what)} in the container's upper dir uses overlayfs "
                    f"{attr.rpartition('.')[2]}, which berth cannot turn into a layer; "
                    "load the overlay module with redirect_dir=off and metacopy=off")
            continue
        try:
            out.append((attr, os.getxattr(target, attr, **kw)))
        except OSError:
            continue  # removed meanwhile
    return out


class _LayerWriter:
    """One pass over the upper dir, members written to `tar` as they are found."""

    def __init__(self, tar: TarWriter, skips: _Skips) -> None:
        self._tar = tar
        self._skips = skips
        self._links: dict[tuple[int, int], bytes] = {}

    def walk_dir(self, dfd: int, prefix: bytes) -> None:
        with os.scandir(dfd) as it:
            entries = sorted((os.fsencode(e.name), e) for e in it)
        for name, entry in entries:
            rel = prefix + name
            try:
                st = entry.stat(follow_symlinks=False)
                if not self._skips.skip(dfd, name, rel, st):
                    self.entry(dfd, name, rel, st)
            except FileNotFoundError:
                continue  # removed by a container still running: not part of this layer

    def entry(self, dfd: int, name: bytes, rel: bytes, st: os.stat_result) -> None:
        mode = st.st_mode
        mtime = st.st_mtime_ns // 1_000_000_000
        perm = stat.S_IMODE(mode)
        if stat.S_ISDIR(mode):
            fd = os.open(name, _DIR_OPEN, dir_fd=dfd)
            try:
                st = os.fstat(fd)
                perm = stat.S_IMODE(st.st_mode)
                self._tar.emit(header(rel + b"/", perm, st.st_uid, st.st_gid, 0,
                                      st.st_mtime_ns // 1_000_000_000, b"5",
                                      xattrs=_xattrs(fd, rel)))
                if _opaque(fd):
                    # Docker's form: the marker takes the directory's owner and permissions
                    self._tar.emit(header(rel + b"/" + _WH_OPAQUE, perm & 0o777, st.st_uid,
                                          st.st_gid, 0, 0, b"0"))
                self.walk_dir(fd, rel + b"/")
            finally:
                os.close(fd)
            return
        if _is_whiteout(st):  # before the hardlink check: overlayfs shares one whiteout inode
            parent, _, base = rel.rpartition(b"/")
            self._tar.emit(header((parent + b"/" if parent else b"") + _WH + base, 0o600,
                                  st.st_uid, st.st_gid, 0, mtime, b"0"))
            return
        if st.st_nlink > 1:
            first = self._links.get((st.st_dev, st.st_ino))
            if first is not None:
                self._tar.emit(header(rel, perm, st.st_uid, st.st_gid, 0, mtime, b"1", first))
                return
        if stat.S_ISREG(mode):
            if self._file(dfd, name, rel) and st.st_nlink > 1:
                self._links[(st.st_dev, st.st_ino)] = rel
            return
        if st.st_nlink > 1:
            self._links[(st.st_dev, st.st_ino)] = rel
        xattrs = _xattrs(f"/proc/self/fd/{dfd}/{os.fsdecode(name)}", rel)  # no lgetxattrat
        if stat.S_ISLNK(mode):
            self._tar.emit(header(rel, 0o777, st.st_uid, st.st_gid, 0, mtime, b"2",
                                  os.readlink(name, dir_fd=dfd), xattrs=xattrs))
        elif stat.S_ISFIFO(mode):
            self._tar.emit(header(rel, perm, st.st_uid, st.st_gid, 0, mtime, b"6", xattrs=xattrs))
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            self._tar.emit(header(rel, perm, st.st_uid, st.st_gid, 0, mtime,
                                  b"3" if stat.S_ISCHR(mode) else b"4", b"",
                                  os.major(st.st_rdev), os.minor(st.st_rdev), xattrs=xattrs))
        # sockets cannot be archived; tar and Docker leave them out too

    def _file(self, dfd: int, name: bytes, rel: bytes) -> bool:
        """Write the member of a regular file; False if it is one no more."""
        fd = os.open(name, _FILE_OPEN, dir_fd=dfd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return False  # swapped for something else since the listing
            size = st.st_size
            self._tar.emit(header(rel, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, size,
                                  st.st_mtime_ns // 1_000_000_000, b"0", xattrs=_xattrs(fd, rel)))
            self._tar.data_from(fd, size)
            return True
        finally:
            os.close(fd)


def _open_root(path: str) -> int:
    try:
        return os.open(path, _DIR_OPEN)
    except OSError as exc:
        raise InvalidArgument(f"{path}: {exc.strerror}") from None


def write_layer(upper: str, out, *, lowers: list[str] | tuple[str, ...] = (),
                exclude: list[str] | tuple[str, ...] = ()) -> tuple[str, int]:
    """Write the uncompressed layer tar of overlayfs upper dir `upper` to the binary
    stream `out` (anything with ``write``); return (diff ID, size in bytes).

    `lowers` are the lower dirs, topmost first, and `exclude` the engine's mount points
    ("etc/hosts"), left out while they are bare stubs (see _Skips).
    """
    root = _open_root(upper)
    try:
        skips = _Skips(exclude, _merged(lowers))
        tar = TarWriter(out)
        try:
            _LayerWriter(tar, skips).walk_dir(root, b"")
            return tar.finish()
        finally:
            tar.close()
    finally:
        os.close(root)


# -- docker diff


def _sort_key(change: tuple[str, str]) -> list[bytes]:
    return os.fsencode(change[1]).split(b"/")  # by component: a directory, then its entries


def changes(upper: str, lowers: list[str] | tuple[str, ...],
            exclude: list[str] | tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """``docker diff`` of the overlayfs upper dir `upper` over `lowers` (topmost first):
    [("A"|"C"|"D", "/path")], sorted by path.

    An entry absent from the merged lowers is A (and so is all below it); present, C;
    a whiteout, D. A directory is C when something below it changed, when it is opaque
    (then what it hides of the lowers is D) or when its mode, owner or mtime changed.
    """
    tree = _merged(lowers)
    skips = _Skips(exclude, tree)
    out: list[tuple[str, str]] = []

    def visit(dfd: int, prefix: bytes, below_dir: _Merged | None) -> None:
        # below_dir: this directory in the lowers; None when it is new, so all below is A
        with os.scandir(dfd) as it:
            entries = [(os.fsencode(e.name), e) for e in it]
        for name, entry in entries:
            rel = prefix + name
            path = "/" + os.fsdecode(rel)
            try:
                st = entry.stat(follow_symlinks=False)
                if skips.skip(dfd, name, rel, st):
                    continue
            except FileNotFoundError:
                continue
            below = below_dir.children.get(name) if below_dir is not None else None
            if _is_whiteout(st):
                if below is not None:
                    out.append(("D", path))
                continue
            if not stat.S_ISDIR(st.st_mode):
                out.append(("A" if below is None else "C", path))
                continue
            mark = len(out)
            below_is_dir = below is not None and below.sources is not None
            fd = os.open(name, _DIR_OPEN, dir_fd=dfd)
            try:
                opaque = _opaque(fd)
                present = {os.fsencode(n) for n in os.listdir(fd)} if opaque else set()
                visit(fd, rel + b"/", below if below_is_dir else None)
            finally:
                os.close(fd)
            if below is None:
                out.append(("A", path))
                continue
            if opaque and below_is_dir:
                out.extend(("D", path + "/" + os.fsdecode(hidden))
                           for hidden in below.children if hidden not in present)
            if (len(out) > mark or opaque or not below_is_dir or not _same_owner_mode(st, below.st)
                    or st.st_mtime_ns != below.st.st_mtime_ns):
                out.append(("C", path))

    root = _open_root(upper)
    try:
        visit(root, b"", tree)
    finally:
        os.close(root)
    out.sort(key=_sort_key)
    return out


# -- image diff


def compare_trees(old_layers, new_layers) -> list[tuple[str, str]]:
    """File-level differences between two stacks of layer dirs (each topmost first), as
    ``docker diff`` shows them: [("A"|"C"|"D", "/path")], sorted by path.

    Entries are compared by type, mode, owner, size, symlink target, device number and,
    for regular files of equal size that are not the same inode, content. A directory
    both trees take from the same layer dirs is the same and is not read at all.
    """
    out: list[tuple[str, str]] = []
    _compare(_merged(old_layers), _merged(new_layers), "", out)
    out.sort(key=_sort_key)
    return out


def _compare(old: _Merged, new: _Merged, prefix: str, out: list) -> bool:
    if old.sources == new.sources:
        return False  # the same layer dirs, which never change: a base both images share
    changed = False
    old_kids, new_kids = old.children, new.children
    for name in old_kids.keys() | new_kids.keys():
        path = prefix + "/" + os.fsdecode(name)
        a, b = old_kids.get(name), new_kids.get(name)
        if b is None:
            out.append(("D", path))
        elif a is None:
            _added(b, path, out)
        elif (a.sources is None) != (b.sources is None):
            out.append(("C", path))
            for child, node in (b.children if b.sources is not None else {}).items():
                _added(node, path + "/" + os.fsdecode(child), out)
        elif a.sources is not None:
            if not (_compare(a, b, path, out) or not _same_owner_mode(a.st, b.st)):
                continue
            out.append(("C", path))
        elif _same_entry(a, b):
            continue
        else:
            out.append(("C", path))
        changed = True
    return changed


def _added(node: _Merged, path: str, out: list) -> None:
    out.append(("A", path))
    if node.sources is not None:
        for name, child in node.children.items():
            _added(child, path + "/" + os.fsdecode(name), out)


def _same_entry(a: _Merged, b: _Merged) -> bool:
    sa, sb = a.st, b.st
    if not _same_owner_mode(sa, sb):
        return False
    if (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino):
        return True  # one file of a layer both images share
    if stat.S_ISREG(sa.st_mode):
        return sa.st_size == sb.st_size and _same_content(a.path, b.path)
    if stat.S_ISLNK(sa.st_mode):
        return os.readlink(a.path) == os.readlink(b.path)
    if stat.S_ISCHR(sa.st_mode) or stat.S_ISBLK(sa.st_mode):
        return sa.st_rdev == sb.st_rdev
    return True


def _same_content(a: bytes, b: bytes) -> bool:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    with open(os.open(a, flags), "rb", buffering=0) as fa, \
            open(os.open(b, flags), "rb", buffering=0) as fb:
        while True:
            da, db = fa.read(_CHUNK), fb.read(_CHUNK)
            if da != db:
                return False
            if not da:
                return True
