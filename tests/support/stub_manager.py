# -*- coding: utf-8 -*-
"""A node for plans without the kernel: configurations are plain files in a data dir, and the run
state of each container (running, frozen, suspended) is given instead of read from its cgroups."""

from __future__ import annotations

import os

from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager


class StubManager(ContainerManager):
    """A manager of a data dir whose containers' run states are given (``states``), not read from the kernel."""

    def __init__(self, data_dir, states=None):
        super().__init__(data_dir, "ovz-tunit")
        self.states = dict(states or {})

    def status(self, name):
        given = self.states.get(name)
        return given if given and self.exists(name) else super().status(name)


def files(top):
    """Every file under ``top``, relative to it: planning must leave this list as it was."""
    return sorted(os.path.relpath(os.path.join(d, f), top) for d, _dirs, names in os.walk(top) for f in names)
