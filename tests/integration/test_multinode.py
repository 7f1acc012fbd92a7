# -*- coding: utf-8 -*-
"""The multi-node harness itself (tests/support/multinode.py): nodes, their sshd, their isolation, the inventory."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from support.multinode import SBIN_PATH

pytest_plugins = ["support.multinode"]   # the harness fixture
pytestmark = pytest.mark.multinode

A4, A6 = "10.213.201.21", "fd00:213::201:21"


def test_ssh_between_nodes(harness):
    node1, node2, node3 = harness.nodes
    # From the hub (the controller) to every node, landing in that node's netns.
    for node in harness.nodes:
        out = node.ssh("ip -o -4 addr show dev ovz0; echo $PATH").stdout
        assert node.ip4 in out
        assert "/usr/sbin" in out and "/sbin" in SBIN_PATH
    # From node 1 (a process in its netns, as the migration source runs) to node 2 and node 3.
    for other in (node2, node3):
        out = other.ssh("cat /proc/self/net/dev | grep -c ovz0; hostname -I", via=node1.netns).stdout
        assert other.ip4 in out and node1.ip4 not in out
    # Over IPv6 too.
    proc = node1.netns.run(harness.ssh_base() + ["root@" + node2.ip6, "true"], check=False)
    assert proc.returncode == 0, proc.stderr
    # A key not in the harness is refused; an unknown host key too.
    proc = node1.netns.run(["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                            "-o", "UserKnownHostsFile=" + harness.known_hosts, "-o", "IdentitiesOnly=yes",
                            "root@" + node2.ip4, "true"], check=False)
    assert proc.returncode != 0


def test_nodes_are_isolated(harness, busybox_template):
    node1, node2, _node3 = harness.nodes
    facts = node1.create_container("ovzmn1", busybox_template, [A4, A6])
    assert facts["state"] == "running"
    host_ends = [link for link in node1.netns.links() if link.startswith("ovz") and link != "ovz0"]
    assert len(host_ends) == 1, node1.netns.links()
    # The container's host end and routes are in node 1's netns only: not on the machine, not on node 2.
    assert host_ends[0] not in node2.netns.links()
    assert host_ends[0] not in subprocess.run(["ip", "-o", "link"], stdout=subprocess.PIPE,
                                              universal_newlines=True, check=True).stdout
    assert A4 in node1.netns.ip("route", "show")
    assert A4 not in node2.netns.ip("route", "show")
    # The hub reaches the container through node 1's proxy ARP and NDP.
    assert harness.hub.ping(A4)
    assert harness.hub.run(["busybox", "ping", "-6", "-c1", "-W2", A6], check=False).returncode == 0
    # Node 2 sees none of node 1's containers; node 1's data dir is its own.
    assert node2.engine("manager.layout.names()") == []
    assert node1.engine("manager.layout.names()") == ["ovzmn1"]
    node1.engine("manager.destroy('ovzmn1')")
    assert [link for link in node1.netns.links() if link.startswith("ovz") and link != "ovz0"] == []
    assert not harness.hub.ping(A4, wait=1)


def test_inventory_with_ansible(harness):
    playbook = os.path.join(harness.base, "ping.yml")
    with open(playbook, "w") as handle:
        handle.write("- hosts: ovz_nodes\n  gather_facts: false\n  tasks:\n"
                     "    - ansible.builtin.ping:\n"
                     "    - ansible.builtin.command: ip -j -4 addr show dev ovz0\n      register: addr\n"
                     "    - ansible.builtin.assert:\n        that: ansible_host in addr.stdout\n")
    proc = harness.playbook(playbook)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok=3" in proc.stdout and "failed=0" in proc.stdout


def test_record_lists_what_to_sweep(harness):
    with open(os.path.join(harness.base, "harness.json")) as handle:
        record = json.load(handle)
    assert record["hub"] == harness.hub.name and record["hub"].startswith("ovz-m")
    for saved, node in zip(record["nodes"], harness.nodes):
        assert saved["sshd_pid"] == node.sshd_pid and saved["sshd_starttime"]
        assert os.path.exists("/proc/%d" % node.sshd_pid)
        assert saved["netns"].startswith("ovz-m") and saved["cgroup_parent"].startswith("ovz-t")


def test_sweep_finds_the_harness_once_its_session_ended(harness, monkeypatch):
    """scripts/sweep.py (not run here: it would remove other sessions' work) leaves this running session's
    harness alone, and lists every object of it once the session counts as ended."""
    import sweep
    assert not any(record["tag"] == harness.tag for record in sweep.harness_records())
    assert not [n for n in harness.nodes if (n.sshd_pid, n.sshd_starttime) in sweep.harness_sshds()]
    monkeypatch.setattr(sweep, "session_is_live", lambda _work: False)
    sshds = sweep.harness_sshds()
    for node in harness.nodes:
        assert (node.sshd_pid, node.sshd_starttime) in sshds
        assert node.netns.name in sweep.suite_netns()
    assert harness.hub.name in sweep.suite_netns()
    assert any(record["tag"] == harness.tag for record in sweep.harness_records())
