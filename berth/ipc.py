"""Messages between berth processes (CLI, hub, monitors, runtime stages): frames with fds.

A frame is a 4-byte little-endian length and a body; file descriptors travel with the
frame's first byte as SCM_RIGHTS. A body is a JSON object, or, between two Python
processes of this same berth (`binary=True`), a NUL byte and the object in marshal form:
`import json` (it pulls in `re`) costs the CLI ~5 ms, marshal is built in. Whatever may be
read by berth-shim, which parses JSON, is sent as JSON. Sockets live in <root>/run (mode 0700), and are
reached through /proc/self/fd/N/NAME so that a long root path never exceeds the 108
bytes a socket address can hold. Only the _socket C module is used, and struct rather
than array (which imports collections): socket.py and array would add milliseconds to
every CLI command.
"""

from __future__ import annotations

import _socket
import marshal
import os
import struct

from berth.errors import Unavailable

MAX_FDS = 8
MAX_FRAME = 16 << 20


def run_dir(root: str) -> str:
    path = os.path.join(root, "run")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


class _At:
    """A short path for a socket in `directory`: /proc/self/fd/N/name."""

    def __init__(self, directory: str, name: str) -> None:
        self.fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.path = f"/proc/self/fd/{self.fd}/{name}"

    def __enter__(self) -> str:
        return self.path

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


def listen(directory: str, name: str) -> _socket.socket:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC, 0)
    with _At(directory, name) as path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        sock.bind(path)
    sock.listen(64)
    return sock


def accept(listener: _socket.socket) -> _socket.socket:
    """socket.py's accept() without socket.py: the C socket only has _accept()."""
    fd, _addr = listener._accept()
    sock = _socket.socket(fileno=fd)
    sock.setblocking(True)
    os.set_inheritable(fd, False)
    return sock


def connect(directory: str, name: str) -> _socket.socket:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC, 0)
    try:
        with _At(directory, name) as path:
            sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def send(sock: _socket.socket, message: dict, fds: list[int] | tuple[int, ...] = (), *,
         binary: bool = False) -> None:
    if binary:
        body = b"\0" + marshal.dumps(message)
    else:
        import json

        body = json.dumps(message, separators=(",", ":")).encode()
    data = struct.pack("<I", len(body)) + body
    if fds:
        sent = sock.sendmsg([data[:1]], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                            struct.pack(f"{len(fds)}i", *fds))])
        data = data[sent:]
    if data:
        sock.sendall(data)


def recv(sock: _socket.socket) -> tuple[dict | None, list[int]]:
    """The next frame and the fds that came with it; (None, []) at end of stream."""
    fds: list[int] = []
    head, ancdata, _flags, _addr = sock.recvmsg(4, _socket.CMSG_SPACE(MAX_FDS * 4))
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds.extend(struct.unpack(f"{len(data) // 4}i", data[: len(data) - len(data) % 4]))
    for fd in fds:
        os.set_inheritable(fd, False)
    if not head:
        return None, fds
    while len(head) < 4:
        more = sock.recv(4 - len(head))
        if not more:
            return None, fds
        head += more
    size = struct.unpack("<I", head)[0]
    if size > MAX_FRAME:
        raise Unavailable(f"message of {size} bytes is larger than allowed")
    body = b""
    while len(body) < size:
        more = sock.recv(size - len(body))
        if not more:
            return None, fds
        body += more
    if body[:1] == b"\0":
        return marshal.loads(body[1:]), fds
    import json

    return json.loads(body), fds


def peer_uid(sock: _socket.socket) -> int:
    raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    return struct.unpack("3i", raw)[1]
