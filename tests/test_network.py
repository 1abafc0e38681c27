"""Networking: the default bridge, user-defined networks with their DNS, published ports,
isolation, --internal, and that nothing berth adds to the host outlives what it belongs to.

Real containers on real bridges, veth pairs and nftables tables. Traffic goes only to
127.0.0.1 (and the 127/8 loopback net), the host's own address (published ports must answer
there) and addresses inside the networks these tests create. Every test runs on a root of
its own, and its teardown removes the root's containers, networks and default bridge and
checks that none of the root's interfaces, tables, resolvers or port reservations remain.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from berth.errors import AlreadyExists, InvalidArgument
from berth.network import firewall, ipam, ports, settings
from berth.network.dns import wire as dns

HOST_DIR = ipam.HOST_DIR


# --- what a root has on the host -------------------------------------------------------

def _records(root: str) -> list[dict]:
    out = []
    base = os.path.join(root, "networks")
    for nid in os.listdir(base) if os.path.isdir(base) else ():
        try:
            with open(os.path.join(base, nid, "network.json")) as f:
                out.append(json.load(f))
        except (OSError, ValueError):
            continue
    return out


def _bridges(root: str) -> set[str]:
    return {r["Options"]["com.docker.network.bridge.name"] for r in _records(root)
            if r["Driver"] == "bridge"}


def host_objects(root: str, bridges: set[str]) -> set[str]:
    """Everything on the host that belongs to `root`'s networks: bridges, their ports
    (veths), nftables tables, iptables rules, DNS servers, published-port reservations."""
    out = set()
    for link in os.listdir("/sys/class/net"):
        if link in bridges:
            out.add(f"bridge {link}")
        master = os.path.join("/sys/class/net", link, "master")
        if os.path.islink(master) and os.path.basename(os.readlink(master)) in bridges:
            out.add(f"veth {link}")
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    ruleset = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    for bridge in bridges:
        if f"table ip {bridge}\n" in tables + "\n":
            out.add(f"nft table {bridge}")
        if f'"berth {bridge}"' in ruleset:
            out.add(f"iptables rule for {bridge}")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"berth.network.dns.server" in argv and root.encode() in argv:
            out.add(f"dns server {pid}")
    held = os.path.join(HOST_DIR, "ports")
    for name in os.listdir(held) if os.path.isdir(held) else ():
        try:
            with open(os.path.join(held, name)) as f:
                if f.read().startswith(root + "\n"):
                    out.add(f"port {name}")
        except OSError:
            continue
    return out


def _wait_for(check, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


@pytest.fixture
def net(fresh_berth):
    """fresh_berth whose teardown also takes the root's networks down, then checks that
    nothing of the root's remains on the host."""
    yield fresh_berth
    root = os.path.abspath(fresh_berth.root)
    bridges = _bridges(root)
    ids = fresh_berth("ps", "-aq", "--no-trunc", check=False).stdout.decode().split()
    if ids:
        fresh_berth("rm", "-f", *ids, check=False)
    fresh_berth("network", "prune", "-f")
    left = _wait_for(lambda: not host_objects(root, bridges)) or host_objects(root, bridges)
    assert left is True, f"left on the host: {sorted(left)}"


def _inspect(berth, name: str) -> dict:
    return json.loads(berth.out("inspect", name))[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def _host_address() -> str | None:
    """The host's own IPv4 address on the interface of its default route."""
    out = subprocess.run(["ip", "-j", "route", "show", "default"], capture_output=True,
                         text=True).stdout
    routes = json.loads(out or "[]")
    if not routes:
        return None
    addrs = json.loads(subprocess.run(["ip", "-j", "-4", "addr", "show", "dev",
                                       routes[0]["dev"]], capture_output=True, text=True).stdout)
    for link in addrs:
        for a in link.get("addr_info", ()):
            return a["local"]
    return None


def _get(url: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


WEB = "mkdir -p /www && echo \"hello from $(hostname)\" > /www/index.html && exec httpd -f -p 80 -h /www"
# busybox wget's -T segfaults (1.35): `timeout` bounds it instead
FETCH = "(for i in $(seq 50); do timeout 3 wget -qO- {url} && exit 0; sleep 0.1; done; exit 1)"


# --- the default bridge ------------------------------------------------------------------

def test_default_run_gets_an_address_a_default_route_and_the_hosts_dns(net):
    out = net.out("run", "--rm", "busybox", "sh", "-c",
                  "ip -o -4 addr show eth0; ip route; cat /etc/resolv.conf /etc/hosts; hostname")
    bridge = json.loads(net.out("network", "inspect", "bridge"))[0]
    subnet = bridge["IPAM"]["Config"][0]["Subnet"]
    gateway = bridge["IPAM"]["Config"][0]["Gateway"]
    address = out.split("inet ", 1)[1].split("/")[0]
    assert ipam.contains(*ipam.parse_subnet(subnet), ipam.parse_ip(address))
    assert f"default via {gateway} dev eth0" in out
    host_servers = [s for s in ipam.host_nameservers() if not s.startswith("127.")]
    for server in host_servers or ["8.8.8.8"]:
        assert f"nameserver {server}" in out
    hostname = out.strip().splitlines()[-1]
    assert f"{address}\t{hostname}" in out


def test_network_none_has_only_loopback(net):
    assert net.out("run", "--rm", "--network", "none", "busybox", "ls",
                   "/sys/class/net").split() == ["lo"]
    record = _inspect(net, net.out("create", "--network", "none", "busybox").strip())
    assert list(record["NetworkSettings"]["Networks"]) == ["none"]
    assert record["HostConfig"]["NetworkMode"] == "none"


def test_inspect_shows_the_address_while_running_and_none_once_stopped(net):
    net("run", "-d", "--name", "cc", "busybox", "sleep", "60")
    settings_now = _inspect(net, "cc")["NetworkSettings"]
    entry = settings_now["Networks"]["bridge"]
    assert entry["IPAddress"] and entry["IPAddress"] == settings_now["IPAddress"]
    inside = net.out("exec", "cc", "cat", "/sys/class/net/eth0/address").strip()
    assert entry["MacAddress"] == inside
    assert entry["Gateway"] == settings_now["Gateway"] and entry["IPPrefixLen"] == 24
    assert entry["NetworkID"] == json.loads(net.out("network", "inspect", "bridge"))[0]["Id"]
    net("stop", "-t", "0", "cc")
    stopped = _inspect(net, "cc")["NetworkSettings"]
    assert stopped["Networks"]["bridge"]["IPAddress"] == "" and stopped["IPAddress"] == ""
    net("start", "cc")
    assert _inspect(net, "cc")["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]


# --- user-defined networks ---------------------------------------------------------------

def test_two_containers_on_a_user_network_reach_each_other_by_name_and_alias(net):
    net("network", "create", "app")
    net("run", "-d", "--name", "web", "--network", "app", "--network-alias", "www",
        "busybox", "sh", "-c", WEB)
    web_id = _inspect(net, "web")["Id"]
    out = net.out("run", "--rm", "--network", "app", "busybox", "sh", "-c",
                  FETCH.format(url="http://web/") + " && " + FETCH.format(url="http://www/")
                  + f" && nslookup {web_id[:12]} && cat /etc/resolv.conf")
    assert out.count(f"hello from {web_id[:12]}") == 2
    gateway = json.loads(net.out("network", "inspect", "app"))[0]["IPAM"]["Config"][0]["Gateway"]
    assert f"nameserver {gateway}" in out and "ndots:0" in out
    assert _inspect(net, "web")["NetworkSettings"]["Networks"]["app"]["IPAddress"] in out


def test_embedded_dns_forwards_other_names_to_the_containers_dns_servers(net):
    """An upstream of our own on 127.0.0.77: the resolver runs on the host, so it can ask
    a loopback server a container could never reach."""
    upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    upstream.bind(("127.0.0.77", 53))
    upstream.settimeout(20)

    def answer():
        while True:
            try:
                data, peer = upstream.recvfrom(512)
            except OSError:
                return
            parsed = dns.parse_query(data)
            found = ["10.9.8.7"] if parsed[3] == dns.QTYPE_A else []
            upstream.sendto(dns.response(data, parsed[4], addresses=found), peer)

    server = threading.Thread(target=answer, daemon=True)
    server.start()
    try:
        net("network", "create", "fwd")
        out = net.out("run", "--rm", "--network", "fwd", "--dns", "127.0.0.77", "busybox",
                      "nslookup", "outside.example")
        assert "10.9.8.7" in out
    finally:
        upstream.close()


def test_internal_network_has_no_route_out_but_its_names_resolve(net):
    net("network", "create", "--internal", "inside")
    net("run", "-d", "--name", "peer", "--network", "inside", "busybox", "sleep", "60")
    host = _host_address() or "127.0.0.1"
    out = net.out("run", "--rm", "--network", "inside", "busybox", "sh", "-c",
                  f"ip route; timeout 3 wget -qO- http://{host}:9/ ; echo wget=$?; "
                  "ping -c 1 -W 1 peer >/dev/null; echo ping=$?", check=False)
    assert "default" not in out
    assert "wget=0" not in out
    assert "ping=0" in out
    assert json.loads(net.out("network", "inspect", "inside"))[0]["Internal"] is True


def test_networks_are_isolated_from_each_other(net):
    net("network", "create", "red")
    net("network", "create", "blue")
    net("run", "-d", "--name", "redweb", "--network", "red", "busybox", "sh", "-c", WEB)
    address = _wait_for(lambda: _inspect(net, "redweb")["NetworkSettings"]["Networks"]["red"]
                        ["IPAddress"])
    same = net.out("run", "--rm", "--network", "red", "busybox", "sh", "-c",
                   FETCH.format(url=f"http://{address}/"))
    assert "hello from" in same
    for other in ("blue", "bridge"):
        # not `sh -c "timeout ..."` alone: sh would exec it, and a PID 1 ignores the SIGTERM
        out = net.out("run", "--rm", "--network", other, "busybox", "sh", "-c",
                      f"timeout 3 wget -qO- http://{address}/; echo rc=$?")
        assert "rc=0" not in out and "hello" not in out, other
    # nor does blue's DNS know red's names (what it forwards goes to a closed loopback port)
    assert net("run", "--rm", "--network", "blue", "--dns", "127.0.0.1", "busybox", "nslookup",
               "redweb", check=False).returncode != 0


def test_static_ip_is_honoured_and_never_given_twice(net):
    net("network", "create", "--subnet", "10.231.7.0/24", "--gateway", "10.231.7.254", "fixed")
    out = net.out("run", "--rm", "--network", "fixed", "--ip", "10.231.7.10", "busybox", "sh",
                  "-c", "ip -o -4 addr show eth0; ip route")
    assert "10.231.7.10/24" in out and "default via 10.231.7.254" in out
    net("run", "-d", "--name", "holder", "--network", "fixed", "--ip", "10.231.7.11",
        "busybox", "sleep", "60")
    clash = net("run", "--rm", "--network", "fixed", "--ip", "10.231.7.11", "busybox", "true",
                check=False)
    assert clash.returncode == 125 and b"Address already in use" in clash.stderr
    outside = net("run", "--rm", "--network", "fixed", "--ip", "10.9.9.9", "busybox", "true",
                  check=False)
    assert outside.returncode == 125 and b"no configured subnet" in outside.stderr
    on_bridge = net("run", "--rm", "--ip", "172.31.0.9", "busybox", "true", check=False)
    assert b"user defined networks only" in on_bridge.stderr


def test_parallel_runs_get_distinct_addresses(net):
    net("network", "create", "crowd")
    results: list[subprocess.CompletedProcess] = []

    def start(i: int) -> None:
        results.append(net("run", "-d", "--name", f"p{i}", "--network", "crowd", "busybox",
                           "sleep", "60", check=False))

    threads = [threading.Thread(target=start, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    addresses = [_inspect(net, f"p{i}")["NetworkSettings"]["Networks"]["crowd"]["IPAddress"]
                 for i in range(10)]
    assert len(set(addresses)) == 10 and all(addresses)


def test_connect_and_disconnect_a_running_container(net):
    net("network", "create", "side")
    net("run", "-d", "--name", "mover", "busybox", "sleep", "60")
    net("network", "connect", "--alias", "moved", "side", "mover")
    out = net.out("exec", "mover", "ls", "/sys/class/net")
    assert out.split() == ["eth0", "eth1", "lo"]
    entry = _inspect(net, "mover")["NetworkSettings"]["Networks"]["side"]
    assert entry["IPAddress"]
    found = net.out("run", "--rm", "--network", "side", "busybox", "nslookup", "moved")
    assert entry["IPAddress"] in found
    inspect = json.loads(net.out("network", "inspect", "side"))[0]
    assert inspect["Containers"][_inspect(net, "mover")["Id"]]["Name"] == "mover"
    busy = net("network", "rm", "side", check=False)
    assert busy.returncode == 1 and b"active endpoints" in busy.stderr
    net("network", "disconnect", "side", "mover")
    assert net.out("exec", "mover", "ls", "/sys/class/net").split() == ["eth0", "lo"]
    assert "side" not in _inspect(net, "mover")["NetworkSettings"]["Networks"]
    net("network", "rm", "side")


def test_network_container_mode_shares_the_other_containers_interfaces(net):
    net("run", "-d", "--name", "owner", "busybox", "sleep", "60")
    address = _inspect(net, "owner")["NetworkSettings"]["IPAddress"]
    out = net.out("run", "--rm", "--network", "container:owner", "busybox", "ip", "-o", "-4",
                  "addr", "show", "eth0")
    assert f"inet {address}/" in out


# --- published ports ---------------------------------------------------------------------

def test_published_port_answers_on_loopback_the_hosts_address_and_to_containers(net):
    port = _free_port()
    net("run", "-d", "--name", "pub", "-p", f"{port}:80", "busybox", "sh", "-c", WEB)
    cid = _inspect(net, "pub")["Id"]
    assert _get(f"http://127.0.0.1:{port}/").strip() == f"hello from {cid[:12]}"
    host = _host_address()
    if host:
        assert _get(f"http://{host}:{port}/").strip() == f"hello from {cid[:12]}"
        # from containers: on the same bridge (hairpin) and on another network
        net("network", "create", "elsewhere")
        for network in ("bridge", "elsewhere"):
            out = net.out("run", "--rm", "--network", network, "busybox", "sh", "-c",
                          FETCH.format(url=f"http://{host}:{port}/"))
            assert f"hello from {cid[:12]}" in out, network
    assert net.out("port", "pub").strip() == f"80/tcp -> 0.0.0.0:{port}"
    assert net.out("port", "pub", "80").strip() == f"0.0.0.0:{port}"
    ps = net.out("ps", "--format", "{{.Ports}}", "--filter", "name=pub").strip()
    assert ps == f"0.0.0.0:{port}->80/tcp"
    taken = net("run", "--rm", "-p", f"{port}:80", "busybox", "true", check=False)
    assert taken.returncode == 125 and b"port is already allocated" in taken.stderr


def test_publish_on_loopback_only_and_publish_all(net):
    port = _free_port()
    net("run", "-d", "--name", "lo-only", "-p", f"127.0.0.1:{port}:80", "--expose", "81",
        "-P", "busybox", "sh", "-c", WEB)
    assert "hello from" in _get(f"http://127.0.0.1:{port}/")
    ports_now = _inspect(net, "lo-only")["NetworkSettings"]["Ports"]
    assert ports_now["80/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
    random_port = int(ports_now["81/tcp"][0]["HostPort"])
    low, high = ports.ephemeral_range()
    assert low <= random_port <= high
    host = _host_address()
    if host:
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://{host}:{port}/", timeout=2)


def test_a_port_is_free_again_once_its_container_is_gone(net):
    port = _free_port()
    for _ in range(2):
        net("run", "-d", "--name", "again", "-p", f"{port}:80", "busybox", "sh", "-c", WEB)
        assert "hello from" in _get(f"http://127.0.0.1:{port}/")
        net("rm", "-f", "again")
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)


# --- hosts, resolv.conf, flags ----------------------------------------------------------

def test_add_host_dns_flags_and_hostname_shape_the_containers_files(net):
    out = net.out("run", "--rm", "--hostname", "box", "--add-host", "db:10.1.2.3",
                  "--add-host", "gw:host-gateway", "--dns", "10.0.0.53", "--dns-search",
                  "example.test", "--dns-option", "ndots:2", "busybox", "sh", "-c",
                  "cat /etc/hosts /etc/resolv.conf; ip -o -4 addr show eth0")
    gateway = json.loads(net.out("network", "inspect", "bridge"))[0]["IPAM"]["Config"][0][
        "Gateway"]
    address = out.split("inet ", 1)[1].split("/")[0]
    assert "10.1.2.3\tdb\n" in out and f"{gateway}\tgw\n" in out and f"{address}\tbox\n" in out
    assert "nameserver 10.0.0.53\n" in out and "search example.test\n" in out
    assert "options ndots:2\n" in out and "nameserver 8.8.8.8" not in out


def test_bad_network_flags_are_refused_with_one_line(net):
    cases = [
        (["--network", "nope"], b"network nope not found"),
        (["--network-alias", "x"], b"user defined networks"),
        (["-p", "99999:80"], b"invalid hostPort"),
        (["-p", "8000-8001:80"], b"same size"),
        (["--network", "container:missing"], b"No such container"),
        (["--network", "host", "--dns", "nonsense"], b"invalid IPv4 address"),
    ]
    for flags, message in cases:
        proc = net("run", "--rm", *flags, "busybox", "true", check=False)
        assert proc.returncode == 125, flags
        assert message in proc.stderr and b"Traceback" not in proc.stderr, (flags, proc.stderr)


def test_network_commands_list_inspect_and_refuse_what_docker_refuses(net):
    nid = net.out("network", "create", "--label", "team=a", "listed").strip()
    lines = net.out("network", "ls").splitlines()
    assert lines[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    names = [line.split()[1] for line in lines[1:]]
    assert names == ["bridge", "host", "listed", "none"]
    assert net.out("network", "ls", "-q", "--filter", "label=team=a").split() == [nid[:12]]
    info = json.loads(net.out("network", "inspect", "listed"))[0]
    assert info["Id"] == nid and info["Driver"] == "bridge" and info["Labels"] == {"team": "a"}
    assert net.out("network", "inspect", "-f", "{{.Name}}", nid[:8]).strip() == "listed"
    again = net("network", "create", "listed", check=False)
    assert again.returncode == 1 and b"already exists" in again.stderr
    builtin = net("network", "rm", "bridge", check=False)
    assert builtin.returncode == 1 and b"pre-defined" in builtin.stderr
    overlap = net("network", "create", "--subnet", info["IPAM"]["Config"][0]["Subnet"], "twin",
                  check=False)
    assert overlap.returncode == 1 and b"overlaps" in overlap.stderr
    assert net.out("network", "rm", "listed").strip() == "listed"
    assert net("network", "rm", "listed", check=False).returncode == 1


# --- nothing left behind -----------------------------------------------------------------

def test_rm_and_network_rm_leave_nothing_on_the_host(net):
    root = os.path.abspath(net.root)
    nid = net.out("network", "create", "gone").strip()
    bridges = _bridges(root)
    port = _free_port()
    net("run", "-d", "--name", "temp", "--network", "gone", "-p", f"{port}:80", "busybox",
        "sh", "-c", WEB)
    during = host_objects(root, bridges)
    assert any(o.startswith("veth") for o in during) and f"port tcp_{port}_0.0.0.0" in during
    assert any(o.startswith("dns server") for o in during)
    net("rm", "-f", "temp")
    net("network", "rm", "gone")
    bridges.discard(_bridges(root).pop())  # the default bridge stays until a prune
    assert _wait_for(lambda: not host_objects(root, bridges)), host_objects(root, bridges)
    claims = ipam.SubnetClaims().all()
    assert not [text for text in claims.values() if nid in text]


@pytest.mark.slow
def test_100_create_remove_cycles_leak_no_address_interface_or_rule(net):
    root = os.path.abspath(net.root)
    nid = net.out("network", "create", "cycle").strip()
    port = _free_port()
    for i in range(100):
        net("run", "-d", "--name", f"c{i}", "--network", "cycle", "-p", f"{port}:80",
            "busybox", "sleep", "60")
        net("rm", "-f", f"c{i}")
    bridges = _bridges(root)
    addresses = os.path.join(root, "networks", nid, "addresses")
    assert [n for n in os.listdir(addresses) if not n.startswith(".")] == []
    assert os.listdir(os.path.join(root, "networks", nid, "endpoints")) == []
    # what stays is the network's own: its bridge, table, resolver (and iptables rules)
    network_own = ("bridge ", "nft table ", "dns server ", "iptables rule ")
    left = _wait_for(lambda: not [o for o in host_objects(root, bridges)
                                  if not o.startswith(network_own)])
    assert left is True, host_objects(root, bridges)
    table = subprocess.run(["nft", "list", "table", "ip", f"berth-{nid[:9]}"],
                           capture_output=True, text=True).stdout
    assert "elements" not in table  # every published port's DNAT element is gone


# --- the pure parts ----------------------------------------------------------------------

def test_publish_specs_parse_as_docker_reads_them():
    P = ports.PortSpec
    assert ports.parse_publish("80") == [P(80, "tcp", "", 0)]
    assert ports.parse_publish("8080:80") == [P(80, "tcp", "", 8080)]
    assert ports.parse_publish("127.0.0.1:8080:80/udp") == [P(80, "udp", "127.0.0.1", 8080)]
    assert ports.parse_publish("127.0.0.1::80") == [P(80, "tcp", "127.0.0.1", 0)]
    assert ports.parse_publish("8000-8001:80-81") == [P(80, "tcp", "", 8000),
                                                      P(81, "tcp", "", 8001)]
    assert ports.parse_expose("7000-7001/udp") == ["7000/udp", "7001/udp"]
    for bad in ("0:80", "8080:99999", "80/sctp", "1.2.3:80:80", "[::1]:80:80", "a:b:c:d"):
        with pytest.raises(InvalidArgument):
            ports.parse_publish(bad)


def test_ipam_hands_out_each_address_once_even_to_concurrent_processes(tmp_path):
    addresses = ipam.Addresses(str(tmp_path), "10.77.0.0/28", "10.77.0.1")
    read, write = os.pipe()
    children = []
    for i in range(13):  # /28: 14 usable, minus the gateway
        pid = os.fork()
        if pid == 0:
            os.write(write, (addresses.allocate(f"c{i} 1:1") + "\n").encode())
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    os.close(write)
    got = os.read(read, 65536).decode().split()
    assert len(got) == 13 and len(set(got)) == 13 and "10.77.0.1" not in got
    with pytest.raises(Exception, match="no available IPv4 address"):
        addresses.allocate("late 1:1")
    # an owner that is gone is reclaimed when nothing else is left
    assert addresses.allocate("late 1:1", alive=lambda owner: owner != "c3 1:1")
    addresses.release(got[0], "someone else")
    assert got[0] in addresses.owners()


def test_subnet_claims_refuse_overlaps_and_skip_what_the_host_routes(tmp_path):
    claims = ipam.SubnetClaims(str(tmp_path))
    first = claims.claim(None, "a")
    second = claims.claim(None, "b")
    assert first != second and not ipam.overlaps(first, second)
    for route in ipam.host_routes():
        assert not ipam.overlaps(first, route)
    with pytest.raises(AlreadyExists):
        claims.claim((first[0] & ipam.mask(16), 16), "c")
    assert claims.claim(first, "d", stale=lambda owner: owner == "a") == first
    with pytest.raises(InvalidArgument):
        ipam.parse_subnet("10.0.0.1/24")


def test_dns_answers_are_well_formed():
    query = (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + dns.encode_name("web")
             + b"\x00\x01\x00\x01")
    qid, _flags, name, qtype, end = dns.parse_query(query)
    assert (qid, name, qtype, end) == (0x1234, "web", dns.QTYPE_A, len(query))
    reply = dns.response(query, end, addresses=["10.0.0.2", "10.0.0.3"])
    assert reply[:2] == b"\x12\x34" and reply[6:8] == b"\x00\x02"
    assert reply.endswith(socket.inet_aton("10.0.0.3"))
    ptr = dns.response(query, end, ptr="web")
    assert ptr.endswith(dns.encode_name("web"))
    assert dns.parse_query(b"\x00" * 5) is None


def test_each_network_table_masquerades_unless_internal_and_guards_loopback():
    outside = firewall.table_script("berth-x", "10.5.0.0/24", internal=False)
    inside = firewall.table_script("berth-x", "10.5.0.0/24", internal=True)
    assert 'ip saddr 10.5.0.0/24 oifname != "berth-x" masquerade' in outside
    assert 'ip saddr 10.5.0.0/24 oifname != "berth-x" masquerade' not in inside
    assert 'iifname "berth-x" oifname != "berth-x" drop' in inside
    for script in (outside, inside):
        assert 'iifname "berth-x" ip daddr 127.0.0.0/8 drop' in script
        assert script.startswith("add table ip berth-x\ndelete table ip berth-x\n")
    assert firewall.ports_script("b", [("", 8080, 80, "tcp"), ("127.0.0.1", 53, 53, "udp")],
                                 "10.5.0.2", add=True) == (
        "add element ip b tcp_any { 8080 : 10.5.0.2 . 80 }\n"
        "add element ip b udp_ip { 127.0.0.1 . 53 : 10.5.0.2 . 53 }\n")


def test_resolv_conf_follows_dockers_rules():
    host = "nameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch corp\noptions edns0\n"
    assert settings.resolv_text(host) == "nameserver 10.0.0.2\nsearch corp\noptions edns0\n"
    assert settings.resolv_text("nameserver 127.0.0.53\n") == \
        "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    assert settings.resolv_text(host, embedded="172.18.0.1") == \
        "nameserver 172.18.0.1\nsearch corp\noptions edns0 ndots:0\n"
    assert settings.resolv_text(host, nameservers=("1.1.1.1",), options=("ndots:3",)) == \
        "nameserver 1.1.1.1\nsearch corp\noptions ndots:3\n"
