"""The registry client: pull, push and login over the distribution API (Docker Registry
HTTP API v2 / OCI distribution 1.1). The registry server is berth.registry.server.

    config.py   where a registry name is reached: endpoints, mirrors, insecure registries
    client.py   HTTP (a pooled http.client transport) and the distribution API calls
    auth.py     Docker's config.json credentials and helpers; basic and bearer handshakes
    pull.py     manifests -> verified blobs -> unpacked layers -> an image record; auto-pull
    push.py     an image record -> missing blobs (mounted or uploaded) -> manifest last

This module holds what pull and push share: connecting to an endpoint, and the progress
display. It imports nothing heavy: ``berth run`` imports berth.registry.pull only when an
image is missing, and no HTTP code loads before a request is made.
"""

from __future__ import annotations

import threading
import time

PARALLEL = 3  # blobs transferred at once (Docker's max-concurrent-downloads)


def connect(cfg, endpoint, transport=None, credentials=None):
    """A client.Registry for `endpoint` of the registries config `cfg`."""
    from berth.registry.auth import Authenticator
    from berth.registry.client import Registry, Transport

    transport = transport or Transport()

    def verify_for(host: str) -> bool:
        return endpoint.verify_tls if host == endpoint.host else not cfg.is_insecure(host)

    # a mirror gets its own host's credentials: docker.io's must not leak to it
    owner = endpoint.host if endpoint.mirror else endpoint.registry
    auth = Authenticator(owner, transport, verify_for, credentials)
    return Registry(endpoint, transport, auth)


def human_size(size: float) -> str:
    """Docker's HumanSize: decimal units, four significant digits."""
    units = ("B", "kB", "MB", "GB", "TB")
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.4g}{units[i]}"


def bar(current: int, total: int, width: int = 50) -> str:
    """Docker's progress bar: ``[=====>     ]  12.3MB/45.6MB``."""
    if total <= 0:
        return f"{human_size(current):>8}"
    filled = min(width, int(width * current / total))
    arrow = ">" if filled < width else "=>"
    bar_text = "=" * (filled - (1 if filled == width else 0)) + arrow
    return f"[{bar_text.ljust(width + 1)[:width + 1]}] {human_size(current):>8}/{human_size(total)}"


class Progress:
    """Docker's transfer display: one line per layer (``<id>: <status>``), redrawn in place
    on a terminal; on anything else only status changes, one line each; with `quiet`
    nothing. Thread-safe: layer workers report from their own threads."""

    REDRAW = 0.1  # seconds between redraws of one line's byte count

    def __init__(self, out, *, quiet: bool = False, tty: bool | None = None) -> None:
        self.out = out
        self.quiet = quiet
        if tty is None:
            try:
                tty = out.isatty()
            except (AttributeError, ValueError):
                tty = False
        self.tty = tty
        self._order: list[str] = []  # ids of the lines drawn since the last message
        self._status: dict[str, str] = {}
        self._drawn: dict[str, float] = {}
        self._lock = threading.Lock()

    def message(self, text: str) -> None:
        if self.quiet:
            return
        with self._lock:
            self._order = []
            self._write(text + "\n")

    def status(self, ident: str, text: str) -> None:
        """A layer's new state: always shown."""
        if self.quiet:
            return
        with self._lock:
            self._status[ident] = text
            self._draw(ident, text)

    def bytes(self, ident: str, action: str, current: int, total: int) -> None:
        """A layer's byte count: redrawn at most every REDRAW seconds, and only on a tty."""
        if self.quiet or not self.tty:
            return
        now = time.monotonic()
        if now - self._drawn.get(ident, 0.0) < self.REDRAW and current < total:
            return
        with self._lock:
            self._drawn[ident] = now
            self._draw(ident, f"{action} {bar(current, total)}")

    def _draw(self, ident: str, text: str) -> None:
        line = f"{ident}: {text}"
        if not self.tty:
            self._write(line + "\n")
            return
        if ident not in self._order:
            self._order.append(ident)
            self._write(line + "\n")
            return
        up = len(self._order) - self._order.index(ident)
        self._write(f"\x1b[{up}A\r\x1b[2K{line}\x1b[{up}B\r")

    def _write(self, text: str) -> None:
        try:
            self.out.write(text)
            self.out.flush()
        except (BrokenPipeError, ValueError):
            pass


class Cancelled(Exception):
    """Another transfer of the same operation failed: this one stops at its next read."""


def run_parallel(tasks, limit: int, cancel: threading.Event) -> None:
    """Run callables on at most `limit` threads owned here; the first failure cancels the
    rest and is raised once every thread has stopped."""
    pending = list(tasks)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        while not cancel.is_set():
            with lock:
                if not pending:
                    return
                task = pending.pop(0)
            try:
                task()
            except BaseException as exc:  # handed to the owner below
                errors.append(exc)
                cancel.set()

    threads = [threading.Thread(target=worker, name="berth-transfer", daemon=True)
               for _ in range(min(limit, len(pending)))]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except BaseException:
        # Ctrl-C: the workers stop at their next read and remove their temporary
        # snapshots (partial downloads stay, to resume); a worker stuck on a silent
        # server is not waited for
        cancel.set()
        deadline = time.monotonic() + 5
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        raise
    real = [e for e in errors if not isinstance(e, Cancelled)]
    if real or errors:
        raise (real or errors)[0]
