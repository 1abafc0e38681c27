"""Attaching the caller's terminal to a container's pty, as `docker run -it` does."""

from __future__ import annotations

import errno
import os
import select
import signal
import struct


def window_size(fd: int) -> tuple[int, int] | None:
    """(rows, cols) of the terminal on `fd`, or None if it is not a terminal."""
    import fcntl
    import termios

    try:
        raw = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    except OSError:
        return None
    rows, cols = struct.unpack("HHHH", raw)[:2]
    return rows, cols


def set_window_size(fd: int, size: tuple[int, int] | None) -> None:
    import fcntl
    import termios

    if size:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def relay(master: int, stdin_fd: int, stdout_fd: int, read_stdin: bool) -> None:
    """Copy stdin -> pty and pty -> stdout until the container closes its side.

    The caller's terminal is put in raw mode (keys go to the container's line
    discipline, ^C included) and restored afterwards; SIGWINCH resizes the pty.
    """
    import termios
    import tty

    saved = None
    if read_stdin and os.isatty(stdin_fd):
        saved = termios.tcgetattr(stdin_fd)
        tty.setraw(stdin_fd)
    old_winch = signal.signal(signal.SIGWINCH,
                              lambda *_: set_window_size(master, window_size(stdout_fd)))
    try:
        watched = [master] + ([stdin_fd] if read_stdin else [])
        while True:
            readable, _, _ = select.select(watched, [], [])
            if master in readable:
                try:
                    data = os.read(master, 65536)
                except OSError as exc:
                    if exc.errno == errno.EIO:  # every slave fd closed: the container is gone
                        break
                    raise
                if not data:
                    break
                _write_all(stdout_fd, data)
            if stdin_fd in readable and stdin_fd in watched:
                data = os.read(stdin_fd, 65536)
                if not data:
                    watched.remove(stdin_fd)
                    _write_all(master, b"\x04")  # EOF on the caller's side: ^D to the container
                    continue
                _write_all(master, data)
    finally:
        signal.signal(signal.SIGWINCH, old_winch)
        if saved is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
