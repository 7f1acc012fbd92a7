# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Live migration of a container to another host over SSH, like ``vzmigrate --online``.

Phases (each one's undo in brackets; ``BEFORE_COMMIT`` and ``AFTER_COMMIT`` below are this table,
run by one loop, ``_steps``)::

    preflight  target reachable, its engine runs (remote.py), CRIU there and as new,
               name and addresses free, room for the private area        [nothing changed]
    copy       config and private area copied while the container runs    [target: incoming removed]
    predump    iterative memory pre-dumps, each copied to the target;
               stop when the dirty pages stop shrinking                   [same]
    dump       freeze, final dump (the tasks stay stopped on the source); while
               CRIU dumps, what changed in the private area is copied
               (rsync; an image: its blocks), the files being quiescent   [source resumed]
    sync       final copy of the images (small ones, as after a lazy
               dump, travel inside the restore request instead)           [same]
    restore    restore on the target; its addresses routed there (proxy
               ARP/NDP) and announced (gratuitous ARP, unsolicited NA)    [target killed and removed, source resumed]
    (transfer) lazy migration only, the end of the restore phase: the memory pages
               follow the restore, faulted in from the source's page server  [same]
    commit     the target owns the container                              [none: from here we roll forward]
    cleanup    the source's stopped tasks killed and the container removed (or kept, stopped, with keep_source)

A journal (``dump/<name>/migrate.json`` on the source, ``dump/<name>/incoming.json``
on the target) records the phase before each step. If the migration process dies,
a watchdog forked at the start (it holds nothing but a pipe to the migration) sees
the pipe close and converges at once: before the commit it removes what the target
got and resumes the source; after a successful restore it rolls forward (a lazy
restore counts as successful once the target's lazy-pages daemon got every page:
until then the source keeps the only complete memory, and a broken transfer rolls
back). The next
``migrate`` of the same container does the same first, then migrates (or reports
that the container already runs on the target). The target's engine session, for
its part, removes an unfinished, not-running incoming container when the source's
connection drops.

The target's calls are in ``migration_target.py``, the byte transfers in
``migration_transfer.py``, the address announcements in ``migration_announce.py``,
and what both ends share (file names, the journal) in ``migration_shared.py``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from ..base import faults
from ..base.errors import InvalidParameter, KernelUnsupported, OvzError, StateConflict
from ..base.states import RUNNING_STATES, State
from ..node.config import ContainerConfig, validate_name
from ..resources import network
from .remote import RemoteSession, Target, Unreachable
from .migration_shared import (IMAGES, LOCK, SPACE_MARGIN, FileLock, boot_id, checkpointer_of, clear_journal,
                               local_criu, lxcfs_views, portable_config, read_journal, source_id, write_journal)
# The target's side is shipped to it from what this process has loaded (remote.engine_sources): imported
# here, it is also packed into the module's AnsiballZ zip, which holds only the module_utils imported.
from . import migration_target  # noqa: F401 pylint: disable=unused-import
from .migration_transfer import (FinalSync, ImageSync, finish_rsyncs, kill_rsyncs, pack_images, pages_bytes, rsync,
                                 start_rsyncs, tree_bytes)

if TYPE_CHECKING:  # pragma: no cover - annotations only: the code imports these where it needs them
    from ..container.manager import ContainerManager

LAZY_WAIT = 60.0               # how long a recovery waits for an interrupted lazy transfer to end
# The hook points, in order (``transfer``: a lazy migration's pages, within the restore phase).
PHASES = ("preflight", "copy", "predump", "dump", "sync", "restore", "transfer", "commit", "cleanup")
DEFAULT_PRE_DUMPS = 3
MAX_PRE_DUMPS = 20
SHRINK = 0.8                 # a pre-dump must write < 80 % of the previous one to be worth another
SMALL_PAGES = 1 << 20        # stop pre-dumping when a pass writes less than this

Hook = Callable[[str], None]


class _Watchdog:
    """A forked process that converges the migration if this one dies before saying it is done."""

    def __init__(self, manager: ContainerManager, name: str, leftovers: List[str], converge: bool = True) -> None:
        self.manager = manager
        self.name = name
        self.leftovers = leftovers      # the ssh control directory of the dead migration
        self.converge = converge        # False in check mode: nothing may change
        self.pid: Optional[int] = None
        self.fd: Optional[int] = None

    def start(self) -> None:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 0
            try:
                os.close(write_fd)
                os.setsid()
                for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
                    signal.signal(signum, signal.SIG_IGN)
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.closerange(3, read_fd)
                os.closerange(read_fd + 1, 65536)
                said = b""
                while True:
                    chunk = os.read(read_fd, 16)
                    if not chunk:
                        break
                    said += chunk
                if not said.endswith(b"done"):
                    try:
                        for path in self.leftovers:
                            if path:
                                RemoteSession.end_transfers(path)
                        if self.converge:
                            recover(self.manager, self.name)
                    finally:
                        for path in self.leftovers:
                            shutil.rmtree(path, ignore_errors=True)
            except BaseException:  # noqa: BLE001 - nobody to report to
                code = 1
            finally:
                os._exit(code)  # pylint: disable=protected-access
        os.close(read_fd)
        self.pid, self.fd = pid, write_fd

    def done(self) -> None:
        if self.fd is not None:
            try:
                os.write(self.fd, b"done")
            finally:
                os.close(self.fd)
                self.fd = None
        if self.pid:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid = None


def _open_session(target: Target) -> RemoteSession:
    session = RemoteSession(target)
    session.open()
    return session


def recover(manager: ContainerManager, name: str, session: Optional[RemoteSession] = None) -> Optional[str]:
    """Converge an interrupted migration of ``name`` from its journal.

    Returns None (no journal), ``rolled_back`` (the source runs, the target has nothing)
    or ``completed`` (the target runs it, the source is cleaned up).
    """
    if read_journal(manager, name) is None:
        return None
    with FileLock(os.path.join(manager.layout.dump(name), LOCK)):
        journal = read_journal(manager, name)
        if journal is None:
            return None   # converged meanwhile (by the watchdog)
        own = session is None
        target = Target.from_param(journal["target"])
        try:
            if session is None:
                try:
                    session = _open_session(target)
                except Unreachable:
                    session = None
            phase = journal.get("phase")
            forward = phase in ("commit", "cleanup")
            if session is None and phase == "restore":
                # The target may run it already: resuming here could run it twice. Wait for the target.
                raise Unreachable("the migration of %s was interrupted during the restore on %s, which does not "
                                  "answer: the container stays stopped here until a run reaches the target"
                                  % (name, target.host), "target")
            if not forward and phase in ("restore", "sync", "dump") and session is not None:
                status = session.call("status", data_dir=target.data_dir, cgroup_parent=target.cgroup_parent,
                                      name=name)
                incoming = status.get("incoming") or {}
                forward = status["state"] in RUNNING_STATES and incoming.get("id") == journal["id"]
                if forward and journal.get("lazy"):
                    # Restored lazily: it only counts as moved once every page reached the target.
                    forward = _lazy_complete(session, target, name, status)
            if forward:
                if session is not None:
                    session.call("commit", data_dir=target.data_dir, cgroup_parent=target.cgroup_parent, name=name,
                                 migration_id=journal["id"])
                write_journal(manager, journal, "cleanup")
                _finish_source(manager, name, journal)
                return "completed"
            if session is not None:
                session.call("abort", data_dir=target.data_dir, cgroup_parent=target.cgroup_parent, name=name,
                             migration_id=journal["id"])
            _resume_source(manager, name, journal)
            clear_journal(manager, name)
            return "rolled_back"
        finally:
            if own and session is not None:
                session.close()


def _lazy_complete(session: RemoteSession, target: Target, name: str, status: Dict[str, Any]) -> bool:
    """Did the target's lazy-pages daemon get every page? Waits (a while) for a transfer still going on."""
    deadline = time.monotonic() + LAZY_WAIT
    while True:
        lazy = status.get("lazy") or {}
        if lazy.get("rc") is not None or not lazy.get("alive") or time.monotonic() > deadline:
            return lazy.get("rc") == 0
        time.sleep(0.2)
        status = session.call("status", data_dir=target.data_dir, cgroup_parent=target.cgroup_parent, name=name)


def _resume_source(manager: ContainerManager, name: str, journal: Dict[str, Any]) -> None:
    """Undo a freeze or a leave_stopped dump on the source (nothing to do if it runs normally)."""
    if journal.get("stopped") and manager.status(name) in RUNNING_STATES:
        checkpointer = checkpointer_of(manager)
        if checkpointer.stopped_after_dump(name):
            checkpointer.resume_stopped(name)
    if manager.status(name) == State.FROZEN:
        manager.thaw(name)


def _finish_source(manager: ContainerManager, name: str, journal: Dict[str, Any]) -> None:
    if journal.get("stopped") and manager.exists(name):
        checkpointer_of(manager).finish_stopped(name)
    if journal.get("keep_source"):
        if manager.status(name) in RUNNING_STATES:
            manager.stop(name, timeout=0)
        clear_journal(manager, name)
    elif manager.exists(name):
        manager.destroy(name)
    else:
        clear_journal(manager, name)


def plan(manager: ContainerManager, name: str, target: Any, **options: Any) -> Target:
    """Validate the inputs (touching nothing); the parsed target."""
    validate_name(name)
    parsed = Target.from_param(target, **{k: v for k, v in options.items()
                                          if k in ("data_dir", "cgroup_parent", "python", "identity_file",
                                                   "known_hosts", "ssh_options", "port", "user")})
    return parsed


def migrate(manager: ContainerManager, name: str, target: Any, pre_dump_iterations: Optional[int] = None,
            keep_source: bool = False, tcp_established: bool = True, check_mode: bool = False,
            hook: Optional[Hook] = None, watchdog: bool = True, lazy: Optional[bool] = None) -> Dict[str, Any]:
    """Move ``name`` from this node (``manager``) to ``target`` (a ``Target``, a dict or ``user@host``).

    Returns ``changed``, per-phase ``timings`` (seconds), ``frozen_time``, ``sizes``,
    ``pre_dump_iterations`` done, ``lazy`` (whether memory followed after the restore), and
    ``recovered`` when an earlier run had to be converged first.
    ``hook(phase)`` is called after each phase (tests use it to inject faults).

    ``lazy`` (post-copy): the final dump leaves the memory pages with the stopped tasks, the
    target restores at once and faults them in from the source's page server (CRIU lazy pages,
    userfaultfd), so the frozen time no longer grows with the memory size. None (the default)
    uses it when both CRIUs support it (``criu check --feature uffd-noncoop``); True requires it;
    False copies all memory while the container is frozen (after pre-dumps, where possible).
    """
    validate_name(name)
    target = Target.from_param(target)
    if pre_dump_iterations is not None and (not isinstance(pre_dump_iterations, int) or
                                            isinstance(pre_dump_iterations, bool) or
                                            not 0 <= pre_dump_iterations <= MAX_PRE_DUMPS):
        raise InvalidParameter("must be 0 to %d, got %r" % (MAX_PRE_DUMPS, pre_dump_iterations), "pre_dump_iterations")
    if lazy is not None and not isinstance(lazy, bool):
        raise InvalidParameter("must be true, false or null (automatic), got %r" % (lazy,), "lazy")
    result: Dict[str, Any] = {"changed": False, "name": name, "target": target.host, "timings": {},
                              "frozen_time": None, "sizes": {}, "pre_dump_iterations": 0, "recovered": None,
                              "mode": None, "lazy": False}
    began = time.monotonic()
    if not check_mode and read_journal(manager, name) is not None:
        result["recovered"] = recover(manager, name)
        result["changed"] = True
        if result["recovered"] == "completed":
            return result
    state = manager.status(name)
    if state == State.SUSPENDED:
        # An offline migration would copy its disk but not its memory, and leave that behind.
        raise StateConflict("container %s is suspended: resume it before migrating it (its memory is in %s)"
                            % (name, manager.layout.dump(name)), "name")
    session = RemoteSession(target)
    try:
        session.open()
    except Unreachable:
        if state == State.ABSENT:
            raise StateConflict("container %s does not exist here" % name, "name") from None
        raise
    dog = _Watchdog(manager, name, [session.control_dir or ""], converge=not check_mode)
    if watchdog:
        dog.start()
    try:
        if state == State.ABSENT:
            remote = session.call("status", data_dir=target.data_dir, cgroup_parent=target.cgroup_parent, name=name)
            if remote["state"] != State.ABSENT and not remote.get("incoming"):
                result["target_state"] = remote["state"]
                return result      # already migrated: nothing to do
            raise StateConflict("container %s does not exist here (nor on %s)" % (name, target.host), "name")
        config = manager.load(name)
        entry = manager.idmap.lookup(name) if config.unprivileged else None
        if entry and entry.get("mode") == "shifted":
            raise KernelUnsupported("container %s is unprivileged with its files shifted into this node's id block "
                                    "(the host refused an idmapped mount of them): the target's block differs, and "
                                    "only idmapped containers migrate. Stop it, make it privileged (which shifts its "
                                    "files back), migrate it, and make it unprivileged again there" % name,
                                    "unprivileged")
        live = state in RUNNING_STATES
        if live:
            checkpointer_of(manager).check(name)   # what CRIU would refuse, before anything is copied or frozen
        result["mode"] = "online" if live else "offline"
        storage = manager.storage(config)
        private_bytes = tree_bytes(storage.image if config.layout == "image" else storage.private)
        result["sizes"]["private"] = private_bytes
        t0 = time.monotonic()
        criu_version = list(local_criu().version_tuple()) if live else None
        runtime = manager.runtime(name) if live else None
        info = session.call("preflight", timeout=120, data_dir=target.data_dir, cgroup_parent=target.cgroup_parent,
                            name=name, config=portable_config(manager, config), need_bytes=private_bytes + SPACE_MARGIN,
                            criu_version=criu_version, source=source_id(manager),
                            lxcfs=lxcfs_views(runtime),
                            source_node={"boot_id": boot_id(),
                                         "owner_alias": network.owner_alias(manager.layout.data_dir, name)})
        result["target_info"] = info
        result["timings"]["preflight"] = time.monotonic() - t0
        if live and lazy is not False:
            supported = local_criu().feature("uffd-noncoop") and bool(info.get("lazy_pages"))
            if lazy and not supported:
                raise KernelUnsupported("lazy migration needs userfaultfd with non-cooperative events on both hosts "
                                        "(criu check --feature uffd-noncoop fails on %s)"
                                        % ("the target" if local_criu().feature("uffd-noncoop") else "this host"), "lazy")
            if supported and config.unprivileged and not info.get("unprivileged_userfaultfd"):
                why = ("the restored tasks of an unprivileged container make their userfaultfd in its user "
                       "namespace, which the target allows only with vm.unprivileged_userfaultfd = 1 (a host-wide "
                       "choice: add it to the ovz_host role's ovz_host_sysctl)")
                if lazy:
                    raise KernelUnsupported("lazy migration of %s: %s" % (name, why), "lazy")
                result.setdefault("warnings", []).append("lazy: not lazy, as %s" % why)
                supported = False
            result["lazy"] = supported
        _call_hook(hook, "preflight")
        result["changed"] = True
        if check_mode:
            return result
        with FileLock(os.path.join(manager.layout.dump(name), LOCK)):
            _steps(_Run(manager, name, config, target, session, result, live, pre_dump_iterations, keep_source,
                        tcp_established, hook))
    finally:
        session.close()
        dog.done()
    result["timings"]["total"] = time.monotonic() - began
    return result


def _call_hook(hook: Optional[Hook], phase: str) -> None:
    """After each phase: the caller's hook, and the ``OVZ_FAULT=migrate.<phase>`` crash point (faults.py)."""
    if hook is not None:
        hook(phase)
    faults.point("migrate." + phase)


class _Run:
    """One migration past its preflight: what each phase finds and leaves for the next."""

    def __init__(self, manager: ContainerManager, name: str, config: ContainerConfig, target: Target,
                 session: RemoteSession, result: Dict[str, Any], live: bool, iterations: Optional[int],
                 keep_source: bool, tcp_established: bool, hook: Optional[Hook]) -> None:
        self.manager, self.name, self.config, self.target, self.session = manager, name, config, target, session
        self.result, self.live, self.iterations, self.tcp_established, self.hook = (
            result, live, iterations, tcp_established, hook)
        self.timings: Dict[str, float] = result["timings"]
        self.sizes: Dict[str, Any] = result["sizes"]
        self.where: Dict[str, Any] = {"data_dir": target.data_dir, "cgroup_parent": target.cgroup_parent, "name": name}
        self.lazy = bool(result.get("lazy"))
        self.journal: Dict[str, Any] = {"id": uuid.uuid4().hex, "name": name, "target": dict(target.__dict__),
                                        "keep_source": keep_source, "stopped": False, "froze": False,
                                        "lazy": self.lazy, "started": time.time()}
        self.local_images = os.path.join(manager.layout.dump(name), IMAGES)
        self.final = os.path.join(self.local_images, "final")
        self.storage = manager.storage(config)
        self.image = config.layout == "image"
        self.source_private = self.storage.private.rstrip("/") + "/"
        self.paths: Dict[str, str] = {}
        self.image_sync: Optional[ImageSync] = None
        self.checkpointer = checkpointer_of(manager) if live else None   # ``is not None``: ``live``
        self.parent: Optional[str] = None
        self.ports: Optional[Tuple[int, int]] = None
        self.dumped: Dict[str, Any] = {}
        self.inline: Optional[List[List[str]]] = None
        self.frozen_at = 0.0
        self.final_sync: Optional[FinalSync] = None
        # Copies running in the background between the dump and the end of the sync, ended then, failed or not.
        self.transfers = contextlib.ExitStack()

    def write(self, phase: str, durable: bool = True) -> None:
        write_journal(self.manager, self.journal, phase, durable)

    def copy(self) -> None:
        """The configuration and the private area, while the container runs."""
        t0 = time.monotonic()
        self.paths = self.session.call("prepare", config=portable_config(self.manager, self.config),
                                       migration_id=self.journal["id"], source=source_id(self.manager),
                                       live=self.live, **self.where)
        if self.image:
            self.image_sync = ImageSync(self.storage.image, self.target,
                                        os.path.join(self.paths["private"], "root.img"), self.session.control_path)
            self.sizes["copied"] = self.image_sync.send()
        else:
            self.sizes["copied"] = rsync(self.source_private, self.target, self.paths["private"] + "/",
                                         self.session.control_path, ["--delete", "-S"], allow_vanished=self.live)
        self.timings["copy"] = time.monotonic() - t0
        _call_hook(self.hook, "copy")

    def _pre_dumps_wanted(self) -> int:
        iterations = self.iterations
        if self.lazy:
            # Post-copy: the memory follows the restore, nothing to copy before.
            if iterations:
                self.result.setdefault("warnings", []).append(
                    "pre_dump_iterations: %d pre-dumps were asked, but this migration is lazy (its memory follows the "
                    "restore), so none was made; give lazy: false for pre-copy" % iterations)
            return 0
        if iterations is None:
            iterations = DEFAULT_PRE_DUMPS
        if self.checkpointer is not None and iterations and not self.checkpointer.criu.feature("mem_dirty_track"):
            # CRIU's pre-dumps need the kernel's soft-dirty bits (CONFIG_MEM_SOFT_DIRTY).
            self.result.setdefault("warnings", []).append(
                "pre-dumps skipped: this kernel cannot track dirty memory (criu check --feature mem_dirty_track "
                "fails; CONFIG_MEM_SOFT_DIRTY is off), so all memory is copied while the container is frozen")
            return 0
        return iterations

    def predump(self) -> None:
        """Memory pre-dumps, each copied to the target, until the dirty pages stop shrinking."""
        iterations = self._pre_dumps_wanted()
        predumps: List[int] = []
        if self.checkpointer is not None and iterations:
            self.write("predump")
            t0 = time.monotonic()
            os.makedirs(self.local_images, mode=0o700, exist_ok=True)
            for index in range(1, iterations + 1):
                images = os.path.join(self.local_images, "pre%d" % index)
                os.makedirs(images, mode=0o700)
                self.checkpointer.pre_dump(self.name, images, parent_dir=self.parent)
                written = pages_bytes(images)
                predumps.append(written)
                self.sizes.setdefault("predump_sent", []).append(
                    rsync(images, self.target, self.paths["images"] + "/", self.session.control_path,
                          ["--whole-file"]))
                self.parent = images   # absolute: the checkpointer makes it relative to the next images dir
                _call_hook(self.hook, "predump")
                if written < SMALL_PAGES or (len(predumps) > 1 and written > predumps[-2] * SHRINK):
                    break
            self.timings["predump"] = time.monotonic() - t0
        self.sizes["predump"] = predumps
        self.result["pre_dump_iterations"] = len(predumps)

    def dump(self) -> None:
        """Freeze, and the final dump (the tasks stay stopped here); meanwhile what changed in the private
        area is copied, the files being quiescent now."""
        manager, name, checkpointer = self.manager, self.name, self.checkpointer
        if self.lazy:
            # The target's lazy-pages daemon reaches the page server here through the ssh master.
            local_port = _free_port()
            self.ports = (local_port, self.session.forward_to_here(local_port))
        if checkpointer is not None:
            checkpointer.criu.feature("network_lock_nftables")   # asked now (and cached), not while frozen
            self.journal["stopped"] = True
            self.write("dump")
        self.frozen_at = time.monotonic()
        # The checkpointer's freeze waits out a vfork in flight, which the dump could not stop.
        we_froze = checkpointer.freeze(name) if checkpointer is not None else False
        final_sync = FinalSync(self.storage, self.image_sync if self.image else None, self.source_private,
                               self.paths["private"] + "/", self.target, self.session.control_path)
        self.transfers.callback(final_sync.cancel)
        self.final_sync = final_sync
        if checkpointer is None:
            return
        os.makedirs(self.final, mode=0o700, exist_ok=True)
        try:
            self.dumped = checkpointer.dump(name, self.final, parent_dir=self.parent, leave_stopped=True,
                                            tcp_established=self.tcp_established,
                                            lazy_port=self.ports[0] if self.ports else None)
        except BaseException:
            self.journal["stopped"] = manager.status(name) in RUNNING_STATES and _tasks_stopped(manager, name)
            raise
        if we_froze:
            manager.thaw(name)   # the tasks stay stopped (SIGSTOP) for finish_stopped or resume_stopped
        self.write("dump", durable=False)
        self.result["dump_timings"] = self.dumped.get("timings")
        self.sizes["dump"] = pages_bytes(self.final)
        self.sizes["dump_total"] = tree_bytes(self.final)
        self.timings["dump"] = time.monotonic() - self.frozen_at
        _call_hook(self.hook, "dump")

    def sync(self) -> None:
        """The images (small ones go inside the restore request) and the private area's last changes."""
        self.write("sync", durable=not self.live)
        t0 = time.monotonic()
        pending: List[Tuple[subprocess.Popen, str]] = []
        self.transfers.callback(lambda: kill_rsyncs(pending))
        if self.live:
            self.inline = pack_images(self.final)
            if self.inline is None:
                pending.extend(start_rsyncs([(self.final, self.paths["images"] + "/", ["--whole-file"])], self.target,
                                            self.session.control_path))
            else:
                self.sizes["dump_sent"] = sum(len(value) * 3 // 4 for _name, kind, value in self.inline
                                              if kind == "file")
        if self.final_sync is not None:
            self.sizes["final_sync_sent"] = self.final_sync.wait()
        if pending:
            self.sizes["dump_sent"] = finish_rsyncs(pending, self.target)[0]
            del pending[:]
        self.transfers.close()
        self.timings["sync"] = time.monotonic() - t0
        _call_hook(self.hook, "sync")

    def restore(self) -> None:
        """The restore on the target, its addresses routed and announced there; for a lazy migration, then
        the memory pages, faulted in from the source's page server until the target has them all."""
        self.write("restore")   # durable: an unreachable target then means "wait", not "resume"
        t0 = time.monotonic()
        if self.live:
            restored = self.session.call("restore", timeout=600,
                                         images_dir=os.path.join(self.paths["images"], "final"),
                                         tcp_established=self.tcp_established,
                                         lazy_port=self.ports[1] if self.ports else None, images=self.inline,
                                         **self.where)
            self.result["announced"] = restored.get("announced")
            self.timings["restore"] = time.monotonic() - t0
            self.result["frozen_time"] = time.monotonic() - self.frozen_at
            self.result["restore_timings"] = dict((restored.get("result") or {}).get("timings") or {},
                                                  **(restored.get("steps") or {}))
        if self.lazy and self.checkpointer is not None:   # (a lazy migration is a live one)
            _call_hook(self.hook, "transfer")
            t0 = time.monotonic()
            self.checkpointer.finish_lazy(self.dumped.get("page_server"), self.final)
            daemon = self.session.call("lazy_wait", timeout=660,
                                       images_dir=os.path.join(self.paths["images"], "final"), **self.where)
            if daemon.get("rc") != 0:
                raise OvzError("the target did not get every memory page (criu lazy-pages exit %s; its log on the "
                               "target: %s): %s" % (daemon.get("rc"), daemon.get("log", "-"),
                                                    "; ".join(daemon.get("errors") or [])), "lazy")
            self.timings["lazy_transfer"] = time.monotonic() - t0
        _call_hook(self.hook, "restore")

    def commit(self) -> None:
        """The target owns the container: from here on, forward only."""
        self.session.call("commit", migration_id=self.journal["id"], **self.where)
        self.write("commit")
        _call_hook(self.hook, "commit")

    def cleanup(self) -> None:
        """The source's stopped tasks killed and the container removed (or kept, stopped); the addresses
        announced once more, past the neighbours' ARP locktime."""
        t0 = time.monotonic()
        self.write("cleanup")
        _finish_source(self.manager, self.name, self.journal)
        if self.live:
            try:
                self.result["announced"] = self.session.call("announce", **self.where)
            except OvzError:
                pass
        self.timings["cleanup"] = time.monotonic() - t0

    def undo_target(self) -> None:
        self.session.call("abort", migration_id=self.journal["id"], **self.where)

    def undo_source(self) -> None:
        _resume_source(self.manager, self.name, self.journal)


@dataclass(frozen=True)
class Phase:
    """A step of the migration, and what a failure from its start on must undo (``UNDO_ORDER``)."""

    name: str
    run: Callable[[_Run], None]
    undo: Tuple[str, ...]


# Until the commit every failure is undone; after it the migration only goes forward (recover does the same).
BEFORE_COMMIT = (
    Phase("copy", _Run.copy, ("target",)),
    Phase("predump", _Run.predump, ("target",)),
    Phase("dump", _Run.dump, ("target", "source")),
    Phase("sync", _Run.sync, ("target", "source")),
    Phase("restore", _Run.restore, ("target", "source")),
)
AFTER_COMMIT = (
    Phase("commit", _Run.commit, ()),
    Phase("cleanup", _Run.cleanup, ()),
)
# The target forgets the container before the source runs it again: never does it run on both.
UNDO_ORDER: Tuple[Tuple[str, Callable[[_Run], None]], ...] = (
    ("target", _Run.undo_target),
    ("source", _Run.undo_source),
)


def _steps(run: _Run) -> None:
    """Every phase in order, from one loop: before the commit a failure undoes what the phases so far
    need undone, and is passed on; after it, the phases only go forward."""
    run.write("copy")
    undo: List[str] = []
    try:
        for phase in BEFORE_COMMIT:
            undo += [kind for kind in phase.undo if kind not in undo]
            phase.run(run)
    except BaseException as exc:
        run.transfers.close()
        _rollback(run, [step for kind, step in UNDO_ORDER if kind in undo], exc)
        raise
    for phase in AFTER_COMMIT:
        phase.run(run)


def _free_port() -> int:
    """A TCP port free on this host's loopback now (for the page server of a lazy dump)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tasks_stopped(manager: ContainerManager, name: str) -> bool:
    """After a failed dump: are the container's tasks left stopped (so they need resume_stopped)?"""
    runtime = manager.runtime(name)
    if runtime is None:
        return False
    try:
        with open("/proc/%d/stat" % runtime.init_pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except OSError:
        return False


def _rollback(run: _Run, steps: List[Callable[[_Run], None]], error: BaseException) -> None:
    """Undo the phases that ran (``steps``, in ``UNDO_ORDER``): the target forgets the container, the
    source runs it again. What could not be undone stays in the journal for the next run (or recover)."""
    manager, name, journal = run.manager, run.name, run.journal
    problems = []
    for step in steps:
        try:
            step(run)
        except (OvzError, OSError) as exc:
            problems.append("%s: %s" % ("target" if step == _Run.undo_target else "source", exc))
    if problems:
        # Keep the journal: the next run (or recover) finishes the undo.
        if isinstance(error, OvzError):
            error.args = ("%s (undo incomplete: %s)" % (error.args[0], "; ".join(problems)),) + error.args[1:]
        return
    if isinstance(error, OvzError) and error.args:
        error.args = ("%s (the migration failed in its %s phase and was undone: %s is %s here)"
                      % (error.args[0], journal.get("phase"), name, manager.status(name)),) + error.args[1:]
    clear_journal(manager, name)
