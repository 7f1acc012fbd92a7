# -*- coding: utf-8 -*-
"""A data dir's identity (``HostLayout.node_id``) and the host object names derived from it.

Pure: plain directories under pytest's tmp_path, nothing of the kernel.
"""

from __future__ import annotations

import json
import os
import shutil

from ansible_collections.ovz.containers.plugins.module_utils._engine.ops import migration_shared
from ansible_collections.ovz.containers.plugins.module_utils._engine.resources import network as net
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.cgroups import cgroup_dirname
from ansible_collections.ovz.containers.plugins.module_utils._engine.node.config import NODE_FILE, ContainerConfig, HostLayout


class _Manager:
    """What ``migration_shared.portable_config`` and ``_localized`` use of a ContainerManager."""

    def __init__(self, data_dir: str) -> None:
        self.layout = HostLayout(data_dir)


def _mkdir(path) -> str:
    os.makedirs(str(path))
    return str(path)


def test_no_data_dir_no_identity(tmp_path):
    assert HostLayout(str(tmp_path / "none")).node_id() is None
    assert not os.path.exists(str(tmp_path / "none"))


def test_identity_is_predicted_then_recorded(tmp_path):
    data = _mkdir(tmp_path / "data")
    layout = HostLayout(data)
    predicted = layout.node_id()
    assert len(predicted) == 8 and int(predicted, 16) >= 0
    assert not os.path.exists(layout.node_file()), "reading must not write (check mode)"
    assert layout.node_id(record=True) == predicted
    with open(layout.node_file()) as handle:
        assert json.load(handle)["id"] == predicted
    assert HostLayout(data + "/").node_id() == predicted


def test_two_data_dirs_differ(tmp_path):
    one, two = _mkdir(tmp_path / "a" / "data"), _mkdir(tmp_path / "b" / "data")
    assert HostLayout(one).node_id(record=True) != HostLayout(two).node_id(record=True)


def test_a_moved_data_dir_keeps_its_identity_and_a_new_one_at_the_old_path_gets_another(tmp_path):
    old = _mkdir(tmp_path / "old")
    node = HostLayout(old).node_id(record=True)
    new = str(tmp_path / "new")
    os.rename(old, new)
    assert HostLayout(new).node_id() == node
    assert HostLayout(new).node_id(record=True) == node
    with open(os.path.join(new, NODE_FILE)) as handle:
        assert json.load(handle)["path"] == new
    os.mkdir(old)
    assert HostLayout(old).node_id() != node
    copy = str(tmp_path / "copy")          # a copy of the moved one is told apart from it too
    shutil.copytree(new, copy)
    assert HostLayout(copy).node_id() not in (node, HostLayout(old).node_id())


def test_a_copy_beside_the_original_is_a_node_of_its_own(tmp_path):
    original = _mkdir(tmp_path / "original")
    node = HostLayout(original).node_id(record=True)
    copy = str(tmp_path / "copy")
    shutil.copytree(original, copy)
    assert HostLayout(copy).node_id() != node
    mine = HostLayout(copy).node_id(record=True)
    assert mine != node and HostLayout(copy).node_id() == mine
    assert HostLayout(original).node_id() == node


def test_a_broken_record_is_replaced(tmp_path):
    data = _mkdir(tmp_path / "data")
    with open(os.path.join(data, NODE_FILE), "w") as handle:
        handle.write("{not json")
    node = HostLayout(data).node_id(record=True)
    assert len(node) == 8


def test_names_carry_the_identity_and_fit_the_kernel():
    assert cgroup_dirname("ct1", "0123abcd") == "ovz-0123abcd-ct1"
    assert cgroup_dirname("ct1", None) == "ovz-ct1"
    assert net.netns_path("ct1", "0123abcd") == "/run/netns/ovz-0123abcd-ct1"
    assert net.netns_path("ct1", None) == "/run/netns/ovz-ct1"
    assert net.nft_table("0123abcd") == "ovz-0123abcd" and net.nft_table(None) == "ovz"
    assert net.nft_lock_path("ovz") == "/run/lock/ovz-nft.lock"     # the old shared table keeps its lock
    assert net.nft_lock_path("ovz-0123abcd") == "/run/lock/ovz-0123abcd-nft.lock"


def test_default_host_ends_differ_between_data_dirs_and_fit_ifnamsiz(tmp_path):
    one, two = _mkdir(tmp_path / "a"), _mkdir(tmp_path / "b")
    name = "x" * 64
    ends = {net.default_host_ifname(d, n) for d in (one, two) for n in (name, "ct1")}
    assert len(ends) == 4
    for end in ends:
        assert end.startswith("ovz") and len(end) <= net.IFNAME_MAX
        assert net.validate_host_ifname(end) == end
    assert net.is_default_host_ifname(one, "ct1", net.default_host_ifname(one, "ct1"))
    assert net.is_default_host_ifname(one, "ct1", net.legacy_host_ifname(one, "ct1"))
    assert not net.is_default_host_ifname(one, "ct1", net.default_host_ifname(two, "ct1"))
    assert not net.is_default_host_ifname(one, "ct1", "ovzmine")


def test_a_migration_lets_the_target_name_a_derived_host_end_and_keeps_a_chosen_one(tmp_path):
    source, target = _manager(tmp_path / "source"), _manager(tmp_path / "target")
    derived = ContainerConfig(name="ct1", network=net.normalize_network("ct1", source.layout.data_dir,
                                                                        {"ip_address": ["10.213.9.1"]}))
    sent = migration_shared.portable_config(source, derived)
    assert sent["network"]["host_ifname"] is None and derived.network["host_ifname"]   # the source keeps its own
    got = migration_shared.localized(target, "ct1", sent)
    assert got["network"]["host_ifname"] == net.default_host_ifname(target.layout.data_dir, "ct1")
    assert got["network"]["host_ifname"] != derived.network["host_ifname"]
    chosen = ContainerConfig(name="ct1", network=net.normalize_network(
        "ct1", source.layout.data_dir, {"ip_address": ["10.213.9.1"], "host_ifname": "ovzmine"}))
    sent = migration_shared.portable_config(source, chosen)
    assert sent["network"]["host_ifname"] == "ovzmine"
    assert migration_shared.localized(target, "ct1", sent)["network"]["host_ifname"] == "ovzmine"
    assert migration_shared.portable_config(source, ContainerConfig(name="ct1"))["network"] == {}


def _manager(path) -> _Manager:
    return _Manager(_mkdir(path))


def test_the_record_can_be_forgotten_and_is_derived_the_same_again(tmp_path):
    data = _mkdir(tmp_path / "data")
    layout = HostLayout(data)
    node = layout.node_id(record=True)
    layout.forget_node_id()
    layout.forget_node_id()
    assert not os.path.exists(layout.node_file()) and layout.node_id() == node
