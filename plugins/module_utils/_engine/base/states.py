# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""The run state of a container, as ``ContainerManager.status`` reads it off the host.

A ``StrEnum``: each member *is* its string, so results, JSON files, messages (``"%s"``,
f-strings) and comparisons with a plain ``"running"`` see the same words as before there was
an enum. The other vocabularies stay where they are spoken: what a module is asked for
(``present``, ``started``, ``restarted``: ``_ansible/argspec.py``), a fleet's wanted states and
a checkpoint's outcomes (``checkpointed``, ``restored``, ``migrated``).
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    ABSENT = "absent"         # no configuration
    STOPPED = "stopped"
    SUSPENDED = "suspended"   # stopped, with a checkpoint that a start resumes
    RUNNING = "running"
    FROZEN = "frozen"         # running, its cgroup frozen


# The states in which the container has a live init (and cgroups, a mounted root).
RUNNING_STATES = (State.RUNNING, State.FROZEN)
# The states in which it has none but exists (a start brings it up, resuming a suspended one).
STOPPED_STATES = (State.STOPPED, State.SUSPENDED)
