"""Docker's create/run flags, and their parsing into RunOptions.

Kept apart from berth.cli.run (which sends the request and follows the container) so
the many small parsers each have one home and their unit tests one module to import; the
mount flags (-v, --mount, --tmpfs) have theirs in berth.cli.mountopts.
"""

from __future__ import annotations

import os

from berth.cli.flags import BOOL, LIST, VALUE, Flag, UsageError, parse_size
from berth.cli.mountopts import parse_mounts
from berth.errors import InvalidArgument

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
    Flag(("-v", "--volume"), LIST, "Bind mount a volume (HOST:CONTAINER[:ro], NAME:CONTAINER[:ro], "
                                   "CONTAINER)"),
    Flag(("--mount",), LIST, "Attach a filesystem mount to the container (type=bind|volume|tmpfs,"
                             "source=,target=,readonly,...)"),
    Flag(("--volumes-from",), LIST, "Mount volumes from the specified container(s) "
                                    "(CONTAINER[:ro|:rw])"),
    Flag(("--tmpfs",), LIST, "Mount a tmpfs directory (PATH[:OPTIONS])"),
    Flag(("--ulimit",), LIST, "Ulimit options (name=soft[:hard])"),
    Flag(("--network", "--net"), VALUE, "Connect a container to a network (bridge, none, host, "
                                        "container:NAME|ID, or a network's name)"),
    Flag(("--ip",), VALUE, "IPv4 address (e.g., 172.30.100.104)"),
    Flag(("--network-alias", "--net-alias"), LIST, "Add network-scoped alias for the container"),
    Flag(("-p", "--publish"), LIST, "Publish a container's port(s) to the host "
                                    "([IP:][HOST:]CONTAINER[/PROTO])"),
    Flag(("-P", "--publish-all"), BOOL, "Publish all exposed ports to random ports"),
    Flag(("--expose",), LIST, "Expose a port or a range of ports"),
    Flag(("--add-host",), LIST, "Add a custom host-to-IP mapping (host:ip)"),
    Flag(("--dns",), LIST, "Set custom DNS servers"),
    Flag(("--dns-search",), LIST, "Set custom DNS search domains"),
    Flag(("--dns-option", "--dns-opt"), LIST, "Set DNS options"),
    Flag(("--init",), BOOL, "Run an init inside the container that forwards signals and reaps "
                            "processes"),
    Flag(("--sysctl",), LIST, "Sysctl options"),
    Flag(("--shm-size",), VALUE, "Size of /dev/shm"),
    Flag(("--ipc",), VALUE, "IPC mode to use (private, none)"),
    Flag(("--rm",), BOOL, "Automatically remove the container when it exits"),
    Flag(("--restart",), VALUE, "Restart policy to apply when a container exits (no, always, "
                                "unless-stopped, on-failure[:max-retries])"),
    Flag(("--log-opt",), LIST, "Log driver options (max-size, max-file)"),
    Flag(("--log-driver",), VALUE, "Logging driver for the container (json-file)"),
    Flag(("--stop-signal",), VALUE, "Signal to stop the container"),
    Flag(("--stop-timeout",), VALUE, "Timeout (in seconds) to stop a container", "int"),
    Flag(("-l", "--label"), LIST, "Set meta data on a container"),
    Flag(("--health-cmd",), VALUE, "Command to run to check health"),
    Flag(("--health-interval",), VALUE, "Time between running the check (ms|s|m|h)"),
    Flag(("--health-timeout",), VALUE, "Maximum time to allow one check to run (ms|s|m|h)"),
    Flag(("--health-start-period",), VALUE, "Start period for the container to initialize"),
    Flag(("--health-retries",), VALUE, "Consecutive failures needed to report unhealthy", "int"),
    Flag(("--no-healthcheck",), BOOL, "Disable any container-specified HEALTHCHECK"),
    Flag(("--pull",), VALUE, 'Pull image before running ("always", "missing", "never")',
         default="missing"),
    Flag(("--platform",), VALUE, "Set platform if server is multi-platform capable"),
)
RUN_FLAGS = CREATE_FLAGS + (
    Flag(("-d", "--detach"), BOOL, "Run container in background and print container ID"),
    Flag(("--sig-proxy",), BOOL, "Proxy received signals to the process", default=True),
)
HELP_FLAG = Flag(("--help",), BOOL, "Print usage")

_RLIMIT_NAMES = ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile",
                 "nproc", "rss", "rtprio", "rttime", "sigpending", "stack", "as")


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
    binds, volumes, tmpfs = parse_mounts(v)
    net = parse_network_flags(v)
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
        binds=binds,
        tmpfs=tmpfs,
        volumes=volumes,
        volumes_from=tuple(v["volumes_from"]),
        ulimits=tuple(parse_ulimit(x) for x in v["ulimit"]),
        **net,
        init=v["init"],
        sysctls=sysctls,
        shm_size=parse_size(v["shm_size"], "--shm-size") if v["shm_size"] else DEFAULT_SHM_SIZE,
        ipc=v["ipc"] or "private",
        restart=parse_restart(v["restart"]),
        log_opts=parse_log_opts(v["log_driver"], v["log_opt"]),
        stop_signal=v["stop_signal"],
        stop_timeout=_int(v["stop_timeout"], "--stop-timeout"),
        labels=dict(_label(item) for item in v["label"]),
        health=parse_health(v),
    )
    if v["rm"] and opts.restart != "no":
        raise InvalidArgument("Conflicting options: --restart and --rm")
    return opts, profile_text


def parse_network_flags(v: dict) -> dict:
    """--network, --ip, --network-alias, -p/-P/--expose, --add-host, --dns*: RunOptions fields.

    Whether a named network exists is the engine's question (at create), not the CLI's.
    """
    # each network module only when its flag is given: the common run has none of them,
    # and berth.network.store alone would import json and re
    network = v["network"] or "default"
    if network == "bridge":
        network = "default"
    user_network = network not in ("default", "none", "host") and \
        not network.startswith("container:")
    if network.startswith("container:"):
        if not network.partition(":")[2]:
            raise InvalidArgument("--network container: needs a container's name or ID")
        for flag, given in (("hostname", v["hostname"]), ("dns", v["dns"]),
                            ("add-host", v["add_host"]), ("port publishing", v["publish"] or
                                                          v["publish_all"])):
            if given:
                raise InvalidArgument(f"conflicting options: {flag} and the network mode")
    elif user_network:
        from berth.network.store import NAME_RE

        if not NAME_RE.match(network):
            raise InvalidArgument(f"network {network} not found")
    if v["ip"] is not None or v["add_host"] or v["dns"]:
        from berth.network import ipam
    if v["publish"] or v["expose"]:
        from berth.network import ports
    if v["ip"] is not None:
        if not user_network:
            raise InvalidArgument("user specified IP address is supported on user defined "
                                  "networks only")
        ipam.parse_ip(v["ip"])
    if v["network_alias"] and not user_network:
        raise InvalidArgument("network-scoped alias is supported only for containers in user "
                              "defined networks")
    publish = []
    for item in v["publish"]:
        publish += ports.parse_publish(item)
    expose = []
    for item in v["expose"]:
        expose += ports.parse_expose(item)
    hosts = []
    for item in v["add_host"]:
        sep = "=" if "=" in item else ":"
        name, _, address = item.partition(sep)
        if not name or not address:
            raise InvalidArgument(f"invalid argument \"{item}\" for \"--add-host\" flag: bad "
                                  "format for add-host")
        if address != "host-gateway":
            ipam.parse_ip(address)
        hosts.append(f"{name}:{address}")
    for server in v["dns"]:
        ipam.parse_ip(server)
    return dict(network=network, ip=v["ip"], aliases=tuple(v["network_alias"]),
                publish=tuple(publish), publish_all=v["publish_all"], expose=tuple(expose),
                extra_hosts=tuple(hosts), dns=tuple(v["dns"]), dns_search=tuple(v["dns_search"]),
                dns_options=tuple(v["dns_option"]))


def parse_restart(text: str | None) -> str:
    if not text or text == "no":
        return "no"
    name, _, count = text.partition(":")
    if name not in ("always", "unless-stopped", "on-failure") or (count and name != "on-failure"):
        raise InvalidArgument(f"invalid restart policy {text!r} (no, always, unless-stopped, "
                              "on-failure[:max-retries])")
    if count and (not count.isdigit()):
        raise InvalidArgument(f"maximum retry count must be a non-negative integer: {text!r}")
    return text


def parse_log_opts(driver: str | None, items: list[str]) -> dict:
    if driver not in (None, "json-file"):
        raise InvalidArgument(f"logging driver {driver!r} is not supported (json-file)")
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or key not in ("max-size", "max-file"):
            raise InvalidArgument(f"unknown log opt {item!r} for json-file log driver "
                                  "(max-size, max-file)")
        if key == "max-size":
            parse_size(value, "--log-opt")
        elif not value.isdigit() or int(value) < 1:
            raise InvalidArgument(f"invalid value for max-file: {value!r}")
        out[key] = value
    return out


def _label(item: str) -> tuple[str, str]:
    key, _, value = item.partition("=")
    if not key:
        raise InvalidArgument(f"invalid label {item!r}")
    return key, value


def parse_duration(text: str | None, flag: str) -> int | None:
    """Go durations as Docker's --health-* flags take them (1m30s, 500ms) -> nanoseconds."""
    import re

    if text is None:
        return None
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise UsageError(f'invalid argument "{text}" for "{flag}" flag: time: invalid duration')
    scale = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}
    return int(sum(float(n) * scale[u] for n, u in parts))


def parse_health(v: dict) -> dict | None:
    if v["no_healthcheck"]:
        return {"Test": ["NONE"]}
    if not any(v[k] is not None for k in ("health_cmd", "health_interval", "health_timeout",
                                          "health_start_period", "health_retries")):
        return None
    return {"Test": ["CMD-SHELL", v["health_cmd"]] if v["health_cmd"] else [],
            "Interval": parse_duration(v["health_interval"], "--health-interval") or 0,
            "Timeout": parse_duration(v["health_timeout"], "--health-timeout") or 0,
            "StartPeriod": parse_duration(v["health_start_period"], "--health-start-period") or 0,
            "Retries": _int(v["health_retries"], "--health-retries") or 0}
