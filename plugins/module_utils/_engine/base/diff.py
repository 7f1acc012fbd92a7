# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Before/after values of a change, for diff mode and for the ``changed`` of a plan.

Plain data, no Ansible: the converge steps plan with it and the modules hand
its ``diff()`` to Ansible as it is (community.docker keeps its own in ``_util.py``).
"""

from __future__ import annotations

from typing import Any, Dict, List


class DifferenceTracker:
    """Collects before/after values for diff mode, as community.docker does."""

    def __init__(self) -> None:
        self.before: Dict[str, Any] = {}
        self.after: Dict[str, Any] = {}
        self.changes: List[str] = []

    def add(self, key: str, before: Any, after: Any) -> None:
        self.before[key] = before
        self.after[key] = after
        if before != after:
            self.changes.append(key)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def diff(self) -> Dict[str, Dict[str, Any]]:
        return dict(before=self.before, after=self.after)
