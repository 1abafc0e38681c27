"""The container's view of its networks, as Docker shows and writes it (pure functions).

NetworkSettings of `docker inspect`, the /etc/hosts and /etc/resolv.conf a container gets,
and the port specs its HostConfig asks for. No I/O: the engine passes what it read.
"""

from __future__ import annotations

from berth.network.ports import PortSpec

HOSTS_BASE = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
              "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n"
              "ff02::2\tip6-allrouters\n")
DEFAULT_DNS = ("8.8.8.8", "8.8.4.4")  # Docker's fallback when the host has no usable server


def endpoint_settings(network_id: str, aliases=(), ip: str | None = None) -> dict:
    """A Networks entry of a container that is not running (yet): no address."""
    return {"IPAMConfig": {"IPv4Address": ip} if ip else None, "Links": None,
            "Aliases": list(aliases) or None, "MacAddress": "", "NetworkID": network_id,
            "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
            "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
            "DriverOpts": None, "DNSNames": None}


def empty_settings(networks: dict) -> dict:
    return {"Bridge": "", "SandboxID": "", "SandboxKey": "", "HairpinMode": False,
            "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0, "Ports": {},
            "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None, "EndpointID": "",
            "Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "IPAddress": "",
            "IPPrefixLen": 0, "IPv6Gateway": "", "MacAddress": "", "Networks": networks}


def running_settings(settings: dict, endpoints: list[dict], ports: dict, pid: int,
                     name: str, cid: str) -> dict:
    """NetworkSettings of a started container: each network's entry gets its address; the
    top-level fields are the default bridge's, as in Docker (empty on other networks)."""
    out = dict(settings)
    networks = {k: dict(v) for k, v in (settings.get("Networks") or {}).items()}
    for ep in endpoints:
        entry = networks.setdefault(ep["Network"], endpoint_settings(ep["NetworkID"]))
        entry.update(EndpointID=ep["EndpointID"], Gateway=ep["Gateway"],
                     IPAddress=ep["IPAddress"], IPPrefixLen=ep["IPPrefixLen"],
                     MacAddress=ep["MacAddress"], NetworkID=ep["NetworkID"],
                     DNSNames=[name, cid[:12], *ep.get("Aliases", ())]
                     if ep["Network"] != "bridge" else None)
        if ep["Network"] == "bridge":
            out.update(EndpointID=ep["EndpointID"], Gateway=ep["Gateway"],
                       IPAddress=ep["IPAddress"], IPPrefixLen=ep["IPPrefixLen"],
                       MacAddress=ep["MacAddress"])
    out.update(Networks=networks, Ports=ports, SandboxKey=f"/proc/{pid}/ns/net" if pid else "",
               SandboxID=cid if pid else "")
    return out


def stopped_settings(settings: dict) -> dict:
    """What a stopped container shows: its networks, with no address on any of them."""
    networks = {}
    for name, entry in (settings.get("Networks") or {}).items():
        networks[name] = dict(entry, EndpointID="", Gateway="", IPAddress="", IPPrefixLen=0,
                              MacAddress="", DNSNames=None)
    return empty_settings(networks)


def port_specs(host_config: dict, exposed: dict | None) -> list[PortSpec]:
    """What to publish: the PortBindings, and with -P every other exposed port."""
    out = []
    bindings = host_config.get("PortBindings") or {}
    for key, entries in bindings.items():
        port, _, proto = key.partition("/")
        for b in entries or [{}]:
            out.append(PortSpec(int(port), proto or "tcp", b.get("HostIp") or "",
                                int(b.get("HostPort") or 0)))
    if host_config.get("PublishAllPorts"):
        for key in exposed or {}:
            if key not in bindings:
                port, _, proto = key.partition("/")
                out.append(PortSpec(int(port), proto or "tcp", "", 0))
    return out


def ports_settings(exposed: dict | None, published: list[PortSpec]) -> dict:
    """NetworkSettings.Ports: each exposed port -> its host bindings, or None."""
    out: dict = {key: None for key in exposed or {}}
    for spec in published:
        key = f"{spec.container_port}/{spec.proto}"
        out[key] = (out.get(key) or []) + [{"HostIp": spec.host_ip or "0.0.0.0",
                                           "HostPort": str(spec.host_port)}]
    return out


def port_bindings(specs) -> dict:
    """HostConfig.PortBindings from -p specs (HostPort "" for a port chosen at start)."""
    out: dict = {}
    for spec in specs:
        out.setdefault(f"{spec.container_port}/{spec.proto}", []).append(
            {"HostIp": spec.host_ip, "HostPort": str(spec.host_port) if spec.host_port else ""})
    return out


def hosts_text(base: str, extra_hosts, gateway: str | None, own: list[tuple[str, str]]) -> str:
    """/etc/hosts: the base, --add-host entries (host-gateway is the network's gateway),
    then the container's own addresses with its hostname, as Docker writes them."""
    out = base if base.endswith("\n") or not base else base + "\n"
    for item in extra_hosts:
        name, _, address = item.partition(":")
        if address == "host-gateway":
            if not gateway:
                continue
            address = gateway
        out += f"{address}\t{name}\n"
    for address, names in own:
        out += f"{address}\t{names}\n"
    return out


def resolv_text(host_text: str, *, nameservers=(), search=(), options=(),
                keep_loopback: bool = False, embedded: str | None = None) -> str:
    """The container's resolv.conf.

    Default bridge (Docker's rule): the host's servers minus loopback ones a container
    cannot reach, or 8.8.8.8/8.8.4.4 if none is left; --dns replaces them. User-defined
    networks: only the network's embedded DNS (`embedded`), with ndots:0 so single names
    are asked as they are; --dns servers become its upstreams instead.
    """
    servers, searches, opts = [], [], []
    for line in host_text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith(("#", ";")):
            continue
        if fields[0] == "nameserver" and len(fields) > 1:
            if keep_loopback or not (fields[1].startswith("127.") or fields[1] == "::1"):
                servers.append(fields[1])
        elif fields[0] in ("search", "domain"):
            searches = fields[1:]
        elif fields[0] == "options":
            opts += fields[1:]
    if embedded:
        servers = [embedded]
        opts = list(options) or [o for o in opts if not o.startswith("ndots:")]
        if not any(o.startswith("ndots:") for o in opts):
            opts.append("ndots:0")
    else:
        servers = list(nameservers) or servers or list(DEFAULT_DNS)
        opts = list(options) or opts
    searches = list(search) or searches
    out = "".join(f"nameserver {s}\n" for s in servers)
    if searches:
        out += "search " + " ".join(searches) + "\n"
    if opts:
        out += "options " + " ".join(opts) + "\n"
    return out
