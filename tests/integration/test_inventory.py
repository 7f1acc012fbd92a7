# -*- coding: utf-8 -*-
"""The inventory plugin ovz.containers.ovz on a two-node fleet (issue 8): every container once,
with its node and state, grouped; the hosts work with the connection plugin; the cache."""

from __future__ import annotations

import json
import os

import pytest

from support import REPO
from support.node import new_node, run_module
from support.ansible_cli import BIN, run

OVZCTL = os.path.join(REPO, "scripts", "ovzctl")


@pytest.fixture
def node2(session_dir):
    with new_node(session_dir) as result:
        yield result


def container(node, template, state, labels=None):
    name = node.name()
    args = dict(name=name, template=template, layout="directory", state=state, data_dir=node.data_dir,
                cgroup_parent=node.cgroup_parent, wait_boot=state in ("started", "frozen"))
    if labels is not None:
        args["labels"] = labels
    result = run_module("ovz_container", args)
    assert result.get("changed") is True, result
    return name


def write_fleet(path, node1, node2, cache_dir):
    """node n1 is read locally with the engine; n2 as a remote node, through a shell command and ovzctl."""
    path.write_text("""plugin: ovz.containers.ovz
nodes:
  - name: n1
    data_dir: {d1}
    cgroup_parent: {c1}
  - name: n2
    data_dir: {d2}
    cgroup_parent: {c2}
    shell: [/bin/sh, -c]
    ovzctl: {ovzctl}
    vars:
      ovz_rack: r2
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: {cache}
cache_timeout: 3600
keyed_groups:
  - key: ovz_rack | default('none')
    prefix: rack
""".format(d1=node1.data_dir, c1=node1.cgroup_parent, d2=node2.data_dir, c2=node2.cgroup_parent, ovzctl=OVZCTL,
           cache=cache_dir))
    return str(path)


def inventory(fleet, *extra):
    proc = run([os.path.join(BIN, "ansible-inventory"), "-i", fleet] + list(extra))
    assert proc.returncode == 0, proc.stdout
    return proc.stdout


def listing_of(fleet, *extra):
    """ansible-inventory --list as plain data (strings from plugins are tagged unsafe in its JSON)."""
    def plain(obj):
        return obj["__ansible_unsafe"] if list(obj) == ["__ansible_unsafe"] else obj
    return json.loads(inventory(fleet, "--list", *extra), object_hook=plain)


def test_two_node_fleet_listed_once_grouped_and_reachable(node, node2, busybox_template, tmp_path):
    web1 = container(node, busybox_template, "started", {"role": "web"})
    db1 = container(node, busybox_template, "stopped", {"role": "db"})
    web2 = container(node2, busybox_template, "started", {"role": "web", "tier": "front"})
    frozen2 = container(node2, busybox_template, "started")
    node2.manager.freeze(frozen2)
    fleet = write_fleet(tmp_path / "fleet.ovz.yml", node, node2, tmp_path / "cache")

    listing = listing_of(fleet)
    hostvars = listing["_meta"]["hostvars"]
    assert sorted(hostvars) == sorted([web1, db1, web2, frozen2])
    expected = {web1: ("n1", "running"), db1: ("n1", "stopped"), web2: ("n2", "running"), frozen2: ("n2", "frozen")}
    assert {h: (v["ovz_node"], v["ovz_state"]) for h, v in hostvars.items()} == expected
    # Each container is in exactly one node group and one state group.
    for host, (node_name, state) in expected.items():
        node_groups = [g for g, d in listing.items() if g.startswith("ovz_node_") and host in d.get("hosts", [])]
        state_groups = [g for g, d in listing.items() if g.startswith("ovz_state_") and host in d.get("hosts", [])]
        assert (node_groups, state_groups) == (["ovz_node_" + node_name], ["ovz_state_" + state])
    assert sorted(listing["ovz_label_role_web"]["hosts"]) == sorted([web1, web2])
    assert listing["ovz_label_role_db"]["hosts"] == [db1]
    assert listing["ovz_label_tier_front"]["hosts"] == [web2]
    assert sorted(listing["ovz_containers"]["children"]) == ["ovz_node_n1", "ovz_node_n2"]
    assert sorted(listing["rack_r2"]["hosts"]) == sorted([web2, frozen2])
    # Facts as host vars, and what the connection plugin needs.
    web2_vars = hostvars[web2]
    assert web2_vars["ansible_connection"] == "ovz.containers.ovz"
    assert (web2_vars["ovz_container"], web2_vars["ovz_data_dir"]) == (web2, node2.data_dir)
    assert web2_vars["ovz_labels"] == {"role": "web", "tier": "front"}
    assert web2_vars["ovz_hostname"] == web2 and web2_vars["ovz_init_pid"] > 1
    assert hostvars[db1]["ovz_init_pid"] is None

    graph = inventory(fleet, "--graph")
    assert "@ovz_containers:" in graph and "--@ovz_node_n1:" in graph and "--@ovz_node_n2:" in graph
    for host in expected:
        assert graph.count("--" + host + "\n") >= 3  # in its node, state and ungrouped-by-label or label groups
    node1_block = graph.split("@ovz_node_n1:")[1].split("@")[0]
    assert web1 in node1_block and db1 in node1_block and web2 not in node1_block

    # The hosts work with the connection plugin as listed: a command inside each running container.
    proc = run([os.path.join(BIN, "ansible"), "-i", fleet, "ovz_state_running", "-m", "raw", "-a", "hostname"])
    assert proc.returncode == 0, proc.stdout
    for host in (web1, web2):
        assert "%s | CHANGED | rc=0 >>\n%s" % (host, host) in proc.stdout

    # The cache: a destroyed container stays listed until the cache is refreshed.
    node.manager.destroy(db1)
    assert db1 in listing_of(fleet)["_meta"]["hostvars"]
    assert db1 not in listing_of(fleet, "--flush-cache")["_meta"]["hostvars"]


def test_state_filter_and_clear_errors(node, node2, busybox_template, tmp_path):
    running = container(node, busybox_template, "started")
    container(node, busybox_template, "stopped")
    fleet = tmp_path / "only.ovz.yml"
    fleet.write_text("plugin: ovz.containers.ovz\nnodes:\n  - name: n1\n    data_dir: %s\n    cgroup_parent: %s\n"
                     "states: [running]\n" % (node.data_dir, node.cgroup_parent))
    assert sorted(listing_of(str(fleet))["_meta"]["hostvars"]) == [running]
    # A remote node whose ovzctl fails is an error that names the node.
    broken = tmp_path / "broken.ovz.yml"
    broken.write_text("plugin: ovz.containers.ovz\nnodes:\n  - name: far\n    shell: [/bin/sh, -c]\n"
                      "    ovzctl: /nonexistent/ovzctl\n")
    proc = run([os.path.join(BIN, "ansible-inventory"), "-i", str(broken), "--list"],
               ANSIBLE_INVENTORY_UNPARSED_FAILED="1")
    assert proc.returncode != 0 and "node far" in proc.stdout, proc.stdout
    # The same container name on two nodes is refused.
    twin = node2.manager
    twin.create(running, busybox_template, layout="directory")
    dup = tmp_path / "dup.ovz.yml"
    dup.write_text("plugin: ovz.containers.ovz\nnodes:\n  - {name: a, data_dir: %s, cgroup_parent: %s}\n"
                   "  - {name: b, data_dir: %s, cgroup_parent: %s}\n"
                   % (node.data_dir, node.cgroup_parent, node2.data_dir, node2.cgroup_parent))
    proc = run([os.path.join(BIN, "ansible-inventory"), "-i", str(dup), "--list"],
               ANSIBLE_INVENTORY_UNPARSED_FAILED="1")
    assert proc.returncode != 0 and "listed by node a and by node b" in proc.stdout, proc.stdout


def test_labels_three_ways_and_bad_labels(node, busybox_template):
    name = node.name()
    base = dict(name=name, template=busybox_template, layout="directory", state="present", data_dir=node.data_dir,
                cgroup_parent=node.cgroup_parent)
    assert run_module("ovz_container", dict(base))["changed"] is True
    args = dict(base, labels={"role": "web", "zone": 3})
    checked = run_module("ovz_container", args, check=True, diff=True)
    assert checked["changed"] is True and node.manager.load(name).labels == {}
    assert checked["diff"]["after"]["labels"] == {"role": "web", "zone": "3"}
    assert run_module("ovz_container", args)["changed"] is True
    assert node.manager.load(name).labels == {"role": "web", "zone": "3"}
    assert run_module("ovz_container", args)["changed"] is False
    bad = run_module("ovz_container", dict(base, labels={"bad key": "x"}))
    assert bad.get("failed") and "labels" in bad["msg"], bad
    assert node.manager.load(name).labels == {"role": "web", "zone": "3"}
    assert run_module("ovz_container", dict(base, labels={}))["changed"] is True
    assert node.manager.load(name).labels == {}
