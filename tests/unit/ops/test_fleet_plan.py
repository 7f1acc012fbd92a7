# -*- coding: utf-8 -*-
"""fleet.py's pure parts and its planning, without the kernel (the guards over the whole list are in
test_fleet_guards.py).

The node is a data dir under ``tmp_path`` whose containers' run states are given to a ``StubManager``;
the host's links are an empty ``HostView``; the duplicate-address probe is off (``dad_timeout: 0``).
Each test asserts what ``ovz_fleet`` reports: the per-container changes, the summary, the diff, or the
error and the parameter path it names.
"""

from __future__ import annotations

import os

import pytest

from support.stub_manager import StubManager, files
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.errors import (
    InvalidParameter, OvzError, StateConflict)
from ansible_collections.ovz.containers.plugins.module_utils._engine.node.config import ContainerConfig
from ansible_collections.ovz.containers.plugins.module_utils._engine.ops import fleet
from ansible_collections.ovz.containers.plugins.module_utils._engine.resources import network

NO_HOST = network.HostView({}, set(), [])


@pytest.fixture
def manager(tmp_path, monkeypatch):
    monkeypatch.setattr(network, "host_view", lambda: NO_HOST)
    result = StubManager(str(tmp_path / "data"))
    os.makedirs(result.layout.templates())
    with open(os.path.join(result.layout.templates(), "base.tar.gz"), "wb"):
        pass
    return result


def existing(manager, name, state="stopped", **settings):
    manager.store.save(ContainerConfig(name=name, layout="directory", hostname=name, **settings))
    manager.states[name] = state


def item(name, **given):
    """A list item; its network (if any) without the duplicate-address probe."""
    if "network" in given:
        given["network"] = dict(given["network"], dad_timeout=0)
    return dict(name=name, **given)


def planned(manager, items, fleet_name=None, prune=False, keep=None, warnings=None):
    converger = fleet.FleetConverger(manager, fleet=fleet_name, warn=(warnings if warnings is not None else []).append)
    before = files(manager.layout.data_dir)
    converger.plan(list(enumerate(items)), prune=prune, keep=keep)
    assert files(manager.layout.data_dir) == before
    return converger


def fails(manager, items, param, words, fleet_name=None, prune=False):
    with pytest.raises(OvzError) as caught:
        planned(manager, items, fleet_name, prune)
    assert caught.value.param == param, caught.value
    assert words in str(caught.value), str(caught.value)
    return caught.value


# -- the pure parts ---------------------------------------------------------------------------------
def test_select_takes_this_nodes_items_and_those_of_every_node():
    items = [dict(name="a"), dict(name="b", node="node1"), dict(name="c", node="node2")]
    assert fleet.select(items, "node1") == [(0, items[0]), (1, items[1])]
    assert fleet.select(items, "node2") == [(0, items[0]), (2, items[2])]
    assert fleet.select(items, None) == list(enumerate(items))


def test_did_you_mean_offers_the_close_names():
    with pytest.raises(InvalidParameter) as caught:
        fleet.check_nodes([], ["node1", "node2", "db"], "nod1")
    assert caught.value.param == "node"
    assert caught.value.args[0] == "this node 'nod1' is not an inventory host (did you mean node1 or node2?)"
    with pytest.raises(InvalidParameter) as caught:
        fleet.check_nodes([dict(name="web", node="zzz")], ["node1"], "node1")
    assert caught.value.param == "containers[web].node" and "did you mean" not in str(caught.value)
    assert "nothing was changed" in str(caught.value)


@pytest.mark.parametrize("section, inner, param", [
    ("limits", "ram", "containers[web].limits.ram"),
    ("network", "ip_address", "containers[web].network.ip_address"),
    ("network", None, "containers[web].network"),
    ("", "diskspace", "containers[web].quota.diskspace"),       # a create option ovz_fleet takes from quota
    ("", "diskinodes", "containers[web].quota.diskinodes"),
    ("", "hostname", "containers[web].hostname"),
    ("", None, "containers[web]"),
])
def test_fleet_errors_name_the_container_and_the_parameter(section, inner, param):
    error = fleet.FleetError("web", section, InvalidParameter("bad value", inner))
    assert (error.param, error.args[0], error.name, error.cause) == (param, "bad value", "web", None)


def test_a_fleet_error_of_a_bug_keeps_its_cause():
    cause = KeyError("x")
    error = fleet.FleetError("web", "limits", cause)
    assert error.param == "containers[web].limits" and error.args[0] == "KeyError: 'x'" and error.cause is cause


# -- planning ------------------------------------------------------------------------------------------
def test_new_containers_are_created_with_their_network(manager):
    items = [item("ovzweb", template="base", network={"ip_address": ["10.213.0.5"]}, quota={"diskspace": "1G"}),
             item("ovzdb", template="base", state="stopped")]
    converger = planned(manager, items)
    report = converger.report(check_mode=True)
    web = report["containers"]["ovzweb"]
    assert web["changed"] and web["state"] == "running"
    assert web["changes"][:2] == ["created", "state"]
    assert "network.ip_address" in web["changes"] and "layout" not in web["changes"]
    assert report["containers"]["ovzdb"]["state"] == "stopped"
    assert report["summary"] == dict(created=2, changed=0, unchanged=0, removed=0)
    assert report["changed"] and report["pruned"] == [] and report["prune_kept"] == {}
    diff = converger.diff()
    assert diff["before"]["ovzweb"]["network"] == {} and diff["after"]["ovzweb"]["network"]["ip_address"] == ["10.213.0.5"]
    assert diff["after"]["ovzweb"]["state"] == "running" and diff["before"]["ovzweb"]["state"] == "absent"
    assert converger.work[0].planned.create_config.diskspace == [1 << 30, 1 << 30]
    # Outside check mode, nothing applied yet is reported.
    assert converger.report(check_mode=False)["containers"] == {}


def test_what_already_is_as_listed_is_unchanged(manager):
    existing(manager, "ovzweb", "running")
    existing(manager, "ovzdb", "stopped")
    converger = planned(manager, [item("ovzweb"), item("ovzdb", state="started"), item("ovzold", state="absent")])
    report = converger.report(check_mode=True)
    assert report["containers"]["ovzweb"] == dict(changed=False, changes=[], state="running")
    assert report["containers"]["ovzdb"] == dict(changed=True, changes=["state"], state="running")
    assert report["containers"]["ovzold"] == dict(changed=False, changes=[], state="absent")
    assert report["summary"] == dict(created=0, changed=1, unchanged=2, removed=0)
    assert list(converger.diff()["after"]) == ["ovzdb"]


def test_absent_removes_an_existing_container(manager):
    existing(manager, "ovzweb", "running")
    report = planned(manager, [item("ovzweb", state="absent")]).report(check_mode=True)
    assert report["containers"]["ovzweb"] == dict(changed=True, changes=["removed"], state="absent")
    assert report["summary"]["removed"] == 1


def test_a_fleet_labels_its_containers(manager):
    existing(manager, "ovzweb", labels={"role": "web"})
    converger = planned(manager, [item("ovzweb", state="stopped"), item("ovzdb", template="base", labels={"x": "1"})],
                        fleet_name="shop")
    web, db = converger.work
    assert web.planned.settings == {"labels": {"role": "web", fleet.FLEET_LABEL: "shop"}}
    assert web.changes == ["labels"]
    assert db.planned.create_config.labels == {"x": "1", fleet.FLEET_LABEL: "shop"}


def test_an_address_taken_earlier_in_the_list_is_refused(manager):
    items = [item("ovzweb", template="base", network={"ip_address": ["10.213.0.5"]}),
             item("ovzdb", template="base", network={"ip_address": ["10.213.0.5"]})]
    fails(manager, items, "containers[ovzdb].network.ip_address", "10.213.0.5 already used by container ovzweb")


def test_prune_frees_the_addresses_of_what_it_removes(manager):
    conf = network.normalize_network("ovzold", manager.layout.data_dir, {"ip_address": ["10.213.0.5"]})
    existing(manager, "ovzold", labels={fleet.FLEET_LABEL: "shop"}, network=conf)
    items = [item("ovzweb", template="base", network={"ip_address": ["10.213.0.5"]})]
    fails(manager, items, "containers[ovzweb].network.ip_address", "10.213.0.5 already used by container ovzold")
    report = planned(manager, items, fleet_name="shop", prune=True).report(check_mode=True)
    assert report["pruned"] == ["ovzold"] and report["summary"] == dict(created=1, changed=0, unchanged=0, removed=1)


@pytest.mark.parametrize("items, param, words", [
    ([dict(name="bad name")], "containers[0].name", "'bad name' is not a valid container name"),
    ([dict()], "containers[0].name", "None is not a valid container name"),
    ([dict(name="ovzweb", template="base"), dict(name="ovzweb")], "containers[1].name", "ovzweb is also item 0 of the list"),
    ([dict(name="ovzweb", template="base", timeout=-1)], "containers[ovzweb].timeout", "must not be negative, got -1"),
    ([dict(name="ovzweb", template="base", labels={"": "x"})], "containers[ovzweb].labels", ""),
    ([dict(name="ovzweb")], "containers[ovzweb].template", "a template is required to create container ovzweb"),
    ([dict(name="ovzweb", template="base", quota={"diskspace": "1M"})], "containers[ovzweb].quota.diskspace",
     "an image needs at least 16M"),
    ([dict(name="ovzweb", template="base", state="frozen")], "containers[ovzweb].state", "only a running container"),
    ([item("ovzweb", template="base", network={"ip_address": ["10.213.0.5/24"]})], "containers[ovzweb].network.ip_address",
     "routed mode gives each address a /32 host route"),
    ([dict(name="ovzweb", template="base", network={"dad_timeout": -1})], "containers[ovzweb].network.dad_timeout",
     "out of range"),
    ([dict(name="ovzweb", template="base", quota={"quotatime": "soon"})], "containers[ovzweb].quota.quotatime", ""),
])
def test_bad_items_name_their_parameter_and_nothing_is_planned(manager, items, param, words):
    fails(manager, items, param, words)


def test_prune_needs_a_valid_fleet_name(manager):
    fails(manager, [], "fleet", "prune removes the containers of one fleet: name it with fleet", prune=True)
    fails(manager, [], "fleet", "the value must be a string of at most 256 characters", fleet_name="x" * 257)


def test_a_state_conflict_of_an_existing_container(manager):
    existing(manager, "ovzweb", "stopped")
    error = fails(manager, [item("ovzweb", state="frozen")], "containers[ovzweb].state", "the container is stopped")
    assert isinstance(error, fleet.FleetError) and isinstance(error.__cause__, StateConflict)


# -- the whole call in check mode ------------------------------------------------------------------
def test_converge_fleet_in_check_mode_reports_and_changes_nothing(manager):
    existing(manager, "ovzweb", "running")
    items = [dict(name="ovzweb", node="node1"), dict(name="ovzdb", node="node2", template="base")]
    before = files(manager.layout.data_dir)
    report = fleet.converge_fleet(manager, items, node="node1", nodes=["node1", "node2"], check_mode=True)
    assert files(manager.layout.data_dir) == before
    assert list(report["containers"]) == ["ovzweb"] and not report["changed"]
    assert report["diff"] == {"before": {}, "after": {}} and set(report["timings"]) == {"plan"}


def test_converge_fleet_checks_the_nodes_before_planning(manager):
    report = {}
    with pytest.raises(InvalidParameter) as caught:
        fleet.converge_fleet(manager, [dict(name="ovzweb", node="nodd1", template="base")], node="node1",
                             nodes=["node1"], check_mode=True, report=report)
    assert caught.value.param == "containers[ovzweb].node" and "did you mean node1" in str(caught.value)
    assert report["containers"] == {} and not report["changed"]


def test_converge_fleet_reports_how_far_a_failed_plan_got(manager):
    report = {}
    with pytest.raises(fleet.FleetError):
        fleet.converge_fleet(manager, [dict(name="ovzweb", template="base"), dict(name="ovzdb")], check_mode=True,
                             report=report)
    assert list(report["containers"]) == ["ovzweb"] and "exception" not in report
