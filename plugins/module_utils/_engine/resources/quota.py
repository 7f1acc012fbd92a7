# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Two-level disk quota (OpenVZ's vzquota and second-level quota), on both storage layouts.

First level, what the host gives a container:

``image`` layout
    ``diskspace`` (hard) *is* the size of the container's ext4 filesystem. Raising it
    on a running container grows the image file, refreshes the loop device's capacity
    (``LOOP_SET_CAPACITY``) and grows the mounted filesystem online (``resize2fs``).
    Shrinking needs the filesystem unmounted, so the container stopped. ``diskinodes``
    is the inode count ``mkfs -N`` gave it; new block groups bring inodes in the same
    proportion when it grows. There is no mechanism for a soft limit: a soft value
    below the hard one is stored and reported as not enforced.

``directory`` layout
    The private directory carries a project ID (persisted in the configuration) with
    the PROJINHERIT flag on an XFS or ext4 filesystem mounted with project quota; block
    and inode soft and hard limits and the grace time are the kernel's project quota,
    all changed live.

Second level (``quotaugidlimit`` > 0, image layout): the container's ext4 carries the
``quota`` feature and is mounted ``usrquota,grpquota``; its root uses ``quota``,
``setquota`` and ``repquota`` inside. Those tools find the filesystem's device in
``/proc/mounts`` and hand its path to ``quotactl(2)``, which only looks the node up (it
never opens it), so the container gets that one block node in its ``/dev`` and the
device cgroup grants no read or write on it.

The ``ovz_quota`` operation that plans and carries out a change for one container
under its lock is ``ops/quota.py``.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import gzip
import math
import os
import platform
import re
import stat
import struct
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..base.errors import InvalidParameter, KernelUnsupported, OvzError, StateConflict
from ..base.sizes import Pair, parse_pair
from ..kernel.mounts import read_mountinfo
from ..kernel.namespaces import load_libc
from ..kernel.storage import LOOP_SET_CAPACITY, Storage, drop_cached_pages, loop_direct_io, run
from ..node.config import ContainerConfig

# quotactl(2)
USRQUOTA, GRPQUOTA, PRJQUOTA = 0, 1, 2
Q_SYNC = 0x800001
Q_GETINFO = 0x800005
Q_SETINFO = 0x800006
Q_GETQUOTA = 0x800007
Q_SETQUOTA = 0x800008
Q_GETNEXTQUOTA = 0x800009
QIF_BLIMITS, QIF_SPACE, QIF_ILIMITS, QIF_INODES = 1, 2, 4, 8
QIF_LIMITS = QIF_BLIMITS | QIF_ILIMITS
IIF_BGRACE, IIF_IGRACE = 1, 2
QUOTA_BLOCK = 1024                      # quotactl block limits are in KiB
SYS_QUOTACTL_FD = {"x86_64": 443, "aarch64": 443, "ppc64le": 443, "s390x": 443}

# FS_IOC_FSGETXATTR / FS_IOC_FSSETXATTR (struct fsxattr, 28 bytes)
FS_IOC_FSGETXATTR = 0x801C581F
FS_IOC_FSSETXATTR = 0x401C5820
FSXATTR = struct.Struct("=IIIII8s")
FS_XFLAG_PROJINHERIT = 0x200

DEFAULT_QUOTATIME = 7 * 24 * 3600       # the kernel's default grace (7 days)
QUOTA_MOUNT_OPTIONS = "usrquota,grpquota"
TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class IfDqblk(ctypes.Structure):
    _fields_ = [("dqb_bhardlimit", ctypes.c_uint64), ("dqb_bsoftlimit", ctypes.c_uint64),
                ("dqb_curspace", ctypes.c_uint64), ("dqb_ihardlimit", ctypes.c_uint64),
                ("dqb_isoftlimit", ctypes.c_uint64), ("dqb_curinodes", ctypes.c_uint64),
                ("dqb_btime", ctypes.c_uint64), ("dqb_itime", ctypes.c_uint64), ("dqb_valid", ctypes.c_uint32)]


class IfNextDqblk(ctypes.Structure):
    _fields_ = IfDqblk._fields_ + [("dqb_id", ctypes.c_uint32)]


class IfDqinfo(ctypes.Structure):
    _fields_ = [("dqi_bgrace", ctypes.c_uint64), ("dqi_igrace", ctypes.c_uint64),
                ("dqi_flags", ctypes.c_uint32), ("dqi_valid", ctypes.c_uint32)]


_libc = load_libc()
_libc.quotactl.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
_libc.syscall.restype = ctypes.c_long


def qcmd(cmd: int, qtype: int) -> int:
    return (cmd << 8) | (qtype & 0xFF)


# -- the kernel's quota support --------------------------------------------------------
def kernel_config() -> Dict[str, str]:
    """The running kernel's build configuration (``/proc/config.gz`` or ``/boot/config-*``), or {}."""
    text = ""
    try:
        with gzip.open("/proc/config.gz", "rt") as handle:
            text = handle.read()
    except OSError:
        try:
            with open("/boot/config-%s" % platform.release()) as handle:
                text = handle.read()
        except OSError:
            return {}
    config: Dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, _sep, value = line.partition("=")
            config[key] = value
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            config[line[2:-len(" is not set")]] = "n"
    return config


def _module_available(name: str) -> bool:
    base = "/lib/modules/%s" % platform.release()
    try:
        with open(os.path.join(base, "modules.builtin")) as handle:
            if any(line.strip().endswith("/%s.ko" % name) for line in handle):
                return True
        with open(os.path.join(base, "modules.dep")) as handle:
            return any(line.split(":")[0].endswith("/%s.ko" % name) or
                       "/%s.ko." % name in line.split(":")[0] for line in handle)
    except OSError:
        return False


def missing_kernel_features(fstype: str) -> List[str]:
    """The kernel options quota on ``fstype`` needs that this kernel lacks (empty: supported).

    Read from the kernel's configuration where it is published; otherwise from
    ``/proc/sys/fs/quota`` (CONFIG_QUOTA) and the module tree (quota_v2, xfs).
    """
    config = kernel_config()
    wanted = ["CONFIG_QUOTA", "CONFIG_QUOTACTL"]
    wanted += ["CONFIG_XFS_QUOTA"] if fstype == "xfs" else ["CONFIG_QFMT_V2"]
    if config:
        return [key for key in wanted if config.get(key, "n") not in ("y", "m")]
    missing = []
    if not os.path.isdir("/proc/sys/fs/quota"):
        missing += ["CONFIG_QUOTA", "CONFIG_QUOTACTL"]
    if fstype != "xfs" and not _module_available("quota_v2"):
        missing.append("CONFIG_QFMT_V2")
    return missing


def require_kernel_quota(fstype: str, param: str, what: str) -> None:
    missing = missing_kernel_features(fstype)
    if missing:
        raise KernelUnsupported(
            "%s needs disk quota support for %s, which this kernel (%s) lacks: %s not set"
            % (what, fstype, platform.release(), ", ".join(missing)), param)


# -- quotactl --------------------------------------------------------------------------
def _quotactl(path: str, cmd: int, qid: int, buf: Any) -> None:
    """quotactl_fd(2) on the filesystem holding ``path``; quotactl(2) with its device as a fallback."""
    number = SYS_QUOTACTL_FD.get(platform.machine())
    if number is not None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECTORY)
        try:
            result = _libc.syscall(number, fd, ctypes.c_uint(cmd), ctypes.c_int(qid), ctypes.byref(buf))
        finally:
            os.close(fd)
        if result == 0:
            return
        err = ctypes.get_errno()
        if err != errno.ENOSYS:
            raise OSError(err, os.strerror(err), path)
    device = filesystem_of(path)["source"]
    if _libc.quotactl(cmd, os.fsencode(device), qid, ctypes.byref(buf)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), device)


def get_quota(path: str, qtype: int, qid: int) -> Dict[str, Any]:
    """Usage and limits of one ID; an ID the filesystem has no record of (XFS: ENOENT) has none."""
    buf = IfDqblk()
    try:
        _quotactl(path, qcmd(Q_GETQUOTA, qtype), qid, buf)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ESRCH):
            raise
        buf = IfDqblk()
    return dqblk_dict(buf)


def dqblk_dict(buf: Any) -> Dict[str, Any]:
    now = time.time()

    def grace(expires: int, used: int, soft: int) -> Dict[str, Any]:
        if not soft or used <= soft:
            return {"state": "none", "expires": None}
        if not expires:
            return {"state": "over soft limit", "expires": None}
        return {"state": "expired" if expires <= now else "running", "expires": int(expires)}
    soft_bytes = buf.dqb_bsoftlimit * QUOTA_BLOCK
    return {
        "bytes_used": int(buf.dqb_curspace),
        "bytes_soft": soft_bytes or None,
        "bytes_hard": buf.dqb_bhardlimit * QUOTA_BLOCK or None,
        "inodes_used": int(buf.dqb_curinodes),
        "inodes_soft": int(buf.dqb_isoftlimit) or None,
        "inodes_hard": int(buf.dqb_ihardlimit) or None,
        "grace_blocks": grace(buf.dqb_btime, buf.dqb_curspace, soft_bytes),
        "grace_inodes": grace(buf.dqb_itime, buf.dqb_curinodes, buf.dqb_isoftlimit),
    }


def set_quota(path: str, qtype: int, qid: int, blocks: Pair, inodes: Pair) -> None:
    buf = IfDqblk()
    buf.dqb_bsoftlimit = kib(blocks[0])
    buf.dqb_bhardlimit = kib(blocks[1])
    buf.dqb_isoftlimit = inodes[0] or 0
    buf.dqb_ihardlimit = inodes[1] or 0
    buf.dqb_valid = QIF_LIMITS
    _quotactl(path, qcmd(Q_SETQUOTA, qtype), qid, buf)


def kib(value: Optional[int]) -> int:
    return 0 if not value else max(1, (value + QUOTA_BLOCK - 1) // QUOTA_BLOCK)


def get_grace(path: str, qtype: int) -> int:
    buf = IfDqinfo()
    _quotactl(path, qcmd(Q_GETINFO, qtype), 0, buf)
    return int(buf.dqi_bgrace)


def set_grace(path: str, qtype: int, seconds: int) -> None:
    buf = IfDqinfo()
    buf.dqi_bgrace = seconds
    buf.dqi_igrace = seconds
    buf.dqi_valid = IIF_BGRACE | IIF_IGRACE
    _quotactl(path, qcmd(Q_SETINFO, qtype), 0, buf)


def list_quotas(path: str, qtype: int) -> Dict[int, Dict[str, Any]]:
    """Every ID with usage or limits (Q_GETNEXTQUOTA), as repquota shows them."""
    found: Dict[int, Dict[str, Any]] = {}
    qid = 0
    while True:
        buf = IfNextDqblk()
        try:
            _quotactl(path, qcmd(Q_GETNEXTQUOTA, qtype), qid, buf)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ESRCH):
                return found
            raise
        found[int(buf.dqb_id)] = dqblk_dict(buf)
        if buf.dqb_id >= 0xFFFFFFFE:
            return found
        qid = buf.dqb_id + 1


# -- project IDs (directory layout) ---------------------------------------------------------
def get_project(path: str) -> Tuple[int, int]:
    """(project ID, xflags) of a directory or regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        data = fcntl.ioctl(fd, FS_IOC_FSGETXATTR, bytes(FSXATTR.size))
    finally:
        os.close(fd)
    xflags, _extsize, _nextents, projid, _cow, _pad = FSXATTR.unpack(data)
    return projid, xflags


def _set_project_fd(fd: int, projid: int, inherit: bool) -> None:
    data = bytearray(fcntl.ioctl(fd, FS_IOC_FSGETXATTR, bytes(FSXATTR.size)))
    xflags, extsize, nextents, _old, cow, pad = FSXATTR.unpack(bytes(data))
    if inherit:
        xflags |= FS_XFLAG_PROJINHERIT
    fcntl.ioctl(fd, FS_IOC_FSSETXATTR, FSXATTR.pack(xflags, extsize, nextents, projid, cow, pad))


def assign_project(top: str, projid: int) -> int:
    """Give ``top`` and everything below it ``projid`` (directories with PROJINHERIT), as
    ``xfs_quota -x -c 'project -s'`` does. Symlinks and device nodes keep theirs (they
    cannot be opened for the ioctl). Returns the number of inodes changed."""
    changed = 0
    for directory, dirs, files in os.walk(top):
        for entry in [None] + files:
            path = directory if entry is None else os.path.join(directory, entry)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                continue
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
            try:
                _set_project_fd(fd, projid, stat.S_ISDIR(st.st_mode))
            finally:
                os.close(fd)
            changed += 1
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(directory, d))]
    return changed


def project_id_for(private: str) -> int:
    """A project ID unique on the filesystem: the private directory's inode number."""
    ino = os.stat(private).st_ino
    if 0 < ino < 0xFFFFFFFF:
        return ino
    return 0x10000000 + ino % 0x6FFFFFFF


def filesystem_of(path: str) -> Dict[str, str]:
    """The mount holding ``path`` (mountinfo fields, plus its mount point and super options)."""
    target = os.path.realpath(path)
    best: Optional[Dict[str, str]] = None
    for mount in read_mountinfo():
        point = mount.mount_point
        if target == point or target.startswith(point.rstrip("/") + "/"):
            if best is None or len(point) >= len(best["mountpoint"]):
                best = {"mountpoint": point, "fstype": mount.fstype, "source": mount.source, "options": mount.options,
                        "super": mount.super_options}
    if best is None:
        raise OvzError("no mount holds %s" % path)
    return best


def du(top: str) -> Tuple[int, int]:
    """Bytes allocated (as ``du`` counts them) and inodes below ``top``, one filesystem."""
    dev = os.lstat(top).st_dev
    used = inodes = 0
    seen = set()
    for directory, dirs, files in os.walk(top):
        for entry in [None] + files + [d for d in dirs if os.path.islink(os.path.join(directory, d))]:
            path = directory if entry is None else os.path.join(directory, entry)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if st.st_dev != dev or (st.st_nlink > 1 and (st.st_ino in seen)):
                continue
            if st.st_nlink > 1:
                seen.add(st.st_ino)
            used += st.st_blocks * 512
            inodes += 1
        dirs[:] = [d for d in dirs if os.lstat(os.path.join(directory, d)).st_dev == dev
                   and not os.path.islink(os.path.join(directory, d))]
    return used, inodes


# -- ext4 images ------------------------------------------------------------------------
def ext4_info(image: str) -> Dict[str, int]:
    """Counts from the image's superblock (``dumpe2fs -h``; read-only, works while mounted)."""
    drop_cached_pages(image)
    out = run(["dumpe2fs", "-h", image], "diskspace", "dumpe2fs")
    keys = {"Inode count": "inodes", "Block count": "blocks", "Free blocks": "free_blocks",
            "Free inodes": "free_inodes", "Block size": "block_size", "Inodes per group": "inodes_per_group",
            "Blocks per group": "blocks_per_group", "Overhead clusters": "overhead"}
    info: Dict[str, int] = {"features": 0}
    for line in out.splitlines():
        key, _sep, value = line.partition(":")
        if key.strip() in keys and value.strip().isdigit():
            info[keys[key.strip()]] = int(value.strip())
        if key.strip() == "Filesystem features":
            info["quota"] = 1 if "quota" in value.split() else 0
    return info


def inodes_after_resize(info: Mapping[str, int], new_bytes: int) -> int:
    blocks = new_bytes // info["block_size"]
    return int(math.ceil(blocks / float(info["blocks_per_group"]))) * info["inodes_per_group"]


def min_image_bytes(image: str) -> int:
    """The smallest size ``resize2fs`` can shrink the (unmounted) image to."""
    drop_cached_pages(image)
    out = run(["resize2fs", "-P", image], "diskspace", "resize2fs -P")
    match = re.search(r"minimum size of the filesystem:\s*(\d+)", out)
    if not match:
        raise OvzError("resize2fs -P gave no minimum size: %s" % out.strip(), "diskspace")
    return int(match.group(1)) * 4096


CAP_SYS_RESOURCE = 24


def has_capability(number: int) -> bool:
    """Whether this process holds capability ``number`` (CapEff of /proc/self/status)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> number & 1)
    except OSError:
        pass
    return False


def loop_device(storage: Storage) -> Optional[str]:
    return storage.loop_device()


def grow_image_online(storage: Storage, new_bytes: int) -> None:
    """Grow a mounted image: the file, the loop device's capacity, then the filesystem (online)."""
    device = loop_device(storage)
    if device is None:
        raise StateConflict("the image of %s is not mounted from a loop device" % storage.root, "diskspace")
    old = os.stat(storage.image).st_size
    os.truncate(storage.image, new_bytes)
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, LOOP_SET_CAPACITY, 0)
        finally:
            os.close(fd)
        run(["resize2fs", device, "%dK" % (new_bytes // 1024)], "diskspace", "online resize2fs")
    except BaseException:
        # The filesystem did not grow: give the file and the device their old size back.
        os.truncate(storage.image, old)
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, LOOP_SET_CAPACITY, 0)
        finally:
            os.close(fd)
        raise


def resize_image_offline(storage: Storage, new_bytes: int) -> None:
    """Grow or shrink an unmounted image (e2fsck -f first, as resize2fs requires)."""
    old = os.stat(storage.image).st_size
    _fsck(storage.image)
    if new_bytes > old:
        os.truncate(storage.image, new_bytes)
    try:
        run(["resize2fs", storage.image, "%dK" % (new_bytes // 1024)], "diskspace", "resize2fs")
    except BaseException:
        if new_bytes > old:
            os.truncate(storage.image, old)
        raise
    if new_bytes < old:
        os.truncate(storage.image, new_bytes)


def _fsck(image: str) -> None:
    drop_cached_pages(image)        # the offline tools read and write the file through the page cache
    proc = subprocess.run(["e2fsck", "-f", "-p", image], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, check=False)
    if proc.returncode not in (0, 1):
        raise OvzError("e2fsck of %s found errors it could not fix (exit %d): %s"
                       % (image, proc.returncode, (proc.stderr or proc.stdout).strip()), "diskspace")


def set_image_quota_feature(storage: Storage, enable: bool) -> None:
    _fsck(storage.image)
    argv = ["tune2fs", "-O", "quota", "-Q", "usrquota,grpquota"] if enable else ["tune2fs", "-O", "^quota"]
    run(argv + [storage.image], "quotaugidlimit", "tune2fs")


# -- requests ---------------------------------------------------------------------------
def parse_seconds(value: Any, param: str) -> int:
    """``3600``, ``90m``, ``12h``, ``7d`` -> seconds."""
    if isinstance(value, bool):
        raise InvalidParameter("expected seconds or a time such as 12h or 7d, got %r" % (value,), param)
    match = re.match(r"^\s*(\d+)\s*([smhdw]?)\s*$", str(value), re.IGNORECASE)
    if not match:
        raise InvalidParameter("expected seconds or a time such as 12h or 7d, got %r" % (value,), param)
    return int(match.group(1)) * TIME_UNITS[match.group(2).lower()]


def _pair_or_none(value: Any, param: str, as_size: bool) -> Optional[List[Optional[int]]]:
    if value is None:
        return None
    return list(parse_pair(value, param, as_size=as_size))


def parse_entries(entries: Any, param: str) -> Optional[Dict[str, Dict[str, List[Optional[int]]]]]:
    """``users``/``groups``: [{name: alice, blocks: 100M:120M, inodes: 1000}] -> {name: limits}."""
    if entries is None:
        return None
    if not isinstance(entries, list):
        raise InvalidParameter("expected a list of entries with name, blocks and inodes", param)
    result: Dict[str, Dict[str, List[Optional[int]]]] = {}
    for index, entry in enumerate(entries):
        where = "%s[%d]" % (param, index)
        if not isinstance(entry, Mapping) or entry.get("name") in (None, ""):
            raise InvalidParameter("each entry needs a name (or numeric ID), got %r" % (entry,), where)
        unknown = set(entry) - {"name", "blocks", "inodes"}
        if unknown:
            raise InvalidParameter("unknown keys %s" % ", ".join(sorted(unknown)), where)
        key = str(entry["name"])
        if not re.match(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31}\$?$", key):
            raise InvalidParameter("%r is not a user or group name or ID" % key, where)
        result[key] = {
            "blocks": list(parse_pair(entry.get("blocks", "unlimited"), where + ".blocks")),
            "inodes": list(parse_pair(entry.get("inodes", "unlimited"), where + ".inodes", as_size=False)),
        }
    return result


@dataclass
class QuotaRequest:
    diskspace: Optional[List[Optional[int]]] = None
    diskinodes: Optional[List[Optional[int]]] = None
    quotatime: Optional[int] = None
    quotaugidlimit: Optional[int] = None
    users: Optional[Dict[str, Dict[str, List[Optional[int]]]]] = None
    groups: Optional[Dict[str, Dict[str, List[Optional[int]]]]] = None
    restart: bool = False

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> "QuotaRequest":
        request = cls(
            diskspace=_pair_or_none(params.get("diskspace"), "diskspace", True),
            diskinodes=_pair_or_none(params.get("diskinodes"), "diskinodes", False),
            quotatime=None if params.get("quotatime") is None else parse_seconds(params["quotatime"], "quotatime"),
            quotaugidlimit=params.get("quotaugidlimit"),
            users=parse_entries(params.get("users"), "users"),
            groups=parse_entries(params.get("groups"), "groups"),
            restart=bool(params.get("restart")),
        )
        if request.quotaugidlimit is not None:
            if isinstance(request.quotaugidlimit, bool) or not isinstance(request.quotaugidlimit, int) \
                    or request.quotaugidlimit < 0:
                raise InvalidParameter("expected a whole number (0 turns the second level off), got %r"
                                       % (request.quotaugidlimit,), "quotaugidlimit")
        return request


def settings(config: ContainerConfig) -> Dict[str, Any]:
    """The quota settings stored for a container (what diff mode shows)."""
    quota = config.quota or {}
    return {
        "diskspace": list(config.diskspace),
        "diskinodes": list(config.diskinodes),
        "quotatime": quota.get("quotatime"),
        "quotaugidlimit": quota.get("quotaugidlimit", 0),
        "users": dict(quota.get("users", {})),
        "groups": dict(quota.get("groups", {})),
    }


def second_level(config: ContainerConfig) -> bool:
    return config.layout == "image" and bool((config.quota or {}).get("quotaugidlimit"))


def mount_options(config: ContainerConfig) -> str:
    """Data options of the image's mount: user and group quota enforced when the second level is on."""
    return QUOTA_MOUNT_OPTIONS if second_level(config) else ""


# -- names inside the container ----------------------------------------------------------------
def _read_inside(root: str, rel: str) -> str:
    """A file of the container's tree, with no symlink followed (the container owns the tree)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parts = rel.strip("/").split("/")
        for part in parts[:-1]:
            new = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = new
        leaf = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=fd)
    finally:
        os.close(fd)
    with os.fdopen(leaf) as handle:
        return handle.read(4 << 20)


def resolve_id(root: str, name: str, group: bool, param: str) -> int:
    """A user or group name (or numeric ID) as the container's own /etc/passwd or /etc/group knows it."""
    if name.isdigit():
        return int(name)
    try:
        text = _read_inside(root, "etc/group" if group else "etc/passwd")
    except OSError:
        text = ""
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[0] == name and fields[2].isdigit():
            return int(fields[2])
    kind, where = ("group", "/etc/group") if group else ("user", "/etc/passwd")
    raise InvalidParameter("no %s %r in the container's %s" % (kind, name, where), param)


# -- the second level ---------------------------------------------------------------------------
def _resolved(config: ContainerConfig, storage: Storage, wanted: Mapping[str, Any],
              strict: bool = True) -> List[Tuple[int, int, Dict]]:
    """(quota type, ID, limits) of the stored users and groups; ``strict=False`` skips names the
    container no longer knows (at start: a name removed inside must not keep it from starting)."""
    entries = []
    for key, qtype in (("users", USRQUOTA), ("groups", GRPQUOTA)):
        for who, limits in sorted(wanted.get(key, {}).items()):
            try:
                entries.append((qtype, resolve_id(storage.root, who, qtype == GRPQUOTA, key), limits))
            except InvalidParameter:
                if strict:
                    raise
    return entries


def second_level_drift(config: ContainerConfig, storage: Storage, wanted: Mapping[str, Any]) -> List[str]:
    drift = []
    for qtype, qid, limits in _resolved(config, storage, wanted):
        current = get_quota(storage.root, qtype, qid)
        want_blocks = [None if v is None else kib(v) * QUOTA_BLOCK for v in limits["blocks"]]
        if [current["bytes_soft"], current["bytes_hard"]] != want_blocks or \
                [current["inodes_soft"], current["inodes_hard"]] != list(limits["inodes"]):
            drift.append("%s %d" % ("user" if qtype == USRQUOTA else "group", qid))
    grace = wanted.get("quotatime")
    if grace is not None and any(get_grace(storage.root, t) != grace for t in (USRQUOTA, GRPQUOTA)):
        drift.append("grace time")
    return drift


def apply_second_level(config: ContainerConfig, storage: Storage, strict: bool = True) -> None:
    """Put the stored per-user and per-group limits and the grace time on the mounted image."""
    wanted = settings(config)
    if wanted["quotatime"] is not None:
        for qtype in (USRQUOTA, GRPQUOTA):
            set_grace(storage.root, qtype, int(wanted["quotatime"]))
    for qtype, qid, limits in _resolved(config, storage, wanted, strict):
        set_quota(storage.root, qtype, qid, tuple(limits["blocks"]), tuple(limits["inodes"]))


def directory_quota_missing(storage: Storage) -> Optional[str]:
    """Why the directory layout's project quota cannot work for ``storage`` on this host (None: it can)."""
    try:
        fs = filesystem_of(storage.private)
    except OvzError as exc:
        return str(exc)
    if fs["fstype"] not in ("xfs", "ext4"):
        return "project quota needs XFS or ext4; %s is on %s" % (storage.private, fs["fstype"])
    missing = missing_kernel_features(fs["fstype"])
    if missing:
        return "this kernel (%s) has no quota support for %s: %s not set" % (
            platform.release(), fs["fstype"], ", ".join(missing))
    if not {"prjquota", "pquota", "pqnoenforce"} & set((fs["options"] + "," + fs["super"]).split(",")):
        return "%s (%s on %s) is not mounted with prjquota" % (fs["mountpoint"], fs["fstype"], fs["source"])
    return None


def apply_at_start(config: ContainerConfig, storage: Storage) -> None:
    """The stored quota, in force on the mounted private area before the container's first process.

    A directory-layout container given ``diskspace``/``diskinodes`` at creation gets its
    project quota here, where the host has it; where it has not, the limits stay stored
    and ``ovz_quota`` reports them as not enforced.
    """
    quota = config.quota or {}
    if second_level(config):
        apply_second_level(config, storage, strict=False)
        return
    if config.layout != "directory":
        return
    space, inodes = config.diskspace, config.diskinodes
    limited = any(v is not None for v in list(space) + list(inodes))
    if not quota.get("projid") and (not limited or directory_quota_missing(storage) is not None):
        return
    projid = int(quota.get("projid") or project_id_for(storage.private))
    owner, xflags = get_project(storage.private)
    if owner != projid or not xflags & FS_XFLAG_PROJINHERIT:
        assign_project(storage.private, projid)
    set_quota(storage.private, PRJQUOTA, projid, (space[0], space[1]), (inodes[0], inodes[1]))


def rootfs_devices(config: ContainerConfig, storage: Storage) -> List[Tuple[str, str, int, int, int]]:
    """Device nodes the container's /dev needs for the second level: its own filesystem's block
    node, named as its /proc/mounts names it, for ``quotactl(2)`` to look up (never opened)."""
    if not second_level(config):
        return []
    device = loop_device(storage)
    if device is None:
        return []
    rdev = os.stat(device).st_rdev
    return [(os.path.basename(device), "b", os.major(rdev), os.minor(rdev), 0o600)]


LOOP_MAJOR = 7


def refresh_rootfs_devices(config: ContainerConfig, storage: Storage, init_pid: int) -> None:
    """Make the running container's /dev hold the block node ``rootfs_devices`` names now.

    At start the nodes are made in a new /dev. A restored container gets its /dev back as it
    was dumped, with the node of the loop device its image was on then; the image is now on
    whichever loop device was free, so the stale node goes and the current one is made.
    Only loop block nodes are touched, through descriptors that follow no symlink of the
    container's tree.
    """
    if not second_level(config) or config.unprivileged:
        # An unprivileged container's node is the host's, bound in: the restore bound its own disk's current
        # loop device there. quotactl's changes need CAP_SYS_ADMIN in the initial user namespace, so its
        # second level is managed from the host (ovz_quota users:/groups:), not with the tools inside.
        return
    wanted = {name: (os.makedev(major, minor), mode)
              for name, kind, major, minor, mode in rootfs_devices(config, storage) if kind == "b"}
    root_fd = os.open("/proc/%d/root" % init_pid, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        dev_fd = os.open("dev", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root_fd)
    finally:
        os.close(root_fd)
    try:
        for entry in os.listdir(dev_fd):
            st = os.stat(entry, dir_fd=dev_fd, follow_symlinks=False)
            is_loop = stat.S_ISBLK(st.st_mode) and os.major(st.st_rdev) == LOOP_MAJOR
            if entry in wanted and is_loop and st.st_rdev == wanted[entry][0]:
                del wanted[entry]
            elif is_loop or (entry in wanted and not stat.S_ISDIR(st.st_mode)):
                os.unlink(entry, dir_fd=dev_fd)
        for name, (rdev, mode) in wanted.items():
            os.mknod(name, stat.S_IFBLK | mode, rdev, dir_fd=dev_fd)
    finally:
        os.close(dev_fd)


# -- usage --------------------------------------------------------------------------------
def usage(config: ContainerConfig, storage: Storage, running: bool) -> Dict[str, Any]:
    """Blocks and inodes used and their limits, with the grace state where there is one."""
    result: Dict[str, Any] = {"layout": config.layout}
    if config.layout == "image":
        if not storage.exists():
            return result
        if running and storage.mounted():
            stats = os.statvfs(storage.root)
            result.update(source="statfs", bytes_used=(stats.f_blocks - stats.f_bfree) * stats.f_frsize,
                          bytes_total=stats.f_blocks * stats.f_frsize, bytes_free=stats.f_bavail * stats.f_frsize,
                          inodes_used=stats.f_files - stats.f_ffree, inodes_hard=stats.f_files,
                          inodes_free=stats.f_favail)
        else:
            info = ext4_info(storage.image)
            overhead = info.get("overhead", 0)
            result.update(source="superblock",
                          bytes_used=(info["blocks"] - overhead - info["free_blocks"]) * info["block_size"],
                          bytes_total=(info["blocks"] - overhead) * info["block_size"],
                          bytes_free=info["free_blocks"] * info["block_size"],
                          inodes_used=info["inodes"] - info["free_inodes"], inodes_hard=info["inodes"],
                          inodes_free=info["free_inodes"])
        device = storage.loop_device() if running else None
        if device is not None:
            result.update(loop_device=device, direct_io=loop_direct_io(device))
        # The hard limit is the filesystem's size (the image's); what df inside shows is bytes_total, less
        # ext4's own metadata, so a soft limit may lie above that but never above the hard one.
        result.update(bytes_hard=storage.image_size(), bytes_soft=config.diskspace[0], inodes_soft=config.diskinodes[0],
                      image_bytes=storage.image_size(),
                      grace_blocks={"state": "none", "expires": None}, grace_inodes={"state": "none", "expires": None})
        if second_level(config) and running and storage.mounted() and not missing_kernel_features("ext4"):
            result["users"] = {str(k): v for k, v in list_quotas(storage.root, USRQUOTA).items()}
            result["groups"] = {str(k): v for k, v in list_quotas(storage.root, GRPQUOTA).items()}
        return result
    projid = (config.quota or {}).get("projid")
    if projid:
        try:
            result.update(get_quota(storage.private, PRJQUOTA, int(projid)), source="project quota %d" % int(projid))
            return result
        except OSError:
            pass
    used, inodes = du(storage.private)
    result.update(source="du", bytes_used=used, inodes_used=inodes, bytes_soft=None, bytes_hard=None,
                  inodes_soft=None, inodes_hard=None)
    return result
