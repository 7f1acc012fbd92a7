# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Thin ctypes wrappers over the namespace, mount and capability system calls.

Python 3.11 has no ``os.unshare``/``os.setns``, and glibc has no wrapper for
``pivot_root``, so these go through libc directly. Every wrapper raises
``OSError`` with the real errno.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import threading
from typing import Iterable, Optional

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_STRICTATIME = 1 << 24

MNT_DETACH = 2

PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_KEEPCAPS = 8
CAP_SYS_RESOURCE = 24
PR_SET_CHILD_SUBREAPER = 36

# Namespace files under /proc/<pid>/ns, in the order setns must enter them:
# the user namespace first (it grants the rights for the others), mnt last
# but before pid takes effect on the next fork.
NAMESPACE_FLAGS = {
    "user": CLONE_NEWUSER,
    "cgroup": CLONE_NEWCGROUP,
    "ipc": CLONE_NEWIPC,
    "uts": CLONE_NEWUTS,
    "net": CLONE_NEWNET,
    "pid": CLONE_NEWPID,
    "mnt": CLONE_NEWNS,
    "time": CLONE_NEWTIME,
}

CAPABILITIES = {
    "chown": 0, "dac_override": 1, "dac_read_search": 2, "fowner": 3, "fsetid": 4, "kill": 5,
    "setgid": 6, "setuid": 7, "setpcap": 8, "linux_immutable": 9, "net_bind_service": 10,
    "net_broadcast": 11, "net_admin": 12, "net_raw": 13, "ipc_lock": 14, "ipc_owner": 15,
    "sys_module": 16, "sys_rawio": 17, "sys_chroot": 18, "sys_ptrace": 19, "sys_pacct": 20,
    "sys_admin": 21, "sys_boot": 22, "sys_nice": 23, "sys_resource": 24, "sys_time": 25,
    "sys_tty_config": 26, "mknod": 27, "lease": 28, "audit_write": 29, "audit_control": 30,
    "setfcap": 31, "mac_override": 32, "mac_admin": 33, "syslog": 34, "wake_alarm": 35,
    "block_suspend": 36, "audit_read": 37, "perfmon": 38, "bpf": 39, "checkpoint_restore": 40,
}

# What a container never gets by default: these act on the whole host
# (modules, raw I/O, the clock, the kernel log, LSM policy, suspend), and
# dac_read_search, whose open_by_handle_at opens any inode of a filesystem
# the container's root shares with the host ("Shocker"; Docker drops it too).
DEFAULT_DROPPED_CAPABILITIES = (
    "sys_module", "sys_rawio", "sys_time", "mac_admin", "mac_override",
    "syslog", "wake_alarm", "block_suspend", "audit_control", "dac_read_search",
)

_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217}


def _libc_name() -> Optional[str]:
    """glibc by its soname; ``find_library`` runs ldconfig (or gcc), hundreds of ms, so only if that fails
    (None, if it finds nothing either: the running program's own symbols, libc's among them)."""
    try:
        ctypes.CDLL("libc.so.6")
        return "libc.so.6"
    except OSError:
        from ctypes.util import find_library
        return find_library("c")


_LIBC_NAME = _libc_name()
# The engine's one handle on libc, with errno kept: every file calls through it (load_libc) so that a
# prototype set here (argtypes, restype) is the one every caller gets.
_libc = ctypes.CDLL(_LIBC_NAME, use_errno=True)
# clone3 alone goes through a PyDLL handle, which keeps the GIL held during the call: through a CDLL
# handle ctypes releases it, and the child, a copy of that moment, would wait for the GIL forever.
_libc_gil_held = ctypes.PyDLL(_LIBC_NAME, use_errno=True)


def load_libc() -> ctypes.CDLL:
    """The engine's libc handle (loaded once, on import); ``ctypes.get_errno()`` reads its errno."""
    return _libc


SYS_OPENAT2 = 437           # the same number on every architecture (generic syscall table)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_IN_ROOT = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def open_in_root(root_fd: int, path: str, flags: int, mode: int = 0o644, needed_for: str = "",
                 param: Optional[str] = None, resolve: int = 0) -> int:
    """openat2 with RESOLVE_IN_ROOT: symlinks and ``..`` planted by the container stay inside it."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0,
                   RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | resolve)
    fd = _libc.syscall(SYS_OPENAT2, root_fd, os.fsencode(path), ctypes.byref(how),
                       ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        err = ctypes.get_errno()
        if err == errno.ENOSYS:
            from ..base.errors import KernelUnsupported
            raise KernelUnsupported("this kernel has no openat2 (Linux 5.6+), needed %s" % (needed_for or "here"),
                                    param)
        raise OSError(err, os.strerror(err), path)
    return fd


def exists_in_root(root: str, path: str, param: Optional[str] = None) -> bool:
    """Whether ``path`` exists under ``root`` (a directory, or ``/proc/<pid>/root``), resolved as the
    container would: its symlinks cannot point the check at a host file."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = open_in_root(root_fd, path, os.O_PATH, needed_for="to look at a path inside a container", param=param)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            return False
        raise
    finally:
        os.close(root_fd)
    os.close(fd)
    return True


_libc_gil_held.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str, path: Optional[str] = None) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (what, os.strerror(err)), path)


def _b(value: Optional[str]) -> Optional[bytes]:
    return None if value is None else os.fsencode(value)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def mount(source: Optional[str], target: str, fstype: Optional[str] = None,
          flags: int = 0, data: Optional[str] = None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)), "mount", target)


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), "umount", target)


def syncfs(path: str) -> None:
    """Write out the filesystem that ``path`` is on (syncfs(2)), not every filesystem of the host."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _check(_libc.syncfs(fd), "syncfs", path)
    finally:
        os.close(fd)


def pivot_root(new_root: str, put_old: str) -> None:
    number = _SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(38, "pivot_root: unsupported architecture %s" % platform.machine())
    _check(_libc.syscall(number, _b(new_root), _b(put_old)), "pivot_root", new_root)


# The mount API (Linux 5.2): the same system call numbers on every architecture.
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
AT_FDCWD = -100
MOVE_MOUNT_F_EMPTY_PATH = 0x4


def open_tree(path: str, flags: int) -> int:
    """A descriptor of the mount at ``path`` (with OPEN_TREE_CLONE: a detached copy, a bind waiting for a place)."""
    result = _libc.syscall(ctypes.c_long(SYS_OPEN_TREE), ctypes.c_int(AT_FDCWD), _b(path), ctypes.c_uint(flags))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, "open_tree: %s" % os.strerror(err), path)
    return result


def move_mount(tree_fd: int, target: str) -> None:
    """Attach the detached mount ``tree_fd`` at ``target`` in the caller's mount namespace."""
    result = _libc.syscall(ctypes.c_long(SYS_MOVE_MOUNT), ctypes.c_int(tree_fd), b"", ctypes.c_int(AT_FDCWD),
                           _b(target), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, "move_mount: %s" % os.strerror(err), target)


OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000
AT_RECURSIVE = 0x8000
AT_EMPTY_PATH = 0x1000
SYS_MOUNT_SETATTR = 442
MOUNT_ATTR_IDMAP = 0x00100000


class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


def mount_setattr_idmap(tree_fd: int, userns_fd: int, recursive: bool = True) -> None:
    """Make the (detached) mount ``tree_fd`` an idmapped mount with the id mapping of ``userns_fd`` (Linux 5.12)."""
    attr = MountAttr(MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    result = _libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(tree_fd), b"", ctypes.c_uint(flags),
                           ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, "mount_setattr(MOUNT_ATTR_IDMAP): %s" % os.strerror(err))


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    result = _libc.prctl(option, arg2, arg3, arg4, arg5)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, "prctl(%d): %s" % (option, os.strerror(err)))
    return result


def capability_numbers(names: Iterable[str], param: str = "capability") -> list:
    from ..base.errors import InvalidParameter
    numbers = []
    for name in names:
        key = name.lower().replace("cap_", "", 1) if name.lower().startswith("cap_") else name.lower()
        if key not in CAPABILITIES:
            raise InvalidParameter("unknown capability %r" % (name,), param)
        numbers.append(CAPABILITIES[key])
    return numbers


def _bounding_bits() -> int:
    """This process's bounding set, from prctl: no file is read, as a process that has entered a
    container would read the container's /proc, which its root controls."""
    bits = 0
    for number in range(64):
        try:
            if prctl(PR_CAPBSET_READ, number):
                bits |= 1 << number
        except OSError as exc:
            if exc.errno == errno.EINVAL:   # past the last capability this kernel knows
                break
            raise
    return bits


def drop_bounding_capabilities(names: Iterable[str]) -> None:
    """Remove capabilities from the bounding set; they are gone for every later exec."""
    known = _bounding_bits()
    for number in capability_numbers(names):
        if known >> number & 1:
            prctl(PR_CAPBSET_DROP, number)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def limit_capabilities(dropped: Iterable[str]) -> None:
    """Hold no more than root of the container gets: drop ``dropped`` from the bounding set, then cut the
    effective, permitted and inheritable sets down to it and clear the ambient set. What execve gives
    root afterwards is the same; what matters is the time before it, while this process (or a child)
    is already visible inside."""
    drop_bounding_capabilities(dropped)
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    bounding = _bounding_bits()
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    current = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), current), "capget")
    data = (_CapData * 2)()
    for index in (0, 1):
        word = (bounding >> (32 * index)) & 0xffffffff
        data[index].effective = current[index].effective & word
        data[index].permitted = current[index].permitted & word
        data[index].inheritable = current[index].inheritable & word
    _check(_libc.capset(ctypes.byref(header), data), "capset")


KEYCTL_JOIN_SESSION_KEYRING = 1
_SYS_KEYCTL = {"x86_64": 250, "aarch64": 219, "ppc64le": 271, "s390x": 280}


def join_new_session_keyring() -> None:
    """Leave the caller's session keyring for a fresh anonymous one (``keyctl(KEYCTL_JOIN_SESSION_KEYRING,
    NULL)``, as runc does): a process inside must not possess the host session's keys."""
    number = _SYS_KEYCTL.get(platform.machine())
    if number is None:
        raise OSError(errno.ENOSYS, "keyctl: unsupported architecture %s" % platform.machine())
    result = _libc.syscall(ctypes.c_long(number), ctypes.c_int(KEYCTL_JOIN_SESSION_KEYRING), None)
    if result < 0:
        err = ctypes.get_errno()
        if err == errno.ENOSYS:
            return   # a kernel without keys: there is no keyring to leak
        raise OSError(err, "keyctl(KEYCTL_JOIN_SESSION_KEYRING): %s" % os.strerror(err))


def bounding_set(pid: str = "self") -> int:
    with open("/proc/%s/status" % pid) as handle:
        for line in handle:
            if line.startswith("CapBnd:"):
                return int(line.split()[1], 16)
    return 0


def has_effective_capability(number: int) -> bool:
    """Whether this process holds capability ``number`` in its effective set now."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    return bool(data[number // 32].effective >> (number % 32) & 1)


def become_keeping_capabilities(uid: int, gid: int) -> None:  # pragma: no cover - runs in a child before exec
    """Take ``uid``/``gid`` as every id (real, effective, saved, filesystem; no supplementary groups) and keep
    the capabilities held now across the next execve, as ambient ones.

    A program then runs as that user with root's capabilities: the owner of a user namespace, say, holds
    every capability inside it, which host root without CAP_SYS_RESOURCE does not."""
    prctl(PR_SET_KEEPCAPS, 1)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    for word in data:
        word.effective = word.permitted
        word.inheritable = word.permitted
    _check(_libc.capset(ctypes.byref(header), data), "capset")
    for number in range(64):
        if data[number // 32].permitted >> (number % 32) & 1:
            prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, number)


def raise_effective_capabilities() -> None:
    """Make every permitted capability effective again (a change of euid away from 0 empties the effective set)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    for word in data:
        word.effective = word.permitted
    _check(_libc.capset(ctypes.byref(header), data), "capset")


class CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size", "tls",
        "set_tid", "set_tid_size", "cgroup")]


CLONE_INTO_CGROUP = 0x200000000
SYS_CLONE3 = 435  # the same on every architecture that has it


def raw_fork() -> int:
    """fork() without the interpreter's fork handlers, for a child that only execs.

    ``os.fork`` runs Python's at-fork machinery (about 1 ms here); a child
    that does a few system calls and then ``execve`` or ``os._exit`` needs
    none of it.
    """
    return fork_into_cgroup(-1)


def fork_into_cgroup(cgroup_fd: int) -> int:
    """fork() whose child starts life in the cgroup2 directory ``cgroup_fd``.

    Moving a running process into a cgroup2 cgroup takes the kernel's global
    threadgroup lock for writing, which waits for an RCU grace period (about
    10 ms here); clone3(CLONE_INTO_CGROUP) places the child at birth instead.
    The child returns 0 like ``os.fork``; it is only fit to do a little work
    and exec or ``os._exit`` (the interpreter is not told that it forked).
    Raises OSError (ENOSYS, EINVAL, ...) where the kernel cannot; callers
    then fall back to ``os.fork`` and ``cgroup.procs``.
    """
    import signal as _signal
    args = CloneArgs()
    args.flags = CLONE_INTO_CGROUP if cgroup_fd >= 0 else 0
    args.exit_signal = _signal.SIGCHLD
    args.cgroup = max(cgroup_fd, 0)
    # With other Python threads alive, a child made here can hang forever: when clone3 returns,
    # the child's interpreter checks its eval breaker before any Python code could run
    # PyOS_AfterFork_Child, finds the GIL drop request another thread had posted in the parent,
    # drops the GIL and waits for that thread to take it; the child has no such thread.
    # os.fork runs the at-fork protocol in C before the child executes a bytecode, so a
    # threaded caller gets os.fork, or, for a cgroup, the callers' fork-then-move fallback.
    if threading.active_count() > 1:
        if cgroup_fd < 0:
            return os.fork()
        raise OSError(errno.EAGAIN, "clone3 from a threaded process: fork, then move the child")
    # Through the PyDLL handle, which keeps the GIL held (see _libc_gil_held).
    result = _libc_gil_held.syscall(SYS_CLONE3, ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
    err = ctypes.get_errno()
    if result < 0:
        raise OSError(err, "clone3: %s" % os.strerror(err))
    return result


NS_GET_USERNS = 0xB701


def owned_by_userns_of(pid: int, kind: str) -> bool:
    """Whether ``pid``'s namespace ``kind`` belongs to ``pid``'s own user namespace (``NS_GET_USERNS``)."""
    fd = os.open("/proc/%d/ns/%s" % (pid, kind), os.O_RDONLY | os.O_CLOEXEC)
    try:
        owner = fcntl.ioctl(fd, NS_GET_USERNS)
    finally:
        os.close(fd)
    try:
        return os.path.samestat(os.fstat(owner), os.stat("/proc/%d/ns/user" % pid))
    finally:
        os.close(owner)


def enter_namespaces(pid: int, kinds: Iterable[str]) -> None:
    """setns() into ``kinds`` of ``pid``'s namespaces; pid takes effect for children."""
    fds = []
    try:
        for kind in kinds:
            fds.append((kind, os.open("/proc/%d/ns/%s" % (pid, kind), os.O_RDONLY | os.O_CLOEXEC)))
        for kind, fd in fds:
            setns(fd, NAMESPACE_FLAGS[kind])
    finally:
        for _kind, fd in fds:
            os.close(fd)


def close_fds_except(keep: Iterable[int]) -> None:
    """Close every descriptor but stdio and ``keep`` (a forked child must not hold the caller's pipes)."""
    wanted = set(keep) | {0, 1, 2}
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd not in wanted:
            try:
                os.close(fd)
            except OSError:
                pass
