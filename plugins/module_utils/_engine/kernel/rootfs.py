# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""The filesystem a container's init sees, built inside its new mount namespace.

Runs in the container's first process, after ``unshare`` and before ``exec``
of init: it may only use what is already imported, and it reports failures
by raising ``OSError`` for the caller to send back over the error pipe.
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from . import namespaces as ns
from .mounts import parse_mountinfo

# (name, type, major, minor, mode). Everything else under /dev is absent, and
# the device cgroup refuses to open anything not listed in DEVICE_ALLOW.
DEVICE_NODES: Tuple[Tuple[str, str, int, int, int], ...] = (
    ("null", "c", 1, 3, 0o666),
    ("zero", "c", 1, 5, 0o666),
    ("full", "c", 1, 7, 0o666),
    ("random", "c", 1, 8, 0o666),
    ("urandom", "c", 1, 9, 0o666),
    ("tty", "c", 5, 0, 0o666),
)

# Device cgroup rules: the nodes above, the pty multiplexer and slaves of the
# container's own devpts, and mknod (but not open) of anything else.
DEVICE_ALLOW: Tuple[str, ...] = (
    "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
    "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm",
    "c *:* m", "b *:* m",
)

NOSUID_NODEV_NOEXEC = ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC

# Read-only views over the parts of /proc that act on the whole host.
PROC_READ_ONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")
PROC_MASKED = ("kcore", "kmsg", "timer_list", "keys", "sched_debug")


@dataclass
class RootfsSpec:
    root: str                       # host path of the mounted root filesystem
    console: Optional[str] = None   # host file bound on /dev/console
    guest_dir: Optional[str] = None  # host dir bound on /run/ovz (boot marker)
    hostname: str = ""
    extra_binds: List[Tuple[str, str, bool]] = field(default_factory=list)
    lxcfs: Optional[str] = None     # a running LXCFS's mount point: its /proc and /sys views are bound in
    beancounters: Optional[str] = None  # a running ovz-bcd's file for this container, bound over the snapshot
    devices: List[Tuple[str, str, int, int, int]] = field(default_factory=list)  # extra nodes, as DEVICE_NODES
    userns: bool = False            # unprivileged: no mknod in a user namespace, the host's nodes are bound


def _mkdir(path: str, mode: int = 0o755) -> None:
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass


def _bind(source: str, target: str, read_only: bool = False, recursive: bool = False) -> None:
    ns.mount(source, target, None, ns.MS_BIND | (ns.MS_REC if recursive else 0))
    if read_only:
        ns.mount(None, target, None, ns.MS_BIND | ns.MS_REMOUNT | ns.MS_RDONLY | ns.MS_NOSUID | ns.MS_NODEV)


def _safe_join(root: str, rel: str) -> str:
    """``root``/``rel`` with no symlink on the way: the container owns the tree."""
    path = root
    for part in rel.strip("/").split("/"):
        path = os.path.join(path, part)
        if os.path.islink(path):
            raise OSError(40, "refusing to follow a symlink placed by the container", path)
    return path


def setup_proc(root: str) -> None:
    proc = _safe_join(root, "proc")
    _mkdir(proc)
    ns.mount("proc", proc, "proc", NOSUID_NODEV_NOEXEC)
    for rel in PROC_READ_ONLY:
        path = os.path.join(proc, rel)
        if os.path.exists(path):
            _bind(path, path, read_only=True)
    # net.* sysctls belong to the container's own network namespace.
    net = os.path.join(proc, "sys", "net")
    ns.mount(net, net, None, ns.MS_BIND)
    ns.mount(None, net, None, ns.MS_BIND | ns.MS_REMOUNT | ns.MS_NOSUID | ns.MS_NODEV)
    for rel in PROC_MASKED:
        path = os.path.join(proc, rel)
        if os.path.exists(path):
            ns.mount("/dev/null", path, None, ns.MS_BIND)


# sysfs directories hidden under an empty read-only tmpfs. Virtual block devices are the host's loop
# devices (and dm, nbd, zram, md): each loop's ``loop/backing_file`` names an image path on the host,
# every container's. /sys/block, /sys/class/block and /sys/dev/block only link into this directory.
SYS_MASKED = ("devices/virtual/block",)
VIRTUAL_BLOCK = "/sys/devices/virtual/block"
LOOP_CONTROL = "/dev/loop-control"
LOOP_CTL_GET_FREE = 0x4C82


def ensure_virtual_block_dir() -> bool:
    """Make the host's ``/sys/devices/virtual/block`` exist before a start or a restore.

    Block devices are not namespaced: the directory appears in every sysfs with the host's first
    virtual block device, loop or other. A container started before that would get no mask over
    it and read the backing files of loop devices made later; the restore of a container dumped
    with the mask needs the directory to mount it again (CRIU: "Can't stat mountpoint"). Asking
    the loop driver for a free device loads it and makes one if there is none.
    """
    if os.path.isdir(VIRTUAL_BLOCK):
        return True
    try:
        fd = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return os.path.isdir(VIRTUAL_BLOCK)
    try:
        fcntl.ioctl(fd, LOOP_CTL_GET_FREE)
    except OSError:
        pass
    finally:
        os.close(fd)
    return os.path.isdir(VIRTUAL_BLOCK)


def setup_sys(root: str) -> None:
    sys_dir = _safe_join(root, "sys")
    _mkdir(sys_dir)
    ns.mount("sysfs", sys_dir, "sysfs", ns.MS_RDONLY | NOSUID_NODEV_NOEXEC)
    for rel in SYS_MASKED:
        target = os.path.join(sys_dir, rel)
        if os.path.isdir(target):
            ns.mount("ovz-mask", target, "tmpfs", ns.MS_RDONLY | NOSUID_NODEV_NOEXEC, "size=4k,mode=555")
    cgroup_dir = os.path.join(sys_dir, "fs", "cgroup")
    if os.path.isdir(cgroup_dir):
        # The cgroup namespace makes the container's own cgroup the root of this
        # mount; systemd inside runs in unified mode on it.
        try:
            ns.mount("cgroup2", cgroup_dir, "cgroup2", NOSUID_NODEV_NOEXEC, "nsdelegate")
        except OSError:
            ns.mount("cgroup2", cgroup_dir, "cgroup2", NOSUID_NODEV_NOEXEC)


# What LXCFS (issue 5) shows per container: memory and swap from its memory cgroup, CPUs from its cpuset.
LXCFS_FILES = ("proc/meminfo", "proc/cpuinfo", "proc/stat", "proc/swaps", "proc/uptime", "proc/diskstats",
               "proc/loadavg", "proc/slabinfo", "sys/devices/system/cpu/online")
LXCFS_DIRS = ("/var/lib/lxcfs",)


def find_lxcfs(data_dir: str) -> Optional[str]:
    """The mount point of a running LXCFS for this node (``<data_dir>/lxcfs``) or the host (``/var/lib/lxcfs``).

    Only a live ``fuse.lxcfs`` mount counts: without LXCFS the container keeps the kernel's own files.
    """
    wanted = [os.path.join(data_dir, "lxcfs")] + list(LXCFS_DIRS)
    mounts = {point for point, fstype in mount_points() if fstype == "fuse.lxcfs"}
    for path in wanted:
        if path in mounts and os.path.isfile(os.path.join(path, "proc", "meminfo")):
            return path
    return None


def mount_points(mountinfo: str = "/proc/self/mountinfo") -> List[Tuple[str, str]]:
    """(mount point, filesystem type) of every mount in a mountinfo file, bottom to top; [] if unreadable."""
    try:
        with open(mountinfo) as handle:
            return [(mount.mount_point, mount.fstype) for mount in parse_mountinfo(handle.read())]
    except OSError:
        return []


# The live beancounters view (bcd.py): a FUSE file per container under <data_dir>/bcd,
# bound over the snapshot file root inside reads.
BCD_FSTYPE = "fuse.ovz-bcd"
BCD_MOUNT = "bcd"
GUEST_BEANCOUNTERS = "/run/ovz/user_beancounters"


def find_bcd(data_dir: str, name: str) -> Optional[str]:
    """This container's file of a live ``ovz-bcd`` at ``<data_dir>/bcd``, or None (it keeps the snapshot)."""
    mountpoint = os.path.join(data_dir, BCD_MOUNT)
    if not any(point == mountpoint and fstype == BCD_FSTYPE for point, fstype in mount_points()):
        return None
    return os.path.join(mountpoint, name)


def setup_lxcfs(root: str, lxcfs: str) -> None:
    """Bind LXCFS's per-container views over the container's /proc and /sys files."""
    for rel in LXCFS_FILES:
        source = os.path.join(lxcfs, rel)
        target = os.path.join(root, rel)
        if os.path.isfile(source) and os.path.exists(target):
            ns.mount(source, target, None, ns.MS_BIND)


def _bind_node(name: str, path: str) -> None:
    """An unprivileged container's device node: the host's own ``/dev/<name>`` bound on an empty file."""
    source = os.path.join("/dev", name)
    if not os.path.exists(source):
        return
    with open(path, "w"):
        pass
    ns.mount(source, path, None, ns.MS_BIND)


def setup_dev(root: str, console: Optional[str], devices: Tuple[Tuple[str, str, int, int, int], ...] = (),
              bind_nodes: bool = False) -> None:
    dev = _safe_join(root, "dev")
    _mkdir(dev)
    ns.mount("ovz-dev", dev, "tmpfs", ns.MS_NOSUID | ns.MS_NOEXEC, "mode=755,size=65536k,nr_inodes=4096")
    for name, kind, major, minor, mode in DEVICE_NODES + tuple(devices):
        path = os.path.join(dev, name)
        if bind_nodes:
            _bind_node(name, path)
            continue
        os.mknod(path, mode | (0o020000 if kind == "c" else 0o060000), os.makedev(major, minor))
        os.chmod(path, mode)
    for sub in ("pts", "shm", "mqueue"):
        _mkdir(os.path.join(dev, sub))
    ns.mount("devpts", os.path.join(dev, "pts"), "devpts", ns.MS_NOSUID | ns.MS_NOEXEC,
             "newinstance,ptmxmode=0666,mode=0620,gid=5")
    os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    ns.mount("shm", os.path.join(dev, "shm"), "tmpfs", NOSUID_NODEV_NOEXEC, "mode=1777")
    try:
        ns.mount("mqueue", os.path.join(dev, "mqueue"), "mqueue", NOSUID_NODEV_NOEXEC)
    except OSError:
        pass
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, os.path.join(dev, name))
    if console:
        path = os.path.join(dev, "console")
        with open(path, "w"):
            pass
        ns.mount(console, path, None, ns.MS_BIND)


def setup_run(root: str, guest_dir: Optional[str], beancounters: Optional[str] = None) -> None:
    run_dir = os.path.join(root, "run")
    if not os.path.isdir(run_dir) or os.path.islink(run_dir):
        return
    ns.mount("ovz-run", run_dir, "tmpfs", ns.MS_NOSUID | ns.MS_NODEV, "mode=755,size=20%")
    _mkdir(os.path.join(run_dir, "lock"), 0o1777)
    if guest_dir:
        target = os.path.join(run_dir, "ovz")
        _mkdir(target)
        ns.mount(guest_dir, target, None, ns.MS_BIND)
        ns.mount(None, target, None, ns.MS_BIND | ns.MS_REMOUNT | ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC)
        if beancounters:
            setup_live_beancounters(os.path.join(target, "user_beancounters"), beancounters)


def setup_live_beancounters(target: str, source: str) -> None:
    """The live view over the snapshot file; a daemon that died meanwhile leaves the snapshot, never a failed start."""
    try:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o400))
        ns.mount(source, target, None, ns.MS_BIND)
    except OSError:
        pass


STAGE = "/tmp"   # world-searchable on every host; hidden by a tmpfs in a private mount namespace


def _stage_bind(source: int, target: str) -> str:
    """Bind what the O_PATH descriptor ``source`` names on ``target``. Through the descriptor, not the path:
    the staging tmpfs may hide the path (a data dir under /tmp)."""
    if stat.S_ISDIR(os.fstat(source).st_mode):
        _mkdir(target)
    else:
        with open(target, "w"):
            pass
    ns.mount("/proc/self/fd/%d" % source, target, None, ns.MS_BIND | ns.MS_REC)
    return target


def stage_for_userns(spec: RootfsSpec, root_tree_fd: Optional[int]) -> RootfsSpec:
    """Unprivileged: what the container's root needs from the host, where it can reach it.

    Runs as root on the host in a private mount namespace, before joining the container's user
    namespace. Host paths under ``data_dir`` may sit below directories only the host's root may
    search (mode 0700); the container's root is another user on the host. So everything is bound
    on a tmpfs over ``/tmp`` of this namespace (never the host's): the idmapped root mount, the
    boot-marker directory, the console, the LXCFS views and extra binds. Each source is opened
    before that tmpfs covers /tmp, so a data dir anywhere (under /tmp too) works.
    """
    sources: Dict[str, int] = {}
    try:
        wanted = [("root", spec.root if root_tree_fd is None else None), ("console", spec.console),
                  ("guest", spec.guest_dir), ("lxcfs", spec.lxcfs)]
        wanted += [("bind%d" % index, source) for index, (source, _rel, _ro) in enumerate(spec.extra_binds)]
        for key, path in wanted:
            if path:
                sources[key] = os.open(path, os.O_PATH | os.O_CLOEXEC)
        ns.mount("ovz-stage", STAGE, "tmpfs", ns.MS_NOSUID | ns.MS_NODEV, "mode=755,size=64k")
        staged = RootfsSpec(root=os.path.join(STAGE, "root"), hostname=spec.hostname, devices=list(spec.devices),
                            userns=True)
        _mkdir(staged.root)
        if root_tree_fd is not None:
            ns.move_mount(root_tree_fd, staged.root)
        else:
            _stage_bind(sources["root"], staged.root)
        if spec.console:
            staged.console = _stage_bind(sources["console"], os.path.join(STAGE, "console"))
        if spec.guest_dir:
            staged.guest_dir = _stage_bind(sources["guest"], os.path.join(STAGE, "guest"))
        if spec.lxcfs:
            staged.lxcfs = _stage_bind(sources["lxcfs"], os.path.join(STAGE, "lxcfs"))
        # No live beancounters view (bcd.py): its files are the host root's, unreadable to this root; the snapshot stays.
        for index, (_source, rel, read_only) in enumerate(spec.extra_binds):
            key = "bind%d" % index
            staged.extra_binds.append((_stage_bind(sources[key], os.path.join(STAGE, key)), rel, read_only))
        return staged
    finally:
        for fd in sources.values():
            os.close(fd)


RESTORE_STAGE = "/run/ovz-stage"   # an empty directory on the host; a tmpfs over it in each restore's own mount namespace


class RestoreStage:
    """What CRIU's restore of an unprivileged container binds into it, where its restored root task reaches it.

    That task is the container's root, another user on the host, and mounts the external sources
    (console, LXCFS views, device nodes) itself: host paths under ``data_dir`` may sit below
    directories only host root may search. So, as ``stage_for_userns`` does for a start, CRIU runs in
    a private mount namespace (``enter``, before it starts) whose tmpfs over ``RESTORE_STAGE`` holds
    a bind of each source and the container's root (its idmapped tree, or its directory).
    """

    def __init__(self, root: str, root_tree_fd: Optional[int], owner: int, cgroup_procs: Sequence[str]) -> None:
        """``root_tree_fd``: the idmapped tree of ``root``, which this takes over (and closes); ``owner``:
        the host user of the container's root; ``cgroup_procs``: the container's payload cgroups (their
        ``tasks`` or ``cgroup.procs`` files), where CRIU starts. A dump made as the container's owner
        (``criu.dump_owner``) holds no cgroups, and the restored tasks stay where CRIU runs."""
        self.root = os.path.join(RESTORE_STAGE, "root")
        self.owner = owner
        self.cgroup_procs = list(cgroup_procs)
        self._tree_fd = root_tree_fd
        self._sources: List[Tuple[str, str]] = [] if root_tree_fd is not None else [(root, self.root)]
        try:
            os.makedirs(RESTORE_STAGE, mode=0o755, exist_ok=True)
        except BaseException:
            self.close()
            raise

    def add(self, path: str) -> str:
        """Stage the host file or directory ``path``; the path CRIU is given for it."""
        target = os.path.join(RESTORE_STAGE, "m%d" % len(self._sources))
        self._sources.append((path, target))
        return target

    def enter(self) -> None:  # pragma: no cover - runs in CRIU's child before it starts
        for procs in self.cgroup_procs:
            with open(procs, "w") as handle:
                handle.write("0")
        # Binds only from this namespace: a descriptor opened before the unshare names a mount of the
        # host's, which the kernel refuses to bind here. RESTORE_STAGE hides none of the sources.
        ns.unshare(ns.CLONE_NEWNS)
        ns.mount(None, "/", None, ns.MS_REC | ns.MS_SLAVE)
        ns.mount("ovz-stage", RESTORE_STAGE, "tmpfs", ns.MS_NOSUID | ns.MS_NODEV, "mode=755,size=64k")
        if self._tree_fd is not None:
            _mkdir(self.root)
            ns.move_mount(self._tree_fd, self.root)
        for source, target in self._sources:
            fd = os.open(source, os.O_PATH | os.O_CLOEXEC)
            try:
                _stage_bind(fd, target)
            finally:
                os.close(fd)

    def close(self) -> None:
        if self._tree_fd is not None:
            os.close(self._tree_fd)
        self._tree_fd = None


def enter_rootfs(spec: RootfsSpec) -> None:
    """Build the container's mount tree on ``spec.root`` and pivot into it."""
    # Nothing mounted from here on may propagate back to the host.
    ns.mount(None, "/", None, ns.MS_REC | ns.MS_SLAVE)
    root = spec.root
    ns.mount(root, root, None, ns.MS_BIND | ns.MS_REC)
    setup_proc(root)
    setup_sys(root)
    if spec.lxcfs:
        setup_lxcfs(root, spec.lxcfs)
    setup_dev(root, spec.console, tuple(spec.devices), bind_nodes=spec.userns)
    setup_run(root, spec.guest_dir, spec.beancounters)
    for source, rel, read_only in spec.extra_binds:
        target = _safe_join(root, rel)
        _mkdir(target)
        _bind(source, target, read_only=read_only, recursive=True)
    os.chdir(root)
    old = ".ovz-oldroot"
    # pivot_root(".", ".") stacks the old root on top of the new one, so no
    # directory needs to be created inside the container's tree.
    ns.pivot_root(".", ".")
    ns.umount(".", ns.MNT_DETACH)
    del old
    os.chdir("/")
    if spec.userns:
        # What it binds from the host (console, /run/ovz, device nodes, LXCFS views) would stay slaves of
        # the host's peer groups, shared on systemd hosts: host mount events would reach it, and CRIU would
        # have to put a restored copy back into those groups, from sources staged where the host's groups
        # are not (CRIU 3.17 then fails with "Failed to copy sharing").
        ns.mount(None, "/", None, ns.MS_REC | ns.MS_PRIVATE)
    if spec.hostname:
        socket.sethostname(spec.hostname)
        write_hostname(spec.hostname)


def write_hostname(hostname: str) -> None:
    """Persist the hostname for inits that set it themselves (systemd reads /etc/hostname)."""
    path = "/etc/hostname"
    try:
        if os.path.islink(path) or not os.path.isdir("/etc"):
            return
        with open(path, "w") as handle:
            handle.write(hostname + "\n")
    except OSError:
        pass
