# -*- coding: utf-8 -*-
"""Testinfra checks of the vm scenario, on every VM: the platform, and the converged container."""

from __future__ import annotations


def test_pure_cgroup_v2_with_systemd(host):
    assert host.file("/sys/fs/cgroup/cgroup.controllers").exists
    assert host.run("stat -fc %T /sys/fs/cgroup").stdout.strip() == "cgroup2fs"
    assert host.file("/proc/1/comm").content_string.strip() == "systemd"


def test_ovz_data_dir_is_xfs_with_quotas(host):
    mount = host.mount_point("/var/lib/ovz")
    assert mount.filesystem == "xfs"
    assert {"usrquota", "grpquota", "prjquota"} <= set(mount.options)


def test_criu_check(host):
    result = host.run("criu check")
    assert "Looks good." in result.stdout + result.stderr


def test_converged_container_runs_under_ovz_slice(host):
    procs = host.file("/sys/fs/cgroup/ovz.slice/ovz-ovzmol/payload/cgroup.procs")
    assert procs.exists
    assert procs.content_string.split()
    conf = host.file("/var/lib/ovz/conf/ovzmol.json")
    assert conf.exists
