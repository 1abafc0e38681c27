"""The cgroup v2 device filter: device rules compiled to an eBPF program.

cgroup v2 has no devices.allow/deny files. The kernel instead runs a program of type
BPF_PROG_TYPE_CGROUP_DEVICE, attached to the container's cgroup2 directory, on every
open() and mknod() of a device node; it returns 1 to allow and 0 to deny (EPERM).

Semantics are those of the runtime-spec device list: for each access bit the request
asks for (r, w, m), the LAST rule that matches the device and names that bit decides it;
a bit no rule decides is denied. The request is allowed only if every bit it asks for
is. Per bit matters because one open(O_RDWR) asks for r and w in a single call, and
"allow c 1:3 r" followed by "allow c 1:3 w" must then allow it.

Unlike runc (which first runs the list through a cgroup v1 emulator), a deny after a
wildcard allow punches a hole: "allow c *:* m; deny c 10:229 rwm" denies mknod of
/dev/fuse. runc rejects that combination; last-match-wins is the documented order.

Program layout (registers; r1 = struct bpf_cgroup_dev_ctx * on entry)::

    prologue   r2 = device type, r3 = requested access bits still undecided,
               r4 = major, r5 = minor
    rule N     skip to rule N-1 unless type/major/minor match
    ...        deny:  if (r3 & bits) != 0: return 0
    rule 1     allow: r3 &= ~bits; if r3 == 0: return 1
    epilogue   return 0                       (some bit left undecided: default deny)

Rules are emitted last to first, so the first block that decides a bit is the last rule
naming it; every jump is forward and the verifier accepts it without loops.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from collections.abc import Iterable

from berth.errors import FailedPrecondition, InvalidArgument
from berth.oci.runtime import DeviceRule

# struct bpf_cgroup_dev_ctx (linux/bpf.h): u32 access_type, u32 major, u32 minor.
# access_type = (access << 16) | device type.
DEV_BLOCK, DEV_CHAR = 1, 2
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4
ACC_ALL = ACC_MKNOD | ACC_READ | ACC_WRITE
DEVICE_TYPES = {"b": DEV_BLOCK, "c": DEV_CHAR, "a": None, None: None}
ACCESS_BITS = {"m": ACC_MKNOD, "r": ACC_READ, "w": ACC_WRITE}
DEFAULT_ACCESS = "rwm"  # the runtime spec's meaning of an omitted access

# The kernel's dev_t keeps 12 bits of major and 20 of minor (MINORBITS), so a rule
# naming a larger number can never match; dropping it keeps every immediate in s32.
MAX_MAJOR, MAX_MINOR = (1 << 12) - 1, (1 << 20) - 1

# bpf(2) (linux/bpf.h)
BPF_PROG_LOAD, BPF_PROG_ATTACH = 5, 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
LICENSE = b"Apache"  # read like MODULE_LICENSE; device programs call no GPL-only helpers
PROG_NAME = b"berth_devices"  # what `bpftool prog show` prints
SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280}

# Instruction classes, operations and sources (linux/bpf_common.h, linux/bpf.h).
_LDX, _ALU, _JMP, _ALU64 = 0x01, 0x04, 0x05, 0x07
_MEM, _W = 0x60, 0x00
_AND, _RSH, _MOV = 0x50, 0x70, 0xB0
_JEQ, _JNE, _EXIT = 0x10, 0x50, 0x90
_K, _X = 0x00, 0x08
R0, R1, R2, R3, R4, R5 = range(6)
_NEXT = object()  # jump offset placeholder: "to the end of this rule's block"


# --- instruction encoder -----------------------------------------------------------
# An instruction is (code, dst, src, off, imm) until encoded; off may be _NEXT.

def _ldx_w(dst: int, src: int, off: int) -> tuple:
    """dst = *(u32 *)(src + off): reads one field of the context struct."""
    return (_LDX | _MEM | _W, dst, src, off, 0)


def _alu32_imm(op: int, dst: int, imm: int) -> tuple:
    """dst = (u32)dst OP imm: 32-bit, so the upper half of dst is zeroed."""
    return (_ALU | op | _K, dst, 0, 0, imm)


def _alu64_imm(op: int, dst: int, imm: int) -> tuple:
    """dst = dst OP imm on the full 64-bit register (imm is sign-extended)."""
    return (_ALU64 | op | _K, dst, 0, 0, imm)


def _mov_reg(dst: int, src: int) -> tuple:
    """dst = src (64-bit)."""
    return (_ALU64 | _MOV | _X, dst, src, 0, 0)


def _jmp_imm(op: int, dst: int, imm: int, off=_NEXT) -> tuple:
    """if (dst OP imm) skip `off` instructions; by default to the end of the block."""
    return (_JMP | op | _K, dst, 0, off, imm)


def _exit() -> tuple:
    """Return r0 to the kernel."""
    return (_JMP | _EXIT, 0, 0, 0, 0)


def _ret(value: int) -> list[tuple]:
    """return value (r0 must be set: the verifier rejects reading an unset register)."""
    return [_alu64_imm(_MOV, R0, value), _exit()]


def _encode(block: list[tuple]) -> bytes:
    """Pack struct bpf_insn {u8 code; u8 dst:4, src:4; s16 off; s32 imm}, resolving _NEXT."""
    out = bytearray()
    for i, (code, dst, src, off, imm) in enumerate(block):
        if off is _NEXT:
            off = len(block) - i - 1
        out += struct.pack("<BBhi", code, (src << 4) | dst, off, imm)
    return bytes(out)


# --- compiler ----------------------------------------------------------------------

_PROLOGUE = [
    _ldx_w(R2, R1, 0), _alu32_imm(_AND, R2, 0xFFFF),  # r2 = device type
    _ldx_w(R3, R1, 0), _alu32_imm(_RSH, R3, 16),      # r3 = access bits asked for
    _ldx_w(R4, R1, 4),                                # r4 = major
    _ldx_w(R5, R1, 8),                                # r5 = minor
]


def compile_rules(rules: Iterable[DeviceRule]) -> bytes:
    """The device filter program for `rules` (runtime-spec order), as raw bpf_insn bytes."""
    blocks = [_rule_block(rule, i) for i, rule in enumerate(rules)]
    prog = _encode(_PROLOGUE)
    for block in reversed(blocks):
        prog += _encode(block)
    return prog + _encode(_ret(0))


def _rule_block(rule: DeviceRule, index: int) -> list[tuple]:
    """One rule's block: falls through to the next (earlier) rule when it does not match."""
    where = f"linux.resources.devices[{index}]"
    if rule.type not in DEVICE_TYPES:
        raise InvalidArgument(f"{where}: device type {rule.type!r} is not one of a, b, c")
    bits = 0
    for ch in DEFAULT_ACCESS if rule.access is None else rule.access:
        if ch not in ACCESS_BITS:
            raise InvalidArgument(f"{where}: device access {rule.access!r} is not a subset of rwm")
        bits |= ACCESS_BITS[ch]
    major = _number(rule.major, MAX_MAJOR)
    minor = _number(rule.minor, MAX_MINOR)
    if not bits or major is False or minor is False:
        return []  # decides nothing, or names a device that cannot exist
    block = []
    if DEVICE_TYPES[rule.type] is not None:
        block.append(_jmp_imm(_JNE, R2, DEVICE_TYPES[rule.type]))
    if major is not None:
        block.append(_jmp_imm(_JNE, R4, major))
    if minor is not None:
        block.append(_jmp_imm(_JNE, R5, minor))
    if rule.allow:
        # these bits are decided "allowed"; done when no asked-for bit is left undecided
        block += [_alu64_imm(_AND, R3, ACC_ALL & ~bits), _jmp_imm(_JNE, R3, 0)]
        block += _ret(1)
    else:
        # an undecided asked-for bit is decided "denied", which denies the whole request
        block += [_mov_reg(R0, R3), _alu64_imm(_AND, R0, bits), _jmp_imm(_JEQ, R0, 0)]
        block += _ret(0)
    return block


def _number(value: int | None, limit: int):
    """None for a wildcard (None or negative, as in the spec), False if it cannot match."""
    if value is None or value < 0:
        return None
    return value if value <= limit else False


# --- loading and attaching -----------------------------------------------------------

class _ProgLoad(ctypes.Structure):
    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * 16),
    ]


class _ProgAttach(ctypes.Structure):
    _fields_ = [
        ("target_fd", ctypes.c_uint32),
        ("attach_bpf_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("attach_flags", ctypes.c_uint32),
    ]


class _BpfAttr(ctypes.Union):
    # union bpf_attr. Padded so every field a newer kernel reads past ours is zero, which
    # the kernel requires of the bytes it does not know and treats as "unset" for the rest.
    _fields_ = [("load", _ProgLoad), ("attach", _ProgAttach), ("_pad", ctypes.c_uint8 * 128)]


def _bpf(cmd: int, attr: _BpfAttr) -> int:
    nr = SYS_BPF.get(platform.machine())
    if nr is None:
        raise FailedPrecondition(f"cgroup v2 device filter: bpf(2) number unknown on "
                                 f"{platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ret = libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), ctypes.byref(attr),
                       ctypes.c_uint(ctypes.sizeof(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def load(rules: Iterable[DeviceRule]) -> int:
    """Load the compiled program into the kernel; returns its fd (close-on-exec)."""
    prog = compile_rules(rules)
    insns = ctypes.create_string_buffer(prog, len(prog))
    lic = ctypes.create_string_buffer(LICENSE)

    def attempt(log=None) -> int:
        attr = _BpfAttr()
        a = attr.load
        a.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE
        a.insn_cnt = len(prog) // 8
        a.insns = ctypes.addressof(insns)
        a.license = ctypes.addressof(lic)
        a.prog_name = PROG_NAME
        if log is not None:
            a.log_level, a.log_size, a.log_buf = 1, len(log), ctypes.addressof(log)
        return _bpf(BPF_PROG_LOAD, attr)

    try:
        # Without a log first: a log that overflows its buffer fails the load (ENOSPC).
        return attempt()
    except OSError as exc:
        message = f"cgroup v2 device filter: BPF_PROG_LOAD: {exc.strerror}"
        if exc.errno in (errno.EPERM, errno.ENOMEM):  # no CAP_BPF / memlock: no log to get
            raise FailedPrecondition(message) from exc
        log = ctypes.create_string_buffer(1 << 20)
        try:
            os.close(attempt(log))  # cannot happen twice, but never leak an fd
        except OSError:
            pass
        tail = log.value.decode(errors="replace").strip().splitlines()[-3:]
        if tail:
            message += ": verifier: " + " | ".join(tail)
        raise FailedPrecondition(message) from exc


def attach(cgroup_dir: str, rules: Iterable[DeviceRule]) -> int:
    """Load the filter for `rules` and attach it to `cgroup_dir`; returns the program fd.

    The attachment holds its own reference to the program, so the caller may close the
    fd as soon as the container is started; the filter lives until the cgroup is removed.
    """
    prog_fd = load(rules)
    try:
        try:
            cg_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise FailedPrecondition(f"cgroup v2 device filter: open {cgroup_dir}: "
                                     f"{exc.strerror}") from exc
        try:
            attr = _BpfAttr()
            attr.attach.target_fd = cg_fd
            attr.attach.attach_bpf_fd = prog_fd
            attr.attach.attach_type = BPF_CGROUP_DEVICE
            # ALLOW_MULTI, as runc on a fresh cgroup: there is no old program of ours to
            # replace, and the kernel runs ours in addition to (never instead of) any
            # ALLOW_MULTI program an ancestor holds, e.g. systemd's; each can deny.
            attr.attach.attach_flags = BPF_F_ALLOW_MULTI
            _bpf(BPF_PROG_ATTACH, attr)
        except OSError as exc:
            raise FailedPrecondition(f"cgroup v2 device filter: BPF_PROG_ATTACH to "
                                     f"{cgroup_dir}: {exc.strerror}") from exc
        finally:
            os.close(cg_fd)
    except BaseException:
        os.close(prog_fd)
        raise
    return prog_fd
