# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""The ``ovz_limits`` operation (``vzctl set --save`` for limits): lock, load, diff, apply live, persist.

The ovz_limits, what each parameter means in cgroup files and how a file is written
and read back, is ``resources/limits.py``; this file only runs it for one container
under its lock, against what its configuration stores and what its cgroups hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional

from ..base import faults
from ..base.states import RUNNING_STATES
from ..container.manager import ContainerManager
from ..resources import limits as ovz_limits


@dataclass
class LimitsChange:
    """What a call to ``update`` found and did."""

    before: Dict[str, Any]
    after: Dict[str, Any]
    running: bool
    drift: List[str]                 # files the kernel did not hold (running containers)
    applied: bool = False
    not_enforced: Dict[str, str] = field(default_factory=dict)
    beancounters: Optional[Dict[str, Dict[str, Any]]] = None   # the table inside, rewritten after a live change

    @property
    def changed(self) -> bool:
        return self.before != self.after or bool(self.drift)


def update(manager: ContainerManager, name: str, params: Mapping[str, Any], dry_run: bool = False,
           warn: Optional[Callable[[str], None]] = None) -> LimitsChange:
    """Validate, diff against the stored and live limits, apply live, persist (``vzctl set --save``).

    A running container's beancounter table inside is rewritten after a change, so it shows the
    new barriers and limits; ``warn`` gets a failure to write it (raised when None: the limits hold).
    """
    request = ovz_limits.normalize_request({k: v for k, v in params.items() if v is not None})
    with manager.lock(name):
        config = manager.load(name)
        before = ovz_limits.merge(config.limits, {})
        after = ovz_limits.merge(before, request)
        backend = manager.backend
        host = ovz_limits.HostInfo.probe(backend)
        ovz_limits.validate_combination(after, host)
        state = manager.status(name)
        runtime = manager.runtime(name) if state in RUNNING_STATES else None
        change = LimitsChange(before=before, after=after, running=runtime is not None, drift=[])
        if runtime is None:
            change.not_enforced = ovz_limits.not_enforced(after, None, backend.version, None)
            if change.changed and not dry_run:
                config.limits = after
                manager.store.save(config)
            return change
        cgroups = manager.cgroups_for(runtime)
        devices = ovz_limits.container_devices(manager.storage(config))
        settings = ovz_limits.settings_for(cgroups, after, devices)
        change.drift = sorted({s.file for s in ovz_limits.drift(cgroups, settings)})
        change.not_enforced = ovz_limits.not_enforced(after, cgroups, backend.version, devices)
        if change.changed and not dry_run:
            ovz_limits.apply_settings(cgroups, settings, rollback=ovz_limits.settings_for(cgroups, before, devices))
            change.applied = True
            faults.point("limits.apply")
            if before != after:
                config.limits = after
                try:
                    manager.store.save(config)
                except BaseException:
                    ovz_limits.apply_settings(cgroups, ovz_limits.settings_for(cgroups, before, devices))
                    raise
            change.beancounters = manager.beancounter_table(name, runtime, after, warn=warn)
        return change
