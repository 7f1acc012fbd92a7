# -*- coding: utf-8 -*-
"""Live migration over real SSH between harness nodes (issue 7; tests/support/multinode.py).

The migration runs in node 1's netns (as Ansible would run it there), node 2 is
the target, and the hub (a third namespace) holds the TCP clients. The workload
(tests/integration/ckpt_workload.c, started by the container's init) keeps a
counter in memory, timers, pipes, SysV IPC and an echo service; a connection
made before the migration must carry on after it. Lazy (post-copy) migration is the
engine's default where both hosts pass ``criu check --feature uffd-noncoop``, so the
tests without ``lazy=`` take that path; memfill.c (a pattern in LAZY_MIB of memory,
checked over and over) proves that every page arrived.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time

import pytest

from support.node import running_lxcfs
from support.snapshot import host_snapshot
from support.migration import HTTP_PORT, PORT, addresses, echo, make_container, ping_all, sh, status_of, wait_status
from support.migration import workload  # noqa: F401 - fixtures  pylint: disable=unused-import

from ansible_collections.ovz.containers.plugins.module_utils._engine.resources import quota

pytest_plugins = ["support.multinode"]   # the harness fixture
pytestmark = pytest.mark.multinode

MEMFILL_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "memfill.c")
LAZY_MIB = 96        # the memory the lazy-migration test fills with a pattern and checks


DATA_MD5 = hashlib.md5(b"ovz-migration-data\n" * 1000).hexdigest()


@pytest.fixture(scope="session")
def memfill(session_dir):
    binary = os.path.join(session_dir, "memfill")
    if not os.path.exists(binary):
        subprocess.run(["gcc", "-static", "-O2", "-o", binary, MEMFILL_SRC], check=True)
    return binary


def run_migration(node, name, target, fault=None, kill_during=None, **options):
    """Migrate ``name`` from ``node`` (in its netns, as its own process); the result, or None if it died.

    ``fault``: the phase after which the process kills itself; ``kill_during``: the phase
    after which a timer kills it a moment later (while the next step runs).
    """
    code = ("import json, os, sys, threading\n"
            "from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager\n"
            "from ansible_collections.ovz.containers.plugins.module_utils._engine.ops import migration\n"
            "def hook(phase):\n"
            "    if phase == %r:\n"
            "        os.kill(os.getpid(), 9)\n"
            "    if phase == %r:\n"
            "        threading.Timer(0.15, os.kill, (os.getpid(), 9)).start()\n"
            "m = ContainerManager(%r, %r)\n"
            "try:\n"
            "    r = migration.migrate(m, %r, %r, hook=hook, **%r)\n"
            "except Exception as exc:\n"
            "    r = {'failed': True, 'msg': str(exc), 'param': getattr(exc, 'param', None)}\n"
            "print('\\n' + json.dumps(r, default=str))\n"
            % (fault, kill_during, node.data_dir, node.cgroup_parent, name, target, options))
    proc = node.python(code, check=False)
    if proc.returncode == -9:
        return None
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def wait_converged(node, name, timeout=90):
    """Wait until no migration journal of ``name`` is left on ``node`` (the watchdog has converged)."""
    journal = os.path.join(node.data_dir, "dump", name, "migrate.json")
    deadline = time.monotonic() + timeout
    while os.path.exists(journal):
        assert time.monotonic() < deadline, "the migration of %s did not converge: %s" % (name, open(journal).read())
        time.sleep(0.2)
    lock = os.path.join(node.data_dir, "dump", name, "migrate.lock")
    while os.path.exists(lock) and subprocess.run(["flock", "-n", lock, "true"], check=False).returncode != 0:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def assert_gone(node, name, ips):
    """Nothing of ``name`` is left on ``node``: config, private area, mounts, links, routes, proxies, cgroups."""
    assert node.engine("manager.status(%r)" % name) == "absent"
    for sub in ("conf/%s.json" % name, "private/" + name, "root/" + name, "dump/" + name, "run/" + name):
        assert not os.path.lexists(os.path.join(node.data_dir, sub)), sub
    with open("/proc/self/mountinfo") as handle:
        assert os.path.join(node.data_dir, "root", name) not in handle.read()
    assert [link for link in node.netns.links() if link not in ("lo", "ovz0")] == []
    routes = node.netns.ip("route", "show") + node.netns.ip("-6", "route", "show")
    proxies = node.netns.ip("neigh", "show", "proxy") + node.netns.ip("-6", "neigh", "show", "proxy")
    for ip in ips:
        assert ip not in routes and ip not in proxies
    # Named ovz-<node>-<name> (or ovz-<name>, started before data dirs had an identity).
    cgroups = subprocess.run(["find", "/sys/fs/cgroup", "-name", "ovz-" + name, "-o", "-name", "ovz-*-" + name],
                             stdout=subprocess.PIPE, universal_newlines=True, check=False).stdout
    assert [line for line in cgroups.split() if "/%s/" % node.cgroup_parent in line] == []


def assert_answers(harness, ips):
    for ip in ips:
        assert harness.hub.run(["busybox", "ping", "-c1", "-W2", ip], check=False).returncode == 0, ip
        sock = harness.tcp_connect(ip, HTTP_PORT)
        try:
            sock.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
            data = b""
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            assert b"ovz-www" in data, data
        finally:
            sock.close()
    sock = harness.tcp_connect(ips[0], PORT)
    try:
        assert echo(sock, "new") == "echo:new"
    finally:
        sock.close()


def states(harness, name):
    return [node.engine("manager.status(%r)" % name) for node in harness.nodes[:2]]


# ---------------------------------------------------------------------------------------
# the happy path
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["directory", "image"])
def test_live_migration(harness, busybox_template, workload, layout):
    node1, node2, _node3 = harness.nodes
    name = "ovzmig" + layout[0]
    ips = addresses(30 if layout == "directory" else 31)
    make_container(node1, name, busybox_template, workload, ips, layout=layout, tcp=False)
    try:
        ping_all(harness, ips)
        before = wait_status(node1, name)
        result = run_migration(node1, name, node2.target(), pre_dump_iterations=3)
        assert result.get("changed") is True, result
        assert result["mode"] == "online" and result["frozen_time"] > 0
        assert set(result["timings"]) >= {"preflight", "copy", "dump", "sync", "restore", "cleanup", "total"}
        assert result["sizes"]["dump"] > 0 and result["sizes"]["private"] > 0
        assert sorted(ip for ip, _dev in result["announced"]) == sorted(ips)
        after = wait_status(node2, name, above=int(before["counter"]))  # the counter went on from where it was
        assert after["pid"] == before["pid"]                            # in the same process
        assert sh(node2, name, "md5sum < /root/data").split()[0] == DATA_MD5
        ping_all(harness, ips)
        assert_gone(node1, name, ips)
        # The second run of the same task: nothing to do.
        again = run_migration(node1, name, node2.target())
        assert again["changed"] is False, again
    finally:
        for node in (node1, node2):
            node.engine("manager.destroy(%r)" % name)


def test_live_migration_keeps_connection(harness, busybox_template, workload):
    node1, node2, _node3 = harness.nodes
    name = "ovzmigt"
    ips = addresses(32)
    make_container(node1, name, busybox_template, workload, ips, tcp=True)
    conns = [harness.tcp_connect(ips[0], PORT), harness.tcp_connect(ips[0], PORT)]
    try:
        for conn in conns:
            assert echo(conn, "before") == "echo:before"
        before = status_of(node1, name)
        result = run_migration(node1, name, node2.target(), pre_dump_iterations=3)
        assert result.get("changed") is True, result
        # The same connections carry on: no reset, no reconnect.
        for conn in conns:
            assert echo(conn, "after") == "echo:after"
        after = status_of(node2, name)
        assert after["pid"] == before["pid"] and int(after["counter"]) > int(before["counter"])
        assert after["shm"] == "ok" and after["accepted"] == before["accepted"]
        assert int(after["posix"]) >= int(before["posix"]) and int(after["pipe"]) > int(before["pipe"])
        assert_answers(harness, ips)
        assert_gone(node1, name, ips)
    finally:
        for conn in conns:
            conn.close()
        for node in (node1, node2):
            node.engine("manager.destroy(%r)" % name)


def memstatus(node, name):
    line = sh(node, name, "cat /root/memstatus 2>/dev/null")
    return dict(pair.split("=", 1) for pair in line.split() if "=" in pair)


def wait_memstatus(node, name, above=0, timeout=60):
    """memfill's status once it has finished more than ``above`` passes over its memory."""
    deadline = time.monotonic() + timeout
    while True:
        status = memstatus(node, name)
        if int(status.get("pass", 0)) > above:
            return status
        assert time.monotonic() < deadline, "memfill in %s made no pass above %d: %s" % (name, above, status)
        time.sleep(0.2)


@pytest.mark.parametrize("lazy,kind", [
    (True, "privileged"), (False, "privileged"),
    pytest.param(True, "unprivileged", marks=pytest.mark.serial), (False, "unprivileged")])
def test_lazy_migration_memory_and_connection(request, harness, busybox_template, workload, memfill, lazy, kind):
    """Post-copy (lazy pages) and plain: LAZY_MIB of patterned memory arrives intact, connections carry on.
    Unprivileged containers too (lazy where the target allows unprivileged userfaultfd)."""
    node1, node2, _node3 = harness.nodes
    unprivileged = kind == "unprivileged"
    name = "ovzmlz%s%d" % ("u" if unprivileged else "", lazy)
    ips = addresses(34 + lazy + (3 if unprivileged else 0))
    if unprivileged and lazy:
        request.getfixturevalue("unprivileged_uffd")
    make_container(node1, name, busybox_template, workload, ips, tcp=True, memfill=(memfill, LAZY_MIB),
                   unprivileged=unprivileged)
    conns = [harness.tcp_connect(ips[0], PORT)]
    try:
        assert echo(conns[0], "before") == "echo:before"
        mem_before = wait_memstatus(node1, name)
        assert mem_before["bad"] == "0" and mem_before["mib"] == str(LAZY_MIB)
        before = status_of(node1, name)
        # Pre-dumps asked of a lazy migration are not made, and the result says so.
        result = run_migration(node1, name, node2.target(), lazy=lazy, pre_dump_iterations=2 if lazy else None)
        assert result.get("changed") is True, result
        assert result["lazy"] is lazy and result["frozen_time"] > 0, result
        if lazy:
            assert result["timings"]["lazy_transfer"] > 0 and result["pre_dump_iterations"] == 0, result
            assert any(w.startswith("pre_dump_iterations: 2 pre-dumps were asked") for w in result["warnings"]), result
            # The final dump wrote (almost) none of the memory: it followed the restore.
            assert result["sizes"]["dump"] < LAZY_MIB * (1 << 20) // 4, result["sizes"]
        else:
            assert "lazy_transfer" not in result["timings"] and result["sizes"]["dump"] > LAZY_MIB * (1 << 20), result
        # The same connection carries on, the same processes go on with all their memory intact.
        assert echo(conns[0], "after") == "echo:after"
        conns.append(harness.tcp_connect(ips[0], PORT))
        assert echo(conns[1], "new") == "echo:new"
        after = status_of(node2, name)
        assert after["pid"] == before["pid"] and int(after["counter"]) > int(before["counter"])
        mem_after = wait_memstatus(node2, name, above=int(memstatus(node2, name).get("pass", 0)))
        assert mem_after["pid"] == mem_before["pid"] and int(mem_after["pass"]) > int(mem_before["pass"])
        assert mem_after["bad"] == "0", mem_after
        assert_gone(node1, name, ips)
        # Nothing of the transfer is left: no page server here, no lazy-pages daemon there.
        for node in (node1, node2):
            assert not os.path.exists(os.path.join(node.data_dir, "dump", name))
        leftovers = subprocess.run(["pgrep", "-f", "criu (dump|lazy-pages) -D %s" % harness.base],
                                   stdout=subprocess.PIPE, universal_newlines=True, check=False).stdout
        assert leftovers.strip() == ""
    finally:
        for conn in conns:
            conn.close()
        for node in (node1, node2):
            node.engine("manager.destroy(%r)" % name)


def test_rolled_back_migration_keeps_the_connection(harness, busybox_template, workload):
    """A migration that dies after the final dump (the tasks stopped, sockets in repair, the network
    locked) rolls back: the container carries on here with the same established TCP connection."""
    node1, _node2, _node3 = harness.nodes
    name = "ovzmrb"
    ips = addresses(33)
    make_container(node1, name, busybox_template, workload, ips, tcp=True)
    conn = harness.tcp_connect(ips[0], PORT)
    try:
        assert echo(conn, "before") == "echo:before"
        before = status_of(node1, name)
        assert run_migration(node1, name, harness.nodes[1].target(), fault="dump") is None
        wait_converged(node1, name)
        assert states(harness, name)[:2] == ["running", "absent"]
        assert echo(conn, "after") == "echo:after"         # the same socket: no reset, no reconnect
        after = status_of(node1, name)
        assert after["pid"] == before["pid"] and after["accepted"] == before["accepted"]
    finally:
        conn.close()
        for node in harness.nodes[:2]:
            node.engine("manager.destroy(%r)" % name)


# ---------------------------------------------------------------------------------------
# faults: the migration is killed after (or during) each phase
# ---------------------------------------------------------------------------------------

FAULT_PHASES = ["preflight", "copy", "predump", "dump", "restore", "transfer", "restore-plain"]


@pytest.fixture
def unprivileged_uffd():
    """vm.unprivileged_userfaultfd = 1 for the test (a host-wide setting: such tests are serial)."""
    path = "/proc/sys/vm/unprivileged_userfaultfd"
    with open(path) as handle:
        old = handle.read().strip()
    with open(path, "w") as handle:
        handle.write("1")
    try:
        yield
    finally:
        with open(path, "w") as handle:
            handle.write(old)


KILLED = [pytest.param(phase, "privileged", id=phase) for phase in FAULT_PHASES] + [
    pytest.param(phase, "unprivileged", id="unprivileged-" + phase,
                 marks=[pytest.mark.serial] if phase == "transfer" else [])
    for phase in FAULT_PHASES]


@pytest.mark.parametrize("phase,kind", KILLED)
def test_killed_migration_converges(request, harness, busybox_template, workload, memfill, phase, kind):
    """Killed after (or during) each phase. Lazy migration is the default where both hosts support it;
    ``transfer``: killed once restored while the pages are still coming; ``restore-plain``: not lazy.
    Unprivileged containers too (a lazy one where the target allows unprivileged userfaultfd)."""
    node1, node2, _node3 = harness.nodes
    unprivileged = kind == "unprivileged"
    index = 40 + FAULT_PHASES.index(phase) + (100 if unprivileged else 0)
    name = "ovzmf%s%d" % ("u" if unprivileged else "", index)
    ips = addresses(index)
    if unprivileged and phase == "transfer":
        request.getfixturevalue("unprivileged_uffd")
    if phase == "predump":
        dirty = node1.python("from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.criu import Criu\n"
                             "print(Criu().feature('mem_dirty_track'))").stdout.strip()
        if dirty != "True":
            pytest.skip("this kernel cannot track dirty memory (CONFIG_MEM_SOFT_DIRTY): no pre-dumps here")
    make_container(node1, name, busybox_template, workload, ips, tcp=False,
                   memfill=(memfill, LAZY_MIB) if phase == "transfer" else None, unprivileged=unprivileged)
    try:
        before = wait_status(node1, name)
        if phase in ("restore", "restore-plain"):
            result = run_migration(node1, name, node2.target(), kill_during="sync", lazy=None if phase == "restore" else False)
        elif phase == "transfer":
            result = run_migration(node1, name, node2.target(), fault=phase, lazy=True)
        else:
            result = run_migration(node1, name, node2.target(), fault=phase)
        assert result is None, "the migration was not killed: %s" % result
        wait_converged(node1, name)
        # Exactly one node runs it, with its memory and its files.
        current = states(harness, name)
        assert sorted(current) == ["absent", "running"], current
        where = harness.nodes[current.index("running")]
        after = wait_status(where, name, above=int(before["counter"]))
        assert after["pid"] == before["pid"]
        assert sh(where, name, "wc -c < /root/data").strip() == str(len("ovz-migration-data\n") * 1000)
        if phase == "transfer":
            # Whichever way it went (the pages all arrived, or the transfer broke and it rolled back),
            # every byte of its memory is intact.
            assert wait_memstatus(where, name, above=int(memstatus(where, name).get("pass", 0)))["bad"] == "0"
        ping_all(harness, ips)
        if where is node1:
            assert node2.engine("manager.layout.names()") == []
            assert not os.path.exists(os.path.join(node1.data_dir, "dump", name, "migrate"))
        else:
            assert_gone(node1, name, ips)
        # The second run of the same task converges: the container ends on node 2, once.
        result = run_migration(node1, name, node2.target())
        assert "failed" not in result, result
        assert states(harness, name) == ["absent", "running"]
        assert wait_status(node2, name, above=int(after["counter"]))["pid"] == before["pid"]
        assert_gone(node1, name, ips)
        ping_all(harness, ips)
        assert run_migration(node1, name, node2.target())["changed"] is False
    finally:
        for node in (node1, node2):
            node.engine("manager.destroy(%r)" % name)


# ---------------------------------------------------------------------------------------
# bad inputs: fail clearly, change nothing
# ---------------------------------------------------------------------------------------

def _snapshots(harness):
    """Both nodes' data dirs (but the files the running workload rewrites), cgroups, mounts, links."""
    shots = []
    for node in harness.nodes[:2]:
        shot = host_snapshot(node.data_dir)
        shot["files"] = {k: v for k, v in shot["files"].items()
                         if not re.match(r"((private|root)/[^/]+/root/status|run/[^/]+/volatile/console.log)$", k)}
        shot["links"] = node.netns.links()
        shot["routes"] = node.netns.ip("route", "show") + node.netns.ip("neigh", "show", "proxy")
        shots.append(shot)
    return shots


def assert_unchanged(before, after):
    for index, (old, new) in enumerate(zip(before, after)):
        for key in old:
            if key == "files":
                changed = sorted(k for k in set(old[key]) | set(new[key]) if old[key].get(k) != new[key].get(k))
                assert not changed, "node%d: files changed: %s" % (index + 1, changed)
            else:
                assert old[key] == new[key], "node%d: %s changed: %s -> %s" % (index + 1, key, old[key], new[key])


def test_bad_inputs_change_nothing(harness, busybox_template, workload):
    node1, node2, _node3 = harness.nodes
    name = "ovzmbad"
    ips = addresses(50)
    make_container(node1, name, busybox_template, workload, ips, tcp=False)
    try:
        snapshot = _snapshots(harness)
        # Unreachable target (no node has this address).
        result = run_migration(node1, name, node2.target(host="10.213.200.99", connect_timeout=3))
        assert result.get("failed") and result["param"] == "target", result
        assert "10.213.200.99" in result["msg"]
        # A target that refuses our key.
        result = run_migration(node1, name, node2.target(identity_file=node1.harness.host_key))
        assert result.get("failed") and result["param"] == "target", result
        # Malformed inputs.
        for target, param in (("-oProxyCommand=x", "target"), ("root@host:99999", "target"),
                              ({"host": "h", "colour": 1}, "target")):
            result = run_migration(node1, name, target)
            assert result.get("failed") and result["param"] == param, result
        result = run_migration(node1, name, node2.target(), pre_dump_iterations=-1)
        assert result["param"] == "pre_dump_iterations", result
        # Unknown container.
        result = run_migration(node1, "ovznosuch", node2.target())
        assert result.get("failed") and result["param"] == "name", result
        assert_unchanged(snapshot, _snapshots(harness))
        # The name is already taken on the target (by a stopped container there).
        node2.create_container(name, busybox_template, [], start=False)
        snapshot = _snapshots(harness)
        result = run_migration(node1, name, node2.target())
        assert result.get("failed") and result["param"] == "name", result
        assert "already exists on the target" in result["msg"]
        # An address of the container is already used on the target.
        node2.engine("manager.destroy(%r)" % name)
        node2.create_container("ovzmother", busybox_template, [ips[0]], start=False)
        snapshot = _snapshots(harness)
        result = run_migration(node1, name, node2.target())
        assert result.get("failed") and result["param"] == "ip_address", result
        assert_unchanged(snapshot, _snapshots(harness))
        # Check mode: reports the move, touches nothing.
        node2.engine("manager.destroy('ovzmother')")
        snapshot = _snapshots(harness)
        result = run_migration(node1, name, node2.target(), check_mode=True)
        assert result["changed"] is True and result["target_info"]["criu_version"], result
        assert_unchanged(snapshot, _snapshots(harness))
        assert states(harness, name) == ["running", "absent"]
    finally:
        for node in (node1, node2):
            for other in (name, "ovzmother"):
                node.engine("manager.destroy(%r)" % other)


def test_lxcfs_on_the_source_only_is_refused_before_the_freeze(harness, busybox_template, workload):
    """A container showing LXCFS's views cannot be restored where LXCFS does not run: the preflight says
    so (naming the target) before anything is frozen or copied."""
    node1, node2, _node3 = harness.nodes
    name = "ovzmlxc"
    ips = addresses(51)
    with running_lxcfs(node1.data_dir, before_stop=lambda: node1.engine("manager.destroy(%r)" % name)):
        make_container(node1, name, busybox_template, workload, ips, tcp=False)
        assert "proc/meminfo" in sh(node1, name, "grep lxcfs /proc/mounts | sed -n 's@^[^ ]* /@@p' | cut -d' ' -f1")
        before = status_of(node1, name)
        snapshot = _snapshots(harness)
        result = run_migration(node1, name, node2.target())
        assert result.get("failed") and result["param"] == "target", result
        assert "LXCFS does not run on the target" in result["msg"] and "proc/meminfo" in result["msg"], result
        assert_unchanged(snapshot, _snapshots(harness))
        assert states(harness, name) == ["running", "absent"]
        assert wait_status(node1, name, above=int(before["counter"]))["pid"] == before["pid"]


def test_offline_migration(harness, busybox_template):
    node1, node2, _node3 = harness.nodes
    name = "ovzmoff"
    node1.create_container(name, busybox_template, addresses(60), layout="image", start=False)
    try:
        result = run_migration(node1, name, node2.target(), keep_source=True)
        assert result["changed"] and result["mode"] == "offline" and result["frozen_time"] is None, result
        assert states(harness, name) == ["stopped", "stopped"]
        assert not os.path.exists(os.path.join(node1.data_dir, "dump", name))
        node2.engine("manager.start(%r, wait_boot=True)" % name)
        assert harness.hub.ping(addresses(60)[0])
    finally:
        for node in (node1, node2):
            node.engine("manager.destroy(%r)" % name)


@pytest.mark.serial  # looks at the whole host's /tmp, where parallel migrations make their own ovz-ssh-*
def test_remote_engine_leaves_nothing(harness):
    """The engine shipped to the target runs from memory: no file of it on the target, no process after."""
    node1, node2, _node3 = harness.nodes
    before = set(os.listdir("/tmp"))
    code = ("import json\n"
            "from ansible_collections.ovz.containers.plugins.module_utils._engine.ops.remote import RemoteSession, Target\n"
            "s = RemoteSession(Target.from_param(%r))\n"
            "hello = s.open()\n"
            "st = s.call('status', data_dir=%r, cgroup_parent='auto', name='x')\n"
            "s.close()\n"
            "print('\\n' + json.dumps([hello, st]))\n" % (node2.target(), node2.data_dir))
    hello, status = json.loads(node1.python(code).stdout.strip().splitlines()[-1])
    assert status == {"state": "absent", "incoming": None}
    assert not os.path.exists("/proc/%d" % hello["pid"])
    assert not [entry for entry in set(os.listdir("/tmp")) - before if re.match("ovz-(ssh|engine)-", entry)]


# ---------------------------------------------------------------------------------------
# through Ansible: ovz_checkpoint state=migrated, node 1 managed over SSH like any host
# ---------------------------------------------------------------------------------------

MIGRATE_PLAY = """
- hosts: node1
  gather_facts: false
  tasks:
    - name: Live-migrate to node 2
      ovz.containers.ovz_checkpoint:
        name: "{{ ct }}"
        state: migrated
        data_dir: "{{ ovz_data_dir }}"
        cgroup_parent: "{{ ovz_cgroup_parent }}"
        target: "root@{{ hostvars['node2'].ansible_host }}"
        target_data_dir: "{{ hostvars['node2'].ovz_data_dir }}"
        target_cgroup_parent: "{{ hostvars['node2'].ovz_cgroup_parent }}"
        target_python: "{{ ansible_python_interpreter }}"
        identity_file: "{{ ansible_ssh_private_key_file }}"
        known_hosts: "{{ known_hosts }}"
        pre_dump_iterations: 2
      register: moved
    - name: Keep the result
      check_mode: false
      ansible.builtin.copy:
        content: "{{ moved | to_json }}"
        dest: "{{ out }}"
"""


def test_module_migrated(harness, busybox_template, workload):
    node1, node2, _node3 = harness.nodes
    name = "ovzmmod"
    ips = addresses(70)
    make_container(node1, name, busybox_template, workload, ips, tcp=False)
    play = os.path.join(harness.base, "migrate.yml")
    with open(play, "w") as handle:
        handle.write(MIGRATE_PLAY)
    out = os.path.join(harness.base, "moved.json")

    def run(check=False):
        extra = ["-e", json.dumps({"ct": name, "out": out, "known_hosts": harness.known_hosts})]
        proc = harness.playbook(play, extra + (["--check"] if check else []))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        with open(out) as handle:
            return json.load(handle)

    try:
        before = wait_status(node1, name)
        snapshot = _snapshots(harness)
        checked = run(check=True)
        assert checked["changed"] is True and checked["migration"]["target_info"]["criu_version"], checked
        assert_unchanged(snapshot, _snapshots(harness))
        moved = run()
        assert moved["changed"] is True and moved["frozen_ms"] > 0, moved
        assert set(moved["timings"]) >= {"copy_ms", "dump_ms", "restore_ms", "total_ms"}
        assert states(harness, name) == ["absent", "running"]
        assert wait_status(node2, name, above=int(before["counter"]))["pid"] == before["pid"]
        ping_all(harness, ips)
        assert_gone(node1, name, ips)
        again = run()
        assert again["changed"] is False, again
    finally:
        for node in (node1, node2):
            node.engine("manager.destroy(%r)" % name)


# ---------------------------------------------------------------------------------------
# a Debian 12 container with systemd as its init
# ---------------------------------------------------------------------------------------

@pytest.mark.debian
@pytest.mark.slow
@pytest.mark.parametrize("unprivileged", [False, True], ids=["privileged", "unprivileged"])
def test_live_migration_debian(harness, debian_template, unprivileged):
    if not quota.has_capability(quota.CAP_SYS_RESOURCE):
        # The template's drop-in (service.d/ovz-checkpoint.conf) takes away the nested UTS namespaces
        # and BPF programs; CRIU then reads the rlimits of processes of other users (prlimit), which
        # needs CAP_SYS_RESOURCE. Shown on the VMs: tests/vm/test_debian_systemd.py.
        if unprivileged:
            pytest.skip("root here lacks CAP_SYS_RESOURCE: the dump runs as the container's owner (criu "
                        "--unprivileged), which leaves the cgroups of systemd's services out of the images")
        pytest.skip("root here lacks CAP_SYS_RESOURCE: CRIU cannot read the rlimits of the Debian container's "
                    "processes of other users")
    node1, node2, _node3 = harness.nodes
    name = "ovzmdeb%d" % unprivileged
    ips = addresses(80 + unprivileged)
    node1.create_container(name, debian_template, ips, layout="image", start=False, unprivileged=unprivileged)
    try:
        node1.engine("manager.start(%r)" % name)   # systemd: no boot marker, poll is-system-running
        deadline = time.monotonic() + 180
        while sh(node1, name, "systemctl is-system-running || true").strip() not in ("running", "degraded"):
            assert time.monotonic() < deadline, "systemd did not finish booting"
            time.sleep(0.5)
        sh(node1, name, "echo ovz-debian-data > /root/data; sync")
        journald = sh(node1, name, "pidof systemd-journald").strip()
        assert journald
        result = run_migration(node1, name, node2.target())
        assert result.get("changed") is True, result
        assert sh(node2, name, "systemctl is-system-running || true").strip() in ("running", "degraded")
        assert sh(node2, name, "pidof systemd-journald").strip() == journald
        assert sh(node2, name, "cat /root/data").strip() == "ovz-debian-data"
        assert sh(node2, name, "systemctl start systemd-hostnamed && systemctl is-active systemd-hostnamed").strip() \
            == "active"
        ping_all(harness, ips)
        assert_gone(node1, name, ips)
    finally:
        for node in (node1, node2):
            node.engine("manager.destroy(%r)" % name)


# ---------------------------------------------------------------------------------------
# unprivileged containers
# ---------------------------------------------------------------------------------------

def idmap_of(node, name):
    return node.engine("manager.idmap.lookup(%r)" % name)


def test_unprivileged_live_migration_keeps_connection_and_owners(harness, busybox_template, workload):
    """An unprivileged container moves with its established connection, its processes and its files' owners
    as seen inside; the target maps it to a block of its own (the source's is still in use while it runs
    there), and nothing of it is left on the source, its id block included."""
    node1, node2, _node3 = harness.nodes
    name = "ovzmigu"
    ips = addresses(36)
    make_container(node1, name, busybox_template, workload, ips, tcp=True, unprivileged=True)
    conn = harness.tcp_connect(ips[0], PORT)
    try:
        assert echo(conn, "before") == "echo:before"
        sh(node1, name, "touch /root/www-file; chown 33:33 /root/www-file")
        owners = sh(node1, name, "stat -c '%n %u:%g' /root/data /root/www-file /etc/passwd")
        source_block = idmap_of(node1, name)["uid"]
        before = status_of(node1, name)
        result = run_migration(node1, name, node2.target())
        assert result.get("changed") is True, result
        if not harness_allows_unprivileged_uffd(node2):
            assert result["lazy"] is False, result
            assert any(w.startswith("lazy: not lazy") and "vm.unprivileged_userfaultfd" in w
                       for w in result["warnings"]), result
        assert echo(conn, "after") == "echo:after"          # the same socket: no reset, no reconnect
        after = status_of(node2, name)
        assert after["pid"] == before["pid"] and int(after["counter"]) > int(before["counter"])
        assert sh(node2, name, "stat -c '%n %u:%g' /root/data /root/www-file /etc/passwd") == owners
        target_block = idmap_of(node2, name)["uid"]
        assert target_block != source_block
        init_pid = node2.engine("manager.runtime(%r).init_pid" % name)
        with open("/proc/%d/uid_map" % init_pid) as handle:
            assert handle.read().split() == ["0", str(target_block), "65536"]
        assert sh(node2, name, "id -u").strip() == "0"
        assert_gone(node1, name, ips)
        assert idmap_of(node1, name) is None
    finally:
        conn.close()
        for node in (node1, node2):
            node.engine("manager.destroy(%r)" % name)


def harness_allows_unprivileged_uffd(node):
    with open("/proc/sys/vm/unprivileged_userfaultfd") as handle:
        return handle.read().strip() == "1"


def test_unprivileged_lazy_migration_needs_unprivileged_userfaultfd(harness, busybox_template, workload):
    """Asked for a lazy migration of an unprivileged container, a target that keeps userfaultfd to
    privileged processes is refused before anything is copied or frozen, naming ``lazy`` and why."""
    node1, node2, _node3 = harness.nodes
    if harness_allows_unprivileged_uffd(node2):
        pytest.skip("vm.unprivileged_userfaultfd is 1 on this host")
    name = "ovzmigul"
    ips = addresses(39)
    make_container(node1, name, busybox_template, workload, ips, tcp=False, unprivileged=True)
    try:
        before = wait_status(node1, name)
        result = run_migration(node1, name, node2.target(), lazy=True)
        assert result.get("failed") and result["param"] == "lazy", result
        assert "vm.unprivileged_userfaultfd" in result["msg"], result
        print("\nrefused lazy migration says: %s" % result["msg"])
        assert states(harness, name) == ["running", "absent"]
        assert wait_status(node1, name, above=int(before["counter"]))["pid"] == before["pid"]
        assert node2.engine("manager.layout.names()") == []
    finally:
        for node in (node1, node2):
            node.engine("manager.destroy(%r)" % name)


def test_shifted_unprivileged_container_is_refused_naming_unprivileged(harness, busybox_template):
    """Where the host refused an idmapped mount, an unprivileged container's files are shifted into the
    node's block, which the target's block would not match: refused before anything is copied."""
    node1, node2, _node3 = harness.nodes
    name = "ovzmigsh"
    node1.python("from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel import idmap\n"
                 "from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import "
                 "ContainerManager\n"
                 "idmap.FORCE_MODE = 'shifted'\n"
                 "ContainerManager(%r, %r).create(%r, %r, layout='directory', unprivileged=True)\n"
                 % (node1.data_dir, node1.cgroup_parent, name, busybox_template))
    try:
        assert idmap_of(node1, name)["mode"] == "shifted"
        result = run_migration(node1, name, node2.target())
        assert result.get("failed") and result["param"] == "unprivileged", result
        assert "shifted" in result["msg"] and "make it privileged" in result["msg"], result
        assert states(harness, name) == ["stopped", "absent"]
        assert node2.engine("manager.layout.names()") == []
    finally:
        for node in (node1, node2):
            node.engine("manager.destroy(%r)" % name)
