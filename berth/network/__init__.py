"""Networks: Docker's bridge networks, for berth's containers.

    service    the Networks service: create, ls, inspect, rm, prune; join/plug/publish/leave
    endpoints  the engine's hooks: a container's networks brought up, shown, released
    host       a network's host side: subnet claim, bridge, firewall table, DNS server
    ipam       subnets for networks and addresses for endpoints, persisted
    bridge     the bridge and each endpoint's veth pair (CNI bridge plugin, iproute2)
    firewall   one nftables table per network: NAT, published ports, isolation
    dns        the embedded DNS of user-defined networks
    ports      -p/--expose parsing and host-wide port reservations
    settings   NetworkSettings, /etc/hosts and resolv.conf as Docker makes them (pure)
    store      the network records on disk

Every network has predefined company, as in Docker: `bridge` (the default: berth0 on
172.31.0.0/16 for the default root), `host` and `none`. A network's host side is made with
the network (`bridge`: on first use) and checked on every join with one stat(2), so a
reboot, or a `network prune` that took an unused default bridge down, costs the next start
a few milliseconds and nothing else.

This package's own import is free: `from berth.network import Networks` loads the service
on first use (PEP 562), so the CLI's run path (which needs only `ports` for -p) does not.
"""

from __future__ import annotations

_SERVICE = ("Networks", "PREDEFINED", "owner_of", "owner_alive")


def __getattr__(name: str):
    if name in _SERVICE:
        from berth.network import service

        return getattr(service, name)
    raise AttributeError(f"module 'berth.network' has no attribute {name!r}")
