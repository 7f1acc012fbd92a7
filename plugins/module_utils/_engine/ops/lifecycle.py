# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Start and restart as an operator means them: a suspended container comes back with its memory.

``ContainerManager.start`` boots a stopped container and knows nothing of
checkpoints; what a suspended one needs is the checkpoint engine's resume, one
layer up. The callers that start containers on an operator's behalf (the boot
entry point, ``ovzctl start``/``restart``, ``ovz_container``'s converge) start
them here, as ``vzctl start`` does.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from ..container.manager import ContainerManager
from .checkpoint import Checkpointer


def resumer(manager: ContainerManager) -> Callable[[str], Dict[str, Any]]:
    """How a suspended container of ``manager`` comes back: its checkpoint restored, its dump then gone."""
    return lambda name: Checkpointer(manager).resume(name)


def start(manager: ContainerManager, name: str, wait_boot: bool = False, timeout: float = 60.0,
          before_go: Optional[Callable[[int], None]] = None) -> bool:
    """``ContainerManager.start``, with a suspended container resumed (a failed resume keeps its state);
    returns False if it was already running."""
    return manager.start(name, wait_boot=wait_boot, timeout=timeout, before_go=before_go, resume=resumer(manager))


def restart(manager: ContainerManager, name: str, wait_boot: bool = False, timeout: float = 60.0) -> None:
    """``ContainerManager.restart``, a suspended container resumed as by ``start``."""
    manager.restart(name, wait_boot=wait_boot, timeout=timeout, resume=resumer(manager))
