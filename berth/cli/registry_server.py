"""`berth registry serve` and `berth registry gc`: berth's own OCI registry."""

from __future__ import annotations

import os
import sys

from berth.cli.flags import BOOL, VALUE, Flag, UsageError, parse, parse_size, usage

HELP_FLAG = Flag(("--help",), BOOL, "Print usage")
SERVE_FLAGS = (
    Flag(("--addr",), VALUE, "Address to listen on, HOST:PORT (port 0: any free port)",
         default="127.0.0.1:5000"),
    Flag(("--root",), VALUE, "Directory of the registry's storage (default: the berth root's "
         "registry/)"),
    Flag(("--htpasswd",), VALUE, "Require basic auth against this htpasswd file (bcrypt or {SHA})",
         metavar="FILE"),
    Flag(("--max-upload",), VALUE, "Largest blob accepted, e.g. 10g (default: no limit)",
         metavar="SIZE"),
    Flag(("--read-only",), BOOL, "Serve pulls only; pushes and deletes are denied"),
)
GC_FLAGS = (
    Flag(("--root",), VALUE, "Directory of the registry's storage (default: the berth root's "
         "registry/)"),
    Flag(("--dry-run",), BOOL, "Only list the blobs that would be removed"),
)
SERVE_HELP = """Serve an OCI distribution (Docker Registry v2) registry over HTTP.

Pushes, pulls, deletes, tag listing, the catalog and the referrers API; blobs are
verified against their digests before they are stored. Run 'berth registry gc' with the
server stopped to reclaim the space of deleted images."""
GC_HELP = """Remove the registry's blobs that no manifest references.

Run it with the server stopped (it refuses while one runs on the same root), like
distribution's garbage-collect."""


def _parse(argv, flags, command, description):
    values, pos = parse(argv, flags + (HELP_FLAG,))
    if values["help"]:
        sys.stdout.write(usage(command, "[OPTIONS]", description, flags) + "\n")
        return None
    if pos:
        raise UsageError(f'"berth {command}" accepts no arguments.')
    return values


def _root(g, values) -> str:
    return values["root"] or os.path.join(g.root, "registry")


def _address(text: str) -> tuple[str, int]:
    """HOST:PORT, [V6]:PORT or :PORT (every interface), as distribution's http.addr."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise UsageError(f'invalid argument "{text}" for "--addr" flag: want HOST:PORT')
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def cmd_registry_serve(g, argv) -> int:
    values = _parse(argv, SERVE_FLAGS, "registry serve", SERVE_HELP)
    if values is None:
        return 0
    host, port = _address(values["addr"])
    max_upload = None
    if values["max_upload"]:
        max_upload = parse_size(values["max_upload"], "--max-upload")
        if max_upload <= 0:
            raise UsageError('invalid argument for "--max-upload" flag: must be positive')
    import asyncio

    from berth.registry.server.app import serve
    from berth.registry.server.auth import Htpasswd
    from berth.registry.server.storage import Storage

    htpasswd = Htpasswd(values["htpasswd"]) if values["htpasswd"] else None
    storage = Storage(_root(g, values))
    lock = storage.lock(exclusive=False)
    if lock is None:
        from berth.errors import FailedPrecondition

        raise FailedPrecondition(f"'berth registry gc' is running on {storage.root}; serve "
                                 "when it is done")
    removed = storage.purge_uploads()

    def ready(bound_host: str, bound_port: int) -> None:
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        sys.stdout.write(f"berth registry serving {storage.root} on "
                         f"http://{shown}:{bound_port}"
                         + (f" (purged {removed} abandoned uploads)" if removed else "") + "\n")
        sys.stdout.flush()

    try:
        asyncio.run(serve(storage, host, port, htpasswd=htpasswd, max_upload=max_upload,
                          read_only=values["read_only"], ready=ready))
    finally:
        os.close(lock)
    return 0


def cmd_registry_gc(g, argv) -> int:
    values = _parse(argv, GC_FLAGS, "registry gc", GC_HELP)
    if values is None:
        return 0
    from berth.cli.format import human_size
    from berth.registry.server import gc

    def log(line: str) -> None:
        sys.stdout.write(line + "\n")

    report = gc.collect(_root(g, values), dry_run=values["dry_run"], log=log)
    verb = "would be removed" if values["dry_run"] else "removed"
    sys.stdout.write(f"{report.marked} blobs marked, {len(report.removed)} blobs {verb}, "
                     f"{human_size(report.freed)} {'to free' if values['dry_run'] else 'freed'}\n")
    return 0
