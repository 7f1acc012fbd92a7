# -*- coding: utf-8 -*-
"""SSH trust between nodes (ovz_host ssh_trust) and the ovz_evacuate role through
playbooks/evacuate-and-return.yml, on the multi-node harness (issue 8).

The nodes share this machine's filesystem, so each node's migration key, known_hosts and
authorized_keys live in its own directory (host vars), and the harness's sshd reads the node's
own authorized_keys file too. Ansible runs in the hub (the controller); the TCP client that must
survive both moves is a socket of this test process in the hub's namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from support import REPO
from support.multinode import Harness
from support.ansible_cli import recap
from support.migration import PORT, addresses, echo, make_container, ping_all, status_of
from support.migration import workload  # noqa: F401 pylint: disable=unused-import

pytestmark = [pytest.mark.multinode, pytest.mark.slow]

PLAYBOOK = os.path.join(REPO, "playbooks", "evacuate-and-return.yml")

TRUST_PLAY = """
- name: SSH trust between the nodes
  hosts: ovz_nodes
  gather_facts: false
  tasks:
    - name: Only the SSH trust part of ovz_host
      ansible.builtin.include_role:
        name: ovz.containers.ovz_host
        tasks_from: ssh_trust
"""

# Run between the two moves: tell the test the node is empty, wait until it says go on.
HOOK = """
- name: Tell the test that the node is empty
  ansible.builtin.copy:
    content: "evacuated\\n"
    dest: "{{ hook_dir }}/evacuated"
    mode: "0644"
  delegate_to: localhost
- name: Wait for the test
  ansible.builtin.wait_for:
    path: "{{ hook_dir }}/continue"
    timeout: 300
  delegate_to: localhost
"""

RETURN_AGAIN = """
- name: Return again
  hosts: node1
  gather_facts: false
  roles:
    - role: ovz.containers.ovz_evacuate
      vars:
        ovz_evacuate_mode: return
"""

EVACUATE_AGAIN = """
- name: Evacuate again
  hosts: node1
  gather_facts: false
  roles:
    - role: ovz.containers.ovz_evacuate
      vars:
        ovz_evacuate_targets: [node2]
"""


def trust_vars(harness, node):
    return {"ovz_host_ssh_key": os.path.join(node.base, "ovz_migration_key"),
            "ovz_host_ssh_known_hosts": os.path.join(node.base, "known_hosts_ovz"),
            "ovz_host_ssh_authorized_keys": os.path.join(node.base, "authorized_keys"),
            "ovz_host_ssh_host_key": harness.host_key + ".pub"}


@pytest.fixture(scope="module")
def nodes(session_dir):
    """Two harness nodes, with host vars that keep each node's SSH trust files in its own directory."""
    with Harness(os.path.join(session_dir, "ev-" + uuid.uuid4().hex[:6]), 2) as harness:
        host_vars = os.path.join(harness.base, "host_vars")
        os.makedirs(host_vars)
        for node in harness.nodes:
            with open(os.path.join(host_vars, node.name + ".yml"), "w") as handle:
                json.dump(trust_vars(harness, node), handle)
        yield harness


def write(harness, name, text):
    path = os.path.join(harness.base, name)
    with open(path, "w") as handle:
        handle.write(text)
    return path


def playbook(harness, text_or_path, extra=None, check=False):
    if text_or_path.endswith(".yml"):
        path = text_or_path
    else:
        path = write(harness, "play-%s.yml" % uuid.uuid4().hex[:6], text_or_path)
    args = (["-e", json.dumps(extra)] if extra else []) + (["--check"] if check else [])
    proc = harness.playbook(path, args)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    return proc


def node_ssh(harness, source, target, known_hosts):
    """ssh from ``source``'s netns to ``target`` with the source's migration key only."""
    key = trust_vars(harness, source)["ovz_host_ssh_key"]
    return source.netns.run(["ssh", "-F", "/dev/null", "-i", key, "-o", "IdentitiesOnly=yes",
                             "-o", "UserKnownHostsFile=" + known_hosts, "-o", "StrictHostKeyChecking=yes",
                             "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "root@" + target.ip4, "echo ok"],
                            check=False, timeout=30)


@pytest.fixture(scope="module")
def trusted(nodes):
    """The SSH trust set up by the role (first run, checked by test_ssh_trust)."""
    first = playbook(nodes, TRUST_PLAY)
    return first


def test_ssh_trust(nodes, trusted):
    node1, node2 = nodes.nodes
    counts = recap(trusted.stdout)
    # key made, peer key authorized, one host key pinned: on each node
    assert counts["node1"]["changed"] >= 3 and counts["node2"]["changed"] >= 3, trusted.stdout
    for source, target in ((node1, node2), (node2, node1)):
        known = trust_vars(nodes, source)["ovz_host_ssh_known_hosts"]
        proc = node_ssh(nodes, source, target, known)
        assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
        with open(known) as handle:
            pinned = handle.read()
        with open(nodes.host_key + ".pub") as handle:
            assert " ".join(handle.read().split()[:2]) in pinned
        assert target.ip4 in pinned and source.ip4 not in pinned
        # Nothing is trusted on first use: without the pinned file the same login is refused.
        empty = os.path.join(source.base, "empty_known_hosts")
        open(empty, "w").close()
        assert node_ssh(nodes, source, target, empty).returncode != 0
        with open(trust_vars(nodes, target)["ovz_host_ssh_authorized_keys"]) as handle:
            assert handle.read().strip().endswith("ovz-migration@" + source.name)
    # Second run and check mode: nothing changes.
    for check in (False, True):
        again = recap(playbook(nodes, TRUST_PLAY, check=check).stdout)
        assert again["node1"]["changed"] == 0 and again["node2"]["changed"] == 0, again


def counted_on(node, name, above, timeout=20):
    """The workload's status in ``name`` on ``node`` once its counter went past ``above``
    (test_migration.wait_status, which pylint confuses with tests/vm/test_migration.py's)."""
    deadline = time.monotonic() + timeout
    while True:
        status = status_of(node, name)
        if int(status.get("counter", 0)) > above:
            return status
        assert time.monotonic() < deadline, "the counter of %s stays at %s" % (name, status)
        time.sleep(0.2)


def containers_on(node):
    return {c["name"]: c["state"] for c in node.engine("manager.list()")}


def test_evacuate_and_return(nodes, trusted, busybox_template, workload):  # noqa: F811 pylint: disable=redefined-outer-name
    node1, node2 = nodes.nodes
    names = {"ovzevtcp": addresses(90), "ovzevplain": addresses(91)}
    # Both kinds: the one with the connection is unprivileged (the default of new containers).
    make_container(node1, "ovzevtcp", busybox_template, workload, names["ovzevtcp"], tcp=True, unprivileged=True)
    make_container(node1, "ovzevplain", busybox_template, workload, names["ovzevplain"], tcp=False)
    conn = nodes.tcp_connect(names["ovzevtcp"][0], PORT)
    hook_dir = os.path.join(nodes.base, "hook")
    os.makedirs(hook_dir)
    proc = None
    try:
        assert echo(conn, "before") == "echo:before"
        before = {name: status_of(node1, name) for name in names}
        hook = write(nodes, "hook.yml", HOOK)
        extra = {"evacuate_node": "node1", "evacuate_to": ["node2"], "evacuate_pause": False,
                 "evacuate_hook": hook, "hook_dir": hook_dir, "evacuate_report_dir": nodes.base}
        binary = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
        began = time.monotonic()
        proc = nodes.hub.popen([binary, "-i", nodes.inventory, PLAYBOOK, "-e", json.dumps(extra)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                               env=nodes.ansible_env())
        while not os.path.exists(os.path.join(hook_dir, "evacuated")):
            assert proc.poll() is None, proc.stdout.read()[-5000:]
            assert time.monotonic() - began < 600, "the evacuation did not finish"
            time.sleep(0.5)
        # Between the moves: everything runs on node 2, nothing is left on node 1, the connection carries on.
        assert containers_on(node1) == {}
        assert containers_on(node2) == dict.fromkeys(names, "running")
        assert echo(conn, "evacuated") == "echo:evacuated"
        ping_all(nodes, names["ovzevtcp"] + names["ovzevplain"])
        with open(os.path.join(node1.data_dir, "evacuated.json")) as handle:
            ledger = json.load(handle)
        assert sorted((e["name"], e["node"]) for e in ledger["containers"]) == sorted((n, "node2") for n in names)
        open(os.path.join(hook_dir, "continue"), "w").close()
        out = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, out[-6000:]
        # Back on node 1: same processes, counters went on, the same TCP connection still works.
        assert containers_on(node1) == dict.fromkeys(names, "running")
        assert containers_on(node2) == {}
        assert echo(conn, "returned") == "echo:returned"
        for name in names:
            after = counted_on(node1, name, int(before[name]["counter"]))
            assert after["pid"] == before[name]["pid"]
        assert status_of(node1, "ovzevtcp")["accepted"] == before["ovzevtcp"]["accepted"]  # no reconnect
        ping_all(nodes, names["ovzevtcp"] + names["ovzevplain"])
        assert not os.path.exists(os.path.join(node1.data_dir, "evacuated.json"))
        # The summaries: each migration with its frozen and total time.
        for report, source, target in (("evacuate.json", "node1", "node2"), ("return.json", "node2", "node1")):
            with open(os.path.join(nodes.base, report)) as handle:
                summary = json.load(handle)["migrations"]
            assert sorted(m["name"] for m in summary) == sorted(names), summary
            for move in summary:
                assert (move["from"], move["to"], move["changed"]) == (source, target, True), move
                assert move["frozen_ms"] > 0 and move["total_ms"] >= move["frozen_ms"], move
        assert out.count("frozen ") >= 4, out[-6000:]
        # Nothing left to return: a second return changes nothing.
        assert recap(playbook(nodes, RETURN_AGAIN).stdout)["node1"]["changed"] == 0
    finally:
        if proc is not None and proc.poll() is None:
            open(os.path.join(hook_dir, "continue"), "w").close()
            try:
                proc.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        conn.close()
        for node in nodes.nodes:
            for name in names:
                node.engine("manager.destroy(%r)" % name)


def test_evacuate_empty_node_changes_nothing(nodes, trusted):
    node1, _node2 = nodes.nodes
    assert containers_on(node1) == {}
    assert recap(playbook(nodes, EVACUATE_AGAIN).stdout)["node1"]["changed"] == 0


def test_refuses_what_does_not_fit(nodes, trusted, busybox_template, workload):  # noqa: F811 pylint: disable=redefined-outer-name
    """Bad input and a plan that does not fit fail before anything moves, and say why."""
    node1, node2 = nodes.nodes
    make_container(node1, "ovzevfit", busybox_template, workload, addresses(92), tcp=False)
    try:
        for extra, message in (({"ovz_evacuate_reserve": 1 << 60}, "not enough free memory on node2"),
                               ({"ovz_evacuate_targets": ["node1"]}, "ovz_evacuate_targets must name other hosts"),
                               ({"ovz_evacuate_targets": ["nosuchnode"]}, "ovz_evacuate_targets must name other hosts")):
            proc = nodes.playbook(write(nodes, "evacuate-again.yml", EVACUATE_AGAIN), ["-e", json.dumps(extra)])
            assert proc.returncode != 0 and message in proc.stdout, proc.stdout[-3000:]
            assert containers_on(node1) == {"ovzevfit": "running"} and containers_on(node2) == {}
            assert not os.path.exists(os.path.join(node1.data_dir, "evacuated.json"))
    finally:
        node1.engine("manager.destroy('ovzevfit')")
