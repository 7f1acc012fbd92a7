# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Unprivileged containers: a user namespace with the container's own uid/gid range.

Like Incus ``security.idmap.isolated``, each unprivileged container gets a
distinct block of 65536 host ids: its uid 0 is the block's first id on the
host. Blocks come from a pool: root's ranges in ``/etc/subuid`` and
``/etc/subgid`` where both give root at least one block, otherwise the ids
from 1000000000 up. Allocations are recorded in ``<data_dir>/idmap.json``
under a ``flock`` of ``data_dir`` itself, so concurrent creates never
share a block; blocks in use by any user namespace on the host (another
node's containers, other tools) are skipped too.

The root filesystem keeps its ownership on disk (uid 0 stays 0) and is seen
through an idmapped mount (``mount_setattr(MOUNT_ATTR_IDMAP)``, Linux 5.12;
ext4, XFS, Btrfs and tmpfs support it): a file root creates inside belongs on
disk to 0 and, through the container's mount, to the block's first id. Where
the kernel or filesystem refuses idmapped mounts, the tree is shifted instead
(``chown`` of every file into the block, keeping setuid/setgid bits, POSIX
ACL ids and file capabilities, which become v3 capabilities owned by the
block's root), and shifted back when the container is made privileged again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import struct
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

from ..base.errors import KernelUnsupported, OvzError
from ..base.files import atomic_write_json, read_json
from . import namespaces as ns

ID_COUNT = 65536
DEFAULT_FIRST = 1000000000
LAST_ID = 4294967294            # (uid_t)-1 is not an id
POOL_FILE = "idmap.json"
MODES = ("idmapped", "shifted")
FORCE_MODE: Optional[str] = None  # tests: "shifted" exercises the fallback on a kernel that has idmapped mounts

XATTR_CAPS = "security.capability"
XATTR_ACLS = ("system.posix_acl_access", "system.posix_acl_default")
VFS_CAP_REVISION_2 = 0x02000000
VFS_CAP_REVISION_3 = 0x03000000
ACL_USER, ACL_GROUP = 0x02, 0x08


# -- the pool ---------------------------------------------------------------------------------
def root_subid_ranges(path: str) -> List[Tuple[int, int]]:
    """Root's (first, count) ranges in an /etc/subuid-style file; [] if none or unreadable."""
    ranges = []
    try:
        with open(path) as handle:
            for line in handle:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in ("root", "0") and parts[1].isdigit() and parts[2].isdigit():
                    ranges.append((int(parts[1]), int(parts[2])))
    except OSError:
        return []
    return ranges


def pool_ranges(subuid: str = "/etc/subuid", subgid: str = "/etc/subgid") -> List[Tuple[int, int]]:
    """The id ranges blocks are taken from: root's subordinate ranges valid for both uids and gids, or the default."""
    uids, gids = root_subid_ranges(subuid), root_subid_ranges(subgid)
    common = []
    for ufirst, ucount in uids:
        for gfirst, gcount in gids:
            first, last = max(ufirst, gfirst), min(ufirst + ucount, gfirst + gcount)
            if last - first >= ID_COUNT:
                common.append((first, last - first))
    return common or [(DEFAULT_FIRST, LAST_ID + 1 - DEFAULT_FIRST)]


def host_ranges_in_use(proc: str = "/proc") -> List[Tuple[int, int]]:
    """Outer (first, count) ranges of every user namespace a live process on the host runs in, but the initial one.

    Zombies (a destroyed container's processes not yet reaped by the host's init) do not count.
    """
    found = set()
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "stat")) as handle:
                data = handle.read()
            if data[data.rindex(")") + 2:][:1] in ("Z", "X"):
                continue
        except (OSError, ValueError):
            continue
        for kind in ("uid_map", "gid_map"):
            try:
                with open(os.path.join(proc, entry, kind)) as handle:
                    lines = handle.read().split("\n")
            except OSError:
                continue
            for line in lines:
                parts = line.split()
                if len(parts) == 3 and parts != ["0", "0", "4294967295"]:
                    found.add((int(parts[1]), int(parts[2])))
    return sorted(found)


def _overlaps(first: int, ranges: Iterable[Tuple[int, int]]) -> bool:
    return any(first < start + count and start < first + ID_COUNT for start, count in ranges)


class IdmapPool:
    """The id blocks of one node's unprivileged containers (``<data_dir>/idmap.json``)."""

    def __init__(self, data_dir: str, ranges: Optional[List[Tuple[int, int]]] = None) -> None:
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, POOL_FILE)
        self._ranges = ranges

    def ranges(self) -> List[Tuple[int, int]]:
        if self._ranges is None:
            self._ranges = pool_ranges()
        return self._ranges

    def _load(self) -> Dict[str, Dict[str, Any]]:
        data = read_json(self.path)
        return dict(data) if isinstance(data, dict) else {}

    def entries(self) -> Dict[str, Dict[str, Any]]:
        return self._load()

    def lookup(self, name: str) -> Optional[Dict[str, Any]]:
        entry = self._load().get(name)
        return dict(entry) if isinstance(entry, dict) else None

    def _locked(self) -> int:
        """An exclusive ``flock`` on the data directory itself: no lock file to leave behind."""
        fd = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def allocate(self, name: str, mode: str = "idmapped") -> Dict[str, Any]:
        """Reserve a free block for ``name`` (or return the one it holds)."""
        fd = self._locked()
        try:
            entries = self._load()
            if isinstance(entries.get(name), dict):
                return dict(entries[name])
            taken = [(e["uid"], e.get("count", ID_COUNT)) for e in entries.values() if isinstance(e, dict)]
            taken += host_ranges_in_use()
            for start, count in self.ranges():
                first = start
                while first + ID_COUNT <= start + count and first + ID_COUNT - 1 <= LAST_ID:
                    if not _overlaps(first, taken):
                        entry = {"uid": first, "gid": first, "count": ID_COUNT, "mode": mode}
                        entries[name] = entry
                        atomic_write_json(self.path, entries)
                        return dict(entry)
                    first += ID_COUNT
            raise OvzError("no free block of %d ids is left in the pool %s" % (ID_COUNT, self.ranges()), "unprivileged")
        finally:
            os.close(fd)

    def set_mode(self, name: str, mode: str) -> None:
        fd = self._locked()
        try:
            entries = self._load()
            if isinstance(entries.get(name), dict):
                entries[name]["mode"] = mode
                atomic_write_json(self.path, entries)
        finally:
            os.close(fd)

    def release(self, name: str) -> bool:
        fd = self._locked()
        try:
            entries = self._load()
            if name not in entries:
                return False
            del entries[name]
            if entries:
                atomic_write_json(self.path, entries)
            else:
                os.unlink(self.path)
            return True
        finally:
            os.close(fd)


# -- user namespaces and idmapped mounts -----------------------------------------------------------
def make_userns(first: int, count: int = ID_COUNT) -> int:
    """A descriptor of a new user namespace mapping ids 0..count-1 to ``first``..; the caller closes it.

    A short-lived child takes the block's first uid and gid and creates the namespace, which the
    kernel then records as owned by that host user; this process (root on the host) writes its maps,
    as newuidmap would, and keeps it alive by the descriptor.
    """
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    done_r, done_w = os.pipe2(os.O_CLOEXEC)
    child = ns.raw_fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        try:
            os.close(ready_r)
            os.close(done_w)
            become_block_owner(first)
            ns.unshare(ns.CLONE_NEWUSER)
            os.write(ready_w, b"1")
            os.read(done_r, 1)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            os.write(ready_w, ("%s: %s" % (type(exc).__name__, exc)).encode(errors="replace")[:4000])
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        answer = os.read(ready_r, 4096)
        if answer != b"1":
            raise KernelUnsupported("this kernel refuses to create a user namespace owned by uid %d (needed by "
                                    "unprivileged containers): %s" % (first, answer.decode(errors="replace") or "-"),
                                    "unprivileged")
        for kind in ("uid_map", "gid_map"):
            with open("/proc/%d/%s" % (child, kind), "w") as handle:
                handle.write("0 %d %d\n" % (first, count))
        return os.open("/proc/%d/ns/user" % child, os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(done_w)
        os.close(ready_r)
        os.waitpid(child, 0)


def become_block_owner(first: int) -> None:  # pragma: no cover - runs in make_userns's child
    """Take the block's first uid and gid on the host as the effective (and fs) ids, with no
    supplementary groups, before creating the user namespace.

    The kernel makes the creator's euid the namespace's owner and charges the per-user counts of
    the namespace's processes (inotify instances and watches, RLIMIT_NPROC, pending signals,
    mqueue bytes, nested namespaces) to that owner too: created by host root, a container could
    exhaust host root's own. The real and saved ids stay 0, so the capabilities stay permitted and
    are made effective again (the creation stays a privileged one for checks such as Debian's
    ``kernel.unprivileged_userns_clone`` or an LSM's), and the kernel sets no RLIMIT_NPROC ceiling
    on the namespace: with a real uid other than 0 it would take the caller's soft RLIMIT_NPROC as
    the bound of all the container's processes together, which would depend on who started it
    (numproc, the pids cgroup, is the container's process limit). Host root keeps every capability
    in the namespace as root of an ancestor, whoever owns it.
    """
    os.setgroups([])
    os.setresgid(-1, first, -1)
    os.setresuid(-1, first, -1)
    ns.raise_effective_capabilities()


def idmapped_tree(path: str, userns_fd: int) -> int:
    """A detached copy of the mount tree at ``path``, idmapped with ``userns_fd``'s mapping; the caller closes it."""
    tree = ns.open_tree(path, ns.OPEN_TREE_CLONE | ns.OPEN_TREE_CLOEXEC | ns.AT_RECURSIVE)
    try:
        ns.mount_setattr_idmap(tree, userns_fd)
    except BaseException:
        os.close(tree)
        raise
    return tree


def idmap_supported(path: str) -> bool:
    """Whether the mount at ``path`` can be idmapped here (kernel and filesystem)."""
    userns_fd = make_userns(DEFAULT_FIRST)
    try:
        os.close(idmapped_tree(path, userns_fd))
        return True
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.EOPNOTSUPP):
            return False
        raise
    finally:
        os.close(userns_fd)


def other_userns(pid: int) -> bool:
    """Whether ``pid`` runs in another user namespace than the caller."""
    return os.stat("/proc/%d/ns/user" % pid).st_ino != os.stat("/proc/self/ns/user").st_ino


def become_root() -> None:
    """In a user namespace just entered: take uid/gid 0 there, with no supplementary groups."""
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


@contextlib.contextmanager
def creating_as(uid: int, gid: int) -> Iterator[None]:
    """Files this thread creates meanwhile belong to ``uid:gid`` (host ids), as if that user made them.

    Host root cannot create a file on an unprivileged container's idmapped root mount: its own id has no
    place in the mount's map (EOVERFLOW). Created as the container's root (the block's first id), the file
    is the container root's inside. Only the thread's filesystem ids change (setfsuid/setfsgid); while they
    are not 0 the kernel takes the file capabilities (DAC_OVERRIDE, FOWNER, ...) out of its effective set,
    so the creation is checked as that user's, and gives them back when they return to 0.
    """
    if uid == os.geteuid() and gid == os.getegid():
        yield
        return
    libc = ns.load_libc()
    old_gid = libc.setfsgid(gid)
    old_uid = libc.setfsuid(uid)
    try:
        if libc.setfsuid(uid) != uid or libc.setfsgid(gid) != gid:
            raise OvzError("cannot take the filesystem ids %d:%d to create a file for the container" % (uid, gid))
        yield
    finally:
        libc.setfsuid(old_uid)
        libc.setfsgid(old_gid)


def chown_for(paths: Iterable[str], first: int) -> None:
    """Give files and directories of the host to the container's root (``first`` on the host)."""
    for path in paths:
        if os.path.lexists(path):
            os.lchown(path, first, first)


CGROUP_DELEGATED_FILES = ("cgroup.procs", "tasks", "cgroup.subtree_control", "cgroup.threads")


def delegate_cgroups(directories: Iterable[str], first: int) -> None:
    """Delegate cgroup directories to the container's root, as systemd's ``Delegate=yes`` does:
    the directory and the files that move processes and enable controllers below it; the
    limit files stay root's."""
    for directory in directories:
        if not os.path.isdir(directory):
            continue
        os.chown(directory, first, first)
        for name in CGROUP_DELEGATED_FILES:
            path = os.path.join(directory, name)
            if os.path.exists(path):
                os.chown(path, first, first)


# -- shifting, where idmapped mounts are refused -------------------------------------------------
def _shift_id(value: int, delta: int) -> int:
    if delta > 0:
        return value + delta if 0 <= value < ID_COUNT else value
    return value + delta if -delta <= value < -delta + ID_COUNT else value


def _shift_acl(data: bytes, delta: int) -> bytes:
    if len(data) < 4 or (len(data) - 4) % 8:
        return data
    out = bytearray(data[:4])
    for offset in range(4, len(data), 8):
        tag, perm, ident = struct.unpack_from("<HHI", data, offset)
        if tag in (ACL_USER, ACL_GROUP):
            ident = _shift_id(ident, delta)
        out += struct.pack("<HHI", tag, perm, ident)
    return bytes(out)


def _shift_caps(data: bytes, delta: int) -> bytes:
    """v2 capabilities (root 0) become v3 owned by the block's root, and back."""
    if len(data) < 20:
        return data
    magic = struct.unpack_from("<I", data)[0]
    version = magic & 0xFF000000
    rootid = struct.unpack_from("<I", data, 20)[0] if version == VFS_CAP_REVISION_3 and len(data) >= 24 else 0
    rootid = _shift_id(rootid, delta)
    flags = magic & 0x00FFFFFF
    if rootid == 0:
        return struct.pack("<I", VFS_CAP_REVISION_2 | flags) + data[4:20]
    return struct.pack("<I", VFS_CAP_REVISION_3 | flags) + data[4:20] + struct.pack("<I", rootid)


def _shift_one(path: str, st: os.stat_result, delta: int) -> None:
    uid, gid = _shift_id(st.st_uid, delta), _shift_id(st.st_gid, delta)
    link = stat.S_ISLNK(st.st_mode)
    caps = None
    acls: Dict[str, bytes] = {}
    if not link:
        try:
            caps = os.getxattr(path, XATTR_CAPS, follow_symlinks=False)
        except OSError:
            caps = None
        for name in XATTR_ACLS:
            try:
                acls[name] = os.getxattr(path, name, follow_symlinks=False)
            except OSError:
                pass
    if (uid, gid) != (st.st_uid, st.st_gid):
        os.lchown(path, uid, gid)
        if not link and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            os.chmod(path, stat.S_IMODE(st.st_mode))   # chown cleared setuid/setgid: put them back
    if caps is not None:
        os.setxattr(path, XATTR_CAPS, _shift_caps(caps, delta), follow_symlinks=False)
    for name, value in acls.items():
        shifted = _shift_acl(value, delta)
        if shifted != value:
            os.setxattr(path, name, shifted, follow_symlinks=False)


def shift_tree(root: str, delta: int) -> int:
    """Shift the ownership of every file below ``root`` (one filesystem) by ``delta``; returns the count.

    Ids 0..65535 move up by ``delta`` (> 0), or the block's ids move back down (< 0); other ids stay.
    """
    top = os.lstat(root)
    seen = set()
    count = 0
    stack = [root]
    _shift_one(root, top, delta)
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if st.st_dev != top.st_dev:
                    continue
                if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                _shift_one(entry.path, st, delta)
                count += 1
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
    return count
