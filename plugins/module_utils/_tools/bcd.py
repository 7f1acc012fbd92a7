# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""``ovz-bcd``: the optional live beancounters view (one small host daemon per data_dir).

The kernel will not let us create ``/proc/user_beancounters`` inside a
container, so root inside reads its table at ``/run/ovz/user_beancounters``.
Without this daemon that file is a snapshot written by every ``ovz_limits``
and ``ovz_info`` call. With it, the same path is a file of a small FUSE
filesystem, and every ``open()`` computes the table at that moment
(``beancounters.collect``): current at the moment of reading.

How it fits together:

- The daemon mounts a read-only FUSE filesystem of type ``fuse.ovz-bcd`` at
  ``<data_dir>/bcd`` (one file per container: ``<data_dir>/bcd/<name>``,
  mode 0400). It speaks the kernel's FUSE protocol on ``/dev/fuse`` itself
  (no libfuse), so it keeps full control of its signals and its teardown.
- A container started while the daemon runs gets ``<data_dir>/bcd/<name>``
  bound over ``/run/ovz/user_beancounters`` by its own start (``rootfs``,
  like the LXCFS views). Containers started before the daemon, or whose bind
  went away, get it injected into their mount namespace within ``interval``
  seconds (``open_tree(OPEN_TREE_CLONE)`` on the host, then ``setns`` and
  ``move_mount`` in a forked child).
- On SIGTERM/SIGINT/SIGHUP the daemon first removes its bind from every
  container (each falls back to its snapshot file underneath, refreshed
  then), then unmounts its own mount point, removes its pid file and exits:
  no mount is left behind. After a SIGKILL, ``ovzctl bcd stop`` (or the next
  ``start``) removes what it left.
- Each ``open()`` gets a table computed after it arrived, and a reader that
  never reads costs a few KiB until it closes. Tables are computed in worker
  threads so one slow container does not stall others.
- One container's readers are bounded, as the container is a stranger: its
  opens are served in rounds, one table computation for all the opens that
  arrived meanwhile, one round at a time, rounds at least ``MIN_ROUND_GAP``
  apart (so at most ``1 / MIN_ROUND_GAP`` computations a second per container,
  however many readers hammer it); and it holds at most ``MAX_HANDLES`` open
  handles (more opens fail with EMFILE). The counts of computations per
  container are in ``<pidfile>.stats`` (``ovzctl bcd status`` shows them).

Entry points: ``ovzctl [--data-dir D] bcd start|stop|status`` (``cli.py``);
``start --foreground`` for a service manager (the ``ovz_host`` role).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import signal
import stat
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Tuple

from .._engine.base.errors import OvzError
from .._engine.base.files import atomic_write_json, read_json
from .._engine.container.manager import ContainerManager
from .._engine.kernel import namespaces as ns
from .._engine.kernel.process import process_starttime
from .._engine.kernel.rootfs import BCD_FSTYPE, BCD_MOUNT, GUEST_BEANCOUNTERS, mount_points
from .._engine.node.config import NAME_RE, HostLayout

DEFAULT_INTERVAL = 2.0
MIN_ROUND_GAP = 0.1      # seconds between the starts of two table computations of one container
MAX_HANDLES = 64         # open handles one container may hold
RETRY_AFTER = 60.0       # seconds before binding into a container where it failed is tried again
STOP_TIMEOUT = 10.0

# -- the FUSE protocol (include/uapi/linux/fuse.h), only what a read-only filesystem needs --
FUSE_LOOKUP, FUSE_FORGET, FUSE_GETATTR = 1, 2, 3
FUSE_OPEN, FUSE_READ, FUSE_STATFS, FUSE_RELEASE, FUSE_FLUSH = 14, 15, 17, 18, 25
FUSE_INIT, FUSE_OPENDIR, FUSE_READDIR, FUSE_RELEASEDIR = 26, 27, 28, 29
FUSE_ACCESS, FUSE_INTERRUPT, FUSE_DESTROY, FUSE_BATCH_FORGET = 34, 36, 38, 42
NO_REPLY = (FUSE_FORGET, FUSE_BATCH_FORGET, FUSE_INTERRUPT)
FOPEN_DIRECT_IO = 1
ROOT_ID = 1
IN_HEADER = struct.Struct("<IIQQIIIHH")       # len, opcode, unique, nodeid, uid, gid, pid, total_extlen, pad
OUT_HEADER = struct.Struct("<IiQ")            # len, error, unique
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")      # fuse_attr (88 bytes)
MINOR = 31
READ_BUFFER = 1 << 17

OPEN_TREE_CLONE = 1
UMOUNT_NOFOLLOW = 0x8


def default_paths(data_dir: str) -> Tuple[str, str, str]:
    """(mount point, pid file, log file) of a node's daemon."""
    layout = HostLayout(data_dir)
    return (os.path.join(layout.data_dir, BCD_MOUNT), os.path.join(layout.data_dir, "bcd.pid"),
            os.path.join(layout.data_dir, "bcd.log"))


# -- binds inside containers ----------------------------------------------------------------
def guest_mounts(init_pid: int) -> List[str]:
    """Filesystem types mounted at /run/ovz/user_beancounters inside the container, bottom to top."""
    return [fstype for point, fstype in mount_points("/proc/%d/mountinfo" % init_pid) if point == GUEST_BEANCOUNTERS]


def _ours_on_top(init_pid: int) -> int:
    """How many of this daemon's binds sit on top of the guest path (a container's own mount above stops the count)."""
    count = 0
    for fstype in reversed(guest_mounts(init_pid)):
        if fstype != BCD_FSTYPE:
            break
        count += 1
    return count


def _in_mount_ns(init_pid: int, action: Callable[[], None], starttime: Optional[int] = None) -> None:
    """Run ``action`` in a forked child that entered the container's mount namespace (a threaded
    process cannot setns into a mount namespace itself). Raises OSError with the child's errno.

    With ``starttime``, the namespace is checked to be that of the container's init (its pid not reused
    since): checked after the namespace is opened, so the descriptor cannot belong to another process.
    """
    fd = os.open("/proc/%d/ns/mnt" % init_pid, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if starttime is not None and process_starttime(init_pid) != starttime:
            raise OSError(errno.ESRCH, "the init %d of the container has gone" % init_pid)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 0
            try:
                ns.setns(fd, ns.CLONE_NEWNS)
                action()
            except OSError as exc:
                code = exc.errno or 1
            except BaseException:  # noqa: BLE001 - the child never returns into the daemon
                code = 1
            os._exit(code)
    finally:
        os.close(fd)
    _pid, wait_status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(wait_status)
    if code != 0:
        raise OSError(code if code > 0 else errno.EINTR, "in the mount namespace of %d: %s"
                      % (init_pid, os.strerror(code) if code > 0 else "killed"))


def attach(init_pid: int, source: str, guest_dir: str, starttime: Optional[int] = None) -> None:
    """Bind ``source`` (this daemon's file for the container) over /run/ovz/user_beancounters inside,
    replacing binds of an earlier daemon that died."""
    target = os.path.join(guest_dir, "user_beancounters")
    if not os.path.lexists(target):
        # The bind needs a file to sit on; root inside reads it again once the bind goes.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o400)
        os.close(fd)
    stale = _ours_on_top(init_pid)
    tree = ns.open_tree(source, OPEN_TREE_CLONE | os.O_CLOEXEC)
    try:
        def action() -> None:
            for _index in range(stale):
                ns.umount(GUEST_BEANCOUNTERS, ns.MNT_DETACH | UMOUNT_NOFOLLOW)
            ns.move_mount(tree, GUEST_BEANCOUNTERS)
        _in_mount_ns(init_pid, action, starttime)
    finally:
        os.close(tree)


def detach(init_pid: int, starttime: Optional[int] = None) -> int:
    """Remove this daemon's binds (live or dead) from /run/ovz/user_beancounters inside; returns how many."""
    count = _ours_on_top(init_pid)
    if count:
        def action() -> None:
            for _index in range(count):
                ns.umount(GUEST_BEANCOUNTERS, ns.MNT_DETACH | UMOUNT_NOFOLLOW)
        _in_mount_ns(init_pid, action, starttime)
    return count


# -- the daemon -----------------------------------------------------------------------------
class Tables:
    """Computes a container's table when one of its readers opens the file."""

    def __init__(self, data_dir: str) -> None:
        self.manager = ContainerManager(data_dir)

    def running(self) -> List[Tuple[str, int, int]]:
        """(name, init pid, init start time) of this node's running containers.

        Unprivileged ones keep the snapshot: their root is not the host's, which owns the view's files."""
        found = []
        for name in self.manager.layout.names():
            runtime = self.manager.runtime(name)
            if runtime is not None and runtime.alive() and not self._unprivileged(name):
                found.append((name, runtime.init_pid, runtime.init_starttime))
        return found

    def _unprivileged(self, name: str) -> bool:
        try:
            return self.manager.load(name).unprivileged
        except (OvzError, OSError, ValueError):
            return False

    def exists(self, name: str) -> bool:
        return bool(NAME_RE.fullmatch(name)) and os.path.isfile(self.manager.layout.conf(name))

    def guest_dir(self, name: str) -> str:
        return self.manager.layout.guest(name)

    def render(self, name: str) -> bytes:
        from .._engine.resources.beancounters import collect, render
        runtime = self.manager.runtime(name)
        if runtime is None or not runtime.alive():
            raise OSError(errno.ENOENT, "container %s is not running" % name)
        config = self.manager.load(name)
        # guest_dir None: the snapshot file is under this very bind; maxheld is kept as ovz_info keeps it.
        table = collect(self.manager.cgroups_for(runtime), runtime.init_pid, config.limits,
                        state_dir=self.manager.layout.run(name), guest_dir=None, ctid=name, persist=True)
        return render(table, name).encode()

    def refresh_snapshot(self, name: str) -> None:
        """Write a current snapshot under a bind that was just removed (the fallback readers see next)."""
        self.manager.facts(name, beancounters=True, persist=True)


def table_size(name: str) -> int:
    """The length of a container's table: its columns have a fixed width (values below 2**63 fit in 20
    digits), so every table of one container has the same length. The file reports it as its size:
    readers that splice (busybox cat uses sendfile) read through the page cache up to the size."""
    from .._engine.resources.beancounters import UBC_ORDER, render
    blank = {key: {"held": 0, "maxheld": 0, "barrier": None, "limit": None, "failcnt": 0} for key in UBC_ORDER}
    return len(render(blank, name).encode())


def _attr(ino: int, directory: bool, now: int, size: int = 0) -> bytes:
    mode = (stat.S_IFDIR | 0o500) if directory else (stat.S_IFREG | 0o400)
    # ino, size, blocks, atime, mtime, ctime, nsecs x3, mode, nlink, uid, gid, rdev, blksize, flags
    return ATTR.pack(ino, size, (size + 511) // 512, now, now, now, 0, 0, 0, mode, 2 if directory else 1, 0, 0, 0,
                     4096, 0)


class FuseServer:
    """A read-only FUSE filesystem: the root directory lists the node's containers, each a file."""

    def __init__(self, mountpoint: str, tables: Tables, log: Callable[[str], None]) -> None:
        self.mountpoint = mountpoint
        self.tables = tables
        self.log = log
        self.fd = -1
        self.nodes: Dict[int, str] = {}
        self.ids: Dict[str, int] = {}
        self.handles: Dict[int, Tuple[str, bytes]] = {}
        self.open_count: Dict[str, int] = {}
        self.waiting: Dict[str, List[int]] = {}     # per container: FUSE_OPEN requests for its next round
        self.scheduled: Dict[str, bool] = {}        # a round is queued or running
        self.last_round: Dict[str, float] = {}
        self.computed: Dict[str, int] = {}          # table computations per container (stats)
        self.next_fh = 1
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ovz-bcd")

    def mount(self) -> None:
        os.makedirs(self.mountpoint, mode=0o755, exist_ok=True)
        self.fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        options = "fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions" % self.fd
        try:
            ns.mount("ovz-bcd", self.mountpoint, BCD_FSTYPE, ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC | ns.MS_RDONLY,
                     options)
        except OSError:
            os.close(self.fd)
            self.fd = -1
            raise

    def unmount(self) -> None:
        if self.fd >= 0:
            try:
                ns.umount(self.mountpoint, ns.MNT_DETACH)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = -1
        self.pool.shutdown(wait=False)

    # -- replies --
    def _reply(self, unique: int, payload: bytes = b"", error: int = 0) -> None:
        data = OUT_HEADER.pack(OUT_HEADER.size + len(payload), -error, unique) + payload
        try:
            os.write(self.fd, data)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENODEV):  # interrupted request / unmounted
                raise

    def _node(self, name: str) -> int:
        with self.lock:
            if name not in self.ids:
                ino = len(self.ids) + 2
                self.ids[name] = ino
                self.nodes[ino] = name
            return self.ids[name]

    def handle_one(self) -> bool:
        """Read and answer one request; False once the filesystem is gone."""
        try:
            data = os.read(self.fd, READ_BUFFER)
        except OSError as exc:
            if exc.errno in (errno.EINTR, errno.EAGAIN, errno.ENOENT):
                return True
            if exc.errno == errno.ENODEV:
                return False
            raise
        if len(data) < IN_HEADER.size:
            return True
        _length, opcode, unique, nodeid, _uid, _gid, _pid, _ext, _pad = IN_HEADER.unpack_from(data)
        body = data[IN_HEADER.size:]
        if opcode in NO_REPLY:
            return True
        try:
            self._dispatch(opcode, unique, nodeid, body)
        except OSError as exc:
            self._reply(unique, error=exc.errno or errno.EIO)
        return True

    def _dispatch(self, opcode: int, unique: int, nodeid: int, body: bytes) -> None:
        now = int(time.time())
        if opcode == FUSE_INIT:
            major, minor, readahead, _flags = struct.unpack_from("<IIII", body)
            if major != 7:
                raise OSError(errno.EPROTO, "FUSE protocol %d" % major)
            # fuse_init_out: major, minor, max_readahead, flags, max_background, congestion_threshold,
            # max_write, time_gran, max_pages, map_alignment, flags2, max_stack_depth, unused[6]
            self._reply(unique, struct.pack("<IIIIHHIIHHII24x", 7, min(minor, MINOR), readahead, 0, 16, 12, 4096, 1,
                                            0, 0, 0, 0))
        elif opcode == FUSE_LOOKUP:
            name = body.split(b"\0", 1)[0].decode(errors="replace")
            if nodeid != ROOT_ID or not self.tables.exists(name):
                raise OSError(errno.ENOENT, name)
            ino = self._node(name)
            # fuse_entry_out: nodeid, generation, entry_valid, attr_valid, entry_valid_nsec, attr_valid_nsec, attr
            self._reply(unique, struct.pack("<QQQQII", ino, 0, 1, 1, 0, 0) + _attr(ino, False, now, table_size(name)))
        elif opcode == FUSE_GETATTR:
            if nodeid != ROOT_ID and nodeid not in self.nodes:
                raise OSError(errno.ENOENT, "node %d" % nodeid)
            size = 0 if nodeid == ROOT_ID else table_size(self.nodes[nodeid])
            self._reply(unique, struct.pack("<QII", 1, 0, 0) + _attr(nodeid, nodeid == ROOT_ID, now, size))
        elif opcode == FUSE_OPEN:
            flags = struct.unpack_from("<I", body)[0]
            if nodeid not in self.nodes:
                raise OSError(errno.ENOENT, "node %d" % nodeid)
            if flags & os.O_ACCMODE != os.O_RDONLY:
                raise OSError(errno.EROFS, "read-only")
            self._queue_open(unique, self.nodes[nodeid])
        elif opcode == FUSE_READ:
            fh, offset, size = struct.unpack_from("<QQI", body)
            with self.lock:
                entry = self.handles.get(fh)
            if entry is None:
                raise OSError(errno.EBADF, "handle %d" % fh)
            self._reply(unique, entry[1][offset:offset + size])
        elif opcode in (FUSE_RELEASE, FUSE_RELEASEDIR):
            fh = struct.unpack_from("<Q", body)[0]
            with self.lock:
                entry = self.handles.pop(fh, None)
                if entry is not None:
                    self.open_count[entry[0]] -= 1
            self._reply(unique)
        elif opcode in (FUSE_FLUSH, FUSE_ACCESS):
            self._reply(unique)
        elif opcode == FUSE_OPENDIR:
            if nodeid != ROOT_ID:
                raise OSError(errno.ENOTDIR, "node %d" % nodeid)
            self._reply(unique, struct.pack("<QII", 0, 0, 0))
        elif opcode == FUSE_READDIR:
            _fh, offset, size = struct.unpack_from("<QQI", body)
            self._reply(unique, self._readdir(offset, size))
        elif opcode == FUSE_STATFS:
            # fuse_kstatfs: blocks, bfree, bavail, files, ffree, bsize, namelen, frsize, padding, spare[6]
            self._reply(unique, struct.pack("<QQQQQIIII24x", 0, 0, 0, 0, 0, 4096, 255, 4096, 0))
        elif opcode == FUSE_DESTROY:
            self._reply(unique)
        else:
            raise OSError(errno.ENOSYS, "opcode %d" % opcode)

    def _queue_open(self, unique: int, name: str) -> None:
        """An open joins its container's next round; a round is queued unless one already is."""
        with self.lock:
            waiting = self.waiting.setdefault(name, [])
            if self.open_count.get(name, 0) + len(waiting) >= MAX_HANDLES:
                raise OSError(errno.EMFILE, "container %s holds %d handles" % (name, MAX_HANDLES))
            waiting.append(unique)
            if self.scheduled.get(name):
                return
            self.scheduled[name] = True
        self.pool.submit(self._rounds, name)

    def _rounds(self, name: str) -> None:
        """Serve ``name``'s waiting opens, one table for each round, until none wait."""
        while True:
            with self.lock:
                gap = self.last_round.get(name, 0.0) + MIN_ROUND_GAP - time.monotonic()
            if gap > 0:
                time.sleep(gap)
            with self.lock:
                waiters, self.waiting[name] = self.waiting.get(name, []), []
                self.last_round[name] = time.monotonic()
                if not waiters:
                    self.scheduled[name] = False
                    return
                self.computed[name] = self.computed.get(name, 0) + 1
            data = self._compute(name)
            for unique in waiters:
                if isinstance(data, int):
                    self._reply(unique, error=data)
                else:
                    self._opened(unique, name, data)

    def _compute(self, name: str) -> Any:
        """The table, or an errno for its readers."""
        try:
            data = self.tables.render(name)
        except OSError as exc:
            return exc.errno or errno.EIO
        except Exception as exc:  # noqa: BLE001 - a reader gets EIO, the daemon keeps serving
            self.log("table of %s failed: %s" % (name, exc))
            return errno.EIO
        if len(data) != table_size(name):
            self.log("table of %s is %d bytes, not %d: readers that splice see it cut" % (name, len(data),
                                                                                          table_size(name)))
        return data

    def _opened(self, unique: int, name: str, data: bytes) -> None:
        with self.lock:
            fh = self.next_fh
            self.next_fh += 1
            self.handles[fh] = (name, data)
            self.open_count[name] = self.open_count.get(name, 0) + 1
        # fuse_open_out: fh, open_flags, padding. Direct I/O: read(2) goes to this handle's table; no
        # FOPEN_KEEP_CACHE, so the page cache that splice reads use is dropped at every open.
        self._reply(unique, struct.pack("<QII", fh, FOPEN_DIRECT_IO, 0))

    def stats(self) -> Dict[str, Any]:
        with self.lock:
            return {"computed": dict(self.computed), "open": {k: v for k, v in self.open_count.items() if v}}

    def _readdir(self, offset: int, size: int) -> bytes:
        entries = [(ROOT_ID, ".", 4), (ROOT_ID, "..", 4)]
        entries += [(self._node(name), name, 8) for name in self.tables.manager.layout.names()]
        out = b""
        for index, (ino, name, kind) in enumerate(entries):
            if index < offset:
                continue
            raw = name.encode()
            # fuse_dirent: ino, off (of the next entry), namelen, type, name padded to 8 bytes
            record = struct.pack("<QQII", ino, index + 1, len(raw), kind) + raw
            record += b"\0" * (-len(record) % 8)
            if len(out) + len(record) > size:
                break
            out += record
        return out


class Daemon:
    """The serving loop, the reconciling thread, and the clean exit."""

    def __init__(self, data_dir: str, mountpoint: str, interval: float = DEFAULT_INTERVAL,
                 stats_path: Optional[str] = None) -> None:
        self.stats_path = stats_path
        self.tables = Tables(data_dir)
        self.mountpoint = mountpoint
        self.interval = interval
        self.stopping = threading.Event()
        self.detached = threading.Event()
        self.wake_r, self.wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.server = FuseServer(mountpoint, self.tables, self.log)

    @staticmethod
    def log(text: str) -> None:
        sys.stderr.write("%s ovz-bcd[%d]: %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), os.getpid(), text))
        sys.stderr.flush()

    def _wake(self) -> None:
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    def _signal(self, _signum: int, _frame: Any) -> None:
        self.stopping.set()
        self._wake()

    def _reconcile(self) -> None:
        """Bind the live view into every running container that lacks it; at stop, take every bind away."""
        failed: Dict[Tuple[str, int], float] = {}   # (name, init pid) -> when binding last failed
        while not self.stopping.is_set():
            for name, init_pid, starttime in self.tables.running():
                if self.stopping.is_set():
                    break
                if time.monotonic() - failed.get((name, init_pid), -RETRY_AFTER) < RETRY_AFTER:
                    continue
                try:
                    if _ours_on_top(init_pid) != 1:
                        attach(init_pid, os.path.join(self.mountpoint, name), self.tables.guest_dir(name), starttime)
                        self.log("bound the live view into %s" % name)
                    failed.pop((name, init_pid), None)
                except OSError as exc:
                    if (name, init_pid) not in failed:
                        self.log("cannot bind into %s (retried every %.0f s): %s" % (name, RETRY_AFTER, exc))
                    failed[(name, init_pid)] = time.monotonic()
            self._write_stats()
            self.stopping.wait(self.interval)
        for note in unbind_all(self.tables):
            self.log(note)
        self.detached.set()
        self._wake()

    def _write_stats(self) -> None:
        if self.stats_path:
            try:
                atomic_write_json(self.stats_path, self.server.stats(), durable=False)
            except OSError as exc:
                self.log("cannot write %s: %s" % (self.stats_path, exc))

    def run(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._signal)
        self.server.mount()
        self.log("serving %s" % self.mountpoint)
        worker = threading.Thread(target=self._reconcile, name="ovz-bcd-binds", daemon=True)
        worker.start()
        try:
            # Serve until every bind inside containers is gone: detaching may itself need answers.
            while not self.detached.is_set():
                ready = select.select([self.server.fd, self.wake_r], [], [], 1.0)[0]
                if self.wake_r in ready:
                    try:
                        os.read(self.wake_r, 64)
                    except OSError:
                        pass
                if self.server.fd in ready and not self.server.handle_one():
                    break
        finally:
            self.stopping.set()
            worker.join(STOP_TIMEOUT)
            self.server.unmount()
            self.log("stopped")


# -- control: start / stop / status ---------------------------------------------------------
def _lock_holder(pidfile: str) -> Optional[int]:
    """The pid of the live daemon holding ``pidfile``'s lock, or None."""
    try:
        fd = os.open(pidfile, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _claim_pidfile(pidfile: str) -> int:
    fd = os.open(pidfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OSError(errno.EEXIST, "another ovz-bcd holds %s" % pidfile) from None
    os.ftruncate(fd, 0)
    os.write(fd, b"%d\n" % os.getpid())
    return fd


def unbind_all(tables: Tables) -> List[str]:
    """Take the view out of every running container, each left its snapshot, refreshed; what was done."""
    done = []
    for name, init_pid, starttime in tables.running():
        try:
            if detach(init_pid, starttime):
                done.append("unbound from %s" % name)
                tables.refresh_snapshot(name)
        except Exception as exc:  # noqa: BLE001 - report, keep going with the others
            done.append("cannot unbind from %s: %s" % (name, exc))
    return done


def cleanup(data_dir: str, mountpoint: str) -> List[str]:
    """Remove what a dead daemon left: its binds inside running containers, its mount point's mounts."""
    done = unbind_all(Tables(data_dir))
    while any(point == mountpoint and fstype == BCD_FSTYPE for point, fstype in mount_points()):
        try:
            ns.umount(mountpoint, ns.MNT_DETACH)
            done.append("unmounted %s" % mountpoint)
        except OSError as exc:
            done.append("cannot unmount %s: %s" % (mountpoint, exc))
            break
    return done


def serve(data_dir: str, mountpoint: str, pidfile: str, interval: float = DEFAULT_INTERVAL) -> int:
    """Run the daemon in this process until a signal (``ovzctl bcd start --foreground``)."""
    os.makedirs(os.path.dirname(pidfile), mode=0o755, exist_ok=True)
    lock_fd = _claim_pidfile(pidfile)
    try:
        cleanup(data_dir, mountpoint)
        Daemon(data_dir, mountpoint, interval, stats_path(pidfile)).run()
    finally:
        for path in (pidfile, stats_path(pidfile)):
            try:
                os.unlink(path)
            except OSError:
                pass
        os.close(lock_fd)
    return 0


def stats_path(pidfile: str) -> str:
    """Where the running daemon keeps its counts (table computations per container), every ``interval``."""
    return pidfile + ".stats"


def status(data_dir: str, mountpoint: str, pidfile: str) -> Dict[str, Any]:
    pid = _lock_holder(pidfile)
    mounted = any(point == mountpoint and fstype == BCD_FSTYPE for point, fstype in mount_points())
    bound = []
    if pid is not None:
        for name, init_pid, _starttime in Tables(data_dir).running():
            if _ours_on_top(init_pid):
                bound.append(name)
    stats: Any = {}     # whatever the file holds: only a dict is read
    if pid is not None:
        try:
            stats = read_json(stats_path(pidfile))
        except (OSError, ValueError):
            pass
    return {"running": pid is not None, "pid": pid, "mountpoint": mountpoint, "mounted": mounted,
            "pidfile": pidfile, "bound": bound, "computed": stats.get("computed", {}) if isinstance(stats, dict) else {}}


def start(data_dir: str, mountpoint: str, pidfile: str, logfile: str, interval: float = DEFAULT_INTERVAL,
          timeout: float = STOP_TIMEOUT) -> Tuple[bool, int]:
    """Start the daemon in the background; (started, pid). Returns (False, pid) when it already runs."""
    pid = _lock_holder(pidfile)
    if pid is not None:
        return False, pid
    for path in (pidfile, logfile):
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    child = os.fork()
    if child == 0:  # pragma: no cover - the daemon side
        code = 1
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            null = os.open(os.devnull, os.O_RDWR)
            log = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.chdir("/")
            code = serve(data_dir, mountpoint, pidfile, interval)
        except BaseException as exc:  # noqa: BLE001 - the daemon's last word goes to its log
            sys.stderr.write("ovz-bcd: %s\n" % exc)
        finally:
            os._exit(code)
    os.waitpid(child, 0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = _lock_holder(pidfile)
        if pid is not None and any(p == mountpoint and t == BCD_FSTYPE for p, t in mount_points()):
            return True, pid
        time.sleep(0.02)
    raise OSError(errno.ETIMEDOUT, "ovz-bcd did not come up within %.0f s; see %s" % (timeout, logfile))


def stop(data_dir: str, mountpoint: str, pidfile: str, timeout: float = STOP_TIMEOUT) -> Tuple[bool, List[str]]:
    """SIGTERM to the daemon (it unbinds and unmounts), SIGKILL after ``timeout``; then remove anything
    left behind. Returns (was running, cleanup notes)."""
    pid = _lock_holder(pidfile)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _lock_holder(pidfile) == pid and time.monotonic() < deadline:
            time.sleep(0.02)
        if _lock_holder(pidfile) == pid:
            os.kill(pid, signal.SIGKILL)
            while _lock_holder(pidfile) == pid:
                time.sleep(0.02)
    notes = cleanup(data_dir, mountpoint)
    if pid is None and os.path.exists(pidfile):
        try:
            os.unlink(pidfile)
        except OSError:
            pass
    return pid is not None, notes


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)
