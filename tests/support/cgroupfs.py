# -*- coding: utf-8 -*-
"""A faked cgroupfs (v1, hybrid, co-mounted, v2), for the cgroup and limits engines without the kernel.

Every hierarchy lives under a temporary directory and the ``os`` module the engine's cgroups module
sees is a proxy (``FakeCgroupFS.install``) that gives ``mkdir``/``rmdir``/``open``/``write``/``kill``
the semantics of cgroupfs: new directories come with the control files a kernel would create, writes
replace content (``cgroup.subtree_control`` applies ``+c``/``-c``, refusing with EBUSY below a cgroup
that holds processes), ``cgroup.freeze`` updates ``cgroup.events``, ``cgroup.kill`` empties the
subtree, and ``rmdir`` fails with EBUSY while a cgroup has children or processes.
"""

from __future__ import annotations

import errno
import os

from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel import cgroups


# --------------------------------------------------------------------------
# mountinfo texts. HYBRID is this build host's /proc/self/mountinfo (cgroup
# lines and some neighbours), V2 a Debian 12 VM's, COMOUNT a classic
# systemd-on-v1 host with cpu,cpuacct and net_cls,net_prio co-mounted.
# --------------------------------------------------------------------------
HYBRID_MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334432k,nr_inodes=3083608,mode=755
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


HYBRID_PROC_CGROUP = """\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/abc
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
"""


V2_MOUNTINFO = """\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
23 28 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:13 - proc proc rw
26 22 0:25 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
28 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
"""


V2_CONTROLLERS_FILE = "cpuset cpu io memory hugetlb pids rdma misc"


COMOUNT_MOUNTINFO = """\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,net_cls,net_prio
32 25 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
33 25 0:30 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpuset
34 25 0:31 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,freezer
"""


COMOUNT_PROC_CGROUP = """\
12:freezer:/
11:cpuset:/
10:memory:/user.slice
7:net_cls,net_prio:/
6:cpu,cpuacct:/user.slice
1:name=systemd:/user.slice/session-1.scope
0::/user.slice/session-1.scope
"""


def _mounts(mountinfo):
    """(mountpoint, version, v1 controllers) of root cgroup mounts; independent of the engine's parser."""
    result = []
    for line in mountinfo.splitlines():
        left, _sep, right = line.partition(" - ")
        parts, fs = left.split(), right.split()
        if fs[0] == "cgroup2":
            result.append((parts[4], 2, ()))
        elif fs[0] == "cgroup":
            result.append((parts[4], 1, tuple(o for o in fs[2].split(",") if o not in ("rw", "xattr"))))
    return result


V1_FILES = {
    "cpu": {"cpu.shares": "1024", "cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"},
    "cpuacct": {"cpuacct.usage": "0"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "memory": {"memory.limit_in_bytes": "9223372036854771712", "memory.usage_in_bytes": "0"},
    "blkio": {"blkio.weight": "500"},
    "pids": {"pids.max": "max", "pids.current": "0"},
    "devices": {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm"},
    "freezer": {"freezer.state": "THAWED"},
}


V2_FILES = {
    "cpu": {"cpu.weight": "100", "cpu.max": "max 100000"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "io": {"io.max": "", "io.weight": "default 100"},
    "memory": {"memory.max": "max", "memory.swap.max": "max"},
    "pids": {"pids.max": "max"},
}


class FakeCgroupFS:
    """A cgroupfs look-alike under ``root``; install it as the engine's ``os``."""

    def __init__(self, root, mountinfo, v2_controllers=V2_CONTROLLERS_FILE):
        self.root = str(root)
        self.mountinfo = mountinfo
        self.mounts = {}          # absolute fake path -> (version, controllers)
        self.writes = []          # (path relative to root, value), in order
        self.killed = []          # pids "killed" through os.kill
        self.auto_freeze = True   # cgroup.freeze is reflected in cgroup.events at once
        self._fds = {}
        for mountpoint, version, controllers in _mounts(mountinfo):
            path = self.root + mountpoint
            os.makedirs(path, exist_ok=True)
            if version == 2:
                self.mounts[path] = (2, ())
                self._files(path, {"cgroup.controllers": v2_controllers, "cgroup.subtree_control": "",
                                   "cgroup.procs": "1", "cgroup.threads": "1", "cgroup.max.depth": "max"})
            else:
                self.mounts[path] = (1, controllers)
                files = {"cgroup.procs": "1", "tasks": "1", "cgroup.clone_children": "0",
                         "notify_on_release": "0"}
                for controller in controllers:
                    files.update(V1_FILES.get(controller, {}))
                files.pop("freezer.state", None)  # the root freezer cgroup has no state file
                if "cpuset" in controllers:
                    files.update({"cpuset.cpus": "0-1", "cpuset.mems": "0"})
                self._files(path, files)

    # -- helpers for tests -------------------------------------------------------
    def path(self, rel):
        return self.root + rel

    def rel(self, path):
        return os.path.relpath(path, self.root)

    def read(self, path):
        with open(path) as handle:
            return handle.read().strip()

    def set(self, path, value):
        with open(path, "w") as handle:
            handle.write(value)

    def add_procs(self, directory, *pids):
        for name in ("cgroup.procs", "tasks"):
            path = os.path.join(directory, name)
            if os.path.exists(path):
                current = self.read(path).split()
                self.set(path, "\n".join(current + [str(p) for p in pids]))

    def makedirs(self, path):
        """Make cgroups as ``mkdir -p`` on cgroupfs would (control files included)."""
        missing = []
        while not os.path.isdir(path):
            missing.append(path)
            path = os.path.dirname(path)
        for directory in reversed(missing):
            self.mkdir(directory)

    def writes_to(self, name):
        return [(p, v) for p, v in self.writes if os.path.basename(p) == name]

    def install(self, monkeypatch):
        monkeypatch.setattr(cgroups, "os", _OsProxy(self))
        return self

    # -- what the kernel does ----------------------------------------------------
    def _files(self, directory, files):
        for name, value in files.items():
            self.set(os.path.join(directory, name), value)

    def _mount_of(self, path):
        best = None
        for mountpoint in self.mounts:
            if (path == mountpoint or path.startswith(mountpoint + "/")) and \
                    (best is None or len(mountpoint) > len(best)):
                best = mountpoint
        return best

    def _mine(self, path):
        return isinstance(path, str) and self._mount_of(os.path.abspath(path)) is not None

    def mkdir(self, path, mode=0o777):
        if not self._mine(path):
            return os.mkdir(path, mode)
        os.mkdir(path, mode)
        mountpoint = self._mount_of(path)
        version, controllers = self.mounts[mountpoint]
        parent = os.path.dirname(path)
        if version == 2:
            enabled = self.read(os.path.join(parent, "cgroup.subtree_control")).split()
            files = {"cgroup.controllers": " ".join(enabled), "cgroup.subtree_control": "", "cgroup.procs": "",
                     "cgroup.threads": "", "cgroup.type": "domain", "cgroup.freeze": "0",
                     "cgroup.events": "populated 0\nfrozen 0", "cgroup.kill": "", "cgroup.max.depth": "max"}
            for controller in enabled:
                files.update(V2_FILES.get(controller, {}))
        else:
            files = {"cgroup.procs": "", "tasks": "", "cgroup.clone_children": "0", "notify_on_release": "0"}
            for controller in controllers:
                files.update(V1_FILES.get(controller, {}))
            if "cpuset" in controllers and self.read(os.path.join(parent, "cgroup.clone_children")) == "1":
                for name in ("cpuset.cpus", "cpuset.mems"):
                    files[name] = self.read(os.path.join(parent, name))
        self._files(path, files)
        return None

    def rmdir(self, path):
        if not self._mine(path):
            return os.rmdir(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        entries = list(os.scandir(path))
        if any(e.is_dir() for e in entries) or self._procs(path):
            raise OSError(errno.EBUSY, "Device or resource busy", path)
        for entry in entries:
            os.unlink(entry.path)
        return os.rmdir(path)

    def _procs(self, directory):
        path = os.path.join(directory, "cgroup.procs")
        return self.read(path).split() if os.path.exists(path) else []

    def open(self, path, flags, mode=0o777, *args, **kwargs):
        if not self._mine(path) or not flags & (os.O_WRONLY | os.O_RDWR):
            return os.open(path, flags, mode, *args, **kwargs)
        if flags & os.O_CREAT and not os.path.exists(path):
            raise PermissionError(errno.EACCES, "cgroupfs files cannot be created", path)
        fd = os.open(path, flags & ~os.O_CREAT & ~os.O_TRUNC, mode)
        self._fds[fd] = os.path.abspath(path)
        return fd

    def close(self, fd):
        self._fds.pop(fd, None)
        return os.close(fd)

    def write(self, fd, data):
        path = self._fds.get(fd)
        if path is None:
            return os.write(fd, data)
        value = bytes(data).decode()
        self._kernel_write(path, value)
        self.writes.append((self.rel(path), value))
        return len(data)

    def kill(self, pid, sig):
        for directory, _dirs, _files in os.walk(self.root):
            for name in ("cgroup.procs", "tasks"):
                path = os.path.join(directory, name)
                if os.path.exists(path) and str(pid) in self.read(path).split():
                    self.set(path, "\n".join(p for p in self.read(path).split() if p != str(pid)))
                    if pid not in self.killed:
                        self.killed.append(pid)
        if pid not in self.killed:
            raise ProcessLookupError(errno.ESRCH, "No such process")

    def _kernel_write(self, path, value):
        directory, name = os.path.split(path)
        if name == "cgroup.subtree_control":
            available = self.read(os.path.join(directory, "cgroup.controllers")).split()
            enabled = set(self.read(path).split())
            for token in value.split():
                controller = token[1:]
                if token[0] not in "+-" or controller not in available:
                    raise OSError(errno.EINVAL, "Invalid argument", path)
                if token[0] == "+":
                    enabled.add(controller)
                else:
                    enabled.discard(controller)
            if enabled and directory not in self.mounts and self._procs(directory):
                raise OSError(errno.EBUSY, "Device or resource busy", path)  # no internal processes
            self.set(path, " ".join(c for c in available if c in enabled))
        elif name == "cgroup.freeze":
            self.set(path, value.strip())
            if self.auto_freeze:
                for sub, _dirs, _files in os.walk(directory):
                    events = os.path.join(sub, "cgroup.events")
                    populated = "1" if self._procs(sub) else "0"
                    self.set(events, "populated %s\nfrozen %s" % (populated, value.strip()))
        elif name == "cgroup.kill":
            if value.strip() != "1":
                raise OSError(errno.ERANGE, "Numerical result out of range", path)
            for sub, _dirs, _files in os.walk(directory):
                for pid in self._procs(sub):
                    self.kill(int(pid), 9)
        elif name in ("cgroup.procs", "tasks"):
            self.add_procs(directory, int(value))
        elif name in ("devices.allow", "devices.deny"):
            pass  # write-only: the effect shows in devices.list, which the tests do not model
        else:
            self.set(path, value.strip())


class _OsProxy:
    """``os`` as the cgroups module sees it: the real one, except the cgroupfs syscalls."""

    def __init__(self, fake):
        self._fake = fake
        self.mkdir, self.rmdir, self.open = fake.mkdir, fake.rmdir, fake.open
        self.close, self.write, self.kill = fake.close, fake.write, fake.kill

    def __getattr__(self, name):
        return getattr(os, name)
