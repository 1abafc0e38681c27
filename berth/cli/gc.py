"""Space and integrity commands: image prune, system df, system prune, system check."""

from __future__ import annotations

import os
import sys

from berth.cli import format as fmt
from berth.cli.flags import BOOL, Flag, UsageError, parse, usage
from berth.errors import BerthError

HELP_FLAG = Flag(("--help",), BOOL, "Print usage")
PRUNE_FLAGS = (
    Flag(("-a", "--all"), BOOL, "Remove all unused images, not just dangling ones"),
    Flag(("-f", "--force"), BOOL, "Do not prompt for confirmation"),
)
SYSTEM_PRUNE_FLAGS = (
    Flag(("-a", "--all"), BOOL, "Remove all unused images not just dangling ones"),
    Flag(("-f", "--force"), BOOL, "Do not prompt for confirmation"),
)
DF_FLAGS = (Flag(("-v", "--verbose"), BOOL, "Show detailed information on space usage"),)
CHECK_FLAGS = (
    Flag(("--repair",), BOOL, "Remove what is corrupt, unusable or left over, then check again"),
)


def _images(g):
    from berth.image import ImageStore

    return ImageStore(g.root)


def _parse(argv, flags, command, synopsis, description):
    values, pos = parse(argv, flags + (HELP_FLAG,))
    if values["help"]:
        sys.stdout.write(usage(command, synopsis, description, flags) + "\n")
        return None
    if pos:
        raise UsageError(f'"berth {command}" accepts no arguments.')
    return values


def _confirm(warning: str, force: bool) -> bool:
    """Docker's prompt, asked only of a person at a terminal."""
    if force or not sys.stdin.isatty():
        return True
    sys.stdout.write(f"{warning}\nAre you sure you want to continue? [y/N] ")
    sys.stdout.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _familiar(name: str) -> str:
    from berth.oci import reference

    return reference.parse(name).familiar()


def _deleted_images_lines(victims, report) -> list[str]:
    lines = []
    for image in victims:
        lines += [f"untagged: {_familiar(n)}" for n in image.names]
        lines.append(f"deleted: {image.id}")
    lines += [f"deleted: {chain}" for chain, _size in report.snapshots]
    return lines


def cmd_image_prune(g, argv) -> int:
    values = _parse(argv, PRUNE_FLAGS, "image prune", "[OPTIONS]", "Remove unused images")
    if values is None:
        return 0
    warning = ("WARNING! This will remove all images without at least one container associated "
               "to them." if values["all"] else "WARNING! This will remove all dangling images.")
    reclaimed = 0
    if _confirm(warning, values["force"]):
        from berth.image import gc

        victims, report = gc.prune_images(_images(g), everything=values["all"])
        lines = _deleted_images_lines(victims, report)
        if lines:
            sys.stdout.write("Deleted Images:\n" + "\n".join(lines) + "\n\n")
        reclaimed = report.reclaimed
    sys.stdout.write(f"Total reclaimed space: {fmt.human_size(reclaimed)}\n")
    return 0


def cmd_system_prune(g, argv) -> int:
    values = _parse(argv, SYSTEM_PRUNE_FLAGS, "system prune", "[OPTIONS]",
                    "Remove unused data")
    if values is None:
        return 0
    images_line = ("all images without at least one container associated to them"
                   if values["all"] else "all dangling images")
    warning = ("WARNING! This will remove:\n  - all stopped containers\n"
               f"  - {images_line}\n  - all build cache\n  - leftovers of interrupted writes\n")
    if not _confirm(warning, values["force"]):
        sys.stdout.write("Total reclaimed space: 0B\n")
        return 0
    from berth.container import Containers
    from berth.image import gc

    store = _images(g)
    containers = Containers(g.root, store)
    removed, reclaimed, status = [], 0, 0
    for record in containers.list():
        if record["State"]["Running"] or record["State"].get("Restarting"):
            continue
        size = container_size(record)
        try:
            containers.remove(record["Id"])
        except BerthError:  # started meanwhile, or already gone: not stopped after all
            continue
        removed.append(record["Id"])
        reclaimed += size
    if removed:
        sys.stdout.write("Deleted Containers:\n" + "".join(c + "\n" for c in removed) + "\n")
    # the build cache goes too, as Docker's system prune clears it: its steps are roots of
    # the intermediate images, which the collection below then takes
    from berth.fsutil import remove_tree

    steps = os.path.join(g.root, "build-cache", "steps")
    if os.path.isdir(steps):
        trash = f"{steps}.prune-{os.getpid()}"
        os.rename(steps, trash)
        remove_tree(trash)
    try:
        victims, report = gc.prune_images(store, everything=values["all"])
    except BerthError as exc:
        sys.stderr.write(f"berth: {exc}\n")
        victims, report, status = [], gc.SweepReport(), 1
    lines = _deleted_images_lines(victims, report)
    if lines:
        sys.stdout.write("Deleted Images:\n" + "\n".join(lines) + "\n\n")
    if report.temporaries:
        sys.stdout.write(f"Deleted {len(report.temporaries)} leftovers of interrupted writes\n\n")
    reclaimed += report.reclaimed
    sys.stdout.write(f"Total reclaimed space: {fmt.human_size(reclaimed)}\n")
    return status


def container_size(record: dict) -> int:
    """Docker's SizeRw: what the container wrote, its overlay upper directory."""
    from berth.snapshot import tree_size

    return tree_size(record["GraphDriver"]["Data"]["UpperDir"], "nondir")


def _reclaimable(reclaimable: int, total: int) -> str:
    if total > 0:
        return f"{fmt.human_size(reclaimable)} ({reclaimable * 100 // total}%)"
    return fmt.human_size(reclaimable)


def cmd_system_df(g, argv) -> int:
    values = _parse(argv, DF_FLAGS, "system df", "[OPTIONS]", "Show berth disk usage")
    if values is None:
        return 0
    from berth.container import Containers

    store = _images(g)
    images = store.list()
    records = Containers(g.root, store).list()
    users: dict[str, int] = {}
    for r in records:
        users[r["Image"]] = users.get(r["Image"], 0) + 1
    # a layer shared by several images is stored, and counted, once
    layer_size: dict[str, int] = {}
    holders: dict[str, int] = {}
    per_image = []
    for image in images:
        sizes = store.layer_sizes(image)
        per_image.append((image, sizes))
        for chain, size in dict(sizes).items():
            layer_size[chain] = size
            holders[chain] = holders.get(chain, 0) + 1
    total = sum(layer_size.values())
    active_chains = {chain for image, sizes in per_image if users.get(image.id)
                     for chain, _ in sizes}
    active_images = sum(1 for image in images if users.get(image.id))
    image_reclaimable = total - sum(layer_size[c] for c in active_chains)
    csizes = {r["Id"]: container_size(r) for r in records}
    ctotal = sum(csizes.values())
    creclaimable = sum(csizes[r["Id"]] for r in records if not r["State"]["Running"])
    running = sum(1 for r in records if r["State"]["Running"])
    if not values["verbose"]:
        rows = [["Images", str(len(images)), str(active_images), fmt.human_size(total),
                 _reclaimable(image_reclaimable, total)],
                ["Containers", str(len(records)), str(running), fmt.human_size(ctotal),
                 _reclaimable(creclaimable, ctotal)],
                ["Local Volumes", "0", "0", "0B", "0B"],
                ["Build Cache", "0", "0", "0B", "0B"]]
        sys.stdout.write(fmt.table(["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], rows))
        return 0
    from berth.cli.containers import command_text, status_text

    rows = []
    for image, sizes in sorted(per_image, key=lambda p: p[0].config.created or "", reverse=True):
        size = sum(s for _c, s in sizes)
        shared = sum(s for c, s in dict(sizes).items() if holders[c] > 1)
        for name in image.names or (None,):
            repo, _, tag = _familiar(name).rpartition(":") if name else ("<none>", "", "<none>")
            rows.append([repo, tag, image.short_id, fmt.ago(image.config.created or "") or "N/A",
                         fmt.human_size(size), fmt.human_size(shared),
                         fmt.human_size(size - shared), str(users.get(image.id, 0))])
    out = ["Images space usage:\n\n" + fmt.table(
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE", "UNIQUE SIZE",
         "CONTAINERS"], rows)]
    rows = []
    for r in records:
        image = r["Config"]["Image"]
        rows.append([r["Id"][:12], image[7:19] if image.startswith("sha256:") else image,
                     command_text(r, False), "0", fmt.human_size(csizes[r["Id"]]),
                     fmt.ago(r["Created"]), status_text(r["State"]), r["Name"].lstrip("/")])
    out.append("Containers space usage:\n\n" + fmt.table(
        ["CONTAINER ID", "IMAGE", "COMMAND", "LOCAL VOLUMES", "SIZE", "CREATED", "STATUS",
         "NAMES"], rows))
    out.append("Local Volumes space usage:\n\n" + fmt.table(["VOLUME NAME", "LINKS", "SIZE"], []))
    out.append("Build cache usage: 0B\n\n" + fmt.table(
        ["CACHE ID", "CACHE TYPE", "SIZE", "CREATED", "LAST USED", "USAGE", "SHARED"], []))
    sys.stdout.write("\n".join(out))
    return 0


def cmd_system_check(g, argv) -> int:
    values = _parse(argv, CHECK_FLAGS, "system check", "[OPTIONS]",
                    "Verify every blob, image record, layer and container of the store")
    if values is None:
        return 0
    from berth.image import gc

    store = _images(g)
    if values["repair"]:
        done, result = gc.repair(store)
        sys.stdout.write("".join(line + "\n" for line in done))
    else:
        result = gc.check(store)
    sys.stdout.write("".join(f"{p}\n" for p in result.problems))
    if result.problems:
        hint = ("" if values["repair"] else "; 'berth system check --repair' removes what is "
                "corrupt, unusable or left over")
        sys.stderr.write(f"berth: {len(result.problems)} problem"
                         f"{'s' if len(result.problems) != 1 else ''} found{hint}\n")
        return 1
    c = result.counts
    sys.stdout.write(f"No problems found: {c.get('images', 0)} images, {c.get('blobs', 0)} blobs, "
                     f"{c.get('snapshots', 0)} layers, {c.get('containers', 0)} containers "
                     "checked\n")
    return 0
