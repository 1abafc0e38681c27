"""Named volumes, kept as Docker's local driver keeps them.

    <root>/volumes/<name>/_data         the directory containers mount
    <root>/volumes/<name>/volume.json   {"Name", "Driver", "Mountpoint", "CreatedAt", "Labels",
                                         "Options", "Scope"}, as `docker volume inspect` shows
    <root>/volumes/.lock                shared while a container's record takes volumes,
                                        exclusive while volumes are removed

A volume is assembled under a temporary name and renamed into place, so two concurrent
creates of one name make one volume and nobody sees a half-made one; removal renames it
away first for the same reason. Which containers use a volume is read from their records
(Docker-shaped "Mounts" entries of Type "volume"), so there is no count to drift.
"""

from __future__ import annotations

import json
import os
import re
import time

from berth.errors import Conflict, InvalidArgument, NotFound
from berth.fsutil import remove_tree, write_atomic

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
ANONYMOUS = "com.docker.volume.anonymous"  # the label Docker gives an anonymous volume
DRIVER = "local"
# -o of the local driver that berth can honour: a tmpfs, or a bind of another directory
_OPTION_KEYS = ("type", "device", "o")


def users_of(records, name: str) -> list[str]:
    """IDs of the containers (Docker-shaped records) that mount volume `name`."""
    return [r["Id"] for r in records
            if any(m.get("Type") == "volume" and m.get("Name") == name
                   for m in r.get("Mounts") or ())]


def is_anonymous(info: dict) -> bool:
    return ANONYMOUS in (info.get("Labels") or {})


def check_options(options: dict) -> None:
    """Refuse local-driver options berth cannot mount, when the volume is created."""
    unknown = sorted(set(options) - set(_OPTION_KEYS))
    if unknown:
        raise InvalidArgument(f"invalid option key: {unknown[0]!r} (the local driver takes type, "
                              "device and o)")
    if not options:
        return
    kind = options.get("type", "")
    binds = "bind" in options.get("o", "").split(",")
    if kind == "tmpfs":
        return
    if binds and options.get("device", "").startswith("/"):
        return
    raise InvalidArgument("berth's local driver mounts only type=tmpfs volumes and binds "
                          "(type=none, o=bind, device=/absolute/path)")


class VolumeStore:
    def __init__(self, root: str) -> None:
        self.dir = os.path.join(root, "volumes")

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def mountpoint(self, name: str) -> str:
        return os.path.join(self.dir, name, "_data")

    # --- create and read ---------------------------------------------------------------

    def create(self, name: str | None = None, labels: dict | None = None,
               options: dict | None = None, driver: str = DRIVER) -> dict:
        """The volume `name`, made if it does not exist; no name makes an anonymous one."""
        if driver != DRIVER:
            raise InvalidArgument(f"volume driver {driver!r} is not supported (only {DRIVER!r})")
        labels = dict(labels or {})
        if name is None:
            name = os.urandom(32).hex()
            labels[ANONYMOUS] = ""
        elif not NAME_RE.match(name):
            raise InvalidArgument(
                f'create {name}: "{name}" includes invalid characters for a local volume name, '
                'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
                "directory, use absolute path")
        options = dict(options or {})
        check_options(options)
        try:
            return self.get(name)
        except NotFound:
            pass
        os.makedirs(self.dir, mode=0o701, exist_ok=True)
        tmp = os.path.join(self.dir, f".tmp-{os.getpid()}-{os.urandom(6).hex()}")
        os.mkdir(tmp, 0o755)
        info = {"CreatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "Driver": driver, "Labels": labels or None, "Mountpoint": self.mountpoint(name),
                "Name": name, "Options": options or None, "Scope": "local"}
        try:
            os.mkdir(os.path.join(tmp, "_data"), 0o755)
            write_atomic(os.path.join(tmp, "volume.json"), json.dumps(info).encode())
            try:
                os.rename(tmp, self.path(name))
            except OSError:
                # ENOTEMPTY/EEXIST: a concurrent create of the same name won; theirs stands
                if not os.path.isfile(os.path.join(self.path(name), "volume.json")):
                    raise
                remove_tree(tmp)
                return self.get(name)
        except BaseException:
            remove_tree(tmp)
            raise
        return info

    def get(self, name: str) -> dict:
        if not NAME_RE.match(name):
            raise NotFound(f"get {name}: no such volume")
        try:
            with open(os.path.join(self.path(name), "volume.json"), "rb") as f:
                return json.loads(f.read())
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"get {name}: no such volume") from None

    def list(self) -> list[dict]:
        out = []
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return []
        for name in names:
            if name.startswith("."):
                continue
            try:
                out.append(self.get(name))
            except NotFound:
                continue  # removed meanwhile
        return out

    def size(self, name: str) -> int:
        from berth.snapshot import tree_size

        return tree_size(self.mountpoint(name), "nondir")

    def is_empty(self, name: str) -> bool:
        try:
            with os.scandir(self.mountpoint(name)) as it:
                return next(it, None) is None
        except FileNotFoundError:
            return True

    # --- remove ------------------------------------------------------------------------

    def lock(self, shared: bool) -> "_Lock":
        """Shared: a container is taking volumes. Exclusive: volumes are being removed."""
        return _Lock(self.dir, shared)

    def remove(self, name: str, users) -> None:
        """Remove `name` unless `users()` (container IDs, asked under the lock) is non-empty."""
        with self.lock(shared=False):
            self.get(name)
            in_use = users()
            if in_use:
                raise Conflict(f"remove {name}: volume is in use - [{' '.join(in_use)}]")
            self._delete(name)

    def prune(self, wanted, used) -> list[tuple[str, int]]:
        """Remove the volumes `wanted(info)` picks that are not in `used()` (a set of names,
        asked under the lock); returns (name, bytes freed) of each one removed."""
        out = []
        with self.lock(shared=False):
            in_use = used()
            for info in self.list():
                name = info["Name"]
                if name in in_use or not wanted(info):
                    continue
                size = self.size(name)
                self._delete(name)
                out.append((name, size))
        return out

    def _delete(self, name: str) -> None:
        trash = os.path.join(self.dir, f".rm-{name}-{os.urandom(4).hex()}")
        try:
            os.rename(self.path(name), trash)
        except FileNotFoundError:
            return
        remove_tree(trash)

    def cleanup_temporaries(self) -> None:
        """What a killed create or remove left behind."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith((".tmp-", ".rm-")):
                remove_tree(os.path.join(self.dir, name))


class _Lock:
    def __init__(self, directory: str, shared: bool) -> None:
        self.directory = directory
        self.shared = shared
        self.fd: int | None = None

    def __enter__(self) -> "_Lock":
        import fcntl

        os.makedirs(self.directory, mode=0o701, exist_ok=True)
        self.fd = os.open(os.path.join(self.directory, ".lock"),
                          os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
