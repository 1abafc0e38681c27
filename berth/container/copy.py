"""`berth cp`: Docker's path rules between a container and the host, and tar streams.

The container's files are a `rootview.View` (its layers, with its volumes, binds and
/etc files mounted over them), read and written as data, never mounted on the host and
never letting the kernel follow a symlink; see rootview for how, and rootwrite for
writes. The image's files are copied into a new volume the same way (rootwrite's
`populate`).

A stopped container is written in its top layer (the upper dir). A running container is
written through its own root instead (/proc/PID/root, walked the same way): overlayfs
does not allow its layers to change underneath a mount, so the kernel must do the
copy-up (see container_view).
"""

from __future__ import annotations

import os
import stat

from berth import errors
from berth.container.rootview import Entry, Tree, View, split_path
from berth.container.rootwrite import Writer

# --- the container as a view -----------------------------------------------------------


def layers_of(record: dict) -> list[str]:
    data = record["GraphDriver"]["Data"]
    return [data["UpperDir"]] + [d for d in data.get("LowerDir", "").split(":") if d]


def container_view(record: dict, live: bool = False) -> View:
    """The container's files: its layers, its volumes and binds, its hosts and hostname.

    `live`: for writing into a running container, its own root, through /proc: its
    overlay is mounted, and overlayfs does not allow changes to its layers underneath
    (new files stay unseen, and its own copy-ups then fail).
    """
    volumes = [(m["Destination"], m["Source"], not m.get("RW", True))
               for m in record.get("Mounts") or ()
               if m.get("Type") in ("volume", "bind") and m.get("Source")]
    ro_root = bool(record["HostConfig"].get("ReadonlyRootfs"))
    root = _live_root(record) if live else None
    if root is not None:
        return View(root, [(dest, None, (), ro) for dest, _, ro in volumes], ro_root)
    mounts = []
    for dest, key in (("/etc/resolv.conf", "ResolvConfPath"), ("/etc/hostname", "HostnamePath"),
                      ("/etc/hosts", "HostsPath")):
        if record.get(key):
            mounts.append((dest, *_mounted(record[key]), False))
    for dest, source, ro in volumes:
        mounts.append((dest, *_mounted(source), ro))
    return View(Tree(layers_of(record), overlay=True), mounts, ro_root)


def _mounted(source: str) -> tuple[Tree, list[str]]:
    if os.path.isdir(source):
        return Tree(source), []
    # a file bind: the tree is its directory, and the mount shows only the file
    return Tree(os.path.dirname(source) or "/"), [os.path.basename(source)]


def _live_root(record: dict) -> Tree | None:
    """The root of the container's running PID 1, checked to be that process, not a reuse."""
    process = (record.get("Berth") or {}).get("Process")
    if not record["State"].get("Running") or not process:
        return None
    pid, started = process
    try:
        proc = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        # /proc/<pid> held open stays that process's: its stat is read through it
        fd = os.open("stat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc)
        try:
            raw = os.read(fd, 4096)
        finally:
            os.close(fd)
        if int(raw[raw.rindex(b")") + 2:].split()[19]) != started:
            return None
        return Tree(os.open("root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=proc))
    except (OSError, ValueError, IndexError):
        return None
    finally:
        os.close(proc)


# --- berth cp: Docker's path rules -----------------------------------------------------


def split_arg(arg: str) -> tuple[str | None, str]:
    """CONTAINER:PATH -> (CONTAINER, PATH); a local path (absolute, or ./x:y) -> (None, arg)."""
    if arg.startswith("/"):
        return None, arg
    ref, sep, path = arg.partition(":")
    if not sep or ref.startswith("."):
        return None, arg
    return ref, path


def cmd(containers, src: str, dst: str, *, archive: bool = False, follow: bool = False,
        stdin=None, stdout=None) -> int:
    import sys

    sref, spath = split_arg(src)
    dref, dpath = split_arg(dst)
    if sref is not None and dref is not None:
        raise errors.InvalidArgument("copying between containers is not supported")
    if sref is None and dref is None:
        raise errors.InvalidArgument("must specify at least one container source")
    if sref is not None:
        if not spath:
            raise errors.InvalidArgument("source can not be empty")
        copy_out(containers.get(sref), sref, spath, dst, follow, stdout or sys.stdout.buffer)
    else:
        if not dpath:
            raise errors.InvalidArgument("destination can not be empty")
        copy_in(containers.get(dref), dref, dpath, src, archive, follow,
                stdin or sys.stdin.buffer)
    return 0


def _asserts_dir(path: str) -> bool:
    return path.endswith("/") or path == "." or path.endswith("/.")


def copy_out(record: dict, ref: str, path: str, dst: str, follow: bool, stdout) -> None:
    """CONTAINER:PATH to a host path, or to a tar stream on `stdout` for '-'."""
    view = container_view(record)
    dot = path == "." or path.endswith("/.")
    # the last component is copied as it is (a link stays a link) unless -L or a trailing /
    parts = view.resolve(path, follow=follow or _asserts_dir(path))
    st = view.lstat(parts)
    if st is None:
        raise errors.NotFound(f"Could not find the file {path} in container {ref}")
    is_dir = stat.S_ISDIR(st.st_mode)
    if _asserts_dir(path) and not is_dir:
        raise errors.InvalidArgument(f"{path}: not a directory")
    name = "." if dot or not split_path(path) else split_path(path)[-1]
    if dst == "-":
        write_tar(view.entries(parts, name), stdout)
        return
    target = dst
    if os.path.islink(target):
        target = os.path.realpath(target)  # Docker copies to where a link points
    exists = os.path.lexists(target)
    if exists and os.path.isdir(target):
        into, name_there = target, name
    elif exists and is_dir:
        raise errors.InvalidArgument("cannot copy directory")
    elif not exists and not is_dir and _asserts_dir(dst):
        raise errors.NotFound("no such directory")
    else:
        into, name_there = os.path.split(os.path.abspath(target))
        if not os.path.isdir(into):
            raise errors.NotFound(f"destination directory {into} does not exist")
    entries = view.entries(parts, name_there)
    Writer(View(Tree(into)), [], owner=(os.geteuid(), os.getegid())).write(entries)


def copy_in(record: dict, ref: str, path: str, src: str, archive: bool, follow: bool,
            stdin) -> None:
    """A host path, or a tar stream on `stdin` for '-', to CONTAINER:PATH."""
    view = container_view(record, live=True)
    try:
        _copy_in(view, ref, path, src, archive, follow, stdin)
    finally:
        view.root.close()


def _copy_in(view: View, ref: str, path: str, src: str, archive: bool, follow: bool,
             stdin) -> None:
    dparts = view.resolve(path)  # a link at the destination is followed, inside the container
    dst_st = view.lstat(dparts)
    shown = f'"{ref}:{path}"'
    if dst_st is not None and not (stat.S_ISDIR(dst_st.st_mode) or stat.S_ISREG(dst_st.st_mode)):
        raise errors.InvalidArgument(f"destination {shown} must be a directory or a regular file")
    dst_dir = dst_st is not None and stat.S_ISDIR(dst_st.st_mode)
    owner = None if archive else (0, 0)  # Docker: root owns what is copied in, unless -a
    if src == "-":
        if not dst_dir:
            raise errors.InvalidArgument(f"destination {shown} must be a directory")
        read_tar(stdin, lambda entries: Writer(view, dparts, owner).write(entries))
        return
    sview, sparts, name, src_dir = _host_source(src, follow)
    if dst_dir:
        base, name_there = dparts, name
    elif dst_st is not None and src_dir:
        raise errors.InvalidArgument("cannot copy directory")
    elif dst_st is None and not src_dir and _asserts_dir(path):
        raise errors.NotFound("no such directory")
    else:
        if not dparts:
            raise errors.InvalidArgument(f"destination {shown} must be a directory")
        base, name_there = dparts[:-1], dparts[-1]
        parent = view.lstat(base)
        if parent is None:
            raise errors.NotFound(f"Could not find the file /{'/'.join(base)} in container {ref}")
        if not stat.S_ISDIR(parent.st_mode):
            raise errors.InvalidArgument("extraction point is not a directory")
    Writer(view, base, owner).write(sview.entries(sparts, name_there))


def _host_source(path: str, follow: bool):
    """(view, parts, name, is_dir) of a host path, links resolved as the docker CLI does."""
    dot = path == "." or path.endswith("/.")
    clean = os.path.normpath(path)
    if dot or follow or path.endswith("/"):
        resolved = os.path.realpath(clean)
    else:  # the parent's links are followed, the last component is copied as it is
        resolved = os.path.join(os.path.realpath(os.path.dirname(clean) or "."),
                                os.path.basename(clean))
    try:
        st = os.lstat(resolved)
    except OSError as exc:
        raise errors.NotFound(f"lstat {path}: {exc.strerror.lower()}") from None
    if path.endswith("/") and not stat.S_ISDIR(st.st_mode):
        raise errors.InvalidArgument(f"{path}: not a directory")
    name = "." if dot else os.path.basename(clean)
    parent, leaf = os.path.split(resolved)
    if not leaf:  # the host's /
        return View(Tree(resolved)), [], name, True
    return View(Tree(parent)), [leaf], name, stat.S_ISDIR(st.st_mode)


# --- tar streams ---------------------------------------------------------------------

_TAR_TYPES = {"dir": b"5", "file": b"0", "symlink": b"2", "link": b"1", "chr": b"3",
              "blk": b"4", "fifo": b"6"}


def write_tar(entries, out) -> None:
    import tarfile

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            if e.kind not in _TAR_TYPES:
                continue
            info = tarfile.TarInfo(e.name)
            info.type = _TAR_TYPES[e.kind]
            info.mode, info.uid, info.gid = e.mode, e.uid, e.gid
            info.mtime = e.mtime_ns // 1_000_000_000
            info.linkname = e.link
            if e.kind in ("chr", "blk"):
                info.devmajor, info.devminor = os.major(e.rdev), os.minor(e.rdev)
            if e.kind != "file":
                tf.addfile(info)
                continue
            source, xattrs = e.data()
            with source:
                info.size = os.fstat(source.fileno()).st_size
                info.pax_headers = {"SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape")
                                    for k, v in xattrs}
                tf.addfile(info, _Exact(source, info.size))


class _Exact:
    """Exactly `size` bytes of `f`: a file that grows or shrinks meanwhile keeps the tar whole."""

    def __init__(self, f, size: int) -> None:
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.f.read(n)
        if len(data) < n:
            data += bytes(n - len(data))
        self.left -= len(data)
        return data


def read_tar(stream, consume) -> None:
    """Hand the members of a (possibly compressed) tar stream, as entries, to `consume`."""
    import tarfile

    from berth.layer import open_decompressed

    try:
        with tarfile.open(fileobj=open_decompressed(stream), mode="r|") as tf:
            consume(_tar_entries(tf))
    except tarfile.TarError as exc:
        raise errors.InvalidArgument(f"the input is not a valid tar stream: {exc}") from None


def _tar_entries(tf):
    for m in tf:
        kind = ("dir" if m.isdir() else "file" if m.isreg() else "symlink" if m.issym()
                else "link" if m.islnk() else "chr" if m.ischr() else "blk" if m.isblk()
                else "fifo" if m.isfifo() else None)
        if kind is None:
            continue
        xattrs = [(k[13:], v.encode("utf-8", "surrogateescape"))
                  for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")]
        e = Entry(m.name, kind, m.mode & 0o7777, m.uid, m.gid, int(m.mtime * 1_000_000_000),
                  m.linkname, os.makedev(m.devmajor, m.devminor), m.size, xattrs=xattrs)
        if kind == "file":
            e.data = lambda m=m: (tf.extractfile(m), ())
        yield e
