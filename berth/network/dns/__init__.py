"""The embedded DNS of user-defined networks: container names and aliases -> addresses.

Design: one small resolver process per user-defined network (server.py), listening on the
network's gateway address (port 53, UDP and TCP) in the host's network namespace.
Containers on the network get `nameserver <gateway>` and `options ndots:0` in resolv.conf.
Names of the network's containers are answered from its endpoint files; everything else
is forwarded to the container's --dns servers or the host's own -- loopback ones included,
which a container could never reach but a resolver on the host can. On an --internal
network nothing is forwarded: no route out means no answers from outside.

Why not Docker's way (a resolver inside every container's namespace at 127.0.0.11, run by
the daemon): berth has no daemon, and a resolver per container would cost a socket and a
loop in every monitor. One process per network costs ~10 MB once per network and nothing
per container.

Lifetime, owned by the network: started when the network's host side is set up (network
create, or the first start after a reboot), stopped by network rm; it also exits by itself
once its network's record or bridge is gone, so nothing outlives a network even if its root
is deleted without `network rm`. This module is the owner's side: start, stop, running.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from berth.network.ipam import HOST_DIR
from berth.proc import process_start

DNS_DIR = "dns"


def pid_dir(base: str = HOST_DIR) -> str:
    """/run/berth/dns: <bridge>.pid of each network's server, and its lock."""
    path = os.path.join(base, DNS_DIR)
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def write_pid(bridge: str) -> None:
    from berth.fsutil import write_atomic

    pid = os.getpid()
    write_atomic(os.path.join(pid_dir(), f"{bridge}.pid"), f"{pid} {process_start(pid)}\n".encode(),
                 durable=False)


def running(bridge: str) -> int | None:
    """The pid of the network's resolver if it serves, else None."""
    try:
        with open(os.path.join(pid_dir(), f"{bridge}.pid")) as f:
            pid_text, start = f.read().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if str(process_start(pid)) == start else None


def start(root: str, network_id: str, bridge: str, timeout: float = 10.0) -> int:
    """Start the network's resolver unless one serves; return its pid once it listens.

    It is double-forked: a daemon of its own session that is nobody's child, so no caller
    (a monitor waiting for its container, the CLI) ever has to reap it.
    """
    pid = running(bridge)
    if pid is not None:
        return pid
    import berth

    log = os.path.join(root, "run", f"dns-{bridge}.log")
    os.makedirs(os.path.dirname(log), mode=0o700, exist_ok=True)
    env = dict(os.environ)
    # the same berth as ours, however this one was found (a venv, or PYTHONPATH in tests)
    top = os.path.dirname(os.path.dirname(os.path.abspath(berth.__file__)))
    env["PYTHONPATH"] = top + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    argv = [sys.executable, "-m", "berth.network.dns.server", root, network_id]
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            null = os.open("/dev/null", os.O_RDWR)
            out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.dup2(null, 0)
            os.dup2(out, 1)
            os.dup2(out, 2)
            os.closerange(3, 65536)
            os.chdir("/")
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            for sig in (signal.SIGCHLD, signal.SIGPIPE, signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    while True:
        try:
            os.waitpid(child, 0)
            break
        except ChildProcessError:
            break
        except InterruptedError:
            continue
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = running(bridge)
        if pid is not None:
            return pid
        time.sleep(0.01)
    from berth.errors import Unavailable

    tail = ""
    try:
        with open(log, "rb") as f:
            tail = f.read()[-300:].decode(errors="replace").strip().splitlines()[-1]
    except (OSError, IndexError):
        pass
    raise Unavailable(f"the DNS server of network bridge {bridge} did not start"
                      + (f": {tail}" if tail else f"; see {log}"))


def stop(bridge: str, timeout: float = 5.0) -> None:
    """Stop the network's resolver and wait until it is gone."""
    pid = running(bridge)
    if pid is not None:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                ours = b"berth.network.dns" in f.read()
        except OSError:
            ours = False
        if ours:
            start_time = process_start(pid)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline and process_start(pid) == start_time:
                    time.sleep(0.01)
                if process_start(pid) != start_time:
                    break
    for name in (f"{bridge}.pid", f"{bridge}.lock"):  # nothing holds them any more
        try:
            os.unlink(os.path.join(pid_dir(), name))
        except FileNotFoundError:
            pass
