# -*- coding: utf-8 -*-
"""ovz_container as Ansible runs it: every state three ways (changed, not changed,
check mode), diff mode, and bad input that fails naming the parameter and
leaves the host unchanged (issue: foundation)."""

from __future__ import annotations

import gzip
import os

import pytest

from support.node import run_module, sh
from support.snapshot import host_snapshot


def args(node, name, **extra):
    base = {"name": name, "data_dir": node.data_dir, "cgroup_parent": node.cgroup_parent}
    base.update(extra)
    return base


def three_ways(node, module_args, expect_state):
    """Check mode reports a change and changes nothing; the run changes; the rerun does not."""
    before = host_snapshot(node.data_dir)
    checked = run_module("ovz_container", module_args, check=True, diff=True)
    assert not checked.get("failed"), checked
    assert checked["changed"] is True, checked
    assert checked["diff"]["before"] != checked["diff"]["after"]
    assert host_snapshot(node.data_dir) == before, "check mode changed the host"
    first = run_module("ovz_container", module_args, diff=True)
    assert not first.get("failed"), first
    assert first["changed"] is True
    assert first["container"]["state"] == expect_state
    assert first["diff"]["after"]["state"] == expect_state
    second = run_module("ovz_container", module_args, diff=True)
    assert not second.get("failed"), second
    assert second["changed"] is False, second
    assert second["diff"]["before"] == second["diff"]["after"]
    checked_again = run_module("ovz_container", module_args, check=True)
    assert checked_again["changed"] is False
    return first


def test_every_state_three_ways(node, busybox_template):
    name = node.name()
    common = dict(template=busybox_template, layout="directory", wait_boot=True)
    created = three_ways(node, args(node, name, state="present", **common), "stopped")
    assert created["container"]["hostname"] == name
    three_ways(node, args(node, name, state="started", **common), "running")
    assert sh(node.manager, name, "echo up").stdout == b"up\n"
    three_ways(node, args(node, name, state="frozen"), "frozen")
    three_ways(node, args(node, name, state="started"), "running")
    three_ways(node, args(node, name, state="stopped"), "stopped")
    three_ways(node, args(node, name, state="absent"), "absent")
    assert not os.path.exists(node.manager.layout.conf(name))


def test_absent_stops_and_removes_a_running_container(node, container):
    """Unlike ovzctl destroy (which wants --force), state=absent takes a running container away, as
    Ansible users expect: stopped, then removed, in one task."""
    runtime = node.manager.runtime(container)
    checked = run_module("ovz_container", args(node, container, state="absent"), check=True)
    assert checked["changed"] is True and node.manager.status(container) == "running"
    result = run_module("ovz_container", args(node, container, state="absent"), diff=True)
    assert not result.get("failed"), result
    assert result["changed"] is True and result["diff"]["before"]["state"] == "running"
    assert not node.manager.exists(container) and not runtime.alive()
    assert not any(os.path.isdir(path) for path in runtime.cgroups.values())
    assert run_module("ovz_container", args(node, container, state="absent"))["changed"] is False


def test_started_from_nothing_and_restarted(node, busybox_template):
    name = node.name()
    first = three_ways(node, args(node, name, template=busybox_template, wait_boot=True,
                                  diskspace="64M", hostname="web.ovz.test"), "running")
    assert first["container"]["layout"] == "image"
    assert sh(node.manager, name, "hostname").stdout == b"web.ovz.test\n"
    pid = node.manager.runtime(name).init_pid
    # restarted always acts, and check mode only reports it.
    checked = run_module("ovz_container", args(node, name, state="restarted"), check=True)
    assert checked["changed"] is True and node.manager.runtime(name).init_pid == pid
    restarted = run_module("ovz_container", args(node, name, state="restarted", wait_boot=True))
    assert restarted["changed"] is True
    assert node.manager.runtime(name).init_pid != pid


def test_settings_change_live_and_idempotently(node, busybox_template):
    name = node.name()
    run_module("ovz_container", args(node, name, template=busybox_template, layout="directory", wait_boot=True))
    changed = three_ways(node, args(node, name, hostname="renamed", onboot=True, bootorder=5), "running")
    assert changed["diff"]["before"]["hostname"] == name
    assert changed["diff"]["after"]["hostname"] == "renamed"
    assert sh(node.manager, name, "hostname").stdout == b"renamed\n"
    config = node.manager.load(name)
    assert (config.onboot, config.bootorder) == (True, 5)


def corrupt_tarball(directory):
    path = os.path.join(directory, "ovz-corrupt.tar.gz")
    with gzip.open(path, "wb") as handle:
        handle.write(b"this is not a tar archive" * 100)
    return path


BAD_INPUTS = [
    ("bad name", dict(name="-bad/name"), "name"),
    ("name too long", dict(name="x" * 65), "name"),
    ("unknown template name", dict(template="ovz-no-such-template"), "template"),
    ("missing template file", dict(template="/nonexistent/ovz.tar.gz"), "template"),
    ("not a tarball", dict(template="/etc/hostname"), "template"),
    ("corrupt tarball", dict(template="@corrupt"), "template"),
    ("no template for a new container", dict(template=None), "template"),
    ("bad size", dict(diskspace="12X"), "diskspace"),
    ("barrier above limit", dict(diskspace="2G:1G"), "diskspace"),
    ("image too small", dict(diskspace="1M", layout="image"), "diskspace"),
    ("negative inodes", dict(diskinodes="-5"), "diskinodes"),
    ("bad hostname", dict(hostname="bad host!"), "hostname"),
    ("relative init", dict(init="sbin/init"), "init"),
    ("relative data_dir", dict(data_dir="relative/dir"), "data_dir"),
    ("escaping cgroup_parent", dict(cgroup_parent="../../escape"), "cgroup_parent"),
    ("negative timeout", dict(timeout=-1), "timeout"),
    ("frozen from absent", dict(state="frozen"), "state"),
    ("bad layout choice", dict(layout="zfs"), "layout"),
    ("bad state choice", dict(state="running"), "state"),
]


@pytest.mark.parametrize("label,override,param", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_fails_naming_parameter_and_changes_nothing(node, busybox_template, session_dir,
                                                              label, override, param):
    name = node.name()
    module_args = args(node, name, template=busybox_template, layout="directory")
    module_args.update(override)
    if module_args.get("template") == "@corrupt":
        module_args["template"] = corrupt_tarball(session_dir)
    if module_args.get("template") is None:
        module_args.pop("template")
    before = host_snapshot(node.data_dir)
    result = run_module("ovz_container", module_args)
    assert result.get("failed") is True, result
    assert param in result["msg"], result["msg"]
    assert host_snapshot(node.data_dir) == before


def test_bad_transitions_and_clashes_leave_existing_container_alone(node, busybox_template):
    name = node.name()
    run_module("ovz_container", args(node, name, template=busybox_template, layout="directory", state="stopped"))
    before = host_snapshot(node.data_dir)
    cases = [
        (dict(state="frozen"), "state"),             # a stopped container cannot be frozen
        (dict(layout="image"), "layout"),            # the layout cannot change
        (dict(hostname="-bad"), "hostname"),
    ]
    for override, param in cases:
        result = run_module("ovz_container", args(node, name, **override))
        assert result.get("failed") is True, (override, result)
        assert param in result["msg"], result["msg"]
        assert host_snapshot(node.data_dir) == before
    # A private area left by something else is a name clash, not something to overwrite.
    other = node.name()
    os.makedirs(node.manager.layout.private(other))
    before = host_snapshot(node.data_dir)
    result = run_module("ovz_container", args(node, other, template=busybox_template, layout="directory"))
    assert result.get("failed") is True and "name" in result["msg"]
    assert host_snapshot(node.data_dir) == before
    os.rmdir(node.manager.layout.private(other))


def test_creation_only_settings_given_for_an_existing_container_warn(node, busybox_template, tmp_path):
    """template, diskspace and diskinodes are used only by a create: given again with the values it was made
    with, nothing is said; with others, the task warns naming each (it used to ignore them silently)."""
    name = node.name()
    made = run_module("ovz_container", args(node, name, template=busybox_template, layout="image", diskspace="64M",
                                            state="stopped"))
    assert made["changed"] is True and not made.get("warnings"), made
    same = run_module("ovz_container", args(node, name, template=busybox_template, diskspace="64M", state="stopped"))
    assert same["changed"] is False and not same.get("warnings"), same
    other_template = str(tmp_path / "other.tar.gz")
    with open(busybox_template, "rb") as src, open(other_template, "wb") as dst:
        dst.write(src.read())
    before = host_snapshot(node.data_dir)
    for check in (True, False):
        other = run_module("ovz_container", args(node, name, template=other_template, diskspace="128M",
                                                 diskinodes="1000:1000", state="stopped"), check=check)
        assert other["changed"] is False and not other.get("failed"), other
        warned = str(other.get("warnings", []))
        for key in ("template:", "diskspace:", "diskinodes:"):
            assert key in warned, (key, other)
        assert host_snapshot(node.data_dir) == before


def test_ovz_info_lists_containers(node, busybox_template):
    names = [node.name(), node.name()]
    run_module("ovz_container", args(node, names[0], template=busybox_template, layout="directory", wait_boot=True))
    run_module("ovz_container", args(node, names[1], template=busybox_template, layout="directory",
                                     state="stopped"))
    result = run_module("ovz_info", {"data_dir": node.data_dir, "cgroup_parent": node.cgroup_parent})
    assert result["changed"] is False
    states = {c["name"]: c["state"] for c in result["containers"]}
    assert states == {names[0]: "running", names[1]: "stopped"}
    running = [c for c in result["containers"] if c["state"] == "running"][0]
    assert running["init_pid"] > 1 and running["cgroups"]
    one = run_module("ovz_info", {"data_dir": node.data_dir, "name": [names[1], "ovz-none"]})
    assert [c["state"] for c in one["containers"]] == ["stopped", "absent"]
    bad = run_module("ovz_info", {"data_dir": node.data_dir, "name": ["bad/name"]})
    assert bad["failed"] and "name" in bad["msg"]
