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

import errno
import hashlib
import os
import stat
import subprocess
import time

import pytest

from support.node import run_module, sh
from support.snapshot import host_snapshot
from ansible_collections.ovz.containers.plugins.module_utils._engine.resources import quota as q
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel import storage as st
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.namespaces import syncfs

pytestmark = pytest.mark.timeout(180)

MIB = 1 << 20
HAS_QUOTA = not q.missing_kernel_features("ext4")
ONLINE_GROW = q.has_capability(q.CAP_SYS_RESOURCE)


def args(node, name, **extra):
    base = {"name": name, "data_dir": node.data_dir, "cgroup_parent": node.cgroup_parent}
    base.update(extra)
    return base


def image_container(node, template, size=64 * MIB, inodes=None, start=True, unprivileged=False):
    """A privileged container (the second level's tools inside need it), unless ``unprivileged``."""
    name = node.name()
    node.manager.create(name, template, layout="image", diskspace=[size, size],
                        diskinodes=[inodes, inodes] if inodes else None, unprivileged=unprivileged)
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
    assert abs(usage["bytes_total"] - total) <= 0.01 * total, (usage, total)
    # The limits as set, the soft one never above the hard one (the filesystem's size, more than df shows).
    assert usage["bytes_hard"] == 128 * MIB == usage["image_bytes"] and usage["bytes_soft"] <= usage["bytes_hard"], usage
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
        assert "capability CAP_SYS_RESOURCE" in refused["msg"] and "restart: true" in refused["msg"], refused["msg"]
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
    support.snapshot.host_snapshot leaves a container's own files out already; this keeps holding if it
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


# --------------------------------------------------------------------------- the loop device's direct I/O
def losetup_dio(device):
    """The DIO column of ``losetup --list -O NAME,DIO`` for ``device``."""
    out = subprocess.run(["losetup", "--list", "--noheadings", "-O", "NAME,DIO", device], stdout=subprocess.PIPE,
                         universal_newlines=True, check=True).stdout.split()
    assert out[0] == device, out
    return out[1]


def read_image(image):
    """The image file as a buffered reader sees it (migration's chunk copy reads it this way)."""
    with open(image, "rb") as handle:
        return handle.read()


def file_in_image_copy(image_bytes, workdir, path):
    """sha256 of ``path`` in a copy of the image, after e2fsck replays its journal (as the target's mount would)."""
    copy = os.path.join(workdir, "ovz-copy.img")
    with open(copy, "wb") as handle:
        handle.write(image_bytes)
    try:
        fsck = subprocess.run(["e2fsck", "-fy", copy], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        assert fsck.returncode in (0, 1), fsck.stdout
        out = subprocess.run(["debugfs", "-R", "cat %s" % path, copy], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             check=True).stdout
        return hashlib.sha256(out).hexdigest()
    finally:
        os.unlink(copy)


def test_image_loop_device_does_direct_io_and_readers_of_the_image_see_synced_data(node, busybox_template):
    name = image_container(node, busybox_template, size=64 * MIB)
    storage = node.manager.storage(node.manager.load(name))
    device = storage.loop_device()
    assert device is not None and losetup_dio(device) == "1"
    assert storage.direct_io_note() is None
    usage = run_module("ovz_quota", args(node, name))
    assert usage["usage"]["loop_device"] == device and usage["usage"]["direct_io"] is True, usage
    assert not usage.get("warnings"), usage
    # A reader of the image file through the host's page cache (migration's chunk copy) caches the old
    # blocks; the loop device then writes new data in place with direct I/O: after the container's
    # filesystem is synced, the same reader sees the new data, not its cached pages.
    sh(node.manager, name, "dd if=/dev/urandom of=/pattern bs=64k count=32 2>/dev/null; sync")
    old = sh(node.manager, name, "sha256sum /pattern").stdout.decode().split()[0]
    first = read_image(storage.image)
    assert file_in_image_copy(first, node.data_dir, "/pattern") == old
    sh(node.manager, name, "dd if=/dev/urandom of=/pattern bs=64k count=32 conv=notrunc 2>/dev/null")
    new = sh(node.manager, name, "sha256sum /pattern").stdout.decode().split()[0]
    assert new != old
    syncfs(storage.root)
    with open(storage.image, "rb") as handle:
        os.fsync(handle.fileno())
    assert file_in_image_copy(read_image(storage.image), node.data_dir, "/pattern") == new


def test_direct_io_refused_falls_back_to_buffered_and_says_so(node, monkeypatch):
    """ramfs has no direct I/O: the loop device is attached buffered and the storage says why."""
    ramfs = os.path.join(node.data_dir, "ovz-ramfs")
    os.makedirs(ramfs)
    subprocess.run(["mount", "-t", "ramfs", "-o", "size=64m", "ovz-ramfs", ramfs], check=True)
    try:
        storage = st.Storage("image", os.path.join(ramfs, "private"), os.path.join(ramfs, "root"))
        storage.create(32 * MIB, None)
        storage.mount()
        try:
            device = storage.loop_device()
            assert losetup_dio(device) == "0" and st.loop_direct_io(device) is False
            note = storage.direct_io_note()
            assert note and "buffered" in note and "ramfs" in note and device in note, note
            with open(os.path.join(storage.root, "data"), "wb") as handle:
                handle.write(b"x" * MIB)
        finally:
            storage.umount()
    finally:
        subprocess.run(["umount", ramfs], check=True)
    # A kernel that rejects the flag itself (EINVAL from LOOP_CONFIGURE) gets a buffered device too.
    image = os.path.join(node.data_dir, "ovz-einval.img")
    with open(image, "wb") as handle:
        handle.truncate(16 * MIB)
    real_ioctl = st.fcntl.ioctl
    asked = []

    def refusing_ioctl(fd, request, arg=0, *rest):
        if request == st.LOOP_CONFIGURE:
            flags = st.LoopConfig.from_buffer_copy(arg).info.lo_flags
            asked.append(flags)
            if flags & st.LO_FLAGS_DIRECT_IO:
                raise OSError(errno.EINVAL, "Invalid argument")
        return real_ioctl(fd, request, arg, *rest)
    monkeypatch.setattr(st.fcntl, "ioctl", refusing_ioctl)
    device, loop_fd = st.attach_loop(image)
    monkeypatch.undo()
    try:
        assert asked == [st.LO_FLAGS_AUTOCLEAR | st.LO_FLAGS_DIRECT_IO, st.LO_FLAGS_AUTOCLEAR], asked
        assert losetup_dio(device) == "0"
    finally:
        os.close(loop_fd)
        os.unlink(image)


# --------------------------------------------------------------------------- ovz_info reports quota usage
def test_ovz_info_reports_quota_usage_on_both_layouts(node, busybox_template):
    running = image_container(node, busybox_template, size=64 * MIB)
    stopped = image_container(node, busybox_template, size=48 * MIB, inodes=2000, start=False)
    directory = node.name()
    node.manager.create(directory, busybox_template, layout="directory")
    sh(node.manager, running, "dd if=/dev/zero of=/data bs=1M count=10 2>/dev/null; sync")
    info_args = {"data_dir": node.data_dir, "cgroup_parent": node.cgroup_parent}
    before = node_snapshot(node)
    checked = run_module("ovz_info", info_args, check=True)
    result = run_module("ovz_info", info_args)
    for outcome in (checked, result):
        assert outcome["changed"] is False and not outcome.get("failed"), outcome
    assert node_snapshot(node)["mounts"] == before["mounts"] and node_snapshot(node)["loops"] == before["loops"]
    by_name = {c["name"]: c["quota_usage"] for c in result["containers"]}
    live = by_name[running]
    total, used, _avail = df_inside(node, running)
    assert live["layout"] == "image" and live["source"] == "statfs" and live["direct_io"] is True, live
    assert abs(live["bytes_total"] - total) <= 0.01 * total and abs(live["bytes_used"] - used) <= 0.01 * used, (live, used)
    assert live["bytes_hard"] == 64 * MIB and live["bytes_soft"] <= live["bytes_hard"], live
    assert live["bytes_used"] > 10 * MIB and live["image_bytes"] == 64 * MIB
    inodes = sh(node.manager, running, "df -i / | tail -n 1").stdout.decode().split()
    assert live["inodes_hard"] == int(inodes[1]) and live["inodes_used"] == int(inodes[2]), (live, inodes)
    assert live == dict(run_module("ovz_quota", args(node, running))["usage"], bytes_free=live["bytes_free"],
                        bytes_used=live["bytes_used"], inodes_free=live["inodes_free"], inodes_used=live["inodes_used"])
    cold = by_name[stopped]
    assert cold["source"] == "superblock" and cold["image_bytes"] == 48 * MIB, cold
    assert 2000 <= cold["inodes_hard"] < 2000 + 512 and 0 < cold["inodes_used"] < 100, cold
    assert 0.8 * 48 * MIB < cold["bytes_total"] <= 48 * MIB and cold["bytes_used"] > 0, cold
    assert cold["bytes_hard"] == 48 * MIB and cold["bytes_soft"] <= cold["bytes_hard"], cold
    plain = by_name[directory]
    assert plain["layout"] == "directory" and plain["source"] == "du", plain      # no project quota set
    du_bytes, du_inodes = q.du(node.manager.layout.private(directory))
    assert plain["bytes_used"] == du_bytes > 0 and plain["inodes_used"] == du_inodes > 10, plain
    assert plain["bytes_hard"] is None and plain["inodes_hard"] is None, plain
    # One container, by name; an unknown one is absent, with no quota entry; a bad name fails naming it.
    one = run_module("ovz_info", dict(info_args, name=[stopped, "ovznone"]))
    assert [c["name"] for c in one["containers"]] == [stopped, "ovznone"]
    assert one["containers"][0]["quota_usage"] == cold and "quota_usage" not in one["containers"][1]
    bad = run_module("ovz_info", dict(info_args, name=["../etc"]))
    assert bad.get("failed") is True and "name" in bad["msg"], bad
    assert node_snapshot(node)["mounts"] == before["mounts"]


# --------------------------------------------------------------------------- the second level's block node
def loop_nodes_inside(node, name):
    """{name: (major, minor)} of the block nodes in the container's /dev."""
    out = sh(node.manager, name, "for f in /dev/*; do [ -b \"$f\" ] && stat -c '%n %t %T' \"$f\"; done; true")
    return {line.split()[0]: (int(line.split()[1], 16), int(line.split()[2], 16))
            for line in out.stdout.decode().splitlines() if line.strip()}


def mounted_loop(node, name):
    device = node.manager.storage(node.manager.load(name)).loop_device()
    rdev = os.stat(device).st_rdev
    return device, (os.major(rdev), os.minor(rdev))


def with_second_level(node, name):
    """The stored second level (quotaugidlimit) without the ext4 quota feature: on this kernel
    (no CONFIG_QFMT_V2) the feature cannot be mounted, but the mount options and the /dev node
    that go with the setting are the same."""
    config = node.manager.load(name)
    config.quota = dict(config.quota or {}, quotaugidlimit=10)
    node.manager.store.save(config)


def hold_loop(node, device, private):
    """Attach scratch images until ``device`` is one of them (it is released asynchronously after the
    unmount, and other tests take loop devices meanwhile): the next attach gets another number.
    Returns the descriptors that hold them; none when another test's image took ``device`` first, which
    keeps it from the next attach as well. ``private``: the stopped container's private area."""
    image = os.path.join(node.data_dir, "ovz-hold.img")
    with open(image, "wb") as handle:
        handle.truncate(16 * MIB)
    held = []
    backing = "/sys/block/%s/loop/backing_file" % os.path.basename(device)
    try:
        for _attempt in range(200):
            try:
                with open(backing) as handle:
                    owner = handle.read().strip()
            except OSError:
                owner = None
            if owner is not None and not owner.startswith(private.rstrip("/") + "/"):
                return held
            if owner is None:
                got, loop_fd = st.attach_loop(image)
                held.append(loop_fd)
                if got == device:
                    return held
            else:
                time.sleep(0.05)
    except BaseException:
        for loop_fd in held:
            os.close(loop_fd)
        raise
    finally:
        os.unlink(image)
    for loop_fd in held:
        os.close(loop_fd)
    raise AssertionError("%s was not released" % device)


def test_second_level_node_follows_the_loop_device_across_restarts(node, busybox_template):
    name = image_container(node, busybox_template, size=64 * MIB, start=False)
    with_second_level(node, name)
    node.manager.start(name, wait_boot=True, timeout=20)
    first, numbers = mounted_loop(node, name)
    assert loop_nodes_inside(node, name) == {first: numbers}
    assert "usrquota" in q.filesystem_of(node.manager.layout.root(name))["super"]
    node.manager.stop(name)
    held = hold_loop(node, first, node.manager.layout.private(name))
    try:
        node.manager.start(name, wait_boot=True, timeout=20)
        second, numbers2 = mounted_loop(node, name)
    finally:
        for loop_fd in held:
            os.close(loop_fd)
    assert second != first
    assert loop_nodes_inside(node, name) == {second: numbers2}
    # What the quota tools inside read: /proc/mounts names that same node.
    mounts = sh(node.manager, name, "cat /proc/mounts").stdout.decode().splitlines()
    assert any(line.split()[:2] == [second, "/"] for line in mounts), mounts


@pytest.mark.serial  # waits for a given loop device number, which parallel tests take meanwhile
@pytest.mark.parametrize("unprivileged", [False, True], ids=["privileged", "unprivileged"])
def test_second_level_node_follows_the_loop_device_after_restore(node, busybox_template, unprivileged):
    """After a restore on another loop device, the container's node is its own disk's current one: made anew
    (privileged), or the host's node of it bound where the old one was (unprivileged: never the host's node
    of the dump's number, which may be another container's disk now)."""
    from ansible_collections.ovz.containers.plugins.module_utils._engine.ops.checkpoint import Checkpointer
    from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.criu import Criu, find_criu
    try:
        criu = Criu(find_criu())
    except q.OvzError as exc:
        pytest.skip(str(exc))
    ok, output = criu.check()
    if not ok:
        pytest.skip("criu check fails on this kernel: %s" % output.splitlines()[-1:])
    name = image_container(node, busybox_template, size=64 * MIB, start=False, unprivileged=unprivileged)
    with_second_level(node, name)
    node.manager.start(name, wait_boot=True, timeout=20)
    first, numbers = mounted_loop(node, name)
    assert loop_nodes_inside(node, name) == {first: numbers}
    images = os.path.join(node.data_dir, "ovz-ckpt")
    checkpointer = Checkpointer(node.manager, criu)
    checkpointer.dump(name, images)
    assert node.manager.status(name) == "stopped"
    held = hold_loop(node, first, node.manager.layout.private(name))
    try:
        checkpointer.restore(name, images)
        second, numbers2 = mounted_loop(node, name)
    finally:
        for loop_fd in held:
            os.close(loop_fd)
    assert second != first
    if unprivileged:
        assert loop_nodes_inside(node, name) == {first: numbers2}
        return
    assert loop_nodes_inside(node, name) == {second: numbers2}
    mode = stat.S_IMODE(os.stat("/proc/%d/root%s" % (node.manager.runtime(name).init_pid, second)).st_mode)
    assert mode == 0o600


def test_a_copy_of_the_mount_elsewhere_keeps_one_loop_device_per_image(node, busybox_template):
    """A mount namespace made elsewhere while the container runs (any other container's start,
    any service with a private /tmp) keeps the image's ext4 alive after the stop; the next start
    mounts the same loop device again (the same ext4 instance), never a second device on the file,
    which would run two ext4 instances on the same blocks and corrupt it."""
    name = image_container(node, busybox_template)
    storage = node.manager.storage(node.manager.load(name))
    device = storage.loop_device()
    sh(node.manager, name, "echo one > /marker")
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep", "120"])
    try:
        for _attempt in range(500):
            try:
                with open("/proc/%d/mountinfo" % holder.pid) as handle:
                    if storage.root in handle.read() and os.readlink("/proc/%d/exe" % holder.pid).endswith("sleep"):
                        break
            except OSError:
                pass
            time.sleep(0.01)
        node.manager.stop(name)
        assert st.loops_of(storage.image) == [device], "the copy of the mount keeps the device bound"
        node.manager.start(name, wait_boot=True, timeout=20)
        assert st.loops_of(storage.image) == [device] and storage.loop_device() == device
        assert sh(node.manager, name, "cat /marker").stdout == b"one\n"
        sh(node.manager, name, "echo two > /marker; sync")
        node.manager.stop(name)
    finally:
        holder.kill()
        holder.wait()
    assert st.wait_released(device, storage.image, timeout=20)
    assert st.loops_of(storage.image) == []
    fsck = subprocess.run(["e2fsck", "-fn", storage.image], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    assert fsck.returncode == 0, fsck.stdout.decode()
    node.manager.start(name, wait_boot=True, timeout=20)
    assert sh(node.manager, name, "cat /marker").stdout == b"two\n"
