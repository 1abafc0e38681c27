"""Network commands: network create, ls, inspect, rm, connect, disconnect, prune."""

from __future__ import annotations

import os
import sys

from berth.cli.filters import label_match, parse_filters, parse_pairs
from berth.cli.flags import BOOL, LIST, VALUE, Flag, UsageError, parse, usage
from berth.errors import BerthError, InvalidArgument, NotFound

HELP_FLAG = Flag(("--help",), BOOL, "Print usage")
CREATE_FLAGS = (
    Flag(("-d", "--driver"), VALUE, "Driver to manage the Network (bridge)"),
    Flag(("--subnet",), LIST, "Subnet in CIDR format that represents a network segment"),
    Flag(("--gateway",), LIST, "IPv4 Gateway for the master subnet"),
    Flag(("--internal",), BOOL, "Restrict external access to the network"),
    Flag(("--label",), LIST, "Set metadata on a network"),
    Flag(("-o", "--opt"), LIST, "Set driver specific options (com.docker.network.bridge.name)"),
    Flag(("--attachable",), BOOL, "Enable manual container attachment (always on here)"),
    Flag(("--ipv6",), BOOL, "Enable IPv6 networking (not supported)"),
)
LS_FLAGS = (
    Flag(("-q", "--quiet"), BOOL, "Only display network IDs"),
    Flag(("-f", "--filter"), LIST, "Provide filter values (e.g. 'driver=bridge')"),
    Flag(("--format",), VALUE, "Format output using a Go template"),
    Flag(("--no-trunc",), BOOL, "Do not truncate the output"),
)
INSPECT_FLAGS = (Flag(("-f", "--format"), VALUE, "Format output using a Go template"),)
RM_FLAGS = (Flag(("-f", "--force"), BOOL, "Do not error if the network does not exist"),)
CONNECT_FLAGS = (
    Flag(("--alias",), LIST, "Add network-scoped alias for the container"),
    Flag(("--ip",), VALUE, "IPv4 address (e.g., 172.30.100.104)"),
)
DISCONNECT_FLAGS = (Flag(("-f", "--force"), BOOL, "Force the container to disconnect"),)
PRUNE_FLAGS = (
    Flag(("-f", "--force"), BOOL, "Do not prompt for confirmation"),
    Flag(("--filter",), LIST, "Provide filter values (e.g. 'label=<label>')"),
)


def _networks(g):
    from berth.network.service import Networks

    return Networks(g.root)


def _containers(g):
    from berth.container import Containers
    from berth.image import ImageStore

    return Containers(g.root, ImageStore(g.root))


def _parsed(argv, flags, command, synopsis, description):
    values, pos = parse(argv, flags + (HELP_FLAG,))
    if values["help"]:
        sys.stdout.write(usage(f"network {command}", synopsis, description, flags) + "\n")
        return None, None
    return values, pos


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        from berth.errors import FailedPrecondition

        raise FailedPrecondition(f"berth network {what} needs root: run it as root")


def cmd_network_create(g, argv) -> int:
    values, pos = _parsed(argv, CREATE_FLAGS, "create", "[OPTIONS] NETWORK", "Create a network")
    if values is None:
        return 0
    if len(pos) != 1:
        raise UsageError('"berth network create" requires exactly 1 argument.')
    if values["ipv6"]:
        raise InvalidArgument("IPv6 networks are not supported")
    if len(values["subnet"]) > 1 or len(values["gateway"]) > 1:
        raise InvalidArgument("only one --subnet and one --gateway per network are supported")
    _require_root("create")
    record = _networks(g).create(
        pos[0], subnet=(values["subnet"] or [None])[0], gateway=(values["gateway"] or [None])[0],
        internal=values["internal"], labels=parse_pairs(values["label"], "label"),
        options=parse_pairs(values["opt"], "option"), driver=values["driver"] or "bridge")
    sys.stdout.write(record["Id"] + "\n")
    return 0


def _matches(record: dict, filters: dict) -> bool:
    """Docker's rule: values of one key OR, different keys AND."""
    from berth.network.service import PREDEFINED

    for key, values in filters.items():
        if key == "driver":
            ok = record["Driver"] in values
        elif key == "id":
            ok = any(record["Id"].startswith(v) for v in values)
        elif key == "name":
            ok = any(v in record["Name"] for v in values)
        elif key == "scope":
            ok = record["Scope"] in values
        elif key == "type":
            kind = "builtin" if record["Name"] in PREDEFINED else "custom"
            ok = kind in values
        else:  # label
            ok = all(label_match(record.get("Labels"), v) for v in values)
        if not ok:
            return False
    return True


def cmd_network_ls(g, argv) -> int:
    values, pos = _parsed(argv, LS_FLAGS, "ls", "[OPTIONS]", "List networks")
    if values is None:
        return 0
    if pos:
        raise UsageError('"berth network ls" accepts no arguments.')
    filters = parse_filters(values["filter"], ("driver", "id", "label", "name", "scope", "type"))
    records = [r for r in _networks(g).list() if _matches(r, filters)]
    trunc = (lambda i: i) if values["no_trunc"] else (lambda i: i[:12])
    if values["quiet"]:
        sys.stdout.write("".join(trunc(r["Id"]) + "\n" for r in records))
        return 0
    if values["format"]:
        from berth.cli.template import render

        for r in records:
            ctx = {"ID": trunc(r["Id"]), "Name": r["Name"], "Driver": r["Driver"],
                   "Scope": r["Scope"], "IPv6": str(r["EnableIPv6"]).lower(),
                   "Internal": str(r["Internal"]).lower(), "CreatedAt": r["Created"],
                   "Labels": ",".join(f"{k}={v}" for k, v in sorted((r.get("Labels") or
                                                                     {}).items()))}
            sys.stdout.write(render(values["format"], ctx) + "\n")
        return 0
    from berth.cli import format as fmt

    sys.stdout.write(fmt.table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
                               [[trunc(r["Id"]), r["Name"], r["Driver"], r["Scope"]]
                                for r in records]))
    return 0


def cmd_network_inspect(g, argv) -> int:
    values, pos = _parsed(argv, INSPECT_FLAGS, "inspect", "[OPTIONS] NETWORK [NETWORK...]",
                          "Display detailed information on one or more networks")
    if values is None:
        return 0
    if not pos:
        raise UsageError('"berth network inspect" requires at least 1 argument.')
    networks = _networks(g)
    from berth.cli.containers import emit_inspect

    return emit_inspect(pos, networks.inspect, values["format"])


def cmd_network_rm(g, argv) -> int:
    values, pos = _parsed(argv, RM_FLAGS, "rm", "[OPTIONS] NETWORK [NETWORK...]",
                          "Remove one or more networks")
    if values is None:
        return 0
    if not pos:
        raise UsageError('"berth network rm" requires at least 1 argument.')
    _require_root("rm")
    networks = _networks(g)
    status = 0
    for ref in pos:
        try:
            networks.remove(ref)
            sys.stdout.write(ref + "\n")
        except NotFound as exc:
            if not values["force"]:
                sys.stderr.write(f"berth: {exc}\n")
                status = 1
        except BerthError as exc:
            sys.stderr.write(f"berth: {exc}\n")
            status = 1
    return status


def cmd_network_connect(g, argv) -> int:
    values, pos = _parsed(argv, CONNECT_FLAGS, "connect", "[OPTIONS] NETWORK CONTAINER",
                          "Connect a container to a network")
    if values is None:
        return 0
    if len(pos) != 2:
        raise UsageError('"berth network connect" requires exactly 2 arguments.')
    _require_root("connect")
    if values["ip"] is not None:
        from berth.network.ipam import parse_ip

        parse_ip(values["ip"])
    _containers(g).connect(pos[1], pos[0], aliases=tuple(values["alias"]), ip=values["ip"])
    return 0


def cmd_network_disconnect(g, argv) -> int:
    values, pos = _parsed(argv, DISCONNECT_FLAGS, "disconnect", "[OPTIONS] NETWORK CONTAINER",
                          "Disconnect a container from a network")
    if values is None:
        return 0
    if len(pos) != 2:
        raise UsageError('"berth network disconnect" requires exactly 2 arguments.')
    _require_root("disconnect")
    _containers(g).disconnect(pos[1], pos[0])
    return 0


def cmd_network_prune(g, argv) -> int:
    values, pos = _parsed(argv, PRUNE_FLAGS, "prune", "[OPTIONS]", "Remove all unused networks")
    if values is None:
        return 0
    if pos:
        raise UsageError('"berth network prune" accepts no arguments.')
    if values["filter"]:
        raise InvalidArgument("network prune filters are not supported")
    _require_root("prune")
    if not values["force"] and os.isatty(0):
        sys.stdout.write("WARNING! This will remove all custom networks not used by at least one "
                         "container.\nAre you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    removed = _networks(g).prune()
    if removed:
        sys.stdout.write("Deleted Networks:\n" + "".join(n + "\n" for n in removed))
    return 0
