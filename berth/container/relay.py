"""A monitor's side of a container's stdio: the log and the attached clients.

The container's output (two pipes, or one pty) goes to its json-file log and to every
attached client's stdout/stderr; a client's stdin goes to the container; a client's
control socket carries resize requests. A client is an attached CLI that lent us its
own fds, so its output is written straight to its terminal, not framed on a socket.
(The CLI's end of a pty relay is berth.container.attach.)

berth-shim takes all of this over with the fds themselves (shim_args), and hands the
clients back as one argument when the monitor resumes (clients_from_arg).
"""

from __future__ import annotations

import fcntl
import os
import struct

from berth import ipc as wire
from berth.container.logs import LogWriter

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


def client_from(sock, message: dict, fds: list[int]) -> Client:
    """Map the fds a client sent to what it asked to attach."""
    it = iter(fds)
    stdin = next(it, None) if message.get("stdin") else None
    stdout = next(it, None) if message.get("stdout") else None
    stderr = next(it, None) if message.get("stderr") else None
    size = message.get("console_size")
    return Client(sock, stdin, stdout, stderr, bool(message.get("stdin_once")),
                  bool(message.get("tty")), tuple(size) if size else None)


def clients_from_arg(text: str) -> list[Client]:
    """The clients berth-shim hands back: sock:stdin:stdout:stderr:stdin_once, comma-separated."""
    import _socket

    clients = []
    for item in filter(None, text.split(",")):
        sock, stdin, stdout, stderr, once = (int(x) for x in item.split(":"))
        clients.append(Client(_socket.socket(fileno=sock), *(None if fd < 0 else fd
                                                           for fd in (stdin, stdout, stderr)),
                              stdin_once=bool(once)))
    return clients


def tell(c: Client, message: dict) -> None:
    try:
        wire.send(c.sock, message, binary=True)  # a CLI reads both forms
    except OSError:
        pass


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Relay:
    """The container's ends of its stdio, its log, and the clients attached to it."""

    def __init__(self) -> None:
        self.clients: list[Client] = []
        self.out_r = self.err_r = self.in_w = None
        self.console = None
        self.tty = False
        self.log: LogWriter | None = None

    def open_log(self, record: dict) -> None:
        """The json-file log with the container's log options; kept across restarts."""
        if self.log is None:
            opts = record["HostConfig"].get("LogConfig", {}).get("Config", {})
            self.log = LogWriter(record["LogPath"], _size(opts.get("max-size")),
                                 int(opts.get("max-file", "1")))

    def open(self, tty: bool, open_stdin: bool) -> tuple:
        """Fresh pipes for a (re)start; returns the container's ends (stdin, stdout, stderr)
        for the caller to close once the container has them. A pty needs none."""
        self.tty = tty
        in_r = out_w = err_w = None
        if not tty:
            self.out_r, out_w = os.pipe2(os.O_CLOEXEC)
            self.err_r, err_w = os.pipe2(os.O_CLOEXEC)
            if open_stdin:
                in_r, self.in_w = os.pipe2(os.O_CLOEXEC)
        return in_r, out_w, err_w

    def watch(self, watched: dict) -> None:
        """Add this relay's fds to `watched` (fd -> what dispatch() is told)."""
        for fd, what in ((self.out_r, "stdout"), (self.err_r, "stderr"),
                         (self.console, "console")):
            if fd is not None:
                watched[fd] = what
        for c in self.clients:
            watched[c.sock.fileno()] = c
            if c.stdin is not None:
                watched[c.stdin] = ("stdin", c)

    def dispatch(self, fd: int, what) -> None:
        if what in ("stdout", "stderr", "console"):
            self._pump(fd, "stdout" if what == "console" else what)
        elif isinstance(what, tuple):
            self._stdin(what[1])
        elif isinstance(what, Client):
            self._control(what)

    def outputs_open(self) -> bool:
        return any(fd is not None for fd in (self.out_r, self.err_r, self.console))

    def resize(self, size) -> None:
        """Set the pty's window size to a client's (rows, cols)."""
        if size and self.console is not None:
            import termios

            rows, cols = size
            fcntl.ioctl(self.console, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def close_stdin(self) -> None:
        if self.in_w is not None:
            os.close(self.in_w)
            self.in_w = None

    def drop(self, c: Client) -> None:
        if c in self.clients:
            self.clients.remove(c)
        c.close()

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
            return
        self.log.write(stream, data)
        for c in list(self.clients):
            target = c.stderr if stream == "stderr" and c.stderr is not None else c.stdout
            if target is None:
                continue
            try:
                write_all(target, data)
            except OSError:
                self.drop(c)

    def _stdin(self, c: Client) -> None:
        try:
            data = os.read(c.stdin, CHUNK)
        except OSError:
            data = b""
        sink = self.console if self.tty else self.in_w
        if not data:
            os.close(c.stdin)
            c.stdin = None
            if c.stdin_once and not self.tty:
                self.close_stdin()
            return
        if sink is not None:
            try:
                write_all(sink, data)
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
            self.drop(c)
            return
        if message.get("op") == "resize" and self.console is not None:
            self.resize((message["rows"], message["cols"]))

    def shim_args(self) -> tuple[list[str], list[int]]:
        """berth-shim's arguments for the log, the stdio and the clients, and the fds it
        must inherit. The log is closed: berth-shim appends to it from here on."""
        self.log.close()
        keep = []
        args = ["--log", self.log.path, "--log-max-size", str(self.log.max_size),
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
        for c in self.clients:
            fds = [c.sock.fileno()] + [-1 if fd is None else fd for fd in (c.stdin, c.stdout,
                                                                           c.stderr)]
            keep += [fd for fd in fds if fd >= 0]
            args += ["--client", ":".join(str(fd) for fd in fds) + f":{int(c.stdin_once)}"]
        return args, keep


def _size(text: str | None) -> int:
    if not text:
        return -1
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower()
    if text[-1:] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)
