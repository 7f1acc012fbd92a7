# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Device allow-list for cgroup v2: an eBPF program of type CGROUP_DEVICE.

cgroup v2 has no ``devices.allow`` file. runc and crun instead compile the
allow-list into a tiny eBPF program and attach it to the container's cgroup;
the kernel runs it on every open(2) and mknod(2) of a device node. This module
does the same with ctypes and the raw bpf(2) syscall (no bcc, no libbpf), so a
host needs nothing but Python and the kernel. The generated code follows runc's
``libcontainer/cgroups/devices/devicefilter.go``: a prologue that unpacks
``struct bpf_cgroup_dev_ctx`` into registers, one block per rule that returns 1
(allow) when every check of the rule passes, and a final ``return 0`` (deny).

Rules use the v1 ``devices.allow`` syntax: ``"c 1:3 rwm"``, ``"c 136:* rwm"``,
``"b *:* m"``, ``"a"``. Only allow rules exist; whatever no rule allows is denied.

The program is attached with ``BPF_F_ALLOW_MULTI``: programs that a parent cgroup
(or systemd) attached keep running, and the kernel allows an access only if
every program on the path allows it, so a container can never widen what its
parent permits. The attachment holds its own reference to the program, so it
outlives our file descriptors and is dropped when the cgroup is removed.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import re
import struct
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from ..base.errors import KernelUnsupported
from .namespaces import load_libc

# bpf(2) commands, program/attach types and flags (include/uapi/linux/bpf.h).
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2

# struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }
# access_type = (access << 16) | type
BPF_DEVCG_DEV_BLOCK = 1
BPF_DEVCG_DEV_CHAR = 2
BPF_DEVCG_ACC_MKNOD = 1
BPF_DEVCG_ACC_READ = 2
BPF_DEVCG_ACC_WRITE = 4
_ACC_ALL = BPF_DEVCG_ACC_MKNOD | BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE
_ACCESS_BITS = {"m": BPF_DEVCG_ACC_MKNOD, "r": BPF_DEVCG_ACC_READ, "w": BPF_DEVCG_ACC_WRITE}
_TYPES = {"c": BPF_DEVCG_DEV_CHAR, "b": BPF_DEVCG_DEV_BLOCK, "a": None}

# bpf(2) has no libc wrapper, so call syscall(2) with the per-architecture number.
# Little-endian hosts only: instructions and bpf_attr are packed "<" below.
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361}

# Large enough for every field used here; the kernel accepts a bigger union
# as long as the bytes it does not know are zero.
_ATTR_SIZE = 128
_LOG_SIZE = 1 << 16
_PROG_NAME = b"ovz_devices"       # shown by `bpftool cgroup tree`; [A-Za-z0-9_.]{,15}

# The kernel's dev_t has a 12-bit major and a 20-bit minor: larger numbers never occur,
# and keeping them below 2**31 lets them be jump immediates (s32, sign-extended) as is.
_MAJOR_MAX = (1 << 12) - 1
_MINOR_MAX = (1 << 20) - 1

_RULE_RE = re.compile(r"^(?:([abc])\s+(\*|\d+):(\*|\d+)\s+([rwm]+)|a)$")


@dataclass(frozen=True)
class DeviceRule:
    """One allow rule; ``None`` in type/major/minor is a wildcard."""

    dev_type: Optional[int]
    major: Optional[int]
    minor: Optional[int]
    access: int


_ALLOW_ALL = DeviceRule(None, None, None, _ACC_ALL)


def parse_rule(rule: str) -> DeviceRule:
    """Parse ``"TYPE MAJOR:MINOR ACCESS"`` (or a bare ``"a"``); ValueError names the rule."""
    match = _RULE_RE.match(rule.strip()) if isinstance(rule, str) else None
    if not match:
        raise ValueError("invalid device rule %r: expected 'c|b|a MAJOR:MINOR ACCESS' "
                         "with MAJOR/MINOR a number or '*' and ACCESS a subset of 'rwm'" % (rule,))
    kind, major, minor, access = match.groups()
    if kind is None:                    # bare "a": every device, every access (v1 meaning)
        return _ALLOW_ALL
    numbers: List[Optional[int]] = []
    for value, limit in ((major, _MAJOR_MAX), (minor, _MINOR_MAX)):
        if value == "*":
            numbers.append(None)
        elif int(value) > limit:
            raise ValueError("invalid device rule %r: device number %s above %d" % (rule, value, limit))
        else:
            numbers.append(int(value))
    bits = 0
    for char in access:
        bits |= _ACCESS_BITS[char]
    return DeviceRule(_TYPES[kind], numbers[0], numbers[1], bits)


# --- a minimal eBPF assembler: only the instructions the filter needs -------------------

def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    # struct bpf_insn { u8 code; u8 dst_reg:4, src_reg:4; s16 off; s32 imm; } (little-endian
    # bitfields on the supported hosts: dst in the low nibble).
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


_LDX_W = 0x61          # BPF_LDX | BPF_MEM | BPF_W:   dst = *(u32 *)(src + off)
_ALU32_AND_K = 0x54    # BPF_ALU | BPF_AND | BPF_K:   dst &= imm
_ALU32_RSH_K = 0x74    # BPF_ALU | BPF_RSH | BPF_K:   dst >>= imm
_ALU32_MOV_X = 0xBC    # BPF_ALU | BPF_MOV | BPF_X:   dst = src
_MOV64_K = 0xB7        # BPF_ALU64 | BPF_MOV | BPF_K: dst = imm
_JNE_K = 0x55          # BPF_JMP | BPF_JNE | BPF_K:   if dst != imm: pc += off
_JNE_X = 0x5D          # BPF_JMP | BPF_JNE | BPF_X:   if dst != src: pc += off
_EXIT = 0x95

_R0, _R1, _R2, _R3, _R4, _R5 = range(6)


def _rule_block(rule: DeviceRule) -> List[bytes]:
    """Checks for one rule; each failed check jumps past the block to the next rule."""
    # (opcode, dst, src, imm) of the conditional jumps, in order; offsets are set below,
    # once the block length is known.
    body: List[Tuple[str, int, int, int]] = []
    if rule.dev_type is not None:
        body.append(("jne_k", _R2, 0, rule.dev_type))
    if rule.access != _ACC_ALL:
        # Allow only if every requested bit is in the rule: (req & allowed) == req.
        body.append(("mov", _R1, _R3, 0))
        body.append(("and", _R1, 0, rule.access))
        body.append(("jne_x", _R1, _R3, 0))
    if rule.major is not None:
        body.append(("jne_k", _R4, 0, rule.major))
    if rule.minor is not None:
        body.append(("jne_k", _R5, 0, rule.minor))
    length = len(body) + 2               # + "r0 = 1; exit"
    out: List[bytes] = []
    for index, (op, dst, src, imm) in enumerate(body):
        skip = length - index - 1        # jump target: first insn after this block
        if op == "jne_k":
            out.append(_insn(_JNE_K, dst, 0, skip, imm))
        elif op == "jne_x":
            out.append(_insn(_JNE_X, dst, src, skip))
        elif op == "mov":
            out.append(_insn(_ALU32_MOV_X, dst, src))
        else:
            out.append(_insn(_ALU32_AND_K, dst, 0, 0, imm))
    out.append(_insn(_MOV64_K, _R0, imm=1))
    out.append(_insn(_EXIT))
    return out


def build_program(allow: Sequence[str]) -> bytes:
    """Assemble the filter for ``allow``; returns the raw instruction bytes."""
    rules = [parse_rule(rule) for rule in allow]
    insns = [
        # r1 holds the ctx pointer on entry; unpack it once so rule blocks can reuse r1.
        _insn(_LDX_W, _R2, _R1, 0),      # r2 = access_type
        _insn(_ALU32_AND_K, _R2, imm=0xFFFF),  # r2 = device type
        _insn(_LDX_W, _R3, _R1, 0),
        _insn(_ALU32_RSH_K, _R3, imm=16),  # r3 = requested access bits
        _insn(_LDX_W, _R4, _R1, 4),      # r4 = major
        _insn(_LDX_W, _R5, _R1, 8),      # r5 = minor
    ]
    for rule in rules:
        insns.extend(_rule_block(rule))
        if rule == _ALLOW_ALL:
            # Unconditional "return 1": the verifier rejects the unreachable code after it
            # ("unreachable insn"), so stop here, as runc does for a wildcard rule.
            return b"".join(insns)
    insns.append(_insn(_MOV64_K, _R0, imm=0))  # nothing matched: deny
    insns.append(_insn(_EXIT))
    return b"".join(insns)


# --- bpf(2) -----------------------------------------------------------------------------

_libc = load_libc()
_libc.syscall.restype = ctypes.c_long


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    """Call bpf(2); returns its result or raises OSError with the errno."""
    number = _SYS_BPF.get(platform.machine())
    if number is None:
        raise KernelUnsupported("bpf(2) syscall number unknown for architecture %s" % platform.machine())
    result = _libc.syscall(ctypes.c_long(number), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(result)


def _unsupported(what: str, exc: OSError) -> KernelUnsupported:
    error = KernelUnsupported("%s failed: [Errno %s] %s (the kernel needs CONFIG_BPF_SYSCALL and CONFIG_CGROUP_BPF)"
                              % (what, exc.errno, exc.strerror))
    # An attribute of this instance only (callers may inspect it), not of every KernelUnsupported.
    error.errno = exc.errno  # type: ignore[attr-defined]
    return error


def _load(program: bytes) -> int:
    insns = ctypes.create_string_buffer(program, len(program))
    license_ = ctypes.create_string_buffer(b"GPL")

    def attempt(log: Optional[ctypes.Array]) -> int:
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into("<IIQQ", attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE, len(program) // 8,
                         ctypes.addressof(insns), ctypes.addressof(license_))
        if log is not None:
            struct.pack_into("<IIQ", attr, 24, 1, len(log), ctypes.addressof(log))
        struct.pack_into("%ds" % len(_PROG_NAME), attr, 48, _PROG_NAME)
        return _bpf(BPF_PROG_LOAD, attr)

    try:
        # First without a log: the verifier log costs time and is only needed on failure.
        return attempt(None)
    except OSError as exc:
        if exc.errno in (errno.ENOSYS,):
            raise _unsupported("bpf(BPF_PROG_LOAD)", exc) from None
        if exc.errno == errno.EPERM:
            raise OSError(exc.errno, "bpf(BPF_PROG_LOAD): %s (needs CAP_BPF/CAP_SYS_ADMIN)"
                          % exc.strerror) from None
        first = exc
    log = ctypes.create_string_buffer(_LOG_SIZE)
    try:
        return attempt(log)
    except OSError as exc:
        text = log.value.decode("utf-8", "replace").strip()
        if exc.errno == errno.EINVAL and not text:
            # No verifier output: the kernel does not know the program type at all.
            raise _unsupported("bpf(BPF_PROG_LOAD) of a CGROUP_DEVICE program", exc) from None
        raise OSError(exc.errno, "bpf(BPF_PROG_LOAD): %s; verifier log: %s"
                      % (exc.strerror, text or "(empty)")) from first


def _open_cgroup(cgroup_dir: str) -> int:
    return os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _explain(what: str, cgroup_dir: str, exc: OSError) -> Exception:
    if exc.errno == errno.EBADF:
        # cgroup_get_from_fd() answers EBADF for anything but a cgroup2 directory.
        return OSError(exc.errno, "%s: %s is not a cgroup v2 directory" % (what, cgroup_dir))
    if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
        return _unsupported("%s on %s" % (what, cgroup_dir), exc)
    if exc.errno == errno.EPERM:
        return OSError(exc.errno, "%s on %s: %s (privilege, or an ancestor attached a program "
                       "without BPF_F_ALLOW_MULTI/OVERRIDE)" % (what, cgroup_dir, exc.strerror))
    return OSError(exc.errno, "%s on %s: %s" % (what, cgroup_dir, exc.strerror))


def attach_device_filter(cgroup_dir: str, allow: list[str]) -> bool:
    """Attach a device filter allowing only ``allow`` to the cgroup v2 directory ``cgroup_dir``.

    Rules are validated before anything touches the kernel (ValueError names the bad
    rule). Returns True once attached; the attachment outlives this process.
    """
    program = build_program(allow)
    dir_fd = _open_cgroup(cgroup_dir)
    try:
        prog_fd = _load(program)
        try:
            attr = ctypes.create_string_buffer(_ATTR_SIZE)
            struct.pack_into("<IIII", attr, 0, dir_fd, prog_fd, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI)
            try:
                _bpf(BPF_PROG_ATTACH, attr)
            except OSError as exc:
                raise _explain("bpf(BPF_PROG_ATTACH)", cgroup_dir, exc) from None
        finally:
            # The cgroup now holds its own reference to the program.
            os.close(prog_fd)
    finally:
        os.close(dir_fd)
    return True


def query_device_filters(cgroup_dir: str) -> int:
    """How many device programs are attached directly to ``cgroup_dir`` (not inherited)."""
    dir_fd = _open_cgroup(cgroup_dir)
    try:
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        # target_fd, attach_type, query_flags=0; prog_ids=NULL makes the kernel report only prog_cnt.
        struct.pack_into("<III", attr, 0, dir_fd, BPF_CGROUP_DEVICE, 0)
        try:
            _bpf(BPF_PROG_QUERY, attr)
        except OSError as exc:
            raise _explain("bpf(BPF_PROG_QUERY)", cgroup_dir, exc) from None
        return struct.unpack_from("<I", attr, 24)[0]
    finally:
        os.close(dir_fd)
