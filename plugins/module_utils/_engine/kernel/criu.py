# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""The ``criu`` binary: finding it, asking what it supports, and running dump, pre-dump and restore.

Every run writes its log (``<action>.log``, verbose) into the images directory,
next to the images it made or read, and a failed run raises ``CriuError`` with
the log's error lines, so the operator sees why without digging. CRIU's own
statistics (``stats-dump``/``stats-restore``, small protobuf files) are decoded
here without the protobuf library.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import re
import stat
import struct
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..base.errors import KernelUnsupported, OvzError
from ..base.files import atomic_file
from . import namespaces as ns
from .namespaces import load_libc

# Where the setup script installs its build, then the distribution's package.
CRIU_CANDIDATES = ("/usr/local/sbin/criu", "/usr/sbin/criu", "/usr/local/bin/criu", "/usr/bin/criu", "/sbin/criu")
CRIU_ENV = "OVZ_CRIU"
LOG_TAIL = 12
# What ``criu --version`` and ``criu check --feature`` said, per binary and boot: each answer costs a
# CRIU start (tens of ms), and a migration asks while the container is frozen. Keyed by the boot id.
ANSWERS_CACHE = "/run/ovz/criu-answers.json"
# CRIU (run as root) keeps what it learnt of the kernel (kerndat: an ``iptables -L``, vDSO and
# pagemap probes, 40 ms a run here) in /run/criu.kdat, but only where /run is a tmpfs, so that a
# reboot drops it. See ``Criu.keep_kdat_cache`` for hosts where /run is not a tmpfs.
KDAT_DIR = "/run"
KDAT_FILE = "criu.kdat"
OWNER_KDAT_DIR = "ovz-criu-owner"   # under KDAT_DIR: the kerndat cache of runs as a container's owner
TMPFS_MAGIC = 0x01021994
# A criu.kdat.tmp older than this was left by a CRIU killed while saving its cache; while it is
# there no CRIU saves one (it opens it O_EXCL).
STALE_KDAT_TMP_S = 60.0

IMG_SERVICE_MAGIC = 0x55105940
STATS_MAGIC = 0x57093306
# stats.proto: field numbers of dump_stats_entry and restore_stats_entry.
DUMP_STATS_FIELDS = {1: "freezing_time", 2: "frozen_time", 3: "memdump_time", 4: "memwrite_time",
                     5: "pages_scanned", 6: "pages_skipped_parent", 7: "pages_written", 8: "irmap_resolve",
                     9: "pages_lazy", 10: "page_pipes", 11: "page_pipe_bufs", 12: "shpages_scanned",
                     13: "shpages_skipped_parent", 14: "shpages_written"}
RESTORE_STATS_FIELDS = {1: "pages_compared", 2: "pages_skipped_cow", 3: "forking_time", 4: "restore_time",
                        5: "pages_restored"}


def filesystem_type(path: str) -> int:
    """``statfs(2)``'s ``f_type`` of ``path`` (0 when it cannot be read)."""
    buf = ctypes.create_string_buffer(256)   # struct statfs is 120 bytes on 64-bit Linux
    if load_libc().statfs(os.fsencode(path), buf) != 0:
        return 0
    return ctypes.c_long.from_buffer(buf).value


class CriuError(OvzError):
    """A CRIU run failed; ``log`` is its log file, ``errors`` the lines that say why."""

    def __init__(self, message: str, log: Optional[str] = None, errors: Sequence[str] = (),
                 param: Optional[str] = None) -> None:
        super().__init__(message, param)
        self.log = log
        self.errors = list(errors)


def find_criu(binary: Optional[str] = None) -> str:
    """The criu binary: ``binary``, ``$OVZ_CRIU``, the known install places, then ``$PATH``."""
    wanted = binary or os.environ.get(CRIU_ENV)
    if wanted:
        if os.path.isfile(wanted) and os.access(wanted, os.X_OK):
            return wanted
        raise KernelUnsupported("criu binary %s is not an executable file" % wanted, "criu")
    for path in CRIU_CANDIDATES:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        path = os.path.join(directory, "criu")
        if directory and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise KernelUnsupported("CRIU is not installed (no criu binary in %s or $PATH); the ovz_host role "
                            "or scripts/install-criu installs it" % ", ".join(CRIU_CANDIDATES), "criu")


def log_errors(path: str, limit: int = LOG_TAIL) -> List[str]:
    """The lines of a CRIU log that explain a failure: its errors, else its last lines.

    Messages CRIU always prints as errors although they are harmless (raising
    RLIMIT_NOFILE inside a limited cgroup) are left out.
    """
    try:
        with open(path, errors="replace") as handle:
            lines = [line.rstrip("\n") for line in handle]
    except OSError:
        return []
    errors = [line for line in lines if "Error (" in line and "RLIMIT_NOFILE" not in line]
    if not errors:
        # Some steps say why only in words (the lazy-pages daemon's uffd handling, say).
        errors = [line for line in lines if re.search(r"\b(fail|failed|[Cc]an't|[Uu]nable|[Ee]rror|exited)\b", line)]
    return (errors or lines)[-limit:]


def _varint(data: bytes, pos: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _fields(data: bytes) -> Dict[int, object]:
    """Top-level fields of a protobuf message: varints as int, length-delimited as bytes."""
    result: Dict[int, object] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            result[number], pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            result[number] = data[pos:pos + length]
            pos += length
        elif wire == 5:
            result[number] = struct.unpack_from("<I", data, pos)[0]
            pos += 4
        elif wire == 1:
            result[number] = struct.unpack_from("<Q", data, pos)[0]
            pos += 8
        else:
            raise ValueError("unsupported protobuf wire type %d" % wire)
    return result


def _field_list(data: bytes) -> List[Tuple[int, object]]:
    """The fields of a protobuf message in order, repeated ones each time (varints and length-delimited only)."""
    result: List[Tuple[int, object]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            result.append((number, value))
        elif wire == 2:
            length, pos = _varint(data, pos)
            result.append((number, data[pos:pos + length]))
            pos += length
        else:
            raise ValueError("unexpected protobuf wire type %d" % wire)
    return result


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _encode_field(number: int, value: object) -> bytes:
    if isinstance(value, int):
        return _encode_varint(number << 3) + _encode_varint(value)
    if not isinstance(value, bytes):
        raise TypeError("a protobuf field is an int or bytes, not %r" % (value,))
    return _encode_varint(number << 3 | 2) + _encode_varint(len(value)) + value


def remap_userns(images_dir: str, first: int, count: int) -> Optional[int]:
    """Make the user namespace of a checkpoint map the container's ids to the block ``first``..``first+count-1``
    of this host (``userns-*.img``: uid and gid maps of one extent each, ``0 <block> <count>``, as an
    unprivileged container has); the block it mapped to before, or None without a user namespace.

    The rest of CRIU's images hold the container's own ids (mount options, tmpfs contents, ghost files,
    IPC owners are written as seen inside): only these maps name host ids."""
    found: Optional[int] = None
    for entry in sorted(os.listdir(images_dir)):
        if not (entry.startswith("userns-") and entry.endswith(".img")):
            continue
        path = os.path.join(images_dir, entry)
        with open(path, "rb") as handle:
            data = handle.read()
        if len(data) < 12:
            raise ValueError("%s is truncated" % path)
        size = struct.unpack_from("<I", data, 8)[0]
        body = data[12:12 + size]
        if len(body) != size or len(data) != 12 + size:
            raise ValueError("%s holds more or less than one user namespace" % path)
        out = b""
        for number, extent in _field_list(body):
            values = dict(_field_list(extent)) if isinstance(extent, bytes) and number in (1, 2) else {}
            if set(values) != {1, 2, 3} or values[1] != 0 or values[3] != count:
                raise ValueError("%s maps %r, not one block of %d ids from 0" % (path, values or extent, count))
            lower = values[2]
            if not isinstance(lower, int):
                raise ValueError("%s maps to %r, not an id" % (path, lower))
            if found is not None and lower != found:
                raise ValueError("%s maps uids and gids to different blocks" % path)
            found = lower
            out += _encode_field(number, _encode_field(1, 0) + _encode_field(2, first) + _encode_field(3, count))
        with atomic_file(path, binary=True, durable=False) as handle:
            handle.write(data[:8] + struct.pack("<I", len(out)) + out)
    return found


def read_stats(images_dir: str, kind: str = "dump") -> Dict[str, int]:
    """CRIU's ``stats-<kind>`` file as a dict (times in microseconds); {} when absent or unreadable."""
    try:
        with open(os.path.join(images_dir, "stats-" + kind), "rb") as handle:
            data = handle.read()
        magic, specific, size = struct.unpack_from("<III", data, 0)
        if magic != IMG_SERVICE_MAGIC or specific != STATS_MAGIC:
            return {}
        entry = _fields(data[12:12 + size])
        body = entry.get(1 if kind == "dump" else 2)
        if not isinstance(body, bytes):
            return {}
        names = DUMP_STATS_FIELDS if kind == "dump" else RESTORE_STATS_FIELDS
        return {names[k]: v for k, v in _fields(body).items() if k in names and isinstance(v, int)}
    except (OSError, ValueError, struct.error):
        return {}


@dataclass
class CriuRun:
    action: str
    argv: List[str]
    log: str
    seconds: float
    stats: Dict[str, int] = field(default_factory=dict)


class Criu:
    """One criu binary. Finding it and asking it questions happen on first use, not in the constructor."""

    def __init__(self, binary: Optional[str] = None, cache: Optional[str] = ANSWERS_CACHE) -> None:
        self._wanted = binary
        self._binary: Optional[str] = None
        self._version: Optional[str] = None
        self._features: Dict[str, bool] = {}
        self._cache = cache
        self._cache_key: Optional[str] = None
        self._kdat_dir = KDAT_DIR if cache == ANSWERS_CACHE else None
        self._kdat_checked = False

    def _identity(self) -> str:
        """The binary (path, size, mtime) and this boot: a cached answer holds while all of them do."""
        if self._cache_key is None:
            info = os.stat(self.binary)
            try:
                with open("/proc/sys/kernel/random/boot_id") as handle:
                    boot = handle.read().strip()
            except OSError:
                boot = ""
            self._cache_key = "%s:%d:%d:%s" % (os.path.realpath(self.binary), info.st_size, info.st_mtime_ns, boot)
        return self._cache_key

    def _load_cache(self) -> Dict[str, Dict[str, object]]:
        if not self._cache:
            return {}
        try:
            with open(self._cache) as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}

    def _cached(self) -> Dict[str, object]:
        return self._load_cache().get(self._identity(), {})

    def _remember(self, key: str, value: object) -> None:
        if not self._cache:
            return
        data = self._load_cache()
        answers = data.pop(self._identity(), {})
        answers[key] = value
        data = dict(list(data.items())[-7:])   # a few binaries at most (tests use fake ones)
        data[self._identity()] = answers
        try:
            with atomic_file(self._cache, 0o644, durable=False, dir_mode=0o755) as handle:
                json.dump(data, handle)
        except OSError:
            pass   # a cache only: the next caller asks CRIU again

    @property
    def binary(self) -> str:
        if self._binary is None:
            self._binary = find_criu(self._wanted)
        return self._binary

    def version(self) -> str:
        """``4.1.1``, from ``criu --version``."""
        if self._version is None:
            cached = self._cached().get("version")
            if isinstance(cached, str):
                self._version = cached
                return cached
            proc = subprocess.run([self.binary, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  universal_newlines=True, check=False)
            match = re.search(r"Version:\s*(\S+)", proc.stdout)
            if proc.returncode != 0 or not match:
                raise KernelUnsupported("%s --version failed: %s" % (self.binary, proc.stdout.strip()), "criu")
            self._version = match.group(1)
            self._remember("version", self._version)
        return self._version

    def version_tuple(self) -> Tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", self.version())[:3])

    def check(self) -> Tuple[bool, str]:
        """``criu check``: (passes, its output)."""
        self._keep_kdat_cache_once()
        proc = subprocess.run([self.binary, "check"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, check=False)
        return proc.returncode == 0, proc.stdout.strip()

    def feature(self, name: str) -> bool:
        """``criu check --feature NAME`` (cached): e.g. ``mem_dirty_track``, ``network_lock_nftables``."""
        if name not in self._features:
            cached = self._cached().get("feature:" + name)
            if isinstance(cached, bool):
                self._features[name] = cached
                return cached
            self._keep_kdat_cache_once()
            proc = subprocess.run([self.binary, "check", "--feature", name], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, universal_newlines=True, check=False)
            self._features[name] = proc.returncode == 0 and "Warn" not in proc.stdout
            self._remember("feature:" + name, self._features[name])
        return self._features[name]

    def keep_kdat_cache(self, kdat_dir: Optional[str] = None) -> Optional[str]:
        """Let CRIU load its kerndat cache where it will not keep one itself; the cache file, or None.

        CRIU saves the cache only on a tmpfs (gone at reboot). Where ``/run`` is a tmpfs this only
        removes a ``criu.kdat.tmp`` a killed CRIU left behind, which would keep CRIU from saving a
        cache until reboot. Where it is not, CRIU computes kerndat anew in every run: a dump, the
        target's ``criu lazy-pages`` and the restore of a migration each spend 40 ms of the frozen
        window on it here. So this makes the cache as CRIU would, in a private mount namespace with a
        tmpfs on ``/run`` (``criu check``), and puts it in place; it is tied to this binary and this
        boot (the answers cache records the file it made; another binary's or boot's is made anew,
        CRIU itself drops one built by another binary). Once per binary and boot, about 100 ms.
        """
        directory = kdat_dir or self._kdat_dir
        if not directory or os.geteuid() != 0:
            return None
        path = os.path.join(directory, KDAT_FILE)
        if filesystem_type(directory) == TMPFS_MAGIC:
            self._remove_stale_kdat_tmp(path)
            return None
        try:
            info = os.stat(path)
            current = [info.st_ino, info.st_size, info.st_mtime_ns]
        except OSError:
            current = None
        if current is not None and self._cached().get("kdat") == current:
            return path
        # Not made for this binary and boot (a previous boot's, say: its zero-page PFN would be wrong).
        if current is not None:
            try:
                os.unlink(path)
            except OSError:
                pass
        self._remove_stale_kdat_tmp(path)
        try:
            proc = subprocess.run(
                ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
                 'mount -t tmpfs -o size=1m,mode=0755 ovz-kdat "$1" && "$0" check >/dev/null 2>&1; cat "$1/%s"'
                 % KDAT_FILE, self.binary, directory],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False)
        except OSError:
            return None   # no unshare(1)
        if proc.returncode != 0 or not proc.stdout:
            return None   # the cache only saves time: CRIU computes kerndat itself as before
        try:
            with atomic_file(path, 0o600, durable=False, binary=True, dir_mode=None) as handle:
                handle.write(proc.stdout)
            info = os.stat(path)
        except OSError:
            return None
        self._remember("kdat", [info.st_ino, info.st_size, info.st_mtime_ns])
        return path

    def warm(self, features: Sequence[str] = ()) -> None:
        """Ask now, outside a frozen window, what a dump or restore will ask: the kerndat cache, the
        version and ``features`` (all cached per binary and boot, so a migration's frozen window only
        reads them)."""
        self._keep_kdat_cache_once()
        self.version()
        for name in features:
            self.feature(name)

    def _keep_kdat_cache_once(self) -> None:
        """Before this object's first CRIU run that computes kerndat (all but ``--version``)."""
        if not self._kdat_checked:
            self._kdat_checked = True
            self.keep_kdat_cache()

    @staticmethod
    def _remove_stale_kdat_tmp(path: str) -> None:
        temp = path + ".tmp"
        try:
            if time.time() - os.stat(temp).st_mtime > STALE_KDAT_TMP_S:
                os.unlink(temp)
        except OSError:
            pass

    def argv(self, action: str, images_dir: str, args: Sequence[str], log_name: Optional[str] = None) -> List[str]:
        """``criu <action> -D images_dir -o <log_name> -v4 args...`` (the log defaults to ``<action>.log``)."""
        self._keep_kdat_cache_once()
        return [self.binary, action, "-D", images_dir, "-o", log_name or action + ".log", "-v4"] + list(args)

    def _env(self, owner: Optional[int]) -> Optional[Dict[str, str]]:
        """The environment of a run as a container's owner: CRIU then keeps its kerndat cache in
        ``$XDG_RUNTIME_DIR``, which points at a copy of host root's cache. The copy, not the cache: what
        CRIU computes and saves there in its unprivileged mode (no userfaultfd, say) must never be what
        host root's runs load."""
        if owner is None or not self._kdat_dir:
            return None
        directory = os.path.join(self._kdat_dir, OWNER_KDAT_DIR)
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            with open(os.path.join(self._kdat_dir, KDAT_FILE), "rb") as handle:
                data = handle.read()
            with atomic_file(os.path.join(directory, KDAT_FILE), 0o600, durable=False, binary=True,
                             dir_mode=None) as out:
                out.write(data)
        except OSError:
            pass    # no cache: CRIU computes kerndat itself, as it would anyway
        return dict(os.environ, XDG_RUNTIME_DIR=directory)

    def spawn(self, action: str, images_dir: str, args: Sequence[str],
              owner: Optional[int] = None) -> "subprocess.Popen[bytes]":
        """Start a CRIU run that keeps going in the background (a lazy dump's page server); the caller waits,
        then calls ``reclaim`` when it ran as ``owner`` (see ``run``)."""
        args, preexec = _as_owner(args, owner)
        return subprocess.Popen(self.argv(action, images_dir, args),  # pylint: disable=consider-using-with
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                close_fds=True, preexec_fn=preexec, env=self._env(owner))

    def run(self, action: str, images_dir: str, args: Sequence[str], pass_fds: Sequence[int] = (),
            timeout: Optional[float] = None, what: str = "", owner: Optional[int] = None,
            preexec: Optional[Callable[[], None]] = None, lend_to: Optional[int] = None) -> CriuRun:
        """``criu <action> -D images_dir -o <action>.log -v4 args...``; raises CriuError when it fails.

        ``owner``: the dump runs as the host user that owns the container's user namespace (see
        ``dump_owner``), and the files it wrote are host root's again afterwards. ``preexec`` runs in
        the child before CRIU starts (a private mount namespace for a restore, say). ``lend_to``: the
        images belong to that host user while CRIU runs (the restored root task of an unprivileged
        container, the container's root, reads them), and to host root again afterwards."""
        log = os.path.join(images_dir, action + ".log")
        if owner is not None:
            args, preexec = _as_owner(args, owner)
        if lend_to is not None:
            lend(images_dir, lend_to)
        argv = self.argv(action, images_dir, args)
        began = time.monotonic()
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  universal_newlines=True, pass_fds=tuple(pass_fds), timeout=timeout, check=False,
                                  close_fds=True, preexec_fn=preexec, env=self._env(owner))
        except subprocess.TimeoutExpired:
            raise CriuError("criu %s did not finish within %.0f s; see %s" % (action, timeout or 0, log), log,
                            log_errors(log)) from None
        finally:
            if owner is not None or lend_to is not None:
                reclaim(images_dir)
        seconds = time.monotonic() - began
        if proc.returncode != 0:
            errors = log_errors(log)
            if not errors and proc.stdout.strip():
                errors = proc.stdout.strip().splitlines()[-LOG_TAIL:]
            raise CriuError("%s failed (criu %s exited %d; log %s):\n%s"
                            % (what or "criu " + action, action, proc.returncode, log, "\n".join(errors)),
                            log, errors)
        kind = {"dump": "dump", "pre-dump": "dump", "restore": "restore"}.get(action)
        stats = read_stats(images_dir, kind) if kind else {}
        return CriuRun(action, argv, log, seconds, stats)


def dump_owner(first: Optional[int]) -> Optional[int]:
    """Who dumps an unprivileged container whose user namespace host user ``first`` owns: host root (None),
    or, where host root lacks CAP_SYS_RESOURCE, that owner.

    CRIU reads every process's resource limits with prlimit(2), which the kernel allows only to a caller
    whose ids are the process's, or who holds CAP_SYS_RESOURCE in the process's user namespace. The
    namespace's owner holds every capability in it, so CRIU runs as that user with root's other
    capabilities kept (``--unprivileged``: it then leaves the cgroups out of the images, which the
    restoring node makes anyway, and its kernel-facts cache)."""
    if first is None or ns.has_effective_capability(ns.CAP_SYS_RESOURCE):
        return None
    return first


def _as_owner(args: Sequence[str], owner: Optional[int]) -> Tuple[List[str], Optional[Callable[[], None]]]:
    if owner is None:
        return list(args), None
    return list(args) + ["--unprivileged"], functools.partial(ns.become_keeping_capabilities, owner, owner)


def image_chain(images_dir: str, limit: int = 64) -> List[str]:
    """``images_dir`` and the directories of its parent images (pre-dumps), following ``parent`` links.

    Only siblings of ``images_dir`` are followed (CRIU's links are ``../pre<N>``): ``lend`` and ``reclaim``
    change the owners and modes of what this returns, and a link elsewhere (``/etc``, say) must never
    take them there."""
    chain = [os.path.realpath(images_dir)]
    holder = os.path.dirname(chain[0])
    while len(chain) < limit:
        parent = os.path.join(chain[-1], "parent")
        if not os.path.islink(parent):
            break
        target = os.path.realpath(parent)
        if target in chain or os.path.dirname(target) != holder or not os.path.isdir(target):
            break
        chain.append(target)
    return chain


def lend(images_dir: str, gid: int) -> None:
    """Let host group ``gid`` read ``images_dir``, its parent images (pre-dumps) and the files in them (not
    below) until ``reclaim``; the directories that hold parent images become searchable by it too, for
    CRIU's relative ``parent`` links.

    The restored root task reads images twice over: in its new user namespace before its ids are mapped
    (still host root's ids, without host root's capabilities: the owner's rights), and after, as the
    container's root (``gid`` is its group: the group's rights)."""
    chain = image_chain(images_dir)
    for holder in {os.path.dirname(directory) for directory in chain[1:]} - set(chain):
        st = os.lstat(holder)
        os.lchown(holder, st.st_uid, gid)
        os.chmod(holder, stat.S_IMODE(st.st_mode) | 0o010)
    for directory in chain:
        for path in [directory] + [os.path.join(directory, entry) for entry in os.listdir(directory)]:
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
                os.lchown(path, 0, gid)
                os.chmod(path, stat.S_IMODE(st.st_mode) | (0o050 if stat.S_ISDIR(st.st_mode) else 0o040))


def reclaim(images_dir: str) -> None:
    """Give what a CRIU run as a container's owner wrote in ``images_dir``, and what ``lend`` lent, back to
    host root: the images stay out of reach of the container's root, whose host user that owner is."""
    chain = image_chain(images_dir)
    for holder in {os.path.dirname(directory) for directory in chain[1:]} - set(chain):
        st = os.lstat(holder)
        if st.st_gid != 0:
            os.lchown(holder, st.st_uid, 0)
    for top in chain:
        for directory, dirs, files in os.walk(top):
            for entry in [directory] + [os.path.join(directory, name) for name in dirs + files]:
                try:
                    st = os.lstat(entry)
                    if st.st_uid != 0 or st.st_gid != 0:
                        os.lchown(entry, 0, 0)
                except FileNotFoundError:
                    continue
