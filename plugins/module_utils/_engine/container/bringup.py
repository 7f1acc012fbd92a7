# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Bringing a container up: the steps a start and a restore share, each with its undo.

A start spawns a fresh init, a restore has CRIU recreate the checkpointed process tree;
everything around that is the same, and is done here, once:

    prepare()   its private area mounted, the disk quota in force, a fresh run/<name>/volatile,
                its cgroups made with the device policy and the limits   (fault points <kind>.mount,
                <kind>.cgroups)
    network()   from here on a failure also tears the network's host side down
    record()    the init checked alive, its runtime state written        (fault point <kind>.spawned)

Used as a context manager: a failure (or an interrupt) inside the block undoes every step taken,
last first, and passes the failure on; a block that ends normally keeps them all. ``kind`` is
``start`` or ``restore``, so that a test can kill either at the same points (faults.py).
"""

from __future__ import annotations

import contextlib
import time
from types import TracebackType
from typing import Callable, Optional, Protocol, Tuple, Type

from ..base import faults
from ..base.errors import OvzError, StateConflict
from ..base.files import atomic_write_json
from ..kernel.cgroups import CgroupBackend, ContainerCgroups
from ..kernel.process import process_starttime
from ..kernel.rootfs import DEVICE_ALLOW, ensure_virtual_block_dir
from ..kernel.storage import Storage
from ..node.config import ContainerConfig, HostLayout
from ..resources import limits as ovz_limits
from ..resources import quota as ovz_quota
from .runtime import PAYLOAD, Runtime


class Node(Protocol):
    """What a bring-up needs of the node (the ContainerManager), which builds on this file."""

    layout: HostLayout
    cgroup_parent: str

    @property
    def backend(self) -> CgroupBackend: ...

    def storage(self, config: ContainerConfig) -> Storage: ...

    def prepare_volatile(self, name: str) -> None: ...

    def discard_run_dir(self, name: str, keep_lock: bool = True) -> None: ...

    def tear_down_network(self, config: ContainerConfig) -> None: ...

    def state_path(self, name: str) -> str: ...


def _quietly(step: Callable[[], None]) -> None:
    try:
        step()
    except Exception:  # noqa: BLE001 - keep undoing; the failure that started it is what matters
        pass


class BringUp:
    """One start or restore of ``config``'s container on ``manager``'s node (see the module's text)."""

    def __init__(self, manager: Node, config: ContainerConfig, kind: str) -> None:
        self.manager = manager
        self.config = config
        self.kind = kind
        self._undo = contextlib.ExitStack()

    def __enter__(self) -> "BringUp":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        if exc_type is None:
            self._undo.pop_all()
        else:
            self._undo.close()

    def on_failure(self, step: Callable[[], None]) -> None:
        """Undo ``step`` if the bring-up fails from here on (before the steps undone so far)."""
        self._undo.callback(_quietly, step)

    def prepare(self) -> Tuple[Storage, ContainerCgroups]:
        """Everything before the container's first process exists: its storage and its cgroups."""
        manager, config, name = self.manager, self.config, self.config.name
        storage = manager.storage(config)
        if not storage.exists():
            raise StateConflict("the private area of %s is missing (%s)" % (name, storage.private), "name")
        self.on_failure(lambda: manager.discard_run_dir(name))
        storage.mount()
        self.on_failure(storage.umount)
        faults.point(self.kind + ".mount")
        # Disk quota: the stored limits, in force before the first process of the container exists.
        ovz_quota.apply_at_start(config, storage)
        manager.prepare_volatile(name)
        ensure_virtual_block_dir()
        backend = manager.backend
        cgroups = ContainerCgroups(backend, backend.container_paths(backend.resolve_parent(manager.cgroup_parent),
                                                                    name, manager.layout.node_id()))
        self.on_failure(cgroups.remove)
        cgroups.create()
        cgroups.apply_device_policy(DEVICE_ALLOW)
        cgroups.create(PAYLOAD)
        # Limits: in force before the first process of the container exists.
        ovz_limits.apply_at_start(cgroups, config.limits, storage)
        faults.point(self.kind + ".cgroups")
        self.on_failure(cgroups.kill_all)
        return storage, cgroups

    def network(self) -> None:
        """The network's host side is (about to be) set up: a failure from here on tears it down."""
        self.on_failure(lambda: self.manager.tear_down_network(self.config))

    def record(self, init_pid: int, cgroups: ContainerCgroups, log: str) -> Runtime:
        """The init runs: check that it still does (else see ``log``), and write the runtime state."""
        faults.point(self.kind + ".spawned")
        starttime = process_starttime(init_pid)
        if starttime is None:
            raise OvzError("the %sinit of %s exited at once; see %s"
                           % ("restored " if self.kind == "restore" else "", self.config.name, log))
        manager = self.manager
        runtime = Runtime(init_pid, starttime, cgroups.to_state(), manager.backend.version, time.time())
        manager.layout.node_id(record=True)   # the names just given stay this node's, wherever it moves
        atomic_write_json(manager.state_path(self.config.name), runtime.__dict__, durable=False)
        return runtime
