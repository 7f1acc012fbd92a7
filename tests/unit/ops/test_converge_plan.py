# -*- coding: utf-8 -*-
"""converge.py's plans, without the kernel: what ``ovz_container`` and ``ovz_network`` would do.

Configurations are plain files in a data dir under ``tmp_path``; the run state of a container
(running, frozen, suspended) is given to a ``StubManager`` instead of being read from its cgroups.
Planning touches nothing, which each test that plans a change checks on the data dir itself
(that is what check mode reports from: ``state`` is the plan's ``wanted`` when it changes).
"""

from __future__ import annotations

import os

import pytest

from support.stub_manager import StubManager, files
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.errors import InvalidParameter, StateConflict
from ansible_collections.ovz.containers.plugins.module_utils._engine.node.config import ContainerConfig
from ansible_collections.ovz.containers.plugins.module_utils._engine.ops import converge
from ansible_collections.ovz.containers.plugins.module_utils._engine.resources import network

CONTAINER_KEYS = ("state", "template", "hostname", "onboot", "bootorder", "labels", "init", "layout", "diskspace",
                  "diskinodes", "unprivileged")
NO_HOST = network.HostView({}, set(), [])


@pytest.fixture
def manager(tmp_path):
    result = StubManager(str(tmp_path / "data"))
    os.makedirs(result.layout.templates())
    for name in ("base", "other"):
        with open(os.path.join(result.layout.templates(), name + ".tar.gz"), "wb"):
            pass
    return result


def existing(manager, name, state="stopped", **settings):
    """A stored container of ``base`` in state ``state``."""
    template = os.path.join(manager.layout.templates(), "base.tar.gz")
    manager.store.save(ContainerConfig(name=name, layout="directory", hostname=name, template=template, **settings))
    manager.states[name] = state
    return manager.load(name)


def params(**given):
    result = dict.fromkeys(CONTAINER_KEYS)
    result.update(given)
    return result


def plan(manager, name, **given):
    """The plan, and that making it wrote nothing."""
    before = files(manager.layout.data_dir)
    result = converge.plan_container(manager, name, params(**given))
    assert files(manager.layout.data_dir) == before
    return result


def refused(error, param, words, call, *args):
    with pytest.raises(error) as caught:
        call(*args)
    assert caught.value.param == param, caught.value
    assert words in str(caught.value), str(caught.value)


# -- the run state after the call ---------------------------------------------------------------
@pytest.mark.parametrize("wanted, current, after", [
    ("absent", "running", "absent"), ("absent", "absent", "absent"),
    ("started", "stopped", "running"), ("started", "frozen", "running"), ("started", "suspended", "running"),
    ("restarted", "running", "running"), ("restarted", "absent", "running"),
    ("stopped", "running", "stopped"), ("stopped", "frozen", "stopped"), ("stopped", "absent", "stopped"),
    ("stopped", "suspended", "suspended"),
    ("frozen", "running", "frozen"), ("frozen", "frozen", "frozen"),
    ("present", "absent", "stopped"), ("present", "running", "running"), ("present", "suspended", "suspended"),
    ("present", "frozen", "frozen"),
])
def test_desired_run_state(wanted, current, after):
    assert converge.desired_run_state(wanted, current) == after


def test_only_a_running_container_freezes():
    refused(StateConflict, "state", "only a running container can be frozen; it is absent",
            converge.desired_run_state, "frozen", "absent")
    refused(StateConflict, "state", "only a running container can be frozen; the container is stopped",
            converge.desired_run_state, "frozen", "stopped")
    refused(StateConflict, "state", "the container is suspended", converge.desired_run_state, "frozen", "suspended")


# -- a container that does not exist ----------------------------------------------------------------
def test_a_new_container_is_planned_with_its_create_config(manager):
    result = plan(manager, "ovzweb", state="started", template="base", labels={"role": "web"}, bootorder=5,
                  diskspace="1G:2G", diskinodes="100000:200000")
    assert (result.current, result.wanted, result.changed, result.restart) == ("absent", "running", True, False)
    config = result.create_config
    assert config.template == os.path.join(manager.layout.templates(), "base.tar.gz")
    assert (config.layout, config.hostname, config.init, config.onboot) == ("image", "ovzweb", "/sbin/init", False)
    assert (config.bootorder, config.labels, config.unprivileged) == (5, {"role": "web"}, True)  # the default
    assert config.diskspace == [1 << 30, 2 << 30] and config.diskinodes == [100000, 200000]
    assert result.tracker.diff() == {
        "before": {"state": "absent", "hostname": None, "onboot": None, "bootorder": None, "init": None,
                   "labels": None, "seccomp_allow": None, "layout": None, "unprivileged": None},
        "after": {"state": "running", "hostname": "ovzweb", "onboot": False, "bootorder": 5, "init": "/sbin/init",
                  "labels": {"role": "web"}, "seccomp_allow": [], "layout": "image", "unprivileged": True}}
    assert result.warnings == [] and result.settings == {}


def test_present_creates_a_stopped_container(manager):
    result = plan(manager, "ovzweb", state="present", template="base", layout="directory", unprivileged=True)
    assert result.wanted == "stopped" and result.create_config.layout == "directory"
    assert result.create_config.unprivileged is True and result.tracker.after["unprivileged"] is True


def test_absent_stays_absent(manager):
    result = plan(manager, "ovzweb", state="absent", template="base")
    assert (result.wanted, result.changed, result.create_config) == ("absent", False, None)


@pytest.mark.parametrize("given, error, param, words", [
    (dict(state="started"), InvalidParameter, "template", "a template is required to create container ovzweb"),
    (dict(state="started", template="missing"), InvalidParameter, "template", "no template named 'missing'"),
    (dict(state="started", template="base", hostname="-web"), InvalidParameter, "hostname", "'-web' is not a valid hostname"),
    (dict(state="started", template="base", diskspace="1M"), InvalidParameter, "diskspace", "an image needs at least 16M"),
    (dict(state="started", template="base", diskspace="lots"), InvalidParameter, "diskspace", ""),
    (dict(state="started", template="base", diskinodes="10"), InvalidParameter, "diskinodes", "an image needs at least 64 inodes"),
    (dict(state="started", template="base", layout="zfs"), InvalidParameter, "layout", ""),
    (dict(state="started", template="base", init="sbin/init"), InvalidParameter, "init", ""),
    (dict(state="frozen", template="base"), StateConflict, "state", "only a running container can be frozen; it is absent"),
])
def test_a_bad_create_names_its_parameter_and_writes_nothing(manager, given, error, param, words):
    before = files(manager.layout.data_dir)
    refused(error, param, words, converge.plan_container, manager, "ovzweb", params(**given))
    assert files(manager.layout.data_dir) == before


# -- an existing container -------------------------------------------------------------------------
@pytest.mark.parametrize("current, state, wanted, changed", [
    ("stopped", "started", "running", True), ("stopped", "stopped", "stopped", False),
    ("stopped", "present", "stopped", False), ("running", "present", "running", False),
    ("running", "started", "running", False), ("running", "stopped", "stopped", True),
    ("running", "frozen", "frozen", True), ("frozen", "started", "running", True),
    ("frozen", "frozen", "frozen", False), ("suspended", "stopped", "suspended", False),
    ("suspended", "started", "running", True), ("running", "absent", "absent", True),
    ("stopped", "restarted", "running", True),
])
def test_transitions_of_an_existing_container(manager, current, state, wanted, changed):
    existing(manager, "ovzweb", current)
    result = plan(manager, "ovzweb", state=state)
    assert (result.current, result.wanted, result.changed) == (current, wanted, changed)
    assert result.create_config is None
    # What check mode reports as the container's state.
    assert (result.wanted if result.changed else result.current) == wanted


def test_restarted_is_a_change_even_when_the_state_stays(manager):
    existing(manager, "ovzweb", "running")
    result = plan(manager, "ovzweb", state="restarted")
    assert result.restart and result.changed and result.tracker.changes == []


def test_settings_that_differ_are_planned_and_the_rest_kept(manager):
    existing(manager, "ovzweb", "running", labels={"role": "web"})
    result = plan(manager, "ovzweb", state="started", hostname="www", labels={"role": "web"}, onboot=True)
    assert result.settings == {"hostname": "www", "onboot": True}
    assert result.tracker.changes == ["hostname", "onboot"]
    assert result.tracker.before["hostname"] == "ovzweb" and result.tracker.after["hostname"] == "www"
    assert result.tracker.after["init"] == "/sbin/init"          # not given: kept
    assert result.tracker.after["unprivileged"] is False


def test_absent_plans_every_setting_gone(manager):
    existing(manager, "ovzweb", "running", labels={"role": "web"})
    result = plan(manager, "ovzweb", state="absent", hostname="www")
    assert result.settings == {}
    assert result.tracker.after == dict(dict.fromkeys(result.tracker.after), state="absent")
    assert result.tracker.before["labels"] == {"role": "web"}


def test_the_layout_of_an_existing_container_stays(manager):
    existing(manager, "ovzweb")
    refused(StateConflict, "layout", "the layout of an existing container cannot be changed (it is directory)",
            converge.plan_container, manager, "ovzweb", params(state="started", layout="image"))
    assert plan(manager, "ovzweb", state="started", layout="directory").wanted == "running"


def test_unprivileged_changes_only_while_stopped(manager):
    existing(manager, "ovzweb", "running")
    refused(StateConflict, "unprivileged", "container ovzweb is running; unprivileged can only be changed while it is stopped",
            converge.plan_container, manager, "ovzweb", params(state="started", unprivileged=True))
    assert plan(manager, "ovzweb", state="started", unprivileged=False).unprivileged is None
    manager.states["ovzweb"] = "stopped"
    result = plan(manager, "ovzweb", state="started", unprivileged=True)
    assert result.unprivileged is True and "unprivileged" in result.tracker.changes


def test_what_only_a_create_uses_warns_for_an_existing_container(manager):
    existing(manager, "ovzweb", diskspace=[1 << 30, 2 << 30])
    result = plan(manager, "ovzweb", state="started", template="other", diskspace="1G:3G", diskinodes="1000:2000")
    assert result.warnings == [
        "template: container ovzweb exists (made from %s); a template is used only when a container is created, "
        "so other was not applied" % os.path.join(manager.layout.templates(), "base.tar.gz"),
        "diskspace: is used only when a container is created; container ovzweb exists, so 1G:3G was not applied "
        "(change it with ovz_quota's diskspace)",
        "diskinodes: is used only when a container is created; container ovzweb exists, so 1000:2000 was not applied "
        "(change it with ovz_quota's diskinodes)"]
    # The values it was made with, by name or path, warn of nothing; nor does anything for a removal.
    same = plan(manager, "ovzweb", state="started", template="base", diskspace="1G:2G")
    assert same.warnings == []
    assert plan(manager, "ovzweb", state="started",
                template=os.path.join(manager.layout.templates(), "base.tar.gz")).warnings == []
    assert plan(manager, "ovzweb", state="absent", template="other", diskspace="5G").warnings == []


def test_a_template_that_no_longer_resolves_still_warns(manager):
    existing(manager, "ovzweb")
    result = plan(manager, "ovzweb", state="started", template="gone")
    assert len(result.warnings) == 1 and "so gone was not applied" in result.warnings[0]


# -- ovz_network ------------------------------------------------------------------------------------
def network_params(**given):
    result = dict.fromkeys(converge.NETWORK_SETTINGS)
    result.update(state="present", dad_timeout=0)
    result.update(given)
    return result


def test_network_of_a_stopped_container(manager):
    existing(manager, "ovzweb")
    step = converge.plan_network(manager, "ovzweb", network_params(ip_address=["10.213.0.5"]), [], NO_HOST)
    assert not step.running and step.runtime is None
    assert step.planned.changed and not step.planned.live
    assert step.planned.after["ip_address"] == ["10.213.0.5"]
    assert step.runtime_path == os.path.join(manager.layout.run("ovzweb"), "net.json")


def test_network_of_a_running_container_is_live_work(manager):
    existing(manager, "ovzweb", "running")
    step = converge.plan_network(manager, "ovzweb", network_params(ip_address=["10.213.0.5"]), [], NO_HOST)
    assert step.running and step.planned.live


def test_network_absent_removes_the_settings(manager):
    stored = network.normalize_network("ovzweb", manager.layout.data_dir, {"ip_address": ["10.213.0.5"]})
    existing(manager, "ovzweb", network=stored)
    step = converge.plan_network(manager, "ovzweb", network_params(state="absent"), [], NO_HOST)
    assert step.planned.before == stored and step.planned.after == {} and step.planned.changed


def test_network_conflicts_with_the_other_containers_of_the_node(manager):
    existing(manager, "ovzdb", network=network.normalize_network("ovzdb", manager.layout.data_dir,
                                                                 {"ip_address": ["10.213.0.5"]}))
    existing(manager, "ovzweb")
    assert [name for name, _conf in converge.other_networks(manager, "ovzweb")] == ["ovzdb"]
    refused(InvalidParameter, "ip_address", "10.213.0.5 already used by container ovzdb", converge.plan_network,
            manager, "ovzweb", network_params(ip_address=["10.213.0.5"]), None, NO_HOST)


def test_network_bad_input_names_the_parameter(manager):
    existing(manager, "ovzweb")
    refused(InvalidParameter, "dad_timeout", "'soon' is not a number of seconds", converge.plan_network,
            manager, "ovzweb", network_params(dad_timeout="soon"), [], NO_HOST)
    refused(InvalidParameter, "netif_mode", "must be one of routed, bridged", converge.plan_network,
            manager, "ovzweb", network_params(netif_mode="nat"), [], NO_HOST)


def test_network_of_a_new_container(manager):
    result = converge.plan_new_network(manager, "ovzweb", network_params(ip_address=["fd00:213::5"]), [], NO_HOST)
    assert result.before == {} and result.after["ip_address"] == ["fd00:213::5"] and not result.live


def test_a_step_without_a_plan_is_a_bug_said_so(manager):
    existing(manager, "ovzweb")
    with pytest.raises(ValueError, match="network step of ovzweb without a plan"):
        assert converge.network_step(manager, "ovzweb").planned is None
