"""Interfaces: a network's bridge, and a veth pair per endpoint.

Each endpoint's veth pair comes from the CNI bridge plugin of Debian's
containernetworking-plugins (/usr/lib/cni/bridge, with the `static` IPAM plugin, since
addresses are ours: ipam.py): the plugin makes the pair with the container's end directly
inside its network namespace, puts the host end on the bridge with hairpin mode, and adds
the address and routes. The bridge itself, and every removal, is one `ip` (iproute2) call.

Why the CNI plugins and not pyroute2, measured here: pyroute2's package imports all of
itself (~140 ms, ~22 MB of RSS) whatever part is used, and every monitor -- or the hub,
whose memory is counted against every container -- would carry that; an ADD through the
plugin costs ~10-15 ms (two small static Go programs), about what the kernel's veth
creation costs anyway, and leaves nothing resident. A start pays it only once its
namespaces exist, while the container's own set-up runs alongside.
"""

from __future__ import annotations

import json
import os

from berth.errors import FailedPrecondition, Unavailable

SYS_NET = "/sys/class/net"
CNI_PATH = "/usr/lib/cni"  # BERTH_CNI_PATH overrides it


def exists(name: str) -> bool:
    return os.path.exists(os.path.join(SYS_NET, name))


def ensure_bridge(name: str, gateway: str, prefixlen: int) -> None:
    """The bridge `name`, up, with the gateway address; made if missing. Idempotent.

    Its MAC address is fixed at creation: a bridge otherwise takes the lowest MAC of its
    ports, which changes as containers come and go and confuses the containers' ARP caches.
    """
    commands = []
    if not exists(name):
        commands.append(f"link add name {name} address {random_mac()} type bridge")
    commands += [f"address replace {gateway}/{prefixlen} dev {name}", f"link set {name} up"]
    _ip(commands, f"cannot set up bridge {name}")
    # packets DNATed from the host's 127.0.0.1 keep that source until they are masqueraded
    # on the way out of this bridge; the kernel drops them as martians unless route_localnet
    # is set here. Only on this bridge, never host-wide; firewall.py drops packets from the
    # bridge towards 127.0.0.0/8, the hole route_localnet would otherwise open (CVE-2020-8558)
    _write(f"/proc/sys/net/ipv4/conf/{name}/route_localnet", "1")


def delete(name: str) -> None:
    """Remove a link (deleting one end of a veth pair removes both); gone already is fine."""
    if exists(name):
        proc = _run(["ip", "link", "delete", name])
        if proc.returncode != 0 and exists(name):
            raise Unavailable(f"cannot remove interface {name}: {_first_line(proc.stderr)}")


def plug(pid: int, bridge: str, ifname: str, address: str, prefixlen: int,
         gateway: str | None, container_id: str, network: str) -> tuple[str, str]:
    """A veth pair: `ifname` with `address` in the network namespace of `pid` (and the
    default route through `gateway`, if given), its peer on `bridge`. Returns (the host
    end's name, the container end's MAC address). On failure nothing is left."""
    config = {
        "cniVersion": "1.0.0", "name": network, "type": "bridge", "bridge": bridge,
        "isGateway": False,  # the bridge's address and the host's forwarding are ours
        "ipMasq": False,  # and so is NAT (firewall.py)
        "hairpinMode": True,  # a container reaching its own published port comes back
        "ipam": {"type": "static",
                 "addresses": [{"address": f"{address}/{prefixlen}"}],
                 "routes": [{"dst": "0.0.0.0/0", "gw": gateway}] if gateway else []},
    }
    cni = os.environ.get("BERTH_CNI_PATH") or CNI_PATH
    env = dict(_ENV, CNI_COMMAND="ADD", CNI_CONTAINERID=container_id, CNI_IFNAME=ifname,
               CNI_NETNS=f"/proc/{pid}/ns/net", CNI_PATH=cni)
    proc = _run([os.path.join(cni, "bridge")], json.dumps(config).encode(), env)
    try:
        result = json.loads(proc.stdout or b"{}")
    except ValueError:
        result = {}
    host, mac = "", ""
    for iface in result.get("interfaces") or ():
        if iface.get("sandbox"):
            mac = iface.get("mac", "")
        elif iface.get("name") != bridge:
            host = iface.get("name", "")
    if proc.returncode != 0 or not host:
        if host:
            delete(host)
        reason = result.get("msg") or _first_line(proc.stderr) or f"exit status {proc.returncode}"
        raise Unavailable(f"cannot create the container's interface on {bridge}: {reason}")
    return host, mac


def random_mac() -> str:
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFE) | 0x02  # unicast, locally administered
    return ":".join(f"{b:02x}" for b in raw)


def ensure_forwarding() -> None:
    """Outbound NAT needs the host to route between the bridge and its uplink; Docker turns
    net.ipv4.ip_forward on for the same reason. Only switched on, never off: other
    networks (and other engines) may rely on it."""
    try:
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            if f.read().strip() == "1":
                return
    except OSError:
        return
    _write("/proc/sys/net/ipv4/ip_forward", "1")


def _ip(commands: list[str], what: str) -> None:
    proc = _run(["ip", "-batch", "-"], ("\n".join(commands) + "\n").encode())
    if proc.returncode != 0:
        raise Unavailable(f"{what}: {_first_line(proc.stderr)}")


def _run(argv: list[str], stdin: bytes | None = None, env: dict | None = None):
    import subprocess

    try:
        return subprocess.run(argv, input=stdin, capture_output=True, env=env or _ENV,
                              stdin=None if stdin is not None else subprocess.DEVNULL,
                              timeout=60)
    except FileNotFoundError:
        raise FailedPrecondition(f"{argv[0]} not found: berth's bridge networks need iproute2 "
                                 "and containernetworking-plugins (apt-get install iproute2 "
                                 "containernetworking-plugins)") from None


def _first_line(raw: bytes) -> str:
    lines = raw.decode(errors="replace").strip().splitlines()
    return lines[0] if lines else ""


def _write(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        raise FailedPrecondition(f"cannot write {path}: {exc.strerror}") from None


# a fixed, small environment: the caller's locale and CNI_* must not leak into the tools
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
