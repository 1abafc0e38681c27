"""The CLI's side of the hub and the monitors: connect, starting the hub if needed.

Kept to a few small imports: every `berth run` goes through here.
"""

from __future__ import annotations

import os
import sys
import time

from berth import ipc as wire
from berth.errors import Unavailable

HUB_SOCKET = "hub.sock"  # berth.container.hub.HUB_SOCKET, without importing the hub


def hub(root: str):
    """A connection to the root's hub, started first if none is running."""
    rundir = wire.run_dir(root)
    try:
        return wire.connect(rundir, HUB_SOCKET)
    except (FileNotFoundError, ConnectionRefusedError):
        pass
    _spawn(root)
    deadline = time.monotonic() + 10.0
    delay = 0.002
    while True:
        try:
            return wire.connect(rundir, HUB_SOCKET)
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise Unavailable(f"berth's hub for {root} did not start; see "
                                  f"{os.path.join(rundir, 'hub.log')}") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def _spawn(root: str) -> None:
    """Start `python -m berth.container.hub ROOT` as a daemon: own session, no tty."""
    rundir = wire.run_dir(root)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            null = os.open("/dev/null", os.O_RDWR)
            log = os.open(os.path.join(rundir, "hub.log"),
                          os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.chdir("/")
            env = dict(os.environ)
            env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.dirname(
                os.path.abspath(__file__)))) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                                else "")
            os.execve(sys.executable, [sys.executable, "-m", "berth.container.hub", root], env)
        finally:
            os._exit(127)
    os.waitpid(pid, 0)


def monitor(root: str, cid: str):
    """A connection to a running container's monitor."""
    try:
        return wire.connect(os.path.join(wire.run_dir(root), "monitors"), f"{cid}.sock")
    except (FileNotFoundError, ConnectionRefusedError):
        raise Unavailable(f"container {cid[:12]} has no running monitor") from None


def stop_hub(root: str) -> bool:
    """Ask the root's hub to exit; False if none was running."""
    try:
        sock = wire.connect(wire.run_dir(root), HUB_SOCKET)
    except (FileNotFoundError, ConnectionRefusedError):
        return False
    try:
        wire.send(sock, {"op": "stop"}, binary=True)
        wire.recv(sock)
    finally:
        sock.close()
    return True
