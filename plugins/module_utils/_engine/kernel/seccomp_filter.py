# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""The system calls no container makes: a seccomp filter, built with libseccomp's Python binding.

The filter is compiled to BPF here, in the caller, and only loaded (``install``) by the process that
goes into the container: that process is forked from a caller that may run threads, and must not
allocate through libseccomp's C heap on its way in.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import tempfile
from typing import Iterable, List, Optional, Sequence, Tuple

from ..base.errors import InvalidParameter, KernelUnsupported

PACKAGE = "python3-seccomp"

# What LXC's and Docker's default profiles deny, by what it reaches: each answers EPERM inside.
DENIED_GROUPS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("kernel modules", ("init_module", "finit_module", "delete_module")),
    ("kexec", ("kexec_load", "kexec_file_load")),
    ("files by handle, around the root", ("open_by_handle_at",)),
    ("keyrings (host root's own among them)", ("add_key", "request_key", "keyctl")),
    ("BPF programs", ("bpf",)),
    ("profiling the host", ("perf_event_open",)),
    ("userfaultfd", ("userfaultfd",)),
    ("raw I/O ports", ("iopl", "ioperm")),
    ("swap", ("swapon", "swapoff")),
    ("the clock", ("settimeofday", "clock_settime", "clock_adjtime")),
    ("the kernel log", ("syslog",)),
    ("process accounting", ("acct",)),
    ("obsolete entry points", ("uselib", "lookup_dcookie", "nfsservctl", "_sysctl", "vm86", "vm86old")),
)
DENIED: Tuple[str, ...] = tuple(call for _what, calls in DENIED_GROUPS for call in calls)

# The other ABIs a 64-bit process may call the kernel through (a 32-bit binary inside, int 0x80):
# the filter covers them too, so that no call slips past it there.
_SECONDARY_ARCHES = {"x86_64": ("X86", "X32"), "aarch64": ("ARM",)}

SECCOMP_SET_MODE_FILTER = 1
_SYS_SECCOMP = {"x86_64": 317, "aarch64": 277, "ppc64le": 358, "s390x": 348}


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def binding_available() -> bool:
    try:
        import seccomp  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        return False
    return True


def validate_allowed(names: Iterable[str], param: str = "seccomp_allow") -> List[str]:
    """The calls a container may make after all, each one the filter denies; anything else fails naming ``param``."""
    if isinstance(names, (str, bytes)) or not hasattr(names, "__iter__"):
        raise InvalidParameter("must be a list of system call names, got %r" % (names,), param)
    allowed: List[str] = []
    for name in names:
        if not isinstance(name, str) or name not in DENIED:
            raise InvalidParameter("%r is not a call the filter denies (it denies: %s)" % (name, ", ".join(DENIED)),
                                   param)
        if name not in allowed:
            allowed.append(name)
    return sorted(allowed)


class Program:
    """A compiled filter: the BPF instructions, held in memory the loading process only reads."""

    def __init__(self, bpf: bytes, denied: Sequence[str]) -> None:
        if not bpf or len(bpf) % ctypes.sizeof(_SockFilter):
            raise ValueError("not a BPF program: %d bytes" % len(bpf))
        self.denied = tuple(denied)
        count = len(bpf) // ctypes.sizeof(_SockFilter)
        self._instructions = (_SockFilter * count).from_buffer_copy(bpf)
        self._fprog = _SockFprog(count, ctypes.cast(self._instructions, ctypes.POINTER(_SockFilter)))
        number = _SYS_SECCOMP.get(platform.machine())
        if number is None:
            raise KernelUnsupported("seccomp: unsupported architecture %s" % platform.machine())
        self._number = number
        self._libc = ctypes.CDLL(None, use_errno=True)

    def install(self) -> None:  # pragma: no cover - runs in the process going into the container
        """Load the filter on the calling thread, for it and everything it execs.

        Without no_new_privs, so that setuid programs inside keep working: the kernel then asks for
        CAP_SYS_ADMIN in the caller's user namespace, which root of either kind of container holds."""
        result = self._libc.syscall(ctypes.c_long(self._number), ctypes.c_uint(SECCOMP_SET_MODE_FILTER),
                                    ctypes.c_uint(0), ctypes.byref(self._fprog))
        if result != 0:
            err = ctypes.get_errno()
            raise OSError(err, "seccomp(SECCOMP_SET_MODE_FILTER): %s" % os.strerror(err))


def compile_filter(allowed: Sequence[str] = ()) -> Program:
    """The filter that answers EPERM to every call of ``DENIED`` but ``allowed``, on every ABI of this machine.

    Raises KernelUnsupported naming the package when libseccomp's Python binding is missing."""
    try:
        import seccomp  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise KernelUnsupported("the seccomp filter of containers needs libseccomp's Python binding for %s: "
                                "apt-get install %s (the ovz_host role installs it)"
                                % (os.path.realpath("/proc/self/exe"), PACKAGE)) from None
    denied = [call for call in DENIED if call not in set(allowed)]
    syscall_filter = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    syscall_filter.set_attr(seccomp.Attr.CTL_NNP, 0)
    for arch in _SECONDARY_ARCHES.get(platform.machine(), ()):
        try:
            syscall_filter.add_arch(getattr(seccomp.Arch, arch))
        except (AttributeError, RuntimeError, ValueError, OSError):
            pass   # a libseccomp without that ABI: its calls meet the default bad-ABI action (kill)
    for call in denied:
        try:
            syscall_filter.add_rule(seccomp.ERRNO(errno.EPERM), call)
        except (RuntimeError, ValueError, OSError):
            pass   # a call this machine's ABIs do not have
    with tempfile.TemporaryFile() as out:
        syscall_filter.export_bpf(out)
        out.seek(0)
        bpf = out.read()
    return Program(bpf, denied)


def filter_state(pid: int) -> Optional[Tuple[int, int]]:
    """``(Seccomp, Seccomp_filters)`` of ``/proc/<pid>/status``: the mode (2: filtered) and how many filters."""
    mode = filters = None
    try:
        with open("/proc/%d/status" % pid) as handle:
            for line in handle:
                key, _sep, value = line.partition(":")
                if key == "Seccomp":
                    mode = int(value)
                elif key == "Seccomp_filters":
                    filters = int(value)
    except (OSError, ValueError):
        return None
    if mode is None:
        return None
    return mode, filters or 0
