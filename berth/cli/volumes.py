"""Volume commands: volume create, ls, inspect, rm, prune."""

from __future__ import annotations

import os
import sys

from berth.cli.filters import label_match, parse_filters, parse_pairs
from berth.cli.flags import BOOL, LIST, VALUE, Flag, UsageError, parse, usage
from berth.errors import BerthError, InvalidArgument, NotFound

HELP_FLAG = Flag(("--help",), BOOL, "Print usage")
CREATE_FLAGS = (
    Flag(("--name",), VALUE, "Specify volume name"),
    Flag(("-d", "--driver"), VALUE, "Specify volume driver name (local)"),
    Flag(("-l", "--label"), LIST, "Set metadata for a volume"),
    Flag(("-o", "--opt"), LIST, "Set driver specific options (type, device, o)"),
)
LS_FLAGS = (
    Flag(("-q", "--quiet"), BOOL, "Only display volume names"),
    Flag(("-f", "--filter"), LIST, "Provide filter values (e.g. 'dangling=true')"),
    Flag(("--format",), VALUE, "Format output using a Go template"),
)
INSPECT_FLAGS = (Flag(("-f", "--format"), VALUE, "Format output using a Go template"),)
RM_FLAGS = (Flag(("-f", "--force"), BOOL, "Force the removal of one or more volumes"),)
PRUNE_FLAGS = (
    Flag(("-a", "--all"), BOOL, "Remove all unused volumes, not just anonymous ones"),
    Flag(("-f", "--force"), BOOL, "Do not prompt for confirmation"),
    Flag(("--filter",), LIST, "Provide filter values (e.g. 'label=<label>')"),
)


def _store(g):
    from berth.volume import VolumeStore

    return VolumeStore(g.root)


def _records(g) -> list[dict]:
    from berth.container import Containers
    from berth.image import ImageStore

    return Containers(g.root, ImageStore(g.root)).list()


def _parsed(argv, flags, command, synopsis, description):
    values, pos = parse(argv, flags + (HELP_FLAG,))
    if values["help"]:
        sys.stdout.write(usage(f"volume {command}", synopsis, description, flags) + "\n")
        return None, None
    return values, pos


def cmd_volume_create(g, argv) -> int:
    values, pos = _parsed(argv, CREATE_FLAGS, "create", "[OPTIONS] [VOLUME]", "Create a volume")
    if values is None:
        return 0
    if len(pos) > 1:
        raise UsageError('"berth volume create" requires at most 1 argument.')
    name = values["name"]
    if pos:
        if name and name != pos[0]:
            raise InvalidArgument("conflicting options: either specify --name or provide "
                                  "positional arg, not both")
        name = pos[0]
    info = _store(g).create(name or None, labels=parse_pairs(values["label"], "label"),
                            options=parse_pairs(values["opt"], "option"),
                            driver=values["driver"] or "local")
    sys.stdout.write(info["Name"] + "\n")
    return 0


def _name_match(name: str, pattern: str) -> bool:
    import re

    try:
        return re.search(pattern, name) is not None
    except re.error:
        return pattern in name


def _matches(info: dict, filters: dict, used: set[str]) -> bool:
    """Docker's rule: values of one key OR, different keys AND."""
    for key, values in filters.items():
        if key == "dangling":
            for v in values:
                if v.lower() not in ("true", "false", "1", "0"):
                    raise InvalidArgument(f"invalid filter 'dangling={v}'")
            ok = any((info["Name"] not in used) == (v.lower() in ("true", "1")) for v in values)
        elif key == "name":
            ok = any(_name_match(info["Name"], v) for v in values)
        elif key == "label":
            ok = all(label_match(info.get("Labels"), v) for v in values)
        elif key == "driver":
            ok = info["Driver"] in values
        else:
            ok = True
        if not ok:
            return False
    return True


def _used(records: list[dict]) -> set[str]:
    return {m["Name"] for r in records for m in r.get("Mounts") or ()
            if m.get("Type") == "volume" and m.get("Name")}


def cmd_volume_ls(g, argv) -> int:
    values, pos = _parsed(argv, LS_FLAGS, "ls", "[OPTIONS]", "List volumes")
    if values is None:
        return 0
    if pos:
        raise UsageError('"berth volume ls" accepts no arguments.')
    filters = parse_filters(values["filter"], ("dangling", "name", "label", "driver"))
    volumes = _store(g).list()
    used = _used(_records(g)) if "dangling" in filters else set()
    volumes = [v for v in volumes if _matches(v, filters, used)]
    if values["quiet"]:
        sys.stdout.write("".join(v["Name"] + "\n" for v in volumes))
        return 0
    if values["format"]:
        from berth.cli.template import render

        for v in volumes:
            sys.stdout.write(render(values["format"], v) + "\n")
        return 0
    from berth.cli import format as fmt

    sys.stdout.write(fmt.table(["DRIVER", "VOLUME NAME"],
                               [[v["Driver"], v["Name"]] for v in volumes]))
    return 0


def cmd_volume_inspect(g, argv) -> int:
    values, pos = _parsed(argv, INSPECT_FLAGS, "inspect", "[OPTIONS] VOLUME [VOLUME...]",
                          "Display detailed information on one or more volumes")
    if values is None:
        return 0
    if not pos:
        raise UsageError('"berth volume inspect" requires at least 1 argument.')
    store = _store(g)
    from berth.cli.containers import emit_inspect

    return emit_inspect(pos, store.get, values["format"])


def cmd_volume_rm(g, argv) -> int:
    values, pos = _parsed(argv, RM_FLAGS, "rm", "[OPTIONS] VOLUME [VOLUME...]",
                          "Remove one or more volumes")
    if values is None:
        return 0
    if not pos:
        raise UsageError('"berth volume rm" requires at least 1 argument.')
    from berth.volume import users_of

    store = _store(g)
    status = 0
    for name in pos:
        try:
            store.remove(name, lambda n=name: users_of(_records(g), n))
            sys.stdout.write(name + "\n")
        except NotFound:
            if not values["force"]:  # -f: a missing volume is no error; one in use still is
                sys.stderr.write(f"berth: get {name}: no such volume\n")
                status = 1
        except BerthError as exc:
            sys.stderr.write(f"berth: {exc}\n")
            status = 1
    return status


def cmd_volume_prune(g, argv) -> int:
    values, pos = _parsed(argv, PRUNE_FLAGS, "prune", "[OPTIONS]", "Remove unused local volumes")
    if values is None:
        return 0
    if pos:
        raise UsageError('"berth volume prune" accepts no arguments.')
    filters = parse_filters(values["filter"], ("label", "label!"))
    if not values["force"] and os.isatty(0):
        what = "all local volumes" if values["all"] else "anonymous local volumes"
        sys.stdout.write(f"WARNING! This will remove {what} not used by at least one container.\n"
                         "Are you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    from berth.cli import format as fmt
    from berth.volume import is_anonymous

    def wanted(info: dict) -> bool:
        labels = info.get("Labels") or {}
        return ((values["all"] or is_anonymous(info))
                and all(label_match(labels, v) for v in filters.get("label", ()))
                and not any(label_match(labels, v) for v in filters.get("label!", ())))

    deleted = _store(g).prune(wanted, lambda: _used(_records(g)))
    if deleted:
        sys.stdout.write("Deleted Volumes:\n" + "".join(n + "\n" for n, _ in deleted) + "\n")
    sys.stdout.write(f"Total reclaimed space: {fmt.human_size(sum(s for _, s in deleted))}\n")
    return 0
