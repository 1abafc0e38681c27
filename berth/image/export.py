"""`docker export`: a container's merged root tree as one tar.

Split from archive.py because it tars a container's files, not an image: it shares only
the tar writer (archive_tar) with save.

The kernel merges the tree: a forked child mounts the upper and lower dirs as one
read-only overlay in a private mount namespace (nothing can leak onto the host, and
whiteouts, opaque dirs and redirects mean what overlayfs says) and walks it with
fd-relative, non-following lookups.
"""

from __future__ import annotations

import os

from berth.errors import BerthError, FailedPrecondition, NotFound
from berth.image.archive_tar import FdTarWriter


def export_rootfs(upper: str, lowerdirs: list[str], mountpoint: str, fd: int) -> None:
    """Write the merged tree of `upper` over `lowerdirs` (topmost first) as a tar to `fd`."""
    for path in (upper, *lowerdirs):
        if not os.path.isdir(path):
            raise NotFound(f"the container's layer {path} is missing")
    if not os.path.isdir(mountpoint):
        raise NotFound(f"the container's mount point {mountpoint} is missing")
    errors_r, errors_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.close(errors_r)
        status = 0
        try:
            _export_child(upper, lowerdirs, mountpoint, fd)
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            if isinstance(exc, OSError) and exc.filename:
                message += f": {exc.filename}"
            os.write(errors_w, f"{type(exc).__name__}\n{message}".encode(errors="replace"))
            status = 1
        os._exit(status)
    os.close(errors_w)
    try:
        with os.fdopen(errors_r, "rb") as pipe:
            report = pipe.read().decode(errors="replace")
    finally:
        _, status = os.waitpid(pid, 0)
    if status == 0 and not report:
        return
    kind, _, message = report.partition("\n")
    if kind == "BrokenPipeError":
        raise BrokenPipeError(message)
    import berth.errors as errors

    cls = getattr(errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, BerthError):
        raise cls(message)
    raise FailedPrecondition(f"export failed: {message or f'exit status {status}'}")


def _export_child(upper: str, lowerdirs: list[str], mountpoint: str, fd: int) -> None:
    import signal

    from berth import linux

    kernel = linux.syscalls()
    kernel.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    kernel.unshare(linux.CLONE_NEWNS)
    kernel.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    # layers by fd: /proc/self/fd/N keeps the option string short for deep images
    dirs = [os.open(p, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for p in (upper, *lowerdirs)]
    lower = ":".join(f"/proc/self/fd/{d}" for d in dirs)
    kernel.mount("overlay", mountpoint, "overlay", linux.MS_RDONLY, f"lowerdir={lower}")
    root = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    out = FdTarWriter(fd)
    _tar_tree(out, root)
    out.close()


def _tar_tree(out: FdTarWriter, root: int) -> None:
    """Every entry below the directory fd `root`, parents first, names sorted; never follows
    a symlink, so a tree that changes under us cannot lead outside it."""
    import stat
    import tarfile

    dir_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    hardlinks: dict[tuple[int, int], str] = {}
    stack = [(root, "", iter(sorted(os.listdir(root))))]
    while stack:
        parent, prefix, names = stack[-1]
        name = next(names, None)
        if name is None:
            stack.pop()
            os.close(parent)
            continue
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed while we walk
        info = tarfile.TarInfo(prefix + name)
        info.mode, info.uid, info.gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
        info.mtime = int(st.st_mtime)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            info.type = tarfile.DIRTYPE
            out.add(info)
            child = os.open(name, dir_flags, dir_fd=parent)
            stack.append((child, f"{prefix}{name}/", iter(sorted(os.listdir(child)))))
        elif stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in hardlinks:
                info.type, info.linkname = tarfile.LNKTYPE, hardlinks[key]
                out.add(info)
                continue
            if st.st_nlink > 1:
                hardlinks[key] = info.name
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            try:
                try:  # the one xattr Docker keeps: file capabilities
                    cap = os.getxattr(fd, "security.capability")
                    info.pax_headers = {"SCHILY.xattr.security.capability":
                                        cap.decode("utf-8", "surrogateescape")}
                except OSError:
                    pass
                info.size = st.st_size
                out.add(info, src_fd=fd)
            finally:
                os.close(fd)
        elif stat.S_ISLNK(mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=parent)
            out.add(info)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
            info.type = (tarfile.CHRTYPE if stat.S_ISCHR(mode) else
                         tarfile.BLKTYPE if stat.S_ISBLK(mode) else tarfile.FIFOTYPE)
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            out.add(info)
        # sockets are not archived, as in Docker
