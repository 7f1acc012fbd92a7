# -*- coding: utf-8 -*-
"""CRIU on this host: the ``criu_binary`` fixture skips the tests that need it where it is missing or
``criu check`` fails on the kernel."""

from __future__ import annotations

import pytest

from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.criu import Criu, find_criu
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.errors import OvzError


@pytest.fixture(scope="session")
def criu_binary():
    try:
        binary = find_criu()
    except OvzError as exc:
        pytest.skip(str(exc))
    ok, output = Criu(binary).check()
    if not ok:
        pytest.skip("criu check fails on this kernel: %s" % output.splitlines()[-1:])
    return binary
