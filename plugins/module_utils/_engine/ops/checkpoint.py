# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Checkpoint and restore of whole containers with CRIU (``vzctl chkpnt``/``restore``/``suspend``/``resume``).

What CRIU is told about a container started by ``ContainerManager``:

- the process tree is the container's init and its descendants; the cgroup
  freezer of ``ovz-<name>`` stops them all at once (``--freeze-cgroup``). A
  process in the container's cgroups that is not a descendant of its init
  (a command still running from ``ovz exec``) cannot be checkpointed: the dump
  is refused before anything is frozen, naming the process;
- the mounts that come from the host are external, with stable keys, and are
  given host paths of the restoring node at restore: ``/dev/console`` (the
  console log), ``/run/ovz`` (the boot marker directory), the masked ``/proc``
  files (``/dev/null``) and the LXCFS views;
- the console log the init writes to was opened on the host, so its
  descriptors are external files (``--external file[...]``) and are handed the
  restoring node's console log (``--inherit-fd``);
- cgroups are dumped below the container's cgroup (``--cgroup-root``) and
  restored below the restoring node's ``ovz-<node>-<name>``, which this module
  makes first, with the container's limits and device list, as a start does;
- the veth's host end is recreated by CRIU under its configured name
  (``--external veth[...]``); the rest of the host side (routes, proxy
  neighbours, anti-spoofing, netns name) comes from ``network.adopt_network``.
  A resume on the source after a failed migration to another data dir of the
  same host puts back the host routes and proxy neighbours the target's undo took;
- established TCP connections (``--tcp-established``) are frozen in repair
  mode behind a network lock and come back with their sequence numbers.

Images, logs and ``ovz-checkpoint.json`` (what restore needs to know) live in
the images directory. Each mutating call holds the container's lock.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tarfile
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

from ..base.errors import HostFileError, InvalidParameter, KernelUnsupported, OvzError, StateConflict
from ..base.files import atomic_file, atomic_write_json, read_json
from ..base.states import RUNNING_STATES, State
from ..container.bringup import BringUp
from ..container.manager import CHECKPOINT_META, ContainerManager
from ..container.runtime import PAYLOAD, Runtime
from ..kernel.cgroups import ContainerCgroups, read_file
from ..kernel.criu import Criu, CriuError, CriuRun, dump_owner, log_errors, read_stats, reclaim, remap_userns
from ..kernel.mounts import read_mountinfo
from ..kernel.namespaces import load_libc
from ..kernel.process import process_starttime, process_tree, vfork_in_flight
from ..kernel.idmap import ID_COUNT, other_userns
from ..kernel.rootfs import LXCFS_FILES, RestoreStage, find_lxcfs
from ..kernel.storage import Storage
from ..node.config import ContainerConfig, validate_name
from ..resources import network
from ..resources import quota as ovz_quota

META_FILE = CHECKPOINT_META
META_VERSION = 1
STOPPED_FILE = "checkpoint-stopped.json"
CONSOLE_KEY = "ovz-console"
GUEST_KEY = "ovz-guest"
NULL_PREFIX = "ovz-null:"
CGROUP_KEY = "ovz-cgroup2"  # an unprivileged container's /sys/fs/cgroup: its payload cgroup of the unified hierarchy
DEV_PREFIX = "ovz-dev:"     # an unprivileged container's device node: the host's own, bound (no mknod in a user namespace)
LXCFS_PREFIX = "ovz-lxcfs:"
# The first CRIU seen to always lift its network lock after a restore (4.1 here; 3.17 does not).
UNLOCKS_AFTER_RESTORE = (4, 0)
LAZY_READY = "Starting lazy pages server"          # dump.log: images written, pages served from now on
LAZY_DONE = "Lazy pages transfer finished successfully"
LAZY_READY_TIMEOUT = 300.0   # seconds a lazy dump may take to write its images (CRIU's own dump has no limit either)
TCP_REPAIR = 19
SYS_PIDFD_GETFD = 438           # the same number on every architecture (generic syscall table)
# File systems CRIU dumps itself; any other mount inside a container must be one of the known external ones.
VIRTUAL_FS = ("proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "binfmt_misc", "securityfs",
              "debugfs", "tracefs", "pstore", "hugetlbfs", "fusectl", "configfs", "autofs", "bpf", "nsfs")


# What CRIU's errors mean for a container, when the cause is known (shown after CRIU's lines).
DUMP_HINTS = (
    ("nested uts namespace", "Hint: a process inside runs in a UTS namespace of its own (systemd's ProtectHostname=yes, "
                             "e.g. systemd-logind); CRIU cannot checkpoint nested UTS namespaces."),
    ("bpf-prog", "Hint: a process inside holds a BPF program (systemd does for IPAddressDeny=, DeviceAllow= and "
                 "similar unit settings); CRIU cannot checkpoint BPF programs."),
    ("Can't lookup mount", "Hint: a process inside has a file of the host open (for example output inherited from "
                           "a command started by exec); only the container's own files can be checkpointed."),
    ("Unseizable non-zombie", "Hint: a process inside slept uninterruptibly (state D: on slow storage, say) through "
                              "all of CRIU's timeout; try again once it is done."),
    ("Can't get rlimit", "Hint: CRIU reads the resource limits of processes running as another user with prlimit(2), "
                         "which needs CAP_SYS_RESOURCE; the caller runs without it."),
)


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


def _dir_size(path: str) -> int:
    total = 0
    for directory, _dirs, files in os.walk(path):
        for entry in files:
            try:
                total += os.lstat(os.path.join(directory, entry)).st_size
            except OSError:
                pass
    return total


def _mountinfo(pid: int) -> List[Dict[str, str]]:
    return [{"id": str(mount.mount_id), "parent": str(mount.parent_id), "root": mount.root,
             "target": mount.mount_point, "fstype": mount.fstype} for mount in read_mountinfo(pid)]


def _is_fuse(fstype: str) -> bool:
    return fstype in ("fuse", "fuseblk") or fstype.startswith(("fuse.", "fuseblk."))


def classify_mounts(pid: int) -> Tuple[List[Dict[str, str]], List[str]]:
    """The mounts of the container whose init is ``pid``: (the external ones, as {target, key}, which
    the restoring node provides; the ones CRIU cannot take along, described)."""
    mounts, problems = [], []
    # CRIU mounts what it restores in the container's user namespace before it makes its cgroup namespace,
    # where the kernel refuses a cgroup2 mount: the restoring node binds the container's new cgroup instead.
    userns = other_userns(pid)
    for mount in _mountinfo(pid)[1:]:
        target, fstype = mount["target"], mount["fstype"]
        if userns and fstype == "cgroup2" and target == "/sys/fs/cgroup":
            mounts.append({"target": target, "key": CGROUP_KEY})
        elif target == "/dev/console":
            mounts.append({"target": target, "key": CONSOLE_KEY})
        elif target == "/run/ovz":
            mounts.append({"target": target, "key": GUEST_KEY})
        elif fstype == "devtmpfs" and mount["root"] == "/null":
            mounts.append({"target": target, "key": NULL_PREFIX + target})
        elif fstype == "devtmpfs" and target == "/dev" + mount["root"]:
            mounts.append({"target": target, "key": DEV_PREFIX + mount["root"].lstrip("/")})
        elif fstype == "fuse.lxcfs":
            mounts.append({"target": target, "key": LXCFS_PREFIX + target.lstrip("/")})
        elif _is_fuse(fstype):
            problems.append("a FUSE mount at %s (%s), which CRIU cannot checkpoint; unmount it inside first"
                            % (target, fstype))
        elif fstype not in VIRTUAL_FS:
            problems.append("a mount CRIU cannot take along: %s (%s, from %s); unmount it inside first"
                            % (target, fstype, mount["root"]))
    return mounts, problems


def mount_obstacles(init_pid: int, pids: List[int]) -> List[str]:
    """The mounts CRIU would refuse: in the init's mount namespace (``classify_mounts``), and FUSE
    mounts in the nested mount namespaces of ``pids`` (services with private mounts)."""
    problems = ["the container has %s" % problem for problem in classify_mounts(init_pid)[1]]
    seen = set(_ns_ids(init_pid, ("mnt",)).values())
    for pid in pids:
        mnt = _ns_ids(pid, ("mnt",)).get("mnt")
        if mnt is None or mnt in seen:
            continue
        seen.add(mnt)
        try:
            nested = _mountinfo(pid)
        except OSError:
            continue
        problems += ["%s has a FUSE mount at %s (%s) in a mount namespace of its own, which CRIU cannot "
                     "checkpoint" % (_who(pid), m["target"], m["fstype"])
                     for m in nested if _is_fuse(m["fstype"]) and m["fstype"] != "fuse.lxcfs"]
    return problems


def lxcfs_views(pid: int) -> List[str]:
    """The LXCFS files (relative to LXCFS's mount, as in ``LXCFS_FILES``) bound into the container of ``pid``:
    its checkpoint needs LXCFS running where it is restored."""
    return sorted(m["target"].lstrip("/") for m in _mountinfo(pid)[1:] if m["fstype"] == "fuse.lxcfs")


def _comm(pid: int) -> str:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            text = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
        if text:
            return text
        with open("/proc/%d/comm" % pid) as handle:
            return handle.read().strip()
    except OSError:
        return "?"


# Anonymous-inode descriptors CRIU can dump (criu/files.c); it refuses any other kind (io_uring,
# perf events, userfaultfd, BPF programs and links, ...).
CRIU_ANON_INODES = ("[eventfd]", "[eventpoll]", "inotify", "[fanotify]", "[signalfd]", "[timerfd]", "[pidfd]",
                    "bpf-map")
# Of the misc character devices CRIU dumps tun and autofs only (it refuses /dev/fuse, /dev/kvm, ...).
MISC_MAJOR = 10
CRIU_MISC_MINORS = (200, 235)
MISC_NAMES = {229: "/dev/fuse", 232: "/dev/kvm", 237: "/dev/loop-control", 236: "/dev/mapper/control"}
# Namespaces each process of a container must share with its init: CRIU restores nested mount and
# network namespaces only (criu/namespaces.c, CLONE_SUBNS). A process in another time namespace is
# even dumped, and the restore fails ("Can't restore sub-task in NS").
SHARED_NAMESPACES = ("pid", "ipc", "uts", "cgroup", "user", "time")


def _status(pid: int) -> Dict[str, List[str]]:
    """``/proc/<pid>/status`` as {key: its tab-separated values}."""
    result = {}
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            key, _sep, value = line.partition(":")
            result[key] = value.split()
    return result


def _who(pid: int, status: Optional[Dict[str, List[str]]] = None) -> str:
    """``process <pid inside> (<comm>)``, as the container's root sees it."""
    try:
        status = status if status is not None else _status(pid)
        with open("/proc/%d/comm" % pid) as handle:
            comm = handle.read().strip()
    except OSError:
        return "process %d (on the host)" % pid
    return "process %s (%s)" % ((status.get("NSpid") or [str(pid)])[-1], comm)


def _ns_ids(pid: int, kinds: Tuple[str, ...]) -> Dict[str, Tuple[int, int]]:
    result = {}
    for kind in kinds:
        try:
            info = os.stat("/proc/%d/ns/%s" % (pid, kind))
        except OSError:
            continue    # a kernel without this namespace kind, or a zombie (it has none)
        result[kind] = (info.st_dev, info.st_ino)
    return result


def _fd_obstacles(pid: int) -> List[str]:
    """The descriptors of ``pid`` CRIU cannot dump."""
    found: List[str] = []
    try:
        entries = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return found
    for entry in entries:
        path = "/proc/%d/fd/%s" % (pid, entry)
        try:
            target = os.readlink(path)
            if target.startswith("anon_inode:"):
                kind = target[len("anon_inode:"):]
                if kind not in CRIU_ANON_INODES:
                    found.append("descriptor %s is %s, which CRIU cannot checkpoint" % (entry, kind))
                continue
            if not target.startswith("/"):
                continue
            info = os.stat(path)
        except OSError:
            continue
        if stat.S_ISCHR(info.st_mode) and os.major(info.st_rdev) == MISC_MAJOR and \
                os.minor(info.st_rdev) not in CRIU_MISC_MINORS:
            device = MISC_NAMES.get(os.minor(info.st_rdev), "%s (10:%d)" % (target, os.minor(info.st_rdev)))
            found.append("descriptor %s is the device %s, which CRIU cannot checkpoint" % (entry, device))
    return found


def process_obstacles(init_pid: int, pids: List[int]) -> List[str]:
    """What CRIU would refuse in the processes ``pids`` of the container whose init is ``init_pid``, each
    naming the process (its pid inside and its command), read from /proc without stopping anything.

    - a session or process group whose leader is outside the container's pid namespace: a process
      started from the host without a session of its own, and the jobs it left behind;
    - a namespace other than the init's, but for mount and network namespaces (SHARED_NAMESPACES);
    - a tracer (CRIU must be the only one to ptrace the processes it dumps);
    - descriptors of a kind CRIU does not dump (CRIU_ANON_INODES, misc devices such as /dev/fuse).
    """
    wanted = _ns_ids(init_pid, SHARED_NAMESPACES)
    problems = []
    for pid in pids:
        try:
            status = _status(pid)
        except OSError:
            continue    # gone meanwhile
        who = _who(pid, status)
        reasons = []
        if (status.get("NSsid") or ["1"])[-1] == "0" or (status.get("NSpgid") or ["1"])[-1] == "0":
            reasons.append("its session or process group leader is outside the container (it was started from "
                           "the host without a session of its own, e.g. a job of a command run inside without "
                           "setsid); end it, or start it with setsid")
        if (status.get("TracerPid") or ["0"])[0] != "0":
            reasons.append("it is being traced (by host pid %s)" % status["TracerPid"][0])
        have = _ns_ids(pid, SHARED_NAMESPACES + ("time_for_children",))
        others = [kind for kind in SHARED_NAMESPACES if kind in have and kind in wanted and have[kind] != wanted[kind]]
        if not others and "time" in wanted and have.get("time_for_children", wanted["time"]) != wanted["time"]:
            others.append("time (for its children)")
        reasons += ["it runs in another %s namespace than the container's init" % kind for kind in others]
        reasons += _fd_obstacles(pid)
        problems += ["%s: %s" % (who, reason) for reason in reasons]
    return problems


# How long a checkpoint lets the container run on for a vfork in flight to end (see _freeze_and_check).
VFORK_WAIT = 5.0

# Less than this (or a tenth of it) left on the file system that took a failed dump: say it is full.
FULL_BYTES = 1 << 20


def _space_note(path: str) -> str:
    """Why a dump into ``path`` may have failed on the host's side: its file system is full."""
    try:
        info = os.statvfs(path)
    except OSError:
        return ""
    if info.f_files and not info.f_ffree:
        return "The file system of %s has no free inodes left." % path
    if info.f_bfree * info.f_frsize < min(FULL_BYTES, info.f_blocks * info.f_frsize // 10):
        return "The file system of %s is full (%d bytes free): the images did not fit." % (
            path, info.f_bfree * info.f_frsize)
    return ""


def _amend(exc: BaseException, prefix: str, suffix: str = "") -> OvzError:
    """``exc`` with its message extended (an engine error keeps its class and parameter)."""
    if isinstance(exc, OvzError):
        exc.args = ("%s%s%s" % (prefix, exc.args[0] if exc.args else "", suffix),) + tuple(exc.args[1:])
        return exc
    return OvzError("%s%s%s" % (prefix, exc, suffix))


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _pidfd_getfd(pid: int, fd: int) -> int:
    pidfd = os.pidfd_open(pid)
    try:
        result = load_libc().syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if result < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return int(result)
    finally:
        os.close(pidfd)


def release_tcp_repair(pids: List[int]) -> int:
    """Take every TCP socket of ``pids`` out of repair mode (CRIU leaves them in it after ``--leave-stopped``).

    The sockets are borrowed with ``pidfd_getfd``; returns how many were released.
    """
    done = set()
    for pid in pids:
        try:
            fds = os.listdir("/proc/%d/fd" % pid)
        except OSError:
            continue
        for entry in fds:
            try:
                target = os.readlink("/proc/%d/fd/%s" % (pid, entry))
            except OSError:
                continue
            if not target.startswith("socket:[") or target in done:
                continue
            try:
                fd = _pidfd_getfd(pid, int(entry))
            except OSError:
                continue
            sock = socket.socket(fileno=fd)
            try:
                if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
                    try:
                        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 0)
                        done.add(target)
                    except OSError:
                        pass  # listening sockets and the like were never in repair mode
            finally:
                sock.close()
    return len(done)


def _run_in_netns(pid: int, argv: List[str], stdin: Optional[str] = None) -> subprocess.CompletedProcess:
    with network.in_netns(pid):
        return subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, check=False)


# CRIU's own unlock script for its iptables network lock (criu/net.c), used when CRIU was built
# without nftables (Debian 12's 3.17): a chain CRIU jumped to from INPUT and OUTPUT.
IPTABLES_UNLOCK = "*filter\n:CRIU - [0:0]\n-D INPUT -j CRIU\n-D OUTPUT -j CRIU\n-X CRIU\nCOMMIT\n"


def _remove_nft_lock(pid: int) -> List[str]:
    try:
        nft = network.nft_binary()
    except OvzError:
        return []   # no nft here: CRIU cannot have locked with it either
    listing = _run_in_netns(pid, [nft, "-j", "list", "tables"])
    try:
        items = json.loads(listing.stdout).get("nftables", []) if listing.returncode == 0 else None
    except ValueError:
        items = None
    if items is None:
        raise OvzError("listing the nftables tables of the container's network namespace failed, CRIU's network "
                       "lock may still be in place: %s" % (listing.stderr.strip() or listing.stdout.strip()[:200]))
    removed = []
    for item in items:
        table = item.get("table") or {}
        if str(table.get("name", "")).startswith("CRIU-"):
            result = _run_in_netns(pid, [nft, "delete", "table", table.get("family", "inet"), table["name"]])
            if result.returncode != 0:
                raise OvzError("removing CRIU's network lock %s failed: %s" % (table["name"], result.stderr.strip()))
            removed.append(table["name"])
    return removed


def _remove_iptables_lock(pid: int) -> List[str]:
    removed = []
    for tool in ("iptables", "ip6tables"):
        binary = shutil.which(tool)
        restore = shutil.which(tool + "-restore")
        if not binary or not restore:
            continue
        if _run_in_netns(pid, [binary, "-w", "-t", "filter", "-S", "CRIU"]).returncode != 0:
            continue    # no CRIU chain: not locked with this tool
        result = _run_in_netns(pid, [restore, "-w", "--noflush"], stdin=IPTABLES_UNLOCK)
        if result.returncode != 0:
            raise OvzError("removing CRIU's network lock (%s chain CRIU) failed: %s"
                           % (tool, result.stderr.strip() or result.stdout.strip()))
        removed.append("%s:CRIU" % tool)
    return removed


def remove_criu_network_lock(pid: int) -> List[str]:
    """Delete CRIU's network lock from the netns of ``pid``: its ``inet CRIU-*`` nftables tables, or the
    ``CRIU`` iptables/ip6tables chain of a CRIU built without nftables. Returns what was removed; fails
    (rather than leaving the container's connections silently cut off) when the lock cannot be inspected."""
    return _remove_nft_lock(pid) + _remove_iptables_lock(pid)


class _LogFollower:
    """Reads a growing log from where it left off (polled while the container is frozen: no rereading)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0
        self.tail = ""

    def says(self, text: str) -> bool:
        try:
            with open(self.path, errors="replace") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
                self.offset = handle.tell()
        except OSError:
            return False
        window = self.tail + chunk
        self.tail = window[-len(text):]
        return text in window


def _log_says(path: str, text: str) -> bool:
    try:
        with open(path, errors="replace") as handle:
            return any(text in line for line in handle)
    except OSError:
        return False


def end_page_server(stopped: Any) -> bool:
    """Kill the page server of a lazy dump (recorded in the stopped file), if it still runs; True if it did."""
    server = stopped.get("page_server") if isinstance(stopped, dict) else None
    if not server or not server.get("pid") or process_starttime(server["pid"]) != server.get("starttime"):
        return False
    try:
        os.kill(server["pid"], signal.SIGKILL)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 10
    while process_starttime(server["pid"]) == server.get("starttime") and time.monotonic() < deadline:
        try:
            os.waitpid(server["pid"], os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.01)
    return True


def is_images_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, META_FILE))


def load_meta(images_dir: str, param: str = "dump_dir") -> Dict[str, Any]:
    try:
        meta = read_json(os.path.join(images_dir, META_FILE))
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("version") != META_VERSION:
        raise InvalidParameter("%s holds no checkpoint of this collection (no readable %s)" % (images_dir, META_FILE),
                               param)
    return meta


def pack(images_dir: str, dumpfile: str) -> int:
    """Write the images directory as one uncompressed tar file (atomically); returns its size."""
    try:
        return _pack(images_dir, dumpfile)
    except HostFileError:
        raise
    except OSError as exc:
        raise HostFileError(dumpfile, "the dump archive", exc, "dumpfile") from None


def _pack(images_dir: str, dumpfile: str) -> int:
    with atomic_file(dumpfile, 0o600, binary=True) as handle:
        with tarfile.open(fileobj=handle, mode="w") as archive:
            for entry in sorted(os.listdir(images_dir)):
                archive.add(os.path.join(images_dir, entry), arcname=entry, recursive=True)
    return os.path.getsize(dumpfile)


def unpack(dumpfile: str, target: str) -> None:
    """Extract a dump archive made by ``pack`` into ``target`` (plain files only)."""
    try:
        with tarfile.open(dumpfile, mode="r") as archive:
            for member in archive.getmembers():
                if not (member.isfile() or member.isdir()) or member.name.startswith("/") or \
                        ".." in member.name.split("/"):
                    raise InvalidParameter("%s holds an unexpected entry %r" % (dumpfile, member.name), "dumpfile")
            archive.extractall(target)  # noqa: S202 - members checked above
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise HostFileError(target, "the images of %s" % dumpfile, exc) from None
        raise InvalidParameter("%s is not a readable dump archive: %s" % (dumpfile, exc), "dumpfile") from None
    except tarfile.TarError as exc:
        raise InvalidParameter("%s is not a readable dump archive: %s" % (dumpfile, exc), "dumpfile") from None


class Checkpointer:
    """Checkpoint, restore, suspend and resume the containers of one ``ContainerManager`` (node)."""

    def __init__(self, manager: ContainerManager, criu: Optional[Criu] = None) -> None:
        self.manager = manager
        self.criu = criu or Criu()

    # -- helpers ---------------------------------------------------------------------------
    def _running(self, name: str) -> Tuple[ContainerConfig, Runtime]:
        config = self.manager.load(name)
        runtime = self.manager.runtime(name)
        if runtime is None or not runtime.alive():
            raise StateConflict("container %s is not running (it is %s)" % (name, self.manager.status(name)), "name")
        return config, runtime

    def _stopped_path(self, name: str) -> str:
        return os.path.join(self.manager.layout.run(name), STOPPED_FILE)

    def _freezer_dir(self, cgroups: ContainerCgroups) -> str:
        if self.manager.backend.version == 1:
            return cgroups.controller_dir("freezer")
        return cgroups.paths["unified"]

    def _cgroup_roots(self, runtime: Runtime) -> List[Dict[str, Any]]:
        """Each hierarchy the container's init is in and ``ovz-<name>`` has a directory in:
        its controllers as ``/proc/<pid>/cgroup`` spells them, and the root of the container's
        cgroup namespace there (``ovz-<name>/payload``), which CRIU swaps for the new one at restore."""
        backend = self.manager.backend
        result = []
        with open("/proc/%d/cgroup" % runtime.init_pid) as handle:
            lines = handle.read().splitlines()
        for line in lines:
            parts = line.split(":", 2)
            if len(parts) != 3 or parts[1].startswith("name="):
                continue
            controllers = parts[1]
            key = "unified" if controllers == "" else next(
                (c for c in controllers.split(",") if c in runtime.cgroups), None)
            if key is None or key not in runtime.cgroups:
                continue
            mountpoint = backend.mountpoint(key)
            rel = "/" + os.path.relpath(os.path.join(runtime.cgroups[key], PAYLOAD), mountpoint).strip("/")
            root: Dict[str, Any] = {"controllers": controllers, "key": key, "path": rel}
            if controllers == "":
                root["tree"] = read_cgroup_tree(os.path.join(runtime.cgroups[key], PAYLOAD))
            result.append(root)
        return result

    def _externals(self, config: ContainerConfig, runtime: Runtime) -> Tuple[List[Dict[str, str]], List[str]]:
        """(external mounts as {target, key}, external files as CRIU keys) of the running container."""
        mounts, problems = classify_mounts(runtime.init_pid)
        if problems:
            raise StateConflict("container %s has %s" % (config.name, "; ".join(problems)), "name")
        console = os.path.realpath(self.manager.layout.console(config.name))
        files = set()
        for pid in process_tree(runtime.init_pid):
            try:
                entries = os.listdir("/proc/%d/fd" % pid)
            except OSError:
                continue
            for entry in entries:
                try:
                    if os.readlink("/proc/%d/fd/%s" % (pid, entry)) != console:
                        continue
                    st = os.stat("/proc/%d/fd/%s" % (pid, entry))
                    with open("/proc/%d/fdinfo/%s" % (pid, entry)) as handle:
                        mnt_id = next(int(line.split()[1]) for line in handle if line.startswith("mnt_id:"))
                except (OSError, StopIteration, ValueError):
                    continue
                files.add("file[%x:%x]" % (mnt_id, st.st_ino))
        return mounts, sorted(files)

    def _freeze_and_check(self, name: str, runtime: Runtime, cgroups: ContainerCgroups) -> bool:
        """Freeze the container, then check its process tree; True when it was frozen already.

        The process tree and the cgroup's process list are read one after the other: only
        with the cgroup frozen does a process that forks all the time show the same processes
        in both. CRIU finds the cgroup frozen and leaves it so; a failed check thaws it again.
        """
        was_frozen = cgroups.frozen()
        if not was_frozen:
            self._freeze_quiescent(name, runtime, cgroups)
        try:
            waiting = vfork_in_flight(self._check_tree(name, runtime, cgroups))
            if waiting:
                raise self._mid_vfork(name, waiting, "The container stays frozen, as it was: thaw it and try again")
        except BaseException:
            if not was_frozen:
                self._ensure_running(runtime, cgroups)
            raise
        return was_frozen

    def _freeze_quiescent(self, name: str, runtime: Runtime, cgroups: ContainerCgroups) -> None:
        """Freeze the container where CRIU can stop every process.

        A freeze that catches a vfork before its child execs leaves the parent where CRIU can
        seize it but never stop it, until CRIU's timeout fails the dump. The container then runs
        on until such children have gone on (up to VFORK_WAIT seconds) and is frozen again.
        """
        deadline = time.monotonic() + VFORK_WAIT
        while True:
            cgroups.freeze()
            try:
                waiting = vfork_in_flight(process_tree(runtime.init_pid))
                if waiting and time.monotonic() > deadline:
                    raise self._mid_vfork(name, waiting, "The container runs on", VFORK_WAIT)
            except BaseException:
                self._ensure_running(runtime, cgroups)
                raise
            if not waiting:
                return
            cgroups.thaw()
            while time.monotonic() < deadline and vfork_in_flight([parent for parent, _child in waiting]):
                time.sleep(0.01)

    @staticmethod
    def _mid_vfork(name: str, waiting: List[Tuple[int, int]], state: str, waited: float = 0.0) -> StateConflict:
        return StateConflict(
            "container %s cannot be checkpointed: %s; CRIU cannot stop a process that waits for its vfork child "
            "to exec or exit%s. %s" % (
                name, "; ".join("%s waits for its child %s" % (_who(parent), _who(child).split(" ", 1)[1])
                                for parent, child in waiting[:5]),
                " (waited %.0f s)" % waited if waited else "", state), "name")

    def freeze(self, name: str) -> bool:
        """Freeze running container ``name`` for a dump to come (a migration freezes before it dumps):
        a vfork in flight is waited out as the dump itself would. False if it was frozen already."""
        with self.manager.lock(name):
            _config, runtime = self._running(name)
            cgroups = self.manager.cgroups_for(runtime)
            if cgroups.frozen():
                return False
            self._freeze_quiescent(name, runtime, cgroups)
            return True

    def _check_tree(self, name: str, runtime: Runtime, cgroups: ContainerCgroups) -> List[int]:
        """The container's processes (its init's tree), once none other is found in its cgroup."""
        tree = process_tree(runtime.init_pid)
        members = set(tree)
        strays = [pid for pid in cgroups.pids() if pid not in members]
        if strays:
            raise StateConflict(
                "container %s runs processes that are not descendants of its init, which CRIU cannot checkpoint "
                "(commands still running from ovz exec?): %s"
                % (name, ", ".join("%d (%s)" % (pid, _comm(pid)) for pid in strays[:5])), "name")
        return tree

    def _dump_owner(self, config: ContainerConfig) -> Optional[int]:
        """The host user a dump of ``config``'s container runs as (``criu.dump_owner``); None: host root."""
        entry = self.manager.idmap.lookup(config.name) if config.unprivileged else None
        return dump_owner(int(entry["uid"]) if entry else None)

    def _dump_args(self, config: ContainerConfig, runtime: Runtime, tcp_established: bool,
                   meta: Dict[str, Any]) -> List[str]:
        cgroups = self.manager.cgroups_for(runtime)
        # --force-irmap: an inotify watch whose path CRIU cannot read from the kernel is dumped by
        # its file handle, which holds the inode number: stale on another node, where the private
        # area is a copy (systemd 257 keeps such a watch). CRIU then looks the inode up by name
        # under /etc, /var/log and the like, or refuses the dump, which leaves the container running.
        args = ["-t", str(runtime.init_pid), "--freeze-cgroup", self._freezer_dir(cgroups),
                "--manage-cgroups=soft", "--file-locks", "--link-remap", "--skip-in-flight", "--force-irmap"]
        for root in meta["cgroups"]:
            args += ["--cgroup-dump-controller", root["controllers"]]
            for controller in root["controllers"].split(","):
                args += ["--cgroup-root", "%s:%s" % (controller, root["path"])]
        if tcp_established:
            args.append("--tcp-established")
        if self.criu.feature("network_lock_nftables"):
            args += ["--network-lock", "nftables"]
        for mount in meta["mounts"]:
            args += ["--external", "mnt[%s]:%s" % (mount["target"], mount["key"])]
        for key in meta["files"]:
            args += ["--external", key]
        return args

    def _meta(self, config: ContainerConfig, runtime: Runtime, tcp_established: bool) -> Dict[str, Any]:
        mounts, files = self._externals(config, runtime)
        return {
            "version": META_VERSION,
            "name": config.name,
            "config": config.to_dict(),
            "criu": self.criu.version(),
            "kernel": os.uname().release,
            "cgroup_version": self.manager.backend.version,
            "cgroups": self._cgroup_roots(runtime),
            "mounts": mounts,
            "files": files,
            "network": ({"ifname": config.network["ifname"], "host_ifname": config.network["host_ifname"],
                         "bridge": config.network.get("bridge")} if config.network else None),
            "tcp_established": tcp_established,
            "created_at": time.time(),
        }

    # -- pre-dump and dump ---------------------------------------------------------------------
    def pre_dump(self, name: str, images_dir: str, parent_dir: Optional[str] = None) -> Dict[str, Any]:
        """Copy the container's memory while it keeps running (iterative pre-copy).

        With ``parent_dir`` (an earlier pre-dump) only the pages dirtied since are written.
        Needs a kernel that tracks dirty memory (``CONFIG_MEM_SOFT_DIRTY``, ``criu check
        --feature mem_dirty_track``): CRIU always tracks memory in a pre-dump, and stops with
        a BUG where the kernel cannot, so this raises ``KernelUnsupported`` first.
        """
        validate_name(name)
        if not self.criu.feature("mem_dirty_track"):
            raise KernelUnsupported("this kernel does not track dirty memory (no CONFIG_MEM_SOFT_DIRTY): "
                                    "pre-dumps are not possible here; dump directly", "pre_dump_iterations")
        began = time.monotonic()
        with self.manager.lock(name):
            config, runtime = self._running(name)
            cgroups = self.manager.cgroups_for(runtime)
            self._refuse_obstacles(name, runtime)
            try:
                os.makedirs(images_dir, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise HostFileError(images_dir, "the pre-dump's images", exc) from None
            was_frozen = self._freeze_and_check(name, runtime, cgroups)
            args = ["-t", str(runtime.init_pid), "--freeze-cgroup", self._freezer_dir(cgroups)]
            args.append("--track-mem")
            if parent_dir:
                args += ["--prev-images-dir", os.path.relpath(os.path.abspath(parent_dir), os.path.abspath(images_dir))]
            try:
                run = self.criu.run("pre-dump", images_dir, args, what="pre-dump of %s" % name,
                                    owner=self._dump_owner(config))
            except BaseException as exc:  # noqa: BLE001 - undone, then raised as the operator's error
                raise self._failed_after_freeze(name, exc, "the pre-dump into %s" % images_dir, images_dir,
                                                runtime, cgroups, was_frozen) from None
            if not was_frozen:
                self._ensure_running(runtime, cgroups)
        stats = run.stats
        return {
            "images_dir": images_dir,
            "pages_written": stats.get("pages_written", 0),
            "pages_scanned": stats.get("pages_scanned", 0),
            "pages_skipped_parent": stats.get("pages_skipped_parent", 0),
            "frozen_ms": round(stats.get("frozen_time", 0) / 1000.0, 1),
            "criu_ms": _ms(run.seconds),
            "total_ms": _ms(time.monotonic() - began),
            "size": _dir_size(images_dir),
            "dirty_tracking": True,
        }

    def dump(self, name: str, images_dir: str, parent_dir: Optional[str] = None, leave_running: bool = False,
             leave_stopped: bool = False, tcp_established: bool = True,
             lazy_port: Optional[int] = None) -> Dict[str, Any]:
        """Checkpoint the running container into ``images_dir``.

        Default: the container is stopped afterwards (its processes killed by CRIU, its
        network, mounts and cgroups removed, as ``stop`` does). ``leave_running`` lets it
        carry on; ``leave_stopped`` leaves its processes stopped, its network locked and
        its connections in repair mode, for ``resume_stopped`` or ``finish_stopped``.
        A failed dump leaves the container running and raises ``CriuError`` with CRIU's reasons.

        ``lazy_port`` (with ``leave_stopped``): a lazy dump for a post-copy migration. The
        images are written without the memory pages, and CRIU stays behind as a page server
        on ``127.0.0.1:lazy_port`` that hands the pages to a restoring node's ``criu
        lazy-pages`` daemon; this returns once the images are complete, with that process
        as ``page_server`` (``finish_lazy`` waits for it).
        """
        validate_name(name)
        if leave_running and leave_stopped:
            raise InvalidParameter("leave_running and leave_stopped exclude each other", "leave_running")
        if lazy_port is not None and not leave_stopped:
            raise InvalidParameter("a lazy dump needs leave_stopped (the pages stay with the stopped tasks)",
                                   "lazy")
        timings: Dict[str, float] = {}
        self.criu.warm(self.criu_features(parent_dir is not None))
        if leave_running and os.path.realpath(images_dir) == os.path.realpath(self.manager.layout.dump(name)):
            # A checkpoint there makes the container suspended once it stops: resumed, it would go back in time.
            raise InvalidParameter("%s is where suspend keeps a container's state; a checkpoint that leaves the "
                                   "container running goes elsewhere" % images_dir, "dump_dir")
        began = time.monotonic()
        with self.manager.lock(name):
            config, runtime = self._running(name)
            cgroups = self.manager.cgroups_for(runtime)
            if not cgroups.frozen():
                # (A migration checked before it froze the container: not again in its frozen window.)
                self._refuse_obstacles(name, runtime)
            was_frozen = self._freeze_and_check(name, runtime, cgroups)
            timings["freeze_check_ms"] = _ms(time.monotonic() - began)
            meta_path = os.path.join(images_dir, META_FILE)
            step = "reading the container's state"
            wrote_meta = False
            server: Optional[subprocess.Popen] = None
            try:
                meta = self._meta(config, runtime, tcp_established)
                meta["frozen"] = was_frozen
                # A dump made as the container's owner (criu --unprivileged) leaves the cgroups out.
                meta["cgroups_in_images"] = self._dump_owner(config) is None
                step = "clearing %s" % images_dir
                if os.path.isdir(images_dir):
                    for entry in os.listdir(images_dir):
                        if entry.endswith(".img") or entry in (META_FILE, "stats-dump", "dump.log", "restore.log",
                                                               "stats-restore"):
                            os.unlink(os.path.join(images_dir, entry))
                step = "making %s" % images_dir
                os.makedirs(images_dir, mode=0o700, exist_ok=True)
                step = "writing %s" % meta_path
                wrote_meta = True
                atomic_write_json(meta_path, meta, what="the checkpoint's description")
                step = "asking CRIU what it supports"
                args = self._dump_args(config, runtime, tcp_established, meta)
                if parent_dir:
                    args += ["--prev-images-dir",
                             os.path.relpath(os.path.abspath(parent_dir), os.path.abspath(images_dir))]
                    if self.criu.feature("mem_dirty_track"):
                        args.append("--track-mem")
                if leave_running:
                    args.append("--leave-running")
                elif leave_stopped:
                    args.append("--leave-stopped")
                if lazy_port is not None:
                    args += ["--lazy-pages", "--address", "127.0.0.1", "--port", str(lazy_port)]
                timings["prepare_ms"] = _ms(time.monotonic() - began)
                step = "the dump into %s" % images_dir
                if lazy_port is None:
                    run = self.criu.run("dump", images_dir, args, what="checkpoint of %s" % name,
                                        owner=self._dump_owner(config))
                else:
                    server, run = self._dump_lazy(name, runtime, images_dir, args, self._dump_owner(config))
            except BaseException as exc:  # noqa: BLE001 - undone, then raised as the operator's error
                if wrote_meta:
                    _unlink_quietly(meta_path)
                if leave_stopped:
                    self._undo_leave_stopped(name, runtime, cgroups, server)
                raise self._failed_after_freeze(name, exc, step, images_dir, runtime, cgroups, was_frozen) from None
            timings["dump_ms"] = _ms(run.seconds)
            mark = time.monotonic()
            if leave_running and not was_frozen:
                self._ensure_running(runtime, cgroups)   # CRIU restores the freezer state it found
            if leave_stopped:
                # Thawed, the tasks stay stopped (SIGSTOP): finish_stopped can kill them, resume_stopped resume them.
                if not was_frozen:
                    self._ensure_running(runtime, cgroups)
                try:
                    self._write_stopped(name, runtime, images_dir, server)
                except BaseException as exc:
                    # Unrecorded, no one would ever resume or finish them: they carry on here.
                    if server is not None:
                        server.kill()
                        server.wait()
                    self._continue_stopped(runtime, cgroups)
                    _unlink_quietly(meta_path)
                    if not isinstance(exc, Exception):
                        raise
                    raise _amend(exc, "checkpoint of %s: " % name, "; the container carries on") from None
            elif not leave_running:
                self.manager.tear_down_remains(config)
            timings["cleanup_ms"] = _ms(time.monotonic() - mark)
        stats = run.stats
        timings["total_ms"] = _ms(time.monotonic() - began)
        report: Dict[str, Any] = {
            "images_dir": images_dir,
            "timings": timings,
            "frozen_ms": round(stats.get("frozen_time", 0) / 1000.0, 1),
            "freezing_ms": round(stats.get("freezing_time", 0) / 1000.0, 1),
            "memdump_ms": round(stats.get("memdump_time", 0) / 1000.0, 1),
            "memwrite_ms": round(stats.get("memwrite_time", 0) / 1000.0, 1),
            "pages_written": stats.get("pages_written", 0),
            "pages_skipped_parent": stats.get("pages_skipped_parent", 0),
            "size": _dir_size(images_dir),
            "state": State.RUNNING if leave_running else ("stopped-after-dump" if leave_stopped else State.STOPPED),
        }
        if server is not None:
            report["page_server"] = server     # a lazy dump's page server (a Popen), for finish_lazy
        return report

    def dump_to_file(self, name: str, dumpfile: str, leave_running: bool = False,
                     tcp_established: bool = True) -> Dict[str, Any]:
        """Checkpoint into one archive file (``pack``), through a scratch directory under the data dir.

        Until the archive is written the container waits, stopped, its connections held (``leave_stopped``);
        only then is it stopped for good (``finish_stopped``). If the archive cannot be written it carries
        on (``resume_stopped``). A failed CRIU run leaves its log next to ``dumpfile``, nothing in the data dir.
        """
        scratch = scratch_dir(self.manager, name, "dump")
        try:
            report = self.dump(name, scratch, leave_running=leave_running, leave_stopped=not leave_running,
                               tcp_established=tcp_established)
        except CriuError as exc:
            log = dumpfile + ".log"
            try:
                shutil.copy(exc.log or "", log)
                exc = CriuError(str(exc).replace(exc.log or "", log), log, exc.errors, exc.param)
            except OSError:
                pass
            raise exc from None
        finally:
            if not os.path.isfile(os.path.join(scratch, META_FILE)):
                remove_scratch(scratch)
        began = time.monotonic()
        try:
            report["size"] = pack(scratch, dumpfile)
        except Exception as exc:  # noqa: BLE001 - undone, then raised as the operator's error
            undo = "the container carries on"
            try:
                if not leave_running:
                    self.resume_stopped(name)
            except Exception as again:  # noqa: BLE001 - reported with the first error
                undo = "letting the container carry on failed too (%s)" % again
            remove_scratch(scratch)
            if not isinstance(exc, OvzError):
                raise OvzError("checkpoint of %s failed packing %s: %s; %s" % (name, dumpfile, exc, undo),
                               "dumpfile") from None
            raise _amend(exc, "checkpoint of %s failed: " % name, "; " + undo) from None
        report["timings"]["pack_ms"] = _ms(time.monotonic() - began)
        if not leave_running:
            report["timings"]["cleanup_ms"] = report["timings"].get("cleanup_ms", 0.0) + \
                self.finish_stopped(name)["total_ms"]
            report["state"] = State.STOPPED
        remove_scratch(scratch)
        report["images_dir"] = dumpfile
        return report

    @staticmethod
    def criu_features(incremental: bool = False) -> Tuple[str, ...]:
        """The ``criu check --feature`` answers a dump (``incremental``: on a parent) or a restore uses."""
        return ("network_lock_nftables", "mem_dirty_track") if incremental else ("network_lock_nftables",)

    def _write_stopped(self, name: str, runtime: Runtime, images_dir: str,
                       server: Optional[subprocess.Popen]) -> None:
        data: Dict[str, Any] = {"images_dir": os.path.abspath(images_dir), "init_pid": runtime.init_pid,
                                "init_starttime": runtime.init_starttime}
        if server is not None:
            data["page_server"] = {"pid": server.pid, "starttime": process_starttime(server.pid)}
        atomic_write_json(self._stopped_path(name), data, durable=False)

    def _dump_lazy(self, name: str, runtime: Runtime, images_dir: str, args: List[str],
                   owner: Optional[int]) -> Tuple[subprocess.Popen, CriuRun]:
        """Start ``criu dump --lazy-pages``; return once its images are written and it serves the pages."""
        began = time.monotonic()
        self._write_stopped(name, runtime, images_dir, None)    # where the run dir is full, fail before CRIU runs
        server = self.criu.spawn("dump", images_dir, args, owner)
        # Recorded at once: whoever converges an interrupted migration finds (and ends) the page server.
        try:
            self._write_stopped(name, runtime, images_dir, server)
        except OSError:
            pass    # the caller holds the server; only a crash now would leave it unrecorded
        log = os.path.join(images_dir, "dump.log")
        follower = _LogFollower(log)
        deadline = began + LAZY_READY_TIMEOUT
        while not follower.says(LAZY_READY):
            if server.poll() is not None:
                errors = log_errors(log)
                raise CriuError("lazy checkpoint of %s failed (criu dump exited %d; log %s):\n%s"
                                % (name, server.returncode, log, "\n".join(errors)), log, errors)
            if time.monotonic() > deadline:
                server.kill()
                server.wait()
                errors = log_errors(log)
                raise CriuError("lazy checkpoint of %s: criu dump did not start its page server within %.0f s "
                                "(log %s):\n%s" % (name, LAZY_READY_TIMEOUT, log, "\n".join(errors)), log, errors)
            time.sleep(0.005)
        return server, CriuRun("dump", list(args), log, time.monotonic() - began, read_stats(images_dir, "dump"))

    def finish_lazy(self, server: Optional[subprocess.Popen], images_dir: str, timeout: float = 600.0) -> float:
        """Wait until a lazy dump's page server has handed out every page; the seconds it took."""
        began = time.monotonic()
        if server is None:
            return 0.0
        try:
            server.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise OvzError("the page server of the lazy migration did not finish within %.0f s" % timeout) from None
        finally:
            reclaim(images_dir)
        log = os.path.join(images_dir, "dump.log")
        if server.returncode != 0 or not _log_says(log, LAZY_DONE):
            errors = log_errors(log)
            raise CriuError("the lazy page transfer failed (criu dump exited %d; log %s):\n%s"
                            % (server.returncode, log, "\n".join(errors)), log, errors)
        return time.monotonic() - began

    def _ensure_running(self, runtime: Runtime, cgroups: ContainerCgroups) -> None:
        """After a failed dump CRIU thaws the container itself; make sure of it."""
        try:
            if runtime.alive() and cgroups.frozen():
                cgroups.thaw()
        except (OvzError, OSError):
            pass

    def _failed_after_freeze(self, name: str, exc: BaseException, step: str, images_dir: str, runtime: Runtime,
                             cgroups: ContainerCgroups, was_frozen: bool) -> BaseException:
        """The error to raise for a checkpoint that failed once the container was frozen: the container
        thawed first (unless its owner had frozen it), and the message says at which step, which path,
        and that the container runs on."""
        if not was_frozen:
            self._ensure_running(runtime, cgroups)
        if not isinstance(exc, Exception):
            return exc      # an interrupt: thawed, and passed on as it is
        if runtime.alive() and cgroups.frozen() and not was_frozen:
            state = "thawing the container failed too: it is FROZEN (ovzctl thaw %s)" % name
        elif was_frozen:
            state = "the container stays frozen, as it was"
        else:
            state = "the container runs on"
        if isinstance(exc, CriuError):
            notes = [hint for marker, hint in DUMP_HINTS if any(marker in line for line in exc.errors)]
            notes += [note for note in (_space_note(images_dir),) if note]
            text = "\n".join([str(exc)] + notes + [state[0].upper() + state[1:] + "."])
            return CriuError(text, exc.log, exc.errors, exc.param)
        if isinstance(exc, HostFileError):
            return _amend(exc, "checkpoint of %s failed: " % name, "; " + state)
        return _amend(exc, "checkpoint of %s failed (%s): " % (name, step), "; " + state)

    def _refuse_obstacles(self, name: str, runtime: Runtime) -> None:
        """Refuse, before anything is frozen, what CRIU would refuse in the container (each process or
        mount named), so that it never fails half-way for a reason known beforehand."""
        tree = process_tree(runtime.init_pid)
        problems = mount_obstacles(runtime.init_pid, tree) + process_obstacles(runtime.init_pid, tree)
        if problems:
            raise StateConflict("container %s cannot be checkpointed (nothing was frozen): %s%s"
                                % (name, "; ".join(problems[:8]), "; ..." if len(problems) > 8 else ""), "name")

    def check(self, name: str) -> None:
        """What a checkpoint of the running container checks before it freezes anything (check mode)."""
        _config, runtime = self._running(validate_name(name))
        self._refuse_obstacles(name, runtime)

    # -- after a dump with leave_stopped ---------------------------------------------------------
    def stopped_after_dump(self, name: str) -> bool:
        """True while the container's processes wait, stopped, after ``dump(leave_stopped=True)``."""
        data = read_json(self._stopped_path(validate_name(name))) or {}
        runtime = self.manager.runtime(name)
        return bool(data) and runtime is not None and runtime.alive() and \
            data.get("init_starttime") == runtime.init_starttime

    def resume_stopped(self, name: str) -> Dict[str, Any]:
        """Undo ``dump(leave_stopped=True)``: the container carries on here, its connections intact."""
        began = time.monotonic()
        with self.manager.lock(validate_name(name)):
            if not self.stopped_after_dump(name):
                raise StateConflict("container %s is not stopped after a checkpoint" % name, "name")
            _config, runtime = self._running(name)
            end_page_server(read_json(self._stopped_path(name)))
            released, locks = self._continue_stopped(runtime, self.manager.cgroups_for(runtime))
            os.unlink(self._stopped_path(name))
            warnings = []
            try:
                network.reclaim_addresses(network.load_runtime(network.runtime_path(self.manager.layout.run(name))))
            except Exception as exc:  # noqa: BLE001 - the container runs again; say what it may miss
                warnings.append("the host routes and proxy neighbours of %s may be missing: %s" % (name, exc))
        return {"sockets_released": released, "network_locks_removed": locks, "warnings": warnings,
                "total_ms": _ms(time.monotonic() - began)}

    def _undo_leave_stopped(self, name: str, runtime: Runtime, cgroups: ContainerCgroups,
                            server: Optional[subprocess.Popen]) -> None:
        """After a failed ``leave_stopped`` dump: no page server, no record of stopped tasks, and tasks that
        CRIU left stopped carry on."""
        if server is not None and server.poll() is None:
            server.kill()
            server.wait()
        stopped = []
        for pid in cgroups.pids():
            try:
                stopped.append(_status(pid)["State"][0] in ("T", "t"))
            except (OSError, KeyError, IndexError):
                continue
        try:
            if any(stopped):
                self._continue_stopped(runtime, cgroups)
        except OvzError:
            pass    # the record stays: resume_stopped tries again
        else:
            _unlink_quietly(self._stopped_path(name))

    @staticmethod
    def _continue_stopped(runtime: Runtime, cgroups: ContainerCgroups) -> Tuple[int, List[str]]:
        """Let the tasks a dump left stopped carry on: their connections out of repair mode, CRIU's network
        lock lifted, thawed and continued. (sockets released, locks removed)"""
        pids = cgroups.pids()
        released = release_tcp_repair(pids)
        locks = remove_criu_network_lock(runtime.init_pid)
        if cgroups.frozen():
            cgroups.thaw()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        return released, locks

    def finish_stopped(self, name: str) -> Dict[str, Any]:
        """Commit ``dump(leave_stopped=True)``: kill the stopped container and remove it from this host
        (processes, veth, mounts, loop device, cgroups), as ``stop`` does. Its sockets vanish silently."""
        began = time.monotonic()
        with self.manager.lock(validate_name(name)):
            config = self.manager.load(name)
            runtime = self.manager.runtime(name)
            end_page_server(read_json(self._stopped_path(name)))
            if runtime is not None and runtime.alive():
                cgroups = self.manager.cgroups_for(runtime)
                if cgroups.frozen():
                    cgroups.thaw()
                # A process with much memory can take long to exit on a loaded host (seen: > 10 s for 1 GiB).
                cgroups.kill_all(timeout=120.0)
            self.manager.tear_down_remains(config)
        return {"total_ms": _ms(time.monotonic() - began)}

    # -- restore --------------------------------------------------------------------------------
    def restore(self, name: str, images_dir: str, tcp_established: bool = True,
                lazy: bool = False) -> Dict[str, Any]:
        """Restore the stopped container from ``images_dir`` on this node.

        Mounts its storage, makes its cgroups (with its limits), restores the process tree,
        gives the network its host side and records the runtime state, so that status, stop,
        exec and ovz_info work as on a started container. A failed restore removes all of it
        again and leaves the images untouched. ``lazy``: the memory pages come on demand from
        the ``criu lazy-pages`` daemon the caller started on ``images_dir`` (userfaultfd).
        """
        validate_name(name)
        meta = load_meta(images_dir)
        if meta.get("name") != name:
            raise InvalidParameter("%s is a checkpoint of container %s, not of %s" % (images_dir, meta.get("name"), name),
                                   "name")
        timings: Dict[str, float] = {}
        began = time.monotonic()
        with self.manager.lock(name):
            config = self.manager.load(name)
            state = self.manager.status(name)
            if state in RUNNING_STATES:
                raise StateConflict("container %s is already running" % name, "name")
            suspend_dir = self.manager.layout.dump(name)
            own = os.path.realpath(images_dir) == os.path.realpath(suspend_dir)
            if state == State.SUSPENDED and not own:
                # Its suspended state would be left behind, stale, to come back at the next start.
                raise StateConflict("container %s is suspended (its memory is in %s): resume it instead of "
                                    "restoring another checkpoint" % (name, suspend_dir), "name")
            if meta.get("network") and not config.network:
                raise StateConflict("the checkpoint of %s has a network interface but its configuration has none"
                                    % name, "name")
            self.manager.tear_down_remains(config)
            try:
                with BringUp(self.manager, config, "restore") as bringup:
                    init_pid = self._restore_locked(config, meta, images_dir, tcp_established, timings, bringup, lazy)
                    leftover_locks = self._remove_leftover_lock(meta, init_pid, timings)
            except CriuError as exc:
                raise self._keep_failure_log(name, "restore", exc) from None
            if own:
                # It runs again: that checkpoint is history now, not a state to resume at the next start.
                _unlink_quietly(os.path.join(images_dir, META_FILE))
        stats_restore = read_stats(images_dir, "restore")
        timings["total_ms"] = _ms(time.monotonic() - began)
        return {"images_dir": images_dir, "init_pid": init_pid, "timings": timings,
                "network_locks_removed": leftover_locks,
                "restore_ms": round(stats_restore.get("restore_time", 0) / 1000.0, 1),
                "forking_ms": round(stats_restore.get("forking_time", 0) / 1000.0, 1),
                "pages_restored": stats_restore.get("pages_restored", 0)}

    def _keep_failure_log(self, name: str, action: str, exc: CriuError) -> CriuError:
        """Copy the failed run's log out of its images directory, which the caller may remove
        (a scratch copy, a migration's incoming images), and name the copy in the error."""
        if not exc.log or not os.path.isfile(exc.log):
            return exc
        kept = self.manager.layout.failure_log(name, action)
        try:
            with open(exc.log, "rb") as source, atomic_file(kept, 0o644, durable=False, binary=True) as copy:
                shutil.copyfileobj(source, copy)
        except OSError:
            return exc
        return CriuError(str(exc).replace(exc.log, kept), kept, exc.errors, exc.param)

    @staticmethod
    def _prepare_cgroup_tree(run_dir: str, cgroups: ContainerCgroups, meta: Dict[str, Any]) -> Optional[str]:
        """Make the container's own cgroups below its cgroup2 root as they were at the checkpoint,
        and write the CRIU action script that gives them back their controllers and limits; the
        script's path, or None when there is nothing to give back.

        CRIU 4.1 cannot restore these itself when the container's init delegated controllers
        (systemd does): the cgroups it makes lack ``memory.events`` and the like until its last step
        writes ``cgroup.subtree_control``, so the restore of systemd 257's inotify watch on one fails
        first; and that last step fails anyway on a cgroup whose controllers are already enabled
        (it writes back the newline it read). So the cgroups exist before CRIU runs, which then
        leaves them as it finds them, and the script fills them in at ``post-setup-namespaces``:
        after CRIU moved the init through the payload to root its cgroup namespace there (cgroup2
        refuses a process in a cgroup that delegates controllers), before the files are restored.
        """
        lines = []
        for root in meta.get("cgroups") or []:
            tree = root.get("tree") or {}
            if root.get("controllers") != "" or not isinstance(tree, dict):
                continue
            payload = os.path.join(cgroups.paths[root["key"]], PAYLOAD)
            available = read_file(os.path.join(payload, "cgroup.controllers")).split()
            writes = []
            # Top down: a cgroup offers its children only what its parent enabled for it.
            for rel in sorted(tree, key=lambda r: (r.count("/"), r)):
                if rel.startswith("/") or ".." in rel.split("/") or "\n" in rel or not isinstance(tree[rel], dict):
                    raise InvalidParameter("the checkpoint names a cgroup outside the container: %r" % rel, "name")
                directory = os.path.normpath(os.path.join(payload, rel))
                if rel != ".":
                    os.makedirs(directory, mode=0o755, exist_ok=True)
                values = tree[rel]
                wanted = str(values.get("cgroup.subtree_control", "")).split()
                missing = [c for c in wanted if c not in available]
                if missing:
                    raise StateConflict("the checkpoint's cgroup controllers %s are not available to the container "
                                        "on this node" % " ".join(missing), "name")
                if wanted:
                    lines.append("printf '%%s' %s > %s" % (
                        shlex.quote(" ".join("+" + c for c in wanted)),
                        shlex.quote(os.path.join(directory, "cgroup.subtree_control"))))
                for prop in CGROUP2_LIMITS:
                    if prop in values and CGROUP_VALUE_RE.fullmatch(str(values[prop])):
                        # A limit the kernel no longer takes is not worth a failed restore.
                        writes.append("printf '%%s' %s > %s || echo %s >&2" % (
                            shlex.quote(str(values[prop])), shlex.quote(os.path.join(directory, prop)),
                            shlex.quote("cannot restore %s of %s" % (prop, rel))))
            lines += writes
        if not lines:
            return None
        path = os.path.join(run_dir, "criu-action-script")
        text = "#!/bin/sh\n[ \"$CRTOOLS_SCRIPT_ACTION\" = post-setup-namespaces ] || exit 0\nset -e\n%s\n" % "\n".join(lines)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o700)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        return path

    def _remove_leftover_lock(self, meta: Dict[str, Any], init_pid: int, timings: Dict[str, float]) -> List[str]:
        """CRIU before 4 (seen with Debian 12's 3.17) can leave its network lock in the restored netns: the
        container runs, but every packet of its established connections is dropped. Removed here."""
        if not meta.get("network") or self.criu.version_tuple() >= UNLOCKS_AFTER_RESTORE:
            return []
        mark = time.monotonic()
        removed = remove_criu_network_lock(init_pid)
        timings["network_unlock_ms"] = _ms(time.monotonic() - mark)
        return removed

    def _mount_source(self, name: str, key: str, cgroups: ContainerCgroups, storage: Storage) -> str:
        """The host path on this node for an external mount of the checkpoint."""
        if key == CGROUP_KEY:
            payload = cgroups.payload_cgroup2(PAYLOAD)
            if payload is None:
                raise StateConflict("the checkpoint of %s binds its cgroup2 tree, and this host has no cgroup2 "
                                    "hierarchy" % name, "name")
            return payload
        if key == CONSOLE_KEY:
            return self.manager.layout.console(name)
        if key == GUEST_KEY:
            return self.manager.layout.guest(name)
        if key.startswith(NULL_PREFIX):
            return "/dev/null"
        if key.startswith(DEV_PREFIX):
            node = key[len(DEV_PREFIX):]
            if re.fullmatch(r"loop[0-9]+", node):
                # The second level's node of its own disk, on whichever loop device the image is now: the one
                # of the dump's number may be another container's disk.
                return storage.loop_device() or "/dev/null"
            return host_device_node(node)
        if key.startswith(LXCFS_PREFIX):
            rel = key[len(LXCFS_PREFIX):]
            lxcfs = find_lxcfs(self.manager.layout.data_dir)
            if lxcfs is None or rel not in LXCFS_FILES:
                raise StateConflict("the checkpoint of %s uses LXCFS (%s), which does not run on this host"
                                    % (name, rel), "name")
            return os.path.join(lxcfs, rel)
        raise InvalidParameter("unknown external mount %r in the checkpoint" % key, "dump_dir")

    def _restore_locked(self, config: ContainerConfig, meta: Dict[str, Any], images_dir: str, tcp_established: bool,
                        timings: Dict[str, float], bringup: BringUp, lazy: bool = False) -> int:
        name = config.name
        manager = self.manager
        mark = time.monotonic()
        backend = manager.backend
        if meta.get("cgroup_version") != backend.version:
            raise StateConflict("the checkpoint was made on a cgroup v%s host; this one is v%d"
                                % (meta.get("cgroup_version"), backend.version), "name")
        storage, cgroups = bringup.prepare()
        timings["prepare_ms"] = _ms(time.monotonic() - mark)
        stage: Optional[RestoreStage] = None
        if config.unprivileged:
            userns = manager.prepare_userns(config, storage, cgroups,
                                            [manager.layout.guest(name), manager.layout.console(name)])
            os.close(userns["userns_fd"])    # the idmapped tree keeps the mapping; CRIU makes the namespace
            block = userns["idmap"]
            unified = cgroups.payload_cgroup2(PAYLOAD)
            # Where the images hold the cgroups, CRIU puts the tasks there itself (--cgroup-root) and must
            # not sit in the payload: a cgroup2 cgroup with a process may not enable controllers below it.
            procs = [] if meta.get("cgroups_in_images", True) else \
                cgroups.payload_procs(PAYLOAD) + ([os.path.join(unified, "cgroup.procs")] if unified else [])
            stage = RestoreStage(storage.root, userns["root_tree_fd"], int(block["uid"]), procs)
            try:
                remap_userns(images_dir, int(block["uid"]), int(block.get("count", ID_COUNT)))
            except (OSError, ValueError) as exc:
                stage.close()
                raise InvalidParameter("the user namespace of the checkpoint in %s cannot be given this node's id "
                                       "block: %s" % (images_dir, exc), "dump_dir") from None
        try:
            return self._restore_staged(config, meta, images_dir, tcp_established, timings, bringup, lazy,
                                        storage, cgroups, stage)
        finally:
            if stage is not None:
                stage.close()

    def _restore_staged(self, config: ContainerConfig, meta: Dict[str, Any], images_dir: str, tcp_established: bool,
                        timings: Dict[str, float], bringup: BringUp, lazy: bool, storage: Storage,
                        cgroups: ContainerCgroups, stage: Optional[RestoreStage]) -> int:
        name = config.name
        manager = self.manager
        backend = manager.backend
        run_dir = manager.layout.run(name)
        node = manager.layout.node_id()
        args = ["-d", "--root", stage.root if stage else storage.root, "--manage-cgroups=soft", "--file-locks",
                "--link-remap", "--pidfile", os.path.join(run_dir, "restore.pid")]
        for root in meta.get("cgroups") or []:
            new = "/" + os.path.relpath(os.path.join(cgroups.paths[root["key"]], PAYLOAD),
                                        backend.mountpoint(root["key"])).strip("/")
            for controller in root["controllers"].split(","):
                args += ["--cgroup-root", "%s:%s" % (controller, new)]
        script = self._prepare_cgroup_tree(run_dir, cgroups, meta)
        if script:
            args += ["--action-script", script]
        if tcp_established and meta.get("tcp_established"):
            args.append("--tcp-established")
        if lazy:
            args.append("--lazy-pages")
        if self.criu.feature("network_lock_nftables"):
            args += ["--network-lock", "nftables"]
        for mount in meta.get("mounts") or []:
            source = self._mount_source(name, mount["key"], cgroups, storage)
            args += ["--external", "mnt[%s]:%s" % (mount["key"], stage.add(source) if stage else source)]
        # The console log as a start makes it (CRIU checks the mode of the file it inherits).
        console_fd = os.open(manager.layout.console(name), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                             0o600)
        try:
            os.fchmod(console_fd, 0o600)
            for key in meta.get("files") or []:
                args += ["--inherit-fd", "fd[%d]:%s" % (console_fd, key)]
            netconf = config.network or None
            if meta.get("network") and netconf:
                mark = time.monotonic()
                bringup.network()
                if stage is not None:
                    inner = network.precreate_pair(name, netconf, manager.layout.data_dir)
                    args += ["--external", "netdev[%s]:%s" % (meta["network"]["ifname"], inner)]
                else:
                    network.prepare_host_end(name, netconf, manager.layout.data_dir)
                    veth = "veth[%s]:%s" % (meta["network"]["ifname"], netconf["host_ifname"])
                    if netconf["netif_mode"] == "bridged":
                        veth += "@" + netconf["bridge"]
                    args += ["--external", veth]
                timings["host_end_ms"] = _ms(time.monotonic() - mark)
            mark = time.monotonic()
            run: CriuRun = self.criu.run("restore", images_dir, args, pass_fds=(console_fd,),
                                         what="restore of %s" % name, preexec=stage.enter if stage else None,
                                         lend_to=stage.owner if stage else None)
            timings["restore_ms"] = _ms(run.seconds)
        finally:
            os.close(console_fd)
        with open(os.path.join(run_dir, "restore.pid")) as handle:
            init_pid = int(handle.read().strip())
        os.unlink(os.path.join(run_dir, "restore.pid"))
        if script:
            os.unlink(script)
        bringup.record(init_pid, cgroups, run.log)
        if meta.get("frozen") is False and cgroups.frozen():
            cgroups.thaw()   # the dump froze it to check its tree; CRIU restores the freezer state it saw
        # The second-level quota's block node in the restored /dev names the loop device of the dump.
        ovz_quota.refresh_rootfs_devices(config, storage, init_pid)
        if meta.get("network") and config.network:
            mark = time.monotonic()
            network.adopt_network(name, config.network, init_pid, manager.layout.data_dir,
                                  network.runtime_path(run_dir), node=node)
            timings["network_ms"] = _ms(time.monotonic() - mark)
        return init_pid

    # -- suspend / resume (vzctl suspend/resume) -----------------------------------------------------
    def suspended(self, name: str) -> bool:
        """Stopped, with a checkpoint in ``<data_dir>/dump/<name>`` to resume from."""
        return self.manager.status(name) == State.SUSPENDED

    def suspend(self, name: str, tcp_established: bool = True) -> Dict[str, Any]:
        """Checkpoint into ``<data_dir>/dump/<name>`` and stop."""
        return self.dump(name, self.manager.layout.dump(validate_name(name)), tcp_established=tcp_established)

    def resume(self, name: str, tcp_established: bool = True) -> Dict[str, Any]:
        """Restore from ``<data_dir>/dump/<name>``; the dump is removed once the container runs again."""
        directory = self.manager.layout.dump(validate_name(name))
        if not is_images_dir(directory):
            raise StateConflict("container %s has no suspended state in %s" % (name, directory), "name")
        try:
            result = self.restore(name, directory, tcp_established=tcp_established)
        except Exception as exc:
            if self.manager.status(name) != State.SUSPENDED:
                raise
            raise _amend(exc, "", "\nThe suspended state of %s is kept in %s: start or resume it again once the "
                                  "cause is fixed." % (name, directory)) from None
        try:
            remove_tree(directory)
        except OSError as exc:
            result.setdefault("warnings", []).append("the dump %s was not removed: %s" % (directory, exc))
        return result


# More cgroups than this below one container's root are refused at checkpoint: each is read.
MAX_CGROUPS = 10000
# What the container's init may have set on its own cgroups (systemd's MemoryMax=, TasksMax=,
# CPUWeight=...), given back at restore with their controllers (_prepare_cgroup_tree).
CGROUP2_LIMITS = ("memory.min", "memory.low", "memory.high", "memory.max", "memory.swap.max", "pids.max",
                  "cpu.weight", "cpu.max", "io.weight")
CGROUP_VALUE_RE = re.compile(r"[0-9a-z .:=]{1,64}")


def read_cgroup_tree(payload: str) -> Dict[str, Dict[str, str]]:
    """Each cgroup below ``payload`` (and itself, as ``.``), by its path relative to ``payload``:
    its ``cgroup.subtree_control`` and the CGROUP2_LIMITS it has files for."""
    result: Dict[str, Dict[str, str]] = {}
    for directory, dirs, _files in os.walk(payload):
        if len(result) >= MAX_CGROUPS:
            raise StateConflict("the container has more than %d cgroups below %s; not checkpointed"
                                % (MAX_CGROUPS, payload), "name")
        dirs.sort()
        values = {}
        for prop in ("cgroup.subtree_control",) + CGROUP2_LIMITS:
            try:
                values[prop] = read_file(os.path.join(directory, prop))
            except OSError:
                continue
        result[os.path.relpath(directory, payload)] = values
    return result


def host_device_node(name: str) -> str:
    """The host's ``/dev/<name>`` for a device node bound into a checkpoint's container: a character or
    block device, never another file of the host."""
    path = os.path.normpath(os.path.join("/dev", name))
    try:
        mode = os.stat(path).st_mode if path.startswith("/dev/") else 0
    except OSError:
        mode = 0
    if not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)):
        raise InvalidParameter("the checkpoint binds the device node /dev/%s, which this host does not have" % name,
                               "dump_dir")
    return path


def scratch_dir(manager: ContainerManager, name: str, purpose: str) -> str:
    """A fresh private directory under ``<data_dir>/dump`` for unpacking or packing a dump archive."""
    base = os.path.join(manager.layout.data_dir, "dump")
    os.makedirs(base, mode=0o700, exist_ok=True)
    return tempfile.mkdtemp(prefix=".%s.%s." % (name, purpose), dir=base)


def remove_scratch(path: str) -> None:
    """Remove a ``scratch_dir``, and ``<data_dir>/dump`` too if that leaves it empty."""
    remove_tree(path)
    try:
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass


def remove_tree(path: str) -> None:
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
