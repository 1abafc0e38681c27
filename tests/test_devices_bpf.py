"""The cgroup v2 device filter (berth.runtime.devices).

Two halves: the compiled program is run in a tiny interpreter of the few eBPF
instructions it uses and compared with a plain "last matching rule wins, per access bit"
evaluator; then it is loaded into the real kernel, attached to a throw-away cgroup2
directory, and a forked child inside that cgroup reports what open() and mknod() did.
"""

from __future__ import annotations

import errno
import json
import os
import random
import struct

import pytest

from berth.container.spec import DEFAULT_DEVICE_RULES
from berth.errors import FailedPrecondition, InvalidArgument
from berth.oci.runtime import DeviceRule
from berth.runtime import devices

M, R, W = devices.ACC_MKNOD, devices.ACC_READ, devices.ACC_WRITE
C, B = devices.DEV_CHAR, devices.DEV_BLOCK
PRIVILEGED = (DeviceRule(True, "a", None, None, "rwm"),)


def rule(allow, kind, major, minor, access="rwm"):
    return DeviceRule(allow, kind, major, minor, access)


# --- a reference evaluator and an interpreter for the compiled program -------------

def reference(rules, kind, major, minor, access) -> int:
    """The semantics in words: each asked-for bit is decided by the last rule naming it."""
    for bit in (M, R, W):
        if not access & bit:
            continue
        verdict = False
        for r in rules:
            access_str = "rwm" if r.access is None else r.access
            bits = sum(devices.ACCESS_BITS[c] for c in access_str)
            if (bits & bit and devices.DEVICE_TYPES[r.type] in (None, kind)
                    and (r.major is None or r.major < 0 or r.major == major)
                    and (r.minor is None or r.minor < 0 or r.minor == minor)):
                verdict = r.allow
        if not verdict:
            return 0
    return 1


def run(prog: bytes, kind: int, major: int, minor: int, access: int) -> int:
    """Execute the program on one bpf_cgroup_dev_ctx; fails on any opcode it did not expect."""
    ctx = struct.pack("<III", (access << 16) | kind, major, minor)
    insns = [struct.unpack_from("<BBhi", prog, i) for i in range(0, len(prog), 8)]
    reg = [0] * 11
    mask64 = (1 << 64) - 1
    pc = 0
    for _ in range(len(insns)):  # every jump is forward, so this bounds the run
        code, regs, off, imm = insns[pc]
        dst, src = regs & 0xF, regs >> 4
        uimm = imm & mask64
        pc += 1
        if code == 0x61:  # ldx w
            assert src == 1
            reg[dst] = struct.unpack_from("<I", ctx, off)[0]
        elif code == 0x54:  # and32 imm
            reg[dst] = (reg[dst] & imm) & 0xFFFFFFFF
        elif code == 0x74:  # rsh32 imm
            reg[dst] = (reg[dst] & 0xFFFFFFFF) >> imm
        elif code == 0x57:  # and64 imm
            reg[dst] &= uimm
        elif code == 0xB7:  # mov64 imm
            reg[dst] = uimm
        elif code == 0xBF:  # mov64 reg
            reg[dst] = reg[src]
        elif code == 0x55:  # jne imm
            pc += off if reg[dst] != uimm else 0
        elif code == 0x15:  # jeq imm
            pc += off if reg[dst] == uimm else 0
        elif code == 0x95:  # exit
            return reg[0]
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
    raise AssertionError("fell off the end of the program")


def decide(rules, kind, major, minor, access) -> int:
    return run(devices.compile_rules(rules), kind, major, minor, access)


# --- compile_rules: shape ----------------------------------------------------------

def test_empty_rule_list_is_prologue_and_deny():
    prog = devices.compile_rules(())
    assert len(prog) == 8 * (6 + 2)
    code, regs, off, imm = struct.unpack_from("<BBhi", prog, len(prog) - 16)
    assert (code, regs & 0xF, imm) == (0xB7, 0, 0)  # r0 = 0
    assert prog[-8] == 0x95  # exit


def test_each_rule_adds_one_block_of_checks_verdict_and_exit():
    base = len(devices.compile_rules(()))
    assert len(devices.compile_rules([rule(True, "c", 1, 3)])) - base == 8 * 7
    assert len(devices.compile_rules([rule(True, "c", None, None, "m")])) - base == 8 * 5
    assert len(devices.compile_rules(PRIVILEGED)) - base == 8 * 4
    assert len(devices.compile_rules([rule(False, "a", None, None)])) - base == 8 * 5


def test_instructions_are_8_bytes_with_forward_jumps_inside_the_program():
    prog = devices.compile_rules(DEFAULT_DEVICE_RULES)
    n = len(prog) // 8
    assert len(prog) % 8 == 0
    for i in range(n):
        code, _, off, _ = struct.unpack_from("<BBhi", prog, 8 * i)
        if code in (0x55, 0x15):
            assert 0 < off and i + 1 + off < n


def test_rules_that_decide_nothing_are_dropped():
    base = devices.compile_rules(())
    assert devices.compile_rules([rule(True, "c", 1, 3, "")]) == base
    assert devices.compile_rules([rule(True, "c", 1 << 12, 3)]) == base  # no such major
    assert devices.compile_rules([rule(True, "c", 1, 1 << 20)]) == base  # no such minor


def test_bad_type_or_access_is_an_invalid_argument():
    with pytest.raises(InvalidArgument, match=r"devices\[1\].*'x'"):
        devices.compile_rules([PRIVILEGED[0], rule(True, "x", 1, 3)])
    with pytest.raises(InvalidArgument, match="rwm"):
        devices.compile_rules([rule(True, "c", 1, 3, "rx")])


# --- compile_rules: semantics --------------------------------------------------------

def test_empty_rule_list_denies_everything():
    for kind in (B, C):
        for access in (M, R, W, R | W, M | R | W):
            assert decide((), kind, 1, 3, access) == 0


def test_privileged_allows_everything():
    for kind in (B, C):
        for access in (M, R, W, R | W):
            assert decide(PRIVILEGED, kind, 8, 0, access) == 1


def test_default_rules():
    d = DEFAULT_DEVICE_RULES
    assert decide(d, C, 1, 3, R | W) == 1  # /dev/null
    assert decide(d, C, 5, 2, R | W) == 1  # /dev/ptmx
    assert decide(d, C, 136, 7, R | W) == 1  # /dev/pts/7
    assert decide(d, C, 10, 200, M) == 1  # mknod of anything...
    assert decide(d, B, 8, 0, M) == 1
    assert decide(d, C, 10, 200, R) == 0  # ...but no opening it
    assert decide(d, B, 8, 0, R) == 0
    assert decide(d, B, 1, 3, R) == 0  # the allow for 1:3 is char only
    assert decide(d, C, 4, 0, W) == 0


def test_last_matching_rule_wins():
    # the default list denies /dev/fuse before it allows mknod of any char device, so
    # like Docker (and like the ordered v1 writes) a fuse node can be made but not opened
    assert decide(DEFAULT_DEVICE_RULES, C, 10, 229, M) == 1
    assert decide(DEFAULT_DEVICE_RULES, C, 10, 229, R | W) == 0
    holes = [rule(False, "a", None, None), rule(True, "c", 10, None), rule(False, "c", 10, 229)]
    assert decide(holes, C, 10, 229, R) == 0
    assert decide(holes, C, 10, 200, R | W) == 1
    # and in the other order the later allow wins
    assert decide([rule(False, "c", 10, 229), rule(True, "c", 10, None)], C, 10, 229, R) == 1


def test_each_access_bit_is_decided_on_its_own():
    split = [rule(True, "c", 1, 3, "r"), rule(True, "c", 1, 3, "w")]
    assert decide(split, C, 1, 3, R | W) == 1  # one open(O_RDWR) asks for both
    assert decide(split, C, 1, 3, M) == 0
    no_write = [rule(True, "c", 1, 3), rule(False, "c", 1, 3, "w")]
    assert decide(no_write, C, 1, 3, R) == 1
    assert decide(no_write, C, 1, 3, R | W) == 0


def test_compiled_program_matches_the_reference_on_random_rule_lists():
    rng = random.Random(1234)
    pick = lambda *xs: rng.choice(xs)  # noqa: E731
    for _ in range(300):
        rules = [DeviceRule(rng.random() < 0.6, pick("a", "b", "c", None), pick(None, -1, 1, 5, 10),
                            pick(None, 3, 229, 0), pick("r", "w", "m", "rw", "rm", "rwm", None))
                 for _ in range(rng.randint(0, 8))]
        prog = devices.compile_rules(rules)
        for _ in range(20):
            req = (pick(B, C), pick(1, 5, 10, 7), pick(3, 229, 0, 9),
                   pick(M, R, W, R | W, M | R | W))
            assert run(prog, *req) == reference(rules, *req), (rules, req)


# --- the real kernel ---------------------------------------------------------------

def _cgroup2_root() -> str | None:
    mounts = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[0] == "cgroup2":
                mounts[left.split()[4]] = True
    for path in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        if path in mounts:
            return path
    return next(iter(mounts), None)


@pytest.fixture
def cgroup():
    """A fresh, empty cgroup2 directory; removed (after its processes exit) at the end."""
    if os.geteuid() != 0:
        pytest.skip("attaching a device filter needs root")
    root = _cgroup2_root()
    if root is None:
        pytest.skip("no cgroup2 mount on this host")
    path = os.path.join(root, f"berth-test-{os.getpid()}")
    os.mkdir(path)
    try:
        yield path
    finally:
        os.rmdir(path)


def _probe(cgroup_dir: str, ops: list[tuple]) -> list[int]:
    """Fork a child into the cgroup; it runs each op and reports 0 or the errno."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.close(r)
            with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
            out = []
            for op, path, *args in ops:
                try:
                    if op == "open":
                        os.close(os.open(path, args[0] | os.O_NOCTTY | os.O_NONBLOCK))
                    else:
                        mode, major, minor = args
                        os.mknod(path, mode | 0o600, os.makedev(major, minor))
                    out.append(0)
                except OSError as exc:
                    out.append(exc.errno)
            os.write(w, json.dumps(out).encode())
            os._exit(0)
        except BaseException:
            os._exit(1)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(data)


@pytest.fixture
def nodes(tmp_path):
    if os.statvfs(tmp_path).f_flag & os.ST_NODEV:
        pytest.skip(f"{tmp_path} is on a nodev mount; device nodes there never open")
    return tmp_path


def _attach(cgroup, rules):
    # the way ContainerProcess.start uses it: the fd is closed before anything runs inside
    os.close(devices.attach(cgroup, rules))


def test_kernel_enforces_a_small_rule_list(cgroup, nodes):
    _attach(cgroup, [rule(False, "a", None, None), rule(True, "c", 1, 3),
                     rule(True, "c", None, None, "m")])
    res = _probe(cgroup, [
        ("open", "/dev/null", os.O_RDWR),
        ("open", "/dev/zero", os.O_RDONLY),
        ("mknod", str(nodes / "zero"), 0o020000, 1, 5),
        ("open", str(nodes / "zero"), os.O_RDONLY),
        ("mknod", str(nodes / "null"), 0o020000, 1, 3),
        ("open", str(nodes / "null"), os.O_WRONLY),
        ("mknod", str(nodes / "blk"), 0o060000, 240, 0),
    ])
    assert res == [0, errno.EPERM, 0, errno.EPERM, 0, 0, errno.EPERM]


def test_kernel_enforces_the_default_rules(cgroup, nodes):
    _attach(cgroup, DEFAULT_DEVICE_RULES)
    res = _probe(cgroup, [
        ("open", "/dev/null", os.O_RDWR),
        ("open", "/dev/zero", os.O_RDONLY),
        ("open", "/dev/full", os.O_WRONLY),
        ("mknod", str(nodes / "blk"), 0o060000, 240, 0),
        ("open", str(nodes / "blk"), os.O_RDONLY),
        ("mknod", str(nodes / "fuse"), 0o020000, 10, 229),  # mknod yes, open no (Docker's)
        ("open", str(nodes / "fuse"), os.O_RDWR),
        ("mknod", str(nodes / "tun"), 0o020000, 10, 200),
        ("open", str(nodes / "tun"), os.O_RDWR),
    ])
    assert res == [0, 0, 0, 0, errno.EPERM, 0, errno.EPERM, 0, errno.EPERM]


def test_kernel_privileged_allows_all(cgroup, nodes):
    _attach(cgroup, PRIVILEGED)
    res = _probe(cgroup, [
        ("open", "/dev/zero", os.O_RDONLY),
        ("mknod", str(nodes / "fuse"), 0o020000, 10, 229),
        ("mknod", str(nodes / "blk"), 0o060000, 240, 0),
        ("open", str(nodes / "blk"), os.O_RDONLY),
    ])
    assert res[:3] == [0, 0, 0]
    assert res[3] != errno.EPERM  # the filter let it through; no driver has major 240


def test_kernel_empty_rule_list_denies_everything(cgroup, nodes):
    _attach(cgroup, ())
    res = _probe(cgroup, [("open", "/dev/null", os.O_RDWR),
                          ("mknod", str(nodes / "null"), 0o020000, 1, 3)])
    assert res == [errno.EPERM, errno.EPERM]


def test_attach_to_a_missing_cgroup_fails_without_leaking_the_program(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("loading a device filter needs root")
    before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(FailedPrecondition, match="device filter: open .*No such file"):
        devices.attach(str(tmp_path / "gone"), DEFAULT_DEVICE_RULES)
    assert sorted(os.listdir("/proc/self/fd")) == before


def test_verifier_rejection_is_reported_with_its_log(monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("loading a device filter needs root")
    # exit with r0 never set: the verifier refuses it
    monkeypatch.setattr(devices, "compile_rules", lambda rules: struct.pack("<BBhi", 0x95, 0, 0, 0))
    with pytest.raises(FailedPrecondition, match=r"BPF_PROG_LOAD: .*verifier: .*R0"):
        devices.load(())
