# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""What a running container is on the host: its init (pid and start time) and its cgroups."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

from ..base.files import read_json
from ..kernel.process import process_starttime

PAYLOAD = "payload"   # the sub-cgroup the container's processes live in; its parent holds the limits


@dataclass
class Runtime:
    """What a running container left in ``run/<name>/state.json``."""

    init_pid: int
    init_starttime: int
    cgroups: Dict[str, str]
    cgroup_version: int
    started_at: float

    @classmethod
    def load(cls, path: str) -> Optional["Runtime"]:
        data = read_json(path)
        if not data:
            return None
        try:
            return cls(int(data["init_pid"]), int(data["init_starttime"]), dict(data["cgroups"]),
                       int(data["cgroup_version"]), float(data["started_at"]))
        except (KeyError, TypeError, ValueError):
            return None

    def alive(self) -> bool:
        return process_starttime(self.init_pid) == self.init_starttime
