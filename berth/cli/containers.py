"""Container commands: ps, rm, inspect."""

from __future__ import annotations

import json
import sys

from berth.cli import format as fmt
from berth.cli.flags import BOOL, VALUE, Flag, UsageError, parse, usage
from berth.errors import BerthError, NotFound

HELP_FLAG = Flag(("--help",), BOOL, "Print usage")
PS_FLAGS = (
    Flag(("-a", "--all"), BOOL, "Show all containers (default shows just running)"),
    Flag(("-q", "--quiet"), BOOL, "Only display container IDs"),
    Flag(("--no-trunc",), BOOL, "Don't truncate output"),
    Flag(("-l", "--latest"), BOOL, "Show the latest created container (includes all states)"),
    Flag(("-n", "--last"), VALUE, "Show n last created containers (includes all states)", "int"),
    Flag(("-s", "--size"), BOOL, "Display total file sizes"),
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


def cmd_ps(g, argv) -> int:
    values, pos = parse(argv, PS_FLAGS + (HELP_FLAG,))
    if values["help"]:
        sys.stdout.write(usage("ps", "[OPTIONS]", "List containers", PS_FLAGS) + "\n")
        return 0
    if pos:
        raise UsageError('"berth ps" accepts no arguments.')
    records = _containers(g).list()
    last = int(values["last"]) if values["last"] is not None else (1 if values["latest"] else -1)
    if last >= 0:
        records = records[:last]
    elif not values["all"]:
        records = [r for r in records if r["State"]["Running"]]
    if values["quiet"]:
        sys.stdout.write("".join((r["Id"] if values["no_trunc"] else r["Id"][:12]) + "\n"
                                 for r in records))
        return 0
    rows = []
    for r in records:
        image = r["Config"]["Image"]
        rows.append([r["Id"] if values["no_trunc"] else r["Id"][:12],
                     image if values["no_trunc"] or not image.startswith("sha256:") else image[7:19],
                     command_text(r, values["no_trunc"]), fmt.ago(r["Created"]),
                     status_text(r["State"]), "", r["Name"].lstrip("/")])
    sys.stdout.write(fmt.table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS",
                                "NAMES"], rows))
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
            containers.remove(ref, force=values["force"])
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
