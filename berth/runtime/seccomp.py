"""Seccomp: Docker-format profiles -> OCI ``linux.seccomp`` -> classic BPF.

Three steps, each a function of its inputs only, so the slow one can be cached:

    resolve(profile, caps)    Docker JSON profile (rules conditional on caps, arch, kernel)
                              -> OCI Seccomp for this host and container
    compile_bpf(spec)         OCI Seccomp -> BPF bytes, through libseccomp (pyseccomp)
    bpf_for(spec, cache_dir)  compile_bpf behind an on-disk cache; a hit is one small file
                              read and two hashes (~0.1 ms) and never imports pyseccomp

The result goes to ``berth.linux.Syscalls.load_seccomp`` as the last step before exec.
Compilation follows runc (libcontainer/seccomp): unknown syscall names are skipped,
rules repeating the default action are dropped, ERRNO/TRACE default to EPERM.
"""

from __future__ import annotations

import json  # already loaded by berth.oci.codec
import os
import re
import sys
from collections.abc import Iterable

try:
    # CPython's built-in sha256: importing hashlib loads OpenSSL (~3 ms on the run path),
    # and the inputs hashed here are a few kilobytes
    from _sha256 import sha256 as _sha256
except ImportError:  # pragma: no cover - other interpreters
    from hashlib import sha256 as _sha256

from berth.errors import FailedPrecondition, InvalidArgument
from berth.fsutil import write_atomic
from berth.oci.runtime import Seccomp, SeccompArg, SeccompSyscall

__all__ = [
    "SCMP_ARCH", "native_arch", "default_profile", "load_profile", "resolve",
    "compile_bpf", "bpf_for", "cache_key",
]

# libseccomp's arch tokens are the kernel's AUDIT_ARCH_* values (ELF machine number plus
# 64-bit/little-endian bits), except X32, which libseccomp tells apart by dropping the
# 64-bit bit. Kept here so resolve() can validate names without loading libseccomp.
_64, _LE, _N32 = 0x80000000, 0x40000000, 0x20000000
SCMP_ARCH: dict[str, int] = {
    "SCMP_ARCH_X86": 3 | _LE,
    "SCMP_ARCH_X86_64": 62 | _64 | _LE,
    "SCMP_ARCH_X32": 62 | _LE,
    "SCMP_ARCH_ARM": 40 | _LE,
    "SCMP_ARCH_AARCH64": 183 | _64 | _LE,
    "SCMP_ARCH_MIPS": 8,
    "SCMP_ARCH_MIPS64": 8 | _64,
    "SCMP_ARCH_MIPS64N32": 8 | _64 | _N32,
    "SCMP_ARCH_MIPSEL": 8 | _LE,
    "SCMP_ARCH_MIPSEL64": 8 | _64 | _LE,
    "SCMP_ARCH_MIPSEL64N32": 8 | _64 | _LE | _N32,
    "SCMP_ARCH_PPC": 20,
    "SCMP_ARCH_PPC64": 21 | _64,
    "SCMP_ARCH_PPC64LE": 21 | _64 | _LE,
    "SCMP_ARCH_S390": 22,
    "SCMP_ARCH_S390X": 22 | _64,
    "SCMP_ARCH_PARISC": 15,
    "SCMP_ARCH_PARISC64": 15 | _64,
    "SCMP_ARCH_RISCV64": 243 | _64 | _LE,
    "SCMP_ARCH_LOONGARCH64": 258 | _64 | _LE,
}

# Arch names as Docker profiles spell them in includes/excludes "arches" (libseccomp's
# own names, close to Go's GOARCH) -> SCMP arch.
PROFILE_ARCH: dict[str, str] = {
    "x86": "SCMP_ARCH_X86", "amd64": "SCMP_ARCH_X86_64", "x32": "SCMP_ARCH_X32",
    "arm": "SCMP_ARCH_ARM", "arm64": "SCMP_ARCH_AARCH64",
    "mips": "SCMP_ARCH_MIPS", "mipsel": "SCMP_ARCH_MIPSEL",
    "mips64": "SCMP_ARCH_MIPS64", "mips64n32": "SCMP_ARCH_MIPS64N32",
    "mipsel64": "SCMP_ARCH_MIPSEL64", "mipsel64n32": "SCMP_ARCH_MIPSEL64N32",
    "ppc": "SCMP_ARCH_PPC", "ppc64": "SCMP_ARCH_PPC64", "ppc64le": "SCMP_ARCH_PPC64LE",
    "s390": "SCMP_ARCH_S390", "s390x": "SCMP_ARCH_S390X",
    "riscv64": "SCMP_ARCH_RISCV64", "loongarch64": "SCMP_ARCH_LOONGARCH64",
}
# platform.machine() and Go names that differ from the profile name above.
_ARCH_ALIASES = {
    "x86_64": "amd64", "aarch64": "arm64", "i386": "x86", "i686": "x86", "386": "x86",
    "armv6l": "arm", "armv7l": "arm", "armv8l": "arm", "loong64": "loongarch64",
    "mips64le": "mipsel64",
}

# Action name -> the kernel's SECCOMP_RET_* value (libseccomp uses the same numbers).
_ACTIONS = {
    "SCMP_ACT_KILL": 0x00000000,  # runc: KILL means KILL_THREAD
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,  # | errno
    "SCMP_ACT_TRACE": 0x7FF00000,  # | message for the tracer
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
}
_WITH_ERRNO = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")
_EPERM = 1
# libseccomp's enum scmp_compare
_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
        "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
# seccomp(2) flags: applied when loading, they do not change the BPF program.
_FLAGS = ("SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
          "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV")
_BPF_MAXINSNS = 4096  # the kernel refuses longer filters
_NR_SCMP_ERROR = -1  # what libseccomp resolves an unknown syscall name to


def native_arch(machine: str | None = None) -> str | None:
    """The SCMP arch of this host (or of a platform.machine() value); None if unknown."""
    name = machine or os.uname().machine  # what platform.machine() returns, without the import
    return PROFILE_ARCH.get(_ARCH_ALIASES.get(name, name))


def default_profile() -> dict:
    """berth's default profile (Docker's, in effect) in Docker's JSON profile schema."""
    from berth.runtime import seccomp_default
    return seccomp_default.profile()


def load_profile(path: str) -> dict:
    """Read a Docker-format profile file, as given to ``--security-opt seccomp=FILE``."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except OSError as exc:
        raise InvalidArgument(f"seccomp profile {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise InvalidArgument(f"seccomp profile {path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidArgument(f"seccomp profile {path}: expected a JSON object")
    return data


# -- resolve: Docker profile -> OCI Seccomp ------------------------------------------

def resolve(profile: dict | Seccomp, capabilities: Iterable[str], arch: str | None = None,
            kernel: tuple[int, int] | None = None, *,
            source: str = "seccomp profile") -> Seccomp | None:
    """Turn a Docker-format profile into the OCI ``linux.seccomp`` section for this host.

    Rules are kept or dropped by their ``includes``/``excludes`` against the container's
    bounding capabilities, the host arch (Go-style name, e.g. amd64; default: this host)
    and the kernel (major, minor); default: this host's). A profile that is already OCI
    shaped (``architectures``, no conditions) passes through. As in Docker, a profile with
    neither defaultAction nor syscalls means "no seccomp" and gives None. ``source`` names
    the profile in error messages (e.g. the file path).
    """
    if isinstance(profile, Seccomp):
        _check_spec(profile, source)
        return profile
    if not isinstance(profile, dict):
        raise InvalidArgument(f"{source}: expected a JSON object, got {type(profile).__name__}")
    if not profile.get("defaultAction") and not profile.get("syscalls"):
        return None
    caps = {_cap_name(c) for c in capabilities}
    host = arch or os.uname().machine
    host_arch = _ARCH_ALIASES.get(host, host)
    kernel = kernel or _host_kernel()

    default_action = profile.get("defaultAction")
    default_errno = _errno(profile.get("defaultErrnoRet"), source)
    _action_value(default_action, default_errno, f"{source}: defaultAction")
    flags = tuple(_list(profile.get("flags"), f"{source}: flags"))
    for flag in flags:
        if flag not in _FLAGS:
            raise InvalidArgument(f"{source}: unknown flag {flag!r} (known: {', '.join(_FLAGS)})")

    syscalls = []
    for i, rule in enumerate(_list(profile.get("syscalls"), f"{source}: syscalls")):
        where = f"{source}: syscalls[{i}]"
        if not isinstance(rule, dict):
            raise InvalidArgument(f"{where}: expected an object")
        call = _syscall(rule, where)
        if _applies(rule, caps, host_arch, kernel, where):
            syscalls.append(call)
    return Seccomp(default_action=default_action, default_errno_ret=default_errno,
                   architectures=_architectures(profile, host_arch, source), flags=flags,
                   syscalls=tuple(syscalls))


def _architectures(profile: dict, host_arch: str, source: str) -> tuple[str, ...]:
    if profile.get("architectures") and profile.get("archMap"):
        raise InvalidArgument(f"{source}: has both 'architectures' and 'archMap'; use one")
    if profile.get("architectures"):  # the older, OCI-shaped form: taken as is
        archs = tuple(_list(profile["architectures"], f"{source}: architectures"))
    else:
        # archMap: only the host's entry counts, expanded to the host arch and the
        # sub-arches its processes can also call the kernel as (x86 and x32 on amd64).
        native = PROFILE_ARCH.get(host_arch)
        archs = ()
        for entry in _list(profile.get("archMap"), f"{source}: archMap"):
            if isinstance(entry, dict) and entry.get("architecture") == native:
                archs = (native, *_list(entry.get("subArchitectures"), f"{source}: archMap"))
                break
    for a in archs:
        if a not in SCMP_ARCH:
            raise InvalidArgument(f"{source}: unknown architecture {a!r} "
                                  f"(expected SCMP_ARCH_X86_64, SCMP_ARCH_AARCH64, ...)")
    return archs


def _syscall(rule: dict, where: str) -> SeccompSyscall:
    if rule.get("name") and rule.get("names"):
        raise InvalidArgument(f"{where}: has both 'name' and 'names'; use 'names'")
    names = [rule["name"]] if rule.get("name") else _list(rule.get("names"), f"{where}: names")
    args = []
    for j, arg in enumerate(_list(rule.get("args"), f"{where}: args")):
        if not isinstance(arg, dict):
            raise InvalidArgument(f"{where}: args[{j}]: expected an object")
        args.append(SeccompArg(index=arg.get("index"), value=arg.get("value"),
                               op=arg.get("op"), value_two=arg.get("valueTwo") or 0))
    call = SeccompSyscall(names=tuple(names), action=rule.get("action"),
                          errno_ret=rule.get("errnoRet"), args=tuple(args))
    _check_call(call, where)
    return call


def _applies(rule: dict, caps: set[str], arch: str, kernel: tuple[int, int], where: str) -> bool:
    """Docker's rule filter: every include must hold, and no exclude may."""
    inc = _filter(rule.get("includes"), f"{where}: includes")
    exc = _filter(rule.get("excludes"), f"{where}: excludes")
    if inc["arches"] and arch not in inc["arches"]:
        return False
    if not inc["caps"] <= caps:
        return False
    if inc["minKernel"] and kernel < inc["minKernel"]:
        return False
    if arch in exc["arches"] or exc["caps"] & caps:
        return False
    return not (exc["minKernel"] and kernel >= exc["minKernel"])


def _filter(raw, where: str) -> dict:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{where}: expected an object with caps, arches, minKernel")
    arches = _list(raw.get("arches"), f"{where}: arches")
    caps = {_cap_name(c) for c in _list(raw.get("caps"), f"{where}: caps")}
    min_kernel = raw.get("minKernel")
    if min_kernel:
        m = re.fullmatch(r"(\d+)\.(\d+)", str(min_kernel))
        if not m:
            raise InvalidArgument(f"{where}: minKernel {min_kernel!r}: expected 'major.minor'")
        min_kernel = (int(m[1]), int(m[2]))
    return {"arches": set(arches), "caps": caps, "minKernel": min_kernel}


def _cap_name(cap: str) -> str:
    upper = str(cap).strip().upper()
    return upper if upper.startswith("CAP_") else "CAP_" + upper


def _host_kernel() -> tuple[int, int]:
    # Only major.minor count, as in Docker: "5.10.0-28-amd64" and "5.10" are both 5.10.
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(m[1]), int(m[2])) if m else (0, 0)


def _list(value, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise InvalidArgument(f"{where}: expected a list, got {type(value).__name__}")
    return list(value)


# -- validation shared by resolve() and compile_bpf() -----------------------------------

def _errno(value, where: str) -> int | None:
    # Like runc, an errnoRet on an action that returns none (ALLOW, KILL...) is ignored.
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise InvalidArgument(f"{where}: errnoRet {value!r} is not an errno number")
    return value


def _action_value(action, errno_ret: int | None, where: str) -> int:
    if action == "SCMP_ACT_NOTIFY":
        raise InvalidArgument(f"{where}: SCMP_ACT_NOTIFY needs a seccomp agent, which berth "
                              f"does not support; use SCMP_ACT_ERRNO or SCMP_ACT_LOG")
    if action not in _ACTIONS:
        what = f"unknown action {action!r}" if action else "no action"
        raise InvalidArgument(f"{where}: {what} (known: {', '.join(_ACTIONS)})")
    if action in _WITH_ERRNO:
        return _ACTIONS[action] | (_EPERM if errno_ret is None else errno_ret)
    return _ACTIONS[action]


def _check_call(call: SeccompSyscall, where: str) -> None:
    if not call.names or not all(isinstance(n, str) and n for n in call.names):
        raise InvalidArgument(f"{where}: 'names' must be a non-empty list of syscall names")
    _action_value(call.action, _errno(call.errno_ret, where), where)
    if len(call.args) > 6:
        raise InvalidArgument(f"{where}: a syscall has at most 6 arguments, got {len(call.args)}")
    for j, arg in enumerate(call.args):
        if arg.op not in _OPS:
            raise InvalidArgument(f"{where}: args[{j}]: unknown op {arg.op!r} "
                                  f"(known: {', '.join(_OPS)})")
        if not isinstance(arg.index, int) or not 0 <= arg.index <= 5:
            raise InvalidArgument(f"{where}: args[{j}]: index {arg.index!r} is not 0..5")
        for v in (arg.value, arg.value_two):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 64:
                raise InvalidArgument(f"{where}: args[{j}]: {v!r} is not a 64-bit unsigned value")


def _check_spec(spec: Seccomp, where: str) -> None:
    _action_value(spec.default_action, _errno(spec.default_errno_ret, where), where)
    for a in spec.architectures:
        if a not in SCMP_ARCH:
            raise InvalidArgument(f"{where}: unknown architecture {a!r}")
    for i, call in enumerate(spec.syscalls):
        _check_call(call, f"{where}: syscalls[{i}]")


# -- compile: OCI Seccomp -> BPF -------------------------------------------------------

def compile_bpf(spec: Seccomp) -> bytes:
    """Compile with libseccomp to a classic-BPF program (8 bytes per instruction).

    The spec's ``flags`` are seccomp(2) load flags and are not part of the program.
    """
    _check_spec(spec, "seccomp")
    try:
        import pyseccomp  # ~10 ms (it runs ldconfig to find the library): cache misses only
    except (ImportError, RuntimeError) as exc:
        raise FailedPrecondition(f"seccomp: cannot load libseccomp ({exc}); "
                                 f"install libseccomp2 and pyseccomp") from exc

    default = _action_value(spec.default_action, spec.default_errno_ret, "seccomp")
    filt = pyseccomp.SyscallFilter(default)
    # libseccomp kills only the calling thread on a syscall from an arch not in the filter;
    # kill the whole process instead, so no half-dead process keeps running.
    filt.set_attr(pyseccomp.Attr.ACT_BADARCH, _ACTIONS["SCMP_ACT_KILL_PROCESS"])
    for arch in spec.architectures:
        token = SCMP_ARCH[arch]
        if not filt.exist_arch(token):  # the native arch is always there already
            try:
                filt.add_arch(token)
            except OSError as exc:
                raise InvalidArgument(f"seccomp: this libseccomp cannot filter {arch}") from exc
    if sum(len(call.names) for call in spec.syscalls) > 32:
        # A binary tree of syscall numbers instead of a linear scan, as runc does for
        # long rule sets; older libseccomp lacks it, which only costs speed.
        try:
            filt.set_attr(pyseccomp.Attr.CTL_OPTIMIZE, 2)
        except OSError:
            pass

    for i, call in enumerate(spec.syscalls):
        action = _action_value(call.action, call.errno_ret, "seccomp")
        if action == default:
            continue  # libseccomp refuses rules that repeat the default action
        conds = [pyseccomp.Arg(a.index, _OPS[a.op], a.value, a.value_two) for a in call.args]
        # runc's semantics: conditions on distinct arguments are ANDed in one rule; if two
        # test the same argument, each becomes its own rule (ORed), which is what such
        # profiles were written for before libseccomp could AND them.
        if len({a.index for a in call.args}) == len(call.args):
            groups = [conds]
        else:
            groups = [[c] for c in conds]
        for name in call.names:
            nr = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
            if nr == _NR_SCMP_ERROR:
                continue  # unknown to this libseccomp/arch: skipped, as runc does
            for group in groups:
                try:
                    filt.add_rule(action, nr, *group)
                except OSError as exc:
                    raise InvalidArgument(f"seccomp: syscalls[{i}]: rule for {name} "
                                          f"rejected by libseccomp: {exc.strerror}") from exc

    with open(os.memfd_create("berth-seccomp", os.MFD_CLOEXEC), "w+b") as f:
        filt.export_bpf(f)
        f.seek(0)
        bpf = f.read()
    if not bpf or len(bpf) % 8:
        raise FailedPrecondition(f"seccomp: libseccomp exported {len(bpf)} bytes of BPF")
    if len(bpf) // 8 > _BPF_MAXINSNS:
        raise InvalidArgument(f"seccomp: profile compiles to {len(bpf) // 8} BPF instructions; "
                              f"the kernel accepts at most {_BPF_MAXINSNS}")
    return bpf


# -- cache -----------------------------------------------------------------------------

# Bump when compile_bpf() would emit a different program for the same inputs.
_CACHE_FORMAT = b"berth-seccomp-bpf-1"
_DIGEST = 32  # a cache file is the program followed by its sha256
_libseccomp: str | None = None


def _libseccomp_id() -> str:
    """Which libseccomp compiles our filters: its resolved file name (which carries the
    version), size and mtime, so an upgrade or a patched rebuild changes the cache key.
    Asking the library for its version would mean a dlopen, about 0.5 ms per process."""
    global _libseccomp
    if _libseccomp is None:
        multiarch = getattr(sys.implementation, "_multiarch", "")
        for d in (f"/usr/lib/{multiarch}", f"/lib/{multiarch}", "/usr/lib64", "/lib64",
                  "/usr/lib", "/usr/local/lib"):
            path = os.path.join(d, "libseccomp.so.2")
            try:
                st = os.stat(path)
            except OSError:
                continue
            _libseccomp = f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}"
            break
        else:
            _libseccomp = "libseccomp not found"  # compile_bpf will report it
    return _libseccomp


def _canonical(spec: Seccomp) -> bytes:
    """Canonical JSON of exactly the fields compile_bpf() reads, in a fixed layout. The
    generic codec walks dataclass fields (~0.3 ms for the default profile); this is ~10x
    faster, which is most of what keeps a cache hit under a millisecond."""
    return json.dumps([
        spec.default_action, spec.default_errno_ret, spec.architectures,
        [[c.names, c.action, c.errno_ret, [[a.index, a.value, a.op, a.value_two] for a in c.args]]
         for c in spec.syscalls],
    ], separators=(",", ":")).encode()


def cache_key(spec: Seccomp) -> str:
    """sha256 over the spec's canonical JSON, the libseccomp in use and the machine."""
    h = _sha256(_CACHE_FORMAT)
    for part in (_canonical(spec), _libseccomp_id().encode(), os.uname().machine.encode()):
        h.update(b"\0" + part)
    return h.hexdigest()


def bpf_for(spec: Seccomp, cache_dir: str) -> bytes:
    """compile_bpf(spec), cached in cache_dir. A damaged cache file is recompiled."""
    path = os.path.join(cache_dir, cache_key(spec) + ".bpf")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raw = b""
    bpf, digest = raw[:-_DIGEST], raw[-_DIGEST:]
    if bpf and len(bpf) % 8 == 0 and _sha256(bpf).digest() == digest:
        return bpf
    bpf = compile_bpf(spec)
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    write_atomic(path, bpf + _sha256(bpf).digest(), mode=0o600)
    return bpf


