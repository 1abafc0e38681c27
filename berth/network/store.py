"""Network records on disk, shaped like `docker network inspect` output.

    <root>/networks/<id>/network.json     the record
    <root>/networks/<id>/addresses/       the IPAM's entries (ipam.py)
    <root>/networks/<id>/endpoints/<cid>  one file per running container on the network:
                                          its name, aliases, address; read by inspect and
                                          by the network's DNS server
    <root>/networks/names/<name> -> <id>  a symlink per name: making it reserves the name

The records are written with a temporary name and renamed into place (fsynced: a network
is configuration, not run-time state). Endpoint files are run-time state: atomic, no fsync.
"""

from __future__ import annotations

import json
import os
import re

from berth.errors import AlreadyExists, InvalidArgument, NotFound
from berth.fsutil import remove_tree, write_atomic

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


class NetworkStore:
    def __init__(self, root: str) -> None:
        self.root = os.path.join(root, "networks")
        self.names = os.path.join(self.root, "names")

    def dir(self, nid: str) -> str:
        return os.path.join(self.root, nid)

    def ensure(self) -> None:
        os.makedirs(self.names, mode=0o700, exist_ok=True)

    def lock_path(self) -> str:
        """The root's lock for creating and removing networks."""
        return os.path.join(self.root, "lock")

    # --- names -----------------------------------------------------------------------

    def reserve_name(self, name: str, nid: str) -> None:
        if not NAME_RE.match(name):
            raise InvalidArgument(f"invalid network name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] "
                                  "are allowed")
        try:
            os.symlink(nid, os.path.join(self.names, name))
        except FileExistsError:
            raise AlreadyExists(f"network with name {name} already exists") from None

    def release_name(self, name: str, nid: str) -> None:
        path = os.path.join(self.names, name)
        try:
            if os.readlink(path) == nid:
                os.unlink(path)
        except FileNotFoundError:
            pass

    # --- records ---------------------------------------------------------------------

    def ids(self) -> list[str]:
        try:
            return [n for n in os.listdir(self.root)
                    if n not in ("names", "lock") and not n.startswith(".")]
        except FileNotFoundError:
            return []

    def read(self, nid: str) -> dict:
        try:
            with open(os.path.join(self.dir(nid), "network.json"), "rb") as f:
                return json.loads(f.read())
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"network {nid} not found") from None

    def write(self, record: dict) -> None:
        os.makedirs(self.dir(record["Id"]), mode=0o700, exist_ok=True)
        write_atomic(os.path.join(self.dir(record["Id"]), "network.json"),
                     json.dumps(record, indent=1).encode())

    def lookup(self, ref: str) -> str:
        """A network ID from a name, a full ID, or a unique ID prefix."""
        if len(ref) == 64 and os.path.exists(os.path.join(self.dir(ref), "network.json")):
            return ref  # the engine's own lookups are by full ID: no listing
        if ref:
            try:
                nid = os.readlink(os.path.join(self.names, ref))
                if os.path.exists(os.path.join(self.dir(nid), "network.json")):
                    return nid
            except OSError:
                pass
            if all(c in "0123456789abcdef" for c in ref):
                matches = [n for n in self.ids() if n.startswith(ref)
                           and os.path.exists(os.path.join(self.dir(n), "network.json"))]
                if len(matches) == 1:
                    return matches[0]
                if len(matches) > 1:
                    raise InvalidArgument(f"network {ref} is ambiguous ({len(matches)} matches "
                                          "found based on ID prefix)")
        raise NotFound(f"network {ref} not found")

    def delete(self, nid: str, name: str) -> None:
        """Remove the record (renamed away first: a half-removed network is invisible)."""
        trash = os.path.join(self.root, f".rm-{nid}-{os.urandom(4).hex()}")
        try:
            os.rename(self.dir(nid), trash)
        except FileNotFoundError:
            return
        self.release_name(name, nid)
        remove_tree(trash)

    # --- endpoints -------------------------------------------------------------------

    def endpoints_dir(self, nid: str) -> str:
        return os.path.join(self.dir(nid), "endpoints")

    def endpoints(self, nid: str) -> dict[str, dict]:
        out = {}
        directory = self.endpoints_dir(nid)
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return out
        for cid in names:
            if cid.startswith("."):
                continue
            try:
                with open(os.path.join(directory, cid), "rb") as f:
                    out[cid] = json.loads(f.read())
            except (OSError, ValueError):
                continue
        return out

    def write_endpoint(self, nid: str, cid: str, endpoint: dict) -> None:
        directory = self.endpoints_dir(nid)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        write_atomic(os.path.join(directory, cid), json.dumps(endpoint).encode(), durable=False)

    def update_endpoint(self, nid: str, cid: str, changes: dict) -> None:
        path = os.path.join(self.endpoints_dir(nid), cid)
        try:
            with open(path, "rb") as f:
                endpoint = json.loads(f.read())
        except (FileNotFoundError, ValueError):
            return
        endpoint.update(changes)
        write_atomic(path, json.dumps(endpoint).encode(), durable=False)

    def remove_endpoint(self, nid: str, cid: str, endpoint_id: str | None = None) -> None:
        """Remove the container's endpoint file, if it is still the one with `endpoint_id`."""
        path = os.path.join(self.endpoints_dir(nid), cid)
        try:
            if endpoint_id is not None:
                with open(path, "rb") as f:
                    if json.loads(f.read()).get("EndpointID") != endpoint_id:
                        return
            os.unlink(path)
        except (FileNotFoundError, ValueError):
            pass
