"""The per-container monitor: the role conmon and containerd-shim play.

One monitor process owns one container for its whole life: it is the container's
parent (a child subreaper, so the runtime's stage A can step away), reads its output
and writes the json-file log, holds its pty, relays attached clients (those three are
berth.container.relay), records every exit, applies the restart policy with Docker's
back-off, and runs health checks. It outlives the CLI that asked for it; the CLI only
talks to it through <root>/run/monitors/<id>.sock.

Monitors are forked from the hub (berth.container.hub), a long-lived process that has
already imported everything, so a monitor costs a fork rather than an interpreter start,
and the pages they never write stay shared with the hub and with each other. The loop
below is written to touch little memory: no threads, no per-iteration allocations it can
avoid, and the garbage collector frozen by the hub before forking.
"""

from __future__ import annotations

import os
import select
import signal
import time

from berth import errors
from berth import ipc as wire
from berth.container.relay import Client, Relay, client_from, clients_from_arg, tell
from berth.trace import trace

# Docker's restart manager: 100 ms doubling per restart, at most a minute, back to
# 100 ms once a run lasted 10 s
BACKOFF_START = 0.1
BACKOFF_MAX = 60.0
BACKOFF_RESET_AFTER = 10.0

SHIM_AFTER = 1.0  # seconds a container runs before its monitor becomes berth-shim


def shim_path() -> str | None:
    """berth-shim, if built: $BERTH_SHIM, beside the interpreter (the venv), or on PATH."""
    import sys as _sys

    candidates = [os.environ.get("BERTH_SHIM") or "",
                  os.path.join(os.path.dirname(_sys.executable), "berth-shim")]
    candidates += [os.path.join(d, "berth-shim") for d in os.environ.get("PATH", "").split(":")
                   if d]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    return None


def monitor_socket_dir(root: str) -> str:
    path = os.path.join(wire.run_dir(root), "monitors")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


class Monitor:
    def __init__(self, containers, cid: str) -> None:
        self.containers = containers
        self.cid = cid
        self.relay = Relay()
        self.proc = None
        self.restarts = 0
        self.backoff = BACKOFF_START
        self.listener = None
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.health = None
        self._polled: set[int] = set()
        self.started_at = 0.0
        self.last_code = 0
        self.shim = shim_path()

    # --- life ----------------------------------------------------------------------

    def _signals(self) -> None:
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w)
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_IGN)

    def serve(self, first: Client | None, start) -> None:
        """Start the container with `start(stdio, console_size)`, then supervise it.

        `first` is the client that asked (it gets the "started" or "error" event).
        """
        self._signals()
        try:
            self._launch(first, start)
        except errors.BerthError as exc:
            if first is not None:
                tell(first, {"event": "error", "message": str(exc),
                             "code": getattr(exc, "exit_code", 125)})
                first.close()
            return
        self.listener = wire.listen(monitor_socket_dir(self.containers.root), f"{self.cid}.sock")
        self._supervise(None)

    def resume(self, status: int, listener, clients: list[Client]) -> None:
        """Carry on after berth-shim: the container exited with wait status `status`."""
        self._signals()
        self.listener = listener
        self.relay.clients = clients
        record = self._safe_get()
        if record is not None:
            from berth.container.logs import parse_time

            started = parse_time(record["State"]["StartedAt"]) or time.time()
            self.started_at = time.monotonic() - (time.time() - started)
        self._supervise(status)

    def _supervise(self, status: int | None) -> None:
        while True:
            if status is None:
                status = self._loop()
            record = self._finish(status)
            status = None
            if not self._restart_wanted(record, status):
                break
            self._notify_exit()
            if not self._sleep_backoff():
                break
            try:
                self._launch(None, self._start_again)
            except errors.BerthError:
                continue
        self._close_listener()
        record = self._safe_get()
        if record is not None and record["HostConfig"].get("AutoRemove"):
            # --rm: gone before the CLI hears of the exit, as `docker run --rm` waits for it
            try:
                self.containers.remove(self.cid, force=True)
            except errors.BerthError:
                pass
            trace("monitor: removed")
        self._notify_exit()

    def _start_again(self, stdio, size):
        proc = self.containers.start(self.cid, stdio, console_size=size, detached=True)
        return self.containers.store.read(self.cid), proc

    def _launch(self, first: Client | None, start) -> None:
        from berth.runtime import Stdio

        record = self._safe_get()  # None for `run`: the record is made by start()
        cfg = record["Config"] if record else {}
        open_stdin = bool(cfg.get("OpenStdin")) or bool(first and first.stdin is not None)
        tty = bool(cfg.get("Tty")) if record else bool(first and first.tty)
        in_r, out_w, err_w = self.relay.open(tty, open_stdin)
        stdio = Stdio() if tty else Stdio(in_r, out_w, err_w)
        size = first.console_size if first is not None else None
        trace("monitor: start")
        try:
            record, self.proc = start(stdio, tuple(size) if size else None)
            trace("monitor: started")
        finally:
            for fd in (in_r, out_w, err_w):
                if fd is not None:
                    os.close(fd)
        self.cid = record["Id"]
        if tty:
            self.relay.console = self.proc.console
        self.relay.open_log(record)
        self.started_at = time.monotonic()
        if first is not None:
            tell(first, {"event": "started", "id": self.cid, "pid": self.proc.pid})
            self.relay.clients.append(first)
        self._setup_health(record)

    # --- the event loop ------------------------------------------------------------

    def _loop(self) -> int:
        """Relay and log until the container's PID 1 exits; return its wait status."""
        poller = select.poll()
        status = None
        while True:
            watched = self._register(poller)
            timeout = self._health_timeout()
            try:
                events = poller.poll(timeout)
            except InterruptedError:
                events = []
            for fd, _ev in events:
                self._dispatch(fd, watched)
            if status is None:
                status = self._reap()
            if self.health is not None and self.health.due():
                self.health.run(self)
            if status is not None and not self.relay.outputs_open():
                self._polled = set()
                return status
            if status is None:
                self._maybe_become_shim()

    def _register(self, poller) -> dict:
        watched = {self.wake_r: "wake"}
        if self.listener is not None:
            watched[self.listener.fileno()] = "listen"
        self.relay.watch(watched)
        for fd in self._polled - watched.keys():
            poller.unregister(fd)
        for fd in watched.keys() - self._polled:
            poller.register(fd, select.POLLIN)
        self._polled = set(watched)
        return watched

    def _dispatch(self, fd: int, watched: dict) -> None:
        what = watched.get(fd)
        if what == "wake":
            try:
                while os.read(self.wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        elif what == "listen":
            self._accept()
        else:
            self.relay.dispatch(fd, what)
            if what == "console" and self.relay.console is None and self.proc is not None:
                self.proc.console = None  # closed at its EOF: not the runtime's to close

    def _accept(self) -> None:
        try:
            conn = wire.accept(self.listener)
        except OSError:
            return
        try:
            if wire.peer_uid(conn) != 0:
                conn.close()
                return
            message, fds = wire.recv(conn)
        except (OSError, ValueError):
            conn.close()
            return
        if not message or message.get("op") != "attach":
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        c = client_from(conn, message, fds)
        tell(c, {"event": "started", "id": self.cid, "pid": self.proc.pid if self.proc else 0})
        self.relay.resize(message.get("console_size"))
        self.relay.clients.append(c)

    def _reap(self) -> int | None:
        """Collect exited children; the container's wait status once PID 1 is gone."""
        result = None
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return result
            if pid == 0:
                return result
            if self.proc is not None and pid == self.proc.pid:
                result = status
            elif self.health is not None:
                self.health.reaped(pid, status)

    # --- exits and restarts ---------------------------------------------------------

    def _finish(self, status: int) -> dict | None:
        if self.proc is not None:
            exit_status = self.proc.wait(status)
        else:
            exit_status = self._exit_status(status)  # resumed after berth-shim
        self.proc = None
        if self.relay.log is not None:
            self.relay.log.flush()
        self.relay.close_stdin()
        self.containers.finish(self.cid, exit_status)
        self.last_code = exit_status.code
        ran_for = time.monotonic() - self.started_at
        if ran_for >= BACKOFF_RESET_AFTER:
            self.backoff = BACKOFF_START
        return self._safe_get()

    def _notify_exit(self) -> None:
        for c in list(self.relay.clients):
            tell(c, {"event": "exit", "code": self.last_code})
            self.relay.drop(c)

    def _restart_wanted(self, record: dict | None, status: int) -> bool:
        if record is None:
            return False  # removed
        policy = record["HostConfig"].get("RestartPolicy") or {}
        name = policy.get("Name") or "no"
        if record["Berth"].get("ManuallyStopped"):
            return False
        if name in ("always", "unless-stopped"):
            return True
        if name == "on-failure":
            limit = int(policy.get("MaximumRetryCount") or 0)
            return self.last_code != 0 and (limit <= 0 or record["RestartCount"] < limit)
        return False

    def _sleep_backoff(self) -> bool:
        """Wait out the back-off, marked as restarting; False if stopped meanwhile."""
        self.containers.mark_restarting(self.cid)
        deadline = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            readable, _, _ = select.select([self.listener.fileno(), self.wake_r], [], [], left)
            if self.listener.fileno() in readable:
                conn = wire.accept(self.listener)
                conn.close()  # attach during a back-off: nothing to attach to yet
        record = self._safe_get()
        return record is not None and not record["Berth"].get("ManuallyStopped")

    def _safe_get(self) -> dict | None:
        try:
            return self.containers.store.read(self.cid)
        except errors.NotFound:
            return None

    def _close_listener(self) -> None:
        if self.listener is not None:
            self.listener.close()
            try:
                os.unlink(os.path.join(monitor_socket_dir(self.containers.root),
                                       f"{self.cid}.sock"))
            except OSError:
                pass
            self.listener = None
        if self.relay.log is not None:
            self.relay.log.close()
            self.relay.log = None

    # --- health checks ---------------------------------------------------------------

    def _setup_health(self, record: dict) -> None:
        from berth.container.health import HealthChecker

        self.health = HealthChecker.for_record(self.containers, record)

    def _health_timeout(self) -> int:
        waits = []
        if self.health is not None:
            waits.append(self.health.seconds_left())
        if self.shim is not None and self.proc is not None:
            waits.append(max(0.0, self.started_at + SHIM_AFTER - time.monotonic()))
        return int(min(waits) * 1000) if waits else -1

    def _exit_status(self, status: int):
        """What ContainerProcess.wait() gives, for a container this process did not start."""
        from berth.runtime import ExitStatus

        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        code = 128 + sig if sig else os.WEXITSTATUS(status)
        oom = False
        record = self._safe_get()
        if record is not None:
            cgroup = self.containers.cgroup_of(record)
            for _ in range(500):
                if not cgroup.procs():
                    break
                time.sleep(0.002)
            oom = cgroup.oom_killed()
            try:
                cgroup.destroy()
            except OSError:
                pass
        return ExitStatus(code, sig, oom)

    # --- becoming berth-shim ------------------------------------------------------------

    def _maybe_become_shim(self) -> None:
        """A container still running after SHIM_AFTER: exec berth-shim to shed our memory."""
        if self.shim is None or self.proc is None or self.relay.log is None:
            return
        if time.monotonic() - self.started_at < SHIM_AFTER:
            return
        if self.health is not None and self.health.worker is not None:
            return  # a check in flight is our child; let it finish first
        import sys as _sys

        record = self._safe_get()
        if record is None:
            return
        relayed, keep = self.relay.shim_args()
        args = [self.shim, "--id", self.cid, "--pid", str(self.proc.pid),
                "--listen", str(self.listener.fileno())] + relayed
        keep.append(self.listener.fileno())
        if self.health is not None:
            args += ["--health-interval-ms", str(int(self.health.interval * 1000)),
                     "--health", _sys.executable, "-m", "berth.container.health",
                     self.containers.root, self.cid, "--"]
        args += ["--finish", _sys.executable, "-m", "berth.container.monitor",
                 "--root", self.containers.root, "--id", self.cid,
                 "--listen", str(self.listener.fileno())]
        for fd in keep:
            os.set_inheritable(fd, True)
        trace("monitor: exec berth-shim")
        signal.set_wakeup_fd(-1)
        os.execv(self.shim, args)


def main(argv: list[str]) -> int:
    """The monitor again, exec'd by berth-shim when the container's PID 1 has exited."""
    import _socket

    args = dict(zip(argv[::2], argv[1::2]))
    from berth.container import Containers
    from berth.image import ImageStore

    containers = Containers(args["--root"], ImageStore(args["--root"]))
    listener = _socket.socket(fileno=int(args["--listen"]))
    clients = clients_from_arg(args.get("--clients", ""))
    for fd in [listener.fileno()] + [c.sock.fileno() for c in clients]:
        os.set_inheritable(fd, False)
    Monitor(containers, args["--id"]).resume(int(args["--status"]), listener, clients)
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
