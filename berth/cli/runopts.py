"""Docker's create/run flags, and their parsing into RunOptions.

Kept apart from berth.cli.run (which sends the request and follows the container) so
the many small parsers each have one home and their unit tests one module to import.
"""

from __future__ import annotations

import os

from berth.cli.flags import BOOL, LIST, VALUE, Flag, UsageError
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


_PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")


def _host_path(text: str) -> str:
    # the docker CLI takes ./dir and ../dir as host paths relative to where it runs
    return os.path.normpath(os.path.abspath(text) if text.startswith(".") else text)


def parse_volume(text: str):
    """-v: HOST:CTR[:MODE] (a BindSpec), NAME:CTR[:MODE] or CTR (a VolumeSpec)."""
    from berth.container.spec import BindSpec, VolumeSpec

    parts = text.split(":")
    if len(parts) == 1 and text.startswith("/"):
        return VolumeSpec(os.path.normpath(text))  # anonymous
    if len(parts) < 2 or len(parts) > 3 or not parts[0] or not parts[1]:
        raise InvalidArgument(f"invalid volume specification: '{text}'")
    if len(parts) == 2 and parts[0].startswith("/") and _is_mode(parts[1]):
        raise InvalidArgument(f"invalid volume specification: '{text}'")  # /path:ro, as Docker
    source, dest = parts[0], parts[1]
    options = parts[2].split(",") if len(parts) == 3 else []
    if not dest.startswith("/"):
        raise InvalidArgument(f"invalid volume specification: '{text}': mount path must be "
                              "absolute")
    bind = source.startswith(("/", "."))
    readonly = nocopy = False
    propagation = "rprivate"
    for opt in options:
        if opt == "ro":
            readonly = True
        elif opt == "rw":
            readonly = False
        elif opt in _PROPAGATIONS and bind:
            propagation = opt
        elif opt == "nocopy":
            nocopy = True
        elif opt in ("z", "Z", "consistent", "cached", "delegated", ""):
            pass  # SELinux relabels and Docker Desktop hints: nothing to do here
        else:
            raise InvalidArgument(f"invalid mode: {opt} in volume specification '{text}'")
    if bind:
        return BindSpec(_host_path(source), os.path.normpath(dest), readonly, propagation)
    _check_volume_name(source)
    return VolumeSpec(os.path.normpath(dest), source, readonly, nocopy)


def _is_mode(text: str) -> bool:
    return all(o in ("ro", "rw", "z", "Z", "nocopy", *_PROPAGATIONS) for o in text.split(","))


def _check_volume_name(name: str) -> None:
    from berth.volume import NAME_RE

    if not NAME_RE.match(name):
        raise InvalidArgument(
            f'create {name}: "{name}" includes invalid characters for a local volume name, only '
            '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, '
            "use absolute path")


_MOUNT_KEYS = {"type", "source", "src", "target", "destination", "dst", "readonly", "ro",
               "bind-propagation", "volume-nocopy", "tmpfs-size", "tmpfs-mode", "consistency"}


def parse_mount(text: str):
    """--mount type=bind|volume|tmpfs,...: a BindSpec, a VolumeSpec or a tmpfs (dest, options)."""
    import csv

    from berth.container.spec import BindSpec, VolumeSpec

    try:
        fields = next(csv.reader([text]))
    except (csv.Error, StopIteration):
        raise UsageError(f'invalid argument "{text}" for "--mount" flag') from None
    values: dict[str, str | None] = {}
    for field in fields:
        key, eq, value = field.partition("=")
        key = key.strip().lower()
        if key not in _MOUNT_KEYS:
            raise UsageError(f'invalid argument "{text}" for "--mount" flag: unexpected key '
                             f"'{key}' in '{field}'")
        values[key] = value if eq else None
    kind = values.get("type") or "volume"
    source = values.get("source") or values.get("src") or ""
    target = values.get("target") or values.get("destination") or values.get("dst") or ""
    if not target:
        raise UsageError(f'invalid argument "{text}" for "--mount" flag: target is required')
    invalid = f'invalid mount config for type "{kind}": '
    if not target.startswith("/"):
        raise InvalidArgument(f"{invalid}invalid mount path: '{target}' mount path must be "
                              "absolute")
    readonly = _mount_bool(values, "readonly", text) or _mount_bool(values, "ro", text)
    given = set(values)

    def refuse(prefix: str, what: str) -> None:
        if any(k.startswith(prefix) for k in given):
            raise InvalidArgument(f"{invalid}field {what} must not be specified")

    target = os.path.normpath(target)
    if kind == "bind":
        refuse("volume-", "VolumeOptions")
        refuse("tmpfs-", "TmpfsOptions")
        if not source:
            raise InvalidArgument(f"{invalid}field Source must not be empty")
        source = _host_path(source)
        if not os.path.exists(source):  # unlike -v, --mount never creates the source
            raise InvalidArgument(f"{invalid}bind source path does not exist: {source}")
        propagation = values.get("bind-propagation") or "rprivate"
        if propagation not in _PROPAGATIONS:
            raise InvalidArgument(f"{invalid}invalid propagation mode: {propagation}")
        return BindSpec(source, target, readonly, propagation)
    if kind == "volume":
        refuse("bind-", "BindOptions")
        refuse("tmpfs-", "TmpfsOptions")
        if source:
            _check_volume_name(source)
        return VolumeSpec(target, source, readonly, _mount_bool(values, "volume-nocopy", text))
    if kind == "tmpfs":
        refuse("bind-", "BindOptions")
        refuse("volume-", "VolumeOptions")
        if source:
            raise InvalidArgument(f"{invalid}field Source must not be specified")
        options = []
        if values.get("tmpfs-size"):
            options.append(f"size={parse_size(values['tmpfs-size'], '--mount')}")
        if values.get("tmpfs-mode"):
            try:
                options.append(f"mode={int(values['tmpfs-mode'], 8):o}")
            except ValueError:
                raise InvalidArgument(f"{invalid}invalid tmpfs-mode: "
                                      f"{values['tmpfs-mode']}") from None
        if readonly:
            options.append("ro")
        return (target, ",".join(options))
    raise InvalidArgument(f"invalid mount type {kind!r} (bind, volume or tmpfs)")


def _mount_bool(values: dict, key: str, text: str) -> bool:
    if key not in values:
        return False
    value = (values[key] or "true").lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise UsageError(f'invalid argument "{text}" for "--mount" flag: invalid value for {key}: '
                     f"{values[key]}")


def _mounts(v: dict, tmpfs: list[tuple[str, str]]):
    """-v, --mount and --tmpfs -> (binds, volumes, tmpfs), with one mount per destination."""
    from berth.container.spec import BindSpec, VolumeSpec

    binds, volumes = [], []
    for spec in [parse_volume(x) for x in v["volume"]] + [parse_mount(x) for x in v["mount"]]:
        if isinstance(spec, BindSpec):
            binds.append(spec)
        elif isinstance(spec, VolumeSpec):
            volumes.append(spec)
        else:
            tmpfs.append(spec)
    seen = set()
    for dest in [b.destination for b in binds] + [m.destination for m in volumes] + \
            [os.path.normpath(d) for d, _ in tmpfs]:
        if dest in seen:
            raise InvalidArgument(f"Duplicate mount point: {dest}")
        seen.add(dest)
    for item in v["volumes_from"]:
        ref, _, mode = item.partition(":")
        if not ref or mode not in ("", "ro", "rw", "z", "Z"):
            raise InvalidArgument(f"invalid mode: {mode} in --volumes-from {item!r}")
    return tuple(binds), tuple(volumes), tuple(tmpfs)


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
    binds, volumes, tmpfs = _mounts(v, tmpfs)
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
