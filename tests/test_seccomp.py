"""berth.runtime.seccomp: Docker profile -> OCI section -> BPF -> the real kernel.

The kernel tests fork a child, set no_new_privs, load the filter and probe syscalls
with ctypes; results come back through a pipe and the parent asserts on them.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from berth.errors import InvalidArgument
from berth.linux import CLONE_NEWUTS, PR_SET_NO_NEW_PRIVS, syscalls
from berth.oci.runtime import Seccomp, SeccompSyscall
from berth.runtime import seccomp
from berth.runtime.seccomp import bpf_for, compile_bpf, default_profile, resolve

REPO = Path(__file__).resolve().parents[1]
DOCKER_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)
MACHINE = os.uname().machine
# raw syscall numbers the probes need and glibc has no wrapper for
NR = {"x86_64": {"keyctl": 250, "clone3": 435}, "aarch64": {"keyctl": 219, "clone3": 435}}


def allowed(spec: Seccomp, name: str) -> list[SeccompSyscall]:
    """The rules of spec that name this syscall."""
    return [call for call in spec.syscalls if name in call.names]


def unconditional_allow(spec: Seccomp, name: str) -> bool:
    return any(c.action == "SCMP_ACT_ALLOW" and not c.args for c in allowed(spec, name))


# -- resolve ----------------------------------------------------------------------------

def test_sys_admin_syscalls_are_allowed_only_with_cap_sys_admin():
    without = resolve(default_profile(), DOCKER_CAPS, "amd64", (6, 1))
    with_admin = resolve(default_profile(), DOCKER_CAPS + ("CAP_SYS_ADMIN",), "amd64", (6, 1))
    for name in ("mount", "unshare", "setns", "umount2", "sethostname", "bpf"):
        assert not allowed(without, name), name
        assert unconditional_allow(with_admin, name), name


def test_capability_names_may_omit_the_cap_prefix():
    short = resolve(default_profile(), ["sys_admin"], "amd64", (6, 1))
    assert unconditional_allow(short, "mount")
    assert short == resolve(default_profile(), ["CAP_SYS_ADMIN"], "amd64", (6, 1))


def test_ptrace_needs_kernel_4_8_unless_cap_sys_ptrace():
    assert not allowed(resolve(default_profile(), DOCKER_CAPS, "amd64", (4, 7)), "ptrace")
    assert unconditional_allow(resolve(default_profile(), DOCKER_CAPS, "amd64", (4, 8)), "ptrace")
    old_with_cap = resolve(default_profile(), ["CAP_SYS_PTRACE"], "amd64", (4, 4))
    assert unconditional_allow(old_with_cap, "ptrace")
    assert unconditional_allow(resolve(default_profile(), []), "ptrace")  # this host: 4.8+


def test_clone3_gets_enosys_without_cap_sys_admin():
    (rule,) = allowed(resolve(default_profile(), DOCKER_CAPS, "amd64", (6, 1)), "clone3")
    assert (rule.action, rule.errno_ret) == ("SCMP_ACT_ERRNO", 38)
    admin = resolve(default_profile(), ["CAP_SYS_ADMIN"], "amd64", (6, 1))
    assert [c.action for c in allowed(admin, "clone3")] == ["SCMP_ACT_ALLOW"]


def test_clone_is_allowed_only_without_namespace_flags_unless_cap_sys_admin():
    (rule,) = allowed(resolve(default_profile(), DOCKER_CAPS, "amd64", (6, 1)), "clone")
    (arg,) = rule.args
    assert (arg.index, arg.op, arg.value, arg.value_two) == (0, "SCMP_CMP_MASKED_EQ", 0x7E020000, 0)
    (s390,) = allowed(resolve(default_profile(), DOCKER_CAPS, "s390x", (6, 1)), "clone")
    assert s390.args[0].index == 1  # s390 swaps clone's first two arguments
    admin = resolve(default_profile(), ["CAP_SYS_ADMIN"], "amd64", (6, 1))
    assert [c.args for c in allowed(admin, "clone")] == [()]


def test_personality_is_filtered_by_its_argument():
    rules = allowed(resolve(default_profile(), DOCKER_CAPS, "amd64", (6, 1)), "personality")
    assert {(a.op, a.value) for r in rules for a in r.args} == {
        ("SCMP_CMP_EQ", v) for v in (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)}


def test_socket_blocks_af_alg_and_af_vsock():
    rules = allowed(resolve(default_profile(), DOCKER_CAPS, "amd64", (6, 1)), "socket")
    conds = {(a.op, a.value) for r in rules for a in r.args}
    assert conds == {("SCMP_CMP_LT", 38), ("SCMP_CMP_EQ", 39), ("SCMP_CMP_GT", 40)}


def test_unconditional_allowlist_is_dockers_size_and_omits_dangerous_calls():
    spec = resolve(default_profile(), DOCKER_CAPS, "amd64", (6, 1))
    first = spec.syscalls[0]
    assert first.action == "SCMP_ACT_ALLOW" and not first.args
    assert 340 <= len(first.names) <= 380
    assert len(set(first.names)) == len(first.names)
    for name in ("keyctl", "add_key", "request_key", "kexec_load", "userfaultfd",
                 "io_uring_setup", "swapon", "pivot_root", "move_pages", "open_by_handle_at"):
        assert not allowed(spec, name), name
    assert spec.default_action == "SCMP_ACT_ERRNO" and spec.default_errno_ret == 1


def test_arch_specific_rules_and_sub_arches_follow_the_host_arch():
    amd64 = resolve(default_profile(), [], "amd64", (6, 1))
    assert amd64.architectures == ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")
    assert allowed(amd64, "arch_prctl") and allowed(amd64, "modify_ldt")
    arm64 = resolve(default_profile(), [], "arm64", (6, 1))
    assert arm64.architectures == ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM")
    assert allowed(arm64, "set_tls") and not allowed(arm64, "arch_prctl")
    # platform.machine() spellings work too
    assert resolve(default_profile(), [], "aarch64", (6, 1)) == arm64


def test_native_arch_maps_machine_names():
    assert seccomp.native_arch("x86_64") == "SCMP_ARCH_X86_64"
    assert seccomp.native_arch("aarch64") == "SCMP_ARCH_AARCH64"
    assert seccomp.native_arch("armv7l") == "SCMP_ARCH_ARM"
    assert seccomp.native_arch("vax") is None
    assert seccomp.native_arch() in seccomp.SCMP_ARCH


def test_scmp_arch_tokens_match_libseccomp():
    pyseccomp = pytest.importorskip("pyseccomp")
    for name, token in seccomp.SCMP_ARCH.items():
        theirs = getattr(pyseccomp.Arch, name.removeprefix("SCMP_ARCH_"), None)
        if theirs is not None:
            assert theirs == token, name


def test_default_profile_survives_docker_json_round_trip():
    raw = json.dumps(default_profile())
    assert resolve(json.loads(raw), DOCKER_CAPS) == resolve(default_profile(), DOCKER_CAPS)


def test_older_architectures_field_and_deprecated_name_are_accepted():
    spec = resolve({"defaultAction": "SCMP_ACT_ERRNO",
                    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
                    "syscalls": [{"name": "read", "action": "SCMP_ACT_ALLOW"}]}, [])
    assert spec.architectures == ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86")
    assert spec.syscalls[0].names == ("read",)


def test_oci_shaped_profile_passes_through():
    oci = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
         "args": [{"index": 1, "value": 0o700, "op": "SCMP_CMP_EQ"}]}]}
    spec = resolve(oci, [])
    assert spec.syscalls[0].errno_ret == 13 and spec.syscalls[0].args[0].value == 0o700
    assert resolve(spec, []) is spec  # an OCI Seccomp is validated and returned


def test_empty_profile_means_no_seccomp_as_in_docker():
    assert resolve({}, DOCKER_CAPS) is None


@pytest.mark.parametrize("profile, message", [
    ([], "expected a JSON object"),
    ({"defaultAction": "SCMP_ACT_BLOCK"}, "unknown action 'SCMP_ACT_BLOCK'"),
    ({"defaultAction": "SCMP_ACT_ERRNO",
      "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALOW"}]}, "syscalls[0]: unknown action"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action":
      "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQUAL"}]}]},
     "unknown op 'SCMP_CMP_EQUAL'"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action":
      "SCMP_ACT_ALLOW", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}, "index 6"),
    ({"defaultAction": "SCMP_ACT_ERRNO",
      "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]}, "seccomp agent"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": [], "action": "SCMP_ACT_ALLOW"}]},
     "non-empty list"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action":
      "SCMP_ACT_ALLOW", "includes": {"minKernel": "4"}}]}, "minKernel '4'"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
      "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}, "both 'architectures' and 'archMap'"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["x86_64"]}, "unknown architecture"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": "read"}, "syscalls: expected a list"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": "EPERM"}, "not an errno number"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "flags": ["SECCOMP_FILTER_FLAG_FAST"]}, "unknown flag"),
])
def test_bad_profiles_are_invalid_arguments_naming_the_profile(profile, message):
    with pytest.raises(InvalidArgument) as info:
        resolve(profile, [], source="seccomp profile /etc/x.json")
    assert message in str(info.value)
    assert str(info.value).startswith("seccomp profile /etc/x.json")


def test_load_profile_reports_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(InvalidArgument, match="seccomp profile .*missing.json"):
        seccomp.load_profile(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{defaultAction: ")
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        seccomp.load_profile(str(bad))


# -- compile and cache -----------------------------------------------------------------

@pytest.fixture(scope="module")
def docker_default() -> Seccomp:
    return resolve(default_profile(), DOCKER_CAPS)


def test_compile_gives_whole_bpf_instructions(docker_default):
    bpf = compile_bpf(docker_default)
    assert bpf and len(bpf) % 8 == 0 and len(bpf) // 8 <= 4096


def test_compile_skips_unknown_syscalls_and_rules_equal_to_the_default():
    spec = resolve({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["no_such_syscall", "mkdir"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}, [])
    assert len(compile_bpf(spec)) % 8 == 0


def test_compile_rejects_invalid_oci_specs():
    with pytest.raises(InvalidArgument, match="unknown action"):
        compile_bpf(Seccomp(default_action="SCMP_ACT_NOPE"))


def test_bpf_for_compiles_once_then_reads_the_cache(tmp_path, monkeypatch, docker_default):
    first = bpf_for(docker_default, str(tmp_path))
    (cached,) = tmp_path.iterdir()
    mtime = cached.stat().st_mtime_ns

    def no_compile(spec):
        raise AssertionError("cache hit must not recompile")
    monkeypatch.setattr(seccomp, "compile_bpf", no_compile)
    assert bpf_for(docker_default, str(tmp_path)) == first
    assert cached.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [cached.name]  # no temp files left


@pytest.mark.parametrize("damage", ["truncate", "garbage", "bitflip", "empty"])
def test_bpf_for_rebuilds_a_damaged_cache_file(tmp_path, docker_default, damage):
    good = bpf_for(docker_default, str(tmp_path))
    (cached,) = tmp_path.iterdir()
    raw = cached.read_bytes()
    cached.write_bytes({"truncate": raw[:-3], "garbage": os.urandom(16), "empty": b"",
                        "bitflip": raw[:8] + bytes([raw[8] ^ 1]) + raw[9:]}[damage])
    assert bpf_for(docker_default, str(tmp_path)) == good
    assert cached.read_bytes() == raw


def test_cache_key_follows_the_spec(docker_default):
    same = resolve(default_profile(), DOCKER_CAPS)
    other = resolve(default_profile(), DOCKER_CAPS + ("CAP_SYS_ADMIN",))
    assert seccomp.cache_key(docker_default) == seccomp.cache_key(same)
    assert seccomp.cache_key(docker_default) != seccomp.cache_key(other)


def test_cache_hit_is_fast_and_does_not_import_pyseccomp(tmp_path, docker_default):
    bpf_for(docker_default, str(tmp_path))
    probe = f"""
import sys, time
from berth.runtime import seccomp
spec = seccomp.resolve(seccomp.default_profile(), {DOCKER_CAPS!r})
times = []
for _ in range(5):
    t = time.perf_counter()
    seccomp.bpf_for(spec, {str(tmp_path)!r})
    times.append(time.perf_counter() - t)
print("pyseccomp" in sys.modules, times[0], min(times))
"""
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout.split()
    imported, first, best = out[0] == "True", float(out[1]), float(out[2])
    assert not imported
    assert best < 0.001, f"cache hit took {best * 1e3:.2f} ms"
    assert first < 0.005, f"first cache hit in a process took {first * 1e3:.2f} ms"


# -- the real kernel -------------------------------------------------------------------

def run_filtered(bpf: bytes, probe) -> dict:
    """Fork; in the child set no_new_privs, load bpf, run probe(); return its dict."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        status = 1
        try:
            os.close(read_fd)
            syscalls().prctl(PR_SET_NO_NEW_PRIVS, 1)
            syscalls().load_seccomp(bpf)
            result = probe()
            status = 0
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            result = {"error": repr(exc)}
        finally:
            try:
                os.write(write_fd, json.dumps(result).encode())
            finally:
                os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        raw = f.read()
    _, status = os.waitpid(pid, 0)
    result = json.loads(raw or b"{}")
    assert os.waitstatus_to_exitcode(status) == 0, result
    return result


def errno_of(ret: int) -> int:
    return ctypes.get_errno() if ret == -1 else 0


def default_profile_probe() -> dict:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    out = {}
    nr = NR.get(MACHINE, {})
    if "keyctl" in nr:  # KEYCTL_GET_KEYRING_ID of the session keyring
        out["keyctl"] = errno_of(libc.syscall(nr["keyctl"], 0, -3, 0))
    if "clone3" in nr:  # blocked before the kernel sees the (null) arguments
        out["clone3"] = errno_of(libc.syscall(nr["clone3"], None, 0))
    out["unshare"] = errno_of(libc.unshare(CLONE_NEWUTS))
    out["vsock"] = errno_of(libc.socket(40, 1, 0))  # AF_VSOCK, SOCK_STREAM
    out["alg"] = errno_of(libc.socket(38, 5, 0))  # AF_ALG, SOCK_SEQPACKET
    unix = libc.socket(1, 1, 0)  # AF_UNIX still works
    out["unix"] = errno_of(unix)
    os.close(unix)
    out["personality"] = errno_of(libc.personality(ctypes.c_ulong(0x0040000)))
    out["personality_query"] = errno_of(libc.personality(ctypes.c_ulong(0xFFFFFFFF)))
    out["getpid"] = libc.getpid() == os.getpid()
    # glibc tries clone3 for threads first; ENOSYS must make it fall back to clone
    box = []
    thread = threading.Thread(target=lambda: box.append(threading.get_ident()))
    thread.start()
    thread.join()
    out["thread"] = len(box) == 1
    child = os.fork()  # plain clone(SIGCHLD) passes the CLONE_NEW* mask
    if child == 0:
        os._exit(7)
    out["fork"] = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    return out


def test_default_profile_in_the_kernel(docker_default, tmp_path):
    result = run_filtered(bpf_for(docker_default, str(tmp_path)), default_profile_probe)
    expected = {"unshare": errno.EPERM, "vsock": errno.EPERM, "alg": errno.EPERM, "unix": 0,
                "personality": errno.EPERM, "personality_query": 0, "getpid": True,
                "thread": True, "fork": 7}
    if MACHINE in NR:
        expected.update(keyctl=errno.EPERM, clone3=errno.ENOSYS)
    assert result == expected


def test_docker_profile_file_blocking_mkdir(tmp_path):
    path = tmp_path / "profile.json"
    path.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW",
                                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}))
    spec = resolve(seccomp.load_profile(str(path)), DOCKER_CAPS)
    target = tmp_path / "made"

    def probe():
        try:
            os.mkdir(target)
            return {"mkdir": 0}
        except OSError as exc:
            return {"mkdir": exc.errno}
    assert run_filtered(compile_bpf(spec), probe) == {"mkdir": errno.EPERM}
    assert not target.exists()


def test_args_on_the_same_index_are_ored_as_in_runc():
    spec = resolve({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES,
         "args": [{"index": 0, "value": 0x0040000, "op": "SCMP_CMP_EQ"},
                  {"index": 0, "value": 0x0400000, "op": "SCMP_CMP_EQ"}]}]}, [])

    def probe():
        libc = ctypes.CDLL(None, use_errno=True)
        return {hex(p): errno_of(libc.personality(ctypes.c_ulong(p)))
                for p in (0x0040000, 0x0400000, 0xFFFFFFFF)}
    assert run_filtered(compile_bpf(spec), probe) == {
        "0x40000": errno.EACCES, "0x400000": errno.EACCES, "0xffffffff": 0}
