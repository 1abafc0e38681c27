"""Unpacked layers, one directory per chain ID, shared by every image and container.

    <root>/snapshots/<chainid-hex>/fs       the layer's files, whiteouts in overlayfs form
    <root>/snapshots/<chainid-hex>/parent   the parent chain ID (absent for a base layer)
    <root>/snapshots/<chainid-hex>/diffid   the layer's DiffID
    <root>/snapshots/<chainid-hex>/size     bytes of the layer as an uncompressed tar

A snapshot is unpacked into ``.tmp-*`` and renamed into place once complete, so a
killed unpack leaves no half snapshot behind; removal renames to ``.tmp-rm-*`` first,
so a killed removal leaves no half snapshot either, only a temporary for the collector. Containers get overlay mounts as data
(:func:`overlay_mount`); only the runtime mounts them.
"""

from __future__ import annotations

import os


from berth.errors import NotFound
from berth.fsutil import normalize_parts, remove_tree
from berth.oci import digest as _digest
from berth.oci.runtime import Mount


class SnapshotStore:
    def __init__(self, root: str) -> None:
        self.root = root

    def path(self, chain_id: str) -> str:
        return os.path.join(self.root, _digest.hex_of(chain_id))

    def fs(self, chain_id: str) -> str:
        return os.path.join(self.path(chain_id), "fs")

    def exists(self, chain_id: str) -> bool:
        return os.path.isdir(self.fs(chain_id))

    def prepare(self) -> str:
        """A fresh temporary snapshot directory (with an empty fs/) to unpack into."""
        os.makedirs(self.root, exist_ok=True)
        tmp = os.path.join(self.root, f".tmp-{os.getpid()}-{os.urandom(6).hex()}")
        os.makedirs(os.path.join(tmp, "fs"), mode=0o755)
        return tmp

    def commit(self, tmp: str, chain_id: str, diff_id: str, parent: str | None,
               size: int | None = None) -> str:
        """Rename a complete unpack into place; `size` is the layer's uncompressed tar size."""
        with open(os.path.join(tmp, "diffid"), "w") as f:
            f.write(diff_id)
        if parent:
            with open(os.path.join(tmp, "parent"), "w") as f:
                f.write(parent)
        if size is not None:
            with open(os.path.join(tmp, "size"), "w") as f:
                f.write(str(size))
        _syncfs(tmp)
        target = self.path(chain_id)
        try:
            os.rename(tmp, target)
        except OSError:
            if not self.exists(chain_id):
                raise
            # unpacked concurrently by someone else: theirs is as good as ours
            remove_tree(tmp)
        return target

    def abort(self, tmp: str) -> None:
        remove_tree(tmp)

    def remove(self, chain_id: str) -> None:
        path = self.path(chain_id)
        if not os.path.exists(path):
            return
        trash = os.path.join(self.root, f".tmp-rm-{os.urandom(6).hex()}")
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return  # removed concurrently
        remove_tree(trash)

    def list(self) -> list[str]:
        """Chain IDs of the committed snapshots (strays are in ``strays()``)."""
        return ["sha256:" + n for n in self._names() if _is_hex64(n)]

    def strays(self) -> list[str]:
        """Paths of entries that are neither a snapshot nor a temporary."""
        return [os.path.join(self.root, n) for n in self._names()
                if not _is_hex64(n) and not n.startswith(".tmp-")]

    def temporaries(self) -> list[str]:
        """Paths an interrupted unpack or removal left (or one in progress is using)."""
        return [os.path.join(self.root, n) for n in self._names() if n.startswith(".tmp-")]

    def _names(self) -> list[str]:
        try:
            return os.listdir(self.root)
        except FileNotFoundError:
            return []

    def cleanup_temporaries(self) -> None:
        """Remove what an interrupted unpack left behind."""
        for path in self.temporaries():
            remove_tree(path)

    def meta(self, chain_id: str) -> tuple[str | None, str | None]:
        """(DiffID, parent chain ID) as recorded in the snapshot; None where a file is absent."""
        out = []
        for name in ("diffid", "parent"):
            try:
                with open(os.path.join(self.path(chain_id), name)) as f:
                    out.append(f.read().strip())
            except FileNotFoundError:
                out.append(None)
        return out[0], out[1]

    def size(self, chain_id: str) -> int | None:
        """The layer's uncompressed tar size, if recorded when it was unpacked."""
        try:
            with open(os.path.join(self.path(chain_id), "size")) as f:
                return int(f.read())
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None

    def disk_usage(self, chain_id: str) -> int:
        """Bytes the whole snapshot directory holds (what removing it frees)."""
        return tree_size(self.path(chain_id))

    def lowerdirs(self, chain_ids: list[str]) -> list[str]:
        """Lower directories for overlayfs, topmost first."""
        out = []
        for chain in reversed(chain_ids):
            fs = self.fs(chain)
            if not os.path.isdir(fs):
                raise NotFound(f"layer {chain} is not unpacked")
            out.append(fs)
        return out


def overlay_mount(lowerdirs: list[str], upper: str, work: str, readonly: bool = False) -> Mount:
    """The rootfs mount for a container, as data for the runtime."""
    if not lowerdirs:
        # overlayfs needs a lower layer; an image from scratch gets an empty one
        raise NotFound("an image without layers cannot be mounted")
    options = [f"lowerdir={':'.join(lowerdirs)}", f"upperdir={upper}", f"workdir={work}"]
    if readonly:
        options.insert(0, "ro")
    return Mount(destination="/", type="overlay", source="overlay", options=tuple(options))


def tree_size(path: str, what: str = "all") -> int:
    """Apparent bytes under `path`, each inode once; never follows a symlink.

    what="regular": regular files only; "nondir": every entry but directories (Docker's
    size of a container's upper dir); "all": directories too (what removing it frees).
    """
    import stat as _stat

    seen = set()
    total = 0
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            continue
        if _stat.S_ISDIR(st.st_mode):
            if what == "all":
                total += st.st_size
            try:
                names = os.listdir(current)
            except (FileNotFoundError, NotADirectoryError):
                continue
            stack.extend(os.path.join(current, n) for n in names)
            continue
        if what == "regular" and not _stat.S_ISREG(st.st_mode):
            continue
        if st.st_nlink > 1:
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
        total += st.st_size
    return total


def _is_hex64(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def _syncfs(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        from berth.linux import syscalls

        syscalls().syncfs(fd)
    finally:
        os.close(fd)


def read_layered(dirs: list[str], path: str, limit: int = 1 << 20) -> bytes | None:
    """Read `path` as the merged view of `dirs` (topmost first) would show it.

    For small configuration files the engine needs before any mount exists (such as
    /etc/passwd). Symlinks are resolved inside the image, never on the host; an overlay
    whiteout hides the file. Returns None when the file does not exist.
    """
    import stat as _stat

    parts = [p for p in path.split("/") if p and p != "."]
    for _hop in range(40):
        redirected = False
        for d in dirs:
            current = d
            for i, part in enumerate(parts):
                current = os.path.join(current, part)
                try:
                    st = os.lstat(current)
                except (FileNotFoundError, NotADirectoryError):
                    break
                if _stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    return None  # whiteout
                if _stat.S_ISLNK(st.st_mode):
                    target = os.readlink(current)
                    base = [] if target.startswith("/") else parts[:i]
                    parts = normalize_parts(base + target.split("/") + parts[i + 1:])
                    redirected = True
                    break
                if i == len(parts) - 1:
                    if not _stat.S_ISREG(st.st_mode):
                        return None
                    fd = os.open(current, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                    with os.fdopen(fd, "rb") as f:
                        return f.read(limit)
            if redirected:
                break
        if not redirected:
            return None
    return None
