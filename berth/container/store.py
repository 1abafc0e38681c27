"""Container records on disk, safe under concurrent berth commands.

    <root>/containers/<id>/container.json   the record, shaped like `docker inspect`
    <root>/containers/<id>/config.json      the OCI runtime spec (the bundle)
    <root>/containers/<id>/{diff,work,merged}  overlay upper, work and mount point
    <root>/containers/<id>/{hostname,hosts,resolv.conf}
    <root>/names/<name> -> <id>             a symlink per name: creating it is the atomic
                                            reservation of the name
Every change to a record happens under an flock on the container's directory and is
written with a temporary name and renamed into place.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re

from berth.fsutil import remove_tree, write_atomic
from berth.errors import AlreadyExists, InvalidArgument, NotFound

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
ZERO_TIME = "0001-01-01T00:00:00Z"


class ContainerStore:
    def __init__(self, root: str) -> None:
        self.root = os.path.join(root, "containers")
        self.names = os.path.join(root, "names")

    def dir(self, cid: str) -> str:
        return os.path.join(self.root, cid)

    def ensure(self) -> None:
        os.makedirs(self.root, mode=0o710, exist_ok=True)
        os.makedirs(self.names, mode=0o700, exist_ok=True)

    # --- names -----------------------------------------------------------------------

    def reserve_name(self, name: str, cid: str) -> None:
        if not NAME_RE.match(name):
            raise InvalidArgument(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] "
                                  "are allowed")
        try:
            os.symlink(cid, os.path.join(self.names, name))
        except FileExistsError:
            owner = os.readlink(os.path.join(self.names, name))
            raise AlreadyExists(f'Conflict. The container name "/{name}" is already in use by '
                                f'container "{owner}". You have to remove (or rename) that '
                                "container to be able to reuse that name.") from None

    def release_name(self, name: str, cid: str) -> None:
        path = os.path.join(self.names, name)
        try:
            if os.readlink(path) == cid:
                os.unlink(path)
        except FileNotFoundError:
            pass

    # --- records ---------------------------------------------------------------------

    def ids(self) -> list[str]:
        try:
            return [n for n in os.listdir(self.root) if not n.startswith(".")]
        except FileNotFoundError:
            return []

    def read(self, cid: str) -> dict:
        try:
            with open(os.path.join(self.dir(cid), "container.json"), "rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            raise NotFound(f"No such container: {cid}") from None

    def write(self, record: dict) -> None:
        # state changes are frequent and the record is atomic either way: no fsync
        write_atomic(os.path.join(self.dir(record["Id"]), "container.json"),
                     json.dumps(record, separators=(",", ":")).encode(), durable=False)

    def lookup(self, ref: str) -> str:
        """A container ID from a full ID, a name (with or without '/'), or a unique prefix."""
        if not ref:
            raise NotFound("No such container: ")
        name = ref.lstrip("/")
        try:
            cid = os.readlink(os.path.join(self.names, name))
            if os.path.exists(os.path.join(self.dir(cid), "container.json")):
                return cid
        except (FileNotFoundError, OSError):
            pass
        if all(c in "0123456789abcdef" for c in ref):
            matches = [c for c in self.ids() if c.startswith(ref)
                       and os.path.exists(os.path.join(self.dir(c), "container.json"))]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise InvalidArgument(f"multiple containers match the ID prefix {ref!r}")
        raise NotFound(f"No such container: {ref}")

    def lock(self, cid: str) -> "_DirLock":
        return _DirLock(self.dir(cid))

    def delete(self, cid: str, name: str | None) -> None:
        """Remove the container's directory (rename first: a half-removed one is invisible)."""
        path = self.dir(cid)
        trash = os.path.join(self.root, f".rm-{cid}-{os.urandom(4).hex()}")
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return
        if name:
            self.release_name(name, cid)
        remove_tree(trash)

    def cleanup_trash(self) -> None:
        for n in os.listdir(self.root) if os.path.isdir(self.root) else ():
            if n.startswith(".rm-"):
                remove_tree(os.path.join(self.root, n))


class _DirLock:
    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> "_DirLock":
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"No such container: {os.path.basename(self.path)}") from None
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                raise NotFound(f"No such container: {os.path.basename(self.path)}") from None
            raise
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
