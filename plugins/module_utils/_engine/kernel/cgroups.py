# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Control groups: one interface, a v1 and a v2 backend.

The backend is chosen by reading ``/proc/self/mountinfo``: if any cgroup v1
hierarchy carries a controller, the host is v1 (or hybrid) and controllers
live there; otherwise a cgroup2 mount is the unified hierarchy. Nothing is
guessed from kernel versions or distribution names.

Every container gets one directory ``ovz-<node>-<name>`` under its parent in
each hierarchy it uses (``<node>``: the identity of its data dir, so the
containers of two data dirs never share a cgroup, even under one parent).
The parent is resolved once, at start, from ``cgroup_parent`` and the
resulting absolute paths are stored in the container's runtime state; later
calls use those paths, whichever cgroup they themselves run in (containers
started before the node identity existed run on in their ``ovz-<name>``).
"""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Set, Tuple

from ..base.errors import InvalidParameter, KernelUnsupported, OvzError
from . import mounts

CGROUP_PREFIX = "ovz-"
# v1 controllers a container is placed in. cpu/cpuacct/cpuset/memory/blkio/pids
# carry limits and accounting, devices the allow-list, freezer the frozen state.
V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "blkio", "pids", "devices", "freezer")
V2_CONTROLLERS = ("cpu", "cpuset", "io", "memory", "pids")
UNIFIED = "unified"
FREEZE_AGAIN = 0.05     # seconds before a v1 freeze that has not taken is asked again


@dataclass(frozen=True)
class Hierarchy:
    key: str                     # controller name (v1), or "unified"
    mountpoint: str
    controllers: Tuple[str, ...]
    version: int


def cgroup_dirname(name: str, node: Optional[str]) -> str:
    """``ovz-<node>-<name>``; without a node, the name containers had before data dirs had an identity."""
    return "%s%s-%s" % (CGROUP_PREFIX, node, name) if node else CGROUP_PREFIX + name


def parse_mountinfo(text: str) -> List[Tuple[str, str, str, str]]:
    """(mountpoint, fstype, root, super options) for every cgroup mount."""
    return [(mount.mount_point, mount.fstype, mount.root, mount.super_options) for mount in mounts.parse_mountinfo(text)
            if mount.fstype in ("cgroup", "cgroup2") and mount.super_options]


def probe_hierarchies(mountinfo: Optional[str] = None, fs_root: str = "") -> List[Hierarchy]:
    """The cgroup hierarchies this process sees, from its mountinfo.

    ``fs_root`` prefixes every mount point; tests point it at a faked cgroupfs.
    """
    if mountinfo is None:
        with open("/proc/self/mountinfo") as handle:
            mountinfo = handle.read()
    found: Dict[str, Hierarchy] = {}
    for mountpoint, fstype, root, options in parse_mountinfo(mountinfo):
        if root != "/":
            continue  # a bind mount of a sub-cgroup (e.g. inside a container): not a hierarchy root
        path = fs_root + mountpoint
        if fstype == "cgroup2":
            controllers: Tuple[str, ...] = ()
            try:
                with open(os.path.join(path, "cgroup.controllers")) as handle:
                    controllers = tuple(handle.read().split())
            except OSError:
                pass
            found.setdefault(UNIFIED, Hierarchy(UNIFIED, path, controllers, 2))
            continue
        names = tuple(o for o in options.split(",") if o in V1_CONTROLLERS or o.startswith("name="))
        for name in names:
            found.setdefault(name, Hierarchy(name, path, names, 1))
    return list(found.values())


def parse_proc_cgroup(text: str) -> Dict[str, str]:
    """``/proc/<pid>/cgroup`` -> {controller or "unified": path}."""
    result: Dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _hid, controllers, path = parts
        if controllers == "":
            result[UNIFIED] = path
        else:
            for controller in controllers.split(","):
                result[controller] = path
    return result


def own_cgroups(pid: str = "self") -> Dict[str, str]:
    with open("/proc/%s/cgroup" % pid) as handle:
        return parse_proc_cgroup(handle.read())


def host_runs_systemd() -> bool:
    try:
        with open("/proc/1/comm") as handle:
            return handle.read().strip() == "systemd"
    except OSError:
        return False


def validate_cgroup_parent(value: str) -> str:
    if not isinstance(value, str) or not value or "\0" in value or ".." in value.split("/"):
        raise InvalidParameter("must be 'auto', an absolute cgroup path or a relative one, got %r" % (value,),
                               "cgroup_parent")
    return value


class CgroupBackend:
    """What differs between v1 and v2: which hierarchies, which files."""

    version = 0

    def __init__(self, hierarchies: List[Hierarchy], own: Optional[Dict[str, str]] = None,
                 systemd: Optional[bool] = None) -> None:
        self.hierarchies = hierarchies
        self._own = own
        self._systemd = systemd

    # -- resolution -----------------------------------------------------------
    def used(self) -> List[Hierarchy]:
        raise NotImplementedError

    def own(self) -> Dict[str, str]:
        if self._own is None:
            self._own = own_cgroups()
        return self._own

    def systemd(self) -> bool:
        if self._systemd is None:
            self._systemd = host_runs_systemd()
        return self._systemd

    def resolve_parent(self, cgroup_parent: str) -> Dict[str, str]:
        """{hierarchy key: absolute cgroup path of the parent} for ``cgroup_parent``."""
        validate_cgroup_parent(cgroup_parent)
        result = {}
        for hier in self.used():
            if cgroup_parent.startswith("/"):
                base = cgroup_parent
            else:
                auto: Optional[str]
                if self.systemd():
                    auto = "/ovz.slice"
                else:
                    auto = self.own().get(hier.key)
                    if auto is None:
                        auto = self.own().get(UNIFIED, "/") if hier.version == 2 else "/"
                base = auto if cgroup_parent == "auto" else auto.rstrip("/") + "/" + cgroup_parent
            result[hier.key] = "/" + base.strip("/") if base.strip("/") else "/"
        return result

    def container_paths(self, parent: Dict[str, str], name: str, node: Optional[str] = None) -> Dict[str, str]:
        """{hierarchy key: filesystem directory} of the container's cgroups (``node``: its data dir's identity)."""
        paths = {}
        for hier in self.used():
            rel = parent[hier.key].strip("/")
            paths[hier.key] = os.path.join(hier.mountpoint, rel, cgroup_dirname(name, node)) if rel else \
                os.path.join(hier.mountpoint, cgroup_dirname(name, node))
        return paths

    def mountpoint(self, key: str) -> str:
        for hier in self.hierarchies:
            if hier.key == key:
                return hier.mountpoint
        raise KeyError(key)

    # -- per-backend hooks ----------------------------------------------------
    def prepare_level(self, hier: Hierarchy, directory: str, created: bool, is_leaf: bool) -> None:
        """Called for each directory below the hierarchy root down to the container's."""

    def kill_all(self, cgroups: "ContainerCgroups") -> None:
        raise NotImplementedError

    def set_frozen(self, cgroups: "ContainerCgroups", frozen: bool) -> None:
        raise NotImplementedError

    def is_frozen(self, cgroups: "ContainerCgroups") -> bool:
        raise NotImplementedError

    def apply_device_policy(self, cgroups: "ContainerCgroups", allow: Iterable[str]) -> bool:
        """Install the device allow-list; return whether the kernel enforces it."""
        raise NotImplementedError


class CgroupV1(CgroupBackend):
    version = 1

    def used(self) -> List[Hierarchy]:
        seen = set()
        result = []
        for controller in V1_CONTROLLERS:
            for hier in self.hierarchies:
                if hier.version == 1 and hier.key == controller and hier.mountpoint not in seen:
                    seen.add(hier.mountpoint)
                    result.append(hier)
        # On a hybrid host the cgroup2 tree is where a container's own systemd
        # keeps its units; it carries no controllers we need to set.
        for hier in self.hierarchies:
            if hier.version == 2 and hier.mountpoint not in seen:
                result.append(hier)
        return result

    def controller_dir(self, cgroups: "ContainerCgroups", controller: str) -> str:
        for hier in self.used():
            if controller in hier.controllers and hier.key in cgroups.paths:
                return cgroups.paths[hier.key]
        raise KernelUnsupported("the cgroup v1 '%s' controller is not mounted on this host" % controller)

    def prepare_level(self, hier: Hierarchy, directory: str, created: bool, is_leaf: bool) -> None:
        # A new cpuset starts with no CPUs and no memory nodes; a task cannot join it until both are
        # copied from the parent. Not only by whoever made it: a concurrent first start may find a level
        # another one has just made, still empty, and its own levels below would copy the emptiness.
        if "cpuset" in hier.controllers and directory != hier.mountpoint:
            parent = os.path.dirname(directory)
            for name in ("cpuset.cpus", "cpuset.mems"):
                target = os.path.join(directory, name)
                with open(os.path.join(parent, name)) as handle:
                    value = handle.read().strip()
                with open(target) as handle:
                    current = handle.read().strip()
                if not current and value:
                    write_file(target, value)

    def set_frozen(self, cgroups: "ContainerCgroups", frozen: bool) -> None:
        state_file = os.path.join(self.controller_dir(cgroups, "freezer"), "freezer.state")
        wanted = "FROZEN" if frozen else "THAWED"
        write_file(state_file, wanted)
        deadline = time.monotonic() + 10
        again = time.monotonic() + FREEZE_AGAIN
        while read_file(state_file) != wanted:
            if time.monotonic() > deadline:
                raise OvzError("the freezer did not reach %s in 10 s" % wanted)
            time.sleep(0.002)
            if frozen and time.monotonic() > again:
                # The v1 freezer asks each task to freeze once, when FROZEN is written. A task still on
                # its CPU then, on its way into a stop (SIGSTOP, or CRIU's detach after a dump), is skipped
                # and sleeps stopped, never frozen: the cgroup stays FREEZING until it is asked again.
                write_file(state_file, wanted)
                again = time.monotonic() + FREEZE_AGAIN

    def is_frozen(self, cgroups: "ContainerCgroups") -> bool:
        try:
            return read_file(os.path.join(self.controller_dir(cgroups, "freezer"), "freezer.state")) != "THAWED"
        except (OSError, KernelUnsupported):
            return False

    def kill_all(self, cgroups: "ContainerCgroups") -> None:
        # Frozen tasks cannot fork, so nothing escapes between reading the
        # list and delivering the signals; they die when thawed.
        try:
            self.set_frozen(cgroups, True)
            frozen = True
        except (OSError, KernelUnsupported, OvzError):
            frozen = False
        for pid in cgroups.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if frozen:
            self.set_frozen(cgroups, False)

    def apply_device_policy(self, cgroups: "ContainerCgroups", allow: Iterable[str]) -> bool:
        directory = self.controller_dir(cgroups, "devices")
        write_file(os.path.join(directory, "devices.deny"), "a")
        for rule in allow:
            write_file(os.path.join(directory, "devices.allow"), rule)
        return True


class CgroupV2(CgroupBackend):
    version = 2

    def used(self) -> List[Hierarchy]:
        return [h for h in self.hierarchies if h.version == 2][:1]

    def controller_dir(self, cgroups: "ContainerCgroups", controller: str) -> str:
        return cgroups.paths[UNIFIED]

    def prepare_level(self, hier: Hierarchy, directory: str, created: bool, is_leaf: bool) -> None:
        # Controllers must be enabled in every ancestor's subtree_control to
        # reach the container. The container's own directory is left alone:
        # it holds processes, and systemd inside enables what it needs below.
        if is_leaf:
            return
        self.enable_controllers(directory)

    def enable_controllers(self, directory: str) -> None:
        try:
            available = read_file(os.path.join(directory, "cgroup.controllers")).split()
            enabled = read_file(os.path.join(directory, "cgroup.subtree_control")).split()
        except OSError:
            return
        wanted = [c for c in V2_CONTROLLERS if c in available and c not in enabled]
        if wanted:
            try:
                write_file(os.path.join(directory, "cgroup.subtree_control"), " ".join("+" + c for c in wanted))
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    raise OvzError(
                        "cannot enable cgroup controllers below %s: it holds processes itself (cgroup v2 "
                        "'no internal processes' rule); set cgroup_parent to a delegated cgroup such as "
                        "/ovz.slice" % directory, "cgroup_parent") from None
                raise

    def set_frozen(self, cgroups: "ContainerCgroups", frozen: bool) -> None:
        directory = cgroups.paths[UNIFIED]
        write_file(os.path.join(directory, "cgroup.freeze"), "1" if frozen else "0")
        deadline = time.monotonic() + 10
        while self.is_frozen(cgroups) != frozen:
            if time.monotonic() > deadline:
                raise OvzError("the cgroup did not %s in 10 s" % ("freeze" if frozen else "thaw"))
            time.sleep(0.002)

    def is_frozen(self, cgroups: "ContainerCgroups") -> bool:
        try:
            for line in read_file(os.path.join(cgroups.paths[UNIFIED], "cgroup.events")).splitlines():
                key, _sep, value = line.partition(" ")
                if key == "frozen":
                    return value.strip() == "1"
        except OSError:
            pass
        return False

    def kill_all(self, cgroups: "ContainerCgroups") -> None:
        kill_file = os.path.join(cgroups.paths[UNIFIED], "cgroup.kill")
        if os.path.exists(kill_file):
            write_file(kill_file, "1")
            return
        self.set_frozen(cgroups, True)
        for pid in cgroups.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.set_frozen(cgroups, False)

    def apply_device_policy(self, cgroups: "ContainerCgroups", allow: Iterable[str]) -> bool:
        from .devices_bpf import attach_device_filter  # only v2 needs the BPF program
        return attach_device_filter(cgroups.paths[UNIFIED], list(allow))


def select_backend(mountinfo: Optional[str] = None, fs_root: str = "",
                   own: Optional[Dict[str, str]] = None, systemd: Optional[bool] = None) -> CgroupBackend:
    hierarchies = probe_hierarchies(mountinfo, fs_root)
    if any(h.version == 1 and h.key in V1_CONTROLLERS for h in hierarchies):
        return CgroupV1(hierarchies, own, systemd)
    if any(h.version == 2 for h in hierarchies):
        return CgroupV2(hierarchies, own, systemd)
    raise KernelUnsupported("no cgroup hierarchy is mounted (neither cgroup v1 controllers nor cgroup2)")


class ContainerCgroups:
    """The cgroup directories of one container, across the hierarchies in use."""

    def __init__(self, backend: CgroupBackend, paths: Dict[str, str]) -> None:
        self.backend = backend
        self.paths = dict(paths)

    def exists(self) -> bool:
        return any(os.path.isdir(p) for p in self.paths.values())

    def create(self, payload: Optional[str] = None) -> None:
        """Create the container's directories (and ``payload`` below each, where its processes run).

        Limits are set on ``ovz-<node>-<name>``; the processes and the root of their
        cgroup namespace live one level down, so root inside cannot raise the
        limits that hold it.
        """
        for hier in self.backend.used():
            path = self.paths[hier.key]
            parts = os.path.relpath(path, hier.mountpoint).split(os.sep)
            if payload:
                parts.append(payload)
            if hier.version == 2:
                self.backend.prepare_level(hier, hier.mountpoint, False, False)
            current = hier.mountpoint
            for index, part in enumerate(parts):
                current = os.path.join(current, part)
                created = False
                try:
                    os.mkdir(current, 0o755)
                    created = True
                except FileExistsError:
                    pass
                self.backend.prepare_level(hier, current, created, index == len(parts) - 1)

    def payload_procs(self, payload: str) -> List[str]:
        """The v1 files a new process writes "0" to, to join the container's payload cgroups.

        The per-thread ``tasks`` file is used: moving only the writing thread
        skips the kernel's global threadgroup lock. The caller is freshly
        forked, so that thread is the whole process. The cgroup2 placement is
        done at fork time instead (see ``payload_cgroup2``).
        """
        return [os.path.join(self.paths[hier.key], payload, "tasks")
                for hier in self.backend.used() if hier.version == 1]

    def payload_cgroup2(self, payload: str) -> Optional[str]:
        """The cgroup2 payload directory (unified hierarchy), if the host has one."""
        for hier in self.backend.used():
            if hier.version == 2:
                return os.path.join(self.paths[hier.key], payload)
        return None

    def exec_cgroup2(self, payload: str) -> Optional[str]:
        """Where a command run inside (``vzctl exec``) joins the cgroup2 tree.

        Always a leaf ``.ovz-exec`` below the payload, as ``lxc-attach`` uses
        ``.lxc``: a helper sitting in the payload itself would make the
        container's own init (systemd) fail with EBUSY when it later enables
        controllers there, since cgroup2 forbids processes in a cgroup that
        delegates controllers.
        """
        directory = self.payload_cgroup2(payload)
        if directory is None:
            return None
        leaf = os.path.join(directory, ".ovz-exec")
        try:
            os.mkdir(leaf, 0o755)
        except FileExistsError:
            pass
        return leaf

    def attach(self, pid: int) -> None:
        for path in self.paths.values():
            write_file(os.path.join(path, "cgroup.procs"), str(pid))

    def pids(self) -> List[int]:
        """Every process in the container's cgroups, sub-cgroups included."""
        seen: Set[int] = set()
        for path in self.paths.values():
            for directory, _dirs, files in os.walk(path):
                if "cgroup.procs" not in files:
                    continue
                try:
                    text = read_file(os.path.join(directory, "cgroup.procs"))
                except (FileNotFoundError, OSError):
                    continue
                seen.update(int(p) for p in text.split())
        return sorted(seen)

    def populated(self) -> bool:
        return bool(self.pids())

    def kill_all(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.pids():
            self.backend.kill_all(self)
            left = self.pids()
            # Judged on what is left after this round: a round that itself outlasted the deadline (a slow,
            # loaded host) may well have ended them all.
            if left and time.monotonic() > deadline:
                raise OvzError("processes %s survived SIGKILL for %.0f s" % (left, timeout))
            time.sleep(0.005)

    def freeze(self) -> None:
        self.backend.set_frozen(self, True)

    def thaw(self) -> None:
        self.backend.set_frozen(self, False)

    def frozen(self) -> bool:
        return self.backend.is_frozen(self)

    def apply_device_policy(self, allow: Iterable[str]) -> bool:
        return self.backend.apply_device_policy(self, allow)

    def controller_dir(self, controller: str) -> str:
        return self.backend.controller_dir(self, controller)  # type: ignore[attr-defined]

    def remove(self, timeout: float = 10.0) -> None:
        """Remove the container's directories (and the sub-cgroups its init made).

        Parents are left alone: they belong to the operator (or to a test),
        and removing an empty one could race with another container's create.
        """
        deadline = time.monotonic() + timeout
        for path in self.paths.values():
            self._rmtree(path, deadline)

    def _rmtree(self, path: str, deadline: float) -> None:
        if not os.path.isdir(path):
            return
        # Sub-cgroups made by the container's own init (systemd) go first.
        for entry in os.scandir(path):
            if entry.is_dir(follow_symlinks=False):
                self._rmtree(entry.path, deadline)
        while True:
            try:
                os.rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)

    def to_state(self) -> Dict[str, str]:
        return dict(self.paths)


def read_file(path: str) -> str:
    with open(path) as handle:
        return handle.read().strip()


def write_file(path: str, value: str) -> None:
    # cgroup files want one write() per value; buffering could split or merge them.
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)
