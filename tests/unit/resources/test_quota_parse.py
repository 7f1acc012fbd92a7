# -*- coding: utf-8 -*-
"""ovz_quota's request parsing and the engine's pure helpers (issue 6); no kernel needed."""

from __future__ import annotations

import ctypes

import pytest

from ansible_collections.ovz.containers.plugins.module_utils._engine.resources import quota as q
from ansible_collections.ovz.containers.plugins.module_utils._engine.node.config import ContainerConfig
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.errors import InvalidParameter

MIB = 1 << 20


@pytest.mark.parametrize("text,seconds", [("3600", 3600), (90, 90), ("90m", 5400), ("12h", 43200), ("7d", 604800),
                                          ("1w", 604800), ("2 s", 2)])
def test_quotatime_units(text, seconds):
    assert q.parse_seconds(text, "quotatime") == seconds


@pytest.mark.parametrize("bad", ["soon", "-1", "1y", True, "1.5h"])
def test_bad_quotatime_names_the_parameter(bad):
    with pytest.raises(InvalidParameter) as err:
        q.parse_seconds(bad, "quotatime")
    assert err.value.param == "quotatime"


def test_request_pairs_and_entries():
    request = q.QuotaRequest.parse({"diskspace": "1G:2G", "diskinodes": "1000", "quotaugidlimit": 10,
                                    "users": [{"name": "alice", "blocks": "100M:120M", "inodes": "10:20"},
                                              {"name": "1001"}]})
    assert request.diskspace == [1 << 30, 2 << 30] and request.diskinodes == [1000, 1000]
    assert request.users == {"alice": {"blocks": [100 * MIB, 120 * MIB], "inodes": [10, 20]},
                             "1001": {"blocks": [None, None], "inodes": [None, None]}}
    assert request.groups is None and request.restart is False


@pytest.mark.parametrize("params,param", [
    ({"diskspace": "2G:1G"}, "diskspace"),
    ({"diskspace": "12X"}, "diskspace"),
    ({"diskinodes": "-5"}, "diskinodes"),
    ({"quotaugidlimit": -1}, "quotaugidlimit"),
    ({"users": [{"blocks": "1M"}]}, "users[0]"),
    ({"users": [{"name": "a/b"}]}, "users[0]"),
    ({"groups": [{"name": "g", "size": 1}]}, "groups[0]"),
    ({"users": [{"name": "alice", "blocks": "2M:1M"}]}, "users[0].blocks"),
])
def test_bad_requests_name_the_parameter(params, param):
    with pytest.raises(InvalidParameter) as err:
        q.QuotaRequest.parse(params)
    assert err.value.param == param


def test_grace_state_of_a_quota_record():
    buf = q.IfDqblk()
    buf.dqb_curspace = 9 * MIB
    buf.dqb_bsoftlimit = 8 * 1024
    buf.dqb_bhardlimit = 10 * 1024
    buf.dqb_btime = 1
    record = q.dqblk_dict(buf)
    assert record["bytes_soft"] == 8 * MIB and record["bytes_hard"] == 10 * MIB
    assert record["grace_blocks"]["state"] == "expired" and record["grace_inodes"]["state"] == "none"
    assert ctypes.sizeof(q.IfDqblk) == 72 and ctypes.sizeof(q.IfDqinfo) == 24


def test_second_level_only_for_the_image_layout():
    image = ContainerConfig(name="a", layout="image", quota={"quotaugidlimit": 10})
    directory = ContainerConfig(name="b", layout="directory", quota={"quotaugidlimit": 10})
    assert q.mount_options(image) == "usrquota,grpquota"
    assert q.mount_options(directory) == "" and q.mount_options(ContainerConfig(name="c")) == ""


def test_inodes_after_resize_counts_whole_groups():
    info = {"block_size": 4096, "blocks_per_group": 32768, "inodes_per_group": 2048}
    assert q.inodes_after_resize(info, 128 * MIB) == 2048
    assert q.inodes_after_resize(info, 129 * MIB) == 4096
