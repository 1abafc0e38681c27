"""Images as history: commit, diff, history, image diff."""

from __future__ import annotations

import sys

from berth.cli import format as fmt
from berth.cli.flags import BOOL, LIST, VALUE, Flag, UsageError, parse, usage

HELP_FLAG = Flag(("--help",), BOOL, "Print usage")
COMMIT_FLAGS = (
    Flag(("-a", "--author"), VALUE, 'Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")'),
    Flag(("-c", "--change"), LIST, "Apply Dockerfile instruction to the created image"),
    Flag(("-m", "--message"), VALUE, "Commit message"),
    Flag(("-p", "--pause"), BOOL, "Pause container during commit", default=True),
)
HISTORY_FLAGS = (
    Flag(("-H", "--human"), BOOL, "Print sizes and dates in human readable format",
         default=True),
    Flag(("--no-trunc",), BOOL, "Don't truncate output"),
    Flag(("-q", "--quiet"), BOOL, "Only show image IDs"),
)


def _parse(argv, flags, command, synopsis, description):
    values, pos = parse(argv, flags + (HELP_FLAG,))
    if values["help"]:
        sys.stdout.write(usage(command, synopsis, description, flags) + "\n")
        return values, None
    return values, pos


def _services(g):
    from berth.container import Containers
    from berth.image import ImageStore

    images = ImageStore(g.root)
    return images, Containers(g.root, images)


def _print_changes(changes) -> None:
    sys.stdout.write("".join(f"{kind} {path}\n" for kind, path in changes))


def cmd_commit(g, argv) -> int:
    values, pos = _parse(argv, COMMIT_FLAGS, "commit", "[OPTIONS] CONTAINER [REPOSITORY[:TAG]]",
                         "Create a new image from a container's changes")
    if pos is None:
        return 0
    if not 1 <= len(pos) <= 2:
        raise UsageError('"berth commit" requires at least 1 and at most 2 arguments.')
    from berth.image.commit import commit

    images, containers = _services(g)
    image = commit(images, containers, pos[0], pos[1] if len(pos) > 1 else None,
                   message=values["message"] or "", author=values["author"] or "",
                   changes=values["change"], pause=values["pause"])
    sys.stdout.write(image.id + "\n")
    return 0


def cmd_diff(g, argv) -> int:
    values, pos = _parse(argv, (), "diff", "CONTAINER",
                         "Inspect changes to files or directories on a container's filesystem")
    if pos is None:
        return 0
    if len(pos) != 1:
        raise UsageError('"berth diff" requires exactly 1 argument.')
    from berth.image.commit import container_changes

    _print_changes(container_changes(_services(g)[1], pos[0]))
    return 0


def cmd_image_diff(g, argv) -> int:
    values, pos = _parse(argv, (), "image diff", "IMAGE1 IMAGE2",
                         "Show the files that differ between two images")
    if pos is None:
        return 0
    if len(pos) != 2:
        raise UsageError('"berth image diff" requires exactly 2 arguments.')
    from berth.image import ImageStore
    from berth.image.commit import image_changes

    _print_changes(image_changes(ImageStore(g.root), pos[0], pos[1]))
    return 0


def cmd_history(g, argv) -> int:
    values, pos = _parse(argv, HISTORY_FLAGS, "history", "[OPTIONS] IMAGE",
                         "Show the history of an image")
    if pos is None:
        return 0
    if len(pos) != 1:
        raise UsageError('"berth history" requires exactly 1 argument.')
    from berth.image import ImageStore
    from berth.image.commit import history

    rows = history(ImageStore(g.root), pos[0])
    no_trunc, human = values["no_trunc"], values["human"]

    def shown_id(image_id):
        if image_id is None:
            return "<missing>"
        return image_id if no_trunc else image_id.partition(":")[2][:12]

    if values["quiet"]:
        sys.stdout.write("".join(shown_id(r.image_id) + "\n" for r in rows))
        return 0
    table = []
    for r in rows:
        created_by = r.created_by.replace("\t", " ")
        table.append([
            shown_id(r.image_id),
            (fmt.ago(r.created or "") if human else _rfc3339_local(r.created)) or "N/A",
            created_by if no_trunc else fmt.truncate(created_by, 45),
            fmt.human_size(r.size) if human else str(r.size),
            r.comment,
        ])
    sys.stdout.write(fmt.table(["IMAGE", "CREATED" if human else "CREATED AT", "CREATED BY",
                                "SIZE", "COMMENT"], table))
    return 0


def _rfc3339_local(created: str | None) -> str:
    """Docker's --human=false date: RFC 3339 in local time, to the second."""
    import time

    t = fmt.parse_time(created or "")
    if t is None:
        return ""
    text = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))
    offset = text[-5:]
    return text[:-5] + ("Z" if offset == "+0000" else f"{offset[:3]}:{offset[3:]}")
