"""Remove what the test suite may have left on this host, then fail if anything remains.

The suite names everything it creates after its work directories
(/var/tmp/ovz-tests-*) and its node cgroup parents (ovz-t<6 hex>), so the
sweep touches only those (and, for the multi-node harness, the netns
ovz-m<6 hex>h / ovz-m<6 hex>n<i> and the sshd processes recorded with their
start time in /var/tmp/ovz-tests-*/mn-*/harness.json); other ovz* objects on the host are reported, not
removed.

A work directory whose test session is still running (its owner.json names a live pid with the
same start time) is left alone, and so is everything not attributable to one directory (cgroups,
network namespaces): several test runs may share this host. Leftovers of finished sessions are
removed as usual.
"""
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from collection_path import ensure_collection_path  # noqa: E402

ensure_collection_path()

from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager  # noqa: E402

WORK_GLOB = "/var/tmp/ovz-tests-*"
SUITE_CGROUP = re.compile(r"^ovz-t[0-9a-f]{6}$")
SUITE_NETNS = re.compile(r"^ovz-t[hxs][0-9a-f]{6}$")  # the network tests' host, outside and sniffer
HARNESS_NETNS = re.compile(r"^ovz-m[0-9a-f]{6}(h|n[0-9])$")  # the multi-node harness: hub and nodes
HARNESS_GLOB = os.path.join(WORK_GLOB, "mn-*", "harness.json")


SESSION_OWNER = "owner.json"  # written by tests/conftest.py session_dir


def session_is_live(work):
    try:
        with open(os.path.join(work, SESSION_OWNER)) as handle:
            owner = json.load(handle)
        return process_starttime(int(owner["pid"])) == int(owner["starttime"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def finished_work_dirs():
    return [w for w in glob.glob(WORK_GLOB) if not session_is_live(w)]


def live_work_dirs():
    return [w for w in glob.glob(WORK_GLOB) if session_is_live(w)]


def in_finished_session(path):
    live = live_work_dirs()
    return "/ovz-tests-" in path and not any(path == w or path.startswith(w + "/") for w in live)


def suite_mounts():
    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle]
    return [p for p in points if in_finished_session(p)]


def suite_loops():
    out = subprocess.run(["losetup", "-a"], stdout=subprocess.PIPE, universal_newlines=True, check=False).stdout
    return [line.split(":")[0] for line in out.splitlines() if in_finished_session(line.split(":", 1)[-1])]


def suite_cgroups():
    found = []
    for hierarchy in sorted(os.listdir("/sys/fs/cgroup")):
        top = os.path.join("/sys/fs/cgroup", hierarchy)
        for directory, dirs, _files in os.walk(top):
            for name in list(dirs):
                if SUITE_CGROUP.match(name):
                    found.append(os.path.join(directory, name))
                    dirs.remove(name)
    return found


def suite_netns():
    try:
        return sorted(n for n in os.listdir("/run/netns") if SUITE_NETNS.match(n) or HARNESS_NETNS.match(n))
    except FileNotFoundError:
        return []


def process_starttime(pid):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def harness_records():
    records = []
    for path in glob.glob(HARNESS_GLOB):
        if not in_finished_session(path):
            continue
        try:
            with open(path) as handle:
                records.append(json.load(handle))
        except (OSError, ValueError) as exc:
            print("sweep: unreadable harness record %s: %s" % (path, exc), file=sys.stderr)
    return records


def harness_sshds():
    """sshd processes of multi-node harnesses still alive: (pid, starttime), checked against the record."""
    found = []
    for record in harness_records():
        for node in record.get("nodes", []):
            pid, start = node.get("sshd_pid"), node.get("sshd_starttime")
            if pid and start is not None and process_starttime(pid) == start:
                found.append((pid, start))
    return found


def sweep_harnesses():
    """Containers of harness nodes are destroyed in the node's netns (their host ends live there), then sshd ends."""
    for record in harness_records():
        for node in record.get("nodes", []):
            netns = os.path.join("/run/netns", node.get("netns", ""))
            data = node.get("data_dir")
            if data and os.path.isdir(data) and os.path.exists(netns) and HARNESS_NETNS.match(node["netns"]):
                code = ("import sys\nsys.path.insert(0, %r)\n" % ensure_collection_path()
                        + "from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager\n"
                        "m = ContainerManager(%r, %r)\n"
                        "for n in m.layout.names():\n"
                        "    m.destroy(n)\n"
                        "    print('sweep: destroyed leftover container %%s in %%s' %% (n, %r))\n"
                        % (data, node.get("cgroup_parent") or "auto", data))
                subprocess.run(["nsenter", "--net=" + netns, sys.executable, "-I", "-c", code], check=False)
    for pid, start in harness_sshds():
        for signum in (signal.SIGTERM, signal.SIGKILL):
            if process_starttime(pid) != start:
                break
            os.kill(pid, signum)
            for _attempt in range(100):
                if process_starttime(pid) != start:
                    break
                time.sleep(0.02)
        print("sweep: ended harness sshd %d" % pid)


def other_ovz_objects():
    found = []
    for hierarchy in sorted(os.listdir("/sys/fs/cgroup")):
        for directory, dirs, _files in os.walk(os.path.join("/sys/fs/cgroup", hierarchy)):
            for name in list(dirs):
                if name.startswith("ovz"):
                    found.append(os.path.join(directory, name))
                    dirs.remove(name)
    return found


def remove_cgroup_tree(path):
    for directory, _dirs, files in os.walk(path):
        for procs in ("cgroup.procs",):
            if procs in files:
                try:
                    for pid in open(os.path.join(directory, procs)).read().split():
                        try:
                            os.kill(int(pid), signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                except OSError:
                    pass
    for directory, _dirs, _files in sorted(os.walk(path), key=lambda entry: -entry[0].count("/")):
        try:
            os.rmdir(directory)
        except OSError as exc:
            print("sweep: cannot remove %s: %s" % (directory, exc), file=sys.stderr)


def main():
    live = live_work_dirs()
    sweep_harnesses()
    for work in finished_work_dirs():
        for data in glob.glob(os.path.join(work, "node-*", "data")) + glob.glob(os.path.join(work, "*", "data")):
            manager = ContainerManager(data)
            for name in manager.layout.names():
                try:
                    manager.destroy(name)
                    print("sweep: destroyed leftover container %s in %s" % (name, data))
                except Exception as exc:  # noqa: BLE001
                    print("sweep: destroying %s failed: %s" % (name, exc), file=sys.stderr)
    for point in sorted(suite_mounts(), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)
    for loop in suite_loops():
        subprocess.run(["losetup", "-d", loop], check=False)
    if not live:
        for path in suite_cgroups():
            remove_cgroup_tree(path)
        for name in suite_netns():
            # Deleting the namespace takes the veths and bridges made inside it along.
            subprocess.run(["ip", "netns", "del", name], check=False)
    for work in finished_work_dirs():
        if not any(p.startswith(work + "/") for p in suite_mounts()):
            shutil.rmtree(work, ignore_errors=True)
    left = suite_mounts() + suite_loops() + finished_work_dirs()
    if live:
        print("sweep: %d test session(s) still running, their objects left alone: %s" % (len(live), " ".join(live)))
    else:
        left += suite_cgroups() + suite_netns()
    left += ["sshd pid %d" % pid for pid, _start in harness_sshds()]
    others = other_ovz_objects()
    if others:
        print("sweep: note: other ovz objects on this host (not the suite's): %s" % " ".join(others))
    if left:
        print("sweep: FAILED, the suite left: %s" % " ".join(left))
        return 1
    print("sweep: clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
