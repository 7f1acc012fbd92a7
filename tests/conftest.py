# -*- coding: utf-8 -*-
"""Shared fixtures (a session's work directory, its templates, per-test nodes and containers) and the
suite's hooks (markers and the environment tier of every test, the order of tests, the report of a
failed host snapshot comparison).

The tests are grouped by tier (``unit``, ``integration`` and ``security`` on this kernel, ``vm``); the
unit tests of one engine layer sit in ``tests/unit/<layer>/`` as its code does in
``plugins/module_utils/_engine/<layer>/``. Test files run together have unique names (pytest imports
them by name: test directories are not packages); tests/vm runs apart.

The helpers the tests call live in the package ``support`` beside this file (this directory is on
sys.path while pytest runs). Everything a test creates is named with the ``ovz`` prefix and removed
again, on failure too.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest

# The helpers in support assert as tests do: pytest rewrites their asserts too (registered before
# their first import). support puts the collection and scripts/ on sys.path: it comes before the
# engine and sweep.
pytest.register_assert_rewrite("support")

from support.node import debian_template_path, new_node  # noqa: E402  pylint: disable=wrong-import-position
from support.snapshot import snapshot_differences  # noqa: E402  pylint: disable=wrong-import-position
from sweep import SESSION_OWNER, process_starttime  # noqa: E402  pylint: disable=wrong-import-position

from ansible_collections.ovz.containers.plugins.module_utils._engine.node.templates import (  # noqa: E402  pylint: disable=wrong-import-position
    build_busybox_template)

WORK_ROOT = "/var/tmp"


TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

# The environment tiers: each test has exactly one, what it needs to run. A module or a test may say
# its own (``pytestmark = pytest.mark.multinode``); else its directory under tests/ gives it.
# Over the local tier's directories (tests/unit, tests/integration, tests/security; tests/vm runs apart),
# ``-m unit`` runs what needs no kernel object, ``-m "kernel or multinode"`` the rest.
TIERS = {
    "unit": "needs no kernel object: plain files under tmp_path, fakes and stubs (tests/unit)",
    "kernel": "makes kernel objects on this host: containers, cgroups, namespaces, links, mounts, loop devices, "
              "CRIU (tests/integration, tests/security)",
    "multinode": "several nodes on this kernel, each a network namespace with its own sshd (support/multinode.py)",
    "vm": "Debian VMs under QEMU, reached over SSH (tests/vm, scripts/test-vm)",
}
TIER_OF_DIRECTORY = {"unit": "unit", "integration": "kernel", "security": "kernel", "vm": "vm"}


def pytest_configure(config):
    for tier, what in TIERS.items():
        config.addinivalue_line("markers", "%s: environment tier: %s" % (tier, what))
    config.addinivalue_line("markers", "debian: needs the Debian 12 or 13 template (built once, cached)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    config.addinivalue_line(
        "markers", "serial: shares a host-wide resource (the CPUs it measures, a fixed port, the host's own data "
                   "dir or services); scripts/test runs these alone, after the parallel phase")


def pytest_assertrepr_compare(config, op, left, right):
    """A failed comparison of two host snapshots names the leaves that differ (pytest's own diff of
    such big dicts is cut before it reaches them)."""
    if op == "==" and isinstance(left, dict) and isinstance(right, dict) and {"files", "cgroups"} <= set(left):
        return ["host snapshots differ:"] + [line[:400] for line in snapshot_differences(left, right)[:40]]
    return None


def pytest_itemcollected(item):
    """The test's tier: its own marker, else its directory's (before ``-m`` selects on it)."""
    if any(item.get_closest_marker(tier) for tier in TIERS):
        return
    directory = os.path.relpath(str(item.path), TESTS_DIR).split(os.sep)[0]
    if directory in TIER_OF_DIRECTORY:
        item.add_marker(TIER_OF_DIRECTORY[directory])


def pytest_collection_modifyitems(session, config, items):
    """The slow tests first (a stable sort): parallel workers then take them at the start, and the
    run does not end waiting on one long test that a worker drew last."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def session_dir():
    path = tempfile.mkdtemp(prefix="ovz-tests-", dir=WORK_ROOT)
    # scripts/sweep.py leaves the work directories of live sessions alone (several runs share a host).
    with open(os.path.join(path, SESSION_OWNER), "w") as handle:
        json.dump({"pid": os.getpid(), "starttime": process_starttime(os.getpid())}, handle)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def busybox_template(session_dir):
    return build_busybox_template(os.path.join(session_dir, "templates"))


@pytest.fixture(scope="session")
def debian_template():
    return debian_template_path()


@pytest.fixture
def node(session_dir):
    with new_node(session_dir) as result:
        yield result


@pytest.fixture
def container(node, busybox_template):
    """A started busybox container (directory layout), booted."""
    name = node.name()
    node.manager.create(name, busybox_template, layout="directory")
    node.manager.start(name, wait_boot=True, timeout=20)
    return name
