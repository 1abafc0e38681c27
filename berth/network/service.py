"""The Networks service: Docker's networks of one root, and their endpoints.

    Networks(root).create(name, subnet=, gateway=, internal=)   network create
    .list() .get(ref) .inspect(ref) .remove(ref) .prune()         ls, inspect, rm, prune
    .join(record, cid, ...) -> endpoint    an address (and DNS name) on a network
    .plug(endpoint, pid, ifname)           its veth pair, in the container's namespace
    .publish(endpoint, specs) -> specs     its published ports (DNAT)
    .leave(cid, endpoint)                  all of the above undone; idempotent

An endpoint's owner is written down as "<container id> <pid>:<start time>" of the
container's PID 1: an address or host port whose owner process is gone can be reclaimed
by anyone, so a container killed with its monitor never leaks them for good.
"""
from __future__ import annotations

import os
import time

from berth.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from berth.network import ipam
from berth.network.host import BRIDGE_NAME_OPT, HostSide, bridge_of, subnet_of
from berth.network.store import NetworkStore
from berth.proc import process_start

PREDEFINED = ("bridge", "host", "none")
DEFAULT_ROOT = "/var/lib/berth"


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def owner_of(cid: str, pid: int) -> str:
    return f"{cid} {pid}:{process_start(pid)}"


def owner_alive(text: str) -> bool:
    try:
        pid, start = text.split()[1].split(":")
        return start != "None" and str(process_start(int(pid))) == start
    except (IndexError, ValueError):
        return False


class Networks:
    def __init__(self, root: str, host_dir: str = ipam.HOST_DIR) -> None:
        self.root = os.path.abspath(root)
        self.store = NetworkStore(self.root)
        self.host_dir = host_dir
        self.host = HostSide(self.root, host_dir)

    # --- lookup ----------------------------------------------------------------------

    def get(self, ref: str) -> dict:
        """A network by name, ID or ID prefix; `default` is Docker's other name for bridge."""
        ref = "bridge" if ref == "default" else ref
        try:
            return self.store.read(self.store.lookup(ref))
        except NotFound:
            if ref not in PREDEFINED:
                raise
        self._ensure_predefined()
        return self.store.read(self.store.lookup(ref))

    def list(self) -> list[dict]:
        self._ensure_predefined()
        out = []
        for nid in self.store.ids():
            try:
                out.append(self.store.read(nid))
            except NotFound:
                continue
        out.sort(key=lambda r: r["Name"])  # as the docker CLI lists them
        return out

    def inspect(self, ref: str) -> dict:
        record = dict(self.get(ref))
        record["Containers"] = {
            cid: {"Name": ep.get("Name", ""), "EndpointID": ep.get("EndpointID", ""),
                  "MacAddress": ep.get("MacAddress", ""), "IPv4Address": ep.get("IPv4Address", ""),
                  "IPv6Address": ""}
            for cid, ep in self._live_endpoints(record["Id"]).items()}
        return record

    def _live_endpoints(self, nid: str) -> dict[str, dict]:
        return {cid: ep for cid, ep in self.store.endpoints(nid).items()
                if owner_alive(ep.get("Owner", ""))}

    # --- create ----------------------------------------------------------------------

    def create(self, name: str, *, subnet: str | None = None, gateway: str | None = None,
               internal: bool = False, labels: dict | None = None,
               options: dict | None = None, driver: str = "bridge") -> dict:
        if driver != "bridge":
            raise InvalidArgument(f"network driver {driver!r} is not supported (bridge)")
        if name in PREDEFINED or name == "default":
            raise AlreadyExists(f"network with name {name} already exists")
        if gateway and not subnet:
            raise InvalidArgument("a --gateway needs the --subnet it belongs to")
        self._ensure_predefined()
        options = dict(options or {})
        nid = os.urandom(32).hex()
        bridge = options.get(BRIDGE_NAME_OPT) or f"berth-{nid[:9]}"
        _check_bridge_name(bridge)
        options[BRIDGE_NAME_OPT] = bridge
        wanted = ipam.parse_subnet(subnet) if subnet else None
        if gateway:
            gw = ipam.parse_ip(gateway)
            if not ipam.usable(*wanted, gw):
                raise InvalidArgument(f"no matching subnet for gateway {gateway}")
        with ipam.FileLock(self.store.lock_path()):
            self.store.reserve_name(name, nid)
            claimed = None
            try:
                # the record is written under the claims lock: a claim without its record
                # would look stale to another root's sweep
                with self.host.claims.lock():
                    if os.path.exists(os.path.join("/sys/class/net", bridge)):
                        raise AlreadyExists(f"bridge {bridge} already exists on this host")
                    claimed = self.host.claim(wanted, nid, bridge)
                    record = self._record(name, nid, claimed, gateway, internal, labels or {},
                                          options)
                    self.store.write(record)
                self.host.setup(record)
            except BaseException:
                if claimed is not None:
                    self.host.teardown(bridge, user_defined=True)
                    self.host.claims.release(claimed)
                self.store.delete(nid, name)
                self.store.release_name(name, nid)
                raise
        return record

    def _record(self, name: str, nid: str, subnet: tuple[int, int], gateway: str | None,
                internal: bool, labels: dict, options: dict) -> dict:
        gw = gateway or ipam.format_ip(subnet[0] + 1)
        return {
            "Name": name, "Id": nid, "Created": _now(), "Scope": "local", "Driver": "bridge",
            "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": {},
                     "Config": [{"Subnet": ipam.format_subnet(*subnet), "Gateway": gw}]},
            "Internal": internal, "Attachable": False, "Ingress": False,
            "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": {},
            "Options": options, "Labels": labels,
        }

    def _ensure_predefined(self) -> None:
        """bridge, host and none, made on first use of the root."""
        if all(os.path.lexists(os.path.join(self.store.names, n)) for n in PREDEFINED):
            return
        self.store.ensure()
        with ipam.FileLock(self.store.lock_path()):
            for name in PREDEFINED:
                if os.path.lexists(os.path.join(self.store.names, name)):
                    continue
                nid = os.urandom(32).hex()
                if name == "bridge":
                    self._make_default(nid)
                else:
                    self.store.write({
                        "Name": name, "Id": nid, "Created": _now(), "Scope": "local",
                        "Driver": "host" if name == "host" else "null", "EnableIPv6": False,
                        "IPAM": {"Driver": "default", "Options": {}, "Config": []},
                        "Internal": False, "Attachable": False, "Ingress": False,
                        "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": {},
                        "Options": {}, "Labels": {}})
                self.store.reserve_name(name, nid)

    def _make_default(self, nid: str) -> None:
        """The default bridge: berth0 on 172.31.0.0/16 for the default root; other roots
        (tests, side-by-side installs) get a bridge of their own and a pool subnet.
        BERTH_BRIDGE and BERTH_BRIDGE_SUBNET choose them, as dockerd's --bridge and --bip.
        Its host side is made on first use."""
        bridge = os.environ.get("BERTH_BRIDGE") or (
            "berth0" if self.root == DEFAULT_ROOT else f"berth{_crc(self.root):08x}")
        _check_bridge_name(bridge)
        text = os.environ.get("BERTH_BRIDGE_SUBNET")
        with self.host.claims.lock():
            wanted = ipam.parse_subnet(text or ipam.DEFAULT_SUBNET) \
                if text or self.root == DEFAULT_ROOT else None
            try:
                claimed = self.host.claim(wanted, nid, bridge)
            except AlreadyExists:
                if text:
                    raise
                claimed = self.host.claim(None, nid, bridge)
            options = {"com.docker.network.bridge.default_bridge": "true",
                       "com.docker.network.bridge.enable_icc": "true",
                       "com.docker.network.bridge.enable_ip_masquerade": "true",
                       "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
                       BRIDGE_NAME_OPT: bridge, "com.docker.network.driver.mtu": "1500"}
            self.store.write(self._record("bridge", nid, claimed, None, False, {}, options))

    # --- remove ----------------------------------------------------------------------

    def remove(self, ref: str) -> str:
        record = self.get(ref)
        if record["Name"] in PREDEFINED:
            raise Conflict(f"{record['Name']} is a pre-defined network and cannot be removed")
        with ipam.FileLock(self.store.lock_path()):
            self._remove_unused(record)
        return record["Id"]

    def _remove_unused(self, record: dict) -> None:
        nid = record["Id"]
        with ipam.FileLock(self._lock(nid)):
            live = self._drop_stale_endpoints(record)
            if live:
                raise Conflict(f"error while removing network: network {record['Name']} id {nid} "
                               "has active endpoints")
            self.host.teardown(bridge_of(record), user_defined=True)
            self.host.claims.release(ipam.parse_subnet(subnet_of(record)[0]))
            self.store.delete(nid, record["Name"])

    def _drop_stale_endpoints(self, record: dict) -> dict:
        live = {}
        for cid, ep in self.store.endpoints(record["Id"]).items():
            if owner_alive(ep.get("Owner", "")):
                live[cid] = ep
            else:
                self._release(record, cid, ep)
        return live

    def prune(self) -> list[str]:
        """Remove user-defined networks no running container uses; also take the default
        bridge's interface and table down while nothing uses it (they come back on the next
        start), so a root that is done with leaves nothing on the host."""
        removed = []
        records = self.list()  # outside the lock: list() may take it to make predefined ones
        with ipam.FileLock(self.store.lock_path()):
            for record in records:
                if record["Name"] in ("host", "none"):
                    continue
                if record["Name"] == "bridge":
                    with ipam.FileLock(self._lock(record["Id"])):
                        if not self._drop_stale_endpoints(record):
                            self.host.teardown(bridge_of(record), user_defined=False)
                    continue
                try:
                    self._remove_unused(record)
                    removed.append(record["Name"])
                except Conflict:
                    continue
        return removed

    # --- endpoints: the engine's hooks ----------------------------------------------------

    def _lock(self, nid: str) -> str:
        return os.path.join(self.store.dir(nid), "lock")

    def join(self, record: dict, cid: str, name: str, owner: str, *, aliases=(),
             ip: str | None = None, prefer: str | None = None, dns=(),
             default_route: bool = True) -> dict:
        """An address and a DNS entry for container `cid` on network `record`.

        The endpoint (a dict the engine keeps in the container's record) says everything
        leave() needs to undo this, from any process.
        """
        nid = record["Id"]
        subnet, gateway = subnet_of(record)
        with ipam.FileLock(self._lock(nid), shared=True):
            if not os.path.exists(os.path.join(self.store.dir(nid), "network.json")):
                raise NotFound(f"network {record['Name']} not found")
            self.host.ensure(record)
            addresses = ipam.Addresses(self.store.dir(nid), subnet, gateway)
            address = addresses.allocate(owner, wanted=ip, prefer=prefer, alive=owner_alive)
            prefixlen = ipam.parse_subnet(subnet)[1]
            user = record["Name"] != "bridge"
            endpoint = {
                "NetworkID": nid, "Network": record["Name"], "Bridge": bridge_of(record),
                "EndpointID": os.urandom(32).hex(), "IPAddress": address,
                "IPPrefixLen": prefixlen, "Gateway": gateway, "MacAddress": "", "Veth": "",
                "Owner": owner,
                "DefaultRoute": default_route and not record["Internal"],
                "Aliases": list(aliases), "Ports": [],
            }
            names = [name] + list(aliases) + [cid[:12]] if user else []
            try:
                # the file holds everything a release needs, so a stale endpoint can be
                # cleaned up by anyone; the default bridge's has no names (no DNS there)
                self.store.write_endpoint(nid, cid, dict(
                    endpoint, Name=name, IPv4Address=f"{address}/{prefixlen}", DNSNames=names,
                    DNS=list(dns)))
            except BaseException:
                addresses.release(address, owner)
                raise
        return endpoint

    def plug(self, endpoint: dict, pid: int, ifname: str) -> None:
        """The endpoint's interface, `ifname`, in the network namespace of `pid`; the
        endpoint learns its host end's name and its MAC address."""
        from berth.network import bridge as br

        cid = endpoint["Owner"].split()[0]
        endpoint["Veth"], endpoint["MacAddress"] = br.plug(
            pid, endpoint["Bridge"], ifname, endpoint["IPAddress"], endpoint["IPPrefixLen"],
            endpoint["Gateway"] if endpoint["DefaultRoute"] else None, cid, endpoint["Network"])
        self.store.update_endpoint(endpoint["NetworkID"], cid, {
            "Veth": endpoint["Veth"], "MacAddress": endpoint["MacAddress"]})

    def publish(self, endpoint: dict, specs) -> list:
        """DNAT `specs` (ports.PortSpec) to the endpoint; returns them with host ports
        chosen. The endpoint remembers them for leave()."""
        from berth.network import firewall
        from berth.network.ports import Reservations

        if not specs:
            return []
        reservations = Reservations(self.host_dir)
        owner = self._port_owner(endpoint)

        def reclaimed(text: str, proto: str, port: int, host_ip: str) -> None:
            # a holder that died unreleased left its DNAT element in its network's table
            firewall.unpublish(text.split("\n")[1], [(host_ip, port, 0, proto)], "")
        done = reservations.reserve(list(specs), owner,
                                    lambda text: owner_alive(text.split("\n")[-1]), reclaimed)
        rules = [(s.host_ip, s.host_port, s.container_port, s.proto) for s in done]
        try:
            firewall.publish(endpoint["Bridge"], rules, endpoint["IPAddress"])
        except BaseException:
            reservations.release(done, owner)
            raise
        endpoint["Ports"] = [list(r) for r in rules]
        self.store.update_endpoint(endpoint["NetworkID"], endpoint["Owner"].split()[0],
                                   {"Ports": endpoint["Ports"]})
        return done

    def _port_owner(self, endpoint: dict) -> str:
        return f"{self.root}\n{endpoint['Bridge']}\n{endpoint['Owner']}"

    def leave(self, cid: str, endpoint: dict, delete_link: bool = True) -> None:
        """Undo join, plug and publish; safe to repeat, and from any process.

        `delete_link` False leaves the veth pair to the kernel, which removes it with the
        container's network namespace, off the caller's path (a synchronous delete waits
        ~20 ms for RCU); only right for a namespace that nothing else keeps alive.
        """
        try:
            record = self.store.read(endpoint["NetworkID"])
        except NotFound:
            record = None
        self._release(record, cid, endpoint, delete_link)

    def _release(self, record: dict | None, cid: str, endpoint: dict,
                 delete_link: bool = True) -> None:
        from berth.network import bridge as br
        from berth.network import firewall
        from berth.network.ports import PortSpec, Reservations

        if endpoint.get("Ports"):
            # only the ports still reserved for this endpoint: a stale reservation may have
            # been taken over since, and its map element now belongs to another container
            reservations = Reservations(self.host_dir)
            owner = self._port_owner(endpoint)
            with reservations.lock():
                held = reservations.held_by([PortSpec(c, p, h, hp)
                                             for h, hp, c, p in endpoint["Ports"]], owner)
                firewall.unpublish(endpoint["Bridge"], [(s.host_ip, s.host_port,
                                                         s.container_port, s.proto)
                                                        for s in held], endpoint["IPAddress"])
                reservations.release(held, owner)
        if endpoint.get("Veth") and delete_link:
            try:
                br.delete(endpoint["Veth"])
            except Exception:  # noqa: BLE001 - the namespace's end goes with it anyway
                pass
        nid = endpoint.get("NetworkID")
        if record is None or not nid:
            return
        self.store.remove_endpoint(nid, cid, endpoint.get("EndpointID"))
        if endpoint.get("IPAddress") and endpoint.get("Owner"):
            subnet, gateway = subnet_of(record)
            ipam.Addresses(self.store.dir(nid), subnet, gateway).release(
                endpoint["IPAddress"], endpoint["Owner"])


def _crc(text: str) -> int:
    from zlib import crc32

    return crc32(text.encode())


def _check_bridge_name(name: str) -> None:
    if not 0 < len(name) <= 15 or not all(c.isalnum() or c in "-_." for c in name) \
            or not name[0].isalpha():
        raise InvalidArgument(f"invalid bridge name {name!r}: up to 15 letters, digits, '-', "
                              "'_' or '.', starting with a letter")
