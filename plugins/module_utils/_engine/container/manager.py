# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""The container lifecycle: create, start, stop, freeze, destroy, exec.

``ContainerManager`` is the engine's front door. Each mutating method takes
the container's lock, reads the kernel's state, changes only what differs,
and undoes its own partial work if a step fails.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import time
from typing import Any, Callable, Dict, Iterator, List, NoReturn, Optional, Sequence

from ..base import faults
from ..base.errors import ContainerRunning, InvalidParameter, KernelUnsupported, NoSuchContainer, NotRoot, OvzError, StateConflict
from ..base.states import RUNNING_STATES, State
from ..kernel import idmap as ovz_idmap
from ..kernel import namespaces as ns
from ..kernel.cgroups import CgroupBackend, ContainerCgroups, cgroup_dirname, parse_proc_cgroup, select_backend, validate_cgroup_parent
from ..kernel.process import ExecResult, InitSpec, OutputPolicy, exec_in, spawn_init
from ..kernel.rootfs import RootfsSpec, find_bcd, find_lxcfs
from ..kernel import seccomp_filter
from ..kernel.storage import Storage, extract_template, validate_layout
from ..node.config import ConfigStore, ContainerConfig, ContainerLock, HostLayout, validate_labels, validate_name
from ..node.templates import resolve_template
from ..resources import limits as ovz_limits
from ..resources import network
from ..resources import quota as ovz_quota
from .bringup import BringUp
from .runtime import PAYLOAD, Runtime

STATES = tuple(State)
# A checkpoint's description in its images directory; in dump/<name> it makes a stopped container suspended.
CHECKPOINT_META = "ovz-checkpoint.json"
BOOT_MARKER = "booted"
CREATING_MARKER = "creating"  # in run/<name>/ while a create is under way
HALT_MARKER = "halted"
# run/<name>/volatile: room for the markers, user_beancounters and 1-2 MiB of console output.
VOLATILE_OPTIONS = "size=2m,nr_inodes=64,mode=0755"
HOSTNAME_MAX = 64


def validate_hostname(hostname: str) -> str:
    if not isinstance(hostname, str) or len(hostname) > HOSTNAME_MAX or not hostname or \
            any(not (c.isalnum() or c in "-.") for c in hostname) or hostname[0] in "-.":
        raise InvalidParameter("%r is not a valid hostname" % (hostname,), "hostname")
    return hostname


def validate_unprivileged(value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidParameter("must be a boolean, got %r" % (value,), "unprivileged")
    return value


def validate_init(init: str) -> str:
    if not isinstance(init, str) or not init.startswith("/") or "\0" in init:
        raise InvalidParameter("must be an absolute path inside the container, got %r" % (init,), "init")
    return init


def require_root() -> None:
    """Refuse a caller that is not root: else every call fails somewhere deep (a PermissionError, a
    traceback) or, worse, reads an unreadable data dir as an empty node."""
    if os.geteuid() != 0:
        raise NotRoot("containers are managed as root on their node: run this as root (in a play, become: true); "
                      "this process runs as uid %d" % os.geteuid())


class ContainerManager:
    """All containers of one node (``data_dir``), with their cgroups under ``cgroup_parent``."""

    def __init__(self, data_dir: str = "/var/lib/ovz", cgroup_parent: str = "auto",
                 backend: Optional[CgroupBackend] = None) -> None:
        require_root()
        self.layout = HostLayout(data_dir)
        self.cgroup_parent = validate_cgroup_parent(cgroup_parent)
        self.store = ConfigStore(self.layout)
        self.idmap = ovz_idmap.IdmapPool(self.layout.data_dir)
        self._backend = backend
        self._seccomp_programs: Dict[Any, seccomp_filter.Program] = {}

    # -- helpers ------------------------------------------------------------------
    @property
    def backend(self) -> CgroupBackend:
        if self._backend is None:
            self._backend = select_backend()
        return self._backend

    def lock(self, name: str) -> ContainerLock:
        return ContainerLock(self.layout, name)

    def storage(self, config: ContainerConfig) -> Storage:
        return Storage(config.layout, self.layout.private(config.name), self.layout.root(config.name),
                       mount_options=ovz_quota.mount_options(config))

    def state_path(self, name: str) -> str:
        return os.path.join(self.layout.run(name), "state.json")

    def runtime(self, name: str) -> Optional[Runtime]:
        return Runtime.load(self.state_path(name))

    def cgroups_for(self, runtime: Runtime) -> ContainerCgroups:
        return ContainerCgroups(self.backend, runtime.cgroups)

    def load(self, name: str) -> ContainerConfig:
        config = self.store.load(validate_name(name))
        if config is None:
            raise NoSuchContainer("container %s does not exist" % name, "name")
        return config

    def exists(self, name: str) -> bool:
        return self.store.exists(validate_name(name))

    # -- state --------------------------------------------------------------------
    def status(self, name: str) -> State:
        validate_name(name)
        if not self.store.exists(name):
            return State.ABSENT
        runtime = self.runtime(name)
        if runtime is None or not runtime.alive():
            return State.SUSPENDED if os.path.isfile(os.path.join(self.layout.dump(name), CHECKPOINT_META)) else State.STOPPED
        return State.FROZEN if self.cgroups_for(runtime).frozen() else State.RUNNING

    def facts(self, name: str, beancounters: bool = False, persist: bool = True,
              warn: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
        """The container's facts; ``beancounters`` adds its beancounter table when it runs
        (``persist``: keep maxheld and refresh the snapshot inside; false in check mode;
        ``warn``: as for ``beancounter_table``)."""
        state = self.status(name)
        # Facts leave the engine: plain strings (Ansible's variable storage refuses a str subclass).
        if state == State.ABSENT:
            return {"name": name, "state": state.value}
        config = self.load(name)
        runtime = self.runtime(name) if state in RUNNING_STATES else None
        storage = self.storage(config)
        facts: Dict[str, Any] = {
            "name": name,
            "state": state.value,
            "hostname": config.hostname,
            "layout": config.layout,
            "init": config.init,
            "onboot": config.onboot,
            "bootorder": config.bootorder,
            "labels": dict(config.labels),
            "template": config.template,
            "diskspace": config.diskspace,
            "diskinodes": config.diskinodes,
            "init_pid": runtime.init_pid if runtime else None,
            "cgroups": runtime.cgroups if runtime else {},
            "ip_address": list(config.network.get("ip_address", [])),
            "unprivileged": config.unprivileged,
            "idmap": self.idmap.lookup(name) if config.unprivileged else None,
            "paths": {
                "config": self.layout.conf(name),
                "private": self.layout.private(name),
                "root": self.layout.root(name),
                "run": self.layout.run(name),
                "dump": self.layout.dump(name),
            },
        }
        if runtime:
            facts["started_at"] = runtime.started_at
        if state in RUNNING_STATES and storage.mounted():
            facts["disk_usage"] = storage.usage()
        # Limits and beancounters (issue 5).
        facts["limits"] = ovz_limits.effective(config.limits)
        if beancounters and runtime is not None:
            facts["beancounters"] = self.beancounter_table(name, runtime, config.limits, persist=persist, warn=warn)
        return facts

    def beancounter_table(self, name: str, runtime: Runtime, limits: Dict[str, Any], persist: bool = True,
                          quick: bool = False,
                          warn: Optional[Callable[[str], None]] = None) -> Dict[str, Dict[str, Any]]:
        """The running container's beancounter table, measured now (``beancounters.collect``).

        With ``persist`` (false in check mode) its maxheld bookkeeping is kept and the table is
        written where root inside reads it, /run/ovz/user_beancounters; a failed write raises an
        OvzError naming the file, or is handed to ``warn`` when given. ``quick``: see ``collect``.
        """
        from ..resources.beancounters import collect, publish
        table = collect(self.cgroups_for(runtime), runtime.init_pid, limits, state_dir=self.layout.run(name),
                        ctid=name, persist=persist, quick=quick)
        if persist:
            try:
                publish(self.layout.guest(name), runtime.init_pid, table, name)
            except OvzError as exc:
                if warn is None:
                    raise
                warn(str(exc))
        return table

    def list(self) -> List[Dict[str, Any]]:
        return [self.facts(name) for name in self.layout.names()]

    # -- create / destroy -------------------------------------------------------------
    def plan_create(self, name: str, template: Optional[str], layout: str = "image",
                    hostname: Optional[str] = None, init: str = "/sbin/init", onboot: bool = False,
                    diskspace: Optional[Sequence[Optional[int]]] = None,
                    diskinodes: Optional[Sequence[Optional[int]]] = None,
                    unprivileged: bool = True) -> ContainerConfig:
        """Validate everything a create needs, touching nothing; returns the config it would write.

        New containers are unprivileged unless asked otherwise (``unprivileged=False``)."""
        validate_name(name)
        validate_unprivileged(unprivileged)
        validate_layout(layout)
        validate_init(init)
        if hostname is not None:
            validate_hostname(hostname)
        if not template:
            raise InvalidParameter("a template is required to create container %s" % name, "template")
        source = resolve_template(template, self.layout.templates())
        space = list(diskspace) if diskspace else [None, None]
        inodes = list(diskinodes) if diskinodes else [None, None]
        if layout == "image" and space[1] is not None and space[1] < (16 << 20):
            raise InvalidParameter("an image needs at least 16M, got %d bytes" % space[1], "diskspace")
        if layout == "image" and inodes[1] is not None and inodes[1] < 64:
            raise InvalidParameter("an image needs at least 64 inodes, got %d" % inodes[1], "diskinodes")
        return ContainerConfig(name=name, layout=layout, hostname=hostname or name, init=init, onboot=onboot,
                               template=source, diskspace=space, diskinodes=inodes, unprivileged=unprivileged)

    def create(self, name: str, template: Optional[str], **options: Any) -> ContainerConfig:
        config = self.plan_create(name, template, **options)
        # Directories this call brings into being; a failed create removes them again.
        skeleton = [self.layout.data_dir] + [os.path.join(self.layout.data_dir, d)
                                             for d in ("conf", "private", "root", "run")]
        missing = [d for d in skeleton if not os.path.isdir(d)]
        try:
            with self.lock(name):
                if self.store.exists(name):
                    raise StateConflict("container %s already exists" % name, "name")
                storage = self.storage(config)
                creating = os.path.join(self.layout.run(name), CREATING_MARKER)
                if os.path.exists(creating):
                    # A create of this name was killed half-way: what it left is ours to remove.
                    storage.umount()
                    storage.destroy()
                if os.path.lexists(storage.private):
                    raise StateConflict("the private area %s already exists; remove it or choose another name"
                                        % storage.private, "name")
                try:
                    with open(creating, "w"):
                        pass
                    storage.create(config.diskspace[1], config.diskinodes[1])
                    faults.point("create.storage")
                    storage.mount()
                    try:
                        extract_template(config.template, storage.root)
                        faults.point("create.extract")
                        if config.unprivileged:
                            self._make_unprivileged(name, storage)
                    finally:
                        storage.umount()
                    self.store.save(config)
                    os.unlink(creating)
                except BaseException:
                    storage.umount()
                    storage.destroy()
                    self.idmap.release(name)
                    raise
        except BaseException:
            if not self.store.exists(name):
                self.discard_run_dir(name, keep_lock=False)
                for directory in reversed(missing):
                    try:
                        os.rmdir(directory)
                    except OSError:
                        pass
            raise
        return config

    def destroy(self, name: str, stop_running: bool = True) -> bool:
        """Remove the container and everything of it; returns False if it did not exist.

        A running (or frozen) one is stopped first, unless ``stop_running`` is false: then it is
        refused with ``ContainerRunning`` and left untouched (vzctl's "Stop it first").
        """
        validate_name(name)
        with self.lock(name):
            if not self.store.exists(name):
                self.discard_run_dir(name, keep_lock=False)
                return False
            config = self.load(name)
            state = self.status(name)
            if not stop_running and state in RUNNING_STATES:
                raise ContainerRunning("container %s is currently %s; stop it first" % (name, state), "name")
            self.stop_locked(config, timeout=config.stop_timeout)
            faults.point("destroy.stopped")
            self.storage(config).destroy()
            self.idmap.release(name)
            shutil.rmtree(self.layout.dump(name), ignore_errors=True)
            for action in ("restore", "lazy-pages"):
                try:
                    os.unlink(self.layout.failure_log(name, action))
                except FileNotFoundError:
                    pass
            faults.point("destroy.storage")
            self.store.remove(name)
            self.discard_run_dir(name, keep_lock=False)
            if not self.layout.names():
                # No container left, so no kernel object has a name of it: the identity goes with the last
                # container, as the data dir's other traces do (it is derived again, the same, at the next start).
                self.layout.forget_node_id()
        return True

    def prepare_volatile(self, name: str) -> None:
        """A fresh tmpfs on run/<name>/volatile with guest/ and console.log, before a start or a restore.

        Both are bound writable into the container (/run/ovz, /dev/console and the init's output):
        on the host's disk they would let it write past its disk quota. The tmpfs caps them, and
        its pages are charged to the memory of the container that writes them.
        """
        run_dir = self.layout.run(name)
        volatile = self.layout.volatile(name)
        self._release_volatile(name)
        os.makedirs(volatile, mode=0o755, exist_ok=True)
        ns.mount("ovz-volatile", volatile, "tmpfs", ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC, VOLATILE_OPTIONS)
        os.mkdir(self.layout.guest(name), 0o755)
        os.close(os.open(self.layout.console(name), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        link = os.path.join(run_dir, "console.log")
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(os.path.join("volatile", "console.log"), link)   # where operators look for it

    def _release_volatile(self, name: str) -> None:
        volatile = self.layout.volatile(name)
        while os.path.ismount(volatile):
            ns.umount(volatile, ns.MNT_DETACH)

    def discard_run_dir(self, name: str, keep_lock: bool = True) -> None:
        """Empty run/<name> (runtime state, markers, the volatile tmpfs), keeping its lock file unless
        ``keep_lock`` is false, when the directory goes too. Nothing in it outlives a stopped container."""
        run_dir = self.layout.run(name)
        if not os.path.isdir(run_dir):
            return
        self._release_volatile(name)
        for entry in os.listdir(run_dir):
            if keep_lock and entry == "lock":
                continue
            path = os.path.join(run_dir, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        if not keep_lock:
            try:
                os.rmdir(run_dir)
            except OSError:
                pass

    def update(self, name: str, **changes: Any) -> Dict[str, Any]:
        """Change stored settings (hostname, onboot, init, ...); returns {key: (old, new)}."""
        with self.lock(name):
            config = self.load(name)
            diff = {}
            for key, value in changes.items():
                if value is None:
                    continue
                if key == "hostname":
                    validate_hostname(value)
                if key == "init":
                    validate_init(value)
                if key == "labels":
                    value = validate_labels(value)
                if key == "seccomp_allow":
                    value = seccomp_filter.validate_allowed(value)
                if getattr(config, key) != value:
                    diff[key] = (getattr(config, key), value)
                    setattr(config, key, value)
            if diff:
                state = self.status(name)
                if "hostname" in diff and state == State.FROZEN:
                    # Set inside by a command, which a frozen container would never run.
                    raise StateConflict("container %s is frozen; its hostname can change once it is thawed" % name,
                                        "hostname")
                self.store.save(config)
                if "hostname" in diff and state == State.RUNNING:
                    self._set_live_hostname(name, config.hostname)
        return diff

    # -- unprivileged (issue 9) -----------------------------------------------------------------
    def _make_unprivileged(self, name: str, storage: Storage) -> Dict[str, Any]:
        """Reserve the container's id block; where idmapped mounts are refused, shift its mounted tree into it."""
        mode = ovz_idmap.FORCE_MODE or ("idmapped" if ovz_idmap.idmap_supported(storage.root) else "shifted")
        entry = self.idmap.allocate(name, mode)
        if entry["mode"] == "shifted":
            ovz_idmap.shift_tree(storage.root, entry["uid"])
        return entry

    def set_unprivileged(self, name: str, unprivileged: bool) -> bool:
        """Make a stopped container unprivileged (or privileged again); returns whether it changed."""
        validate_unprivileged(unprivileged)
        with self.lock(name):
            config = self.load(name)
            if config.unprivileged == unprivileged:
                return False
            state = self.status(name)
            if state != State.STOPPED:
                raise StateConflict("container %s is %s; unprivileged can only be changed while it is stopped"
                                    % (name, state), "unprivileged")
            storage = self.storage(config)
            storage.mount()
            try:
                if unprivileged:
                    self._make_unprivileged(name, storage)
                else:
                    entry = self.idmap.lookup(name)
                    if entry is not None and entry.get("mode") == "shifted":
                        ovz_idmap.shift_tree(storage.root, -int(entry["uid"]))
            finally:
                storage.umount()
            config.unprivileged = unprivileged
            self.store.save(config)
            if not unprivileged:
                self.idmap.release(name)
        return True

    def prepare_userns(self, config: ContainerConfig, storage: Storage, cgroups: ContainerCgroups,
                       host_files: Sequence[str]) -> Dict[str, Any]:
        """Unprivileged start or restore: the container's user namespace and idmapped root (descriptors
        the caller closes; no tree where its files are shifted), with ``host_files`` and the payload
        cgroups given to its root."""
        entry = self.idmap.lookup(config.name) or self._make_unprivileged(config.name, storage)
        first = int(entry["uid"])
        ovz_idmap.chown_for(host_files, first)
        ovz_idmap.delegate_cgroups([os.path.join(path, PAYLOAD) for path in cgroups.paths.values()], first)
        userns_fd = ovz_idmap.make_userns(first, int(entry.get("count", ovz_idmap.ID_COUNT)))
        tree_fd = None
        if entry.get("mode") == "idmapped":
            try:
                tree_fd = ovz_idmap.idmapped_tree(storage.root, userns_fd)
            except OSError as exc:
                os.close(userns_fd)
                raise KernelUnsupported("an idmapped mount of %s is refused here (%s); make the container privileged "
                                        "and unprivileged again while stopped to shift its files instead"
                                        % (storage.root, exc.strerror), "unprivileged") from None
        return {"userns_fd": userns_fd, "root_tree_fd": tree_fd, "idmap": entry}

    def _set_live_hostname(self, name: str, hostname: str) -> None:
        result = self.exec(name, ["hostname", hostname])
        if result.rc != 0:
            raise OvzError("setting the hostname inside failed: %s" % result.stderr.decode(errors="replace").strip(),
                           "hostname")
        self.exec(name, ["sh", "-c", 'test -L /etc/hostname || echo "$0" > /etc/hostname', hostname])

    # -- start / stop -------------------------------------------------------------------
    def start(self, name: str, wait_boot: bool = False, timeout: float = 60.0,
              before_go: Optional[Callable[[int], None]] = None,
              resume: Optional[Callable[[str], Any]] = None) -> bool:
        """Start the container; returns False if it was already running.

        A suspended container comes back through ``resume`` (called with its name, after this
        call let go of its lock), which the layer above supplies: ``ops.lifecycle.start`` resumes
        it with its memory, as ``vzctl start`` does (it booted before: ``wait_boot`` and ``before_go``
        do not apply). Without ``resume`` a suspended container is refused, its state kept.
        """
        with self.lock(name):
            config = self.load(name)
            state = self.status(name)
            if state in RUNNING_STATES:
                return False
            if state == State.SUSPENDED and resume is None:
                raise StateConflict("container %s is suspended; resume it (ovzctl start or resume) to start it with "
                                    "its memory" % name, "state")
            if state != State.SUSPENDED:
                self.tear_down_remains(config)
                self._start_locked(config, before_go)
        if state == State.SUSPENDED and resume is not None:
            resume(name)
            return True
        if wait_boot:
            self.wait_booted(name, timeout)
        return True

    def _start_locked(self, config: ContainerConfig, before_go: Optional[Callable[[int], None]]) -> Runtime:
        name = config.name
        guest_dir = self.layout.guest(name)
        console = self.layout.console(name)
        with BringUp(self, config, "start") as bringup:
            storage, cgroups = bringup.prepare()
            spec = InitSpec(
                argv=[config.init],
                rootfs=RootfsSpec(root=storage.root, console=console,
                                  guest_dir=guest_dir, hostname=config.hostname,
                                  lxcfs=find_lxcfs(self.layout.data_dir),
                                  beancounters=find_bcd(self.layout.data_dir, name),
                                  devices=ovz_quota.rootfs_devices(config, storage)),
                cgroup_procs=cgroups.payload_procs(PAYLOAD),
                cgroup2_dir=cgroups.payload_cgroup2(PAYLOAD),
                dropped_capabilities=ns.DEFAULT_DROPPED_CAPABILITIES,
                stdout_path=console,
                seccomp=self.seccomp_program(config),
            )
            bringup.network()
            if config.unprivileged:
                userns = self.prepare_userns(config, storage, cgroups, [guest_dir, console])
                spec.userns_fd, spec.root_tree_fd, spec.rootfs.userns = userns["userns_fd"], userns["root_tree_fd"], True
            try:
                init_pid = spawn_init(spec, self._network_before_go(config, storage.root, before_go))
            finally:
                for fd in (spec.userns_fd, spec.root_tree_fd):
                    if fd is not None:
                        os.close(fd)
            runtime = bringup.record(init_pid, cgroups, console)
            self.beancounter_table(name, runtime, config.limits, quick=True)   # the table inside, from the start
            return runtime

    def wait_booted(self, name: str, timeout: float = 60.0) -> None:
        """Wait until the container's startup scripts have run (they touch /run/ovz/booted)."""
        marker = os.path.join(self.layout.guest(name), BOOT_MARKER)
        runtime = self.runtime(name)
        began = time.monotonic()
        checked = began
        while not os.path.exists(marker):
            now = time.monotonic()
            if now - checked > 0.05:
                checked = now
                if runtime is None or not runtime.alive():
                    raise OvzError("container %s stopped while booting; see %s"
                                   % (name, self.layout.console(name)))
            if now - began > timeout:
                raise OvzError("container %s did not finish booting within %.0f s" % (name, timeout), "timeout")
            # A short, flat poll: boots of small containers take milliseconds.
            time.sleep(0.0005 if now - began < 0.2 else 0.01)

    def stop(self, name: str, timeout: Optional[float] = None) -> bool:
        """Stop gracefully; returns False if the container was not running."""
        with self.lock(name):
            config = self.load(name)
            return self.stop_locked(config, timeout if timeout is not None else config.stop_timeout)

    def stop_locked(self, config: ContainerConfig, timeout: float) -> bool:
        """``stop`` for a caller that holds the container's lock already; returns whether it ran.

        What a dead container left is torn down either way (``tear_down_remains``)."""
        runtime = self.runtime(config.name)
        was_running = runtime is not None and runtime.alive()
        if was_running and runtime is not None:
            cgroups = self.cgroups_for(runtime)
            if cgroups.frozen():
                cgroups.thaw()
            self._halt(runtime, config, timeout)
            faults.point("stop.halt")
        self.tear_down_remains(config)
        return was_running

    @contextlib.contextmanager
    def while_stopped(self, config: ContainerConfig, stop: bool = True) -> Iterator[bool]:
        """Run the block with the container stopped, and start it again afterwards, failed block or not.

        The caller holds the container's lock across the block. The start reads the configuration
        as the block left it saved. With ``stop`` false the block runs as things are (yields False).
        """
        if not stop:
            yield False
            return
        self.stop_locked(config, timeout=config.stop_timeout)
        try:
            yield True
        finally:
            self._start_locked(self.load(config.name), None)

    def _halt(self, runtime: Runtime, config: ContainerConfig, timeout: float) -> None:
        """The init's own shutdown signal, then the timeout, then SIGKILL to the whole cgroup.

        Inits that report the end of their shutdown scripts (``/run/ovz/halted``,
        as the busybox template does) are not waited for beyond that point.
        """
        signum = halt_signal_for(runtime.init_pid, config.halt_signal)
        halted = os.path.join(self.layout.guest(config.name), HALT_MARKER)
        try:
            pidfd = os.pidfd_open(runtime.init_pid)
        except ProcessLookupError:
            return
        try:
            if not runtime.alive():
                return
            os.kill(runtime.init_pid, signum)
            deadline = time.monotonic() + max(0.0, timeout)
            step = 0.001
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or os.path.exists(halted):
                    return
                if select.select([pidfd], [], [], min(step, remaining))[0]:
                    return
                step = min(step * 2, 0.05)
        finally:
            os.close(pidfd)

    def tear_down_remains(self, config: ContainerConfig) -> None:
        """Remove what a dead (or killed) container left: processes, cgroups, network, mounts, run dir.

        The caller holds the container's lock and knows its init is gone (or is to go: what
        still runs in its cgroups is killed)."""
        runtime = self.runtime(config.name)
        foreign = False
        if runtime is not None:
            cgroups = self.cgroups_for(runtime)
            # A dead container of a start before data dirs had an identity left the bare ovz-<name>,
            # which a container of that name of another data dir may hold now: what runs in it is
            # not ours to kill (ours died with its init, whose pid namespace took them along).
            foreign = not runtime.alive() and \
                all(os.path.basename(path) == cgroup_dirname(config.name, None) for path in runtime.cgroups.values()) \
                and _stays_populated(cgroups)
        else:
            # A start killed before it recorded its state: its cgroups are
            # where this call's cgroup_parent would have put them, named for this node
            # (never the bare ovz-<name> of older starts: another data dir's container may have it).
            backend = self.backend
            cgroups = ContainerCgroups(backend, backend.container_paths(
                backend.resolve_parent(self.cgroup_parent), config.name, self.layout.node_id()))
        if cgroups.exists() and not foreign:
            cgroups.kill_all()
            cgroups.remove()
            faults.point("stop.cgroups")
        network_error: Optional[OvzError] = None
        try:
            self.tear_down_network(config)
        except OvzError as exc:
            network_error = exc  # finish the cleanup, then report it
        self.storage(config).umount()
        self.discard_run_dir(config.name)
        if network_error is not None:
            raise network_error

    # -- network (issue 4): set up before init runs, torn down with the container -----------
    def _network_before_go(self, config: ContainerConfig, root: str,
                           before_go: Optional[Callable[[int], None]]) -> Optional[Callable[[int], None]]:
        """``before_go`` for spawn_init: the container's network first, then the caller's hook."""
        if not config.network:
            return before_go
        state_path = network.runtime_path(self.layout.run(config.name))

        node = self.layout.node_id()

        def hook(init_pid: int) -> None:
            network.setup_network(config.name, config.network, init_pid, self.layout.data_dir, root, state_path,
                                  node=node)
            if before_go is not None:
                before_go(init_pid)
        return hook

    def tear_down_network(self, config: ContainerConfig) -> None:
        """Remove the host side of the container's network (host end, routes, proxy entries, nft, netns name)."""
        runtime = network.load_runtime(network.runtime_path(self.layout.run(config.name)))
        if runtime is None and not config.network:
            return
        network.teardown_network(config.name, config.network, runtime, self.layout.data_dir, self.layout.node_id())

    def restart(self, name: str, wait_boot: bool = False, timeout: float = 60.0,
                resume: Optional[Callable[[str], Any]] = None) -> None:
        """Stop, then start (``resume``: as for ``start``)."""
        self.stop(name)
        self.start(name, wait_boot=wait_boot, timeout=timeout, resume=resume)

    # -- freeze ---------------------------------------------------------------------------
    def freeze(self, name: str) -> bool:
        with self.lock(name):
            state = self.status(name)
            if state == State.FROZEN:
                return False
            if state == State.ABSENT:
                raise NoSuchContainer("container %s does not exist" % name, "name")
            if state != State.RUNNING:
                raise StateConflict("container %s is %s; only a running container can be frozen" % (name, state),
                                    "state")
            runtime = self.runtime(name)
            if runtime is None:
                raise StateConflict("container %s stopped meanwhile" % name, "state")
            self.cgroups_for(runtime).freeze()
            return True

    def thaw(self, name: str) -> bool:
        with self.lock(name):
            if self.status(name) != State.FROZEN:
                return False
            runtime = self.runtime(name)
            if runtime is None:
                raise StateConflict("container %s stopped meanwhile" % name, "state")
            self.cgroups_for(runtime).thaw()
            return True

    # -- exec -----------------------------------------------------------------------------
    def path_exists_inside(self, name: str, path: str, param: str = "path") -> bool:
        """Whether ``path`` (absolute, as the running container sees it) exists in its mount namespace;
        resolved inside it, so a symlink the container planted cannot make this look at a host file."""
        if not path.startswith("/"):
            raise InvalidParameter("%s must be an absolute path inside the container, got %r" % (param, path), param)
        runtime = self.runtime(validate_name(name))
        if runtime is None or not runtime.alive():
            self._not_running(name)
        return ns.exists_in_root("/proc/%d/root" % runtime.init_pid, path, param)

    def _not_running(self, name: str) -> NoReturn:
        # A misspelt name is not a stopped container: say which it is.
        if not self.store.exists(name):
            raise NoSuchContainer("container %s does not exist" % name, "name")
        raise StateConflict("container %s is not running" % name, "name")

    def _init_cgroup_procs(self, runtime: Runtime) -> List[str]:
        """The v1 files that put a process beside the container's init in the hierarchies where the
        container has no cgroups of its own (a host's ``name=systemd``): a command entered from the host
        must not stay in its caller's cgroup there (a login session's, which the host may end)."""
        try:
            with open("/proc/%d/cgroup" % runtime.init_pid) as handle:
                init_cgroups = parse_proc_cgroup(handle.read())
        except OSError:
            return []
        hierarchies = self.backend.hierarchies
        managed = {hier.mountpoint for hier in hierarchies if hier.key in runtime.cgroups}
        result: List[str] = []
        for hier in hierarchies:
            if hier.version != 1 or hier.mountpoint in managed or hier.key not in init_cgroups:
                continue
            tasks = os.path.join(hier.mountpoint, init_cgroups[hier.key].lstrip("/"), "tasks")
            if tasks not in result:
                result.append(tasks)
        return result

    def exec(self, name: str, argv: Sequence[str], stdin: Optional[bytes] = None, capture: bool = True,
             env: Optional[Dict[str, str]] = None, timeout: Optional[float] = None, tty: bool = False,
             output: Optional[OutputPolicy] = None) -> ExecResult:
        """Run ``argv`` inside (``process.exec_in``): captured (bounded by ``output``), or relayed to the
        caller's stdio (``capture=False``), through a pty of the container's own with ``tty``."""
        if not argv:
            raise InvalidParameter("an empty command", "command")
        runtime = self.runtime(validate_name(name))
        if runtime is None or not runtime.alive():
            self._not_running(name)
        cgroups = self.cgroups_for(runtime)
        if cgroups.frozen():
            # The command would join the frozen cgroup and wait there, with its caller, until a thaw.
            raise StateConflict("container %s is frozen; thaw it first" % name, "name")
        procs = cgroups.payload_procs(PAYLOAD) + self._init_cgroup_procs(runtime)
        return exec_in(runtime.init_pid, argv, procs, cgroups.exec_cgroup2(PAYLOAD),
                       ns.DEFAULT_DROPPED_CAPABILITIES,
                       env=env, stdin=stdin, capture=capture, timeout=timeout, tty=tty, output=output,
                       seccomp=self.seccomp_program(self.load(name)))

    def seccomp_program(self, config: ContainerConfig) -> Optional[seccomp_filter.Program]:
        """The filter of the calls denied inside ``config``'s container (but its ``seccomp_allow``).

        Without libseccomp's binding a privileged container does not run at all (its root is host root, and
        the filter is much of what holds it); an unprivileged one runs unfiltered, held by its user namespace."""
        key = tuple(config.seccomp_allow or ())
        if key not in self._seccomp_programs:
            if not config.unprivileged or seccomp_filter.binding_available():
                self._seccomp_programs[key] = seccomp_filter.compile_filter(key)
            else:
                return None
        return self._seccomp_programs[key]


def _stays_populated(cgroups: ContainerCgroups, grace: float = 1.0) -> bool:
    """Whether processes remain in ``cgroups`` after ``grace`` seconds (what was leaving is gone by then)."""
    deadline = time.monotonic() + grace
    while cgroups.populated():
        if time.monotonic() > deadline:
            return True
        time.sleep(0.01)
    return False


def halt_signal_for(pid: int, configured: str = "auto") -> int:
    """The signal that makes this init shut down cleanly (like LXC's lxc.signal.halt)."""
    if configured and configured != "auto":
        return parse_signal(configured)
    try:
        with open("/proc/%d/comm" % pid) as handle:
            comm = handle.read().strip()
        exe = os.readlink("/proc/%d/exe" % pid)
    except OSError:
        return signal.SIGTERM
    if comm == "systemd" or exe.endswith("/systemd"):
        return signal.SIGRTMIN + 3          # systemd: halt
    if exe.endswith("busybox") or _is_busybox(pid):
        return signal.SIGUSR2               # busybox init: poweroff (runs ::shutdown: actions)
    return signal.SIGPWR                    # sysvinit and others, as LXC does


def _is_busybox(pid: int) -> bool:
    """Busybox applets are often hard links (``/sbin/init``), so look at the binary itself."""
    import mmap
    try:
        with open("/proc/%d/exe" % pid, "rb") as handle:
            with mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ) as data:
                return data.find(b"BusyBox v") >= 0
    except (OSError, ValueError):
        return False


def parse_signal(value: str) -> int:
    text = str(value).upper()
    if text.startswith("SIGRTMIN+"):
        return signal.SIGRTMIN + int(text[len("SIGRTMIN+"):])
    if text.isdigit():
        return int(text)
    name = text if text.startswith("SIG") else "SIG" + text
    try:
        return int(getattr(signal, name))
    except AttributeError:
        raise InvalidParameter("unknown signal %r" % (value,), "halt_signal") from None
