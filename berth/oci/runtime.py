"""OCI runtime-spec (config.json) as typed, frozen records (berth.oci.record).

Only the parts berth produces or consumes are modelled; readers ignore the rest, as the
spec allows. ``to_json()`` gives a valid config.json.
"""

from __future__ import annotations


from berth.oci.codec import dumps, loads
from berth.oci.record import Record, jf

OCI_VERSION = "1.1.0"


class User(Record):
    uid: int = jf("uid", default=0, keep=True)
    gid: int = jf("gid", default=0, keep=True)
    umask: int | None = jf("umask", default=None)
    additional_gids: tuple[int, ...] = jf("additionalGids", default=())


class Box(Record):
    height: int = jf("height", default=0, keep=True)
    width: int = jf("width", default=0, keep=True)


class Capabilities(Record):
    bounding: tuple[str, ...] = jf("bounding", default=(), keep=True)
    effective: tuple[str, ...] = jf("effective", default=(), keep=True)
    inheritable: tuple[str, ...] = jf("inheritable", default=(), keep=True)
    permitted: tuple[str, ...] = jf("permitted", default=(), keep=True)
    ambient: tuple[str, ...] = jf("ambient", default=(), keep=True)


class Rlimit(Record):
    type: str = jf("type")
    hard: int = jf("hard")
    soft: int = jf("soft")


class Process(Record):
    args: tuple[str, ...] = jf("args")
    cwd: str = jf("cwd", default="/")
    env: tuple[str, ...] = jf("env", default=())
    user: User = jf("user", of=User, default=User(), keep=True)
    terminal: bool = jf("terminal", default=False)
    console_size: Box | None = jf("consoleSize", of=Box, default=None)
    capabilities: Capabilities | None = jf("capabilities", of=Capabilities, default=None)
    rlimits: tuple[Rlimit, ...] = jf("rlimits", of=Rlimit, default=())
    no_new_privileges: bool = jf("noNewPrivileges", default=False)
    oom_score_adj: int | None = jf("oomScoreAdj", default=None)


class Root(Record):
    path: str = jf("path")
    readonly: bool = jf("readonly", default=False)


class Mount(Record):
    destination: str = jf("destination")
    type: str | None = jf("type", default=None)
    source: str | None = jf("source", default=None)
    options: tuple[str, ...] = jf("options", default=())


class Namespace(Record):
    type: str = jf("type")
    path: str | None = jf("path", default=None)


class IDMapping(Record):
    container_id: int = jf("containerID")
    host_id: int = jf("hostID")
    size: int = jf("size")


class Device(Record):
    type: str = jf("type")
    path: str = jf("path")
    major: int = jf("major", default=0, keep=True)
    minor: int = jf("minor", default=0, keep=True)
    file_mode: int | None = jf("fileMode", default=None)
    uid: int | None = jf("uid", default=None)
    gid: int | None = jf("gid", default=None)


class DeviceRule(Record):
    allow: bool = jf("allow", keep=True)
    type: str | None = jf("type", default=None)  # a, c, b; None means all
    major: int | None = jf("major", default=None)  # None means any (*)
    minor: int | None = jf("minor", default=None)
    access: str | None = jf("access", default=None)  # subset of "rwm"


class Memory(Record):
    limit: int | None = jf("limit", default=None)
    reservation: int | None = jf("reservation", default=None)
    swap: int | None = jf("swap", default=None)  # memory+swap, as in the spec
    swappiness: int | None = jf("swappiness", default=None)
    disable_oom_killer: bool | None = jf("disableOOMKiller", default=None)


class CPU(Record):
    shares: int | None = jf("shares", default=None)
    quota: int | None = jf("quota", default=None)
    period: int | None = jf("period", default=None)
    cpus: str | None = jf("cpus", default=None)
    mems: str | None = jf("mems", default=None)


class Pids(Record):
    limit: int = jf("limit", keep=True)


class Resources(Record):
    devices: tuple[DeviceRule, ...] = jf("devices", of=DeviceRule, default=())
    memory: Memory | None = jf("memory", of=Memory, default=None)
    cpu: CPU | None = jf("cpu", of=CPU, default=None)
    pids: Pids | None = jf("pids", of=Pids, default=None)


class SeccompArg(Record):
    index: int = jf("index", keep=True)
    value: int = jf("value", keep=True)
    op: str = jf("op")
    value_two: int = jf("valueTwo", default=0)


class SeccompSyscall(Record):
    names: tuple[str, ...] = jf("names")
    action: str = jf("action")
    errno_ret: int | None = jf("errnoRet", default=None)
    args: tuple[SeccompArg, ...] = jf("args", of=SeccompArg, default=())


class Seccomp(Record):
    default_action: str = jf("defaultAction")
    default_errno_ret: int | None = jf("defaultErrnoRet", default=None)
    architectures: tuple[str, ...] = jf("architectures", default=())
    flags: tuple[str, ...] = jf("flags", default=())
    syscalls: tuple[SeccompSyscall, ...] = jf("syscalls", of=SeccompSyscall, default=())


class Linux(Record):
    namespaces: tuple[Namespace, ...] = jf("namespaces", of=Namespace, default=())
    uid_mappings: tuple[IDMapping, ...] = jf("uidMappings", of=IDMapping, default=())
    gid_mappings: tuple[IDMapping, ...] = jf("gidMappings", of=IDMapping, default=())
    devices: tuple[Device, ...] = jf("devices", of=Device, default=())
    cgroups_path: str | None = jf("cgroupsPath", default=None)
    resources: Resources | None = jf("resources", of=Resources, default=None)
    sysctl: dict | None = jf("sysctl", default=None)
    seccomp: Seccomp | None = jf("seccomp", of=Seccomp, default=None)
    rootfs_propagation: str | None = jf("rootfsPropagation", default=None)
    masked_paths: tuple[str, ...] = jf("maskedPaths", default=())
    readonly_paths: tuple[str, ...] = jf("readonlyPaths", default=())


class Spec(Record):
    process: Process = jf("process", of=Process)
    root: Root = jf("root", of=Root)
    oci_version: str = jf("ociVersion", default=OCI_VERSION)
    hostname: str | None = jf("hostname", default=None)
    domainname: str | None = jf("domainname", default=None)
    mounts: tuple[Mount, ...] = jf("mounts", of=Mount, default=())
    linux: Linux = jf("linux", of=Linux, default=Linux())
    annotations: dict | None = jf("annotations", default=None)

    def to_json(self, indent: int | None = None) -> bytes:
        return dumps(self, indent=indent)

    @classmethod
    def from_json(cls, raw: bytes | str) -> "Spec":
        return loads(cls, raw)
