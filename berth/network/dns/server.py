"""The embedded DNS server of one network: `python -m berth.network.dns.server ROOT ID`.

It answers the names, network aliases and short IDs of the containers on its network (A,
and PTR for their addresses) from the network's endpoint files, re-read when their
directory changes, and forwards every other question to the asking container's --dns
servers, else to the host's own. It serves only clients inside its subnet, holds an flock
for as long as it runs (one server per network), writes its pid file once it listens, and
exits by itself when its network's record or bridge disappears.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import sys
import time

from berth.network.dns import pid_dir, running, write_pid
from berth.network.dns.wire import (QTYPE_A, QTYPE_PTR, RCODE_NXDOMAIN, RCODE_REFUSED,
                                    RCODE_SERVFAIL, parse_query, response)

UPSTREAM_TIMEOUT = 3.0
HOUSEKEEPING = 2.0  # seconds between checks that the network still exists


# --- the names of one network -----------------------------------------------------------

class Names:
    """Names -> addresses of the network's endpoints, re-read when the directory changes."""

    def __init__(self, endpoints_dir: str) -> None:
        self.dir = endpoints_dir
        self.stamp = None
        self.by_name: dict[str, list[str]] = {}
        self.by_address: dict[str, str] = {}
        self.upstreams: dict[str, list[str]] = {}  # container address -> its --dns servers

    def refresh(self) -> None:
        try:
            st = os.stat(self.dir)
            stamp = (st.st_mtime_ns, st.st_ino)
        except FileNotFoundError:
            stamp = None
        # a directory changed twice within one timestamp tick looks unchanged: trust an
        # unchanged stamp only once it is a second old
        if stamp == self.stamp and time.time_ns() - (stamp or (0,))[0] > 1_000_000_000:
            return
        self.stamp = stamp
        from berth.network.service import owner_alive

        by_name, by_address, upstreams = {}, {}, {}
        for name in os.listdir(self.dir) if stamp else ():
            if name.startswith("."):
                continue
            try:
                with open(os.path.join(self.dir, name)) as f:
                    ep = json.load(f)
            except (OSError, ValueError):
                continue
            address = ep.get("IPv4Address", "").split("/")[0]
            if not address or not owner_alive(ep.get("Owner", "")):
                continue  # a container that died unreleased: its address may be reused
            for n in ep.get("DNSNames") or ():
                if n:
                    by_name.setdefault(n.lower().rstrip("."), []).append(address)
            if ep.get("DNSNames"):
                by_address[address] = ep["DNSNames"][0]
            if ep.get("DNS"):
                upstreams[address] = list(ep["DNS"])
        self.by_name, self.by_address, self.upstreams = by_name, by_address, upstreams

    def lookup(self, qname: str) -> list[str] | None:
        return self.by_name.get(qname.lower().rstrip("."))


# --- the server -------------------------------------------------------------------------

class Server:
    def __init__(self, root: str, network_id: str) -> None:
        self.root = root
        self.network_id = network_id
        self.netdir = os.path.join(root, "networks", network_id)
        with open(os.path.join(self.netdir, "network.json")) as f:
            record = json.load(f)
        config = record["IPAM"]["Config"][0]
        self.gateway = config["Gateway"]
        from berth.network import ipam

        self.net, self.prefixlen = ipam.parse_subnet(config["Subnet"])
        self.internal = bool(record.get("Internal"))
        self.bridge = record["Options"]["com.docker.network.bridge.name"]
        self.names = Names(os.path.join(self.netdir, "endpoints"))
        self.pending: dict[int, tuple] = {}  # upstream socket fd -> (sock, reply, query, servers, deadline)
        self.host_servers: list[str] = []
        self.host_servers_read = 0.0

    def _allowed(self, address: str) -> bool:
        from berth.network import ipam

        try:
            return ipam.contains(self.net, self.prefixlen, ipam.parse_ip(address))
        except ValueError:
            return False

    def serve(self) -> None:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        udp.bind((self.gateway, 53))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((self.gateway, 53))
        tcp.listen(64)
        write_pid(self.bridge)
        next_check = time.monotonic() + HOUSEKEEPING
        while True:
            now = time.monotonic()
            if now >= next_check:
                if not self._network_exists():
                    return
                next_check = now + HOUSEKEEPING
            self._expire(now)
            waits = [next_check - now] + [p[4] - now for p in self.pending.values()]
            fds = [udp, tcp] + [p[0] for p in self.pending.values()]
            try:
                readable, _, _ = select.select(fds, [], [], max(0.0, min(waits)))
            except InterruptedError:
                continue
            for sock in readable:
                if sock is udp:
                    self._udp(udp)
                elif sock is tcp:
                    self._tcp(tcp)
                else:
                    self._upstream_reply(sock)

    def _network_exists(self) -> bool:
        from berth.network import bridge

        try:
            with open(os.path.join(self.netdir, "network.json")) as f:
                if json.load(f).get("Id") != self.network_id:
                    return False
        except (OSError, ValueError):
            return False
        return bridge.exists(self.bridge)

    def _udp(self, udp) -> None:
        try:
            data, peer = udp.recvfrom(4096)
        except OSError:
            return
        if not self._allowed(peer[0]):
            return
        reply = self.answer(data, peer[0], lambda out: _sendto(udp, out, peer))
        if reply is not None:
            _sendto(udp, reply, peer)

    def _tcp(self, tcp) -> None:
        try:
            conn, peer = tcp.accept()
        except OSError:
            return
        with conn:
            if not self._allowed(peer[0]):
                return
            conn.settimeout(2.0)
            try:
                raw = _recv_exact(conn, 2)
                data = _recv_exact(conn, struct.unpack("!H", raw)[0])
            except (OSError, struct.error):
                return
            box = []
            reply = self.answer(data, peer[0], box.append, blocking=True)
            if reply is None and box:
                reply = box[0]
            if reply is not None:
                try:
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
                except OSError:
                    pass

    def answer(self, data: bytes, client: str, send, blocking: bool = False) -> bytes | None:
        """The reply to `data`, or None when it was handed to an upstream server (whose
        answer goes to `send` later; right away with `blocking`)."""
        parsed = parse_query(data)
        if parsed is None:
            return None
        _qid, _flags, qname, qtype, end = parsed
        self.names.refresh()
        found = self.names.lookup(qname)
        if found is not None:
            return response(data, end, addresses=found if qtype == QTYPE_A else ())
        if qtype == QTYPE_PTR and qname.lower().endswith(".in-addr.arpa"):
            address = ".".join(reversed(qname.split(".")[:4]))
            if address in self.names.by_address:
                return response(data, end, ptr=self.names.by_address[address])
        if self.internal:
            return response(data, end, rcode=RCODE_REFUSED if "." in qname.strip(".")
                            else RCODE_NXDOMAIN)
        servers = self.names.upstreams.get(client) or self._host_servers()
        if not servers:
            return response(data, end, rcode=RCODE_SERVFAIL)
        if blocking:
            return _ask_blocking(data, servers) or response(data, end, rcode=RCODE_SERVFAIL)
        self._forward(data, end, servers, send)
        return None

    def _host_servers(self) -> list[str]:
        now = time.monotonic()
        if now - self.host_servers_read > 5.0:
            from berth.network.ipam import host_nameservers

            self.host_servers = [s for s in host_nameservers() if ":" not in s]
            self.host_servers_read = now
        return self.host_servers

    def _forward(self, data: bytes, end: int, servers: list[str], send) -> None:
        if len(self.pending) > 256:
            send(response(data, end, rcode=RCODE_SERVFAIL))
            return
        server, rest = servers[0], servers[1:]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect((server, 53))
            sock.send(data)
        except OSError:
            sock.close()
            if rest:
                self._forward(data, end, rest, send)
            else:
                send(response(data, end, rcode=RCODE_SERVFAIL))
            return
        self.pending[sock.fileno()] = (sock, send, (data, end), rest,
                                       time.monotonic() + UPSTREAM_TIMEOUT)

    def _upstream_reply(self, sock) -> None:
        entry = self.pending.pop(sock.fileno(), None)
        try:
            reply = sock.recv(65535)
        except OSError:
            reply = None
        sock.close()
        if entry is None:
            return
        _, send, (data, end), rest, _ = entry
        if reply:
            send(reply)
        elif rest:
            self._forward(data, end, rest, send)
        else:
            send(response(data, end, rcode=RCODE_SERVFAIL))

    def _expire(self, now: float) -> None:
        for fd, entry in list(self.pending.items()):
            if entry[4] <= now:
                del self.pending[fd]
                entry[0].close()
                _, send, (data, end), rest, _ = entry
                if rest:
                    self._forward(data, end, rest, send)
                else:
                    send(response(data, end, rcode=RCODE_SERVFAIL))


def _sendto(sock, data: bytes, peer) -> None:
    try:
        sock.sendto(data, peer)
    except OSError:
        pass


def _recv_exact(conn, size: int) -> bytes:
    buf = b""
    while len(buf) < size:
        chunk = conn.recv(size - len(buf))
        if not chunk:
            raise OSError("short read")
        buf += chunk
    return buf


def _ask_blocking(data: bytes, servers: list[str]) -> bytes | None:
    for server in servers:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(UPSTREAM_TIMEOUT)
        try:
            sock.connect((server, 53))
            sock.send(data)
            return sock.recv(65535)
        except OSError:
            continue
        finally:
            sock.close()
    return None


def main(argv: list[str]) -> int:
    import fcntl

    root, network_id = argv[0], argv[1]
    server = Server(root, network_id)
    lock = os.open(os.path.join(pid_dir(), f"{server.bridge}.lock"),
                   os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another one serves this network
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        server.serve()
    finally:
        if running(server.bridge) == os.getpid():
            # the network is gone (or we were stopped): its name will not serve again
            for name in (f"{server.bridge}.pid", f"{server.bridge}.lock"):
                try:
                    os.unlink(os.path.join(pid_dir(), name))
                except FileNotFoundError:
                    pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
