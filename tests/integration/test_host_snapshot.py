# -*- coding: utf-8 -*-
"""The oracle of every "a failure changes nothing" test sees inside a running container.

``support.snapshot.host_snapshot`` compares the node's files, cgroups, mounts, loops and host links, and, for
each running container, its state, its init, its cgroup settings, and the addresses, routes and
mount points inside. Each change below, made behind the engine's back, must show in it.
"""

from __future__ import annotations

import os
import subprocess

from support.snapshot import host_snapshot


def nsenter_net(pid: int, *argv: str) -> None:
    subprocess.run(["nsenter", "--net=/proc/%d/ns/net" % pid] + list(argv), check=True, timeout=30)


def test_host_snapshot_sees_inside_a_running_container(node, container):
    node.manager.start(container, wait_boot=True, timeout=20)
    runtime = node.manager.runtime(container)
    pid = runtime.init_pid
    before = host_snapshot(node.data_dir)
    inside = before["inside"][container]
    assert inside["state"] == "running" and inside["init_pid"] == pid and inside["cgroup_settings"], inside
    assert any(line.split()[-1].startswith("127.0.0.1/") for line in inside["addresses"]), inside
    assert host_snapshot(node.data_dir) == before

    node.manager.freeze(container)
    try:
        assert host_snapshot(node.data_dir)["inside"][container]["state"] == "frozen"
    finally:
        node.manager.thaw(container)
    assert host_snapshot(node.data_dir) == before

    nsenter_net(pid, "ip", "addr", "add", "10.213.77.1/32", "dev", "lo")
    try:
        assert "10.213.77.1/32" in str(host_snapshot(node.data_dir)["inside"][container]["addresses"])
    finally:
        nsenter_net(pid, "ip", "addr", "del", "10.213.77.1/32", "dev", "lo")
    assert host_snapshot(node.data_dir) == before

    # A setting of the container's cgroups (pids.max: there on both cgroup versions).
    pids_max = [os.path.join(path, "pids.max") for path in runtime.cgroups.values()
                if os.path.exists(os.path.join(path, "pids.max"))][0]
    with open(pids_max) as handle:
        old = handle.read().strip()
    with open(pids_max, "w") as handle:
        handle.write("4321")
    try:
        assert host_snapshot(node.data_dir)["inside"][container]["cgroup_settings"][pids_max] == "4321\n"
    finally:
        with open(pids_max, "w") as handle:
            handle.write(old)
    assert host_snapshot(node.data_dir) == before

    subprocess.run(["nsenter", "-t", str(pid), "-m", "mount", "-t", "tmpfs", "ovz-probe", "/mnt"], check=True, timeout=30)
    try:
        assert "/mnt tmpfs" in host_snapshot(node.data_dir)["inside"][container]["mounts"]
    finally:
        subprocess.run(["nsenter", "-t", str(pid), "-m", "umount", "/mnt"], check=True, timeout=30)
    assert host_snapshot(node.data_dir) == before

    node.manager.stop(container)
    assert host_snapshot(node.data_dir)["inside"][container] == {}


def test_host_snapshot_sees_a_stopped_containers_files(node, container):
    """A stopped container's tree is compared whole: content, mode, owner, links."""
    node.manager.stop(container)
    private = node.manager.layout.private(container)
    before = host_snapshot(node.data_dir)
    passwd = os.path.join(private, "etc", "passwd")
    assert "private/%s/etc/passwd" % container in before["files"]
    with open(passwd, "rb") as handle:
        text = handle.read()
    with open(passwd, "ab") as handle:
        handle.write(b"ovz:x:4242:4242::/:/bin/sh\n")
    try:
        assert host_snapshot(node.data_dir) != before
    finally:
        with open(passwd, "wb") as handle:
            handle.write(text)
    assert host_snapshot(node.data_dir) == before

    os.chmod(passwd, 0o666)
    try:
        assert host_snapshot(node.data_dir) != before
    finally:
        os.chmod(passwd, 0o644)
    assert host_snapshot(node.data_dir) == before

    planted = os.path.join(private, "ovz-planted")
    os.symlink("/etc/shadow", planted)
    try:
        assert host_snapshot(node.data_dir)["files"]["private/%s/ovz-planted" % container].endswith(
            "-> /etc/shadow")
    finally:
        os.unlink(planted)
    assert host_snapshot(node.data_dir) == before


def test_host_snapshot_sees_what_the_engine_writes_inside_a_running_container(node, container):
    before = host_snapshot(node.data_dir)
    assert "hostname" in before["inside"][container]["etc"]
    assert host_snapshot(node.data_dir) == before
    old = node.manager.exec(container, ["cat", "/etc/hostname"]).stdout
    node.manager.exec(container, ["sh", "-c", "echo ovz-other > /etc/hostname"])
    try:
        assert host_snapshot(node.data_dir)["inside"][container]["etc"] != before["inside"][container]["etc"]
    finally:
        node.manager.exec(container, ["sh", "-c", 'printf %s "$0" > /etc/hostname', old.decode()])
    assert host_snapshot(node.data_dir) == before
