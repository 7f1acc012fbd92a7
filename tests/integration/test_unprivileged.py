# -*- coding: utf-8 -*-
"""Unprivileged containers (issue 9): ``unprivileged: true`` runs the container in its own user
namespace with a block of 65536 host ids (like Incus security.idmap.isolated).

What a user checks: root inside is uid 0 there and a plain uid on the host (ps, /proc/<pid>/status),
files root creates inside belong to that uid as the container's mount shows them, two containers
get disjoint blocks, destroy gives the block back, the module runs three ways, and changing the
option of a running container fails naming it with the host unchanged. The escape suite
(tests/security/test_escape.py) runs every attack against unprivileged containers too.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import subprocess

import pytest

from support import REPO
from support.node import run_module, sh
from support.snapshot import host_snapshot

from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel import idmap
from ansible_collections.ovz.containers.plugins.module_utils._engine.ops.checkpoint import Checkpointer
from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import PAYLOAD

from support.netlab import A4, OUT4, routed_lab  # noqa: F401  pylint: disable=unused-import
from support.debian import wait_system_running


def status_ids(pid, key):
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return [int(x) for x in line.split()[1:]]
    raise AssertionError("no %s in /proc/%d/status" % (key, pid))


def start_unprivileged(node, template, layout="image"):
    name = node.name()
    node.manager.create(name, template, layout=layout, unprivileged=True)
    node.manager.start(name, wait_boot=True, timeout=20)
    return name


def block_of(node, name):
    entry = node.manager.facts(name)["idmap"]
    assert entry["count"] == 65536 and entry["uid"] == entry["gid"], entry
    return entry["uid"]


def test_root_inside_is_a_plain_uid_on_the_host(node, busybox_template):
    name = start_unprivileged(node, busybox_template)
    first = block_of(node, name)
    assert first >= 65536
    facts = node.manager.facts(name)
    assert facts["unprivileged"] is True and facts["idmap"]["mode"] == "idmapped"
    # Inside: root, with the block as its whole world.
    assert sh(node.manager, name, "id -u; id -g").stdout == b"0\n0\n"
    assert sh(node.manager, name, "cat /proc/self/uid_map").stdout.split() == [b"0", str(first).encode(), b"65536"]
    assert sh(node.manager, name, "cat /proc/self/gid_map").stdout.split() == [b"0", str(first).encode(), b"65536"]
    # On the host: every process of the container runs as the block's first uid and gid.
    init_pid = node.manager.runtime(name).init_pid
    sh(node.manager, name, "sleep 60 >/dev/null 2>&1 &")
    pids = node.manager.cgroups_for(node.manager.runtime(name)).pids()
    assert init_pid in pids and len(pids) >= 2
    for pid in pids:
        assert status_ids(pid, "Uid") == [first] * 4, pid
        assert status_ids(pid, "Gid") == [first] * 4, pid
    listed = subprocess.run(["ps", "-o", "uid=", "-p", ",".join(str(p) for p in pids)], stdout=subprocess.PIPE,
                            universal_newlines=True, check=True).stdout.split()
    assert set(listed) == {str(first)}
    # A file root makes inside belongs to the block's root through the container's mount; on disk the
    # tree keeps its own ownership (0), which is what the idmapped mount shows as the block.
    sh(node.manager, name, "echo x > /root/made-inside && chown 1000:1000 /root/made-inside-too 2>/dev/null; "
       "touch /root/made-inside-too && chown 1000:1000 /root/made-inside-too")
    seen = os.stat("/proc/%d/root/root/made-inside" % init_pid)
    assert (seen.st_uid, seen.st_gid) == (first, first)
    seen = os.stat("/proc/%d/root/root/made-inside-too" % init_pid)
    assert (seen.st_uid, seen.st_gid) == (first + 1000, first + 1000)
    on_disk = os.stat(os.path.join(node.manager.layout.root(name), "root", "made-inside"))
    assert (on_disk.st_uid, on_disk.st_gid) == (0, 0)
    assert sh(node.manager, name, "stat -c %u:%g /root/made-inside /bin/busybox").stdout == b"0:0\n0:0\n"
    # No device node can be made; the allowed ones are the host's, bound in.
    result = sh(node.manager, name, "mknod /tmp/null c 1 3", check=False)
    assert result.rc != 0
    assert sh(node.manager, name, "echo ok > /dev/null && head -c 4 /dev/urandom | wc -c").stdout.strip() == b"4"
    # The payload cgroup is delegated to the container's root (systemd's Delegate=yes).
    cgroups = node.manager.cgroups_for(node.manager.runtime(name))
    for path in cgroups.paths.values():
        payload = os.path.join(path, PAYLOAD)
        assert os.stat(payload).st_uid == first
        assert os.stat(os.path.join(payload, "cgroup.procs")).st_uid == first
        assert os.stat(path).st_uid == 0   # the limits above stay the host's
    sh(node.manager, name, "mkdir /sys/fs/cgroup/ovz-sub && rmdir /sys/fs/cgroup/ovz-sub")
    # The beancounters snapshot is the container root's to read.
    node.manager.facts(name, beancounters=True)
    assert sh(node.manager, name, "head -n 1 /run/ovz/user_beancounters").stdout.startswith(b"Version: 2.5")
    # Stop and start again: the same block.
    node.manager.restart(name, wait_boot=True, timeout=20)
    assert status_ids(node.manager.runtime(name).init_pid, "Uid")[0] == first
    assert sh(node.manager, name, "cat /root/made-inside").stdout == b"x\n"


NS_GET_OWNER_UID = 0xb704   # _IO(0xb7, 0x4)


def userns_owner(pid):
    fd = os.open("/proc/%d/ns/user" % pid, os.O_RDONLY | os.O_CLOEXEC)
    try:
        buf = bytearray(4)
        fcntl.ioctl(fd, NS_GET_OWNER_UID, buf)
        return struct.unpack("I", buf)[0]
    finally:
        os.close(fd)


def test_the_user_namespace_is_owned_by_the_block(node, busybox_template):
    """The kernel charges per-user counts (inotify, RLIMIT_NPROC, pending signals, mqueue bytes, nested
    namespaces) of a user namespace's processes to the namespace's owner on the host: the block's first uid,
    not host root. Entering the container and running commands in it still work."""
    name = start_unprivileged(node, busybox_template, layout="directory")
    first = block_of(node, name)
    init_pid = node.manager.runtime(name).init_pid
    assert userns_owner(init_pid) == first
    assert status_ids(init_pid, "Uid") == [first] * 4 and status_ids(init_pid, "Gid") == [first] * 4
    seen = os.stat("/proc/%d" % init_pid)
    assert (seen.st_uid, seen.st_gid) == (first, first)
    assert sh(node.manager, name, "id -u; cat /proc/self/uid_map").stdout.split() == [
        b"0", b"0", str(first).encode(), b"65536"]
    node.manager.restart(name, wait_boot=True, timeout=20)
    assert userns_owner(node.manager.runtime(name).init_pid) == first


def test_two_containers_get_disjoint_blocks_and_destroy_frees_them(node, busybox_template):
    one = start_unprivileged(node, busybox_template, layout="directory")
    two = start_unprivileged(node, busybox_template, layout="directory")
    first_one, first_two = block_of(node, one), block_of(node, two)
    assert abs(first_one - first_two) >= 65536
    assert status_ids(node.manager.runtime(one).init_pid, "Uid")[0] == first_one
    assert status_ids(node.manager.runtime(two).init_pid, "Uid")[0] == first_two
    assert set(node.manager.idmap.entries()) == {one, two}
    node.manager.destroy(one)
    assert set(node.manager.idmap.entries()) == {two}
    # The freed block can be taken again: the lowest free block is taken, so the new one is the freed one or a
    # lower one (a container of a test running beside this one may have freed a lower block meanwhile), unless a
    # user namespace of something else on this host took the freed one meanwhile (blocks in use are skipped).
    three = node.name()
    node.manager.create(three, busybox_template, layout="directory", unprivileged=True)
    assert block_of(node, three) != first_two
    assert block_of(node, three) <= first_one or any(
        start <= first_one < start + count for start, count in idmap.host_ranges_in_use())
    node.manager.destroy(three)
    node.manager.destroy(two)
    assert node.manager.idmap.entries() == {}
    assert not os.path.exists(os.path.join(node.data_dir, idmap.POOL_FILE))


def test_blocks_in_use_by_other_user_namespaces_are_skipped(node, busybox_template):
    """Another node's container (another data_dir) runs in a block this pool has no record of."""
    name = start_unprivileged(node, busybox_template, layout="directory")
    first = block_of(node, name)
    other = idmap.IdmapPool(os.path.join(node.data_dir, "other-node"), ranges=[(first, 64 * 65536)])
    os.makedirs(other.data_dir)
    # A later block, the next one unless containers of other tests running beside this one hold it.
    taken = other.allocate("x")["uid"]
    assert taken > first and (taken - first) % 65536 == 0
    assert other.release("x") is True


def test_pool_ranges_from_subuid(tmp_path):
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text("alice:100000:65536\nroot:2000000:1000000\n")
    subgid.write_text("root:2100000:1000000\n")
    assert idmap.pool_ranges(str(subuid), str(subgid)) == [(2100000, 900000)]
    subgid.write_text("root:100000:1000\n")   # too small a range for one block: the default pool
    assert idmap.pool_ranges(str(subuid), str(subgid)) == [(idmap.DEFAULT_FIRST, idmap.LAST_ID + 1 - idmap.DEFAULT_FIRST)]


def test_shifted_fallback_keeps_setuid_acl_and_file_capabilities(node, busybox_template, monkeypatch):
    """Where idmapped mounts are refused, the tree is shifted into the block and back."""
    name = node.name()
    node.manager.create(name, busybox_template, layout="directory", unprivileged=False)
    private = node.manager.layout.private(name)
    suid = os.path.join(private, "bin", "ovz-suid")
    with open(suid, "wb") as handle:
        handle.write(b"#!/bin/sh\n")
    os.chmod(suid, 0o4755)
    caps_v2 = struct.pack("<IIIII", idmap.VFS_CAP_REVISION_2 | 1, 1 << 13, 0, 0, 0)   # cap_net_raw+ep
    os.setxattr(suid, idmap.XATTR_CAPS, caps_v2)
    acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in (
        (0x01, 7, 0xffffffff), (0x02, 5, 1000), (0x04, 5, 0xffffffff), (0x10, 7, 0xffffffff), (0x20, 5, 0xffffffff)))
    os.setxattr(suid, "system.posix_acl_access", acl)
    mode = os.lstat(suid).st_mode & 0o7777   # the ACL mask is the group class: 04775
    assert mode & 0o4000
    monkeypatch.setattr(idmap, "FORCE_MODE", "shifted")
    assert node.manager.set_unprivileged(name, True) is True
    entry = node.manager.facts(name)["idmap"]
    first = entry["uid"]
    assert entry["mode"] == "shifted"
    shifted = os.lstat(suid)
    assert (shifted.st_uid, shifted.st_gid) == (first, first)
    assert shifted.st_mode & 0o7777 == mode
    caps = os.getxattr(suid, idmap.XATTR_CAPS)
    assert len(caps) == 24 and struct.unpack_from("<I", caps, 20)[0] == first
    assert struct.unpack_from("<I", caps)[0] & 0xFF000000 == idmap.VFS_CAP_REVISION_3
    assert struct.unpack_from("<HHI", os.getxattr(suid, "system.posix_acl_access"), 12)[2] == first + 1000
    assert os.lstat(os.path.join(private, "bin", "busybox")).st_uid == first
    node.manager.start(name, wait_boot=True, timeout=20)
    assert sh(node.manager, name, "id -u; stat -c '%u %a' /bin/ovz-suid").stdout == b"0\n0 %o\n" % mode
    assert status_ids(node.manager.runtime(name).init_pid, "Uid")[0] == first
    node.manager.stop(name, timeout=5)
    assert node.manager.set_unprivileged(name, False) is True
    back = os.lstat(suid)
    assert (back.st_uid, back.st_gid, back.st_mode & 0o7777) == (0, 0, mode)
    assert os.getxattr(suid, idmap.XATTR_CAPS) == caps_v2
    assert os.getxattr(suid, "system.posix_acl_access") == acl
    assert node.manager.idmap.entries() == {}


def args(node, name, **extra):
    base = {"name": name, "data_dir": node.data_dir, "cgroup_parent": node.cgroup_parent}
    base.update(extra)
    return base


def three_ways(node, module_args, expect_state):
    before = host_snapshot(node.data_dir)
    checked = run_module("ovz_container", module_args, check=True, diff=True)
    assert not checked.get("failed") and checked["changed"] is True, checked
    assert host_snapshot(node.data_dir) == before, "check mode changed the host"
    first = run_module("ovz_container", module_args, diff=True)
    assert not first.get("failed") and first["changed"] is True, first
    assert first["container"]["state"] == expect_state
    second = run_module("ovz_container", module_args, diff=True)
    assert not second.get("failed") and second["changed"] is False, second
    assert second["diff"]["before"] == second["diff"]["after"]
    return first


def test_module_three_ways_and_refusals(node, busybox_template):
    name = node.name()
    created = three_ways(node, args(node, name, template=busybox_template, layout="directory", unprivileged=True,
                                    wait_boot=True), "running")
    assert created["diff"]["after"]["unprivileged"] is True
    assert created["container"]["unprivileged"] is True
    first = created["container"]["idmap"]["uid"]
    assert status_ids(node.manager.runtime(name).init_pid, "Uid")[0] == first
    # Changing it on a running container fails naming the parameter; nothing changes.
    before = host_snapshot(node.data_dir)
    for check in (True, False):
        refused = run_module("ovz_container", args(node, name, unprivileged=False), check=check)
        assert refused.get("failed") and "unprivileged" in refused["msg"], refused
        assert host_snapshot(node.data_dir) == before
    assert node.manager.status(name) == "running" and node.manager.load(name).unprivileged is True
    # Bad input names the parameter.
    bad = run_module("ovz_container", args(node, name, unprivileged="maybe"))
    assert bad.get("failed") and "unprivileged" in bad["msg"], bad
    assert host_snapshot(node.data_dir) == before
    # Stopped, it changes (three ways), back and forth, and starts privileged.
    assert run_module("ovz_container", args(node, name, state="stopped"))["changed"] is True
    made_privileged = three_ways(node, args(node, name, state="stopped", unprivileged=False), "stopped")
    assert made_privileged["container"]["unprivileged"] is False and made_privileged["container"]["idmap"] is None
    assert node.manager.idmap.entries() == {}
    started = run_module("ovz_container", args(node, name, unprivileged=True, wait_boot=True))
    assert started["changed"] is True and started["container"]["state"] == "running", started
    assert status_ids(node.manager.runtime(name).init_pid, "Uid")[0] == started["container"]["idmap"]["uid"]
    three_ways(node, args(node, name, state="absent"), "absent")
    assert node.manager.idmap.entries() == {}


@pytest.mark.parametrize("layout", ["image", "directory"])
def test_checkpoint_and_restore_keep_it_unprivileged(node, busybox_template, tmp_path, layout):
    """A suspended or restored unprivileged container is as unprivileged as a started one: root inside is
    the block's first id on the host, the files keep their owners as seen from inside, and nothing of the
    container's is left to its host user outside (the images are host root's, the staged mounts are gone)."""
    name = start_unprivileged(node, busybox_template, layout=layout)
    first = block_of(node, name)
    sh(node.manager, name, "echo kept > /root/mine; chown 0:0 /root/mine; touch /tmp/other; chown 33:33 /tmp/other")
    images = str(tmp_path / "images")
    checkpointer = Checkpointer(node.manager)
    checkpointer.dump(name, images)
    assert node.manager.status(name) == "stopped"
    owners = {(os.lstat(os.path.join(images, entry)).st_uid, os.lstat(os.path.join(images, entry)).st_gid)
              for entry in os.listdir(images)}
    assert owners == {(0, 0)}, owners
    checkpointer.restore(name, images)
    init_pid = node.manager.runtime(name).init_pid
    assert status_ids(init_pid, "Uid") == [first] * 4 and status_ids(init_pid, "Gid") == [first] * 4
    assert block_of(node, name) == first
    assert sh(node.manager, name, "id -u; cat /proc/self/uid_map; stat -c '%u:%g' /root/mine /tmp/other /dev/null; "
                                  "cat /root/mine").stdout.split() == [
        b"0", b"0", str(first).encode(), b"65536", b"0:0", b"33:33", b"65534:65534", b"kept"]
    assert {(os.lstat(os.path.join(images, entry)).st_uid, os.lstat(os.path.join(images, entry)).st_gid)
            for entry in os.listdir(images)} == {(0, 0)}
    with open("/proc/self/mountinfo") as handle:
        assert " /run/ovz-stage" not in handle.read()
    # Root inside still cannot write what the host keeps as root's: /proc/sys outside its netns, say.
    assert sh(node.manager, name, "echo 1 > /proc/sys/kernel/sysrq", check=False).rc != 0
    node.manager.stop(name, timeout=5)


def test_network_of_an_unprivileged_container(routed_lab):
    """Its network namespace belongs to its user namespace; the host still moves the veth end in."""
    lab = routed_lab
    name = lab.create(ip_address=A4[:1])
    assert lab.manager.load(name).unprivileged is True       # the default
    assert lab.manager.set_unprivileged(name, True) is False
    lab.start(name)
    assert lab.ping_from(name, OUT4)
    assert lab.outside.ping(A4[0])
    assert sh(lab.manager, name, "id -u").stdout == b"0\n"
    lab.stop(name)


def test_ovzctl_create_unprivileged(node, busybox_template):
    name = node.name()
    base = [os.path.join(REPO, "scripts", "ovzctl"), "--data-dir", node.data_dir, "--cgroup-parent", node.cgroup_parent]
    for argv in (["create", name, "--ostemplate", busybox_template, "--layout", "directory", "--unprivileged"],
                 ["start", name, "--wait"]):
        proc = subprocess.run(base + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                              timeout=120, check=False)
        assert proc.returncode == 0, (argv, proc.stdout, proc.stderr)
    proc = subprocess.run(base + ["exec", name, "id", "-u"], stdout=subprocess.PIPE, universal_newlines=True,
                          timeout=60, check=False)
    assert proc.stdout == "0\n"
    assert status_ids(node.manager.runtime(name).init_pid, "Uid")[0] == block_of(node, name)


def test_new_containers_are_unprivileged_by_default(node, busybox_template):
    """The module, ovzctl and the engine make unprivileged containers unless told otherwise; the way back
    is unprivileged: false (ovzctl create --privileged)."""
    by_module = node.name()
    made = run_module("ovz_container", args(node, by_module, template=busybox_template, state="present"), diff=True)
    assert made["changed"] and made["container"]["unprivileged"] is True, made
    assert made["diff"]["after"]["unprivileged"] is True
    privileged = node.name()
    made = run_module("ovz_container", args(node, privileged, template=busybox_template, state="present",
                                            unprivileged=False))
    assert made["container"]["unprivileged"] is False and made["container"]["idmap"] is None, made
    base = [os.path.join(REPO, "scripts", "ovzctl"), "--data-dir", node.data_dir, "--cgroup-parent", node.cgroup_parent]
    for flag, expected in (([], True), (["--privileged"], False), (["--unprivileged"], True)):
        name = node.name()
        proc = subprocess.run(base + ["create", name, "--ostemplate", busybox_template, "--layout", "directory"] + flag,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=120,
                              check=False)
        assert proc.returncode == 0, proc.stderr
        assert node.manager.load(name).unprivileged is expected, flag
        # The operator hears what a privileged container's root is, as the module's users do.
        assert ("warning: unprivileged: container %s is privileged" % name in proc.stderr) is (not expected), proc.stderr
    proc = subprocess.run(base + ["create", node.name(), "--ostemplate", busybox_template, "--privileged",
                                  "--unprivileged"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120, check=False)
    assert proc.returncode != 0 and "not allowed with argument" in proc.stderr, proc.stderr
    engine = node.name()
    assert node.manager.create(engine, busybox_template, layout="directory").unprivileged is True


def test_an_existing_container_keeps_its_kind(node, busybox_template):
    """A container made before the default changed (its configuration has no unprivileged) stays privileged:
    a run of the module that does not name the option leaves it so."""
    name = node.name()
    node.manager.create(name, busybox_template, layout="directory", unprivileged=False)
    conf = node.manager.layout.conf(name)
    with open(conf) as handle:
        data = json.load(handle)
    del data["unprivileged"]
    with open(conf, "w") as handle:
        json.dump(data, handle)
    assert node.manager.load(name).unprivileged is False
    started = run_module("ovz_container", args(node, name, state="started"), diff=True)
    assert not started.get("failed") and started["container"]["unprivileged"] is False, started
    assert started["diff"]["before"]["unprivileged"] is False and started["diff"]["after"]["unprivileged"] is False
    assert status_ids(node.manager.runtime(name).init_pid, "Uid")[0] == 0
    node.manager.stop(name, timeout=5)


@pytest.mark.debian
def test_debian_systemd_runs_unprivileged(node, debian_template):
    """systemd as PID 1 in a user namespace: it manages its own delegated cgroup tree and reaches running."""
    name = node.name()
    node.manager.create(name, debian_template, layout="directory", unprivileged=True)
    node.manager.start(name)
    wait_system_running(node.manager, name)
    first = block_of(node, name)
    assert sh(node.manager, name, "readlink /proc/1/exe").stdout.strip() == b"/usr/lib/systemd/systemd"
    failed = sh(node.manager, name, "systemctl --failed --no-legend --plain", check=False).stdout.decode()
    assert failed.strip() == "", failed
    assert sh(node.manager, name, "systemctl is-active systemd-journald dbus").stdout.split() == [b"active"] * 2
    assert sh(node.manager, name, "id -u").stdout == b"0\n"
    # systemd made its own cgroups below the delegated payload; on the host they are the block's root's.
    payload = node.manager.cgroups_for(node.manager.runtime(name)).payload_cgroup2(PAYLOAD)
    if payload is not None:   # a host with a cgroup2 tree (unified or hybrid)
        assert os.path.isdir(os.path.join(payload, "system.slice"))
        assert os.stat(os.path.join(payload, "system.slice")).st_uid == first
    node.manager.stop(name, timeout=30)
    assert node.manager.status(name) == "stopped"
