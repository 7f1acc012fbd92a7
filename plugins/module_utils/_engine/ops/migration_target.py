# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""The target side of a live migration: the calls ``remote.serve`` answers (``REMOTE_CALLS``), and the
undo of an unfinished incoming container when the source's connection drops (``REMOTE_ABANDONED``)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from ..base.errors import OvzError, StateConflict
from ..base.files import atomic_file, atomic_write_json, read_json
from ..base.states import RUNNING_STATES
from ..node.config import ContainerConfig
from ..resources import network
from .migration_announce import announce
from .migration_shared import (IMAGES, INCOMING, LAZY_PID, LAZY_RC, boot_id, checkpointer_of, local_criu, localized,
                               ms_since)
from .migration_transfer import unpack_images

if TYPE_CHECKING:  # pragma: no cover - annotations only: the code imports these where it needs them
    from ..container.manager import ContainerManager


def _target_manager(data_dir: str, cgroup_parent: str) -> ContainerManager:
    from ..container.manager import ContainerManager
    return ContainerManager(data_dir, cgroup_parent)


def incoming_journal(manager: ContainerManager, name: str) -> Optional[Dict[str, Any]]:
    try:
        data = read_json(os.path.join(manager.layout.dump(name), INCOMING))
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _remote_status(session: Dict[str, Any], data_dir: str, cgroup_parent: str, name: str) -> Dict[str, Any]:
    manager = _target_manager(data_dir, cgroup_parent)
    incoming = incoming_journal(manager, name)
    result = {"state": manager.status(name), "incoming": incoming}
    final = os.path.join(manager.layout.dump(name), IMAGES, "final")
    if incoming and os.path.exists(os.path.join(final, LAZY_PID)):
        result["lazy"] = lazy_daemon(final)
    return result


def _remote_preflight(session: Dict[str, Any], data_dir: str, cgroup_parent: str, name: str,
                      config: Dict[str, Any], need_bytes: int, criu_version: Optional[List[int]],
                      source: str, lxcfs: Optional[List[str]] = None,
                      source_node: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    manager = _target_manager(data_dir, cgroup_parent)
    if os.path.isdir(data_dir):
        config = localized(manager, name, config)
    info: Dict[str, Any] = {"kernel": os.uname().release, "hostname": socket.gethostname()}
    incoming = incoming_journal(manager, name)
    if manager.exists(name) or os.path.lexists(manager.layout.private(name)):
        if incoming and incoming.get("source") == source and manager.status(name) not in RUNNING_STATES:
            info["stale_incoming"] = incoming.get("id")   # our own unfinished copy: replaced
        else:
            raise StateConflict("a container named %s already exists on the target" % name, "name")
    if shutil.which("rsync") is None:
        raise OvzError("rsync is not installed on the target", "target")
    if criu_version is not None:
        criu = local_criu()
        version = list(criu.version_tuple())
        info["criu_version"] = criu.version()
        source_version = ".".join(str(v) for v in criu_version)
        if version[:2] < list(criu_version)[:2]:
            raise OvzError("CRIU %s on the target is older than the source's %s: it may not read its images"
                           % (criu.version(), source_version), "target")
        # Newer is refused too: Debian 13's CRIU 4.1 fails to restore what Debian 12's 3.17 dumped
        # (its mount restore, after the source was frozen), so only the same major.minor is let through.
        if version[:2] != list(criu_version)[:2]:
            raise OvzError("CRIU %s on the target is newer than the source's %s: a restore of another CRIU "
                           "release's images is not known to work (4.1 restoring 3.17's fails); migrate between "
                           "nodes with the same CRIU major.minor" % (criu.version(), source_version), "target")
        passes, output = criu.check()
        if not passes:
            raise OvzError("criu check fails on the target: %s" % output.splitlines()[-1:], "target")
        info["lazy_pages"] = criu.feature("uffd-noncoop")
        info["unprivileged_userfaultfd"] = unprivileged_userfaultfd()
        criu.feature("network_lock_nftables")   # asked now (and cached), not while the container is frozen
    if lxcfs:
        from ..kernel.rootfs import LXCFS_FILES, find_lxcfs
        if find_lxcfs(data_dir) is None:
            raise StateConflict("container %s shows LXCFS's views (%s) but LXCFS does not run on the target, where "
                                "its restore would fail: start LXCFS there (the ovz_host role does) or restart the "
                                "container without it" % (name, ", ".join(lxcfs)), "target")
        missing = sorted(set(lxcfs) - set(LXCFS_FILES))
        if missing:
            raise StateConflict("container %s has LXCFS mounts that ovz did not make, which no restore can "
                                "take along: %s; unmount them inside first" % (name, ", ".join(missing)), "name")
    netconf = config.get("network") or {}
    if netconf.get("ip_address") or netconf.get("host_ifname"):
        from ..node.config import iter_configs
        others = [(c.name, c.network) for c in iter_configs(manager.layout) if c.name != name]
        network.check_address_conflicts(name, netconf, others)
        # From another data dir of this host: the addresses are routed to the source's host end until the move.
        node = source_node or {}
        same_host = bool(node) and node.get("boot_id") == boot_id() != ""
        network.check_host(netconf, moving_from=node.get("owner_alias") if same_host else None)
        if netconf.get("netif_mode") == "bridged" and netconf.get("bridge"):
            info["bridge"] = netconf["bridge"]
    os.makedirs(data_dir, mode=0o755, exist_ok=True)
    stats = os.statvfs(data_dir)
    info["free_bytes"] = stats.f_bavail * stats.f_frsize
    if info["free_bytes"] < need_bytes:
        raise OvzError("not enough room on the target: %d bytes free in %s, %d needed"
                       % (info["free_bytes"], data_dir, need_bytes), "target")
    return info


def _remote_prepare(session: Dict[str, Any], data_dir: str, cgroup_parent: str, name: str, config: Dict[str, Any],
                    migration_id: str, source: str, live: bool = False) -> Dict[str, Any]:
    """Record the incoming container and write its config (the container shows as stopped until restored).

    ``live``: the restore will follow while the container is frozen, so what it would load or ask first
    (the checkpoint engine's code, CRIU's kerndat cache and answers) is loaded and asked now."""
    manager = _target_manager(data_dir, cgroup_parent)
    if live:
        checkpointer = checkpointer_of(manager)
        checkpointer.criu.warm(checkpointer.criu_features())
    with manager.lock(name):
        incoming = incoming_journal(manager, name)
        if manager.exists(name) and not (incoming and incoming.get("source") == source):
            raise StateConflict("a container named %s already exists on the target" % name, "name")
        if incoming and incoming.get("id") != migration_id:
            discard_incoming(manager, name)   # a stale copy of our own earlier, failed run
        os.makedirs(os.path.join(manager.layout.dump(name), IMAGES), mode=0o700, exist_ok=True)
        os.makedirs(os.path.dirname(manager.layout.private(name)), mode=0o700, exist_ok=True)
        os.makedirs(manager.layout.private(name), mode=0o700, exist_ok=True)
        os.makedirs(os.path.dirname(manager.layout.root(name)), mode=0o755, exist_ok=True)
        atomic_write_json(os.path.join(manager.layout.dump(name), INCOMING),
                          {"id": migration_id, "source": source, "name": name, "since": time.time()})
        manager.store.save(ContainerConfig.from_dict(localized(manager, name, config)))
    session["incoming"] = {"data_dir": data_dir, "cgroup_parent": cgroup_parent, "name": name, "id": migration_id}
    return {"images": os.path.join(manager.layout.dump(name), IMAGES), "private": manager.layout.private(name),
            "dump": manager.layout.dump(name)}


def discard_incoming(manager: ContainerManager, name: str) -> None:
    """Remove an incoming container completely (killed if it runs). Caller holds the container lock.

    The transfers of a source that died go on by themselves (its final rsync was started before
    the freeze): ended first, or their receiver would write the private area again behind its removal,
    and the next migration would find "a container of that name" on this host."""
    _end_lazy_daemon(os.path.join(manager.layout.dump(name), IMAGES, "final"))
    from ..kernel.process import end_processes_working_in
    end_processes_working_in([manager.layout.private(name), manager.layout.dump(name)])
    config = manager.store.load(name)
    if config is not None:
        manager.stop_locked(config, timeout=0)
        manager.storage(config).destroy()
        manager.store.remove(name)
    else:
        shutil.rmtree(manager.layout.private(name), ignore_errors=True)
    shutil.rmtree(manager.layout.dump(name), ignore_errors=True)
    manager.discard_run_dir(name)
    if not manager.layout.names():
        manager.layout.forget_node_id()   # as a destroy of the last container does


def _remote_abort(session: Dict[str, Any], data_dir: str, cgroup_parent: str, name: str,
                  migration_id: str) -> bool:
    manager = _target_manager(data_dir, cgroup_parent)
    with manager.lock(name):
        incoming = incoming_journal(manager, name)
        if not incoming or incoming.get("id") != migration_id:
            return False
        discard_incoming(manager, name)
    session.pop("incoming", None)
    return True


def lazy_daemon(images_dir: str) -> Dict[str, Any]:
    """What the ``criu lazy-pages`` daemon in ``images_dir`` says: its exit status (None while it runs)."""
    try:
        with open(os.path.join(images_dir, LAZY_RC)) as handle:
            rc: Optional[int] = int(handle.read().strip())
    except (OSError, ValueError):
        rc = None   # not written yet (the shell renames it into place once whole)
    pid = read_json(os.path.join(images_dir, LAZY_PID)) or {}
    from ..kernel.process import process_starttime
    alive = bool(pid.get("pid")) and process_starttime(pid["pid"]) == pid.get("starttime")
    return {"rc": rc, "alive": alive and rc is None}


def _end_lazy_daemon(images_dir: str) -> None:
    from ..kernel.process import process_starttime
    pid = read_json(os.path.join(images_dir, LAZY_PID)) or {}
    if pid.get("pid") and process_starttime(pid["pid"]) == pid.get("starttime"):
        try:
            os.killpg(pid["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass


def _start_lazy_daemon(images_dir: str, port: int) -> None:
    """Start ``criu lazy-pages`` on ``images_dir``, fetching pages from ``127.0.0.1:port`` (the source's page
    server, forwarded by ssh); it ends by itself once every page is in, writing its exit status."""
    from ..kernel.process import process_starttime
    criu = local_criu()
    for entry in (LAZY_RC, LAZY_RC + ".tmp", "lazy-pages.socket"):
        try:
            os.unlink(os.path.join(images_dir, entry))
        except FileNotFoundError:
            pass
    # The status is renamed into place whole: a reader must never take a file the shell has only
    # opened (empty) for the daemon's failure.
    argv = ["/bin/sh", "-c", '"$0" "$@"; echo $? > %s.tmp && mv %s.tmp %s' % (LAZY_RC, LAZY_RC, LAZY_RC)] + criu.argv(
        "lazy-pages", images_dir, ["--page-server", "--address", "127.0.0.1", "--port", str(port)], "lazy-pages.log")
    proc = subprocess.Popen(argv, cwd=images_dir, stdin=subprocess.DEVNULL,  # pylint: disable=consider-using-with
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    atomic_write_json(os.path.join(images_dir, LAZY_PID), {"pid": proc.pid, "starttime": process_starttime(proc.pid)},
                      durable=False)
    deadline = time.monotonic() + 30
    while not os.path.exists(os.path.join(images_dir, "lazy-pages.socket")):
        if proc.poll() is not None or time.monotonic() > deadline:
            _end_lazy_daemon(images_dir)
            from ..kernel.criu import log_errors
            raise OvzError("criu lazy-pages did not start on the target: %s"
                           % "; ".join(log_errors(os.path.join(images_dir, "lazy-pages.log"))), "lazy")
        time.sleep(0.005)


def _remote_restore(session: Dict[str, Any], data_dir: str, cgroup_parent: str, name: str, images_dir: str,
                    tcp_established: bool, lazy_port: Optional[int] = None,
                    images: Optional[List[List[str]]] = None) -> Dict[str, Any]:
    manager = _target_manager(data_dir, cgroup_parent)
    began = time.monotonic()
    steps: Dict[str, float] = {}
    if images is not None:
        incoming = incoming_journal(manager, name)
        if not incoming or os.path.dirname(os.path.abspath(images_dir)) != \
                os.path.join(manager.layout.dump(name), IMAGES):
            raise StateConflict("no incoming migration of %s to write images for" % name, "name")
        unpack_images(images_dir, images)
        steps["unpack_ms"] = ms_since(began)
    if lazy_port:
        mark = time.monotonic()
        _start_lazy_daemon(images_dir, lazy_port)
        steps["lazy_daemon_ms"] = ms_since(mark)
    try:
        mark = time.monotonic()
        result = checkpointer_of(manager).restore(name, images_dir, tcp_established=tcp_established,
                                                  lazy=bool(lazy_port))
        steps["restore_call_ms"] = ms_since(mark)
    except BaseException:
        if lazy_port:
            _end_lazy_daemon(images_dir)
        raise
    seconds = time.monotonic() - began
    mark = time.monotonic()
    announced = announce(manager, name)
    steps["announce_ms"] = ms_since(mark)
    return {"seconds": seconds, "announced": announced, "result": result if isinstance(result, dict) else None,
            "steps": steps}


def _remote_lazy_wait(session: Dict[str, Any], data_dir: str, cgroup_parent: str, name: str, images_dir: str,
                      timeout: float = 600.0) -> Dict[str, Any]:
    """Wait until the lazy-pages daemon has every page in (or failed): its status and, if it failed, why."""
    deadline = time.monotonic() + timeout
    while True:
        state = lazy_daemon(images_dir)
        if state["rc"] is not None or not state["alive"] or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if state["rc"] != 0:
        from ..kernel.criu import log_errors
        log = os.path.join(images_dir, "lazy-pages.log")
        state["errors"] = log_errors(log)
        if state["rc"] is None:
            state["errors"].insert(0, "the daemon ended without an exit status" if not state["alive"]
                                   else "the daemon still ran after %.0f s" % timeout)
        # The images go with the rollback: the log is kept beside the node's other failure logs.
        kept = _target_manager(data_dir, cgroup_parent).layout.failure_log(name, "lazy-pages")
        try:
            with open(log, "rb") as source, atomic_file(kept, 0o644, durable=False, binary=True) as copy:
                shutil.copyfileobj(source, copy)
            state["log"] = kept
        except OSError:
            pass
    return state


def _remote_announce(session: Dict[str, Any], data_dir: str, cgroup_parent: str, name: str) -> List[List[str]]:
    return announce(_target_manager(data_dir, cgroup_parent), name)


def _remote_commit(session: Dict[str, Any], data_dir: str, cgroup_parent: str, name: str,
                   migration_id: str) -> bool:
    manager = _target_manager(data_dir, cgroup_parent)
    with manager.lock(name):
        incoming = incoming_journal(manager, name)
        if not incoming or incoming.get("id") != migration_id:
            return False
        shutil.rmtree(os.path.join(manager.layout.dump(name), IMAGES), ignore_errors=True)
        os.unlink(os.path.join(manager.layout.dump(name), INCOMING))
        try:
            os.rmdir(manager.layout.dump(name))
        except OSError:
            pass
    session.pop("incoming", None)
    return True


def _remote_abandoned(session: Dict[str, Any]) -> None:
    """The source went away mid-migration: remove an incoming container that does not run.

    A restored (running) one is left for the source's recovery, which rolls forward.
    """
    incoming = session.get("incoming")
    if not incoming:
        return
    try:
        manager = _target_manager(incoming["data_dir"], incoming["cgroup_parent"])
        with manager.lock(incoming["name"]):
            current = incoming_journal(manager, incoming["name"])
            if current and current.get("id") == incoming["id"] and \
                    manager.status(incoming["name"]) not in RUNNING_STATES:
                discard_incoming(manager, incoming["name"])
    except Exception:  # noqa: BLE001 - best effort; the next migrate converges anyway
        pass


REMOTE_CALLS: Dict[str, Callable[..., Any]] = {
    "status": _remote_status,
    "preflight": _remote_preflight,
    "prepare": _remote_prepare,
    "restore": _remote_restore,
    "lazy_wait": _remote_lazy_wait,
    "announce": _remote_announce,
    "commit": _remote_commit,
    "abort": _remote_abort,
}


REMOTE_ABANDONED = _remote_abandoned


def unprivileged_userfaultfd() -> bool:
    """Whether this host lets a process without CAP_SYS_PTRACE in the initial user namespace make a
    userfaultfd (``vm.unprivileged_userfaultfd``): the restored tasks of an unprivileged container do it
    themselves in a lazy restore, in the container's user namespace."""
    try:
        with open("/proc/sys/vm/unprivileged_userfaultfd") as handle:
            return handle.read().strip() == "1"
    except OSError:
        return False
