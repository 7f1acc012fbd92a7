# -*- coding: utf-8 -*-
"""onboot after a real reboot of a VM (issue 3: VM test platform); runs after every other VM test.

VM 1 is prepared with the ``ovz.containers.ovz_host`` role (ovzctl, the ``ovz-boot.service`` unit
that runs ``ovzctl boot`` at host start, ``ovz.slice``, LXCFS, forwarding; the packages are in the
image already and CRIU is not needed here, so those parts are skipped). Two containers run, one
with ``onboot: true``, one with ``onboot: false``. ``scripts/vm.py reboot`` reboots the VM for real
(a new boot id); afterwards exactly the onboot container runs, started by the boot unit.
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.vm_reboot


@pytest.fixture(scope="module")
def onboot(ansible, vm1, vm_template, vm_workdir, ct_names_module):
    on, off = ct_names_module(2)
    before = [
        {"name": "host role", "ansible.builtin.include_role": {"name": "ovz.containers.ovz_host"},
         "vars": {"ovz_host_packages": [], "ovz_host_criu": False,
                  "ovz_host_build_dir": os.path.join(vm_workdir, "ovzctl-build")}},
        {"name": "start onboot", "ovz.containers.ovz_container": {
            "name": on, "template": vm_template, "onboot": True, "state": "started", "wait_boot": True}},
        {"name": "start not onboot", "ovz.containers.ovz_container": {
            "name": off, "template": vm_template, "onboot": False, "state": "started", "wait_boot": True}},
        {"name": "unit before", "ansible.builtin.raw": "systemctl is-enabled ovz-boot.service;"
                                                       " cat /proc/sys/kernel/random/boot_id"},
    ]
    first = ansible.play(before, hosts=vm1.name)
    first.ok(vm1.name, "start onboot")
    first.ok(vm1.name, "start not onboot")
    vm1.reboot()
    after = [
        # SSH may answer while the oneshot unit still starts the containers (activating): wait for its end.
        {"name": "boot unit", "ansible.builtin.raw":
            "for i in $(seq 600); do [ \"$(systemctl is-active ovz-boot.service)\" != activating ] && break; sleep 1;"
            " done; cat /proc/sys/kernel/random/boot_id; systemctl is-active ovz-boot.service;"
            " systemctl show -P ExecMainStatus ovz-boot.service"},
        {"name": "info after reboot", "ovz.containers.ovz_info": {"name": [on, off]}},
        {"name": "exec after reboot", "ovz.containers.ovz_exec": {"name": on, "command": "hostname; cat /proc/1/comm"}},
        {"name": "destroy onboot", "ovz.containers.ovz_container": {"name": on, "state": "absent"}},
        {"name": "destroy not onboot", "ovz.containers.ovz_container": {"name": off, "state": "absent"}},
    ]
    return first, ansible.play(after, hosts=vm1.name), vm1.name, on, off


def test_role_enables_the_boot_unit(onboot):
    first, _after, host, _on, _off = onboot
    role = first.get(host, "host role")
    assert role["_status"] == "ok", role
    assert first.stdout(host, "unit before").split("\n")[0] == "enabled"


def test_exactly_the_onboot_container_runs_after_a_real_reboot(onboot):
    first, after, host, on, off = onboot
    old_boot = first.stdout(host, "unit before").split("\n")[1]
    boot_id, active, status = after.stdout(host, "boot unit").split("\n")
    assert boot_id != old_boot                      # a real reboot
    assert (active, status) == ("active", "0")
    states = {c["name"]: c["state"] for c in after.ok(host, "info after reboot")["containers"]}
    assert states == {on: "running", off: "stopped"}, states
    assert after.stdout(host, "exec after reboot").split("\n")[1] == "init"


def test_cleanup(onboot):
    _first, after, host, _on, _off = onboot
    assert after.ok(host, "destroy onboot")["changed"] is True
    assert after.ok(host, "destroy not onboot")["changed"] is True
