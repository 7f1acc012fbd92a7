# -*- coding: utf-8 -*-
"""The VM platform itself: what the other VM tests rely on, on each Debian release it boots.

One play collects everything from every VM; the tests below assert on it.
"""

from __future__ import annotations

import pytest

PEER = "{{ groups['ovz_vms'] | difference([inventory_hostname]) | first | default(inventory_hostname) }}"
# An address outside this machine: the VMs' user-mode network is restricted, nothing leaves.
OUTSIDE = "1.1.1.1"

# What each release's image has (scripts/vm.py RELEASES): Debian's stock kernel, CRIU and Python.
EXPECTED = {
    "bookworm": {"debian": "12.", "kernel": "6.1.", "criu": "Version: 3.17", "python": "Python 3.11."},
    "trixie": {"debian": "13.", "kernel": "6.12.", "criu": "Version: 4.1", "python": "Python 3.13."},
}


@pytest.fixture(scope="module")
def facts(ansible, vms):
    tasks = [
        {"name": "kernel", "ansible.builtin.raw": "uname -r"},
        {"name": "debian", "ansible.builtin.raw": "cat /etc/debian_version"},
        {"name": "python", "ansible.builtin.raw": "python3 --version"},
        {"name": "system", "ansible.builtin.raw": "systemctl is-system-running --wait"},
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
        expected = EXPECTED[vm.release]
        assert facts.stdout(vm.name, "debian").startswith(expected["debian"]), vm.release
        assert facts.stdout(vm.name, "kernel").startswith(expected["kernel"]), vm.release
        assert facts.stdout(vm.name, "python").startswith(expected["python"]), vm.release
        assert facts.stdout(vm.name, "system") == "running"
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
        assert facts.stdout(vm.name, "criu version").startswith(EXPECTED[vm.release]["criu"])
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


def test_no_outside_network(facts, vms, vm_run):
    if vm_run.internet:
        pytest.skip("this run was booted with outside access (scripts/vm.py up --internet)")
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
    for vm in vm_run.vms:
        assert "ovz_vm_release=%s" % vm.release in text


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
