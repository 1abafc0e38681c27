"""The container's root filesystem: mounts, device nodes, pivot_root, masked paths.

Runs inside the container's new mount namespace, so every mount made here disappears
with the namespace: no mount can leak onto the host, whatever happens.

Mount destinations are resolved *inside* the root (symlinks in the image are followed
as the container would see them, never out to the host), as filepath-securejoin does.
"""

from __future__ import annotations

import errno
import os
import stat

from berth import linux as L
from berth.errors import ContainerStartError
from berth.oci.runtime import Device, Mount, Spec

MAX_SYMLINKS = 255


def secure_join(root: str, unsafe: str) -> str:
    """Join `unsafe` onto `root`, evaluating symlinks as if `root` were '/'."""
    parts: list[str] = []
    pending = [p for p in unsafe.split("/") if p]
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        candidate = os.path.join(root, *parts, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            parts.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > MAX_SYMLINKS:
                raise ContainerStartError(f"too many levels of symbolic links resolving {unsafe}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                parts = []
            pending = [p for p in target.split("/") if p] + pending
            continue
        parts.append(part)
    return os.path.join(root, *parts)


def _mkdirs(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def _ensure_file(path: str) -> None:
    _mkdirs(os.path.dirname(path))
    if not os.path.lexists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


def mount_entry(sys, root: str, m: Mount, cgroup_layout=None) -> None:
    dest = secure_join(root, m.destination)
    flags, propagation, data = L.parse_mount_options(m.options)
    kind = m.type or ""
    is_bind = bool(flags & L.MS_BIND) or kind == "bind"
    if is_bind:
        source = m.source or ""
        try:
            st = os.stat(source)
        except OSError as exc:
            raise ContainerStartError(f"bind mount source {source}: {exc.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            _mkdirs(dest)
        else:
            _ensure_file(dest)
        sys.mount(source, dest, None, L.MS_BIND | (flags & L.MS_REC))
        # flags other than bind/rec only take effect on a remount of the bind
        extra = flags & ~(L.MS_BIND | L.MS_REC)
        if extra:
            sys.mount(None, dest, None, L.MS_BIND | L.MS_REMOUNT | extra)
    elif kind == "cgroup":
        _mount_cgroup(sys, dest, flags, cgroup_layout)
    else:
        _mkdirs(dest)
        sys.mount(m.source or kind, dest, kind, flags, data or None)
    if propagation:
        sys.mount(None, dest, None, propagation)


def _mount_cgroup(sys, dest: str, flags: int, layout) -> None:
    """Mount the container's own view of the cgroup tree (cgroup ns makes it the root)."""
    _mkdirs(dest)
    if layout is None or layout.is_v2:
        sys.mount("cgroup", dest, "cgroup2", flags)
        return
    sys.mount("tmpfs", dest, "tmpfs", L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC, "mode=755")
    for mountpoint, controllers in sorted(layout.v1_options.items()):
        name = os.path.basename(mountpoint)
        sub = os.path.join(dest, name)
        os.mkdir(sub, 0o555)
        sys.mount("cgroup", sub, "cgroup", flags, controllers)
    # a read-only tmpfs above the controllers, as Docker leaves it
    if flags & L.MS_RDONLY:
        sys.mount(None, dest, None, L.MS_REMOUNT | L.MS_RDONLY | L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC,
                  "mode=755")


_DEV_SYMLINKS = (("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"),
                 ("/proc/self/fd/1", "stdout"), ("/proc/self/fd/2", "stderr"),
                 ("pts/ptmx", "ptmx"))


def create_devices(root: str, devices: tuple[Device, ...]) -> None:
    dev = secure_join(root, "/dev")
    for target, name in _DEV_SYMLINKS:
        path = os.path.join(dev, name)
        if not os.path.lexists(path):
            os.symlink(target, path)
    old = os.umask(0)
    try:
        for d in devices:
            path = secure_join(root, d.path)
            _mkdirs(os.path.dirname(path))
            kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[d.type]
            mode = d.file_mode if d.file_mode is not None else 0o666
            if os.path.lexists(path):
                os.unlink(path)
            os.mknod(path, kind | (mode & 0o7777), os.makedev(d.major, d.minor))
            os.chown(path, d.uid or 0, d.gid or 0)
    finally:
        os.umask(old)


def pivot(sys, root: str) -> None:
    """pivot_root(".", ".") and detach the old root: no path back to the host remains."""
    os.chdir(root)
    sys.pivot_root(".", ".")
    # the old root is now stacked on top of the new one; make it private so the
    # unmount does not propagate to the host, then detach it
    sys.mount(None, ".", None, L.MS_SLAVE | L.MS_REC)
    sys.umount2(".", L.MNT_DETACH)
    os.chdir("/")


def mask_paths(sys, paths: tuple[str, ...]) -> None:
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue  # masked paths that do not exist are skipped, as runc does
        if stat.S_ISDIR(st.st_mode):
            sys.mount("tmpfs", path, "tmpfs", L.MS_RDONLY)
        else:
            sys.mount("/dev/null", path, None, L.MS_BIND)


def readonly_paths(sys, paths: tuple[str, ...]) -> None:
    for path in paths:
        if not os.path.exists(path):
            continue
        sys.mount(path, path, None, L.MS_BIND | L.MS_REC)
        flags = L.MS_BIND | L.MS_REMOUNT | L.MS_RDONLY | _current_flags(path)
        sys.mount(None, path, None, flags)


def remount_root_readonly(sys) -> None:
    sys.mount(None, "/", None, L.MS_BIND | L.MS_REMOUNT | L.MS_RDONLY | _current_flags("/"))


def _current_flags(path: str) -> int:
    """The locked per-mount flags of `path` (a bind remount must repeat them)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    out = 0
    for bit, flag in ((os.ST_NOSUID, L.MS_NOSUID), (os.ST_NODEV, L.MS_NODEV),
                      (os.ST_NOEXEC, L.MS_NOEXEC), (os.ST_NOATIME, L.MS_NOATIME),
                      (os.ST_NODIRATIME, L.MS_NODIRATIME), (os.ST_RELATIME, L.MS_RELATIME)):
        if st.f_flag & bit:
            out |= flag
    return out


def setup(sys, spec: Spec, rootfs_mounts: tuple[Mount, ...], cgroup_layout=None) -> None:
    """Everything from the new mount namespace up to (not including) the user process."""
    propagation = L.PROPAGATION_OPTIONS.get(spec.linux.rootfs_propagation or "rprivate",
                                            L.MS_PRIVATE | L.MS_REC)
    # stop our mounts from reaching the host (and the host's from reaching us)
    sys.mount(None, "/", None, L.MS_SLAVE | L.MS_REC if propagation & L.MS_SHARED else propagation)
    root = spec.root.path
    for m in rootfs_mounts:
        flags, _, data = L.parse_mount_options(m.options)
        sys.mount(m.source, root, m.type, flags, data or None)
    if not rootfs_mounts:
        sys.mount(root, root, None, L.MS_BIND | L.MS_REC)
    for m in spec.mounts:
        mount_entry(sys, root, m, cgroup_layout)
    create_devices(root, spec.linux.devices)
    pivot(sys, root)
    if propagation & L.MS_SHARED:
        sys.mount(None, "/", None, propagation)


def finish(sys, spec: Spec) -> None:
    """After sysctls are written: masked and read-only paths, then a read-only root."""
    mask_paths(sys, spec.linux.masked_paths)
    readonly_paths(sys, spec.linux.readonly_paths)
    if spec.root.readonly:
        remount_root_readonly(sys)


def ensure_cwd(root: str, cwd: str) -> None:
    """Docker creates a missing working directory in the container's root."""
    path = secure_join(root, cwd)
    try:
        _mkdirs(path)
    except FileExistsError:
        raise ContainerStartError(f"working directory {cwd} exists and is not a directory") from None
    except OSError as exc:
        if exc.errno != errno.EROFS:
            raise
