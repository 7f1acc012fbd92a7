# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""A node's boot entry point: start its ``onboot`` containers in boot order.

As with vzctl, a container with a higher ``bootorder`` starts first; equal
orders start by name. Containers that already run are left alone, so the
entry point is idempotent and also repairs a node after a crash (every
container process killed): stale runtime state is cleaned by the start. A suspended
container is resumed with its memory, as its start does.
"""

from __future__ import annotations

from typing import Any, Dict, List

from ..base.errors import OvzError
from ..container.manager import ContainerManager
from ..kernel.criu import Criu
from . import lifecycle


def boot_plan(manager: ContainerManager) -> List[Dict[str, Any]]:
    """The ``onboot`` containers of the node, in the order they start."""
    entries = []
    for name in manager.layout.names():
        try:
            config = manager.load(name)
        except OvzError:
            continue
        if config.onboot:
            entries.append({"name": name, "bootorder": int(config.bootorder or 0)})
    return sorted(entries, key=lambda e: (-e["bootorder"], e["name"]))


def boot(manager: ContainerManager, wait_boot: bool = False, timeout: float = 60.0) -> List[Dict[str, Any]]:
    """Start every ``onboot`` container that is not running; one failure does not stop the others.

    Returns one entry per ``onboot`` container: ``action`` is ``started``,
    ``running`` (it already ran: nothing done) or ``failed`` (with ``error``).
    """
    try:
        # Where /run is not a tmpfs, the CRIU kerndat cache of the previous boot is replaced before
        # anyone else's CRIU could load it (see Criu.keep_kdat_cache).
        Criu().keep_kdat_cache()
    except (OvzError, OSError):
        pass   # no CRIU here: nothing to refresh
    report = []
    for entry in boot_plan(manager):
        try:
            started = lifecycle.start(manager, entry["name"], wait_boot=wait_boot, timeout=timeout)
            entry["action"] = "started" if started else "running"
        except Exception as exc:  # noqa: BLE001 - one container's failure must not keep the others down
            entry["action"] = "failed"
            entry["error"] = str(exc)
        report.append(entry)
    return report
