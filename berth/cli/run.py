"""`berth run`, `create` and `start`: flags -> RunOptions -> a container."""

from __future__ import annotations

import os
import sys

from berth.cli.flags import BOOL, LIST, VALUE, Flag, UsageError, parse, usage
from berth.errors import FailedPrecondition, InvalidArgument, NotFound

CREATE_FLAGS = (
    Flag(("-i", "--interactive"), BOOL, "Keep STDIN open even if not attached"),
    Flag(("-t", "--tty"), BOOL, "Allocate a pseudo-TTY"),
    Flag(("--name",), VALUE, "Assign a name to the container"),
    Flag(("-e", "--env"), LIST, "Set environment variables"),
    Flag(("--env-file",), LIST, "Read in a file of environment variables"),
    Flag(("-w", "--workdir"), VALUE, "Working directory inside the container"),
    Flag(("-u", "--user"), VALUE, "Username or UID (format: <name|uid>[:<group|gid>])"),
    Flag(("--group-add",), LIST, "Add additional groups to join"),
    Flag(("-h", "--hostname"), VALUE, "Container host name"),
    Flag(("--domainname",), VALUE, "Container NIS domain name"),
    Flag(("--entrypoint",), VALUE, "Overwrite the default ENTRYPOINT of the image"),
    Flag(("--read-only",), BOOL, "Mount the container's root filesystem as read only"),
    Flag(("--privileged",), BOOL, "Give extended privileges to this container"),
    Flag(("--cap-add",), LIST, "Add Linux capabilities"),
    Flag(("--cap-drop",), LIST, "Drop Linux capabilities"),
    Flag(("--security-opt",), LIST, "Security Options (no-new-privileges, seccomp=unconfined|FILE)"),
    Flag(("-m", "--memory"), VALUE, "Memory limit"),
    Flag(("--memory-swap",), VALUE, "Swap limit equal to memory plus swap: '-1' to enable "
                                    "unlimited swap"),
    Flag(("--memory-reservation",), VALUE, "Memory soft limit"),
    Flag(("--oom-kill-disable",), BOOL, "Disable OOM Killer"),
    Flag(("--oom-score-adj",), VALUE, "Tune host's OOM preferences (-1000 to 1000)"),
    Flag(("--cpus",), VALUE, "Number of CPUs", "decimal"),
    Flag(("-c", "--cpu-shares"), VALUE, "CPU shares (relative weight)", "int"),
    Flag(("--cpu-period",), VALUE, "Limit CPU CFS (Completely Fair Scheduler) period", "int"),
    Flag(("--cpu-quota",), VALUE, "Limit CPU CFS (Completely Fair Scheduler) quota", "int"),
    Flag(("--cpuset-cpus",), VALUE, "CPUs in which to allow execution (0-3, 0,1)"),
    Flag(("--cpuset-mems",), VALUE, "MEMs in which to allow execution (0-3, 0,1)"),
    Flag(("--pids-limit",), VALUE, "Tune container pids limit (set -1 for unlimited)", "int"),
    Flag(("-v", "--volume"), LIST, "Bind mount a volume (HOST:CONTAINER[:ro])"),
    Flag(("--tmpfs",), LIST, "Mount a tmpfs directory (PATH[:OPTIONS])"),
    Flag(("--ulimit",), LIST, "Ulimit options (name=soft[:hard])"),
    Flag(("--network", "--net"), VALUE, "Connect a container to a network (none, host, bridge)"),
    Flag(("--init",), BOOL, "Run an init inside the container that forwards signals and reaps "
                            "processes"),
    Flag(("--sysctl",), LIST, "Sysctl options"),
    Flag(("--shm-size",), VALUE, "Size of /dev/shm"),
    Flag(("--ipc",), VALUE, "IPC mode to use (private, none)"),
    Flag(("--rm",), BOOL, "Automatically remove the container when it exits"),
)
RUN_FLAGS = CREATE_FLAGS + (
    Flag(("-d", "--detach"), BOOL, "Run container in background and print container ID"),
    Flag(("--sig-proxy",), BOOL, "Proxy received signals to the process", default=True),
)
START_FLAGS = (
    Flag(("-a", "--attach"), BOOL, "Attach STDOUT/STDERR and forward signals"),
    Flag(("-i", "--interactive"), BOOL, "Attach container's STDIN"),
)
HELP_FLAG = Flag(("--help",), BOOL, "Print usage")

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE = None  # compiled on first use: re is loaded anyway, the pattern need not be
_RLIMIT_NAMES = ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile",
                 "nproc", "rss", "rtprio", "rttime", "sigpending", "stack", "as")


def parse_size(text: str, flag: str) -> int:
    """Docker's RAMInBytes: 32m, 1g, 512k, 1024 (bytes); units are powers of 1024."""
    global _SIZE
    import re

    raw = text.strip().lower()
    if raw == "-1":
        return -1
    if _SIZE is None:
        _SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kmgtp]?)i?b?$")  # go-units' RAMInBytes
    match = _SIZE.match(raw)
    if not match:
        raise UsageError(f'invalid argument "{text}" for "{flag}" flag: invalid size: '
                         f"'{text}'")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def _int(text: str | None, flag: str) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise UsageError(f'invalid argument "{text}" for "{flag}" flag: strconv.ParseInt: '
                         f'parsing "{text}": invalid syntax') from None


def parse_ulimit(text: str):
    from berth.oci.runtime import Rlimit

    name, eq, values = text.partition("=")
    if not eq or name not in _RLIMIT_NAMES:
        raise UsageError(f"invalid ulimit argument: {text!r} (expected name=soft[:hard])")
    soft_text, _, hard_text = values.partition(":")
    try:
        soft = int(soft_text)
        hard = int(hard_text) if hard_text else soft
    except ValueError:
        raise UsageError(f"invalid ulimit value in {text!r}") from None
    unlimited = 2**64 - 1
    soft = unlimited if soft == -1 else soft
    hard = unlimited if hard == -1 else hard
    if soft > hard:
        raise UsageError(f"ulimit soft limit must be less than hard limit: {soft} > {hard}")
    return Rlimit(type="RLIMIT_" + name.upper(), hard=hard, soft=soft)


def parse_env_file(path: str) -> list[str]:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise InvalidArgument(f"open {path}: {exc.strerror}") from None
    out = []
    for line in lines:
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        out.extend(_env_item(line))
    return out


def _env_item(item: str) -> list[str]:
    """KEY=VALUE as is; a bare KEY takes the caller's value, or is dropped if unset."""
    if "=" in item:
        if item.startswith("="):
            raise InvalidArgument(f"invalid environment variable: {item}")
        return [item]
    value = os.environ.get(item)
    return [f"{item}={value}"] if value is not None else []


def parse_volume(text: str):
    from berth.container.spec import BindSpec

    parts = text.split(":")
    if len(parts) < 2 or len(parts) > 3:
        if len(parts) == 1 and text.startswith("/"):
            raise InvalidArgument(f"anonymous volumes ({text}) are not supported yet; "
                                  "use -v /host/path:/container/path")
        raise InvalidArgument(f"invalid volume specification: '{text}'")
    source, dest = parts[0], parts[1]
    options = parts[2].split(",") if len(parts) == 3 else []
    if not source.startswith("/"):
        raise InvalidArgument(f"named volumes ({source}) are not supported yet; "
                              "use an absolute host path")
    if not dest.startswith("/"):
        raise InvalidArgument(f"invalid volume specification: '{text}': mount path must be "
                              "absolute")
    readonly = False
    propagation = "rprivate"
    for opt in options:
        if opt == "ro":
            readonly = True
        elif opt == "rw":
            readonly = False
        elif opt in ("private", "rprivate", "shared", "rshared", "slave", "rslave"):
            propagation = opt
        elif opt in ("z", "Z", "nocopy", "consistent", "cached", "delegated", ""):
            pass  # SELinux relabels and Docker Desktop hints: nothing to do here
        else:
            raise InvalidArgument(f"invalid mode: {opt} in volume specification '{text}'")
    return BindSpec(os.path.normpath(source), os.path.normpath(dest), readonly, propagation)


def parse_security_opts(opts: list[str]) -> dict:
    out = {"no_new_privileges": False, "seccomp_unconfined": False, "seccomp_file": None}
    for opt in opts:
        # key=value, or the older key:value form
        sep = "=" if "=" in opt else ":"
        key, _, value = opt.partition(sep)
        if key == "no-new-privileges":
            flag = (value or "true").lower()
            if flag not in ("true", "1", "t", "false", "0", "f"):
                raise InvalidArgument(f"invalid --security-opt {opt!r}: no-new-privileges takes a "
                                      "boolean (true or false)")
            out["no_new_privileges"] = flag in ("true", "1", "t")
        elif key == "seccomp":
            if value == "unconfined":
                out["seccomp_unconfined"] = True
            elif value:
                out["seccomp_file"] = value
            else:
                raise InvalidArgument(f"invalid --security-opt: {opt!r}")
        elif key in ("label", "apparmor"):
            pass  # no SELinux or AppArmor on this engine's hosts; accepted like Docker does
        else:
            raise InvalidArgument(f"invalid --security-opt: {opt!r} (supported: no-new-privileges,"
                                  " seccomp=unconfined|FILE)")
    return out


def build_options(v: dict, command: list[str]):
    """Flag values -> RunOptions (plus the seccomp profile text, read here)."""
    from berth.container.spec import DEFAULT_SHM_SIZE, RunOptions

    env: list[str] = []
    for path in v["env_file"]:
        env += parse_env_file(path)
    for item in v["env"]:
        env += _env_item(item)
    sec = parse_security_opts(v["security_opt"])
    profile_text = None
    if sec["seccomp_file"]:
        try:
            with open(sec["seccomp_file"]) as f:
                profile_text = f.read()
        except OSError as exc:
            raise InvalidArgument(f"opening seccomp profile ({sec['seccomp_file']}) failed: "
                                  f"{exc.strerror}") from None
    cpus = None
    if v["cpus"] is not None:
        try:
            cpus = float(v["cpus"])
        except ValueError:
            raise UsageError(f'invalid argument "{v["cpus"]}" for "--cpus" flag') from None
        if cpus <= 0 or cpus > (os.cpu_count() or 1):
            raise InvalidArgument(f"range of CPUs is from 0.01 to {os.cpu_count()}.00, as there "
                                  f"are only {os.cpu_count()} CPUs available")
    sysctls = {}
    for item in v["sysctl"]:
        key, eq, value = item.partition("=")
        if not eq:
            raise InvalidArgument(f"sysctl '{item}' is not allowed: expected key=value")
        sysctls[key] = value
    tmpfs = []
    for item in v["tmpfs"]:
        dest, _, options = item.partition(":")
        if not dest.startswith("/"):
            raise InvalidArgument(f"invalid tmpfs mount: {item}: the path must be absolute")
        tmpfs.append((dest, options))
    network = v["network"] or "default"
    if network == "bridge":
        network = "default"
    if network not in ("default", "none", "host"):
        raise InvalidArgument(f"network {network} not found (available: bridge, host, none)")
    entrypoint = None
    if v["entrypoint"] is not None:
        entrypoint = (v["entrypoint"],) if v["entrypoint"] else ()
    memory = parse_size(v["memory"], "--memory") if v["memory"] else None
    if memory is not None and 0 < memory < 6 * 1024 * 1024:
        raise InvalidArgument("Minimum memory limit allowed is 6MB")
    opts = RunOptions(
        command=tuple(command),
        entrypoint=entrypoint,
        env=tuple(env),
        workdir=v["workdir"],
        user=v["user"],
        group_add=tuple(v["group_add"]),
        hostname=v["hostname"],
        domainname=v["domainname"],
        tty=v["tty"],
        interactive=v["interactive"],
        read_only=v["read_only"],
        privileged=v["privileged"],
        cap_add=tuple(v["cap_add"]),
        cap_drop=tuple(v["cap_drop"]),
        no_new_privileges=sec["no_new_privileges"],
        seccomp_unconfined=sec["seccomp_unconfined"],
        memory=memory,
        memory_swap=parse_size(v["memory_swap"], "--memory-swap") if v["memory_swap"] else None,
        memory_reservation=parse_size(v["memory_reservation"], "--memory-reservation")
        if v["memory_reservation"] else None,
        oom_kill_disable=v["oom_kill_disable"],
        oom_score_adj=_int(v["oom_score_adj"], "--oom-score-adj"),
        cpus=cpus,
        cpu_shares=_int(v["cpu_shares"], "--cpu-shares"),
        cpu_period=_int(v["cpu_period"], "--cpu-period"),
        cpu_quota=_int(v["cpu_quota"], "--cpu-quota"),
        cpuset_cpus=v["cpuset_cpus"],
        cpuset_mems=v["cpuset_mems"],
        pids_limit=_int(v["pids_limit"], "--pids-limit"),
        binds=tuple(parse_volume(x) for x in v["volume"]),
        tmpfs=tuple(tmpfs),
        ulimits=tuple(parse_ulimit(x) for x in v["ulimit"]),
        network=network,
        init=v["init"],
        sysctls=sysctls,
        shm_size=parse_size(v["shm_size"], "--shm-size") if v["shm_size"] else DEFAULT_SHM_SIZE,
        ipc=v["ipc"] or "private",
    )
    return opts, profile_text


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise FailedPrecondition(f"berth {what} needs root: run it as root (for example with sudo)")


def _open(g):
    from berth.container import Containers
    from berth.image import ImageStore

    images = ImageStore(g.root)
    return images, Containers(g.root, images)


def _parse_create(g, argv: list[str], flags, command_name: str):
    """Flags -> (flag values, RunOptions, containers, image ref, create args); None for --help."""
    values, pos = parse(argv, flags + (HELP_FLAG,), interspersed=False)
    if values["help"]:
        sys.stdout.write(usage(command_name, "[OPTIONS] IMAGE [COMMAND] [ARG...]",
                               "Create and run a new container from an image" if command_name ==
                               "run" else "Create a new container", flags) + "\n")
        return None
    if not pos:
        raise UsageError(f'"berth {command_name}" requires at least 1 argument.')
    _require_root(command_name)
    opts, profile_text = build_options(values, pos[1:])
    if opts.tty and opts.interactive and not os.isatty(0):
        raise InvalidArgument("the input device is not a TTY")
    for b in opts.binds:
        # Docker creates a missing bind source as a directory (only for -v)
        os.makedirs(b.source, exist_ok=True)
    _images, containers = _open(g)
    create_args = dict(name=values["name"], auto_remove=values["rm"],
                       seccomp_profile_text=profile_text)
    return values, opts, containers, pos[0], create_args


def cmd_create(g, argv: list[str]) -> int:
    parsed = _parse_create(g, argv, CREATE_FLAGS, "create")
    if parsed is None:
        return 0
    _values, opts, containers, image_ref, create_args = parsed
    record = containers.create(containers.resolve_image(image_ref), opts, image_ref=image_ref,
                               **create_args)
    sys.stdout.write(record["Id"] + "\n")
    return 0


def cmd_run(g, argv: list[str]) -> int:
    parsed = _parse_create(g, argv, RUN_FLAGS, "run")
    if parsed is None:
        return 0
    values, opts, containers, image_ref, create_args = parsed
    if values["detach"]:
        raise InvalidArgument("detached containers (-d) are not supported yet: "
                              "run in the foreground")
    return run_attached(containers, lambda stdio, size: containers.run(
        image_ref, opts, stdio, console_size=size, **create_args), opts.tty, opts.interactive,
        values["rm"], values["sig_proxy"])


def cmd_start(g, argv: list[str]) -> int:
    values, pos = parse(argv, START_FLAGS + (HELP_FLAG,))
    if values["help"]:
        sys.stdout.write(usage("start", "[OPTIONS] CONTAINER", "Start a created container",
                               START_FLAGS) + "\n")
        return 0
    if len(pos) != 1:
        raise UsageError('"berth start" requires exactly 1 argument.')
    if not values["attach"]:
        raise InvalidArgument("starting a container in the background is not supported yet: "
                              "use berth start -a")
    _require_root("start")
    _images, containers = _open(g)
    record = containers.get(pos[0])
    cid = record["Id"]
    return run_attached(containers, lambda stdio, size: (record, containers.start(
        cid, stdio, console_size=size)), record["Config"]["Tty"], values["interactive"],
        record["HostConfig"]["AutoRemove"], True)


FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGCONT",
             "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGPIPE", "SIGVTALRM", "SIGPROF", "SIGXCPU")


def run_attached(containers, launch, tty: bool, interactive: bool, auto_remove: bool,
                 sig_proxy: bool) -> int:
    """Run a container in the foreground with this process as its monitor.

    `launch(stdio, console_size)` starts it and returns (record, ContainerProcess).
    """
    import signal

    from berth.runtime import Stdio

    console_size = None
    if tty:
        from berth.container.attach import window_size

        console_size = window_size(1) or window_size(0)
        stdio = Stdio()
    else:
        stdio = Stdio(stdin=0 if interactive else None, stdout=1, stderr=2)
    forwarding = not tty and sig_proxy
    proc = None
    pending: list[int] = []

    def forward(signum, _frame):
        if proc is not None:
            proc.kill(signum)
        else:
            pending.append(signum)

    if forwarding:
        for name in FORWARDED:
            signal.signal(getattr(signal, name), forward)
    record = None
    try:
        record, proc = launch(stdio, console_size)
        for signum in pending:
            proc.kill(signum)
        if tty:
            from berth.container.attach import relay

            try:
                relay(proc.console, 0, 1, interactive)
            except KeyboardInterrupt:
                pass
        status = proc.wait()
    except BaseException:
        if auto_remove:
            _remove_quietly(containers, record)
        raise
    finally:
        if forwarding:
            for name in FORWARDED:
                signal.signal(getattr(signal, name), signal.SIG_DFL)
    containers.finish(record["Id"], status)
    if auto_remove:
        containers.remove(record["Id"], force=True)
    return status.code


def _remove_quietly(containers, record) -> None:
    """--rm after a failure past start (a failed start removes its own container)."""
    if record is None:
        return
    try:
        containers.remove(record["Id"], force=True)
    except NotFound:
        pass
