# -*- coding: utf-8 -*-
"""The run-state enum (base/states.py): each member is its word, wherever it is printed or stored."""

from __future__ import annotations

import json

import pytest

from ansible_collections.ovz.containers.plugins.module_utils._engine.base.states import (
    RUNNING_STATES, STOPPED_STATES, State)
from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import STATES
from ansible_collections.ovz.containers.plugins.module_utils._engine.ops.converge import desired_run_state


def test_the_words_are_the_ones_results_and_files_always_had():
    assert [s.value for s in State] == ["absent", "stopped", "suspended", "running", "frozen"]
    assert STATES == ("absent", "stopped", "suspended", "running", "frozen")
    assert RUNNING_STATES == ("running", "frozen") and STOPPED_STATES == ("stopped", "suspended")


@pytest.mark.parametrize("state", list(State))
def test_printed_and_serialised_as_the_plain_word(state):
    word = state.value
    assert json.dumps(state) == '"%s"' % word
    assert json.loads(json.dumps({"state": state, state: 1}, sort_keys=True)) == {"state": word, word: 1}
    assert json.loads(json.dumps({"state": state})) == {"state": word}
    assert "%s" % state == str(state) == "{}".format(state) == f"{state}" == word
    assert "%-10s|" % state == word.ljust(10) + "|"
    assert "is %s; stop it first" % (state,) == "is " + word + "; stop it first"


def test_equal_to_and_found_as_the_plain_word():
    assert State.RUNNING == "running" and "frozen" in RUNNING_STATES and "suspended" not in RUNNING_STATES
    assert {"running": 1}[State.RUNNING] == 1 and {State.FROZEN: 2}["frozen"] == 2
    assert State("suspended") is State.SUSPENDED


def test_desired_run_state_answers_in_states():
    assert desired_run_state("started", State.SUSPENDED) is State.RUNNING
    assert desired_run_state("stopped", State.SUSPENDED) is State.SUSPENDED
    assert desired_run_state("present", State.ABSENT) is State.STOPPED
    assert json.dumps(desired_run_state("frozen", State.RUNNING)) == '"frozen"'
