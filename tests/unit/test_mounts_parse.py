# -*- coding: utf-8 -*-
"""The one mountinfo parser (kernel/mounts.py): fields, escapes, optional fields; no kernel needed."""

from __future__ import annotations

import os

import pytest

from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel import mounts
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.mounts import Mount, parse_line, parse_mountinfo

# Lines as a Debian 12 host writes them: the root filesystem, a private tmpfs, a cgroup v1 hierarchy
# slave to the host's, a bind mount of a directory with a space and a tab in its name, a loop-mounted image.
HOST = (
    "29 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro\n"
    "61 29 0:52 / /run/ovz-test rw,nosuid,nodev - tmpfs tmpfs rw,size=65536k,mode=755\n"
    "35 29 0:30 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:12 master:7 - cgroup cgroup rw,memory\n"
    "88 29 8:1 /srv/my\\040data\\011dir /mnt/with\\040space rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "97 29 7:3 / /var/lib/ovz/root/101 rw,relatime - ext4 /dev/loop3 rw,usrquota,grpquota\n"
)


def test_every_field_of_a_line_with_optional_fields():
    assert parse_line(HOST.splitlines()[2]) == Mount(
        mount_id=35, parent_id=29, major_minor="0:30", root="/", mount_point="/sys/fs/cgroup/memory",
        options="rw,nosuid,nodev,noexec,relatime", optional=("shared:12", "master:7"),
        fstype="cgroup", source="cgroup", super_options="rw,memory")


def test_a_line_without_optional_fields():
    mount = parse_line(HOST.splitlines()[1])
    assert mount is not None
    assert mount.optional == ()
    assert (mount.mount_point, mount.fstype, mount.source, mount.super_options) == (
        "/run/ovz-test", "tmpfs", "tmpfs", "rw,size=65536k,mode=755")


def test_escaped_root_and_mount_point_come_back_unescaped():
    mount = parse_line(HOST.splitlines()[3])
    assert mount is not None
    assert mount.root == "/srv/my data\tdir"
    assert mount.mount_point == "/mnt/with space"
    assert mount.optional == ("shared:1",)


def test_a_separator_inside_a_path_is_escaped_so_cannot_split_the_line():
    # "/mnt/a - b" is written "/mnt/a\040-\040b": the first " - " is still the separator
    mount = parse_line("40 29 0:60 / /mnt/a\\040-\\040b rw - tmpfs none rw")
    assert mount is not None
    assert (mount.mount_point, mount.fstype, mount.source) == ("/mnt/a - b", "tmpfs", "none")


def test_a_backslash_is_unescaped_once():
    mount = parse_line("40 29 0:60 / /mnt/back\\134slash\\134040 rw - tmpfs none rw")
    assert mount is not None
    assert mount.mount_point == "/mnt/back\\slash\\040"


def test_the_whole_text_in_order():
    parsed = parse_mountinfo(HOST)
    assert [m.mount_id for m in parsed] == [29, 61, 35, 88, 97]
    assert [m.parent_id for m in parsed] == [1, 29, 29, 29, 29]
    assert parsed[-1].source == "/dev/loop3" and parsed[-1].major_minor == "7:3"


@pytest.mark.parametrize("line", ["", "garbage", "1 2 3 - cgroup", "1 2 3 4 5 rw", "1 2 3 4 5 rw -",
                                  "x 2 0:1 / /a rw - tmpfs none rw", "1 2 0:1 / /a rw - "])
def test_lines_the_kernel_would_not_write_are_skipped(line):
    assert parse_line(line) is None
    assert parse_mountinfo(line + "\n" + HOST) == parse_mountinfo(HOST)


def test_missing_source_and_super_options_read_as_empty():
    mount = parse_line("40 29 0:60 / /mnt rw - tmpfs")
    assert mount is not None
    assert (mount.fstype, mount.source, mount.super_options) == ("tmpfs", "", "")


def test_read_mountinfo_reads_this_process():
    own = mounts.read_mountinfo()
    assert own and own == mounts.read_mountinfo(os.getpid())
    assert any(mount.mount_point == "/proc" and mount.fstype == "proc" for mount in own)
