# -*- coding: utf-8 -*-
"""Disk quota on this host's kernel (issue 6: ovz_quota), with real loop images.

The image layout's size and inode count are the container's own filesystem, so they
work on a kernel without quota support (this one): writes past ``diskspace`` and files
past ``diskinodes`` fail inside while the host keeps its space, ``df`` inside shows the
container's size, and the module's usage matches ``df`` and ``du``. Raising the size of
a running container is live where the caller holds CAP_SYS_RESOURCE (ext4's online
resize checks it; this build machine's root lacks it, so here the module refuses clearly
and grows with ``restart=true``). Everything that needs kernel quota support fails
naming what is missing; bad input fails naming the parameter with the host unchanged.
Project and second-level quota are tested on the VM tier (tests/vm/test_quota.py).
"""

from __future__ import annotations

import os

import pytest

from conftest import host_snapshot, run_module, sh
from ansible_collections.ovz.containers.plugins.module_utils import quota as q

pytestmark = pytest.mark.timeout(180)

MIB = 1 << 20
HAS_QUOTA = not q.missing_kernel_features("ext4")
ONLINE_GROW = q.has_capability(q.CAP_SYS_RESOURCE)


def args(node, name, **extra):
    base = {"name": name, "data_dir": node.data_dir, "cgroup_parent": node.cgroup_parent}
    base.update(extra)
    return base


def image_container(node, template, size=64 * MIB, inodes=None, start=True):
    name = node.name()
    node.manager.create(name, template, layout="image", diskspace=[size, size],
                        diskinodes=[inodes, inodes] if inodes else None)
    if start:
        node.manager.start(name, wait_boot=True, timeout=20)
    return name


def df_inside(node, name):
    """(total, used, available) bytes of / as df inside the container shows them."""
    line = sh(node.manager, name, "df -k / | tail -n 1").stdout.decode().split()
    return int(line[1]) * 1024, int(line[2]) * 1024, int(line[3]) * 1024


def fill(node, name, path="/fill", megabytes=200):
    """Write until the filesystem refuses; returns dd's exit code and message."""
    result = sh(node.manager, name, "dd if=/dev/zero of=%s bs=1M count=%d 2>&1; echo rc=$?" % (path, megabytes),
                check=False)
    return result.stdout.decode()


def image_state(node, name):
    manager = node.manager
    config = manager.load(name)
    storage = manager.storage(config)
    return {"config": open(manager.layout.conf(name)).read(), "image": storage.image_size(),
            "mounted": storage.mounted(), "pid": manager.runtime(name).init_pid if manager.runtime(name) else None}


# --------------------------------------------------------------------------- first level, image layout
def test_write_past_diskspace_fails_inside_and_host_keeps_its_space(node, busybox_template):
    name = image_container(node, busybox_template, size=64 * MIB)
    host_free = os.statvfs(node.data_dir)
    out = fill(node, name, megabytes=200)
    assert "No space left on device" in out or "Disk quota exceeded" in out, out
    assert "rc=0" not in out
    after = os.statvfs(node.data_dir)
    lost = (host_free.f_bavail - after.f_bavail) * after.f_frsize
    # The image is sparse: the host lost what the container wrote, never more than its size.
    assert lost < 70 * MIB, lost
    total, used, avail = df_inside(node, name)
    assert avail < 1 * MIB and total <= 64 * MIB, (total, used, avail)


def test_files_past_diskinodes_fail(node, busybox_template):
    name = image_container(node, busybox_template, size=64 * MIB, inodes=1000)
    script = ("mkdir /many; i=0; while touch /many/f$i 2>/dev/null; do i=$((i+1)); done; echo $i; "
              "touch /many/last 2>&1; df -i / | tail -n 1")
    out = sh(node.manager, name, script, check=False).stdout.decode().splitlines()
    created = int(out[0])
    assert "No space left on device" in out[1], out
    inodes_total = int(out[2].split()[1])
    assert 1000 <= inodes_total < 1000 + 512, out       # mkfs -N rounds up to whole inode tables
    used_before = inodes_total - created
    assert 0 < used_before < 100, out                    # the template's own files


def test_df_inside_shows_the_container_size_and_usage_matches_df_and_du(node, busybox_template):
    name = image_container(node, busybox_template, size=128 * MIB)
    sh(node.manager, name, "dd if=/dev/zero of=/data bs=1M count=40 2>/dev/null; sync")
    total, used, _avail = df_inside(node, name)
    assert 0.8 * 128 * MIB < total <= 128 * MIB, total  # less the journal and inode tables
    result = run_module("ovz_quota", args(node, name))
    assert result["changed"] is False and not result.get("failed"), result
    usage = result["usage"]
    assert usage["source"] == "statfs"
    assert abs(usage["bytes_hard"] - total) <= 0.01 * total, (usage, total)
    assert abs(usage["bytes_used"] - used) <= 0.01 * used, (usage, used)
    du_kib = int(sh(node.manager, name, "du -skx /").stdout.decode().split()[0])
    assert abs(usage["bytes_used"] - du_kib * 1024) <= 0.01 * du_kib * 1024, (usage, du_kib)
    inodes = sh(node.manager, name, "df -i / | tail -n 1").stdout.decode().split()
    assert usage["inodes_hard"] == int(inodes[1]) and usage["inodes_used"] == int(inodes[2]), (usage, inodes)
    assert usage["image_bytes"] == 128 * MIB
    # Stopped, the superblock gives the same figures.
    node.manager.stop(name)
    stopped = run_module("ovz_quota", args(node, name))["usage"]
    assert stopped["source"] == "superblock"
    assert abs(stopped["bytes_used"] - used) <= 0.01 * used, (stopped, used)
    assert stopped["inodes_used"] == int(inodes[2])


def test_raising_diskspace_of_a_running_container_lets_the_write_succeed(node, busybox_template):
    name = image_container(node, busybox_template, size=64 * MIB)
    out = fill(node, name, "/big", megabytes=80)
    assert "No space left on device" in out, out
    sh(node.manager, name, "rm -f /big")
    pid = node.manager.runtime(name).init_pid
    if ONLINE_GROW:
        result = run_module("ovz_quota", args(node, name, diskspace="128M"))
        assert result["changed"] is True and result["applied"] is True and result["restarted"] is False, result
        assert node.manager.runtime(name).init_pid == pid           # no restart
    else:
        # This machine's root lacks CAP_SYS_RESOURCE: the module says so and changes nothing...
        before = image_state(node, name)
        refused = run_module("ovz_quota", args(node, name, diskspace="128M"))
        assert refused.get("failed") is True and "diskspace" in refused["msg"], refused
        assert "CAP_SYS_RESOURCE" in refused["msg"]
        assert image_state(node, name) == before
        # ... and grows it with an explicit restart.
        result = run_module("ovz_quota", args(node, name, diskspace="128M", restart=True))
        assert result["changed"] is True and result["restarted"] is True, result
        node.manager.wait_booted(name, timeout=20)
    assert node.manager.storage(node.manager.load(name)).image_size() == 128 * MIB
    out = fill(node, name, "/big", megabytes=80)
    assert "rc=0" in out, out
    total, _used, _avail = df_inside(node, name)
    assert total > 0.8 * 128 * MIB
    assert node.manager.load(name).diskspace == [128 * MIB, 128 * MIB]
    assert node.manager.facts(name)["diskspace"] == [128 * MIB, 128 * MIB]     # ovz_container sees the same


def test_shrinking_a_stopped_image_and_soft_limit_reported_not_enforced(node, busybox_template):
    name = image_container(node, busybox_template, size=96 * MIB, start=False)
    result = run_module("ovz_quota", args(node, name, diskspace="48M:64M"))
    assert result["changed"] is True and not result.get("failed"), result
    assert node.manager.storage(node.manager.load(name)).image_size() == 64 * MIB
    assert "diskspace" in result["not_enforced"] and "soft" in result["not_enforced"]["diskspace"]
    node.manager.start(name, wait_boot=True, timeout=20)
    total, _used, _avail = df_inside(node, name)
    assert 0.8 * 64 * MIB < total <= 64 * MIB


# --------------------------------------------------------------------------- failures change nothing
def failing_cases():
    cases = [
        ("shrink running", dict(diskspace="32M"), "diskspace", "running"),
        ("below usage", dict(diskspace="16M", restart=True), "diskspace", "running"),
        ("bad size", dict(diskspace="12X"), "diskspace", "running"),
        ("not 4K aligned", dict(diskspace="70000001"), "diskspace", "running"),
        ("soft above hard", dict(diskspace="2G:1G"), "diskspace", "running"),
        ("inodes beyond the filesystem", dict(diskinodes="100000"), "diskinodes", "running"),
        ("bad quotatime", dict(quotatime="soon"), "quotatime", "running"),
        ("users without second level", dict(users=[{"name": "root", "blocks": "1M"}]), "users", "running"),
        ("below usage stopped", dict(diskspace="16M"), "diskspace", "stopped"),
    ]
    if not HAS_QUOTA:
        cases.append(("second level without kernel quota", dict(quotaugidlimit=100), "quotaugidlimit", "running"))
    return cases


@pytest.mark.parametrize("label,override,param,state", failing_cases(), ids=[c[0] for c in failing_cases()])
def test_failure_names_parameter_and_changes_nothing(node, busybox_template, label, override, param, state):
    name = image_container(node, busybox_template, size=64 * MIB, start=state == "running")
    if label.startswith("below usage"):
        if state == "running":
            sh(node.manager, name, "dd if=/dev/zero of=/data bs=1M count=30 2>/dev/null; sync")
        else:
            node.manager.start(name, wait_boot=True, timeout=20)
            sh(node.manager, name, "dd if=/dev/zero of=/data bs=1M count=30 2>/dev/null; sync")
            node.manager.stop(name)
            os.sync()       # the autoclear loop device is released asynchronously after the unmount
    before = image_state(node, name)
    snapshot = stable_snapshot(node, name, state)
    for check in (True, False):
        result = run_module("ovz_quota", args(node, name, **override), check=check)
        assert result.get("failed") is True, (label, result)
        assert param in result["msg"], (label, result["msg"])
    assert image_state(node, name) == before
    after = stable_snapshot(node, name, state)
    assert after == snapshot, sorted(k for k in set(after["files"]) | set(snapshot["files"])
                                     if after["files"].get(k) != snapshot["files"].get(k))


def node_snapshot(node):
    """host_snapshot restricted to this node: other tests on the machine add and remove their own
    loop devices, links and cgroups meanwhile."""
    snapshot = host_snapshot(node.data_dir)
    snapshot["mounts"] = [m for m in snapshot["mounts"] if m.startswith(node.data_dir)]
    snapshot["loops"] = [m for m in snapshot["loops"] if node.data_dir in m]
    snapshot["cgroups"] = [c for c in snapshot["cgroups"] if node.cgroup_parent in c]
    snapshot.pop("links")
    return snapshot


def stable_snapshot(node, name, state):
    """node_snapshot, without the bytes of a mounted image: its filesystem commits its journal and
    initialises inode tables in the background (its size, mounts and loop device are compared).
    conftest.host_snapshot leaves a container's own files out already; this keeps holding if it
    ever compares them again."""
    snapshot = node_snapshot(node)
    if state == "running":
        snapshot["files"].pop("private/%s/root.img" % name, None)
    return snapshot


@pytest.mark.skipif(HAS_QUOTA, reason="this kernel has quota support")
def test_directory_quota_without_kernel_support_fails_naming_the_feature(node, busybox_template):
    name = node.name()
    node.manager.create(name, busybox_template, layout="directory")
    snapshot = node_snapshot(node)
    result = run_module("ovz_quota", args(node, name, diskspace="100M", diskinodes="10000"))
    assert result.get("failed") is True and "diskspace" in result["msg"], result
    assert "CONFIG_" in result["msg"] or "prjquota" in result["msg"], result["msg"]
    assert node_snapshot(node) == snapshot
    # Usage alone works everywhere: du of the private area.
    usage = run_module("ovz_quota", args(node, name))["usage"]
    assert usage["source"] == "du" and usage["bytes_used"] > 0 and usage["inodes_used"] > 10


# --------------------------------------------------------------------------- the module three ways
def test_module_three_ways_and_diff(node, busybox_template):
    name = image_container(node, busybox_template, size=64 * MIB, start=False)
    module_args = args(node, name, diskspace="96M", diskinodes="1000")
    before = node_snapshot(node)
    checked = run_module("ovz_quota", module_args, check=True, diff=True)
    assert checked["changed"] is True and not checked.get("failed"), checked
    assert checked["diff"]["before"]["diskspace"] == [64 * MIB, 64 * MIB]
    assert checked["diff"]["after"]["diskspace"] == [96 * MIB, 96 * MIB]
    assert node_snapshot(node) == before, "check mode changed the host"
    first = run_module("ovz_quota", module_args, diff=True)
    assert first["changed"] is True and not first.get("failed"), first
    assert first["quota"]["diskspace"] == [96 * MIB, 96 * MIB]
    assert node.manager.storage(node.manager.load(name)).image_size() == 96 * MIB
    second = run_module("ovz_quota", module_args, diff=True)
    assert second["changed"] is False, second
    assert second["diff"]["before"] == second["diff"]["after"]
    assert run_module("ovz_quota", module_args, check=True)["changed"] is False
    # Running: the same settings are still not a change, and usage is live.
    node.manager.start(name, wait_boot=True, timeout=20)
    running = run_module("ovz_quota", module_args)
    assert running["changed"] is False and running["usage"]["source"] == "statfs", running
