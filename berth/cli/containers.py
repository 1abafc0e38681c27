"""Container commands: ps, rm, inspect."""

from __future__ import annotations

import json
import sys

from berth.cli import format as fmt
from berth.cli.filters import label_match
from berth.cli.flags import BOOL, LIST, VALUE, Flag, UsageError, parse, usage
from berth.errors import BerthError, InvalidArgument, NotFound

HELP_FLAG = Flag(("--help",), BOOL, "Print usage")
PS_FLAGS = (
    Flag(("-a", "--all"), BOOL, "Show all containers (default shows just running)"),
    Flag(("-q", "--quiet"), BOOL, "Only display container IDs"),
    Flag(("--no-trunc",), BOOL, "Don't truncate output"),
    Flag(("-l", "--latest"), BOOL, "Show the latest created container (includes all states)"),
    Flag(("-n", "--last"), VALUE, "Show n last created containers (includes all states)", "int"),
    Flag(("-s", "--size"), BOOL, "Display total file sizes"),
    Flag(("-f", "--filter"), LIST, "Filter output based on conditions provided"),
    Flag(("--format",), VALUE, "Format output using a Go template ('table ...', 'json')"),
)
RM_FLAGS = (
    Flag(("-f", "--force"), BOOL, "Force the removal of a running container (uses SIGKILL)"),
    Flag(("-v", "--volumes"), BOOL, "Remove anonymous volumes associated with the container"),
)
INSPECT_FLAGS = (
    Flag(("--type",), VALUE, "Return JSON for specified type (container, image)"),
    Flag(("-f", "--format"), VALUE, "Format output using a Go template"),
    Flag(("-s", "--size"), BOOL, "Display total file sizes"),
)


def _containers(g):
    from berth.container import Containers
    from berth.image import ImageStore

    return Containers(g.root, ImageStore(g.root))


def status_text(state: dict) -> str:
    status = state["Status"]
    if status in ("running", "paused"):
        text = "Up " + fmt.human_duration(_since(state["StartedAt"]))
        if state.get("Paused"):
            return text + " (Paused)"
        health = (state.get("Health") or {}).get("Status")
        if health == "starting":
            return text + " (health: starting)"
        return text + (f" ({health})" if health else "")
    if status == "restarting":
        return f"Restarting ({state['ExitCode']}) {fmt.ago(state['FinishedAt'])}".rstrip()
    if status == "exited":
        finished = fmt.ago(state["FinishedAt"])
        return f"Exited ({state['ExitCode']}) {finished}".rstrip()
    if status == "created":
        return "Created"
    return status.capitalize()


def _since(ts: str) -> float:
    import time

    t = fmt.parse_time(ts)
    return time.time() - t if t is not None else 0.0


def command_text(record: dict, no_trunc: bool) -> str:
    import shlex

    cmd = " ".join([record["Path"]] + [shlex.quote(a) if " " in a else a for a in record["Args"]])
    return json.dumps(cmd if no_trunc else fmt.truncate(cmd, 20), ensure_ascii=False)


PS_FILTERS = ("status", "name", "id", "label", "exited", "ancestor", "volume", "health")
STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")
HEALTH = ("starting", "healthy", "unhealthy", "none")
# --format fields and their table headers, as the docker CLI names them
PS_HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND",
              "CreatedAt": "CREATED AT", "RunningFor": "CREATED", "Status": "STATUS",
              "Ports": "PORTS", "Names": "NAMES", "Labels": "LABELS", "Mounts": "MOUNTS",
              "State": "STATE", "Size": "SIZE", "Networks": "NETWORKS",
              "LocalVolumes": "LOCAL VOLUMES"}
PS_DEFAULT = ("table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}"
              "\t{{.Names}}")


def parse_filters(items: list[str]) -> dict[str, list[str]]:
    from berth.cli.filters import parse_filters as parse

    def check(key: str, value: str) -> None:
        if key == "status" and value not in STATUSES:
            raise InvalidArgument(f"invalid filter 'status={value}' (one of {', '.join(STATUSES)})")
        if key == "health" and value not in HEALTH:
            raise InvalidArgument(f"Unrecognised filter value for health: {value}")
        if key == "exited" and not value.lstrip("-").isdigit():
            raise InvalidArgument(f"invalid filter 'exited={value}': not an exit code")

    return parse(items, PS_FILTERS, check)


def _search(pattern: str, text: str) -> bool:
    import re

    try:
        return re.search(pattern, text) is not None
    except re.error:
        return pattern in text


class _Matcher:
    """Docker's rule: values of one key OR (labels AND, as Docker has it), keys AND."""

    def __init__(self, filters: dict[str, list[str]], images) -> None:
        self.f = filters
        self.ancestors = None
        if "ancestor" in filters:
            self.ancestors = []
            for ref in filters["ancestor"]:
                try:
                    self.ancestors.append(images.resolve(ref))
                except BerthError:
                    continue  # an unknown image matches nothing, as in Docker

    def __call__(self, r: dict) -> bool:
        f, state = self.f, r["State"]
        if "status" in f and state["Status"] not in f["status"]:
            return False
        if "name" in f and not any(_search(v, r["Name"]) for v in f["name"]):
            return False
        if "id" in f and not any(r["Id"].startswith(v) or _search(v, r["Id"]) for v in f["id"]):
            return False
        labels = r["Config"].get("Labels") or {}
        if "label" in f and not all(label_match(labels, v) for v in f["label"]):
            return False
        if "exited" in f and (state["Running"] or state["StartedAt"].startswith("0001-")
                              or str(state["ExitCode"]) not in f["exited"]):
            return False
        if "health" in f and ((state.get("Health") or {}).get("Status") or "none") \
                not in f["health"]:
            return False
        if "volume" in f and not any(v in (m.get("Name"), m.get("Source"), m.get("Destination"))
                                     for m in r.get("Mounts") or () for v in f["volume"]):
            return False
        if self.ancestors is not None:
            chain = r.get("Berth", {}).get("ImageChain") or []
            if not any(r["Image"] == a.id or (len(chain) > len(a.chain_ids)
                                              and chain[:len(a.chain_ids)] == list(a.chain_ids))
                       for a in self.ancestors):
                return False
        return True


def _created_at(ts: str) -> str:
    """Go's time.Time String(), as docker ps prints CreatedAt."""
    import time

    t = fmt.parse_time(ts)
    if t is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(t))


def ports_text(r: dict) -> str:
    """docker ps's PORTS: 0.0.0.0:8080->80/tcp for a published port, 80/tcp for one only
    exposed; a stopped container shows none."""
    out = []
    ports = (r.get("NetworkSettings") or {}).get("Ports") or {}

    def order(key: str) -> tuple:
        port, _, proto = key.partition("/")
        return (int(port) if port.isdigit() else 0, proto)

    for key in sorted(ports, key=order):
        bindings = ports[key]
        if not bindings:
            out.append(key)
        for b in bindings or ():
            out.append(f"{b.get('HostIp') or '0.0.0.0'}:{b.get('HostPort')}->{key}")
    return ", ".join(out)


def ps_context(r: dict, no_trunc: bool) -> dict:
    """The fields a `ps --format` template sees, as strings the docker CLI would print."""
    image = r["Config"]["Image"]
    labels = r["Config"].get("Labels") or {}
    mounts = []
    for m in r.get("Mounts") or ():
        name = m.get("Name") or m.get("Source") or ""
        mounts.append(name if no_trunc else fmt.truncate(name, 15))
    network = r["HostConfig"].get("NetworkMode") or "bridge"
    return {
        "ID": r["Id"] if no_trunc else r["Id"][:12],
        "Image": image if no_trunc or not image.startswith("sha256:") else image[7:19],
        "Command": command_text(r, no_trunc),
        "CreatedAt": _created_at(r["Created"]),
        "RunningFor": fmt.ago(r["Created"]),
        "Status": status_text(r["State"]),
        "Ports": ports_text(r),
        "Names": r["Name"].lstrip("/"),
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        "Label": lambda key: labels.get(key, ""),
        "Mounts": ",".join(mounts),
        "State": r["State"]["Status"],
        "Size": "0B",
        "Networks": "" if network == "none" else
        ",".join((r.get("NetworkSettings") or {}).get("Networks") or ()) or network,
        "LocalVolumes": str(sum(1 for m in r.get("Mounts") or () if m.get("Type") == "volume")),
    }


def render_rows(template: str, contexts: list[dict]) -> str:
    """A --format template over rows; 'table ...' aligns its tab-separated cells under headers."""
    from berth.cli.template import render

    if template == "json":
        template = "{{json .}}"
    elif template == "table":
        template = PS_DEFAULT
    if not template.startswith("table"):
        return "".join(render(template, c) + "\n" for c in contexts)
    body = template[len("table"):].lstrip()
    headers = dict(PS_HEADERS, Label=lambda _key: "LABEL")
    head = render(body, headers).split("\t")
    rows = [render(body, c).split("\t") for c in contexts]
    width = max([len(head)] + [len(row) for row in rows])
    return fmt.table(head + [""] * (width - len(head)),
                     [row + [""] * (width - len(row)) for row in rows])


def cmd_ps(g, argv) -> int:
    values, pos = parse(argv, PS_FLAGS + (HELP_FLAG,))
    if values["help"]:
        sys.stdout.write(usage("ps", "[OPTIONS]", "List containers", PS_FLAGS) + "\n")
        return 0
    if pos:
        raise UsageError('"berth ps" accepts no arguments.')
    filters = parse_filters(values["filter"])
    containers = _containers(g)
    records = containers.list()
    if filters:
        records = list(filter(_Matcher(filters, containers.images), records))
    last = int(values["last"]) if values["last"] is not None else (1 if values["latest"] else -1)
    if last >= 0:
        records = records[:last]
    elif not values["all"] and "status" not in filters:  # a status filter implies -a
        records = [r for r in records if r["State"]["Running"]]
    if values["quiet"]:
        sys.stdout.write("".join((r["Id"] if values["no_trunc"] else r["Id"][:12]) + "\n"
                                 for r in records))
        return 0
    sys.stdout.write(render_rows(values["format"] or PS_DEFAULT,
                                 [ps_context(r, values["no_trunc"]) for r in records]))
    return 0


def cmd_rm(g, argv) -> int:
    values, pos = parse(argv, RM_FLAGS + (HELP_FLAG,))
    if values["help"]:
        sys.stdout.write(usage("rm", "[OPTIONS] CONTAINER [CONTAINER...]",
                               "Remove one or more containers", RM_FLAGS) + "\n")
        return 0
    if not pos:
        raise UsageError('"berth rm" requires at least 1 argument.')
    containers = _containers(g)
    status = 0
    for ref in pos:
        try:
            containers.remove(ref, force=values["force"], volumes=values["volumes"])
            sys.stdout.write(ref + "\n")
        except BerthError as exc:
            sys.stderr.write(f"berth: {exc}\n")
            status = 1
    return status


def emit_inspect(refs, lookup, template: str | None) -> int:
    """Print a JSON array of what `lookup` returns (or a template per object)."""
    results = []
    status = 0
    for ref in refs:
        try:
            results.append(lookup(ref))
        except BerthError as exc:
            sys.stderr.write(f"berth: {exc}\n")
            status = 1
    if template:
        from berth.cli.template import render

        for obj in results:
            sys.stdout.write(render(template, obj) + "\n")
    else:
        sys.stdout.write(json.dumps(results, indent=4) + "\n")
    return status


def cmd_inspect(g, argv) -> int:
    values, pos = parse(argv, INSPECT_FLAGS + (HELP_FLAG,))
    if values["help"]:
        sys.stdout.write(usage("inspect", "[OPTIONS] NAME|ID [NAME|ID...]",
                               "Return low-level information on containers or images",
                               INSPECT_FLAGS) + "\n")
        return 0
    if not pos:
        raise UsageError('"berth inspect" requires at least 1 argument.')
    kind = values["type"]
    if kind not in (None, "container", "image"):
        raise UsageError(f'"{kind}" is not a valid value for --type')
    containers = _containers(g)

    def lookup(ref: str) -> dict:
        if kind in (None, "container"):
            try:
                return containers.inspect(ref)
            except NotFound:
                if kind == "container":
                    raise
        from berth.cli.images import image_inspect_dict

        try:
            return image_inspect_dict(containers.images, containers.images.resolve(ref))
        except NotFound:
            raise NotFound(f"No such object: {ref}") from None

    return emit_inspect(pos, lookup, values["format"])


def cmd_container_inspect(g, argv) -> int:
    values, pos = parse(argv, INSPECT_FLAGS[1:] + (HELP_FLAG,))
    if not pos:
        raise UsageError('"berth container inspect" requires at least 1 argument.')
    containers = _containers(g)
    return emit_inspect(pos, containers.inspect, values["format"])
