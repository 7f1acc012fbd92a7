# -*- coding: utf-8 -*-
"""``ovz_exec``'s engine call (ops/command.py) before anything runs: the container's state, the
parameters' checks, check mode. A fake node: nothing touches the host."""

from __future__ import annotations

import pytest

from ansible_collections.ovz.containers.plugins.module_utils._engine.base.errors import (
    InvalidParameter, NoSuchContainer, StateConflict)
from ansible_collections.ovz.containers.plugins.module_utils._engine.ops.command import run_command


class Node:
    def __init__(self, state):
        self.state = state

    def status(self, _name):
        return self.state

    def exec(self, *args, **kwargs):
        raise AssertionError("nothing may run here")


def test_a_name_that_does_not_exist_says_so():
    with pytest.raises(NoSuchContainer) as info:
        run_command(Node("absent"), "ovzop33", command="true")
    assert info.value.param == "name" and "container ovzop33 does not exist" in str(info.value)


def test_a_stopped_container_must_run_first():
    with pytest.raises(StateConflict) as info:
        run_command(Node("stopped"), "ct1", command="true")
    assert info.value.param == "name" and "is stopped; it must be running" in str(info.value)


@pytest.mark.parametrize("state", ["absent", "stopped"])
def test_check_mode_says_the_command_would_run_once_the_container_runs(state):
    result = run_command(Node(state), "ct1", argv=["true"], check_mode=True)
    assert result["changed"] is True and "would run once container ct1 runs (it is %s now)" % state in result["msg"]


@pytest.mark.parametrize("param", ["creates", "removes"])
def test_paths_inside_must_be_absolute(param):
    with pytest.raises(InvalidParameter) as info:
        run_command(Node("running"), "ct1", command="true", **{param: "etc/x"})
    assert info.value.param == param


def test_a_negative_timeout_names_the_parameter():
    with pytest.raises(InvalidParameter) as info:
        run_command(Node("running"), "ct1", command="true", timeout=-1)
    assert info.value.param == "timeout"
