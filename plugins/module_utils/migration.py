# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
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

import base64
import fcntl
import threading
import ipaddress
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import faults, network
from .namespaces import syncfs
from .config import ContainerConfig, atomic_write_json, read_json, validate_name
from .errors import InvalidParameter, KernelUnsupported, OvzError, StateConflict
from .remote import RemoteSession, Target, Unreachable

JOURNAL = "migrate.json"
INCOMING = "incoming.json"
LOCK = "migrate.lock"
IMAGES = "migrate"
LAZY_RC = "lazy-pages.rc"      # on the target, in the images: the exit status of criu lazy-pages
LAZY_PID = "lazy-pages.pid"
LAZY_WAIT = 60.0               # how long a recovery waits for an interrupted lazy transfer to end
PHASES = ("preflight", "copy", "predump", "dump", "sync", "restore", "transfer", "commit", "cleanup")
DEFAULT_PRE_DUMPS = 3
MAX_PRE_DUMPS = 20
SHRINK = 0.8                 # a pre-dump must write < 80 % of the previous one to be worth another
SMALL_PAGES = 1 << 20        # stop pre-dumping when a pass writes less than this
SPACE_MARGIN = 64 << 20
RSYNC_OPTS = ["-aHAX", "--numeric-ids", "--stats"]
INLINE_IMAGES_MAX = 8 << 20  # images up to this size go inside the restore request: no rsync start-up while frozen

Hook = Callable[[str], None]


# ---------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------

class _FileLock:
    """An exclusive flock on ``path`` (the migration lock of one container; not the container lock)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: Optional[int] = None

    def __enter__(self) -> "_FileLock":
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _checkpointer(manager: Any) -> Any:
    from .checkpoint import Checkpointer
    return Checkpointer(manager)


def _lxcfs_views(runtime: Any) -> Optional[List[str]]:
    from .checkpoint import lxcfs_views
    return lxcfs_views(runtime.init_pid) if runtime is not None else None


def _criu() -> Any:
    from .criu import Criu
    return Criu()


def _ms_since(mark: float) -> float:
    return round((time.monotonic() - mark) * 1000.0, 1)


def tree_bytes(path: str) -> int:
    """Allocated bytes under ``path`` (sparse files count what they use, hard links once), like ``du``."""
    if os.path.isfile(path):
        return os.stat(path).st_blocks * 512
    total = 0
    seen = set()
    for directory, _dirs, files in os.walk(path):
        for entry in files:
            try:
                stat = os.lstat(os.path.join(directory, entry))
            except OSError:
                continue
            if stat.st_nlink > 1:
                if (stat.st_dev, stat.st_ino) in seen:
                    continue
                seen.add((stat.st_dev, stat.st_ino))
            total += stat.st_blocks * 512
    return total


def pages_bytes(images_dir: str) -> int:
    """Bytes of memory pages a (pre-)dump wrote into ``images_dir``."""
    total = 0
    for entry in os.listdir(images_dir):
        if entry.startswith("pages-") and entry.endswith(".img"):
            total += os.stat(os.path.join(images_dir, entry)).st_size
    return total


def source_id(manager: Any) -> str:
    """Who migrates: this host and data_dir (a stale incoming container of the same source may be replaced)."""
    return "%s:%s" % (socket.gethostname(), manager.layout.data_dir)


def boot_id() -> str:
    """This kernel's boot id: equal on both sides of a migration between two data dirs of one host."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def portable_config(manager: Any, config: ContainerConfig) -> Dict[str, Any]:
    """The configuration as the target gets it: a host end name this node derived (not the operator's
    choice) is left for the target to derive, so that two data dirs of one host never give the
    container the same host end (the source's lives on until the move is done)."""
    data = config.to_dict()
    netconf = dict(data.get("network") or {})
    if netconf and network.is_default_host_ifname(manager.layout.data_dir, config.name, netconf.get("host_ifname")):
        netconf["host_ifname"] = None
        data["network"] = netconf
    return data


def _localized(manager: Any, name: str, config: Dict[str, Any]) -> Dict[str, Any]:
    """``config`` with the host end name this node derives for ``name`` where the source left it to us."""
    netconf = config.get("network") or {}
    if not netconf or netconf.get("host_ifname"):
        return config
    return dict(config, network=dict(netconf, host_ifname=network.default_host_ifname(manager.layout.data_dir, name)))


def journal_path(manager: Any, name: str) -> str:
    return os.path.join(manager.layout.dump(name), JOURNAL)


def read_journal(manager: Any, name: str) -> Optional[Dict[str, Any]]:
    try:
        data = read_json(journal_path(manager, name))
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("name") == name else None


def _write_journal(manager: Any, journal: Dict[str, Any], phase: str, durable: bool = True) -> None:
    """``durable``: False for the steps between the freeze and the restore: a recovery after a host crash
    that finds the phase before them (dump instead of sync) takes the same path."""
    journal["phase"] = phase
    journal.setdefault("history", []).append([phase, time.time()])
    atomic_write_json(journal_path(manager, journal["name"]), journal, durable=durable)


def _clear_journal(manager: Any, name: str) -> None:
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


def pack_images(path: str, limit: int = INLINE_IMAGES_MAX) -> Optional[List[List[str]]]:
    """The files and symlinks of a flat images directory as [name, "file", base64] / [name, "link", target];
    None when they exceed ``limit`` bytes or there is anything else (those go by rsync)."""
    entries: List[List[str]] = []
    total = 0
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.is_symlink():
            entries.append([entry.name, "link", os.readlink(entry.path)])
        elif entry.is_file(follow_symlinks=False):
            total += entry.stat(follow_symlinks=False).st_size
            if total > limit:
                return None
            with open(entry.path, "rb") as handle:
                entries.append([entry.name, "file", base64.b64encode(handle.read()).decode("ascii")])
        else:
            return None
    return entries


def unpack_images(path: str, entries: List[List[str]]) -> int:
    """Write what ``pack_images`` packed into ``path`` (made afresh); the bytes written."""
    if os.path.lexists(path):
        shutil.rmtree(path)
    os.makedirs(path, mode=0o700)
    written = 0
    for name, kind, value in entries:
        if not name or "/" in name or name in (".", ".."):
            raise InvalidParameter("bad image name %r" % (name,), "images")
        target = os.path.join(path, name)
        if kind == "link":
            os.symlink(value, target)
            continue
        data = base64.b64decode(value)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        written += len(data)
    return written


def _rsync_argv(source: str, target: Target, destination: str, control_path: Optional[str],
                extra: List[str]) -> List[str]:
    return ["rsync"] + RSYNC_OPTS + extra + ["-e", target.ssh_command(control_path), source,
                                             target.remote_path(destination)]


def _rsync_result(proc: subprocess.Popen, source: str, target: Target, allow_vanished: bool = False) -> int:
    out, err = proc.communicate()
    # 24: files vanished while rsync ran; fine for a copy of a running container, which the final
    # sync (container frozen) completes.
    if proc.returncode != 0 and not (allow_vanished and proc.returncode == 24):
        raise OvzError("copying %s to %s failed (rsync exit %d): %s"
                       % (source, target.host, proc.returncode, err.strip()[-1000:]), "target")
    match = re.search(r"Total bytes sent:\s*([\d,.]+)", out)
    return int(re.sub(r"[,.]", "", match.group(1))) if match else 0


def _start_rsyncs(jobs: List[Tuple[str, str, List[str]]], target: Target,
                  control_path: Optional[str]) -> List[Tuple[subprocess.Popen, str]]:
    return [(subprocess.Popen(_rsync_argv(source, target, destination, control_path, extra),  # pylint: disable=consider-using-with
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True), source) for source, destination, extra in jobs]


def _finish_rsyncs(procs: List[Tuple[subprocess.Popen, str]], target: Target, allow_vanished: bool = False) -> List[int]:
    results = []
    error: Optional[OvzError] = None
    for proc, source in procs:
        try:
            results.append(_rsync_result(proc, source, target, allow_vanished))
        except OvzError as exc:
            error = error or exc
    if error is not None:
        raise error
    return results


def _kill_rsyncs(procs: List[Tuple[subprocess.Popen, str]]) -> None:
    for proc, _source in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def rsync_many(jobs: List[Tuple[str, str, List[str]]], target: Target, control_path: Optional[str],
               allow_vanished: bool = False) -> List[int]:
    """rsync each (source, destination on the target, options) at once, over the session's ssh master;
    the bytes each one sent."""
    return _finish_rsyncs(_start_rsyncs(jobs, target, control_path), target, allow_vanished)


def rsync(source: str, target: Target, destination: str, control_path: Optional[str], extra: List[str],
          allow_vanished: bool = False) -> int:
    """rsync ``source`` to ``destination`` on the target over the session's ssh master; bytes sent."""
    return rsync_many([(source, destination, extra)], target, control_path, allow_vanished)[0]


# The receiving end of an image copy: a few lines run by the target's Python from ``-c``.
# Records on stdin: offset, length, kind (0 data, 1 hole, 2 end: length is the file size).
IMAGE_RECEIVER = r"""
import ctypes, os, struct, sys
path = sys.argv[1]
inp = sys.stdin.buffer
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
done = 0
while True:
    head = inp.read(17)
    if len(head) != 17:
        sys.exit(3)
    offset, length, kind = struct.unpack("!QQB", head)
    if kind == 2:
        os.ftruncate(fd, length)
        os.fsync(fd)
        break
    if kind == 1:
        if libc.fallocate(fd, 3, offset, length) != 0:
            os.pwrite(fd, bytes(length), offset)
        continue
    data = inp.read(length)
    if len(data) != length:
        sys.exit(3)
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
    done += length
os.close(fd)
sys.stdout.write("ok %d\n" % done)
"""
CHUNK = 1 << 20


def data_chunks(path: str) -> List[int]:
    """Indexes of the CHUNK-sized pieces of ``path`` that hold data (holes are skipped: SEEK_DATA/SEEK_HOLE)."""
    chunks: List[int] = []
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            first, last = start // CHUNK, (end - 1) // CHUNK
            if chunks and chunks[-1] >= first:
                first = chunks[-1] + 1
            chunks.extend(range(first, last + 1))
            offset = end
    finally:
        os.close(fd)
    return chunks


class ImageSync:
    """Copy a sparse image to the target, then only the chunks that changed since (like ploop's copy).

    The first ``send`` copies every chunk that holds data and remembers a digest of each;
    a later one (after the freeze and ``syncfs``) reads the data again and sends the chunks
    whose digest changed, and holes where data went away.
    """

    def __init__(self, image: str, target: Target, destination: str, control_path: Optional[str]) -> None:
        self.image = image
        self.target = target
        self.destination = destination
        self.control_path = control_path
        self.digests: Dict[int, bytes] = {}

    def send(self) -> int:
        import hashlib
        command = "exec %s -I -c %s %s" % (shlex.quote(self.target.python), shlex.quote(IMAGE_RECEIVER),
                                           shlex.quote(self.destination))
        argv = self.target.ssh_argv(self.control_path) + [self.target.destination, command]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,  # pylint: disable=consider-using-with
                                stderr=subprocess.PIPE)
        if proc.stdin is None:
            raise RuntimeError("ssh was started without a pipe for its input")
        sent = 0
        try:
            with open(self.image, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                present = data_chunks(self.image)
                for index in sorted(set(self.digests) - set(present)):
                    proc.stdin.write(struct.pack("!QQB", index * CHUNK, min(CHUNK, size - index * CHUNK), 1))
                    del self.digests[index]
                for index in present:
                    handle.seek(index * CHUNK)
                    data = handle.read(CHUNK)
                    digest = hashlib.blake2b(data, digest_size=16).digest()
                    if self.digests.get(index) == digest:
                        continue
                    proc.stdin.write(struct.pack("!QQB", index * CHUNK, len(data), 0))
                    proc.stdin.write(data)
                    self.digests[index] = digest
                    sent += len(data)
            proc.stdin.write(struct.pack("!QQB", 0, size, 2))
        except OSError:
            pass   # the receiver died: its exit status and stderr tell why
        out, err = proc.communicate()
        if proc.returncode != 0 or not out.startswith(b"ok"):
            self.digests.clear()
            raise OvzError("copying the image %s to %s failed (exit %s): %s"
                           % (self.image, self.target.host, proc.returncode, err.decode(errors="replace")[-1000:]),
                           "target")
        return sent


class _FinalSync:
    """The last copy of the private area, started once its files are quiescent (frozen or stopped
    container), so that it runs while CRIU dumps; ``wait`` for the bytes sent."""

    def __init__(self, storage: Any, image_sync: Optional[ImageSync], source_private: str, destination: str,
                 target: Target, control_path: Optional[str]) -> None:
        self.target = target
        self.sent = 0
        self.error: Optional[BaseException] = None
        self.thread: Optional[threading.Thread] = None
        self.procs: List[Tuple[subprocess.Popen, str]] = []
        if image_sync is None:
            # rsync reads the files through the page cache: nothing to write out first.
            self.procs = _start_rsyncs([(source_private, destination, ["--delete"])], target, control_path)
            return
        if storage.mounted():
            syncfs(storage.root)   # the file system inside the image, down to the image
            with open(storage.image, "rb") as handle:
                os.fsync(handle.fileno())
                # The loop device writes the image with direct I/O: pages the first pass cached must not answer.
                os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        self.thread = threading.Thread(target=self._send, args=(image_sync,), name="ovz-image-sync", daemon=True)
        self.thread.start()

    def _send(self, image_sync: ImageSync) -> None:
        try:
            self.sent = image_sync.send()
        except BaseException as exc:  # noqa: BLE001 - handed to wait()
            self.error = exc

    def wait(self) -> int:
        if self.thread is not None:
            self.thread.join()
            if self.error is not None:
                raise self.error
            return self.sent
        procs, self.procs = self.procs, []
        return _finish_rsyncs(procs, self.target)[0]

    def cancel(self) -> None:
        """After a failure: end what still runs."""
        _kill_rsyncs(self.procs)
        self.procs = []
        if self.thread is not None:
            self.thread.join()


# ---------------------------------------------------------------------------------------
# announcing moved addresses: gratuitous ARP and unsolicited neighbour advertisements
# ---------------------------------------------------------------------------------------

def _link_mac(ifname: str) -> bytes:
    """The MAC of ``ifname`` in the caller's netns (netlink: /sys may show another netns)."""
    with network.netlink() as ipr:
        links = ipr.get_links(ifname=ifname)
        if not links:
            raise OvzError("interface %s is gone" % ifname)
        return bytes.fromhex(links[0].get_attr("IFLA_ADDRESS").replace(":", ""))


def gratuitous_arp(ifname: str, ip: str) -> None:
    mac = _link_mac(ifname)
    addr = socket.inet_aton(ip)
    frame = (b"\xff" * 6 + mac + struct.pack("!H", 0x0806)
             + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + addr + b"\x00" * 6 + addr)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)) as sock:
        sock.bind((ifname, 0x0806))
        sock.send(frame)


def unsolicited_na(ifname: str, ip: str) -> None:
    mac = _link_mac(ifname)
    target = socket.inet_pton(socket.AF_INET6, ip)
    # ICMPv6 type 136, code 0, checksum (the kernel fills it), flags: Override; target; option 2 (target lladdr).
    message = struct.pack("!BBHI", 136, 0, 0, 0x20000000) + target + struct.pack("!BB", 2, 1) + mac
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
        index = socket.if_nametoindex(ifname)
        sock.sendto(message, ("ff02::1", 0, 0, index))


def announce(manager: Any, name: str) -> List[List[str]]:
    """Tell the neighbours that the container's addresses are here now, on every proxy device."""
    runtime = network.load_runtime(network.runtime_path(manager.layout.run(name))) or {}
    sent = []
    for ip, dev in runtime.get("proxy") or []:
        try:
            if ipaddress.ip_address(ip).version == 4:
                gratuitous_arp(dev, ip)
            else:
                unsolicited_na(dev, ip)
            sent.append([ip, dev])
        except OSError:
            continue
    return sent


# ---------------------------------------------------------------------------------------
# the target side (run by remote.serve; ``session`` is that connection's state)
# ---------------------------------------------------------------------------------------

def _target_manager(data_dir: str, cgroup_parent: str) -> Any:
    from .container import ContainerManager
    return ContainerManager(data_dir, cgroup_parent)


def _incoming(manager: Any, name: str) -> Optional[Dict[str, Any]]:
    try:
        data = read_json(os.path.join(manager.layout.dump(name), INCOMING))
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _remote_status(session: Dict[str, Any], data_dir: str, cgroup_parent: str, name: str) -> Dict[str, Any]:
    manager = _target_manager(data_dir, cgroup_parent)
    incoming = _incoming(manager, name)
    result = {"state": manager.status(name), "incoming": incoming}
    final = os.path.join(manager.layout.dump(name), IMAGES, "final")
    if incoming and os.path.exists(os.path.join(final, LAZY_PID)):
        result["lazy"] = _lazy_daemon(final)
    return result


def _remote_preflight(session: Dict[str, Any], data_dir: str, cgroup_parent: str, name: str,
                      config: Dict[str, Any], need_bytes: int, criu_version: Optional[List[int]],
                      source: str, lxcfs: Optional[List[str]] = None,
                      source_node: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    manager = _target_manager(data_dir, cgroup_parent)
    if os.path.isdir(data_dir):
        config = _localized(manager, name, config)
    info: Dict[str, Any] = {"kernel": os.uname().release, "hostname": socket.gethostname()}
    incoming = _incoming(manager, name)
    if manager.exists(name) or os.path.lexists(manager.layout.private(name)):
        if incoming and incoming.get("source") == source and manager.status(name) not in ("running", "frozen"):
            info["stale_incoming"] = incoming.get("id")   # our own unfinished copy: replaced
        else:
            raise StateConflict("a container named %s already exists on the target" % name, "name")
    if shutil.which("rsync") is None:
        raise OvzError("rsync is not installed on the target", "target")
    if criu_version is not None:
        criu = _criu()
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
        criu.feature("network_lock_nftables")   # asked now (and cached), not while the container is frozen
    if lxcfs:
        from .rootfs import LXCFS_FILES, find_lxcfs
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
        from .config import iter_configs
        others = [(c.name, c.network) for c in iter_configs(manager.layout) if c.name != name]
        network.check_address_conflicts(name, netconf, others)
        # From another data dir of this host: the addresses are routed to the source's host end until the move.
        same_host = bool(source_node) and source_node.get("boot_id") == boot_id() != ""
        network.check_host(netconf, moving_from=source_node.get("owner_alias") if source_node and same_host else None)
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
        checkpointer = _checkpointer(manager)
        checkpointer.criu.warm(checkpointer.criu_features())
    with manager.lock(name):
        incoming = _incoming(manager, name)
        if manager.exists(name) and not (incoming and incoming.get("source") == source):
            raise StateConflict("a container named %s already exists on the target" % name, "name")
        if incoming and incoming.get("id") != migration_id:
            _discard(manager, name)   # a stale copy of our own earlier, failed run
        os.makedirs(os.path.join(manager.layout.dump(name), IMAGES), mode=0o700, exist_ok=True)
        os.makedirs(os.path.dirname(manager.layout.private(name)), mode=0o700, exist_ok=True)
        os.makedirs(manager.layout.private(name), mode=0o700, exist_ok=True)
        os.makedirs(os.path.dirname(manager.layout.root(name)), mode=0o755, exist_ok=True)
        atomic_write_json(os.path.join(manager.layout.dump(name), INCOMING),
                          {"id": migration_id, "source": source, "name": name, "since": time.time()})
        manager.store.save(ContainerConfig.from_dict(_localized(manager, name, config)))
    session["incoming"] = {"data_dir": data_dir, "cgroup_parent": cgroup_parent, "name": name, "id": migration_id}
    return {"images": os.path.join(manager.layout.dump(name), IMAGES), "private": manager.layout.private(name),
            "dump": manager.layout.dump(name)}


def _discard(manager: Any, name: str) -> None:
    """Remove an incoming container completely (killed if it runs). Caller holds the container lock.

    The transfers of a source that died go on by themselves (its final rsync was started before
    the freeze): ended first, or their receiver would write the private area again behind its removal,
    and the next migration would find "a container of that name" on this host."""
    _end_lazy_daemon(os.path.join(manager.layout.dump(name), IMAGES, "final"))
    from .process import end_processes_working_in
    end_processes_working_in([manager.layout.private(name), manager.layout.dump(name)])
    config = manager.store.load(name)
    if config is not None:
        manager._stop_locked(config, timeout=0)  # pylint: disable=protected-access
        manager.storage(config).destroy()
        manager.store.remove(name)
    else:
        shutil.rmtree(manager.layout.private(name), ignore_errors=True)
    shutil.rmtree(manager.layout.dump(name), ignore_errors=True)
    manager._remove_run_dir(name)  # pylint: disable=protected-access
    if not manager.layout.names():
        manager.layout.forget_node_id()   # as a destroy of the last container does


def _remote_abort(session: Dict[str, Any], data_dir: str, cgroup_parent: str, name: str,
                  migration_id: str) -> bool:
    manager = _target_manager(data_dir, cgroup_parent)
    with manager.lock(name):
        incoming = _incoming(manager, name)
        if not incoming or incoming.get("id") != migration_id:
            return False
        _discard(manager, name)
    session.pop("incoming", None)
    return True


def _lazy_daemon(images_dir: str) -> Dict[str, Any]:
    """What the ``criu lazy-pages`` daemon in ``images_dir`` says: its exit status (None while it runs)."""
    try:
        with open(os.path.join(images_dir, LAZY_RC)) as handle:
            rc: Optional[int] = int(handle.read().strip())
    except (OSError, ValueError):
        rc = None   # not written yet (the shell renames it into place once whole)
    pid = read_json(os.path.join(images_dir, LAZY_PID)) or {}
    from .process import process_starttime
    alive = bool(pid.get("pid")) and process_starttime(pid["pid"]) == pid.get("starttime")
    return {"rc": rc, "alive": alive and rc is None}


def _end_lazy_daemon(images_dir: str) -> None:
    from .process import process_starttime
    pid = read_json(os.path.join(images_dir, LAZY_PID)) or {}
    if pid.get("pid") and process_starttime(pid["pid"]) == pid.get("starttime"):
        try:
            os.killpg(pid["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass


def _start_lazy_daemon(images_dir: str, port: int) -> None:
    """Start ``criu lazy-pages`` on ``images_dir``, fetching pages from ``127.0.0.1:port`` (the source's page
    server, forwarded by ssh); it ends by itself once every page is in, writing its exit status."""
    from .process import process_starttime
    criu = _criu()
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
            from .criu import log_errors
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
        incoming = _incoming(manager, name)
        if not incoming or os.path.dirname(os.path.abspath(images_dir)) != \
                os.path.join(manager.layout.dump(name), IMAGES):
            raise StateConflict("no incoming migration of %s to write images for" % name, "name")
        unpack_images(images_dir, images)
        steps["unpack_ms"] = _ms_since(began)
    if lazy_port:
        mark = time.monotonic()
        _start_lazy_daemon(images_dir, lazy_port)
        steps["lazy_daemon_ms"] = _ms_since(mark)
    try:
        mark = time.monotonic()
        result = _checkpointer(manager).restore(name, images_dir, tcp_established=tcp_established,
                                                lazy=bool(lazy_port))
        steps["restore_call_ms"] = _ms_since(mark)
    except BaseException:
        if lazy_port:
            _end_lazy_daemon(images_dir)
        raise
    seconds = time.monotonic() - began
    mark = time.monotonic()
    announced = announce(manager, name)
    steps["announce_ms"] = _ms_since(mark)
    return {"seconds": seconds, "announced": announced, "result": result if isinstance(result, dict) else None,
            "steps": steps}


def _remote_lazy_wait(session: Dict[str, Any], data_dir: str, cgroup_parent: str, name: str, images_dir: str,
                      timeout: float = 600.0) -> Dict[str, Any]:
    """Wait until the lazy-pages daemon has every page in (or failed): its status and, if it failed, why."""
    deadline = time.monotonic() + timeout
    while True:
        state = _lazy_daemon(images_dir)
        if state["rc"] is not None or not state["alive"] or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if state["rc"] != 0:
        from .criu import log_errors
        state["errors"] = log_errors(os.path.join(images_dir, "lazy-pages.log"))
    return state


def _remote_announce(session: Dict[str, Any], data_dir: str, cgroup_parent: str, name: str) -> List[List[str]]:
    return announce(_target_manager(data_dir, cgroup_parent), name)


def _remote_commit(session: Dict[str, Any], data_dir: str, cgroup_parent: str, name: str,
                   migration_id: str) -> bool:
    manager = _target_manager(data_dir, cgroup_parent)
    with manager.lock(name):
        incoming = _incoming(manager, name)
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
            current = _incoming(manager, incoming["name"])
            if current and current.get("id") == incoming["id"] and \
                    manager.status(incoming["name"]) not in ("running", "frozen"):
                _discard(manager, incoming["name"])
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


# ---------------------------------------------------------------------------------------
# the source side
# ---------------------------------------------------------------------------------------

class _Watchdog:
    """A forked process that converges the migration if this one dies before saying it is done."""

    def __init__(self, manager: Any, name: str, leftovers: List[str], converge: bool = True) -> None:
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


def recover(manager: Any, name: str, session: Optional[RemoteSession] = None) -> Optional[str]:
    """Converge an interrupted migration of ``name`` from its journal.

    Returns None (no journal), ``rolled_back`` (the source runs, the target has nothing)
    or ``completed`` (the target runs it, the source is cleaned up).
    """
    if read_journal(manager, name) is None:
        return None
    with _FileLock(os.path.join(manager.layout.dump(name), LOCK)):
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
                _write_journal(manager, journal, "cleanup")
                _finish_source(manager, name, journal)
                return "completed"
            if session is not None:
                session.call("abort", data_dir=target.data_dir, cgroup_parent=target.cgroup_parent, name=name,
                             migration_id=journal["id"])
            _resume_source(manager, name, journal)
            _clear_journal(manager, name)
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


def _resume_source(manager: Any, name: str, journal: Dict[str, Any]) -> None:
    """Undo a freeze or a leave_stopped dump on the source (nothing to do if it runs normally)."""
    if journal.get("stopped") and manager.status(name) in ("running", "frozen"):
        checkpointer = _checkpointer(manager)
        if checkpointer.stopped_after_dump(name):
            checkpointer.resume_stopped(name)
    if manager.status(name) == "frozen":
        manager.thaw(name)


def _finish_source(manager: Any, name: str, journal: Dict[str, Any]) -> None:
    if journal.get("stopped") and manager.exists(name):
        _checkpointer(manager).finish_stopped(name)
    if journal.get("keep_source"):
        if manager.status(name) in ("running", "frozen"):
            manager.stop(name, timeout=0)
        _clear_journal(manager, name)
    elif manager.exists(name):
        manager.destroy(name)
    else:
        _clear_journal(manager, name)


def plan(manager: Any, name: str, target: Any, **options: Any) -> Target:
    """Validate the inputs (touching nothing); the parsed target."""
    validate_name(name)
    parsed = Target.from_param(target, **{k: v for k, v in options.items()
                                          if k in ("data_dir", "cgroup_parent", "python", "identity_file",
                                                   "known_hosts", "ssh_options", "port", "user")})
    return parsed


def migrate(manager: Any, name: str, target: Any, pre_dump_iterations: Optional[int] = None,
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
            _checkpointer(manager).check(name)   # what CRIU would refuse, before anything is copied or frozen
        result["mode"] = "online" if live else "offline"
        storage = manager.storage(config)
        private_bytes = tree_bytes(storage.image if config.layout == "image" else storage.private)
        result["sizes"]["private"] = private_bytes
        t0 = time.monotonic()
        criu_version = list(_criu().version_tuple()) if live else None
        runtime = manager.runtime(name) if live else None
        info = session.call("preflight", timeout=120, data_dir=target.data_dir, cgroup_parent=target.cgroup_parent,
                            name=name, config=portable_config(manager, config), need_bytes=private_bytes + SPACE_MARGIN,
                            criu_version=criu_version, source=source_id(manager),
                            lxcfs=_lxcfs_views(runtime),
                            source_node={"boot_id": boot_id(),
                                         "owner_alias": network.owner_alias(manager.layout.data_dir, name)})
        result["target_info"] = info
        result["timings"]["preflight"] = time.monotonic() - t0
        if live and lazy is not False:
            supported = _criu().feature("uffd-noncoop") and bool(info.get("lazy_pages"))
            if lazy and not supported:
                raise KernelUnsupported("lazy migration needs userfaultfd with non-cooperative events on both hosts "
                                        "(criu check --feature uffd-noncoop fails on %s)"
                                        % ("the target" if _criu().feature("uffd-noncoop") else "this host"), "lazy")
            result["lazy"] = supported
        _call_hook(hook, "preflight")
        result["changed"] = True
        if check_mode:
            return result
        with _FileLock(os.path.join(manager.layout.dump(name), LOCK)):
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


def _steps(manager: Any, name: str, config: ContainerConfig, target: Target, session: RemoteSession,
           result: Dict[str, Any], live: bool, iterations: Optional[int], keep_source: bool, tcp_established: bool,
           hook: Optional[Hook]) -> None:
    timings = result["timings"]
    sizes = result["sizes"]
    where = {"data_dir": target.data_dir, "cgroup_parent": target.cgroup_parent, "name": name}
    lazy = bool(result.get("lazy"))
    journal: Dict[str, Any] = {"id": uuid.uuid4().hex, "name": name, "target": dict(target.__dict__),
                               "keep_source": keep_source, "stopped": False, "froze": False, "lazy": lazy,
                               "started": time.time()}
    local_images = os.path.join(manager.layout.dump(name), IMAGES)
    storage = manager.storage(config)
    image = config.layout == "image"
    source_private = (storage.private.rstrip("/") + "/")
    _write_journal(manager, journal, "copy")
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
        checkpointer = _checkpointer(manager) if live else None
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
        if live and iterations and not checkpointer.criu.feature("mem_dirty_track"):
            # CRIU's pre-dumps need the kernel's soft-dirty bits (CONFIG_MEM_SOFT_DIRTY).
            result.setdefault("warnings", []).append(
                "pre-dumps skipped: this kernel cannot track dirty memory (criu check --feature mem_dirty_track "
                "fails; CONFIG_MEM_SOFT_DIRTY is off), so all memory is copied while the container is frozen")
            iterations = 0
        if live and iterations:
            _write_journal(manager, journal, "predump")
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
        if live:
            checkpointer.criu.feature("network_lock_nftables")   # asked now (and cached), not while frozen
            journal["stopped"] = True
            _write_journal(manager, journal, "dump")
        frozen_at = time.monotonic()
        if live:
            we_froze = checkpointer.freeze(name) if checkpointer is not None else manager.freeze(name)
        # -- what changed in the private area: copied while CRIU dumps, the files being quiescent now ----
        final_sync = _FinalSync(storage, image_sync if image else None, source_private, paths["private"] + "/",
                                target, session.control_path)
        pending: List[Tuple[subprocess.Popen, str]] = []
        try:
            if live:
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
                _write_journal(manager, journal, "dump", durable=False)
                result["dump_timings"] = dumped.get("timings")
                sizes["dump"] = pages_bytes(final)
                sizes["dump_total"] = tree_bytes(final)
                timings["dump"] = time.monotonic() - frozen_at
                _call_hook(hook, "dump")
            # -- final sync: the images (small ones go inside the restore request) -----------------------
            _write_journal(manager, journal, "sync", durable=not live)
            t0 = time.monotonic()
            if live:
                inline = pack_images(final)
                if inline is None:
                    pending = _start_rsyncs([(final, paths["images"] + "/", ["--whole-file"])], target,
                                            session.control_path)
                else:
                    sizes["dump_sent"] = sum(len(value) * 3 // 4 for _name, kind, value in inline if kind == "file")
            sizes["final_sync_sent"] = final_sync.wait()
            if pending:
                sizes["dump_sent"] = _finish_rsyncs(pending, target)[0]
                pending = []
        finally:
            final_sync.cancel()
            _kill_rsyncs(pending)
        timings["sync"] = time.monotonic() - t0
        _call_hook(hook, "sync")
        # -- restore on the target -----------------------------------------------------------------
        _write_journal(manager, journal, "restore")   # durable: an unreachable target then means "wait", not "resume"
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
        if lazy:
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
    _write_journal(manager, journal, "commit")
    _call_hook(hook, "commit")
    t0 = time.monotonic()
    _write_journal(manager, journal, "cleanup")
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


def _tasks_stopped(manager: Any, name: str) -> bool:
    """After a failed dump: are the container's tasks left stopped (so they need resume_stopped)?"""
    runtime = manager.runtime(name)
    if runtime is None:
        return False
    try:
        with open("/proc/%d/stat" % runtime.init_pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except OSError:
        return False


def _rollback(manager: Any, name: str, journal: Dict[str, Any], session: RemoteSession, where: Dict[str, Any],
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
    _clear_journal(manager, name)
