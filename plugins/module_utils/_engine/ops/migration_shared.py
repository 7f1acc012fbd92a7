# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""What both ends of a live migration share: file names, the journal, the portable configuration, node identity."""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from ..base.files import atomic_write_json, read_json
from ..node.config import ContainerConfig
from ..resources import network

if TYPE_CHECKING:  # pragma: no cover - annotations only: the code imports these where it needs them
    from ..container.manager import ContainerManager, Runtime
    from ..kernel.criu import Criu
    from .checkpoint import Checkpointer


JOURNAL = "migrate.json"


INCOMING = "incoming.json"


LOCK = "migrate.lock"


IMAGES = "migrate"


LAZY_RC = "lazy-pages.rc"      # on the target, in the images: the exit status of criu lazy-pages


LAZY_PID = "lazy-pages.pid"


SPACE_MARGIN = 64 << 20


class FileLock:
    """An exclusive flock on ``path`` (the migration lock of one container; not the container lock)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: Optional[int] = None

    def __enter__(self) -> "FileLock":
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def checkpointer_of(manager: ContainerManager) -> Checkpointer:
    from .checkpoint import Checkpointer
    return Checkpointer(manager)


def lxcfs_views(runtime: Optional[Runtime]) -> Optional[List[str]]:
    from .checkpoint import lxcfs_views
    return lxcfs_views(runtime.init_pid) if runtime is not None else None


def local_criu() -> Criu:
    from ..kernel.criu import Criu
    return Criu()


def ms_since(mark: float) -> float:
    return round((time.monotonic() - mark) * 1000.0, 1)


def source_id(manager: ContainerManager) -> str:
    """Who migrates: this host and data_dir (a stale incoming container of the same source may be replaced)."""
    return "%s:%s" % (socket.gethostname(), manager.layout.data_dir)


def boot_id() -> str:
    """This kernel's boot id: equal on both sides of a migration between two data dirs of one host."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def portable_config(manager: ContainerManager, config: ContainerConfig) -> Dict[str, Any]:
    """The configuration as the target gets it: a host end name this node derived (not the operator's
    choice) is left for the target to derive, so that two data dirs of one host never give the
    container the same host end (the source's lives on until the move is done)."""
    data = config.to_dict()
    netconf = dict(data.get("network") or {})
    if netconf and network.is_default_host_ifname(manager.layout.data_dir, config.name, netconf.get("host_ifname")):
        netconf["host_ifname"] = None
        data["network"] = netconf
    return data


def localized(manager: ContainerManager, name: str, config: Dict[str, Any]) -> Dict[str, Any]:
    """``config`` with the host end name this node derives for ``name`` where the source left it to us."""
    netconf = config.get("network") or {}
    if not netconf or netconf.get("host_ifname"):
        return config
    return dict(config, network=dict(netconf, host_ifname=network.default_host_ifname(manager.layout.data_dir, name)))


def journal_path(manager: ContainerManager, name: str) -> str:
    return os.path.join(manager.layout.dump(name), JOURNAL)


def read_journal(manager: ContainerManager, name: str) -> Optional[Dict[str, Any]]:
    try:
        data = read_json(journal_path(manager, name))
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("name") == name else None


def write_journal(manager: ContainerManager, journal: Dict[str, Any], phase: str, durable: bool = True) -> None:
    """``durable``: False for the steps between the freeze and the restore: a recovery after a host crash
    that finds the phase before them (dump instead of sync) takes the same path."""
    journal["phase"] = phase
    journal.setdefault("history", []).append([phase, time.time()])
    atomic_write_json(journal_path(manager, journal["name"]), journal, durable=durable)


def clear_journal(manager: ContainerManager, name: str) -> None:
    shutil.rmtree(os.path.join(manager.layout.dump(name), IMAGES), ignore_errors=True)
    for entry in (JOURNAL, LOCK):
        try:
            os.unlink(os.path.join(manager.layout.dump(name), entry))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(manager.layout.dump(name))
    except OSError:
        pass
