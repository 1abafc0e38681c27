"""Image config + run options -> OCI runtime spec. Pure: no disk, no kernel.

Each Docker behaviour is one small function here, with its own unit test
(tests/test_container_spec.py), in the manner of containerd's spec options.
"""

from __future__ import annotations

from berth.oci.record import Record, jf, replace

from berth.container.users import ExecUser
from berth.errors import InvalidArgument
from berth.network.ports import PortSpec
from berth.oci import image as oci_image
from berth.oci import runtime as rt
from berth.runtime import caps as _caps

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHM_SIZE = 64 * 1024 * 1024

# Docker's defaultLinuxMaskedPaths / ReadonlyPaths (moby daemon/pkg/oci/defaults.go)
MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list",
    "/proc/timer_stats", "/sys/devices/virtual/powercap", "/sys/firmware",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# the devices every container gets (runtime-spec defaults; ptmx is a link to pts/ptmx)
DEFAULT_DEVICES = (
    rt.Device("c", "/dev/null", 1, 3, 0o666, 0, 0),
    rt.Device("c", "/dev/zero", 1, 5, 0o666, 0, 0),
    rt.Device("c", "/dev/full", 1, 7, 0o666, 0, 0),
    rt.Device("c", "/dev/random", 1, 8, 0o666, 0, 0),
    rt.Device("c", "/dev/urandom", 1, 9, 0o666, 0, 0),
    rt.Device("c", "/dev/tty", 5, 0, 0o666, 0, 0),
)

# Device cgroup: Docker's deny-all plus the nodes above, and runc's always-added rules
# (mknod of any node is allowed, opening it is not; pts and ptmx for terminals).
# /dev/fuse (10:229) is denied explicitly, and unlike runc /dev/net/tun is not allowed.
# The fuse deny comes before the mknod allows so v1 (ordered writes) and the v2 BPF
# filter (last match wins, per access bit) agree with Docker: mknod yes, open no.
DEFAULT_DEVICE_RULES = (
    rt.DeviceRule(False, "a", None, None, "rwm"),
    rt.DeviceRule(False, "c", 10, 229, "rwm"),  # /dev/fuse
    rt.DeviceRule(True, "c", None, None, "m"),
    rt.DeviceRule(True, "b", None, None, "m"),
    *(rt.DeviceRule(True, "c", d.major, d.minor, "rwm") for d in DEFAULT_DEVICES),
    rt.DeviceRule(True, "c", 5, 1, "rwm"),  # /dev/console
    rt.DeviceRule(True, "c", 5, 2, "rwm"),  # /dev/ptmx
    rt.DeviceRule(True, "c", 136, None, "rwm"),  # /dev/pts/*
)


class BindSpec(Record):
    source: str
    destination: str
    readonly: bool = False
    propagation: str = "rprivate"


class VolumeSpec(Record):
    """A volume at `destination`: named, or anonymous (no name, made for the container).

    `source` is the host directory the engine resolved it to, empty until then; a volume
    made with `-o type=tmpfs` has `fstype` "tmpfs" and its mount options in `data`.
    """

    destination: str
    name: str = ""
    readonly: bool = False
    nocopy: bool = False  # no copy of the image's files into an empty volume
    source: str = ""
    fstype: str = ""
    data: str = ""


class RunOptions(Record):
    """What `run`/`create` flags ask for, already parsed and validated."""

    command: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = jf(default=None, keep=True)  # () is --entrypoint ""
    env: tuple[str, ...] = ()
    workdir: str | None = None
    user: str | None = None
    group_add: tuple[str, ...] = ()
    hostname: str | None = None
    domainname: str | None = None
    tty: bool = False
    interactive: bool = False
    read_only: bool = False
    privileged: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    no_new_privileges: bool = False
    seccomp_unconfined: bool = False
    memory: int | None = None
    memory_swap: int | None = None
    memory_reservation: int | None = None
    oom_kill_disable: bool = False
    cpus: float | None = None
    cpu_shares: int | None = None
    cpu_period: int | None = None
    cpu_quota: int | None = None
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None
    pids_limit: int | None = None
    binds: tuple[BindSpec, ...] = jf(of=BindSpec, default=())
    tmpfs: tuple[tuple[str, str], ...] = ()  # (destination, options)
    volumes: tuple[VolumeSpec, ...] = jf(of=VolumeSpec, default=())
    volumes_from: tuple[str, ...] = ()  # CONTAINER[:ro|:rw]
    ulimits: tuple[rt.Rlimit, ...] = jf(of=rt.Rlimit, default=())
    # "default" (the bridge network), "none", "host", "container:<ref>", or a network's name
    network: str = "default"
    ip: str | None = None  # --ip, on a user-defined network
    aliases: tuple[str, ...] = ()  # --network-alias
    publish: tuple[PortSpec, ...] = jf(of=PortSpec, default=())  # -p
    publish_all: bool = False  # -P: every exposed port, to a free host port
    expose: tuple[str, ...] = ()  # --expose, as "80/tcp"
    extra_hosts: tuple[str, ...] = ()  # --add-host NAME:IP
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    init: bool = False
    sysctls: dict = jf(factory=dict)
    shm_size: int = DEFAULT_SHM_SIZE
    oom_score_adj: int | None = None
    ipc: str = "private"
    pid: str = "private"
    uts: str = "private"
    # lifecycle: what the monitor does with the container, not what the runtime runs
    restart: str = "no"  # no | always | unless-stopped | on-failure[:N]
    log_opts: dict = jf(factory=dict)  # max-size, max-file
    stop_signal: str | None = None
    stop_timeout: int | None = None
    labels: dict = jf(factory=dict)
    health: dict | None = None  # Docker's HealthConfig: Test, Interval, Timeout, ... (ns)


def options_to_dict(opts: RunOptions) -> dict:
    """RunOptions as JSON-ready data, for the hub (berth.container.hub) to rebuild."""
    from berth.oci.codec import to_dict

    return to_dict(opts)


def options_from_dict(data: dict) -> RunOptions:
    from berth.oci.codec import from_dict

    opts = from_dict(RunOptions, data)
    # JSON has no tuples of pairs: (destination, options) come back as lists
    return replace(opts, tmpfs=tuple(tuple(t) for t in opts.tmpfs))


def command_args(image: oci_image.ContainerConfig, opts: RunOptions) -> tuple[str, ...]:
    """Docker's Entrypoint/Cmd rules."""
    if opts.entrypoint is not None:
        entrypoint = opts.entrypoint
        # a new entrypoint drops the image's Cmd, unless a command is given
        cmd = opts.command
    else:
        entrypoint = tuple(image.entrypoint or ())
        cmd = opts.command or tuple(image.cmd or ())
    args = tuple(entrypoint) + tuple(cmd)
    if not args:
        raise InvalidArgument("no command specified")
    return args


def merge_env(*layers: tuple[str, ...]) -> tuple[str, ...]:
    """Later layers override earlier ones by key; first-seen order is kept."""
    out: dict[str, str] = {}
    for layer in layers:
        for item in layer:
            key, sep, value = item.partition("=")
            if not key:
                raise InvalidArgument(f"invalid environment variable: {item!r}")
            out[key] = f"{key}={value}" if sep else item
    return tuple(out.values())


def environment(image: oci_image.ContainerConfig, opts: RunOptions, hostname: str,
                user: ExecUser) -> tuple[str, ...]:
    base = ["PATH=" + DEFAULT_PATH, f"HOSTNAME={hostname}"]
    if opts.tty:
        base.append("TERM=xterm")
    env = merge_env(tuple(base), tuple(image.env), opts.env)
    if not any(e.startswith("HOME=") for e in env):
        env += (f"HOME={user.home}",)
    return env


def capabilities(opts: RunOptions, user: ExecUser) -> rt.Capabilities:
    names = _caps.all_caps() if opts.privileged else _caps.tweak(_caps.DOCKER_DEFAULT, opts.cap_add,
                                                                 opts.cap_drop)
    # a non-root user keeps the bounding set but starts with no effective capabilities,
    # as after any execve by a non-root uid
    live = names if user.uid == 0 else ()
    return rt.Capabilities(bounding=names, effective=live, inheritable=(), permitted=live, ambient=())


def resources(opts: RunOptions, devices: tuple[rt.DeviceRule, ...]) -> rt.Resources:
    memory = None
    swap = opts.memory_swap or None  # Docker: 0 means unset
    if swap is not None and not opts.memory:
        raise InvalidArgument("You should always set the Memory limit when using Memoryswap limit, "
                              "see usage")
    if opts.memory is not None or opts.memory_reservation is not None or opts.oom_kill_disable:
        if opts.memory and swap is None:
            swap = opts.memory * 2  # Docker: swap as large as the memory limit, by default
        if opts.memory and swap is not None and 0 <= swap < opts.memory:
            raise InvalidArgument("Minimum memoryswap limit should be larger than memory limit, "
                                  "see usage")
        memory = rt.Memory(limit=opts.memory, reservation=opts.memory_reservation, swap=swap,
                           disable_oom_killer=opts.oom_kill_disable or None)
    cpu = None
    if any(v is not None for v in (opts.cpus, opts.cpu_shares, opts.cpu_period, opts.cpu_quota,
                                   opts.cpuset_cpus, opts.cpuset_mems)):
        period, quota = opts.cpu_period, opts.cpu_quota
        if opts.cpus is not None:
            if opts.cpu_period or opts.cpu_quota:
                raise InvalidArgument("Conflicting options: Nano CPUs and CPU Period/Quota cannot "
                                      "both be set")
            period = 100000
            # as Docker's NanoCPUs: decimal, not float (0.29 CPUs is 29000, not 28999)
            quota = round(opts.cpus * 1_000_000_000) * period // 1_000_000_000
        cpu = rt.CPU(shares=opts.cpu_shares, quota=quota, period=period, cpus=opts.cpuset_cpus,
                     mems=opts.cpuset_mems)
    pids = None
    if opts.pids_limit is not None:
        pids = rt.Pids(limit=opts.pids_limit if opts.pids_limit > 0 else -1)
    return rt.Resources(devices=devices, memory=memory, cpu=cpu, pids=pids)


def device_rules(opts: RunOptions) -> tuple[rt.DeviceRule, ...]:
    if opts.privileged:
        return (rt.DeviceRule(True, "a", None, None, "rwm"),)
    return DEFAULT_DEVICE_RULES


def default_mounts(opts: RunOptions, cgroup_ns: bool = True) -> list[rt.Mount]:
    privileged = opts.privileged
    ro = () if privileged else ("ro",)
    mounts = [
        rt.Mount("/proc", "proc", "proc", ("nosuid", "noexec", "nodev")),
        rt.Mount("/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
        rt.Mount("/dev/pts", "devpts", "devpts",
                 ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5")),
        rt.Mount("/sys", "sysfs", "sysfs", ("nosuid", "noexec", "nodev", *ro)),
        rt.Mount("/sys/fs/cgroup", "cgroup", "cgroup", ("nosuid", "noexec", "nodev", "relatime", *ro)),
        rt.Mount("/dev/mqueue", "mqueue", "mqueue", ("nosuid", "noexec", "nodev")),
    ]
    if opts.ipc != "none":
        mounts.append(rt.Mount("/dev/shm", "tmpfs", "shm",
                               ("nosuid", "noexec", "nodev", "mode=1777", f"size={opts.shm_size}")))
    return mounts


def user_mounts(opts: RunOptions) -> list[rt.Mount]:
    out = []
    for b in opts.binds:
        options = ["rbind", b.propagation]
        if b.readonly:
            options.append("ro")
        out.append(rt.Mount(b.destination, "bind", b.source, tuple(options)))
    for v in opts.volumes:
        ro = ("ro",) if v.readonly else ()
        if v.fstype == "tmpfs":
            data = tuple(o for o in v.data.split(",") if o)
            out.append(rt.Mount(v.destination, "tmpfs", "tmpfs", ("nosuid", "nodev") + data + ro))
        elif v.source:
            out.append(rt.Mount(v.destination, "bind", v.source, ("rbind", "rprivate") + ro))
        else:
            raise InvalidArgument(f"the volume at {v.destination} has no host directory yet: "
                                  "volumes are resolved before the spec is built")
    for dest, options in opts.tmpfs:
        extra = tuple(o for o in options.split(",") if o)
        base = ("noexec", "nosuid", "nodev")
        out.append(rt.Mount(dest, "tmpfs", "tmpfs", base + extra))
    # parents before children, as Docker sorts them: /data/logs must not vanish under /data
    out.sort(key=lambda m: mount_depth(m.destination))
    return out


def mount_depth(destination: str) -> int:
    return len([p for p in destination.split("/") if p and p != "."])


def thermal_paths(ncpus: int) -> tuple[str, ...]:
    return tuple(f"/sys/devices/system/cpu/cpu{i}/thermal_throttle" for i in range(ncpus))


class Context(Record):
    """Facts about the host and the container the builder needs, gathered by the caller."""

    container_id: str
    rootfs: str
    hostname_file: str
    hosts_file: str
    resolv_file: str
    cgroup_parent: str = "berth"
    ncpus: int = 1
    host_devices: tuple[rt.Device, ...] = ()  # used only with --privileged
    host_hostname: str = ""
    seccomp: rt.Seccomp | None = None  # resolved by the caller for these capabilities
    netns_path: str = ""  # --network container:X: X's namespace, once X runs


def network_namespace(opts: RunOptions, ctx: Context) -> rt.Namespace | None:
    """None with the host's network; another container's namespace with container:X (the
    engine puts in its path on every start, as X's pid changes); else a new one."""
    if opts.network == "host":
        return None
    if opts.network.startswith("container:"):
        return rt.Namespace("network", ctx.netns_path or None)
    return rt.Namespace("network")


def build(image: oci_image.ContainerConfig, opts: RunOptions, user: ExecUser,
          ctx: Context) -> rt.Spec:
    net_host = opts.network == "host"
    own_netns = not net_host and not opts.network.startswith("container:")
    hostname = opts.hostname or (ctx.host_hostname if net_host else ctx.container_id[:12])
    namespaces = [rt.Namespace("pid"), rt.Namespace("ipc"), rt.Namespace("uts"),
                  rt.Namespace("mount"), rt.Namespace("cgroup")]
    netns = network_namespace(opts, ctx)
    if netns is not None:
        namespaces.append(netns)
    cwd = opts.workdir or image.working_dir or "/"
    if not cwd.startswith("/"):
        raise InvalidArgument(f"the working directory '{cwd}' is invalid, it needs to be an "
                              "absolute path")
    process = rt.Process(
        args=command_args(image, opts),
        cwd=cwd,
        env=environment(image, opts, hostname, user),
        user=rt.User(uid=user.uid, gid=user.gid, additional_gids=user.additional_gids),
        terminal=opts.tty,
        capabilities=capabilities(opts, user),
        rlimits=opts.ulimits,
        no_new_privileges=opts.no_new_privileges,
        oom_score_adj=opts.oom_score_adj,
    )
    mounts = default_mounts(opts)
    mounts += [
        rt.Mount("/etc/resolv.conf", "bind", ctx.resolv_file, ("rbind", "rprivate")),
        rt.Mount("/etc/hostname", "bind", ctx.hostname_file, ("rbind", "rprivate")),
        rt.Mount("/etc/hosts", "bind", ctx.hosts_file, ("rbind", "rprivate")),
    ]
    mounts += user_mounts(opts)
    sysctls = {}
    if own_netns:
        # Docker's defaults for a container with its own network namespace
        sysctls = {"net.ipv4.ip_unprivileged_port_start": "0",
                   "net.ipv4.ping_group_range": "0 2147483647"}
    sysctls.update(opts.sysctls)
    if opts.privileged:
        devices = DEFAULT_DEVICES + tuple(d for d in ctx.host_devices
                                          if d.path not in {x.path for x in DEFAULT_DEVICES})
        masked, readonly = (), ()
    else:
        devices = DEFAULT_DEVICES
        masked = MASKED_PATHS + thermal_paths(ctx.ncpus)
        readonly = READONLY_PATHS
    linux = rt.Linux(
        namespaces=tuple(namespaces),
        devices=devices,
        cgroups_path=f"{ctx.cgroup_parent}/{ctx.container_id}",
        resources=resources(opts, device_rules(opts)),
        sysctl=sysctls or None,
        seccomp=None if opts.privileged or opts.seccomp_unconfined else ctx.seccomp,
        rootfs_propagation="rprivate",
        masked_paths=masked,
        readonly_paths=readonly,
    )
    return rt.Spec(
        process=process,
        root=rt.Root(path=ctx.rootfs, readonly=opts.read_only),
        hostname=hostname,
        domainname=opts.domainname,
        mounts=tuple(mounts),
        linux=linux,
    )
