"""A network's host side: its subnet claim, bridge, firewall table and DNS server.

Made when the network is (the default bridge: on first use), checked on every join with
one stat(2), torn down with the network. Claims are host-wide (ipam.SubnetClaims), so each
claim names its root, network and bridge, and any root can tell a claim whose network is
gone -- and tear down what it left -- the next time it claims a subnet.

Locks, outermost first: a root's network lock (store), a network's own lock (joins share
it, removal takes it whole), then the host-wide claims lock. Never the other way round:
under the claims lock another network's lock is only ever tried, never waited for.
"""

from __future__ import annotations

import os

from berth.network import ipam

BRIDGE_NAME_OPT = "com.docker.network.bridge.name"


def bridge_of(record: dict) -> str:
    return record["Options"][BRIDGE_NAME_OPT]


def subnet_of(record: dict) -> tuple[str, str]:
    config = record["IPAM"]["Config"][0]
    return config["Subnet"], config["Gateway"]


class HostSide:
    def __init__(self, root: str, host_dir: str = ipam.HOST_DIR) -> None:
        self.root = root
        self.claims = ipam.SubnetClaims(host_dir)

    def claim_text(self, nid: str, bridge: str) -> str:
        return f"{self.root}\n{nid}\n{bridge}"

    def claim(self, subnet: tuple[int, int] | None, nid: str, bridge: str) -> tuple[int, int]:
        """Claim `subnet` (or a free pool subnet) for network `nid`. Call under
        self.claims.lock(), and write the network's record before leaving it: a claim
        without its record looks stale to other roots."""
        return self.claims.claim(subnet, self.claim_text(nid, bridge), stale=self.stale)

    def stale(self, text: str) -> bool:
        """Whether a claim is stale: its network is gone (its root deleted without `network
        rm`). Its host side is torn down here, so such a leak heals on the next claim.

        Idle default bridges of other roots whose hub is gone (a test root, a root nobody
        uses) are taken down too -- not their claim: the bridge comes back on that root's
        next start, as after a reboot."""
        try:
            root, nid, bridge = text.split("\n")
        except ValueError:
            return False
        path = os.path.join(root, "networks", nid)
        if not os.path.exists(os.path.join(path, "network.json")):
            self.teardown(bridge, user_defined=True)
            return True
        if root != self.root and _is_default_bridge(path) and _link_exists(bridge) \
                and not _hub_runs(root):
            self._take_down_if_idle(path, bridge)
        return False

    def _take_down_if_idle(self, path: str, bridge: str) -> None:
        import fcntl

        from berth.network.service import owner_alive
        from berth.network.store import NetworkStore

        try:
            fd = os.open(os.path.join(path, "lock"), os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return
        try:
            # never wait: its owner may hold it while waiting for the claims lock we hold
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return
        try:
            other = NetworkStore(os.path.dirname(os.path.dirname(path)))
            if not any(owner_alive(ep.get("Owner", ""))
                       for ep in other.endpoints(os.path.basename(path)).values()):
                self.teardown(bridge, user_defined=False)
        finally:
            os.close(fd)

    def ensure(self, record: dict) -> None:
        """The network's bridge, firewall table and resolver exist (after a reboot or a
        prune they may not); the common case is one stat(2) and, on user networks, one
        read of the resolver's pid file."""
        from berth.network import dns

        bridge = bridge_of(record)
        user = record["Name"] != "bridge"
        if _link_exists(bridge) and (not user or dns.running(bridge)):
            return
        with self.claims.lock():
            sub = ipam.parse_subnet(subnet_of(record)[0])
            mine = self.claim_text(record["Id"], bridge)
            if self.claims.all().get(sub) != mine:
                self.claims.claim(sub, mine, stale=self.stale)  # /run was emptied
            self.setup(record)

    def setup(self, record: dict) -> None:
        from berth.network import bridge as br
        from berth.network import dns, firewall

        bridge = bridge_of(record)
        subnet, gateway = subnet_of(record)
        if not br.exists(bridge):
            # the table first: a bridge that exists is the sign the host side is complete
            firewall.create(bridge, subnet, record["Internal"])
            br.ensure_bridge(bridge, gateway, ipam.parse_subnet(subnet)[1])
            if not record["Internal"]:
                br.ensure_forwarding()
        if record["Name"] != "bridge":
            dns.start(self.root, record["Id"], bridge)

    def teardown(self, bridge: str, user_defined: bool) -> None:
        from berth.network import bridge as br
        from berth.network import dns, firewall

        if user_defined:
            dns.stop(bridge)
        br.delete(bridge)
        firewall.remove(bridge)


def _is_default_bridge(path: str) -> bool:
    import json

    try:
        with open(os.path.join(path, "network.json"), "rb") as f:
            return json.loads(f.read()).get("Name") == "bridge"
    except (OSError, ValueError):
        return False


def _link_exists(name: str) -> bool:
    return os.path.exists(os.path.join("/sys/class/net", name))


def _hub_runs(root: str) -> bool:
    try:
        with open(os.path.join(root, "run", "hub.pid")) as f:
            pid = int(f.read())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"berth.container.hub" in f.read()
    except (OSError, ValueError):
        return False
