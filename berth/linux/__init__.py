"""The one seam through which berth calls the kernel by hand.

Everything the os module lacks (mount, pivot_root, unshare, setns, capset, prctl, ...)
goes through a :class:`Syscalls` object, so the runtime can be driven with
:class:`berth.linux.fake.RecordingSyscalls` to unit-test the order of operations
without root, while integration tests exercise the real kernel.
"""

from __future__ import annotations

import ctypes
import os


# Namespace flags (linux/sched.h): one table, name -> CLONE_* flag.
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

NAMESPACE_FLAGS = {
    "mount": CLONE_NEWNS,
    "cgroup": CLONE_NEWCGROUP,
    "uts": CLONE_NEWUTS,
    "ipc": CLONE_NEWIPC,
    "user": CLONE_NEWUSER,
    "pid": CLONE_NEWPID,
    "network": CLONE_NEWNET,
    "time": CLONE_NEWTIME,
}
# the file under /proc/PID/ns/ for each runtime-spec namespace type
NAMESPACE_FILES = {
    "mount": "mnt", "cgroup": "cgroup", "uts": "uts", "ipc": "ipc",
    "user": "user", "pid": "pid", "network": "net", "time": "time",
}

# Mount flags (linux/mount.h)
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000

MNT_DETACH = 0x2

# One table for mount(8)-style option names: name -> (set?, flag). Anything not here is
# passed to the filesystem as data.
MOUNT_OPTIONS: dict[str, tuple[bool, int]] = {
    "ro": (True, MS_RDONLY), "rw": (False, MS_RDONLY),
    "nosuid": (True, MS_NOSUID), "suid": (False, MS_NOSUID),
    "nodev": (True, MS_NODEV), "dev": (False, MS_NODEV),
    "noexec": (True, MS_NOEXEC), "exec": (False, MS_NOEXEC),
    "sync": (True, MS_SYNCHRONOUS), "async": (False, MS_SYNCHRONOUS),
    "dirsync": (True, MS_DIRSYNC),
    "remount": (True, MS_REMOUNT),
    "mand": (True, MS_MANDLOCK), "nomand": (False, MS_MANDLOCK),
    "atime": (False, MS_NOATIME), "noatime": (True, MS_NOATIME),
    "diratime": (False, MS_NODIRATIME), "nodiratime": (True, MS_NODIRATIME),
    "bind": (True, MS_BIND), "rbind": (True, MS_BIND | MS_REC),
    "relatime": (True, MS_RELATIME), "norelatime": (False, MS_RELATIME),
    "strictatime": (True, MS_STRICTATIME), "nostrictatime": (False, MS_STRICTATIME),
    "nosymfollow": (True, MS_NOSYMFOLLOW),
}
PROPAGATION_OPTIONS = {
    "private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED, "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE, "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE, "runbindable": MS_UNBINDABLE | MS_REC,
}


def parse_mount_options(options: list[str] | tuple[str, ...]) -> tuple[int, int, str]:
    """Split mount(8) options into (flags, propagation flags, fs data string)."""
    flags = 0
    propagation = 0
    data = []
    for opt in options:
        if opt in MOUNT_OPTIONS:
            set_, flag = MOUNT_OPTIONS[opt]
            flags = flags | flag if set_ else flags & ~flag
        elif opt in PROPAGATION_OPTIONS:
            propagation |= PROPAGATION_OPTIONS[opt]
        else:
            data.append(opt)
    return flags, propagation, ",".join(data)


# prctl options (linux/prctl.h)
PR_SET_PDEATHSIG = 1
SYNC_FILE_RANGE_WRITE = 2
PR_SET_KEEPCAPS = 8
PR_SET_SECCOMP = 22
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2

# syscall numbers glibc has no wrapper for, by machine
_SYSCALLS = {
    "x86_64": {"pivot_root": 155, "capget": 125, "capset": 126},
    "aarch64": {"pivot_root": 41, "capget": 90, "capset": 91},
}

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _oserror(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


class Syscalls:
    """The real kernel. Methods raise OSError with errno set, like the os module."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._nr = _SYSCALLS.get(os.uname().machine, {})

    def _check(self, ret: int, what: str) -> int:
        if ret < 0:
            raise _oserror(what)
        return ret

    def _syscall(self, name: str, *args) -> int:
        nr = self._nr.get(name)
        if nr is None:
            raise OSError(38, f"{name}: no syscall number known for {os.uname().machine}")
        return self._check(self._libc.syscall(nr, *args), name)

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int = 0,
              data: str | None = None) -> None:
        ret = self._libc.mount(
            source.encode() if source is not None else None, target.encode(),
            fstype.encode() if fstype is not None else None, ctypes.c_ulong(flags),
            data.encode() if data else None)
        if ret < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mount {source or fstype} on {target}: {os.strerror(err)}")

    def umount2(self, target: str, flags: int = 0) -> None:
        self._check(self._libc.umount2(target.encode(), flags), f"umount {target}")

    def pivot_root(self, new_root: str, put_old: str) -> None:
        self._syscall("pivot_root", new_root.encode(), put_old.encode())

    def unshare(self, flags: int) -> None:
        self._check(self._libc.unshare(flags), "unshare")

    def setns(self, fd: int, nstype: int = 0) -> None:
        self._check(self._libc.setns(fd, nstype), "setns")

    def sethostname(self, name: str) -> None:
        raw = name.encode()
        self._check(self._libc.sethostname(raw, len(raw)), "sethostname")

    def setdomainname(self, name: str) -> None:
        raw = name.encode()
        self._check(self._libc.setdomainname(raw, len(raw)), "setdomainname")

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        return self._check(self._libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                                            ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)), "prctl")

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        for i in range(2):
            shift = 32 * i
            data[i].effective = (effective >> shift) & 0xFFFFFFFF
            data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
            data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
        self._syscall("capset", ctypes.byref(header), data)

    def load_seccomp(self, bpf: bytes) -> None:
        """Install a compiled classic-BPF seccomp filter (8 bytes per sock_filter)."""
        count = len(bpf) // 8
        buf = (_SockFilter * count).from_buffer_copy(bpf)
        prog = _SockFprog(count, ctypes.cast(buf, ctypes.POINTER(_SockFilter)))
        self._check(self._libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0),
                    "seccomp")

    def syncfs(self, fd: int) -> None:
        """Flush the whole filesystem holding `fd` (one call instead of an fsync per file)."""
        self._check(self._libc.syncfs(fd), "syncfs")

    def start_writeback(self, fd: int, offset: int, length: int) -> None:
        """Start writing a range of a file to disk and return (sync_file_range's WRITE,
        as dpkg does): the disk works while we go on, and the fsync or syncfs that makes
        the data durable later finds most of it written. Advisory: a failure is ignored."""
        self._libc.sync_file_range(fd, ctypes.c_longlong(offset), ctypes.c_longlong(length),
                                   ctypes.c_uint(SYNC_FILE_RANGE_WRITE))

    def mknod(self, path: str, mode: int, device: int) -> None:
        os.mknod(path, mode, device)


_default: Syscalls | None = None


def syscalls() -> Syscalls:
    """The process-wide real kernel seam, created on first use (ctypes is not free)."""
    global _default
    if _default is None:
        _default = Syscalls()
    return _default
