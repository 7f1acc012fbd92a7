# -*- coding: utf-8 -*-
"""Engine behaviour on cgroup v2 that only a real v2 host shows (issue: VM test platform).

A container whose own root (or its systemd) enables controllers in its cgroup root's
``cgroup.subtree_control`` -- what systemd does inside every container on a v2 host -- turns
the ``payload`` cgroup into an inner node, and cgroup v2 refuses new processes in inner nodes
("no internal processes": EBUSY). Commands run inside must then join a leaf (the engine uses
``payload/.ovz-exec``, as lxc-attach uses ``.lxc``), and stop/destroy must remove the
sub-cgroups the container made.
"""

from __future__ import annotations

import pytest

SLICE = "/sys/fs/cgroup/ovz.slice"

# Inside the container, in the background once the exec has returned: move every process of
# the container's cgroup root into a child cgroup and enable controllers for the children, as
# systemd does with init.scope. (Exec helpers sit in the leaf .ovz-exec, never in the payload
# itself, so that they cannot make this fail with EBUSY.)
DELEGATE = (
    "setsid sh -c 'sleep 2; mkdir -p /sys/fs/cgroup/init.scope;"
    " for p in $(cat /sys/fs/cgroup/cgroup.procs); do echo $p > /sys/fs/cgroup/init.scope/cgroup.procs; done;"
    " echo \"+pids +memory\" > /sys/fs/cgroup/cgroup.subtree_control' > /dev/null 2>&1 < /dev/null &"
)


@pytest.fixture(scope="module")
def delegated(ansible, vm1, vm_template, ct_names_module):
    name, = ct_names_module(1)
    cg = "%s/ovz-*-%s/payload" % (SLICE, name)   # ovz-<node>-<name>: a shell glob in the raw commands
    tasks = [
        {"name": "start", "ovz.containers.ovz_container": {"name": name, "template": vm_template,
                                                           "state": "started", "wait_boot": True}},
        {"name": "delegate", "ovz.containers.ovz_exec": {"name": name, "command": DELEGATE}},
        {"name": "wait", "ansible.builtin.raw": "for i in $(seq 100); do grep -q pids %s/cgroup.subtree_control"
                                                " && break; sleep 0.2; done; cat %s/cgroup.subtree_control;"
                                                " cat %s/cgroup.procs | wc -l" % (cg, cg, cg)},
        {"name": "exec after delegation", "ovz.containers.ovz_exec": {"name": name,
                                                                      "command": "echo hello; cat /proc/self/cgroup"}},
        {"name": "stop after delegation", "ovz.containers.ovz_container": {"name": name, "state": "stopped"}},
        {"name": "destroy after delegation", "ovz.containers.ovz_container": {"name": name, "state": "absent"}},
        {"name": "cgroup left", "ansible.builtin.raw": "test -e %s/ovz-*-%s; echo $?" % (SLICE, name)},
    ]
    return ansible.play(tasks, hosts=vm1.name), vm1.name


def test_container_root_can_enable_controllers_below_payload(delegated):
    play, host = delegated
    play.ok(host, "start")
    play.ok(host, "delegate")
    controllers, procs_in_payload = play.stdout(host, "wait").split("\n")[:2]
    assert set(controllers.split()) == {"memory", "pids"}
    assert procs_in_payload.strip() == "0"


def test_stop_and_destroy_work_with_sub_cgroups(delegated):
    play, host = delegated
    play.ok(host, "stop after delegation")
    play.ok(host, "destroy after delegation")
    assert play.stdout(host, "cgroup left").strip() == "1"


def test_exec_after_the_container_enabled_controllers(delegated):
    play, host = delegated
    result = play.ok(host, "exec after delegation")
    assert result["stdout"].splitlines() == ["hello", "0::/.ovz-exec"], result
