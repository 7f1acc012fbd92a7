# -*- coding: utf-8 -*-
"""The fleet's guards over the whole list (fleet.py), without the kernel: an item on a node that is
not an inventory host, and prune under a partial run (``--limit``). Configurations are plain files in a
temporary data dir; nothing is started."""

from __future__ import annotations

import pytest

from ansible_collections.ovz.containers.plugins.module_utils._engine.ops import fleet
from ansible_collections.ovz.containers.plugins.module_utils._engine.node.config import ContainerConfig
from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.errors import InvalidParameter

NODES = ["node1", "node2", "node3"]


def test_every_item_names_a_known_node():
    items = [dict(name="web1", node="node1"), dict(name="web2", node="nod2"), dict(name="db1", node="node3")]
    with pytest.raises(InvalidParameter) as caught:
        fleet.check_nodes(items, NODES, "node1")
    assert caught.value.param == "containers[web2].node"
    assert "item web2 names node 'nod2', which is not an inventory host" in str(caught.value)
    assert "did you mean node2" in str(caught.value)
    # Items of other (known) nodes and items without a node pass; so does a list checked without nodes.
    fleet.check_nodes([dict(name="web1", node="node2"), dict(name="any")], NODES, "node1")
    fleet.check_nodes(items, None, "node1")


def test_an_item_without_a_valid_name_is_named_by_its_index():
    with pytest.raises(InvalidParameter) as caught:
        fleet.check_nodes([dict(name="web1", node="node1"), dict(node="elsewhere")], NODES)
    assert caught.value.param == "containers[1].node"
    assert "did you mean" not in str(caught.value)


def test_this_node_must_be_known_too():
    with pytest.raises(InvalidParameter) as caught:
        fleet.check_nodes([], NODES, "node9")
    assert caught.value.param == "node" and "'node9'" in str(caught.value)


def test_prune_keeps_what_moved_to_a_node_outside_the_run():
    items = [dict(name="web1", node="node2"), dict(name="web2", node="node3"), dict(name="db1", node="node1"),
             dict(name="all")]
    # node1 and node2 run; node3 is left out (--limit): web2 must not be removed from node1 now.
    assert fleet.kept_by_prune(items, "node1", ["node1", "node2"]) == {"web2": "node3"}
    assert fleet.kept_by_prune(items, "node1", NODES) == {}
    # Without a node or without the play's nodes there is nothing to tell.
    assert fleet.kept_by_prune(items, None, ["node1"]) == {}
    assert fleet.kept_by_prune(items, "node1", None) == {}


def _configs(data_dir, labelled):
    manager = ContainerManager(data_dir, "ovz-tunit")
    for name, label in labelled.items():
        manager.store.save(ContainerConfig(name=name, layout="directory",
                                           labels={fleet.FLEET_LABEL: label} if label else {}))
    return manager


def test_plan_lists_what_prune_removes_and_keeps(tmp_path):
    manager = _configs(str(tmp_path / "data"), {"ovzgone": "shop", "ovzmoved": "shop", "ovzother": "blog",
                                                "ovzmine": None})
    warnings = []
    converger = fleet.FleetConverger(manager, fleet="shop", warn=warnings.append)
    converger.plan([], prune=True, keep={"ovzmoved": "node3"})
    report = converger.report(check_mode=True)
    assert report["pruned"] == ["ovzgone"]
    assert report["prune_kept"] == {"ovzmoved": "node3"}
    assert report["summary"]["removed"] == 1 and report["containers"]["ovzgone"]["changes"] == ["removed"]
    assert "ovzmoved" not in report["containers"]
    assert len(warnings) == 1 and "ovzmoved" in warnings[0] and "node3" in warnings[0]
    # Not applied yet: outside check mode only what was removed counts.
    assert converger.report(check_mode=False)["pruned"] == []
    assert sorted(manager.layout.names()) == ["ovzgone", "ovzmine", "ovzmoved", "ovzother"]
