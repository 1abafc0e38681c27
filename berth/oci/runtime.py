"""OCI runtime-spec (config.json) as typed, frozen dataclasses.

Only the parts berth produces or consumes are modelled; readers ignore the rest, as the
spec allows. ``to_json()`` gives a valid config.json.
"""

from __future__ import annotations

from dataclasses import dataclass

from berth.oci.codec import dumps, jf, loads

OCI_VERSION = "1.1.0"


@dataclass(frozen=True)
class User:
    uid: int = jf("uid", default=0, keep=True)
    gid: int = jf("gid", default=0, keep=True)
    umask: int | None = jf("umask", default=None)
    additional_gids: tuple[int, ...] = jf("additionalGids", default=())


@dataclass(frozen=True)
class Box:
    height: int = jf("height", default=0, keep=True)
    width: int = jf("width", default=0, keep=True)


@dataclass(frozen=True)
class Capabilities:
    bounding: tuple[str, ...] = jf("bounding", default=(), keep=True)
    effective: tuple[str, ...] = jf("effective", default=(), keep=True)
    inheritable: tuple[str, ...] = jf("inheritable", default=(), keep=True)
    permitted: tuple[str, ...] = jf("permitted", default=(), keep=True)
    ambient: tuple[str, ...] = jf("ambient", default=(), keep=True)


@dataclass(frozen=True)
class Rlimit:
    type: str = jf("type")
    hard: int = jf("hard")
    soft: int = jf("soft")


@dataclass(frozen=True)
class Process:
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


@dataclass(frozen=True)
class Root:
    path: str = jf("path")
    readonly: bool = jf("readonly", default=False)


@dataclass(frozen=True)
class Mount:
    destination: str = jf("destination")
    type: str | None = jf("type", default=None)
    source: str | None = jf("source", default=None)
    options: tuple[str, ...] = jf("options", default=())


@dataclass(frozen=True)
class Namespace:
    type: str = jf("type")
    path: str | None = jf("path", default=None)


@dataclass(frozen=True)
class IDMapping:
    container_id: int = jf("containerID")
    host_id: int = jf("hostID")
    size: int = jf("size")


@dataclass(frozen=True)
class Device:
    type: str = jf("type")
    path: str = jf("path")
    major: int = jf("major", default=0, keep=True)
    minor: int = jf("minor", default=0, keep=True)
    file_mode: int | None = jf("fileMode", default=None)
    uid: int | None = jf("uid", default=None)
    gid: int | None = jf("gid", default=None)


@dataclass(frozen=True)
class DeviceRule:
    allow: bool = jf("allow", keep=True)
    type: str | None = jf("type", default=None)  # a, c, b; None means all
    major: int | None = jf("major", default=None)  # None means any (*)
    minor: int | None = jf("minor", default=None)
    access: str | None = jf("access", default=None)  # subset of "rwm"


@dataclass(frozen=True)
class Memory:
    limit: int | None = jf("limit", default=None)
    reservation: int | None = jf("reservation", default=None)
    swap: int | None = jf("swap", default=None)  # memory+swap, as in the spec
    swappiness: int | None = jf("swappiness", default=None)
    disable_oom_killer: bool | None = jf("disableOOMKiller", default=None)


@dataclass(frozen=True)
class CPU:
    shares: int | None = jf("shares", default=None)
    quota: int | None = jf("quota", default=None)
    period: int | None = jf("period", default=None)
    cpus: str | None = jf("cpus", default=None)
    mems: str | None = jf("mems", default=None)


@dataclass(frozen=True)
class Pids:
    limit: int = jf("limit", keep=True)


@dataclass(frozen=True)
class Resources:
    devices: tuple[DeviceRule, ...] = jf("devices", of=DeviceRule, default=())
    memory: Memory | None = jf("memory", of=Memory, default=None)
    cpu: CPU | None = jf("cpu", of=CPU, default=None)
    pids: Pids | None = jf("pids", of=Pids, default=None)


@dataclass(frozen=True)
class SeccompArg:
    index: int = jf("index", keep=True)
    value: int = jf("value", keep=True)
    op: str = jf("op")
    value_two: int = jf("valueTwo", default=0)


@dataclass(frozen=True)
class SeccompSyscall:
    names: tuple[str, ...] = jf("names")
    action: str = jf("action")
    errno_ret: int | None = jf("errnoRet", default=None)
    args: tuple[SeccompArg, ...] = jf("args", of=SeccompArg, default=())


@dataclass(frozen=True)
class Seccomp:
    default_action: str = jf("defaultAction")
    default_errno_ret: int | None = jf("defaultErrnoRet", default=None)
    architectures: tuple[str, ...] = jf("architectures", default=())
    flags: tuple[str, ...] = jf("flags", default=())
    syscalls: tuple[SeccompSyscall, ...] = jf("syscalls", of=SeccompSyscall, default=())


@dataclass(frozen=True)
class Linux:
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


@dataclass(frozen=True)
class Spec:
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
