"""Firewall rules of a network: outbound NAT, published ports, isolation, --internal.

Each network gets one nftables table of its own, named after its bridge (`table ip
berth0`), made and removed whole in one atomic `nft -f` transaction: removing a network
can never leave a rule behind, and no rule of the host's (or of another engine's) is
touched. Base chains of different tables all see every packet and a drop in any of them
is final, so each table only has to decide about its own bridge:

* postrouting: masquerade what leaves the subnet for elsewhere (not on --internal);
  masquerade what enters the bridge from 127.0.0.0/8 (published ports reached at the
  host's 127.0.0.1) and DNATed traffic from the subnet itself (hairpin), so replies come
  back through the host's conntrack.
* forward: into the bridge only replies, DNATed (published) connections and traffic from
  the bridge itself. That isolates networks from each other and from the outside;
  --internal networks also drop everything leaving the bridge.
* prerouting (raw): packets from the bridge to 127.0.0.0/8 are dropped: route_localnet on
  the bridge (see bridge.py) must not let containers reach the host's loopback services.
* published ports: DNAT in prerouting (from outside and from containers) and in output
  (from the host itself, 127.0.0.1 included), through maps keyed by (host address, port)
  or port alone (0.0.0.0). A container's ports are map elements, added and deleted by
  key: no rule handles to remember, nothing to leak.

Why DNAT and route_localnet rather than a userland proxy per port (Docker's
docker-proxy): no process per published port, the container sees the client's real
address, and a start with -p costs one `nft` exec (~3 ms) instead of a fork.

Hosts whose iptables FORWARD chain drops by default (Docker installed, for one) would
drop our forwarded traffic in their chain whatever our table says, so there (and only
there) each bridge also gets two ACCEPT rules in that chain, removed with the network.
"""

from __future__ import annotations

import os

from berth.errors import FailedPrecondition, Unavailable

PROTOCOLS = ("tcp", "udp")


def table_script(bridge: str, subnet: str, internal: bool) -> str:
    """nft commands that (re)make the network's table atomically."""
    b = _quote(bridge)
    lines = [f"add table ip {bridge}", f"delete table ip {bridge}", f"table ip {bridge} {{"]
    for proto in PROTOCOLS:
        lines.append(f"  map {proto}_any {{ type inet_service : ipv4_addr . inet_service; }}")
        lines.append(f"  map {proto}_ip {{ type ipv4_addr . inet_service : "
                     "ipv4_addr . inet_service; }")
    lines.append("  chain ports {")
    for proto in PROTOCOLS:
        lines.append(f"    meta l4proto {proto} dnat ip to ip daddr . {proto} dport map "
                     f"@{proto}_ip")
        lines.append(f"    meta l4proto {proto} dnat ip to {proto} dport map @{proto}_any")
    lines.append("  }")
    lines += [
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        "    fib daddr type local jump ports",
        "  }",
        "  chain output {",
        "    type nat hook output priority -100; policy accept;",
        "    fib daddr type local jump ports",
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
    ]
    if not internal:
        lines.append(f"    ip saddr {subnet} oifname != {b} masquerade")
    lines += [
        f"    oifname {b} ip saddr 127.0.0.0/8 masquerade",
        f"    oifname {b} ct status dnat ip saddr {subnet} masquerade",
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
    ]
    if internal:
        lines += [f"    iifname {b} oifname != {b} drop",
                  f"    oifname {b} iifname != {b} drop"]
    else:
        lines += [f"    oifname {b} ct state established,related accept",
                  f"    oifname {b} ct status dnat accept",
                  f"    oifname {b} iifname != {b} drop"]
    lines += [
        "  }",
        "  chain guard {",
        "    type filter hook prerouting priority raw; policy accept;",
        f"    iifname {b} ip daddr 127.0.0.0/8 drop",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def delete_script(bridge: str) -> str:
    # `add` first: deleting a table that is not there would fail the whole transaction
    return f"add table ip {bridge}\ndelete table ip {bridge}\n"


def ports_script(bridge: str, bindings, container_ip: str, add: bool) -> str:
    """Map elements for `bindings` (host_ip, host_port, container_port, proto), added or
    deleted; 0.0.0.0 (or empty) means every local address."""
    lines = []
    for host_ip, host_port, container_port, proto in bindings:
        if host_ip in ("", "0.0.0.0"):
            key, name = f"{host_port}", f"{proto}_any"
        else:
            key, name = f"{host_ip} . {host_port}", f"{proto}_ip"
        if add:
            lines.append(f"add element ip {bridge} {name} {{ {key} : {container_ip} . "
                         f"{container_port} }}")
        else:
            lines.append(f"delete element ip {bridge} {name} {{ {key} }}")
    return "\n".join(lines) + "\n" if lines else ""


def create(bridge: str, subnet: str, internal: bool) -> None:
    nft(table_script(bridge, subnet, internal))
    for tool in _dropping_iptables():
        for rule in _compat_rules(bridge, internal):
            if _run([tool, "-C", "FORWARD", *rule]).returncode != 0:
                _run([tool, "-I", "FORWARD", *rule])


def remove(bridge: str) -> None:
    nft(delete_script(bridge))
    for tool in _iptables_tools():
        for internal in (False, True):
            for rule in _compat_rules(bridge, internal):
                while _run([tool, "-D", "FORWARD", *rule]).returncode == 0:
                    pass


def exists(bridge: str) -> bool:
    return _run(["nft", "list", "table", "ip", bridge]).returncode == 0


def publish(bridge: str, bindings, container_ip: str) -> None:
    script = ports_script(bridge, bindings, container_ip, add=True)
    if script:
        nft(script)


def unpublish(bridge: str, bindings, container_ip: str) -> None:
    """Delete the elements one by one: one already gone must not keep the others."""
    for binding in bindings:
        script = ports_script(bridge, [binding], container_ip, add=False)
        try:
            nft(script)
        except Unavailable:
            pass


def nft(script: str) -> None:
    proc = _run(["nft", "-f", "-"], script)
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip().splitlines()
        raise Unavailable("nft failed: " + (message[0] if message else
                                            f"exit status {proc.returncode}"))


def _compat_rules(bridge: str, internal: bool) -> list[list[str]]:
    comment = ["-m", "comment", "--comment", f"berth {bridge}"]
    if internal:
        return [["-i", bridge, "-o", bridge, *comment, "-j", "ACCEPT"]]
    return [["-i", bridge, *comment, "-j", "ACCEPT"], ["-o", bridge, *comment, "-j", "ACCEPT"]]


def _iptables_tools() -> list[str]:
    import shutil

    return [t for t in ("iptables-nft", "iptables-legacy") if shutil.which(t)] or \
        [t for t in ("iptables",) if shutil.which(t)]


def _dropping_iptables() -> list[str]:
    """The iptables backends whose FORWARD chain drops by default on this host."""
    out = []
    for tool in _iptables_tools():
        proc = _run([tool, "-S", "FORWARD"])
        if proc.returncode == 0 and b"-P FORWARD DROP" in proc.stdout:
            out.append(tool)
    return out


def _run(argv: list[str], stdin: str | None = None):
    import subprocess

    try:
        return subprocess.run(argv, input=stdin.encode() if stdin is not None else None,
                              stdin=None if stdin is not None else subprocess.DEVNULL,
                              capture_output=True, env=_ENV, timeout=60)
    except FileNotFoundError:
        raise FailedPrecondition(f"{argv[0]} not found: install nftables (apt-get install "
                                 "nftables iptables)") from None


def _quote(name: str) -> str:
    return f'"{name}"'


# a fixed, small environment: the caller's locale must not change nft's parsing or messages
_ENV = {"PATH": os.environ.get("PATH") or "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
