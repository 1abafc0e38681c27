"""Image commands: import, images, rmi, tag, image inspect."""

from __future__ import annotations

import sys

from berth.cli import format as fmt
from berth.cli.filters import label_match
from berth.cli.flags import BOOL, LIST, VALUE, Flag, UsageError, parse, usage
from berth.errors import BerthError, Conflict, InvalidArgument

HELP_FLAG = Flag(("--help",), BOOL, "Print usage")
IMPORT_FLAGS = (
    Flag(("-c", "--change"), LIST, "Apply Dockerfile instruction to the created image"),
    Flag(("-m", "--message"), VALUE, "Set commit message for imported image"),
    Flag(("--platform",), VALUE, "Set platform if server is multi-platform capable"),
)
IMAGES_FLAGS = (
    Flag(("-a", "--all"), BOOL, "Show all images"),
    Flag(("-q", "--quiet"), BOOL, "Only show image IDs"),
    Flag(("--no-trunc",), BOOL, "Don't truncate output"),
    Flag(("--digests",), BOOL, "Show digests"),
    Flag(("-f", "--filter"), LIST, "Filter output based on conditions provided "
         "(dangling=true|false, reference=PATTERN, before=IMAGE, since=IMAGE, label=KEY[=VALUE])"),
)
RMI_FLAGS = (
    Flag(("-f", "--force"), BOOL, "Force removal of the image"),
    Flag(("--no-prune",), BOOL, "Do not delete untagged parents"),
)


def _stores(g):
    from berth.image import ImageStore

    return ImageStore(g.root)


def _help(values, command, synopsis, description, flags) -> bool:
    if values.get("help"):
        sys.stdout.write(usage(command, synopsis, description, flags) + "\n")
        return True
    return False


def cmd_import(g, argv) -> int:
    values, pos = parse(argv, IMPORT_FLAGS + (HELP_FLAG,))
    if _help(values, "import", "[OPTIONS] file|URL|- [REPOSITORY[:TAG]]",
             "Import the contents from a tarball to create a filesystem image", IMPORT_FLAGS):
        return 0
    if not 1 <= len(pos) <= 2:
        raise UsageError('"berth import" requires at least 1 and at most 2 arguments.')
    source = pos[0]
    name = pos[1] if len(pos) > 1 else None
    from berth.image import import_tarball

    store = _stores(g)
    if source == "-":
        image = import_tarball(store, sys.stdin.buffer, name, values["change"],
                               values["message"] or "", "-")
    else:
        if "://" in source:
            raise InvalidArgument(f"importing from a URL ({source}) is not supported: download it "
                                  "and import the file")
        try:
            f = open(source, "rb")
        except OSError as exc:
            raise InvalidArgument(f"open {source}: {exc.strerror}") from None
        with f:
            image = import_tarball(store, f, name, values["change"], values["message"] or "",
                                   source)
    sys.stdout.write(image.id + "\n")
    return 0


def image_size(image, store=None) -> int:
    """The image's size as Docker and podman show it: its layers, uncompressed."""
    if store is not None:
        return store.image_size(image)
    return sum(layer.size for layer in image.manifest.layers)


FILTER_KEYS = ("dangling", "reference", "before", "since", "label")


def parse_filters(specs: list[str]) -> dict[str, list[str]]:
    """Docker's --filter key=value, repeatable; the same key ORs, different keys AND."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        key, eq, value = spec.partition("=")
        key = key.strip().lower()
        if not eq:
            raise InvalidArgument(f"bad format of filter (expected name=value): {spec}")
        if key not in FILTER_KEYS:
            raise InvalidArgument(f"invalid filter '{key}'")
        if key == "dangling" and value.lower() not in ("true", "false", "1", "0"):
            raise InvalidArgument(f"invalid filter 'dangling={value}'")
        out.setdefault(key, []).append(value)
    return out


def glob_match(pattern: str, text: str) -> bool:
    """Go's path.Match, as Docker's reference filter uses it: '*' and '?' stop at '/'."""
    import re

    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise InvalidArgument(f"invalid reference filter pattern {pattern!r}")
            # Go's classes read like Python's: ranges, a leading '^' negates
            out.append("[" + pattern[i + 1:end].replace("[", "\\[") + "]")
            i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    try:
        return re.fullmatch("".join(out), text) is not None
    except re.error:
        raise InvalidArgument(f"invalid reference filter pattern {pattern!r}") from None


def reference_matches(patterns: list[str], name: str) -> bool:
    """Docker's FamiliarMatch: the pattern against familiar name:tag, then name alone."""
    from berth.oci import reference

    ref = reference.parse(name)
    full = ref.familiar()
    return any(glob_match(p, full) or glob_match(p, ref.familiar_name) for p in patterns)


def select_images(store, images, filters: dict[str, list[str]]) -> list[tuple]:
    """(image, name or None) rows the filters keep, newest first, as `images` lists them."""
    def created(image) -> float:
        return fmt.parse_time(image.config.created or "") or 0.0

    bounds = {}
    for key in ("before", "since"):
        for ref in filters.get(key, ()):
            bounds.setdefault(key, []).append(created(store.resolve(ref)))
    rows = []
    for image in images:
        if "dangling" in filters:
            want = {v.lower() in ("true", "1") for v in filters["dangling"]}
            if (not image.names) not in want:
                continue
        t = created(image)
        if any(t >= b for b in bounds.get("before", ())):
            continue
        if any(t <= b for b in bounds.get("since", ())):
            continue
        if "label" in filters and not all(label_match(image.config.config.labels, spec)
                                          for spec in filters["label"]):
            continue
        names = list(image.names) or [None]
        if "reference" in filters:
            names = [n for n in names if n and reference_matches(filters["reference"], n)]
        rows += [(image, n) for n in names]
    rows.sort(key=lambda r: created(r[0]), reverse=True)
    return rows


def cmd_images(g, argv) -> int:
    values, pos = parse(argv, IMAGES_FLAGS + (HELP_FLAG,))
    if _help(values, "images", "[OPTIONS] [REPOSITORY[:TAG]]", "List images", IMAGES_FLAGS):
        return 0
    if len(pos) > 1:
        raise UsageError('"berth images" requires at most 1 argument.')
    from berth.oci import reference

    filters = parse_filters(values["filter"])
    store = _stores(g)
    broken: list = []
    images = store.list(broken)
    for _digest, _names, exc in broken:
        sys.stderr.write(f"berth: warning: not listed: {exc}\n")
    rows = []
    for image, name in select_images(store, images, filters):
        if name:
            ref = reference.parse(name)
            repo, tag = ref.familiar_name, ref.tag or "<none>"
        else:
            repo, tag = "<none>", "<none>"
        if pos:
            want = reference.parse(pos[0], default_tag=False)
            if name is None or ref.name != want.name or (want.tag and want.tag != tag):
                continue
        rows.append((repo, tag, image.id if values["no_trunc"] else image.short_id, image))
    if values["quiet"]:
        seen = []
        for row in rows:
            if row[2] not in seen:
                seen.append(row[2])
        sys.stdout.write("".join(f"{i}\n" for i in seen))
        return 0
    headers = ["REPOSITORY", "TAG"] + (["DIGEST"] if values["digests"] else []) + \
        ["IMAGE ID", "CREATED", "SIZE"]
    table = []
    sizes: dict[str, int] = {}
    for repo, tag, shown_id, image in rows:
        row = [repo, tag]
        if values["digests"]:
            row.append(image.manifest_digest)
        if image.id not in sizes:
            sizes[image.id] = image_size(image, store)
        row += [shown_id, fmt.ago(image.config.created or "") or "N/A",
                fmt.human_size(sizes[image.id])]
        table.append(row)
    sys.stdout.write(fmt.table(headers, table))
    return 0


def cmd_tag(g, argv) -> int:
    values, pos = parse(argv, (HELP_FLAG,))
    if _help(values, "tag", "SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]",
             "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE", ()):
        return 0
    if len(pos) != 2:
        raise UsageError('"berth tag" requires exactly 2 arguments.')
    _stores(g).tag(pos[0], pos[1])
    return 0


def cmd_rmi(g, argv) -> int:
    values, pos = parse(argv, RMI_FLAGS + (HELP_FLAG,))
    if _help(values, "rmi", "[OPTIONS] IMAGE [IMAGE...]", "Remove one or more images", RMI_FLAGS):
        return 0
    if not pos:
        raise UsageError('"berth rmi" requires at least 1 argument.')
    from berth.container import Containers

    store = _stores(g)
    containers = Containers(g.root, store)
    status = 0
    for ref in pos:
        try:
            for line in remove_image(store, containers, ref, values["force"]):
                sys.stdout.write(line + "\n")
        except BerthError as exc:
            sys.stderr.write(f"berth: {exc}\n")
            status = 1
    return status


def remove_image(store, containers, ref: str, force: bool) -> list[str]:
    """Docker's rmi rules: a name only untags while other names remain; the last name, or
    an ID, deletes the image unless a container uses it."""
    from berth.oci import reference

    image = store.resolve(ref)
    by_name = not reference.looks_like_id(ref) and not image.id.removeprefix("sha256:").startswith(
        ref.removeprefix("sha256:"))
    out = []
    if by_name:
        parsed = reference.parse(ref)
        full = f"{parsed.name}:{parsed.tag}" if parsed.tag else None
        if full in image.names and len(image.names) > 1:
            store.untag(full)
            return [f"Untagged: {parsed.familiar()}"]
    elif len(image.names) > 1 and not force:
        raise Conflict(f"conflict: unable to delete {image.short_id} (must be forced) - image is "
                       "referenced in multiple repositories")
    users = containers.users_of(image.id)
    if users:
        running = [c for c in users if containers.get(c)["State"]["Running"]]
        if running:
            raise Conflict(f"conflict: unable to delete {image.short_id} (cannot be forced) - image "
                           f"is being used by running container {running[0][:12]}")
        if not force:
            if by_name:
                raise Conflict(f'conflict: unable to remove repository reference "{ref}" (must '
                               f"force) - container {users[0][:12]} is using its referenced image "
                               f"{image.short_id}")
            raise Conflict(f"conflict: unable to delete {image.short_id} (must be forced) - image "
                           f"is being used by stopped container {users[0][:12]}")
        # forced: the names go, the image stays for its containers; the lease keeps a
        # prune from taking it in the moment it has no record
        with store.lease():
            for name in image.names:
                store.untag(name)
                out.append(f"Untagged: {reference.parse(name).familiar()}")
            store.add(image.manifest_digest, None)
        return out
    for name in image.names:
        out.append(f"Untagged: {reference.parse(name).familiar()}")
    store.delete(image)
    out.append(f"Deleted: {image.id}")
    return out


def image_inspect_dict(store, image) -> dict:
    from berth.oci import reference

    cfg = image.config
    c = cfg.config
    history = cfg.history
    return {
        "Id": image.id,
        "RepoTags": [reference.parse(n).familiar() for n in image.names],
        "RepoDigests": [],
        "Parent": "",
        "Comment": history[-1].comment or "" if history else "",
        "Created": cfg.created or "",
        "DockerVersion": "",
        "Author": cfg.author or "",
        "Config": {
            "Hostname": "", "Domainname": "", "User": c.user or "",
            "AttachStdin": False, "AttachStdout": False, "AttachStderr": False,
            "ExposedPorts": c.exposed_ports, "Tty": False, "OpenStdin": False,
            "StdinOnce": False, "Env": list(c.env) or None,
            "Cmd": list(c.cmd) if c.cmd is not None else None,
            "Image": "", "Volumes": c.volumes, "WorkingDir": c.working_dir or "",
            "Entrypoint": list(c.entrypoint) if c.entrypoint is not None else None,
            "OnBuild": list(c.on_build) or None, "Labels": c.labels,
            **({"Healthcheck": {"Test": list(c.healthcheck.test),
                                **{k: v for k, v in (("Interval", c.healthcheck.interval),
                                                     ("Timeout", c.healthcheck.timeout),
                                                     ("StartPeriod", c.healthcheck.start_period),
                                                     ("Retries", c.healthcheck.retries)) if v}}}
               if c.healthcheck else {}),
            **({"Shell": list(c.shell)} if c.shell else {}),
            **({"StopSignal": c.stop_signal} if c.stop_signal else {}),
        },
        "Architecture": cfg.architecture,
        **({"Variant": cfg.variant} if cfg.variant else {}),
        "Os": cfg.os,
        "Size": image_size(image, store),
        "GraphDriver": {"Name": "overlay", "Data": {
            "LowerDir": ":".join(store.snapshots.fs(ch) for ch in reversed(image.chain_ids))}},
        "RootFS": {"Type": "layers", "Layers": list(image.diff_ids)},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    }


def cmd_image_inspect(g, argv) -> int:
    from berth.cli.containers import INSPECT_FLAGS, emit_inspect

    values, pos = parse(argv, INSPECT_FLAGS[1:] + (HELP_FLAG,))
    if _help(values, "image inspect", "[OPTIONS] IMAGE [IMAGE...]",
             "Display detailed information on one or more images", INSPECT_FLAGS[1:]):
        return 0
    if not pos:
        raise UsageError('"berth image inspect" requires at least 1 argument.')
    store = _stores(g)
    return emit_inspect(pos, lambda ref: image_inspect_dict(store, store.resolve(ref)),
                        values["format"])
