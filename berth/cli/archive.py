"""Interchange commands: save, load, export."""

from __future__ import annotations

import contextlib
import os
import sys

from berth.cli.flags import BOOL, VALUE, Flag, UsageError, parse, usage
from berth.errors import InvalidArgument

HELP_FLAG = Flag(("--help",), BOOL, "Print usage")
SAVE_FLAGS = (
    Flag(("-o", "--output"), VALUE, "Write to a file, instead of STDOUT"),
    Flag(("--format",), VALUE, "docker-archive (also an OCI layout) or oci-archive",
         default="docker-archive"),
)
LOAD_FLAGS = (
    Flag(("-i", "--input"), VALUE, "Read from tar archive file, instead of STDIN"),
    Flag(("-q", "--quiet"), BOOL, "Suppress the load output"),
)
EXPORT_FLAGS = (
    Flag(("-o", "--output"), VALUE, "Write to a file, instead of STDOUT"),
)
TERMINAL = "cowardly refusing to save to a terminal. Use the -o flag or redirect"


def _help(values, command, synopsis, description, flags) -> bool:
    if values.get("help"):
        sys.stdout.write(usage(command, synopsis, description, flags) + "\n")
        return True
    return False


@contextlib.contextmanager
def _output(path: str | None):
    """An fd to write a tar to: FILE, renamed into place only when complete, or stdout."""
    if not path:
        if os.isatty(1):
            raise InvalidArgument(TERMINAL)
        sys.stdout.flush()
        yield 1
        return
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.urandom(4).hex()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise InvalidArgument(f"failed to save to {path}: {exc.strerror}") from None
    try:
        yield fd
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        os.unlink(tmp)
        raise


def cmd_save(g, argv) -> int:
    values, pos = parse(argv, SAVE_FLAGS + (HELP_FLAG,))
    if _help(values, "save", "[OPTIONS] IMAGE [IMAGE...]",
             "Save one or more images to a tar archive (streamed to STDOUT by default)",
             SAVE_FLAGS):
        return 0
    if not pos:
        raise UsageError('"berth save" requires at least 1 argument.')
    from berth.image import ImageStore
    from berth.image.archive import FORMATS, save

    if values["format"] not in FORMATS:
        raise UsageError(f"invalid --format {values['format']!r}: use one of {', '.join(FORMATS)}")
    store = ImageStore(g.root)
    with _output(values["output"]) as fd:
        save(store, pos, fd, values["format"])
    return 0


def cmd_load(g, argv) -> int:
    values, pos = parse(argv, LOAD_FLAGS + (HELP_FLAG,))
    if _help(values, "load", "[OPTIONS]", "Load an image from a tar archive or STDIN", LOAD_FLAGS):
        return 0
    if pos:
        raise UsageError('"berth load" accepts no arguments.')
    from berth.image import ImageStore
    from berth.image.archive import load
    from berth.oci import reference

    store = ImageStore(g.root)
    path = values["input"]
    if path and path != "-":
        try:
            f = open(path, "rb")
        except OSError as exc:
            raise InvalidArgument(f"open {path}: {exc.strerror}") from None
        with f:
            result = load(store, f)
    else:
        if os.isatty(0):
            raise InvalidArgument("requested load from stdin, but stdin is empty")
        result = load(store, sys.stdin.buffer)
    out = []
    for name, old_id in result.renamed:
        out.append(f"The image {reference.parse(name).familiar()} already exists, renaming the "
                   f"old one with ID {old_id} to empty string")
    for name, image_id in result.images:
        out.append(f"Loaded image: {reference.parse(name).familiar()}" if name
                   else f"Loaded image ID: {image_id}")
    sys.stdout.write("".join(line + "\n" for line in out))
    return 0


def cmd_export(g, argv) -> int:
    values, pos = parse(argv, EXPORT_FLAGS + (HELP_FLAG,))
    if _help(values, "export", "[OPTIONS] CONTAINER",
             "Export a container's filesystem as a tar archive", EXPORT_FLAGS):
        return 0
    if len(pos) != 1:
        raise UsageError('"berth export" requires exactly 1 argument.')
    from berth.container import Containers
    from berth.image import ImageStore
    from berth.image.archive import export_rootfs

    store = ImageStore(g.root)
    record = Containers(g.root, store).get(pos[0])
    dirs = record["GraphDriver"]["Data"]
    lowerdirs = store.snapshots.lowerdirs(record["Berth"]["ImageChain"])
    with _output(values["output"]) as fd:
        export_rootfs(dirs["UpperDir"], lowerdirs, dirs["MergedDir"], fd)
    return 0
