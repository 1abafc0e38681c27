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
    {"op": "exec", ...}   one more process in a running container, for `berth exec`
                          (the same events; the hub has the runtime imported already)
    {"op": "ping"}, {"op": "stop"}
"""

from __future__ import annotations

import fcntl
import gc
import os
import select
import signal
import sys
import time

from berth import ipc as wire
from berth.trace import trace

HUB_SOCKET = "hub.sock"
# The hub exits after this long unasked (BERTH_HUB_IDLE overrides): an idle engine keeps
# only its containers' shims. Its spare (two processes, ~6 MiB) lives only while runs keep
# coming: a burst of runs is milliseconds apart, and an idle engine should not pay for it.
IDLE_SECONDS = 60.0
SPARE_SECONDS = 1.5


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
    _remove_stale_spares(containers)
    gc.collect()
    gc.freeze()  # what is here now is shared with every monitor: never scan or touch it
    idle = float(os.environ.get("BERTH_HUB_IDLE") or IDLE_SECONDS)
    spare = _Spare.make(containers, listener, lock)
    last_request = time.monotonic()
    while True:
        wait = idle - (time.monotonic() - last_request)
        if spare is not None:
            wait = min(wait, SPARE_SECONDS - (time.monotonic() - last_request))
        readable, _, _ = select.select([listener], [], [], max(wait, 0))
        if not readable:
            if spare is not None and time.monotonic() - last_request >= SPARE_SECONDS:
                spare.close()  # runs stopped coming: its two processes are not free
                spare = None
                continue
            if time.monotonic() - last_request >= idle:
                break
            continue
        last_request = time.monotonic()
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
            wire.send(conn, {"event": "pong", "pid": os.getpid()}, binary=True)
            conn.close()
        elif op == "stop":
            wire.send(conn, {"event": "stopping"}, binary=True)
            conn.close()
            break
        elif op == "run" and spare is not None and spare.hand_over(conn, message, fds):
            conn.close()
            _close(fds)  # before the next fork: a client's fds must not outlive its request
            spare = _Spare.make(containers, listener, lock)
        elif op == "exec":
            _fork_exec(containers.root, listener, lock, conn, message, fds)
        elif op in ("run", "start"):
            _fork_monitor(containers, listener, lock, conn, message, fds)
            if op == "run" and spare is None:
                _close(fds)
                spare = _Spare.make(containers, listener, lock)  # runs are coming again
        else:
            wire.send(conn, {"event": "error", "message": f"unknown request {op!r}", "code": 125},
                      binary=True)
            conn.close()
        _close(fds)
    listener.close()
    if spare is not None:
        spare.close()  # it sees the end of its channel, and undoes its cgroup and stage A
    try:
        os.unlink(os.path.join(rundir, HUB_SOCKET))
        os.unlink(os.path.join(rundir, "hub.pid"))
    except OSError:
        pass


def _close(fds: list[int]) -> None:
    while fds:
        try:
            os.close(fds.pop())
        except OSError:
            pass


def _preload() -> None:
    """Import now what monitors use later: after fork it is shared, and after
    pivot_root nothing could be imported anyway. What only some containers need (layer
    unpacking, volume copy-up) is left to be imported when needed: the hub's memory is
    counted against every container while it runs. Docker's seccomp profile is resolved
    once here for the default capabilities, instead of in every run."""
    import fcntl  # noqa: F401
    import termios  # noqa: F401

    import berth.container.health  # noqa: F401
    import berth.container.logs  # noqa: F401
    import berth.container.monitor  # noqa: F401
    import berth.container.names  # noqa: F401
    import berth.network.service  # noqa: F401 - every run looks its network up, "none" too
    import berth.runtime.exec  # noqa: F401
    import berth.runtime.init  # noqa: F401
    import berth.runtime.seccomp  # noqa: F401
    import berth.runtime.seccomp_default  # noqa: F401
    import berth.volume  # noqa: F401
    from berth.container.service import default_seccomp
    from berth.runtime import caps

    default_seccomp(caps.tweak(caps.DOCKER_DEFAULT))


class _Spare:
    """A monitor forked ahead of time, with its stage A already in a cgroup of its own.

    Joining a cgroup waits for an RCU grace period (~10-15 ms here): a spare pays that
    before anyone asks, and a `run` then only renames the cgroup (berth.runtime's
    retarget). One spare is kept; it is replaced as soon as it is used.
    """

    def __init__(self, pid: int, channel) -> None:
        self.pid = pid
        self.channel = channel

    @classmethod
    def make(cls, containers, listener, lock) -> "_Spare | None":
        import _socket

        ours, theirs = _socket.socketpair(_socket.AF_UNIX,
                                          _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC, 0)
        pid = os.fork()
        if pid != 0:
            theirs.close()
            return cls(pid, ours)
        code = 0
        try:
            ours.close()
            listener.close()
            os.close(lock)
            os.setsid()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            proc = containers.spare()
            message, fds = wire.recv(theirs)
            theirs.close()
            if message is None:
                proc.abort()
                return  # finally exits
            conn_fd, fds = fds[0], fds[1:]
            import _socket as _s

            _monitor(containers, _s.socket(fileno=conn_fd), message, fds, spare=proc)
        except BaseException:  # noqa: BLE001
            code = 1
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)

    def hand_over(self, conn, message: dict, fds: list[int]) -> bool:
        trace("hub: hand over to spare")
        try:
            wire.send(self.channel, message, [conn.fileno(), *fds], binary=True)
        except OSError:
            self.close()
            return False
        self.channel.close()
        return True

    def close(self) -> None:
        try:
            self.channel.close()
        except OSError:
            pass


def _remove_stale_spares(containers) -> None:
    """Spare cgroups whose spare was killed (kill -9 of the hub) are empty: remove them.

    Only this root's, and only old ones: a spare that is being made has an empty cgroup
    for a moment too."""
    import time

    from berth.runtime import cgroups

    lay = cgroups.layout()
    base = lay.unified if lay.is_v2 else next(iter(lay.v1.values()), None)
    parent = os.path.join(base, containers.cgroup_parent) if base else None
    if not parent or not os.path.isdir(parent):
        return
    prefix = containers.spare_prefix()
    for name in os.listdir(parent):
        if name.startswith(prefix):
            try:
                if time.time() - os.stat(os.path.join(parent, name)).st_mtime < 60:
                    continue
            except OSError:
                continue
            cg = cgroups.Cgroup(lay, f"{containers.cgroup_parent}/{name}")
            if not cg.procs():
                try:
                    cg.destroy()
                except OSError:
                    pass


def _fork_monitor(containers, listener, lock, conn, message, fds) -> None:
    trace("hub: fork monitor")
    _fork(listener, lock, conn, lambda: _monitor(containers, conn, message, list(fds)))


def _fork_exec(root: str, listener, lock, conn, message: dict, fds: list[int]) -> None:
    """`berth exec` for a CLI, from a child of the hub: a CLI would spend most of an
    exec importing the runtime, which the hub has loaded. The child starts the process
    with the CLI's fds, tells it the pid (the CLI signals it directly), then its exit code."""
    _fork(listener, lock, conn, lambda: _exec(root, conn, message, fds))


def _fork(listener, lock, conn, work) -> None:
    """Run work() in a child of its own session; the hub goes back to listening."""
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
        work()
    except BaseException:  # noqa: BLE001 - a child never takes the hub down
        code = 1
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _exec(root: str, conn, message: dict, fds: list[int]) -> None:
    from berth import errors
    from berth.container.execute import prepare
    from berth.container.relay import client_from
    from berth.runtime import Stdio

    client = client_from(conn, message, fds)
    try:
        proc, start_time = prepare(
            root, message["id"], message["cmd"], env=message.get("env", ()),
            user=message.get("user"), workdir=message.get("workdir"),
            privileged=bool(message.get("privileged")),
            stdio=Stdio(client.stdin, client.stdout, client.stderr))
        proc.start(start_time)
    except errors.BerthError as exc:
        wire.send(conn, {"event": "error", "message": str(exc),
                         "code": getattr(exc, "exit_code", 125)}, binary=True)
        return
    finally:
        _close(fds)  # the process has its own copies now
    wire.send(conn, {"event": "started", "pid": proc.pid, "id": ""}, binary=True)
    if message.get("detach"):
        conn.close()  # the CLI is gone; the process runs on, and this child reaps it
    code = proc.wait()
    if not message.get("detach"):
        try:
            wire.send(conn, {"event": "exit", "code": code}, binary=True)
        except OSError:
            pass


def _monitor(containers, conn, message: dict, fds: list[int], spare=None) -> None:
    from berth.container.monitor import Monitor
    from berth.container.relay import client_from
    from berth.container.spec import options_from_dict

    first = client_from(conn, message, fds) if conn is not None else None
    if message["op"] == "run":
        opts = options_from_dict(message["opts"])
        create = message.get("create", {})

        def start(stdio, size):
            return containers.run(message["image"], opts, stdio, console_size=size, detached=True,
                                  spare=spare, **create)

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
