# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Live migration of a container to another host over SSH, like ``vzmigrate --online``.

Phases (each one's undo in brackets)::

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
    transfer   lazy migration only: the memory pages follow the restore,
               faulted in from the source's page server                    [same]
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
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from ..base import faults
from ..base.errors import InvalidParameter, KernelUnsupported, OvzError, StateConflict
from ..node.config import ContainerConfig, validate_name
from ..resources import network
from .remote import RemoteSession, Target, Unreachable
from .migration_shared import (IMAGES, LOCK, SPACE_MARGIN, FileLock, boot_id, checkpointer_of, clear_journal,
                               local_criu, lxcfs_views, portable_config, read_journal, source_id, write_journal)
from .migration_transfer import (FinalSync, ImageSync, finish_rsyncs, kill_rsyncs, pack_images, pages_bytes, rsync,
                                 start_rsyncs, tree_bytes)

if TYPE_CHECKING:  # pragma: no cover - annotations only: the code imports these where it needs them
    from ..container.manager import ContainerManager

LAZY_WAIT = 60.0               # how long a recovery waits for an interrupted lazy transfer to end


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
                forward = status["state"] in ("running", "frozen") and incoming.get("id") == journal["id"]
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
    if journal.get("stopped") and manager.status(name) in ("running", "frozen"):
        checkpointer = checkpointer_of(manager)
        if checkpointer.stopped_after_dump(name):
            checkpointer.resume_stopped(name)
    if manager.status(name) == "frozen":
        manager.thaw(name)


def _finish_source(manager: ContainerManager, name: str, journal: Dict[str, Any]) -> None:
    if journal.get("stopped") and manager.exists(name):
        checkpointer_of(manager).finish_stopped(name)
    if journal.get("keep_source"):
        if manager.status(name) in ("running", "frozen"):
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
    if state == "suspended":
        # An offline migration would copy its disk but not its memory, and leave that behind.
        raise StateConflict("container %s is suspended: resume it before migrating it (its memory is in %s)"
                            % (name, manager.layout.dump(name)), "name")
    session = RemoteSession(target)
    try:
        session.open()
    except Unreachable:
        if state == "absent":
            raise StateConflict("container %s does not exist here" % name, "name") from None
        raise
    dog = _Watchdog(manager, name, [session.control_dir or ""], converge=not check_mode)
    if watchdog:
        dog.start()
    try:
        if state == "absent":
            remote = session.call("status", data_dir=target.data_dir, cgroup_parent=target.cgroup_parent, name=name)
            if remote["state"] != "absent" and not remote.get("incoming"):
                result["target_state"] = remote["state"]
                return result      # already migrated: nothing to do
            raise StateConflict("container %s does not exist here (nor on %s)" % (name, target.host), "name")
        config = manager.load(name)
        if config.unprivileged:
            raise KernelUnsupported("container %s is unprivileged: checkpoint, restore and migration of unprivileged "
                                    "containers are not supported (set unprivileged: false while stopped)" % name,
                                    "unprivileged")
        live = state in ("running", "frozen")
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
            result["lazy"] = supported
        _call_hook(hook, "preflight")
        result["changed"] = True
        if check_mode:
            return result
        with FileLock(os.path.join(manager.layout.dump(name), LOCK)):
            _steps(manager, name, config, target, session, result, live, pre_dump_iterations, keep_source,
                   tcp_established, hook)
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


def _steps(manager: ContainerManager, name: str, config: ContainerConfig, target: Target, session: RemoteSession,
           result: Dict[str, Any], live: bool, iterations: Optional[int], keep_source: bool, tcp_established: bool,
           hook: Optional[Hook]) -> None:
    timings = result["timings"]
    sizes = result["sizes"]
    where: Dict[str, Any] = {"data_dir": target.data_dir, "cgroup_parent": target.cgroup_parent, "name": name}
    lazy = bool(result.get("lazy"))
    journal: Dict[str, Any] = {"id": uuid.uuid4().hex, "name": name, "target": dict(target.__dict__),
                               "keep_source": keep_source, "stopped": False, "froze": False, "lazy": lazy,
                               "started": time.time()}
    local_images = os.path.join(manager.layout.dump(name), IMAGES)
    storage = manager.storage(config)
    image = config.layout == "image"
    source_private = (storage.private.rstrip("/") + "/")
    write_journal(manager, journal, "copy")
    try:
        # -- copy: config and private area while the container runs -----------------------
        t0 = time.monotonic()
        paths = session.call("prepare", config=portable_config(manager, config), migration_id=journal["id"],
                             source=source_id(manager), live=live, **where)
        if image:
            image_sync = ImageSync(storage.image, target, os.path.join(paths["private"], "root.img"),
                                   session.control_path)
            sizes["copied"] = image_sync.send()
        else:
            sizes["copied"] = rsync(source_private, target, paths["private"] + "/", session.control_path,
                                    ["--delete", "-S"], allow_vanished=live)
        timings["copy"] = time.monotonic() - t0
        _call_hook(hook, "copy")
        # -- pre-dumps ------------------------------------------------------------------
        checkpointer = checkpointer_of(manager) if live else None   # ``is not None``: ``live``
        parent: Optional[str] = None
        predumps: List[int] = []
        if lazy:
            # Post-copy: the memory follows the restore, nothing to copy before.
            if iterations:
                result.setdefault("warnings", []).append(
                    "pre_dump_iterations: %d pre-dumps were asked, but this migration is lazy (its memory follows the "
                    "restore), so none was made; give lazy: false for pre-copy" % iterations)
            iterations = 0
        elif iterations is None:
            iterations = DEFAULT_PRE_DUMPS
        if checkpointer is not None and iterations and not checkpointer.criu.feature("mem_dirty_track"):
            # CRIU's pre-dumps need the kernel's soft-dirty bits (CONFIG_MEM_SOFT_DIRTY).
            result.setdefault("warnings", []).append(
                "pre-dumps skipped: this kernel cannot track dirty memory (criu check --feature mem_dirty_track "
                "fails; CONFIG_MEM_SOFT_DIRTY is off), so all memory is copied while the container is frozen")
            iterations = 0
        if checkpointer is not None and iterations:
            write_journal(manager, journal, "predump")
            t0 = time.monotonic()
            os.makedirs(local_images, mode=0o700, exist_ok=True)
            for index in range(1, iterations + 1):
                images = os.path.join(local_images, "pre%d" % index)
                os.makedirs(images, mode=0o700)
                checkpointer.pre_dump(name, images, parent_dir=parent)
                written = pages_bytes(images)
                predumps.append(written)
                sizes.setdefault("predump_sent", []).append(
                    rsync(images, target, paths["images"] + "/", session.control_path, ["--whole-file"]))
                parent = images   # absolute: the checkpointer makes it relative to the next images dir
                _call_hook(hook, "predump")
                if written < SMALL_PAGES or (len(predumps) > 1 and written > predumps[-2] * SHRINK):
                    break
            timings["predump"] = time.monotonic() - t0
        sizes["predump"] = predumps
        result["pre_dump_iterations"] = len(predumps)
        ports = None
        if lazy:
            # The target's lazy-pages daemon reaches the page server here through the ssh master.
            local_port = _free_port()
            ports = (local_port, session.forward_to_here(local_port))
        dumped: Dict[str, Any] = {}
        final = os.path.join(local_images, "final")
        inline: Optional[List[List[str]]] = None
        we_froze = False
        if checkpointer is not None:
            checkpointer.criu.feature("network_lock_nftables")   # asked now (and cached), not while frozen
            journal["stopped"] = True
            write_journal(manager, journal, "dump")
        frozen_at = time.monotonic()
        if live:
            we_froze = manager.freeze(name)
        # -- what changed in the private area: copied while CRIU dumps, the files being quiescent now ----
        final_sync = FinalSync(storage, image_sync if image else None, source_private, paths["private"] + "/",
                                target, session.control_path)
        pending: List[Tuple[subprocess.Popen, str]] = []
        try:
            if checkpointer is not None:
                # -- final dump; the tasks stay stopped here ------------------------------------------------
                os.makedirs(final, mode=0o700, exist_ok=True)
                try:
                    dumped = checkpointer.dump(name, final, parent_dir=parent, leave_stopped=True,
                                               tcp_established=tcp_established,
                                               lazy_port=ports[0] if ports else None)
                except BaseException:
                    journal["stopped"] = manager.status(name) in ("running", "frozen") and \
                        _tasks_stopped(manager, name)
                    raise
                if we_froze:
                    manager.thaw(name)   # the tasks stay stopped (SIGSTOP) for finish_stopped or resume_stopped
                write_journal(manager, journal, "dump", durable=False)
                result["dump_timings"] = dumped.get("timings")
                sizes["dump"] = pages_bytes(final)
                sizes["dump_total"] = tree_bytes(final)
                timings["dump"] = time.monotonic() - frozen_at
                _call_hook(hook, "dump")
            # -- final sync: the images (small ones go inside the restore request) -----------------------
            write_journal(manager, journal, "sync", durable=not live)
            t0 = time.monotonic()
            if live:
                inline = pack_images(final)
                if inline is None:
                    pending = start_rsyncs([(final, paths["images"] + "/", ["--whole-file"])], target,
                                            session.control_path)
                else:
                    sizes["dump_sent"] = sum(len(value) * 3 // 4 for _name, kind, value in inline if kind == "file")
            sizes["final_sync_sent"] = final_sync.wait()
            if pending:
                sizes["dump_sent"] = finish_rsyncs(pending, target)[0]
                pending = []
        finally:
            final_sync.cancel()
            kill_rsyncs(pending)
        timings["sync"] = time.monotonic() - t0
        _call_hook(hook, "sync")
        # -- restore on the target -----------------------------------------------------------------
        write_journal(manager, journal, "restore")   # durable: an unreachable target then means "wait", not "resume"
        t0 = time.monotonic()
        if live:
            restored = session.call("restore", timeout=600, images_dir=os.path.join(paths["images"], "final"),
                                    tcp_established=tcp_established, lazy_port=ports[1] if ports else None,
                                    images=inline, **where)
            result["announced"] = restored.get("announced")
            timings["restore"] = time.monotonic() - t0
            result["frozen_time"] = time.monotonic() - frozen_at
            result["restore_timings"] = dict((restored.get("result") or {}).get("timings") or {},
                                             **(restored.get("steps") or {}))
        if lazy and checkpointer is not None:   # (a lazy migration is a live one)
            # -- the pages follow: the source's page server ends when the target has them all ------------
            _call_hook(hook, "transfer")
            t0 = time.monotonic()
            checkpointer.finish_lazy(dumped.get("page_server"), final)
            daemon = session.call("lazy_wait", timeout=660, images_dir=os.path.join(paths["images"], "final"), **where)
            if daemon.get("rc") != 0:
                raise OvzError("the target did not get every memory page (criu lazy-pages exit %s): %s"
                               % (daemon.get("rc"), "; ".join(daemon.get("errors") or [])), "lazy")
            timings["lazy_transfer"] = time.monotonic() - t0
        _call_hook(hook, "restore")
    except BaseException as exc:
        _rollback(manager, name, journal, session, where, exc)
        raise
    # -- commit: from here on, forward only -----------------------------------------------------
    session.call("commit", migration_id=journal["id"], **where)
    write_journal(manager, journal, "commit")
    _call_hook(hook, "commit")
    t0 = time.monotonic()
    write_journal(manager, journal, "cleanup")
    _finish_source(manager, name, journal)
    if live:
        try:
            result["announced"] = session.call("announce", **where)   # once more, past the ARP locktime
        except OvzError:
            pass
    timings["cleanup"] = time.monotonic() - t0


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


def _rollback(manager: ContainerManager, name: str, journal: Dict[str, Any], session: RemoteSession, where: Dict[str, Any],
              error: BaseException) -> None:
    """Undo every step: the target forgets the container, the source runs it again."""
    problems = []
    try:
        session.call("abort", migration_id=journal["id"], **where)
    except (OvzError, OSError) as exc:
        problems.append("target: %s" % exc)
    try:
        _resume_source(manager, name, journal)
    except (OvzError, OSError) as exc:
        problems.append("source: %s" % exc)
    if problems:
        # Keep the journal: the next run (or recover) finishes the undo.
        if isinstance(error, OvzError):
            error.args = ("%s (undo incomplete: %s)" % (error.args[0], "; ".join(problems)),) + error.args[1:]
        return
    if isinstance(error, OvzError) and error.args:
        error.args = ("%s (the migration failed in its %s phase and was undone: %s is %s here)"
                      % (error.args[0], journal.get("phase"), name, manager.status(name)),) + error.args[1:]
    clear_journal(manager, name)
