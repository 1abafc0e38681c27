"""The engine's hooks: a container's networks brought up, shown and released.

The container engine calls these with its Docker-shaped records (container.json): which
networks a container joins is its NetworkSettings.Networks, what it publishes its
HostConfig.PortBindings and PublishAllPorts. What a start made (the endpoints, with all a
release needs) is kept under record["Berth"]["Endpoints"], so any process can undo it.

    up(networks, record, pid, joined, published)   the on_pid hook of a start
    down(networks, cid, endpoints, delete_links)   undo, step by step
    running_update / stopped_update                the record as Docker shows it then
    connect / disconnect                           network connect/disconnect on a record
"""

from __future__ import annotations

from berth.errors import BerthError, Conflict, InvalidArgument
from berth.network import settings as netset
from berth.trace import trace


def wanted(record: dict) -> bool:
    """Whether a start must join networks: not with none, host or container:X."""
    mode = record["HostConfig"].get("NetworkMode") or ""
    return not mode.startswith("container:") and any(
        n not in ("host", "none") for n in record["NetworkSettings"].get("Networks") or ())


def up(networks, record: dict, pid: int, joined: list, published: list) -> None:
    """Join the container's networks, plug its interfaces, publish its ports and write its
    addresses into its /etc/hosts -- called once its namespaces exist and before its
    command may run. Each endpoint is added to `joined` as soon as it exists, so the
    caller can undo a start that fails half-way."""
    from berth.network.service import owner_alive, owner_of

    trace("network: up")
    owner = owner_of(record["Id"], pid)
    try:
        _up(networks, record, pid, owner, joined, published)
    except BerthError:
        # the container may have died in its own set-up (a bad -w, an rlimit): then its
        # error, which the runtime reports next, says why, and ours (no such process) would
        # only hide it. A process that is exiting has lost its namespaces a moment before
        # it shows as dead: give it that moment.
        import time

        deadline = time.monotonic() + 1.0
        while owner_alive(owner) and time.monotonic() < deadline:
            time.sleep(0.005)
        if owner_alive(owner):
            raise
        trace("network: the container is gone")
    trace("network: plugged")


def _up(networks, record: dict, pid: int, owner: str, joined: list, published: list) -> None:
    cid = record["Id"]
    name = record["Name"].lstrip("/")
    host_config = record["HostConfig"]
    last = record["Berth"].get("LastAddresses") or {}
    for net_name, entry in (record["NetworkSettings"].get("Networks") or {}).items():
        if net_name in ("host", "none"):
            continue
        network = networks.get(entry.get("NetworkID") or net_name)
        first = not joined
        endpoint = networks.join(network, cid, name, owner, aliases=entry.get("Aliases") or (),
                                 ip=(entry.get("IPAMConfig") or {}).get("IPv4Address"),
                                 prefer=last.get(network["Id"]),
                                 dns=host_config.get("Dns") or (), default_route=first)
        joined.append(endpoint)
        endpoint["IfName"] = f"eth{len(joined) - 1}"
        networks.plug(endpoint, pid, endpoint["IfName"])
        if first and not network["Internal"]:  # Docker publishes on the gateway network
            specs = netset.port_specs(host_config, record["Config"].get("ExposedPorts"))
            published.extend(networks.publish(endpoint, specs))
    if joined:
        gateway = next((e["Gateway"] for e in joined if e["DefaultRoute"]), None)
        _write(record["HostsPath"], netset.hosts_text(
            netset.HOSTS_BASE, host_config.get("ExtraHosts") or (), gateway,
            [(joined[0]["IPAddress"], record["Config"]["Hostname"])]))


def down(networks, cid: str, endpoints, delete_links: bool = True) -> None:
    """Release endpoints; each on its own, so one failure does not keep the rest (an
    address, a port, a rule) held."""
    for endpoint in endpoints or ():
        try:
            networks.leave(cid, endpoint, delete_links)
        except (BerthError, OSError) as exc:
            trace(f"network: release failed: {exc}")


def running_update(endpoints: list, published: list, pid: int):
    """The record update of a start: NetworkSettings with addresses and ports."""
    def update(record: dict) -> None:
        exposed = record["Config"].get("ExposedPorts")
        record["NetworkSettings"] = netset.running_settings(
            record["NetworkSettings"], endpoints, netset.ports_settings(exposed, published), pid,
            record["Name"].lstrip("/"), record["Id"])
        record["Berth"]["Endpoints"] = endpoints
    return update


def stopped_update(endpoints: list):
    """The record update once the endpoints are released: no addresses, the last ones
    remembered, so a restart gets the same address back when it is still free."""
    def update(record: dict) -> None:
        record["NetworkSettings"] = netset.stopped_settings(record["NetworkSettings"])
        record["Berth"]["LastAddresses"] = {e["NetworkID"]: e["IPAddress"] for e in endpoints}
        record["Berth"].pop("Endpoints", None)
    return update


def connect(networks, record: dict, network: dict, aliases=(), ip: str | None = None,
            pid: int | None = None) -> None:
    """Add `network` to the record; with the PID 1 of a running container, also its
    interface right away (eth1, eth2...). The caller holds the record's lock and writes it."""
    from berth.network.service import owner_of

    mode = record["HostConfig"].get("NetworkMode") or "bridge"
    if network["Name"] in ("host", "none") or mode in ("host", "none") or \
            mode.startswith("container:"):
        raise Conflict("container sharing network namespace with another container or host "
                       "cannot be connected to any other network")
    if (aliases or ip) and network["Name"] == "bridge":
        raise InvalidArgument("network-scoped aliases and IP addresses are supported only on "
                              "user defined networks")
    name = record["Name"].lstrip("/")
    settings = record["NetworkSettings"].setdefault("Networks", {})
    if network["Name"] in settings:
        raise Conflict(f"endpoint with name {name} already exists in network {network['Name']}")
    settings[network["Name"]] = netset.endpoint_settings(network["Id"], aliases, ip)
    if pid is None:
        return  # joined on its next start
    cid = record["Id"]
    endpoints = record["Berth"].get("Endpoints") or []
    endpoint = networks.join(network, cid, name, owner_of(cid, pid), aliases=aliases, ip=ip,
                             dns=record["HostConfig"].get("Dns") or (),
                             default_route=not any(e["DefaultRoute"] for e in endpoints))
    used = {e.get("IfName") for e in endpoints}
    endpoint["IfName"] = next(f"eth{i}" for i in range(len(used) + 1) if f"eth{i}" not in used)
    try:
        networks.plug(endpoint, pid, endpoint["IfName"])
    except BaseException:
        networks.leave(cid, endpoint)
        raise
    endpoints = endpoints + [endpoint]
    record["NetworkSettings"] = netset.running_settings(
        record["NetworkSettings"], endpoints, record["NetworkSettings"].get("Ports") or {}, pid,
        name, cid)
    record["Berth"]["Endpoints"] = endpoints


def disconnect(networks, record: dict, network: dict) -> None:
    """Take `network` off the record, and its interface out of a running container."""
    settings = record["NetworkSettings"].get("Networks") or {}
    if network["Name"] not in settings:
        raise Conflict(f"container {record['Id'][:12]} is not connected to network "
                       f"{network['Name']}")
    if network["Name"] in ("host", "none"):
        raise Conflict(f"container cannot be disconnected from the {network['Name']} network")
    endpoints = record["Berth"].get("Endpoints") or []
    for endpoint in [e for e in endpoints if e["NetworkID"] == network["Id"]]:
        networks.leave(record["Id"], endpoint)  # deleting the host end takes the inner one
        endpoints.remove(endpoint)
        if endpoint.get("Ports"):
            record["NetworkSettings"]["Ports"] = {}
    del settings[network["Name"]]
    if network["Name"] == "bridge":
        record["NetworkSettings"].update(EndpointID="", Gateway="", IPAddress="", IPPrefixLen=0,
                                         MacAddress="")
    if endpoints:
        record["Berth"]["Endpoints"] = endpoints
    else:
        record["Berth"].pop("Endpoints", None)


def _write(path: str, text: str) -> None:
    # in place, not renamed: the file is bind-mounted into the container by inode
    with open(path, "w") as f:
        f.write(text)
