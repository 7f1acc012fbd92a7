# -*- coding: utf-8 -*-
"""Testinfra checks of the ovz_host role on a VM: what the role set up, and onboot at host start."""

from __future__ import annotations

import json
import time


def test_packages_and_criu(host):
    for name in ("python3-pyroute2", "nftables", "lxcfs", "busybox-static"):
        assert host.package(name).is_installed
    result = host.run("criu check")
    assert "Looks good." in result.stdout + result.stderr


def test_kernel_settings_are_persisted_and_live(host):
    conf = host.file("/etc/sysctl.d/60-ovz.conf")
    assert conf.exists and "net.ipv4.ip_forward = 1" in conf.content_string
    assert host.sysctl("net.ipv4.ip_forward") == 1
    assert host.sysctl("net.ipv6.conf.all.forwarding") == 1
    assert host.sysctl("net.ipv6.conf.all.proxy_ndp") == 1


def test_data_dir_slice_lxcfs(host):
    assert host.file("/var/lib/ovz").is_directory
    assert host.file("/var/lib/ovz/templates").is_directory
    assert host.service("ovz.slice").is_running
    assert host.service("lxcfs").is_running and host.service("lxcfs").is_enabled
    # Containers' cgroups are under the slice.
    assert host.file("/sys/fs/cgroup/ovz.slice/ovz-ovzonboot/payload/cgroup.procs").exists


def test_ovzctl_is_installed_and_lists_the_containers(host):
    result = host.run("/usr/local/sbin/ovzctl list --json")
    assert result.rc == 0, result.stderr
    states = {c["name"]: c["state"] for c in json.loads(result.stdout)}
    assert states == {"ovzonboot": "running", "ovzmanual": "running"}


def test_boot_unit_brings_back_exactly_the_onboot_containers(host):
    assert host.service("ovz-boot").is_enabled
    # A simulated crash: every container's init killed (its pid namespace goes with it).
    for name in ("ovzonboot", "ovzmanual"):
        status = json.loads(host.run("/usr/local/sbin/ovzctl status %s" % name).stdout)
        host.run("kill -KILL %d" % status["init_pid"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        listed = json.loads(host.run("/usr/local/sbin/ovzctl list --json").stdout)
        if all(c["state"] == "stopped" for c in listed):
            break
        time.sleep(1)
    result = host.run("systemctl restart ovz-boot.service")
    assert result.rc == 0, result.stderr
    states = {c["name"]: c["state"] for c in json.loads(host.run("/usr/local/sbin/ovzctl list --json").stdout)}
    assert states == {"ovzonboot": "running", "ovzmanual": "stopped"}
    journal = host.run("journalctl -u ovz-boot.service --no-pager -o cat").stdout
    assert "Starting container ovzonboot (bootorder 5)" in journal
