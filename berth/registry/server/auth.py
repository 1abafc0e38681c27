"""Basic auth against an htpasswd file, and a brake on password guessing.

Entries are what ``htpasswd -B`` writes (bcrypt, ``$2y$``; ``$2a$``/``$2b$`` too) and the
older ``{SHA}`` form (base64 of SHA-1). Other forms (``$apr1$`` MD5, crypt) are refused at
load, with the user named, rather than silently never matching.

bcrypt is slow on purpose (~2 ms at htpasswd's cost 5, ~250 ms at cost 12) and a client
sends the same credentials on every request, so a successful check is remembered, keyed
by a hash of the password (never the password itself) and forgotten when the file changes.
The file is re-read when its mtime changes, so users can be added without a restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import sys
import threading
import time

from berth.errors import InvalidArgument

REALM = "berth-registry"


class Htpasswd:
    def __init__(self, path: str) -> None:
        self.path = path
        self._users: dict[str, bytes] = {}
        self._mtime = -1.0
        self._good: set[tuple[str, bytes]] = set()
        self._mutex = threading.Lock()
        self._load()
        if not self._users:
            raise InvalidArgument(f"{path}: no usable entries (make them with 'htpasswd -B')")

    def _load(self) -> None:
        try:
            st = os.stat(self.path)
            with open(self.path, "rb") as f:
                lines = f.read().splitlines()
        except OSError as exc:
            raise InvalidArgument(f"cannot read htpasswd file {self.path}: "
                                  f"{exc.strerror}") from None
        users = {}
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith(b"#"):
                continue
            user, sep, hashed = line.partition(b":")
            if not sep or not user:
                sys.stderr.write(f"berth registry: {self.path}:{number}: not 'user:hash', "
                                 "ignored\n")
                continue
            if not (hashed[:4] in (b"$2y$", b"$2a$", b"$2b$") or hashed.startswith(b"{SHA}")):
                sys.stderr.write(f"berth registry: {self.path}:{number}: user "
                                 f"{user.decode(errors='replace')!r}: unsupported hash (use "
                                 "'htpasswd -B'), ignored\n")
                continue
            users[user.decode(errors="replace")] = hashed
        self._users, self._mtime, self._good = users, st.st_mtime, set()

    def _fresh(self) -> None:
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError:
            return  # keep the last good table while the file is being replaced
        if mtime != self._mtime:
            try:
                self._load()
            except InvalidArgument:
                pass

    def known(self, user: str, password: str) -> bool:
        """Whether these credentials already passed `check` (fast: no bcrypt, no thread)."""
        with self._mutex:
            self._fresh()
            return (user, hashlib.sha256(password.encode()).digest()) in self._good

    def check(self, user: str, password: str) -> bool:
        """Whether `user` and `password` match an entry. Blocks for bcrypt: call from a thread."""
        with self._mutex:
            self._fresh()
            hashed = self._users.get(user)
            key = (user, hashlib.sha256(password.encode()).digest())
            if hashed is None:
                return False
            if key in self._good:
                return True
        if hashed.startswith(b"{SHA}"):
            ok = hmac.compare_digest(
                base64.b64encode(hashlib.sha1(password.encode()).digest()), hashed[5:])
        else:
            import bcrypt

            try:
                ok = bcrypt.checkpw(password.encode(), hashed)
            except ValueError:
                ok = False
        if ok:
            with self._mutex:
                if self._users.get(user) == hashed:
                    self._good.add(key)
        return ok


class Brake:
    """After `limit` failed logins from one address within `window` seconds, that address
    gets TOOMANYREQUESTS until the window has passed: guessing costs time."""

    def __init__(self, limit: int = 10, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, list[float]] = {}

    def retry_after(self, address: str) -> int:
        """Seconds `address` must wait, or 0 when it may try."""
        now = time.monotonic()
        times = [t for t in self._failures.get(address, ()) if t > now - self.window]
        if times:
            self._failures[address] = times
        else:
            self._failures.pop(address, None)
        if len(times) < self.limit:
            return 0
        return max(1, int(times[0] + self.window - now + 0.999))

    def failed(self, address: str) -> None:
        if len(self._failures) > 10000:  # bound the table against address spraying
            self._failures.clear()
        self._failures.setdefault(address, []).append(time.monotonic())


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(user, password) of an ``Authorization: Basic`` header, or None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None
