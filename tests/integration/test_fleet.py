# -*- coding: utf-8 -*-
"""ovz_fleet on the real kernel (issue 8): many containers of a node converged in one module run.

The module runs in a network namespace the test makes (``ovz-tf<tag>``, the node's
"host" network), as ``test_network.py`` does; container addresses come from
10.213.60.0/24 only. Limits are read back from the containers' cgroups, addresses
from the routes of the node's namespace and by ping. The module is tested three
ways (check mode changes nothing, the run changes, the rerun does not), and bad
input fails naming the container and the parameter, with the host unchanged.
"""

from __future__ import annotations

import os
import sys

import pytest

from conftest import host_snapshot, sh
from test_network import Netns, in_ns, run_module_in

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
        args = dict(containers=containers, node="node1", fleet="ovztest", data_dir=self.node.data_dir,
                    cgroup_parent=self.node.cgroup_parent)
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
        assert fleet.cgread(name, "cpu", "cpu.shares") == str((1000 + 500 * i) * 1024 // 1000)
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
    assert node.manager.exists(gone)
    pruned = fleet.run(items[:1], prune=True)
    assert pruned["summary"] == dict(created=0, changed=0, unchanged=1, removed=1)
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
