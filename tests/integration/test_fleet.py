# -*- coding: utf-8 -*-
"""ovz_fleet on the real kernel (issue 8): many containers of a node converged in one module run.

The module runs in a network namespace the test makes (``ovz-tf<tag>``, the node's
"host" network), as ``test_network.py`` does (``support/netlab.py``); container addresses come from
10.213.60.0/24 only. Limits are read back from the containers' cgroups, addresses
from the routes of the node's namespace and by ping. The module is tested three
ways (check mode changes nothing, the run changes, the rerun does not), and bad
input fails naming the container and the parameter, with the host unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys

import pytest

from support import COLLECTIONS_ROOT
from support.node import new_node, sh
from support.snapshot import host_snapshot
from support.netlab import Netns, in_ns, run_module_in
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.process import process_starttime

pytestmark = pytest.mark.slow

ADDRESSES = ["10.213.60.%d" % i for i in range(1, 10)]


class Fleet:
    """A node in its own network namespace, and the fleet module run there."""

    def __init__(self, node, template, netns):
        self.node = node
        self.template = template
        self.netns = netns

    def item(self, name, index, **extra):
        item = dict(name=name, node="node1", template=self.template, layout="directory",
                    limits=dict(ram="%dM" % (64 + 16 * index), cpuunits=1000 + 500 * index, numproc=100 + index),
                    network=dict(ip_address=[ADDRESSES[index]]))
        item.update(extra)
        return item

    def run(self, containers, check=False, diff=False, **extra):
        args = dict(containers=containers, node="node1", nodes=["node1", "node2"], fleet="ovztest",
                    data_dir=self.node.data_dir, cgroup_parent=self.node.cgroup_parent)
        args.update(extra)
        return run_module_in(self.netns, "ovz_fleet", args, check=check, diff=diff)

    def cgread(self, name, controller, filename):
        manager = self.node.manager
        directory = manager.cgroups_for(manager.runtime(name)).controller_dir(controller)
        with open(os.path.join(directory, filename)) as handle:
            return handle.read().strip()

    def routes(self):
        return self.netns.ip("-4", "route", "show")

    def cleanup(self):
        manager = self.node.manager
        for name in manager.layout.names():
            try:
                in_ns(self.netns.path, manager.destroy, name)
            except Exception as exc:  # noqa: BLE001 - clean as much as possible
                print("destroying %s failed: %s" % (name, exc), file=sys.stderr)


@pytest.fixture
def fleet(node, busybox_template):
    netns = Netns("ovz-tf" + node.tag)
    result = Fleet(node, busybox_template, netns)
    try:
        yield result
    finally:
        result.cleanup()
        netns.delete()


def names(node, count):
    return [node.name() for _index in range(count)]


def test_three_ways_kernel_state_and_changes(fleet):
    node = fleet.node
    cts = names(node, 3)
    items = [fleet.item(name, i) for i, name in enumerate(cts)]
    items[2].update(layout="image", quota=dict(diskspace="64M"))
    items.append(dict(name="ovzelsewhere", node="node2", template="no-such-template"))   # another node's: skipped
    before = host_snapshot(node.data_dir)
    checked = fleet.run(items, check=True, diff=True)
    assert not checked.get("failed"), checked
    assert checked["changed"] is True
    assert checked["summary"] == dict(created=3, changed=0, unchanged=0, removed=0)
    assert set(checked["containers"]) == set(cts)
    assert "limits.ram" in checked["containers"][cts[0]]["changes"]
    assert checked["diff"]["after"][cts[0]]["state"] == "running"
    assert host_snapshot(node.data_dir) == before, "check mode changed the host"

    first = fleet.run(items, diff=True)
    assert not first.get("failed"), first
    assert first["changed"] is True and first["summary"]["created"] == 3
    assert set(first["timings"]) == {"plan", "apply"} and set(checked["timings"]) == {"plan"}
    for i, name in enumerate(cts):
        result = first["containers"][name]
        assert result["state"] == "running" and "created" in result["changes"], result
        assert fleet.cgread(name, "memory", "memory.limit_in_bytes") == str((64 + 16 * i) << 20)
        assert fleet.cgread(name, "pids", "pids.max") == str(100 + i)
        assert fleet.cgread(name, "cpu", "cpu.shares") == ("1024", "1536", "2048")[i]    # cpuunits 1000, 1500, 2000
        assert ADDRESSES[i] in fleet.routes()
        assert fleet.netns.ping(ADDRESSES[i]), "%s does not answer at %s" % (name, ADDRESSES[i])
        config = node.manager.load(name)
        assert config.labels == {"ovz_fleet": "ovztest"}
        assert sh(node.manager, name, "ip -4 addr show eth0").stdout.decode().count(ADDRESSES[i]) == 1
    assert node.manager.load(cts[2]).layout == "image"
    assert not node.manager.exists("ovzelsewhere")
    pids = dict((name, node.manager.runtime(name).init_pid) for name in cts)

    second = fleet.run(items, diff=True)
    assert not second.get("failed"), second
    assert second["changed"] is False, second
    assert second["summary"] == dict(created=0, changed=0, unchanged=3, removed=0)
    assert second["diff"] == dict(before={}, after={})
    assert fleet.run(items, check=True)["changed"] is False

    # A change to two of them: only those change, live, without a restart.
    items[0]["limits"]["ram"] = "200M"
    items[1]["network"]["ip_address"] = [ADDRESSES[5]]
    before = host_snapshot(node.data_dir)
    checked = fleet.run(items, check=True, diff=True)
    assert checked["changed"] is True and checked["summary"]["changed"] == 2
    assert checked["containers"][cts[0]]["changes"] == ["limits.ram"]
    assert checked["containers"][cts[1]]["changes"] == ["network.ip_address"]
    assert checked["containers"][cts[2]]["changed"] is False
    assert checked["diff"]["after"][cts[0]]["limits"]["ram"] == 200 << 20
    assert host_snapshot(node.data_dir) == before, "check mode changed the host"
    changed = fleet.run(items)
    assert changed["changed"] is True and changed["summary"] == dict(created=0, changed=2, unchanged=1, removed=0)
    assert fleet.cgread(cts[0], "memory", "memory.limit_in_bytes") == str(200 << 20)
    assert ADDRESSES[5] in fleet.routes() and ADDRESSES[1] not in fleet.routes()
    assert fleet.netns.ping(ADDRESSES[5])
    assert dict((name, node.manager.runtime(name).init_pid) for name in cts) == pids, "a container was restarted"
    assert fleet.run(items)["changed"] is False


def test_prune_removes_only_this_fleets_containers_and_states(fleet):
    node = fleet.node
    keep, gone, foreign = names(node, 3)
    items = [fleet.item(keep, 0), fleet.item(gone, 1)]
    assert fleet.run(items)["summary"]["created"] == 2
    # A container of nobody's fleet, made by the single module's engine, stays.
    node.manager.create(foreign, fleet.template, layout="directory")
    # Without prune, dropping an item leaves its container alone.
    assert fleet.run(items[:1])["changed"] is False
    assert node.manager.exists(gone)
    checked = fleet.run(items[:1], check=True, prune=True)
    assert checked["changed"] is True
    assert checked["containers"][gone] == dict(changed=True, changes=["removed"], state="absent")
    assert checked["pruned"] == [gone] and checked["prune_kept"] == {}
    assert node.manager.exists(gone)
    pruned = fleet.run(items[:1], prune=True)
    assert pruned["summary"] == dict(created=0, changed=0, unchanged=1, removed=1)
    assert pruned["pruned"] == [gone]
    assert not node.manager.exists(gone) and ADDRESSES[1] not in fleet.routes()
    assert node.manager.exists(foreign) and node.manager.exists(keep)
    assert fleet.run(items[:1], prune=True)["changed"] is False
    # States: stopped, then absent, through the same list.
    items[0]["state"] = "stopped"
    stopped = fleet.run(items[:1])
    assert stopped["containers"][keep]["changes"] == ["state"] and node.manager.status(keep) == "stopped"
    assert ADDRESSES[0] not in fleet.routes()
    items[0]["state"] = "absent"
    assert fleet.run(items[:1])["summary"]["removed"] == 1 and not node.manager.exists(keep)
    assert fleet.run(items[:1])["changed"] is False


BAD_INPUTS = [
    ("bad limit value", lambda items: items[1]["limits"].update(ram="12X"), "containers[{1}].limits.ram"),
    ("cpulimit beyond the host", lambda items: items[1]["limits"].update(cpulimit=100000), "containers[{1}].limits.cpulimit"),
    ("bad address", lambda items: items[1]["network"].update(ip_address=["10.213.60.300"]),
     "containers[{1}].network.ip_address"),
    ("address of another item", lambda items: items[1]["network"].update(ip_address=[ADDRESSES[0]]),
     "containers[{1}].network.ip_address"),
    ("bad hostname", lambda items: items[1].update(hostname="bad host!"), "containers[{1}].hostname"),
    ("missing template", lambda items: items[1].update(template="/nonexistent/ovz.tar.gz"), "containers[{1}].template"),
    ("image too small", lambda items: items[1].update(layout="image", quota=dict(diskspace="1M")),
     "containers[{1}].quota.diskspace"),
    ("bad quotatime", lambda items: items[1].update(quota=dict(quotatime="soon")), "containers[{1}].quota.quotatime"),
    ("layout change", lambda items: items[0].update(layout="image"), "containers[{0}].layout"),
    ("bad label", lambda items: items[1].update(labels={"-x": "y"}), "containers[{1}].labels"),
    ("unknown node", lambda items: items[1].update(node="nod1"), "containers[{1}].node"),
    ("duplicate name", lambda items: items[1].update(name=items[0]["name"]), "containers[1].name"),
    ("bad name", lambda items: items[1].update(name="-bad/name"), "containers[1].name"),
    ("unknown limit", lambda items: items[1]["limits"].update(rma="1G"), "containers.limits"),
    ("restarted is not a fleet state", lambda items: items[1].update(state="restarted"),  # Ansible checks it
     "value of state must be one of: present, started, stopped, frozen, absent, got: restarted found in containers"),
]


@pytest.mark.parametrize("label,break_it,param", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_fails_naming_container_and_parameter_and_changes_nothing(fleet, label, break_it, param):
    node = fleet.node
    cts = names(node, 2)
    items = [fleet.item(cts[0], 0)]
    assert fleet.run(items)["changed"] is True          # one container exists and runs
    items.append(fleet.item(cts[1], 1))
    break_it(items)
    before, routes = host_snapshot(node.data_dir), fleet.routes()
    result = fleet.run(items)
    assert result.get("failed") is True, result
    expected = param.format(*cts)
    assert expected in result["msg"], (expected, result["msg"])
    if "param" in result:
        assert result["param"] == expected, result
    assert host_snapshot(node.data_dir) == before, "a failed call changed the host"
    assert fleet.routes() == routes
    assert not node.manager.exists(cts[1])


def test_prune_needs_a_fleet_name(fleet):
    result = fleet.run([], prune=True, fleet=None)
    assert result.get("failed") is True and "fleet" in result["msg"], result


def test_an_unknown_node_fails_before_prune_touches_anything(fleet):
    """A misspelt node is not "another node's item": the run fails naming the item and the node, and the
    container that prune would have taken for undeclared runs on, with the same init."""
    node = fleet.node
    web, db = names(node, 2)
    items = [fleet.item(web, 0), fleet.item(db, 1)]
    assert fleet.run(items)["summary"]["created"] == 2
    pid = node.manager.runtime(db).init_pid
    items[1]["node"] = "nod1"
    before, routes = host_snapshot(node.data_dir), fleet.routes()
    for check in (True, False):
        result = fleet.run(items, check=check, prune=True)
        assert result.get("failed") is True, result
        assert result["param"] == "containers[%s].node" % db, result
        assert "item %s names node 'nod1', which is not an inventory host (did you mean node1" % db in result["msg"]
        assert result["pruned"] == [] and result["summary"] == {}
    assert host_snapshot(node.data_dir) == before and fleet.routes() == routes
    assert node.manager.status(db) == "running" and node.manager.runtime(db).init_pid == pid
    assert process_starttime(pid) is not None
    # This node itself must be one of the nodes.
    result = fleet.run(items[:1], node="node1", nodes=["node2"])
    assert result.get("failed") is True and result["param"] == "node", result


# -- the role, through ansible-playbook, on two nodes of this kernel ---------------------------------------------

PLAY = """\
- hosts: all
  gather_facts: false
  roles:
    - role: ovz.containers.ovz_fleet
"""
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


class RoleNodes:
    """Two nodes (data dirs and cgroup parents of this kernel) as the inventory hosts node1 and node2, with a
    local connection; the containers have no network, so no namespace is needed."""

    def __init__(self, base, nodes, template):
        self.base = base
        self.nodes = nodes
        self.template = template
        self.inventory = os.path.join(base, "inventory.ini")
        self.playbook = os.path.join(base, "fleet.yml")
        lines = ["[ovz_nodes]"]
        for index, node in enumerate(nodes, 1):
            lines.append("node%d ansible_connection=local ovz_fleet_data_dir=%s ovz_fleet_cgroup_parent=%s"
                         % (index, node.data_dir, node.cgroup_parent))
        lines += ["", "[ovz_nodes:vars]", "ansible_python_interpreter=%s" % sys.executable, ""]
        with open(self.inventory, "w") as handle:
            handle.write("\n".join(lines))
        with open(self.playbook, "w") as handle:
            handle.write(PLAY)

    def item(self, name, node, **extra):
        return dict(dict(name=name, node=node, template=self.template, layout="directory"), **extra)

    def play(self, items, prune=False, check=False, limit=None):
        variables = os.path.join(self.base, "vars.json")
        with open(variables, "w") as handle:
            json.dump(dict(ovz_fleet_name="ovzrole", ovz_fleet_prune=prune, ovz_fleet_containers=items), handle)
        argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", self.inventory,
                self.playbook, "-e", "@" + variables]
        argv += ["--check"] if check else []
        argv += ["--limit", limit] if limit else []
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_ROOT, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
                   ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_LOCALHOST_WARNING="0")
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                              env=env, timeout=600, check=False)
        recap = dict((host, dict(ok=int(ok), changed=int(changed), failed=int(failed)))
                     for host, ok, changed, _unreachable, failed in RECAP.findall(proc.stdout))
        return proc, recap

    def pids(self):
        """Every container of both nodes: (node index, name) -> init pid (None when stopped)."""
        result = {}
        for index, node in enumerate(self.nodes, 1):
            for name in node.manager.layout.names():
                runtime = node.manager.runtime(name)
                alive = runtime is not None and runtime.alive()
                result[(index, name)] = runtime.init_pid if alive else None
        return result

    def snapshots(self):
        return [host_snapshot(node.data_dir) for node in self.nodes]


@pytest.fixture
def role_nodes(session_dir, busybox_template, tmp_path):
    with contextlib.ExitStack() as stack:
        nodes = [stack.enter_context(new_node(session_dir)) for _index in range(2)]
        yield RoleNodes(str(tmp_path), nodes, busybox_template)


def prune_line(output, host):
    """What the role printed for ``host`` about prune."""
    match = re.search(r"ok: \[%s\] => \{\s*\"msg\": \"(prune [^\"]*)\"" % host, output)
    return match.group(1) if match else None


def test_role_fails_on_an_unknown_node_on_every_node_before_any_change(role_nodes):
    node1, node2 = role_nodes.nodes
    web, db = node1.name(), node2.name()
    items = [role_nodes.item(web, "node1"), role_nodes.item(db, "node2")]
    proc, recap = role_nodes.play(items)
    assert proc.returncode == 0, proc.stdout[-4000:]
    pids = role_nodes.pids()
    assert pids[(1, web)] and pids[(2, db)], pids
    before = role_nodes.snapshots()
    # web's node misspelt, and a new item on node2 that must not be created either.
    new = node2.name()
    items[0]["node"] = "nod1"
    for prune in (True, False):
        proc, recap = role_nodes.play(items + [role_nodes.item(new, "node2")], prune=prune)
        assert proc.returncode != 0, proc.stdout[-4000:]
        assert recap["node1"]["failed"] == 1 and recap["node2"]["failed"] == 1, recap
        assert recap["node1"]["changed"] == 0 and recap["node2"]["changed"] == 0, recap
        assert "containers[%s].node" % web in proc.stdout and "names node 'nod1'" in proc.stdout, proc.stdout[-4000:]
        assert "did you mean node1" in proc.stdout
        # Nothing changed: web still runs on node1 with its init, and nothing was created on node2.
        assert role_nodes.pids() == pids
        assert all(process_starttime(pid) is not None for pid in pids.values())
        assert role_nodes.snapshots() == before
    assert not node2.manager.exists(new)


def test_role_prune_under_limit_stays_within_the_run(role_nodes):
    node1, node2 = role_nodes.nodes
    moved, dropped1 = node1.name(), node1.name()
    dropped2, stays = node2.name(), node2.name()
    items = [role_nodes.item(moved, "node1"), role_nodes.item(dropped1, "node1"),
             role_nodes.item(dropped2, "node2"), role_nodes.item(stays, "node2")]
    proc, _recap = role_nodes.play(items)
    assert proc.returncode == 0, proc.stdout[-4000:]
    pids = role_nodes.pids()
    # The new declaration: moved goes to node2, dropped1 and dropped2 leave the fleet.
    declared = [role_nodes.item(moved, "node2"), role_nodes.item(stays, "node2")]
    before2 = host_snapshot(node2.data_dir)
    proc, recap = role_nodes.play(declared, prune=True, limit="node1")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert set(recap) == {"node1"}, recap
    # On node1, what left the fleet is gone; what moved to node2, which is not in this run, is kept running.
    assert node1.manager.layout.names() == [moved]
    assert node1.manager.runtime(moved).init_pid == pids[(1, moved)] and node1.manager.status(moved) == "running"
    assert prune_line(proc.stdout, "node1") == (
        "prune removed: [%r]; kept (declared for a node not in this run): {%r: 'node2'}" % (dropped1, moved))
    assert "prune keeps %s" % moved in proc.stdout
    # node2 is not in the run: nothing of it changed.
    assert host_snapshot(node2.data_dir) == before2
    assert dict((key, pid) for key, pid in role_nodes.pids().items() if key[0] == 2) == \
        dict((key, pid) for key, pid in pids.items() if key[0] == 2)
    # The whole run: moved leaves node1 and is created on node2, dropped2 goes.
    proc, recap = role_nodes.play(declared, prune=True)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert node1.manager.layout.names() == []
    assert node2.manager.layout.names() == sorted([moved, stays])
    assert node2.manager.status(moved) == "running"
    assert node2.manager.runtime(stays).init_pid == pids[(2, stays)]
    assert prune_line(proc.stdout, "node2") == "prune removed: [%r]; kept (declared for a node not in this run): {}" \
        % dropped2


def test_role_check_mode_lists_what_prune_would_remove(role_nodes):
    node1, node2 = role_nodes.nodes
    keep1, gone1, gone2 = node1.name(), node1.name(), node2.name()
    items = [role_nodes.item(keep1, "node1"), role_nodes.item(gone1, "node1"), role_nodes.item(gone2, "node2")]
    proc, _recap = role_nodes.play(items)
    assert proc.returncode == 0, proc.stdout[-4000:]
    pids, before = role_nodes.pids(), role_nodes.snapshots()
    proc, recap = role_nodes.play(items[:1], prune=True, check=True)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert recap["node1"]["changed"] == 1 and recap["node2"]["changed"] == 1, recap
    empty = "; kept (declared for a node not in this run): {}"
    assert prune_line(proc.stdout, "node1") == "prune would remove: [%r]%s" % (gone1, empty), proc.stdout[-4000:]
    assert prune_line(proc.stdout, "node2") == "prune would remove: [%r]%s" % (gone2, empty), proc.stdout[-4000:]
    assert role_nodes.pids() == pids and role_nodes.snapshots() == before
