"""Address management: a subnet for each new network, and one address per endpoint.

    <network dir>/addresses/<a.b.c.d>   one file per address in use; its content is the owner
    /run/berth/subnets/<a.b.c.d>_<len>  a subnet claimed on this host, by any berth root

Taking an address is link(2) of a file that already holds the owner's id onto the
address's name: atomic and exclusive (EEXIST), so two concurrent starts can never get
one address, and a kill -9 never leaves a half-written entry. Plain allocations share the
network's lock; reclaiming entries of owners that are gone takes it exclusively, so a
reclaim cannot remove an entry a concurrent allocation has just made.

No fsync: an address only matters while its container runs, and no container survives
the power loss that could lose the entry (the owner check reclaims what a crash left).

Subnets are claimed host-wide, not per root: several roots (and Docker, podman) share the
host's routing table, so a new network takes the first pool subnet that neither overlaps
a route of the host, nor a nameserver it uses, nor a claim of another root.
"""

from __future__ import annotations

import errno
import fcntl
import os

from berth.errors import AlreadyExists, InvalidArgument, Unavailable

HOST_DIR = "/run/berth"  # host-wide state: subnet claims, port reservations, DNS pids
DEFAULT_SUBNET = "172.31.0.0/16"  # the default root's bridge; Docker's 172.17 and 172.30 are in use here


POOL = ("172.18.0.0/15", "172.20.0.0/14", "172.24.0.0/14", "172.28.0.0/15")  # 172.18-29
POOL_SIZE = 24


def pool():
    """Subnets for new networks, in order: /24s of 172.18.0.0-172.29.255.255, which is
    Docker's pool minus the ranges this host's Docker uses (172.17, 172.30) and berth's
    own default (172.31). /24s rather than Docker's /16s: every test root has a default
    bridge of its own, and 3,072 of them never run out where twelve /16s would."""
    for text in POOL:
        net, prefixlen = parse_subnet(text)
        for i in range(1 << (POOL_SIZE - prefixlen)):
            yield net + (i << (32 - POOL_SIZE)), POOL_SIZE


# --- addresses as integers -------------------------------------------------------------

def parse_ip(text: str) -> int:
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and len(p) <= 3 and int(p) < 256 for p in parts):
        raise InvalidArgument(f"invalid IPv4 address: {text!r}")
    a, b, c, d = (int(p) for p in parts)
    return (a << 24) | (b << 16) | (c << 8) | d


def format_ip(value: int) -> str:
    return f"{value >> 24 & 255}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"


def mask(prefixlen: int) -> int:
    return (0xFFFFFFFF << (32 - prefixlen)) & 0xFFFFFFFF if prefixlen else 0


def parse_subnet(text: str) -> tuple[int, int]:
    """'10.1.0.0/16' -> (network, prefix length); host bits must be zero, as in Docker."""
    addr, slash, length = text.partition("/")
    if not slash or not length.isdigit() or not 0 <= int(length) <= 32:
        raise InvalidArgument(f"invalid subnet {text!r}: expected an IPv4 CIDR like 10.1.0.0/16")
    net, prefixlen = parse_ip(addr), int(length)
    if net & ~mask(prefixlen) & 0xFFFFFFFF:
        raise InvalidArgument(f"invalid subnet {text}: it should be "
                              f"{format_ip(net & mask(prefixlen))}/{prefixlen}")
    if prefixlen > 30:
        raise InvalidArgument(f"subnet {text} is too small: a network needs at least a /30")
    return net, prefixlen


def format_subnet(net: int, prefixlen: int) -> str:
    return f"{format_ip(net)}/{prefixlen}"


def contains(net: int, prefixlen: int, ip: int) -> bool:
    return ip & mask(prefixlen) == net


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    shorter = min(a[1], b[1])
    return a[0] & mask(shorter) == b[0] & mask(shorter)


def usable(net: int, prefixlen: int, ip: int) -> bool:
    """In the subnet, and neither its network nor its broadcast address."""
    return contains(net, prefixlen, ip) and ip not in (net, net | ~mask(prefixlen) & 0xFFFFFFFF)


# --- what the host already uses ---------------------------------------------------------

def host_routes() -> list[tuple[int, int]]:
    """The host's IPv4 routes (main table) as (network, prefix), without the default route."""
    out = []
    try:
        with open("/proc/net/route") as f:
            next(f, None)
            for line in f:
                fields = line.split()
                if len(fields) < 8:
                    continue
                # little-endian hex, as the kernel prints them
                dest = int.from_bytes(int(fields[1], 16).to_bytes(4, "little"), "big")
                bits = bin(int(fields[7], 16)).count("1")
                if bits:
                    out.append((dest, bits))
    except OSError:
        pass
    return out


def host_nameservers(path: str = "/etc/resolv.conf") -> list[str]:
    out = []
    try:
        with open(path) as f:
            for line in f:
                fields = line.split()
                if len(fields) > 1 and fields[0] == "nameserver":
                    out.append(fields[1])
    except OSError:
        pass
    return out


def _in_use_by_host() -> list[tuple[int, int]]:
    used = host_routes()
    for server in host_nameservers():
        try:
            used.append((parse_ip(server), 32))
        except InvalidArgument:
            pass  # IPv6
    return used


# --- host-wide subnet claims ------------------------------------------------------------

class SubnetClaims:
    """Which subnets berth roots on this host use; a claim names its root and network."""

    def __init__(self, base: str = HOST_DIR) -> None:
        self.dir = os.path.join(base, "subnets")

    def _path(self, subnet: tuple[int, int]) -> str:
        return os.path.join(self.dir, f"{format_ip(subnet[0])}_{subnet[1]}")

    def lock(self):
        return FileLock(os.path.join(self.dir, ".lock"))

    def all(self) -> dict[tuple[int, int], str]:
        """subnet -> owner text ("<root>\\n<network id>\\n<bridge>")."""
        out = {}
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return out
        for name in names:
            addr, sep, length = name.partition("_")
            if not sep or name.startswith("."):
                continue
            try:
                with open(os.path.join(self.dir, name)) as f:
                    out[(parse_ip(addr), int(length))] = f.read()
            except (OSError, ValueError, InvalidArgument):
                continue
        return out

    def claim(self, subnet: tuple[int, int] | None, owner: str, stale=None) -> tuple[int, int]:
        """Claim `subnet`, or the first free pool subnet if None. Call under lock().

        `stale(owner_text)` says whether an existing claim's network is gone; such claims
        are dropped (the caller tears down what they left first).
        """
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        claims = self.all()
        if stale is not None:
            for sub, text in list(claims.items()):
                if stale(text):
                    self.release(sub)
                    del claims[sub]
        taken = list(claims) + _in_use_by_host()
        if subnet is not None:
            for other in taken:
                if overlaps(subnet, other):
                    raise AlreadyExists(f"subnet {format_subnet(*subnet)} overlaps "
                                        f"{format_subnet(*other)}, which is already in use on "
                                        "this host")
            candidates = [subnet]
        else:
            candidates = [next((c for c in pool() if not any(overlaps(c, t) for t in taken)),
                               None)]
            if candidates[0] is None:
                raise Unavailable("no free subnet left in berth's address pool: remove unused "
                                  "networks (berth network prune) or give --subnet")
        chosen = candidates[0]
        _publish(self._path(chosen), owner)
        return chosen

    def release(self, subnet: tuple[int, int]) -> None:
        try:
            os.unlink(self._path(subnet))
        except FileNotFoundError:
            pass


# --- addresses of one network -----------------------------------------------------------

class Addresses:
    """The addresses in use on one network, persisted as one file per address."""

    def __init__(self, directory: str, subnet: str, gateway: str) -> None:
        self.dir = os.path.join(directory, "addresses")
        self.lock_path = os.path.join(directory, "addresses.lock")
        self.net, self.prefixlen = parse_subnet(subnet)
        self.gateway = parse_ip(gateway) if gateway else None

    def owners(self) -> dict[str, str]:
        out = {}
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return out
        for name in names:
            if name.startswith("."):
                continue
            try:
                with open(os.path.join(self.dir, name)) as f:
                    out[name] = f.read()
            except OSError:
                continue
        return out

    def allocate(self, owner: str, wanted: str | None = None, prefer: str | None = None,
                 alive=None) -> str:
        """Take an address for `owner`: `wanted` exactly (--ip), else `prefer` if free (the
        address a restarted container had), else the next free one after the last taken.

        `alive(owner) -> bool` lets entries of owners that are gone be reclaimed when the
        address (or the whole subnet) is otherwise taken.
        """
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        if wanted is not None:
            ip = parse_ip(wanted)
            wanted = format_ip(ip)
            if not usable(self.net, self.prefixlen, ip) or ip == self.gateway:
                raise InvalidArgument(f"no configured subnet contains IP address {wanted}, or it "
                                      "is the network's own, broadcast or gateway address")

        def take() -> str | None:
            if wanted is not None:
                return wanted if self._take(wanted, owner) else None
            return self._take_any(owner, prefer)

        with FileLock(self.lock_path, shared=True):
            got = take()
        if got is None and alive is not None:
            with FileLock(self.lock_path):
                self._reclaim(alive)
                got = take()
        if got is not None:
            return got
        if wanted is not None:
            raise AlreadyExists(f"Address already in use: {wanted}")
        raise Unavailable(f"no available IPv4 address on network "
                          f"{format_subnet(self.net, self.prefixlen)}")

    def release(self, address: str, owner: str) -> None:
        """Give `address` back, if `owner` still holds it (a reclaim may have moved it on)."""
        path = os.path.join(self.dir, address)
        try:
            with open(path) as f:
                if f.read() != owner:
                    return
            os.unlink(path)
        except FileNotFoundError:
            pass

    def _take_any(self, owner: str, prefer: str | None) -> str | None:
        if prefer is not None:
            try:
                ip = parse_ip(prefer)
            except InvalidArgument:
                ip = None
            if ip is not None and usable(self.net, self.prefixlen, ip) and ip != self.gateway \
                    and self._take(prefer, owner):
                return prefer
        try:
            used = set(os.listdir(self.dir))
        except FileNotFoundError:
            used = set()
        size = 1 << (32 - self.prefixlen)
        # round-robin from the last address taken, so a just-freed address (whose peers may
        # still hold it in their ARP caches) is the last to be handed out again
        start = self._hint()
        for step in range(1, size + 1):  # all the way round, back to the last one taken
            ip = self.net + (start + step) % size
            if not usable(self.net, self.prefixlen, ip) or ip == self.gateway:
                continue
            text = format_ip(ip)
            if text in used:
                continue
            if self._take(text, owner):
                self._set_hint(ip - self.net)
                return text
        return None

    def _take(self, address: str, owner: str) -> bool:
        tmp = os.path.join(self.dir, f".tmp-{os.getpid()}-{os.urandom(4).hex()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, owner.encode())
        finally:
            os.close(fd)
        try:
            os.link(tmp, os.path.join(self.dir, address))
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def _reclaim(self, alive) -> None:
        for address, owner in self.owners().items():
            if owner and not alive(owner):
                try:
                    os.unlink(os.path.join(self.dir, address))
                except FileNotFoundError:
                    pass
        for name in os.listdir(self.dir):  # temp files of a process killed mid-_take
            if name.startswith(".tmp-"):
                try:
                    os.unlink(os.path.join(self.dir, name))
                except FileNotFoundError:
                    pass

    def _hint(self) -> int:
        try:
            with open(os.path.join(self.dir, ".last")) as f:
                return int(f.read() or 0)
        except (OSError, ValueError):
            return 0

    def _set_hint(self, offset: int) -> None:
        # best effort and unlocked: a lost update only changes where the next search starts
        try:
            tmp = os.path.join(self.dir, f".last-{os.getpid()}")
            with open(tmp, "w") as f:
                f.write(str(offset))
            os.replace(tmp, os.path.join(self.dir, ".last"))
        except OSError:
            pass


def _publish(path: str, text: str) -> None:
    """Create `path` holding `text`, atomically and only if it does not exist yet."""
    tmp = f"{path}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    with open(tmp, "w") as f:
        f.write(text)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise AlreadyExists(f"{os.path.basename(path)} is already claimed") from None
    finally:
        os.unlink(tmp)


class FileLock:
    """flock on a file, as a context manager; the file is created if needed."""

    def __init__(self, path: str, shared: bool = False) -> None:
        self.path = path
        self.shared = shared
        self.fd = -1

    def __enter__(self) -> "FileLock":
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX)
                return self
            except OSError as exc:
                if exc.errno != errno.EINTR:
                    os.close(self.fd)
                    raise

    def __exit__(self, *exc) -> None:
        os.close(self.fd)
        self.fd = -1
