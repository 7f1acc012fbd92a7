# -*- coding: utf-8 -*-
"""Shared fixtures: the collection on sys.path, per-test nodes, host snapshots.

Everything a test creates is named with the ``ovz`` prefix and removed again,
on failure too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from typing import List, Sequence

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
from collection_path import COLLECTIONS_ROOT, ensure_collection_path  # noqa: E402
from sweep import SESSION_OWNER, process_starttime  # noqa: E402

ensure_collection_path()

from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager  # noqa: E402
from ansible_collections.ovz.containers.plugins.module_utils._engine.resources.network import default_host_ifname  # noqa: E402
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.rootfs import find_lxcfs  # noqa: E402
from ansible_collections.ovz.containers.plugins.module_utils._engine.node.templates import build_busybox_template  # noqa: E402

WORK_ROOT = "/var/tmp"


def hang_limit(seconds: float):
    """A test's own limit on a command it waits for: ``seconds``, or none at all when the run lifts
    pytest's per-test limit (``OVZ_TEST_TIMEOUT=0``, as under TCG emulation)."""
    return None if os.environ.get("OVZ_TEST_TIMEOUT") == "0" else seconds


@contextlib.contextmanager
def running_lxcfs(data_dir: str, before_stop=None):
    """A node's own LXCFS at ``<data_dir>/lxcfs`` (so no other container on this host sees it).

    ``before_stop`` runs first on the way out: the node's containers go before their LXCFS."""
    binary = shutil.which("lxcfs")
    if binary is None:
        pytest.skip("lxcfs is not installed (Debian package lxcfs)")
    mount = os.path.join(data_dir, "lxcfs")
    os.makedirs(mount, exist_ok=True)
    proc = subprocess.Popen([binary, "-f", "-p", os.path.join(data_dir, "ovz-lxcfs.pid"), mount],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while find_lxcfs(data_dir) != mount:
            assert proc.poll() is None and time.monotonic() < deadline, "lxcfs did not come up"
            time.sleep(0.05)
        yield mount
    finally:
        if before_stop is not None:
            before_stop()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if find_lxcfs(data_dir) == mount:
            subprocess.run(["umount", "-l", mount], check=False)


def pytest_configure(config):
    config.addinivalue_line("markers", "debian: needs the Debian 12 or 13 template (built once, cached)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    config.addinivalue_line(
        "markers", "serial: shares a host-wide resource (the CPUs it measures, a fixed port, the host's own data "
                   "dir or services); scripts/test runs these alone, after the parallel phase")


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


def pytest_assertrepr_compare(config, op, left, right):
    """A failed comparison of two host snapshots names the leaves that differ (pytest's own diff of
    such big dicts is cut before it reaches them)."""
    if op == "==" and isinstance(left, dict) and isinstance(right, dict) and {"files", "cgroups"} <= set(left):
        return ["host snapshots differ:"] + [line[:400] for line in snapshot_differences(left, right)[:40]]
    return None


def pytest_collection_modifyitems(session, config, items):
    """The slow tests first (a stable sort): parallel workers then take them at the start, and the
    run does not end waiting on one long test that a worker drew last."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def session_dir():
    path = tempfile.mkdtemp(prefix="ovz-tests-", dir=WORK_ROOT)
    # scripts/sweep.py leaves the work directories of live sessions alone (several runs share a host).
    with open(os.path.join(path, SESSION_OWNER), "w") as handle:
        json.dump({"pid": os.getpid(), "starttime": process_starttime(os.getpid())}, handle)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def busybox_template(session_dir):
    return build_busybox_template(os.path.join(session_dir, "templates"))


def debian_template_path() -> str:
    """OVZ_DEBIAN_TEMPLATE, or scripts/build-debian-template's build (cached by content: a hit is instant)."""
    path = os.environ.get("OVZ_DEBIAN_TEMPLATE")
    if not path or not os.path.exists(path):
        out = subprocess.run([os.path.join(REPO, "scripts", "build-debian-template")], stdout=subprocess.PIPE,
                             universal_newlines=True, check=True).stdout
        path = out.strip().splitlines()[-1]
    return path


@pytest.fixture(scope="session")
def debian_template():
    return debian_template_path()


class Node:
    """One test node: its own data_dir and cgroup parent on this kernel."""

    def __init__(self, base: str, tag: str) -> None:
        self.data_dir = os.path.join(base, "data")
        self.cgroup_parent = "ovz-t%s" % tag
        self.manager = ContainerManager(self.data_dir, self.cgroup_parent)
        self._names = 0
        self.tag = tag

    def name(self) -> str:
        self._names += 1
        return "ovz%s%d" % (self.tag, self._names)

    def cleanup(self) -> None:
        for name in self.manager.layout.names():
            try:
                self.manager.destroy(name)
            except Exception as exc:  # noqa: BLE001 - clean as much as possible
                print("cleanup of %s failed: %s" % (name, exc), file=sys.stderr)
        # The node's cgroup parent, in every hierarchy (the engine leaves parents alone).
        backend = self.manager.backend
        for path in backend.resolve_parent(self.cgroup_parent).items():
            directory = os.path.join(backend.mountpoint(path[0]), path[1].lstrip("/"))
            if os.path.isdir(directory):
                try:
                    os.rmdir(directory)
                except OSError as exc:
                    print("cgroup %s not removed: %s" % (directory, exc), file=sys.stderr)


@contextlib.contextmanager
def new_node(session_dir: str):
    """A Node with a fresh tag under session_dir, removed with everything it holds afterwards."""
    tag = uuid.uuid4().hex[:6]
    base = os.path.join(session_dir, "node-" + tag)
    os.makedirs(base)
    result = Node(base, tag)
    try:
        yield result
    finally:
        result.cleanup()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def node(session_dir):
    with new_node(session_dir) as result:
        yield result


@pytest.fixture
def container(node, busybox_template):
    """A started busybox container (directory layout), booted."""
    name = node.name()
    node.manager.create(name, busybox_template, layout="directory")
    node.manager.start(name, wait_boot=True, timeout=20)
    return name


def sh(manager: ContainerManager, name: str, script: str, check: bool = True):
    result = manager.exec(name, ["/bin/sh", "-c", script], timeout=60)
    if check and result.rc != 0:
        raise AssertionError("inside %s: %r exited %d: %s %s"
                             % (name, script, result.rc, result.stdout.decode(), result.stderr.decode()))
    return result


def sh_without_session(manager: ContainerManager, name: str, script: str, stdout=subprocess.DEVNULL) -> None:
    """Run ``script`` by /bin/sh inside, entered from the host as exec enters but *without* a session of its
    own (as exec itself never does), and with ``stdout`` of the caller's: what a careless host tool would
    leave inside (a job whose session leader is the host's, a host file held open)."""
    from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import PAYLOAD
    runtime = manager.runtime(name)
    cgroups = manager.cgroups_for(runtime)
    code = ("import os, sys; sys.path.insert(0, %r)\n"
            "from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.process import enter_container, "
            "fork_in_cgroup, join_cgroups\n"
            "if fork_in_cgroup(%r) == 0:\n"
            "    join_cgroups(%r)\n"
            "    enter_container(%d)\n"
            "    if os.fork() == 0:\n"
            "        os.execv('/bin/sh', ['sh', '-c', %r])\n"
            "    os.wait()\n"
            "    os._exit(0)\n"
            "os.wait()\n"
            % (COLLECTIONS_ROOT, cgroups.exec_cgroup2(PAYLOAD), cgroups.payload_procs(PAYLOAD), runtime.init_pid, script))
    subprocess.run([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.DEVNULL,
                   check=True, timeout=60)


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


def wait_for(predicate, what: str, timeout: float = 20.0):
    """Poll ``predicate`` until it gives something true, and return that; fail naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.05)


MODULES_DIR = os.path.join(REPO, "plugins", "modules")


def run_module(module: str, args: dict, check: bool = False, diff: bool = False) -> dict:
    """Run a module file as Ansible would run it on the target, and return its JSON result."""
    payload = dict(args)
    payload["_ansible_check_mode"] = check
    payload["_ansible_diff"] = diff
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="ovz-args-", delete=False) as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": payload}, handle)
        args_file = handle.name
    try:
        env = dict(os.environ, PYTHONPATH=COLLECTIONS_ROOT)
        proc = subprocess.run([sys.executable, os.path.join(MODULES_DIR, module + ".py"), args_file],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=env,
                              timeout=300, check=False)
    finally:
        os.unlink(args_file)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError("module %s printed no JSON (rc %d): %s %s"
                             % (module, proc.returncode, proc.stdout, proc.stderr)) from None
    return result
