"""Published ports: `-p`/`--expose` parsing (pure), and host ports reserved host-wide.

    /run/berth/ports/<proto>_<port>_<host ip>   one file per published host port; its
                                                content names the root, container and the
                                                process that holds it

A published port is a DNAT rule, not a listening socket, so nothing in the kernel stops
two containers (of any berth root) from claiming the same host port: the reservation
files do, under one host-wide lock, and a bind test refuses ports a host process listens
on, as Docker's bind of the port would.
"""

from __future__ import annotations

import os

from berth.errors import AlreadyExists, InvalidArgument
from berth.oci.record import Record

PORTS_DIR = "ports"


class PortSpec(Record):
    """One `-p` mapping: container port/proto to host_ip:host_port (0 = any free port)."""

    container_port: int
    proto: str = "tcp"
    host_ip: str = ""
    host_port: int = 0


def _port(text: str, what: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InvalidArgument(f"invalid {what}: {text}")
    return int(text)


def _range(text: str, what: str) -> list[int]:
    first, dash, last = text.partition("-")
    start = _port(first, what)
    end = _port(last, what) if dash else start
    if end < start:
        raise InvalidArgument(f"invalid {what}: {text}")
    return list(range(start, end + 1))


def parse_proto(text: str) -> tuple[str, str]:
    body, slash, proto = text.partition("/")
    proto = proto.lower() if slash else "tcp"
    if proto not in ("tcp", "udp"):
        raise InvalidArgument(f"invalid proto: {proto}")
    return body, proto


def parse_publish(text: str) -> list[PortSpec]:
    """Docker's -p: [[IP:][HOST]:]CONTAINER[/tcp|udp], ports or equal-sized ranges."""
    body, proto = parse_proto(text)
    if body.startswith("["):
        raise InvalidArgument(f"invalid publish {text!r}: IPv6 host addresses are not supported")
    parts = body.split(":")
    if len(parts) > 3:
        raise InvalidArgument(f"invalid publish {text!r}: expected [[IP:][HOST]:]CONTAINER[/PROTO]")
    host_ip, host, container = ("", "", parts[0]) if len(parts) == 1 else \
        ("", parts[0], parts[1]) if len(parts) == 2 else tuple(parts)
    if host_ip:
        from berth.network.ipam import parse_ip

        try:
            parse_ip(host_ip)
        except InvalidArgument:
            raise InvalidArgument(f"invalid IP address: {host_ip}") from None
    containers = _range(container, "containerPort")
    if not host:
        return [PortSpec(p, proto, host_ip, 0) for p in containers]
    hosts = _range(host, "hostPort")
    if len(hosts) != len(containers):
        if len(containers) == 1 and "-" in host:
            raise InvalidArgument(f"invalid publish {text!r}: a host port range maps to a "
                                  "container range of the same size")
        raise InvalidArgument(f"invalid ranges specified for container and host Ports: {text}")
    return [PortSpec(c, proto, host_ip, h) for h, c in zip(hosts, containers)]


def parse_expose(text: str) -> list[str]:
    """--expose 80, 80/udp, 8000-8010 -> ["80/tcp", ...] (Docker's ExposedPorts keys)."""
    body, proto = parse_proto(text)
    return [f"{p}/{proto}" for p in _range(body, "port")]


def key(port: int, proto: str) -> str:
    return f"{port}/{proto}"


class Reservations:
    """Host ports held by published containers, shared by every berth root on the host."""

    def __init__(self, base: str) -> None:
        self.dir = os.path.join(base, PORTS_DIR)

    def lock(self):
        from berth.network.ipam import FileLock

        return FileLock(os.path.join(self.dir, ".lock"))

    def reserve(self, specs: list[PortSpec], owner: str, alive, reclaimed=None) -> list[PortSpec]:
        """Reserve every spec's host port (choosing free ones for 0) for `owner`; all or none.

        `alive(owner_text)` tells a live holder from a stale entry, which is reclaimed after
        `reclaimed(owner_text, proto, port, host_ip)` has removed what it left (its rule).
        Returns the specs with their host ports filled in.
        """
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        done: list[PortSpec] = []
        with self.lock():
            held = self._held()
            try:
                for spec in specs:
                    port = spec.host_port or self._free_port(spec, held)
                    for (proto, p, ip), text in list(held.items()):
                        if proto == spec.proto and p == port and _same_address(ip, spec.host_ip):
                            if alive(text):
                                raise AlreadyExists(
                                    f"Bind for {spec.host_ip or '0.0.0.0'}:{port} failed: port "
                                    "is already allocated")
                            if reclaimed is not None:
                                reclaimed(text, proto, p, ip)
                            self._drop(proto, p, ip)
                            del held[(proto, p, ip)]
                    if spec.host_port and not _bindable(spec.host_ip, port, spec.proto):
                        raise AlreadyExists(f"Bind for {spec.host_ip or '0.0.0.0'}:{port} "
                                            "failed: port is already in use on the host")
                    self._write(spec.proto, port, spec.host_ip, owner)
                    held[(spec.proto, port, spec.host_ip)] = owner
                    done.append(PortSpec(spec.container_port, spec.proto, spec.host_ip, port))
            except BaseException:
                for spec in done:
                    self._drop(spec.proto, spec.host_port, spec.host_ip)
                raise
        return done

    def held_by(self, specs, owner: str) -> list:
        """Those of `specs` still reserved for `owner` (a stale one may have moved on)."""
        out = []
        for spec in specs:
            try:
                with open(self._path(spec.proto, spec.host_port, spec.host_ip)) as f:
                    if f.read() == owner:
                        out.append(spec)
            except FileNotFoundError:
                pass
        return out

    def release(self, specs, owner: str) -> None:
        for spec in self.held_by(specs, owner):
            self._drop(spec.proto, spec.host_port, spec.host_ip)

    def _free_port(self, spec: PortSpec, held: dict) -> int:
        low, high = ephemeral_range()
        taken = {p for (proto, p, ip) in held if proto == spec.proto
                 and _same_address(ip, spec.host_ip)}
        for port in range(low, high + 1):
            if port not in taken and _bindable(spec.host_ip, port, spec.proto):
                return port
        raise AlreadyExists(f"no free host port left for {spec.container_port}/{spec.proto}")

    def _held(self) -> dict:
        out = {}
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return out
        for name in names:
            fields = name.split("_")
            if len(fields) != 3 or name.startswith("."):
                continue
            try:
                with open(os.path.join(self.dir, name)) as f:
                    out[(fields[0], int(fields[1]), fields[2])] = f.read()
            except (OSError, ValueError):
                continue
        return out

    def _path(self, proto: str, port: int, host_ip: str) -> str:
        return os.path.join(self.dir, f"{proto}_{port}_{host_ip or '0.0.0.0'}")

    def _write(self, proto: str, port: int, host_ip: str, owner: str) -> None:
        path = self._path(proto, port, host_ip)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(owner)
        os.replace(tmp, path)  # under the lock: a replace is an exclusive create here

    def _drop(self, proto: str, port: int, host_ip: str) -> None:
        try:
            os.unlink(self._path(proto, port, host_ip))
        except FileNotFoundError:
            pass


def _same_address(a: str, b: str) -> bool:
    a, b = a or "0.0.0.0", b or "0.0.0.0"
    return a == b or "0.0.0.0" in (a, b)


def _bindable(host_ip: str, port: int, proto: str) -> bool:
    """Whether a host process could bind the port: then no process of the host holds it."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else
                         socket.SOCK_DGRAM)
    try:
        sock.bind((host_ip or "0.0.0.0", port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def ephemeral_range() -> tuple[int, int]:
    """Where -P picks host ports: the kernel's ip_local_port_range, as Docker does."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999
