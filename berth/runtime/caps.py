"""Linux capabilities: one name table, and their application in the documented order."""

from __future__ import annotations

from berth.errors import InvalidArgument

# linux/capability.h, index = bit number
NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
NUMBERS = {name: i for i, name in enumerate(NAMES)}

# Docker's default set (moby daemon/pkg/oci/caps/defaults.go)
DOCKER_DEFAULT = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)


def last_cap() -> int:
    """The highest capability this kernel knows (caps beyond NAMES are still dropped)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(NAMES) - 1


def all_caps() -> tuple[str, ...]:
    """Every capability the caller can grant: its own bounding set.

    A container cannot be given what berth itself lacks (our VMs drop CAP_SYS_RESOURCE
    from root), so --privileged and --cap-add ALL mean "all that we hold".
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapBnd:"):
                    held = int(line.split()[1], 16)
                    return tuple(n for i, n in enumerate(NAMES[: last_cap() + 1]) if held >> i & 1)
    except OSError:
        pass
    return NAMES[: last_cap() + 1]


def normalize(name: str) -> str:
    """'net_admin', 'NET_ADMIN' and 'CAP_NET_ADMIN' all mean CAP_NET_ADMIN; 'ALL' stays."""
    upper = name.strip().upper()
    if upper == "ALL":
        return "ALL"
    if not upper.startswith("CAP_"):
        upper = "CAP_" + upper
    if upper not in NUMBERS:
        raise InvalidArgument(f"unknown capability: {name!r}")
    return upper


def mask(names) -> int:
    out = 0
    for name in names:
        number = NUMBERS.get(name)
        if number is None:
            raise InvalidArgument(f"unknown capability: {name!r}")
        out |= 1 << number
    return out


def tweak(base, add=(), drop=()) -> tuple[str, ...]:
    """Docker's --cap-add/--cap-drop rules: ALL in drop empties the base, ALL in add fills it."""
    add = [normalize(c) for c in add]
    drop = [normalize(c) for c in drop]
    if "ALL" in add:
        # everything, minus what is dropped by name (dropping ALL too leaves only the adds)
        start = [] if "ALL" in drop else list(all_caps())
        return tuple(c for c in start if c not in drop) + tuple(
            c for c in add if c != "ALL" and ("ALL" in drop))
    result = [] if "ALL" in drop else [c for c in base if c not in drop]
    for cap in add:
        if cap not in result:
            result.append(cap)
    return tuple(result)


def apply_bounding(sys, keep: int) -> None:
    """Drop from the bounding set every capability not in `keep` (needs CAP_SETPCAP)."""
    from berth.linux import PR_CAPBSET_DROP

    for number in range(last_cap() + 1):
        if not keep & (1 << number):
            sys.prctl(PR_CAPBSET_DROP, number)


def apply_sets(sys, effective: int, permitted: int, inheritable: int, ambient: int) -> None:
    from berth.linux import PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, PR_CAP_AMBIENT_RAISE

    sys.capset(effective, permitted, inheritable)
    sys.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    for number in range(last_cap() + 1):
        # the kernel refuses an ambient cap that is not also inheritable and permitted;
        # runc ignores that (configs from `runc spec` list ambient caps alone), so do we
        if ambient & (1 << number) and inheritable & permitted & (1 << number):
            sys.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, number)
