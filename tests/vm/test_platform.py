# -*- coding: utf-8 -*-
"""The VM platform itself (issue: VM test platform): what the other VM tests rely on.

One play collects everything from every VM; the tests below assert on it.
"""

from __future__ import annotations

import pytest

PEER = "{{ groups['ovz_vms'] | difference([inventory_hostname]) | first | default(inventory_hostname) }}"
# An address outside this machine: the VMs' user-mode network is restricted, nothing leaves.
OUTSIDE = "1.1.1.1"


@pytest.fixture(scope="module")
def facts(ansible, vms):
    tasks = [
        {"name": "kernel", "ansible.builtin.raw": "uname -r"},
        {"name": "pid1", "ansible.builtin.raw": "cat /proc/1/comm"},
        {"name": "cgroupfs", "ansible.builtin.raw": "stat -fc %T /sys/fs/cgroup"},
        {"name": "controllers", "ansible.builtin.raw": "cat /sys/fs/cgroup/cgroup.controllers"},
        {"name": "v1 mounts", "ansible.builtin.raw": "awk '$9 == \"cgroup\"' /proc/self/mountinfo | wc -l"},
        {"name": "data disk", "ansible.builtin.raw": "findmnt -no SOURCE,FSTYPE,OPTIONS /var/lib/ovz"},
        {"name": "xfs quota", "ansible.builtin.raw": "xfs_quota -x -c state /var/lib/ovz"},
        {"name": "criu version", "ansible.builtin.raw": "criu --version"},
        {"name": "criu check", "ansible.builtin.raw": "criu check"},
        {"name": "peer ping", "ansible.builtin.raw": "ping -c 2 -W 10 {{ hostvars[peer].ovz_private_ip }}"},
        {"name": "peer ping6", "ansible.builtin.raw": "ping -6 -c 2 -W 10 {{ hostvars[peer].ovz_private_ip6 }}"},
        {"name": "peer ssh", "ansible.builtin.raw":
            "ssh -o BatchMode=yes -o ConnectTimeout=30 {{ hostvars[peer].ovz_private_ip }} hostname"},
        {"name": "outside", "ansible.builtin.raw":
            "timeout 15 python3 -c \"import socket; socket.create_connection(('%s', 443), 10)\"" % OUTSIDE},
        {"name": "hostname", "ansible.builtin.raw": "hostname"},
    ]
    return ansible.play(tasks, variables={"peer": PEER})


def test_debian_kernel_systemd_pure_cgroup_v2(facts, vms):
    for vm in vms:
        assert facts.stdout(vm.name, "kernel").startswith("6.1.")
        assert facts.stdout(vm.name, "pid1") == "systemd"
        assert facts.stdout(vm.name, "cgroupfs") == "cgroup2fs"
        assert set(facts.stdout(vm.name, "controllers").split()) >= {"cpuset", "cpu", "io", "memory", "pids"}
        assert facts.stdout(vm.name, "v1 mounts") == "0"
        assert facts.stdout(vm.name, "hostname") == vm.name


def test_data_disk_is_xfs_with_enforced_quotas(facts, vms):
    for vm in vms:
        source, fstype, options = facts.stdout(vm.name, "data disk").split()
        assert (source, fstype) == ("/dev/vdb", "xfs")
        assert {"usrquota", "grpquota", "prjquota"} <= set(options.split(","))
        state = facts.stdout(vm.name, "xfs quota")
        for kind in ("User", "Group", "Project"):
            section = state.split("%s quota state" % kind, 1)[1].split("quota state", 1)[0]
            assert "Accounting: ON" in section and "Enforcement: ON" in section, state


def test_distribution_criu_check_passes(facts, vms):
    for vm in vms:
        assert facts.stdout(vm.name, "criu version").startswith("Version: 3.17")
        check = facts.ok(vm.name, "criu check")
        assert "Looks good." in check["stdout"] + check["stderr"]


def test_private_link_v4_v6_and_ssh_between_vms(facts, vms):
    if len(vms) < 2:
        pytest.skip("needs two VMs")
    for vm in vms:
        facts.ok(vm.name, "peer ping")
        facts.ok(vm.name, "peer ping6")
        peer = vms[vm.index % len(vms)]
        assert facts.stdout(vm.name, "peer ssh") == peer.name


def test_no_outside_network(facts, vms):
    for vm in vms:
        result = facts.failed(vm.name, "outside")
        assert result["rc"] != 0


def test_inventory_names_the_private_addresses(vm_run):
    with open(vm_run.inventory) as handle:
        text = handle.read()
    for vm in vm_run.vms:
        assert "ovz_private_ip=%s" % vm.private_ip in text
        assert vm.private_ip.startswith("10.213.") and vm.private_ip6.startswith("fd00:213::")
    assert "ansible_python_interpreter=/usr/bin/python3" in text


@pytest.mark.vm_reboot
def test_reboot_is_real_and_the_platform_comes_back(vms):
    vm = vms[-1]
    before = vm.sh("cat /proc/sys/kernel/random/boot_id; touch /var/lib/ovz/.ovz-reboot-mark").stdout.split()[0]
    vm.reboot()
    after = vm.sh("cat /proc/sys/kernel/random/boot_id; findmnt -no FSTYPE,OPTIONS /var/lib/ovz;"
                  " test -e /var/lib/ovz/.ovz-reboot-mark && echo kept; ip -br addr show eth1; hostname;"
                  " cut -d. -f1 /proc/uptime").stdout.splitlines()
    assert after[0] != before
    fstype, options = after[1].split()
    assert fstype == "xfs" and {"usrquota", "grpquota", "prjquota"} <= set(options.split(","))
    assert after[2] == "kept"                      # the overlay keeps the VM's disks across reboots
    assert vm.private_ip + "/16" in after[3]
    assert after[4] == vm.name
    assert int(after[5]) < 600
    if len(vms) > 1:
        vms[0].sh("ping -c 2 -W 10 %s" % vm.private_ip)
