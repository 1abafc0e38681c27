"""The per-container monitor: the role conmon and containerd-shim play.

One monitor process owns one container for its whole life: it is the container's
parent (a child subreaper, so the runtime's stage A can step away), reads its output
and writes the json-file log, holds its pty, relays attached clients, records every
exit, applies the restart policy with Docker's back-off, and runs health checks. It
outlives the CLI that asked for it; the CLI only talks to it through
<root>/run/monitors/<id>.sock.

Monitors are forked from the hub (berth.container.hub), a long-lived process that has
already imported everything, so a monitor costs a fork rather than an interpreter start,
and the pages they never write stay shared with the hub and with each other. The loop
below is written to touch little memory: no threads, no per-iteration allocations it can
avoid, and the garbage collector frozen by the hub before forking.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import time

from berth import errors
from berth import ipc as wire
from berth.container.logs import LogWriter
from berth.trace import trace

# Docker's restart manager: 100 ms doubling per restart, at most a minute, back to
# 100 ms once a run lasted 10 s
BACKOFF_START = 0.1
BACKOFF_MAX = 60.0
BACKOFF_RESET_AFTER = 10.0
CHUNK = 32768


class Client:
    """An attached CLI: its control socket and the fds it lent us."""

    def __init__(self, sock, stdin: int | None, stdout: int | None, stderr: int | None,
                 stdin_once: bool = False, tty: bool = False,
                 console_size: tuple[int, int] | None = None) -> None:
        self.sock = sock
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.stdin_once = stdin_once  # EOF on this stdin closes the container's stdin
        self.tty = tty
        self.console_size = console_size

    def close(self) -> None:
        for fd in (self.stdin, self.stdout, self.stderr):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.stdin = self.stdout = self.stderr = None
        try:
            self.sock.close()
        except OSError:
            pass


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
        self.clients: list[Client] = []
        self.proc = None
        self.out_r = self.err_r = self.in_w = None
        self.console = None
        self.tty = False
        self.log: LogWriter | None = None
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
                _tell(first, {"event": "error", "message": str(exc),
                              "code": getattr(exc, "exit_code", 125)})
                first.close()
            return
        self.listener = wire.listen(monitor_socket_dir(self.containers.root), f"{self.cid}.sock")
        self._supervise(None)

    def resume(self, status: int, listener, clients: list[Client]) -> None:
        """Carry on after berth-shim: the container exited with wait status `status`."""
        self._signals()
        self.listener = listener
        self.clients = clients
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
        self.tty = bool(cfg.get("Tty")) if record else bool(first and first.tty)
        in_r = out_w = err_w = None
        stdio = Stdio()
        if not self.tty:
            self.out_r, out_w = os.pipe2(os.O_CLOEXEC)
            self.err_r, err_w = os.pipe2(os.O_CLOEXEC)
            if open_stdin:
                in_r, self.in_w = os.pipe2(os.O_CLOEXEC)
            stdio = Stdio(in_r, out_w, err_w)
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
        if self.tty:
            self.console = self.proc.console
        if self.log is None:
            opts = record["HostConfig"].get("LogConfig", {}).get("Config", {})
            self.log = LogWriter(record["LogPath"], _size(opts.get("max-size")),
                                 int(opts.get("max-file", "1")))
        self.started_at = time.monotonic()
        if first is not None:
            _tell(first, {"event": "started", "id": self.cid, "pid": self.proc.pid})
            self.clients.append(first)
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
            if status is not None and not self._outputs_open():
                self._polled = set()
                return status
            if status is None:
                self._maybe_become_shim()

    def _register(self, poller) -> dict:
        watched = {}
        for fd, what in ((self.wake_r, "wake"), (self.out_r, "stdout"), (self.err_r, "stderr"),
                         (self.console, "console")):
            if fd is not None:
                watched[fd] = what
        if self.listener is not None:
            watched[self.listener.fileno()] = "listen"
        for c in self.clients:
            watched[c.sock.fileno()] = c
            if c.stdin is not None:
                watched[c.stdin] = ("stdin", c)
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
        elif what in ("stdout", "stderr", "console"):
            self._pump(fd, "stdout" if what == "console" else what)
        elif what == "listen":
            self._accept()
        elif isinstance(what, tuple):
            self._stdin(what[1])
        elif isinstance(what, Client):
            self._control(what)

    def _pump(self, fd: int, stream: str) -> None:
        try:
            data = os.read(fd, CHUNK)
        except OSError:  # EIO from a pty whose last slave closed: the end, like EOF
            data = b""
        if not data:
            os.close(fd)
            if fd == self.out_r:
                self.out_r = None
            elif fd == self.err_r:
                self.err_r = None
            elif fd == self.console:
                self.console = None
                if self.proc is not None:
                    self.proc.console = None
            return
        self.log.write(stream, data)
        for c in list(self.clients):
            target = c.stderr if stream == "stderr" and c.stderr is not None else c.stdout
            if target is None:
                continue
            try:
                _write_all(target, data)
            except OSError:
                self._drop(c)

    def _stdin(self, c: Client) -> None:
        try:
            data = os.read(c.stdin, CHUNK)
        except OSError:
            data = b""
        sink = self.console if self.tty else self.in_w
        if not data:
            os.close(c.stdin)
            c.stdin = None
            if c.stdin_once and not self.tty and self.in_w is not None:
                os.close(self.in_w)
                self.in_w = None
            return
        if sink is not None:
            try:
                _write_all(sink, data)
            except OSError:
                pass

    def _control(self, c: Client) -> None:
        try:
            message, fds = wire.recv(c.sock)
        except (OSError, ValueError):
            message, fds = None, []
        for fd in fds:
            os.close(fd)
        if message is None:
            self._drop(c)
            return
        if message.get("op") == "resize" and self.console is not None:
            import termios

            fcntl.ioctl(self.console, termios.TIOCSWINSZ,
                        struct.pack("HHHH", message["rows"], message["cols"], 0, 0))

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
        _tell(c, {"event": "started", "id": self.cid, "pid": self.proc.pid if self.proc else 0})
        if message.get("console_size") and self.console is not None:
            import termios

            rows, cols = message["console_size"]
            fcntl.ioctl(self.console, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.clients.append(c)

    def _drop(self, c: Client) -> None:
        if c in self.clients:
            self.clients.remove(c)
        c.close()

    def _outputs_open(self) -> bool:
        return any(fd is not None for fd in (self.out_r, self.err_r, self.console))

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
        if self.log is not None:
            self.log.flush()
        if self.in_w is not None:
            os.close(self.in_w)
            self.in_w = None
        self.containers.finish(self.cid, exit_status)
        self.last_code = exit_status.code
        ran_for = time.monotonic() - self.started_at
        if ran_for >= BACKOFF_RESET_AFTER:
            self.backoff = BACKOFF_START
        return self._safe_get()

    def _notify_exit(self) -> None:
        for c in list(self.clients):
            _tell(c, {"event": "exit", "code": self.last_code})
            self._drop(c)

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
        if self.log is not None:
            self.log.close()
            self.log = None

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
        if self.shim is None or self.proc is None or self.log is None:
            return
        if time.monotonic() - self.started_at < SHIM_AFTER:
            return
        if self.health is not None and self.health.worker is not None:
            return  # a check in flight is our child; let it finish first
        import sys as _sys

        record = self._safe_get()
        if record is None:
            return
        self.log.close()
        keep = []
        args = [self.shim, "--id", self.cid, "--pid", str(self.proc.pid),
                "--log", self.log.path, "--log-max-size", str(self.log.max_size),
                "--log-max-file", str(self.log.max_file)]
        if self.console is not None:
            args += ["--console", str(self.console)]
            keep.append(self.console)
        else:
            for flag, fd in (("--out", self.out_r), ("--err", self.err_r)):
                if fd is not None:
                    args += [flag, str(fd)]
                    keep.append(fd)
        if self.in_w is not None:
            args += ["--in", str(self.in_w)]
            keep.append(self.in_w)
        args += ["--listen", str(self.listener.fileno())]
        keep.append(self.listener.fileno())
        for c in self.clients:
            fds = [c.sock.fileno()] + [-1 if fd is None else fd for fd in (c.stdin, c.stdout,
                                                                           c.stderr)]
            keep += [fd for fd in fds if fd >= 0]
            args += ["--client", ":".join(str(fd) for fd in fds) + f":{int(c.stdin_once)}"]
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


def client_from(sock, message: dict, fds: list[int]) -> Client:
    """Map the fds a client sent to what it asked to attach."""
    it = iter(fds)
    stdin = next(it, None) if message.get("stdin") else None
    stdout = next(it, None) if message.get("stdout") else None
    stderr = next(it, None) if message.get("stderr") else None
    size = message.get("console_size")
    return Client(sock, stdin, stdout, stderr, bool(message.get("stdin_once")),
                  bool(message.get("tty")), tuple(size) if size else None)


def _tell(c: Client, message: dict) -> None:
    try:
        wire.send(c.sock, message, binary=True)  # a CLI reads both forms
    except OSError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _size(text: str | None) -> int:
    if not text:
        return -1
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower()
    if text[-1:] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def main(argv: list[str]) -> int:
    """The monitor again, exec'd by berth-shim when the container's PID 1 has exited."""
    import _socket

    args = dict(zip(argv[::2], argv[1::2]))
    from berth.container import Containers
    from berth.image import ImageStore

    containers = Containers(args["--root"], ImageStore(args["--root"]))
    listener = _socket.socket(fileno=int(args["--listen"]))
    clients = []
    for item in filter(None, args.get("--clients", "").split(",")):
        sock, stdin, stdout, stderr, once = (int(x) for x in item.split(":"))
        clients.append(Client(_socket.socket(fileno=sock), *(None if fd < 0 else fd
                                                           for fd in (stdin, stdout, stderr)),
                              stdin_once=bool(once)))
    for fd in [listener.fileno()] + [c.sock.fileno() for c in clients]:
        os.set_inheritable(fd, False)
    Monitor(containers, args["--id"]).resume(int(args["--status"]), listener, clients)
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
