"""Container lifecycle commands: stop, kill, restart, pause, unpause, wait, logs, attach,
exec, top, stats, cp, rename, port, container prune."""

from __future__ import annotations

import os
import sys
import time

from berth.cli.flags import BOOL, LIST, VALUE, Flag, UsageError, parse, usage
from berth.errors import BerthError, Conflict, InvalidArgument

HELP_FLAG = Flag(("--help",), BOOL, "Print usage")


def _containers(g):
    from berth.container import Containers
    from berth.image import ImageStore

    return Containers(g.root, ImageStore(g.root))


def _each(refs, action) -> int:
    """Docker's multi-container commands: go on after an error, exit 1 if any failed."""
    status = 0
    for ref in refs:
        try:
            action(ref)
        except BerthError as exc:
            sys.stderr.write(f"berth: {exc}\n")
            status = 1
    return status


def _parsed(argv, flags, command, synopsis, description, minimum=1):
    values, pos = parse(argv, flags + (HELP_FLAG,))
    if values["help"]:
        sys.stdout.write(usage(command, synopsis, description, flags) + "\n")
        return None, None
    if len(pos) < minimum:
        raise UsageError(f'"berth {command}" requires at least {minimum} argument'
                         f'{"s" if minimum > 1 else ""}.')
    return values, pos


# --- stop, kill, restart, pause, unpause, wait ----------------------------------------

STOP_FLAGS = (Flag(("-t", "--time", "--timeout"), VALUE, "Seconds to wait before killing it",
                   "int"),
              Flag(("-s", "--signal"), VALUE, "Signal to send to the container"))


def cmd_stop(g, argv) -> int:
    values, pos = _parsed(argv, STOP_FLAGS, "stop", "[OPTIONS] CONTAINER [CONTAINER...]",
                          "Stop one or more running containers")
    if pos is None:
        return 0
    containers = _containers(g)
    timeout = int(values["time"]) if values["time"] is not None else None

    def stop(ref):
        record = containers.get(ref)
        if values["signal"]:
            record["Config"]["StopSignal"] = values["signal"]
        if record["State"]["Running"] or record["State"].get("Restarting"):
            containers.stop(record, timeout)
        else:
            containers.set_manually_stopped(record["Id"])
        sys.stdout.write(ref + "\n")

    return _each(pos, stop)


KILL_FLAGS = (Flag(("-s", "--signal"), VALUE, "Signal to send to the container (default KILL)"),)


def cmd_kill(g, argv) -> int:
    values, pos = _parsed(argv, KILL_FLAGS, "kill", "[OPTIONS] CONTAINER [CONTAINER...]",
                          "Kill one or more running containers")
    if pos is None:
        return 0
    from berth.container.service import parse_signal

    containers = _containers(g)
    sig = parse_signal(values["signal"] or "SIGKILL")

    def kill(ref):
        record = containers.get(ref)
        if not record["State"]["Running"]:
            raise Conflict(f"cannot kill container: {ref}: container {record['Id'][:12]} is not "
                           "running")
        containers.signal(record, sig)
        sys.stdout.write(ref + "\n")

    return _each(pos, kill)


def cmd_restart(g, argv) -> int:
    values, pos = _parsed(argv, STOP_FLAGS, "restart", "[OPTIONS] CONTAINER [CONTAINER...]",
                          "Restart one or more containers")
    if pos is None:
        return 0
    from berth.cli.run import session
    from berth.container import client

    containers = _containers(g)
    timeout = int(values["time"]) if values["time"] is not None else None

    def restart(ref):
        record = containers.get(ref)
        if record["State"]["Running"] or record["State"].get("Restarting"):
            containers.stop(record, timeout)
        session(client.hub(g.root), {"op": "start", "id": record["Id"]},
                tty=record["Config"]["Tty"], interactive=False, detach=True, sig_proxy=False,
                quiet=True)
        sys.stdout.write(ref + "\n")

    return _each(pos, restart)


def cmd_pause(g, argv) -> int:
    _, pos = _parsed(argv, (), "pause", "CONTAINER [CONTAINER...]",
                     "Pause all processes within one or more containers")
    if pos is None:
        return 0
    containers = _containers(g)
    return _each(pos, lambda ref: (containers.pause(containers.get(ref)),
                                   sys.stdout.write(ref + "\n")))


def cmd_unpause(g, argv) -> int:
    _, pos = _parsed(argv, (), "unpause", "CONTAINER [CONTAINER...]",
                     "Unpause all processes within one or more containers")
    if pos is None:
        return 0
    containers = _containers(g)
    return _each(pos, lambda ref: (containers.unpause(containers.get(ref)),
                                   sys.stdout.write(ref + "\n")))


def cmd_wait(g, argv) -> int:
    _, pos = _parsed(argv, (), "wait", "CONTAINER [CONTAINER...]",
                     "Block until one or more containers stop, then print their exit codes")
    if pos is None:
        return 0
    containers = _containers(g)

    def wait(ref):
        cid = containers.store.lookup(ref)
        containers.wait_stopped(cid, None)
        sys.stdout.write(f"{containers.store.read(cid)['State']['ExitCode']}\n")
        sys.stdout.flush()

    return _each(pos, wait)


# --- logs --------------------------------------------------------------------------------

LOGS_FLAGS = (
    Flag(("-f", "--follow"), BOOL, "Follow log output"),
    Flag(("--since",), VALUE, "Show logs since timestamp (e.g. 2013-01-02T13:23:37Z) or relative "
                              "(e.g. 42m for 42 minutes)"),
    Flag(("--until",), VALUE, "Show logs before a timestamp or relative"),
    Flag(("-n", "--tail"), VALUE, 'Number of lines to show from the end of the logs (default "all")'),
    Flag(("-t", "--timestamps"), BOOL, "Show timestamps"),
    Flag(("--details",), BOOL, "Show extra details provided to logs"),
)


def cmd_logs(g, argv) -> int:
    values, pos = _parsed(argv, LOGS_FLAGS, "logs", "[OPTIONS] CONTAINER",
                          "Fetch the logs of a container")
    if pos is None:
        return 0
    if len(pos) != 1:
        raise UsageError('"berth logs" requires exactly 1 argument.')
    from berth.container import logs

    containers = _containers(g)
    record = containers.get(pos[0])
    try:
        since = logs.parse_time(values["since"])
        until = logs.parse_time(values["until"])
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    tail = values["tail"]
    if tail not in (None, "all") and not (tail.isdigit() or tail == "-1"):
        raise InvalidArgument(f"invalid value for --tail: {tail!r}")
    entries = [e for e in logs.read_entries(record["LogPath"])
               if (since is None or logs.entry_time(e) >= since)
               and (until is None or logs.entry_time(e) < until)]
    if tail not in (None, "all", "-1"):
        entries = entries[-int(tail):] if int(tail) else []
    out, err = sys.stdout.buffer, sys.stderr.buffer
    for e in entries:
        _emit(e, out, err, values["timestamps"])
    out.flush()
    err.flush()
    if values["follow"]:
        _follow(containers, record, len(list(logs.read_entries(record["LogPath"]))), out, err,
                values["timestamps"], until)
    return 0


def _emit(entry: dict, out, err, timestamps: bool) -> None:
    text = entry.get("log", "")
    if timestamps:
        text = f"{entry.get('time', '')} {text}"
    (err if entry.get("stream") == "stderr" else out).write(text.encode())


def _follow(containers, record, seen: int, out, err, timestamps: bool, until) -> None:
    """Print entries as they are written until the container stops (or --until passes)."""
    from berth.container import logs

    cid = record["Id"]
    while True:
        entries = list(logs.read_entries(record["LogPath"]))
        for e in entries[seen:]:
            if until is not None and logs.entry_time(e) >= until:
                return
            _emit(e, out, err, timestamps)
        out.flush()
        err.flush()
        seen = len(entries)
        try:
            state = containers.reconcile(containers.store.read(cid))["State"]
        except BerthError:
            return
        if not state["Running"] and not state.get("Restarting"):
            entries = list(logs.read_entries(record["LogPath"]))
            for e in entries[seen:]:
                _emit(e, out, err, timestamps)
            out.flush()
            return
        if until is not None and time.time() >= until:
            return
        time.sleep(0.1)


# --- attach, exec --------------------------------------------------------------------------

ATTACH_FLAGS = (
    Flag(("--no-stdin",), BOOL, "Do not attach STDIN"),
    Flag(("--sig-proxy",), BOOL, "Proxy all received signals to the process", default=True),
)


def cmd_attach(g, argv) -> int:
    values, pos = _parsed(argv, ATTACH_FLAGS, "attach", "[OPTIONS] CONTAINER",
                          "Attach local standard input, output, and error streams to a running "
                          "container")
    if pos is None:
        return 0
    from berth.cli.run import session
    from berth.container import client

    containers = _containers(g)
    record = containers.get(pos[0])
    if not record["State"]["Running"]:
        raise Conflict("You cannot attach to a stopped container, start it first")
    cfg = record["Config"]
    interactive = cfg.get("OpenStdin", False) and not values["no_stdin"]
    return session(client.monitor(g.root, record["Id"]), {"op": "attach"}, tty=cfg["Tty"],
                   interactive=interactive, detach=False, sig_proxy=values["sig_proxy"], hub=False)


EXEC_FLAGS = (
    Flag(("-d", "--detach"), BOOL, "Detached mode: run command in the background"),
    Flag(("-i", "--interactive"), BOOL, "Keep STDIN open even if not attached"),
    Flag(("-t", "--tty"), BOOL, "Allocate a pseudo-TTY"),
    Flag(("-e", "--env"), LIST, "Set environment variables"),
    Flag(("--env-file",), LIST, "Read in a file of environment variables"),
    Flag(("-u", "--user"), VALUE, "Username or UID (format: <name|uid>[:<group|gid>])"),
    Flag(("-w", "--workdir"), VALUE, "Working directory inside the container"),
    Flag(("--privileged",), BOOL, "Give extended privileges to the command"),
)


def cmd_exec(g, argv) -> int:
    values, pos = parse(argv, EXEC_FLAGS + (HELP_FLAG,), interspersed=False)
    if values["help"]:
        sys.stdout.write(usage("exec", "[OPTIONS] CONTAINER COMMAND [ARG...]",
                               "Execute a command in a running container", EXEC_FLAGS) + "\n")
        return 0
    if len(pos) < 2:
        raise UsageError('"berth exec" requires at least 2 arguments.')
    if values["tty"] and values["interactive"] and not os.isatty(0):
        raise InvalidArgument("the input device is not a TTY")
    from berth.cli.runopts import _env_item, parse_env_file

    env = []
    for path in values["env_file"]:
        env += parse_env_file(path)
    for item in values["env"]:
        env += _env_item(item)
    if not values["tty"]:
        code = _exec_through_hub(g, pos, env, values)
        if code is not None:
            return code
    from berth.cli.run import FORWARDED
    from berth.container.execute import run_exec

    return run_exec(g.root, pos[0], pos[1:], env=env, user=values["user"],
                    workdir=values["workdir"], tty=values["tty"], interactive=values["interactive"],
                    detach=values["detach"], privileged=values["privileged"],
                    forward=FORWARDED)


def _exec_through_hub(g, pos: list[str], env: list[str], values: dict) -> int | None:
    """The exec done by the root's hub, when one is running: it has the runtime imported,
    which is most of what an exec costs a fresh CLI. None: do it here (no hub, or a hub
    from a berth that did not know exec). With a tty the CLI does it itself."""
    from berth import ipc as wire
    from berth.cli.run import session
    from berth.container.client import HUB_SOCKET
    from berth.errors import ContainerStartError

    try:
        sock = wire.connect(wire.run_dir(g.root), HUB_SOCKET)
    except OSError:
        return None
    message = {"op": "exec", "id": pos[0], "cmd": pos[1:], "env": env, "user": values["user"],
               "workdir": values["workdir"], "privileged": values["privileged"],
               "detach": values["detach"]}
    try:
        return session(sock, message, tty=False, interactive=values["interactive"],
                       detach=values["detach"], sig_proxy=True, quiet=True)
    except ContainerStartError as exc:
        if str(exc).startswith("unknown request"):
            return None
        raise


# --- top, stats --------------------------------------------------------------------------

def cmd_top(g, argv) -> int:
    _, pos = _parsed(argv, (), "top", "CONTAINER", "Display the running processes of a container")
    if pos is None:
        return 0
    from berth.cli import format as fmt
    from berth.container.procs import processes

    containers = _containers(g)
    record = containers.get(pos[0])
    if not record["State"]["Running"]:
        raise Conflict(f"container {record['Id'][:12]} is not running")
    rows = processes(containers.cgroup_of(record).procs())
    sys.stdout.write(fmt.table(["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"], rows))
    return 0


STATS_FLAGS = (Flag(("--no-stream",), BOOL, "Disable streaming stats and only pull the first "
                                            "result"),
               Flag(("-a", "--all"), BOOL, "Show all containers (default shows just running)"),
               Flag(("--no-trunc",), BOOL, "Do not truncate output"))


def cmd_stats(g, argv) -> int:
    values, pos = _parsed(argv, STATS_FLAGS, "stats", "[OPTIONS] [CONTAINER...]",
                          "Display a live stream of container(s) resource usage statistics",
                          minimum=0)
    if values is None:
        return 0
    containers = _containers(g)
    while True:
        records = [containers.get(r) for r in pos] if pos else \
            [r for r in containers.list() if values["all"] or r["State"]["Running"]]
        table = stats_table(containers, records)
        if values["no_stream"]:
            sys.stdout.write(table)
            return 0
        sys.stdout.write("\x1b[2J\x1b[H" + table)
        sys.stdout.flush()
        time.sleep(1)


# --- cp, rename, port, prune -----------------------------------------------------------------

CP_FLAGS = (Flag(("-a", "--archive"), BOOL, "Archive mode (copy all uid/gid information)"),
            Flag(("-L", "--follow-link"), BOOL, "Always follow symbol link in SRC_PATH"),
            Flag(("-q", "--quiet"), BOOL, "Suppress progress output"))


def cmd_cp(g, argv) -> int:
    values, pos = _parsed(argv, CP_FLAGS, "cp", "[OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-\n"
                          "        berth cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH",
                          "Copy files/folders between a container and the local filesystem",
                          minimum=2)
    if pos is None:
        return 0
    if len(pos) != 2:
        raise UsageError('"berth cp" requires exactly 2 arguments.')
    from berth.container import copy

    return copy.cmd(_containers(g), pos[0], pos[1], archive=values["archive"],
                    follow=values["follow_link"])


def cmd_rename(g, argv) -> int:
    _, pos = _parsed(argv, (), "rename", "CONTAINER NEW_NAME", "Rename a container", minimum=2)
    if pos is None:
        return 0
    if len(pos) != 2:
        raise UsageError('"berth rename" requires exactly 2 arguments.')
    _containers(g).rename(pos[0], pos[1])
    return 0


def cmd_port(g, argv) -> int:
    _, pos = _parsed(argv, (), "port", "CONTAINER [PRIVATE_PORT[/PROTO]]",
                     "List port mappings or a specific mapping for the container")
    if pos is None:
        return 0
    record = _containers(g).get(pos[0])
    ports = record["NetworkSettings"].get("Ports") or {}
    if len(pos) > 1:
        key = pos[1] if "/" in pos[1] else f"{pos[1]}/tcp"
        bindings = ports.get(key)
        if not bindings:
            raise InvalidArgument(f"No public port '{key}' published for {pos[0]}")
        for b in bindings:
            sys.stdout.write(f"{b['HostIp']}:{b['HostPort']}\n")
        return 0
    for key, bindings in sorted(ports.items()):
        for b in bindings or ():
            sys.stdout.write(f"{key} -> {b['HostIp']}:{b['HostPort']}\n")
    return 0


PRUNE_FLAGS = (Flag(("-f", "--force"), BOOL, "Do not prompt for confirmation"),
               Flag(("--filter",), LIST, "Provide filter values (e.g. 'until=<timestamp>')"))


def cmd_container_prune(g, argv) -> int:
    values, _ = _parsed(argv, PRUNE_FLAGS, "container prune", "[OPTIONS]",
                        "Remove all stopped containers", minimum=0)
    if values is None:
        return 0
    if not values["force"] and os.isatty(0):
        sys.stdout.write("WARNING! This will remove all stopped containers.\n"
                         "Are you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    containers = _containers(g)
    removed = []
    for record in containers.list():
        if record["State"]["Running"] or record["State"].get("Restarting"):
            continue
        try:
            containers.remove(record["Id"])
            removed.append(record["Id"])
        except BerthError:
            continue
    if removed:
        sys.stdout.write("Deleted Containers:\n" + "".join(f"{c}\n" for c in removed) + "\n")
    sys.stdout.write("Total reclaimed space: 0B\n")
    return 0


def stats_table(containers, records: list[dict]) -> str:
    from berth.cli import format as fmt
    from berth.container.procs import usage

    total_mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    first = {}
    cgroups = {}
    for r in records:
        if r["State"]["Running"]:
            cgroups[r["Id"]] = containers.cgroup_of(r)
            first[r["Id"]] = (time.monotonic(), usage(cgroups[r["Id"]])["cpu_ns"])
    time.sleep(0.2 if first else 0)
    rows = []
    for r in records:
        name = r["Name"].lstrip("/")
        if r["Id"] not in cgroups:
            rows.append([r["Id"][:12], name, "0.00%", "0B / 0B", "0.00%", "0B / 0B", "0B / 0B",
                         "0"])
            continue
        u = usage(cgroups[r["Id"]])
        t0, c0 = first[r["Id"]]
        cpu = 100.0 * (u["cpu_ns"] - c0) / max((time.monotonic() - t0) * 1e9, 1)
        limit = u["limit"] or total_mem
        rows.append([r["Id"][:12], name, f"{cpu:.2f}%",
                     f"{fmt.human_size(u['mem'])} / {fmt.human_size(limit)}",
                     f"{100.0 * u['mem'] / limit:.2f}%", "0B / 0B",
                     f"{fmt.human_size(u['io_read'])} / {fmt.human_size(u['io_write'])}",
                     str(u["pids"])])
    return fmt.table(["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O",
                      "BLOCK I/O", "PIDS"], rows)
