"""The hub: a long-lived process per berth root that forks container monitors.

Why a hub: a monitor must outlive the CLI, and a Python process of its own costs
megabytes and an interpreter start. The hub imports everything once, freezes the
garbage collector, and forks one monitor per container on request, so each monitor
costs a fork, starts in a millisecond, and shares every page it does not write with the
hub and its siblings. The hub holds no container state: if it dies, the monitors and
their containers carry on, and the next berth command starts a new hub, which restarts
the containers whose restart policy asks for it (Docker's live restore, daemonless).

    python -m berth.container.hub ROOT      (started by berth.container.client)

Requests (berth.ipc frames on <root>/run/hub.sock, root only):
    {"op": "run", ...}    create and start a container; the connection becomes its first
    {"op": "start", ...}  attached client (events: started / error, then exit)
    {"op": "ping"}, {"op": "stop"}
"""

from __future__ import annotations

import fcntl
import gc
import os
import select
import signal
import sys

from berth import ipc as wire
from berth.trace import trace

HUB_SOCKET = "hub.sock"
IDLE_SECONDS = 300.0  # BERTH_HUB_IDLE overrides: the hub exits after this long unasked


def serve(root: str) -> None:
    rundir = wire.run_dir(root)
    lock = os.open(os.path.join(rundir, "hub.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another hub serves this root
    from berth.container import Containers
    from berth.image import ImageStore

    containers = Containers(root, ImageStore(root))
    _preload()
    listener = wire.listen(rundir, HUB_SOCKET)
    with open(os.path.join(rundir, "hub.pid"), "w") as f:
        f.write(str(os.getpid()))
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # monitors are never waited for
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    restore(containers, listener, lock)
    gc.collect()
    gc.freeze()  # what is here now is shared with every monitor: never scan or touch it
    idle = float(os.environ.get("BERTH_HUB_IDLE") or IDLE_SECONDS)
    while True:
        readable, _, _ = select.select([listener], [], [], idle)
        if not readable:
            break
        try:
            conn = wire.accept(listener)
        except OSError:
            continue
        try:
            if wire.peer_uid(conn) != 0:
                conn.close()
                continue
            message, fds = wire.recv(conn)
        except (OSError, ValueError):
            conn.close()
            continue
        if message is None:
            conn.close()
            continue
        op = message.get("op")
        if op == "ping":
            wire.send(conn, {"event": "pong", "pid": os.getpid()})
            conn.close()
        elif op == "stop":
            wire.send(conn, {"event": "stopping"})
            conn.close()
            break
        elif op in ("run", "start"):
            _fork_monitor(containers, listener, lock, conn, message, fds)
        else:
            wire.send(conn, {"event": "error", "message": f"unknown request {op!r}", "code": 125})
            conn.close()
        for fd in fds:
            os.close(fd)
    listener.close()
    try:
        os.unlink(os.path.join(rundir, HUB_SOCKET))
        os.unlink(os.path.join(rundir, "hub.pid"))
    except OSError:
        pass


def _preload() -> None:
    """Import now what monitors use later: after fork it is shared, and after
    pivot_root nothing could be imported anyway."""
    import fcntl  # noqa: F401
    import termios  # noqa: F401

    import berth.container.health  # noqa: F401
    import berth.container.logs  # noqa: F401
    import berth.container.monitor  # noqa: F401
    import berth.container.names  # noqa: F401
    import berth.layer  # noqa: F401
    import berth.runtime.exec  # noqa: F401
    import berth.runtime.init  # noqa: F401
    import berth.runtime.seccomp  # noqa: F401
    import berth.runtime.seccomp_default  # noqa: F401


def _fork_monitor(containers, listener, lock, conn, message, fds) -> None:
    trace("hub: fork monitor")
    pid = os.fork()
    if pid != 0:
        if conn is not None:
            conn.close()
        return
    code = 0
    try:
        listener.close()
        os.close(lock)
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _monitor(containers, conn, message, list(fds))
    except BaseException:  # noqa: BLE001 - a monitor never takes the hub down
        code = 1
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _monitor(containers, conn, message: dict, fds: list[int]) -> None:
    from berth.container.monitor import Monitor, client_from
    from berth.container.spec import options_from_dict

    first = client_from(conn, message, fds) if conn is not None else None
    if message["op"] == "run":
        opts = options_from_dict(message["opts"])
        create = message.get("create", {})

        def start(stdio, size):
            return containers.run(message["image"], opts, stdio, console_size=size, detached=True,
                                  **create)

        monitor = Monitor(containers, "")
    else:
        cid = message["id"]

        def start(stdio, size):
            proc = containers.start(cid, stdio, console_size=size, detached=True)
            return containers.store.read(cid), proc

        monitor = Monitor(containers, cid)
    monitor.serve(first, start)


def restore(containers, listener, lock) -> None:
    """Start a monitor for every container whose restart policy wants it running."""
    for record in containers.list():
        if containers.wants_restore(record):
            _fork_monitor(containers, listener, lock, None, {"op": "start", "id": record["Id"]}, [])


if __name__ == "__main__":
    serve(sys.argv[1])
