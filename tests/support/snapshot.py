# -*- coding: utf-8 -*-
"""Host snapshots: what must not change when a call fails (a node's files, cgroups, mounts, loop
devices and host links, and inside each running container its settings as its processes see them)."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
from typing import List, Sequence

from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager
from ansible_collections.ovz.containers.plugins.module_utils._engine.resources.network import default_host_ifname


def snapshot_differences(left, right, path="") -> List[str]:
    """The leaves in which two snapshots (nested dicts and lists) differ, each as ``path: left != right``."""
    if isinstance(left, dict) and isinstance(right, dict):
        found = []
        for key in sorted(set(left) | set(right), key=str):
            where = "%s/%s" % (path, key)
            if key not in left or key not in right:
                found.append("%s: %s" % (where, "only on the right" if key not in left else "only on the left"))
            else:
                found += snapshot_differences(left[key], right[key], where)
        return found
    if isinstance(left, list) and isinstance(right, list) and left != right:
        return ["%s: %r != %r" % (path, sorted(set(left) - set(right), key=str)[:5] or left[:5],
                                  sorted(set(right) - set(left), key=str)[:5] or right[:5])]
    return [] if left == right else ["%s: %r != %r" % (path, left, right)]


def host_snapshot(data_dir: str, cgroup_parent: str = "", names: Sequence[str] = ()) -> dict:
    """What must not change when a call fails: files under data_dir, and the node's own cgroups,
    mounts, loops and host links.

    Only the node's objects are compared: other tests (and other people) create and remove
    theirs on this host at the same time. The cgroup parent defaults to the one of the node
    whose data_dir this is (``Node``); host links are the default host ends of the node's
    containers and of ``names``.
    """
    files = {}
    for directory, dirs, entries in os.walk(data_dir):
        dirs.sort()
        rel_dir = os.path.relpath(directory, data_dir)
        if rel_dir.count(os.sep) == 1 and rel_dir.split(os.sep)[0] in ("private", "root"):
            # A container's own files: compared whole below while it is stopped; while it runs they
            # change by the container at work, so only what the engine writes inside (/etc) counts.
            dirs[:] = []
            continue
        parts = rel_dir.split(os.sep)
        if len(parts) == 3 and parts[0] == "run" and parts[2] == "volatile":
            # What the container itself writes onto the host (its console log, its boot marker),
            # late on a loaded machine: the container at work as well.
            dirs[:] = []
            entries = []
        if rel_dir == "bcd":  # the live beancounters view computes its files at every read
            entries = []
        if rel_dir == "lxcfs":  # so does a node's own LXCFS
            dirs[:] = []
            entries = []
        for entry in sorted(entries) + [d + "/" for d in dirs]:
            path = os.path.join(directory, entry.rstrip("/"))
            rel = os.path.relpath(path, data_dir)
            if entry.endswith("/"):
                files[rel + "/"] = "dir"
            elif rel.endswith("/lock") or rel == "lock":
                files[rel] = "lock"
            else:
                try:
                    with open(path, "rb") as handle:
                        files[rel] = hash(handle.read())
                except OSError:
                    files[rel] = "unreadable"
    if not cgroup_parent:
        match = re.search(r"/node-([0-9a-f]{6})/data/?$", data_dir)
        cgroup_parent = "ovz-t%s" % match.group(1) if match else ""
    cgroups = sorted(
        os.path.join(d, x)
        for root in os.listdir("/sys/fs/cgroup") if os.path.isdir(os.path.join("/sys/fs/cgroup", root))
        for d, dirs, _f in os.walk(os.path.join("/sys/fs/cgroup", root)) for x in dirs
        if x.startswith("ovz") and "/%s/" % cgroup_parent in os.path.join(d, x) + "/")
    with open("/proc/self/mountinfo") as handle:
        mounts = sorted(p for p in (line.split()[4] for line in handle) if p.startswith(data_dir))
    loops = subprocess.run(["losetup", "-a"], stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
    ours = {default_host_ifname(data_dir, name)
            for name in set(names) | set(ContainerManager(data_dir, cgroup_parent or "auto").layout.names())}
    links = subprocess.run(["ip", "-o", "link"], stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
    manager = ContainerManager(data_dir, cgroup_parent or "auto")
    inside = {name: container_inside(manager, name) for name in sorted(manager.layout.names())}
    for kind in ("private", "root"):
        top = os.path.join(data_dir, kind)
        for name in sorted(os.listdir(top)) if os.path.isdir(top) else ():
            if not inside.get(name):
                files.update(("%s/%s/%s" % (kind, name, rel), seen)
                             for rel, seen in tree_files(os.path.join(top, name)).items())
    return {"files": files, "cgroups": cgroups, "mounts": mounts,
            "loops": sorted(line for line in loops.splitlines() if data_dir in line),
            "links": sorted(n for n in (line.split(":")[1].strip().split("@")[0] for line in links.splitlines())
                            if n in ours),
            "inside": inside}


# Larger files (a container's disk image) are compared by size and modification time, not read.
_HASHED_BYTES = 1 << 20


def tree_files(top: str) -> dict:
    """Every entry under ``top`` without following links: its kind, mode and owner, and its content
    (a hash, the link's target; size and mtime for large files)."""
    seen = {}
    for directory, dirs, entries in os.walk(top):
        dirs.sort()
        for entry in sorted(entries) + dirs:
            path = os.path.join(directory, entry)
            rel = os.path.relpath(path, top)
            try:
                info = os.lstat(path)
                if stat.S_ISLNK(info.st_mode):
                    content = "-> " + os.readlink(path)
                elif not stat.S_ISREG(info.st_mode):
                    content = ""
                elif info.st_size > _HASHED_BYTES:
                    content = "%d bytes, mtime %d" % (info.st_size, info.st_mtime_ns)
                else:
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                    with os.fdopen(fd, "rb") as handle:
                        content = hashlib.sha256(handle.read()).hexdigest()
            except OSError as exc:
                seen[rel] = "unreadable: %s" % exc.strerror
                continue
            seen[rel] = "%o %d:%d %s" % (info.st_mode, info.st_uid, info.st_gid, content)
    return seen


# Writable cgroup files whose value the kernel moves by itself (peaks, counters, pressure triggers),
# or that only take writes (reading them tells nothing of a setting).
_MOVING_CGROUP_FILES = re.compile(r"(peak|failcnt|usage|procs|tasks|threads|pressure|reclaim|force_empty|"
                                  r"kill|oom_control|stat|events)")


def container_inside(manager: ContainerManager, name: str) -> dict:
    """What a failed call must not have changed in a running container: its state and init, the
    settings of its cgroups (every writable control file), and the addresses, routes and mount points
    its processes see. Empty for a container that does not run."""
    runtime = manager.runtime(name)
    if runtime is None or not runtime.alive():
        return {}
    settings = {}
    for path in sorted(set(runtime.cgroups.values())):
        for entry in sorted(os.listdir(path)) if os.path.isdir(path) else ():
            full = os.path.join(path, entry)
            if _MOVING_CGROUP_FILES.search(entry) or not os.path.isfile(full) or not os.stat(full).st_mode & 0o200:
                continue
            try:
                with open(full) as handle:
                    settings[full] = handle.read()
            except OSError:
                pass
    pid = runtime.init_pid

    def in_netns(*argv: str) -> list:
        out = subprocess.run(["nsenter", "--net=/proc/%d/ns/net" % pid, "ip"] + list(argv), stdout=subprocess.PIPE,
                             universal_newlines=True, check=False).stdout
        return out.splitlines()

    # Addresses without their flags: an IPv6 address leaves "tentative" by itself.
    addresses = sorted(" ".join(line.split()[1:4]) for line in in_netns("-o", "addr"))
    routes = sorted(in_netns("route", "show", "table", "all"))
    try:
        with open("/proc/%d/mountinfo" % pid) as handle:
            # /run/ovz/user_beancounters is the live view's to bind and unbind.
            inside_mounts = sorted("%s %s" % (line.split()[4], line.split(" - ")[1].split()[0]) for line in handle
                                   if not line.split()[4].startswith("/run/ovz"))
    except OSError:
        inside_mounts = []
    # The files the engine writes inside (hostname, resolv.conf, hosts), as its processes see them.
    etc = {}
    etc_dir = "/proc/%d/root/etc" % pid
    for entry in sorted(os.listdir(etc_dir)) if os.path.isdir(etc_dir) else ():
        path = os.path.join(etc_dir, entry)
        try:
            if os.path.islink(path):
                etc[entry] = "-> " + os.readlink(path)
            elif os.path.isfile(path) and os.path.getsize(path) <= _HASHED_BYTES:
                with open(path, "rb") as handle:
                    etc[entry] = hashlib.sha256(handle.read()).hexdigest()
        except OSError:
            etc[entry] = "unreadable"
    return {"state": manager.status(name), "init_pid": pid, "cgroup_settings": settings,
            "addresses": addresses, "routes": routes, "mounts": inside_mounts, "etc": etc}
