"""A container's side of networking: which network it joins, its resolv.conf and hosts,
joining another container's namespace, connect/disconnect, and giving it all back. The
network layer (berth.network) does the work on records; this is the glue that knows
where a container's records and files live and whether it runs.
"""

from __future__ import annotations

from berth import errors
from berth.container import spec as specmod
from berth.container.store import ContainerStore
from berth.network import settings as netset
from berth.oci import runtime as rt


def resolv_conf(host_text: str, dns: tuple[str, ...] = (), search: tuple[str, ...] = (),
                options: tuple[str, ...] = (), host_network: bool = False) -> str:
    """The container's resolv.conf: the host's, minus loopback servers it cannot reach."""
    return netset.resolv_text(host_text, nameservers=dns, search=search, options=options,
                              keep_loopback=host_network)


class ContainerNetworking:
    """`get(ref)` and `running(record)` are the service's, so that a container whose
    monitor died counts as stopped here too."""

    def __init__(self, root: str, store: ContainerStore, get, running) -> None:
        self.root = root
        self.store = store
        self.get = get
        self.running = running

    def networks(self):
        from berth.network.service import Networks

        return Networks(self.root)

    def network_of(self, opts: specmod.RunOptions) -> tuple[dict | None, dict | None]:
        """(the network record the container joins, the container whose namespace it
        shares): both looked up at create, so a missing one fails `create`, as in Docker."""
        if opts.network.startswith("container:"):
            return None, self.get(opts.network.partition(":")[2])
        network = self.networks().get("bridge" if opts.network == "default" else opts.network)
        if opts.ip is not None:
            from berth.network import ipam

            subnet, gateway = network["IPAM"]["Config"][0]["Subnet"], \
                network["IPAM"]["Config"][0]["Gateway"]
            net, prefixlen = ipam.parse_subnet(subnet)
            if not ipam.usable(net, prefixlen, ipam.parse_ip(opts.ip)) or opts.ip == gateway:
                raise errors.InvalidArgument(f"no configured subnet or ip-range contain the IP "
                                             f"address {opts.ip}")
        return network, None

    def joined_namespace(self, record: dict, spec: rt.Spec) -> rt.Spec:
        """--network container:X: X's network namespace as it is now, and X's resolv.conf
        and hosts; X must run, as Docker requires."""
        mode = record["HostConfig"].get("NetworkMode") or ""
        if not mode.startswith("container:"):
            return spec
        from berth.oci.record import replace

        ref = mode.partition(":")[2]
        try:
            target = self.get(ref)
        except errors.NotFound:
            raise errors.NotFound(f"cannot join network of container {ref[:12]}: no such "
                                  "container") from None
        if not target["State"]["Running"] or not target["State"]["Pid"]:
            raise errors.Conflict(f"cannot join network of a non running container: {ref[:12]}")
        path = f"/proc/{target['State']['Pid']}/ns/net"
        with self.store.lock(target["Id"]):  # so X's stop knows its namespace is shared
            shared = self.store.read(target["Id"])
            joiners = shared["Berth"].setdefault("NetJoiners", [])
            if record["Id"] not in joiners:
                joiners.append(record["Id"])
                self.store.write(shared)
        for name, key in (("resolv.conf", "ResolvConfPath"), ("hosts", "HostsPath")):
            _copy_text(target.get(key) or "", record[key])
        namespaces = tuple(replace(ns, path=path) if ns.type == "network" else ns
                           for ns in spec.linux.namespaces)
        return replace(spec, linux=replace(spec.linux, namespaces=namespaces))

    def release(self, cid: str, record: dict | None = None, exited: bool = False):
        """The container stopped: give back its addresses, ports and interfaces. Returns
        the record update that shows it stopped (None: it held nothing).

        `exited`: its PID 1 has just been reaped, so its network namespace dies with it and
        takes the veth pairs along -- unless containers started with --network container:
        it still run in it; only then are the interfaces deleted here, as Docker does.
        """
        from berth.network import endpoints as netep

        if record is None:
            try:
                record = self.store.read(cid)
            except errors.NotFound:
                return None
        held = record.get("Berth", {}).get("Endpoints")
        if not held:
            return None
        shared = any(self._runs(j) for j in record["Berth"].get("NetJoiners") or ())
        netep.down(self.networks(), cid, held, delete_links=not exited or shared)
        return netep.stopped_update(held)

    def _runs(self, cid: str) -> bool:
        try:
            return self.running(self.store.read(cid))
        except errors.NotFound:
            return False

    def connect(self, ref: str, network_ref: str, aliases=(), ip: str | None = None) -> None:
        """network connect: a running container gets its interface now, a stopped one on
        its next start."""
        from berth.network import endpoints as netep

        networks = self.networks()
        network = networks.get(network_ref)
        cid = self.store.lookup(ref)
        running = self.running(self.store.read(cid))
        with self.store.lock(cid):
            record = self.store.read(cid)
            pid = record["State"]["Pid"] if running else None
            netep.connect(networks, record, network, aliases, ip, pid or None)
            self.store.write(record)

    def disconnect(self, ref: str, network_ref: str) -> None:
        from berth.network import endpoints as netep

        networks = self.networks()
        network = networks.get(network_ref)
        cid = self.store.lookup(ref)
        with self.store.lock(cid):
            record = self.store.read(cid)
            netep.disconnect(networks, record, network)
            self.store.write(record)


def write_resolv_and_hosts(paths: dict, opts: specmod.RunOptions, network: dict | None,
                           joined: dict | None) -> None:
    if joined is not None:  # --network container:X sees X's files, copied on each start
        for name in ("resolv.conf", "hosts"):
            _copy_text(joined.get("ResolvConfPath" if name == "resolv.conf" else
                                  "HostsPath") or "", paths[name])
        return
    host_net = opts.network == "host"
    try:
        with open("/etc/resolv.conf") as f:
            host_resolv = f.read()
    except OSError:
        host_resolv = ""
    user_net = network is not None and network["Driver"] == "bridge" and \
        network["Name"] != "bridge"
    gateway = network["IPAM"]["Config"][0]["Gateway"] \
        if network is not None and network["IPAM"]["Config"] else None
    _write(paths["resolv.conf"], netset.resolv_text(
        host_resolv, nameservers=opts.dns, search=opts.dns_search, options=opts.dns_options,
        keep_loopback=host_net, embedded=gateway if user_net else None))
    base = netset.HOSTS_BASE
    if host_net:
        try:
            with open("/etc/hosts") as f:
                base = f.read()
        except OSError:
            pass
    _write(paths["hosts"], netset.hosts_text(base, opts.extra_hosts, gateway, []))


def _copy_text(source: str, dest: str) -> None:
    try:
        with open(source) as f:
            text = f.read()
    except OSError:
        text = ""
    _write(dest, text)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
