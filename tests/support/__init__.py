# -*- coding: utf-8 -*-
"""The test suite's fakes and harnesses, one package that the tests and the benchmarks import.

Importing it puts the collection on ``sys.path`` (``scripts/collection_path.py``), so that the
engine imports as ``ansible_collections.ovz.containers...`` from any test, benchmark or script.

- ``node``: a test node (data dir, cgroup parent, manager), commands inside a container, module runs.
- ``snapshot``: what must not change when a call fails (files, cgroups, mounts, loops, links, inside).
- ``cgroupfs``: a faked cgroupfs (v1, hybrid, co-mounted, v2) under a temporary directory.
- ``stub_manager``: a manager whose containers' run states are given, for plans without a kernel.
- ``fake_links``: a host's links as pyroute2 gives them, for the network checks without netlink.
- ``netlab``: network namespaces as the host and the network beyond it, and the labs built on them.
- ``multinode``: several nodes on one kernel, each a network namespace with its own sshd.
- ``ansible_cli``, ``ovzctl``, ``debian``, ``criu``, ``beancounters``, ``migration``, ``molecule_output``,
  ``vm_migration``: what more than one test module of a subject uses.
"""

from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if os.path.join(REPO, "scripts") not in sys.path:
    sys.path.insert(0, os.path.join(REPO, "scripts"))
from collection_path import COLLECTIONS_ROOT, ensure_collection_path  # noqa: E402  pylint: disable=wrong-import-position

ensure_collection_path()

__all__ = ["COLLECTIONS_ROOT", "REPO"]
