# -*- coding: utf-8 -*-
"""The container lifecycle on a real cgroup v2 host with systemd (issue: VM test platform).

One batched play on every VM: create and start a busybox container (``image`` layout on the
XFS data disk) and a second one (``directory`` layout), exec, the BPF device filter against
the VM's own disk, freeze/thaw through cgroup.freeze, stop, destroy. The tests assert on the
recorded result of each step and on what the host showed at that point.
"""

from __future__ import annotations

import re

import pytest

SLICE = "/sys/fs/cgroup/ovz.slice"


MKNOD_AND_OPEN = ("mknod /dev/ovzdisk b {{ vda.stdout.split()[0] | int(base=16) }}"
                  " {{ vda.stdout.split()[1] | int(base=16) }} && echo mknod-ok; head -c 512 /dev/ovzdisk > /dev/null; echo open-rc=$?;"
                  " echo x > /dev/null && echo null-ok")


@pytest.fixture(scope="module")
def run(ansible, vm_template, ct_names_module):
    img, dirct = ct_names_module(2)
    cg = "%s/ovz-*-%s" % (SLICE, img)   # ovz-<node>-<name>: a shell glob in the raw commands
    ct = {"name": img}
    tasks = [
        {"name": "start image", "register": "started",
         "ovz.containers.ovz_container": dict(ct, template=vm_template, hostname="ct-img", state="started",
                                              wait_boot=True)},
        {"name": "start image again", "ovz.containers.ovz_container": dict(ct, template=vm_template,
                                                                           hostname="ct-img", state="started")},
        {"name": "start directory", "ovz.containers.ovz_container": {"name": dirct, "template": vm_template,
                                                                     "layout": "directory", "state": "started",
                                                                     "wait_boot": True, "unprivileged": False}},
        {"name": "info running", "ovz.containers.ovz_info": {}},
        {"name": "init cgroup", "ansible.builtin.raw": "cat /proc/{{ started.container.init_pid }}/cgroup"},
        {"name": "host cgroup files", "ansible.builtin.raw":
            "cat %s/cgroup.subtree_control; cat %s/payload/cgroup.controllers; wc -l < %s/payload/cgroup.procs"
            % (cg, cg, cg)},
        {"name": "bpf program", "ansible.builtin.raw": "bpftool cgroup show %s" % cg},
        {"name": "exec", "ovz.containers.ovz_exec": dict(ct, command="cat /proc/self/cgroup; hostname; id -u")},
        {"name": "vda numbers", "register": "vda", "ansible.builtin.raw": "stat -Lc '%t %T' /dev/vda"},
        {"name": "mknod and open the VM disk", "ovz.containers.ovz_exec": dict(ct, command=MKNOD_AND_OPEN)},
        {"name": "mknod and open the VM disk privileged",
         "ovz.containers.ovz_exec": {"name": dirct, "command": MKNOD_AND_OPEN}},
        {"name": "freeze", "ovz.containers.ovz_container": dict(ct, state="frozen")},
        {"name": "freeze again", "ovz.containers.ovz_container": dict(ct, state="frozen")},
        {"name": "frozen files", "ansible.builtin.raw": "cat %s/cgroup.freeze; grep frozen %s/cgroup.events" % (cg, cg)},
        {"name": "info frozen", "ovz.containers.ovz_info": {"name": [img]}},
        {"name": "thaw", "ovz.containers.ovz_container": dict(ct, state="started")},
        {"name": "thawed files", "ansible.builtin.raw": "cat %s/cgroup.freeze; grep frozen %s/cgroup.events" % (cg, cg)},
        {"name": "exec after thaw", "ovz.containers.ovz_exec": dict(ct, command="echo alive")},
        {"name": "stop", "ovz.containers.ovz_container": dict(ct, state="stopped")},
        {"name": "cgroup after stop", "ansible.builtin.raw": "test -e %s; echo $?" % cg},
        {"name": "destroy image", "ovz.containers.ovz_container": dict(ct, state="absent")},
        {"name": "destroy directory", "ovz.containers.ovz_container": {"name": dirct, "state": "absent"}},
        {"name": "destroy again", "ovz.containers.ovz_container": dict(ct, state="absent")},
        {"name": "leftovers", "ansible.builtin.raw":
            "ls %s | grep -E 'ovz-([0-9a-f]{8}-)?(%s|%s)$'; findmnt -rn -o TARGET | grep -E '/var/lib/ovz/root/(%s|%s)$';"
            " losetup -a | grep -E '/var/lib/ovz/private/(%s|%s)/'; ls /var/lib/ovz/private /var/lib/ovz/conf;"
            " true" % (SLICE, img, dirct, img, dirct, img, dirct)},
    ]
    return ansible.play(tasks), img, dirct


def test_create_start_and_second_run_unchanged(run, vms):
    play, _img, _dirct = run
    for vm in vms:
        first = play.ok(vm.name, "start image")
        assert first["changed"] is True
        assert first["container"]["state"] == "running"
        assert first["container"]["layout"] == "image"
        # Created without unprivileged: unprivileged (the default), on this cgroup v2 host too.
        assert first["container"]["unprivileged"] is True and first["container"]["idmap"]["count"] == 65536, first
        assert play.ok(vm.name, "start image again")["changed"] is False
        assert play.ok(vm.name, "start directory")["container"]["state"] == "running"
        assert play.ok(vm.name, "start directory")["container"]["unprivileged"] is False


def test_cgroups_live_under_ovz_slice(run, vms):
    play, img, dirct = run
    for vm in vms:
        info = {c["name"]: c for c in play.ok(vm.name, "info running")["containers"]}
        for name in (img, dirct):
            assert info[name]["state"] == "running"
            assert list(info[name]["cgroups"]) == ["unified"]
            assert re.fullmatch(r"%s/ovz-[0-9a-f]{8}-%s" % (SLICE, name), info[name]["cgroups"]["unified"]), info[name]
        assert info[dirct]["layout"] == "directory"
        assert re.fullmatch(r"0::/ovz\.slice/ovz-[0-9a-f]{8}-%s/payload" % img, play.stdout(vm.name, "init cgroup"))
        subtree, payload_controllers, procs = play.stdout(vm.name, "host cgroup files").splitlines()
        # Limits are set on ovz-<node>-<name>: its controllers reach the payload below it.
        assert set(subtree.split()) >= {"cpu", "io", "memory", "pids"}
        assert set(payload_controllers.split()) >= {"cpu", "io", "memory", "pids"}
        assert int(procs) >= 1


def test_exec_runs_inside_the_container(run, vms):
    play, _img, _dirct = run
    for vm in vms:
        out = play.stdout(vm.name, "exec").splitlines()
        # cgroup namespace: the payload is the container's root; an exec'd process sits in
        # its leaf .ovz-exec (v2 allows no process beside child cgroups that have controllers)
        assert out == ["0::/.ovz-exec", "ct-img", "0"], out


def test_bpf_device_filter_refuses_the_vm_disk(run, vms):
    """A privileged container's root may make the VM disk's node (b *:* m) and the BPF device filter refuses
    to open it; an unprivileged container's root (the default) may not even make it."""
    play, _img, _dirct = run
    for vm in vms:
        assert "ovz_devices" in play.stdout(vm.name, "bpf program")
        result = play.ok(vm.name, "mknod and open the VM disk privileged")
        lines = result["stdout"].splitlines()
        assert "mknod-ok" in lines, result        # mknod is allowed (b *:* m) ...
        assert "open-rc=1" in lines, result       # ... opening is not
        assert "Operation not permitted" in result["stderr"], result
        assert "null-ok" in lines, result         # the allow-listed nodes work
        result = play.ok(vm.name, "mknod and open the VM disk")
        lines = result["stdout"].splitlines()
        assert "mknod-ok" not in lines and "open-rc=1" in lines and "null-ok" in lines, result
        assert "Operation not permitted" in result["stderr"], result


def test_freeze_and_thaw_through_cgroup_freeze(run, vms):
    play, _img, _dirct = run
    for vm in vms:
        assert play.ok(vm.name, "freeze")["changed"] is True
        assert play.ok(vm.name, "freeze again")["changed"] is False
        assert play.stdout(vm.name, "frozen files").split() == ["1", "frozen", "1"]
        assert play.ok(vm.name, "info frozen")["containers"][0]["state"] == "frozen"
        thaw = play.ok(vm.name, "thaw")
        assert thaw["changed"] is True and thaw["container"]["state"] == "running"
        assert play.stdout(vm.name, "thawed files").split() == ["0", "frozen", "0"]
        assert play.stdout(vm.name, "exec after thaw") == "alive"


def test_stop_and_destroy_leave_nothing(run, vms):
    play, img, dirct = run
    for vm in vms:
        stop = play.ok(vm.name, "stop")
        assert stop["changed"] is True and stop["container"]["state"] == "stopped"
        assert play.stdout(vm.name, "cgroup after stop") == "1"
        assert play.ok(vm.name, "destroy image")["changed"] is True
        assert play.ok(vm.name, "destroy directory")["changed"] is True
        assert play.ok(vm.name, "destroy again")["changed"] is False
        left = play.stdout(vm.name, "leftovers")
        assert img not in left and dirct not in left, left
