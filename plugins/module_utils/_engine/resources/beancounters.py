# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""OpenVZ's user beancounters, rebuilt from cgroup counters and the container's own /proc.

Every parameter has ``held``, ``maxheld``, ``barrier``, ``limit``, ``failcnt``
and ``enforced``. ``held`` is measured each time from the kernel:

================  =====  ==================================================================
parameter         unit   held comes from
================  =====  ==================================================================
kmemsize          bytes  v1 memory.kmem.usage_in_bytes; v2 memory.stat ``kernel``
lockedpages       pages  VmLck of the container's processes
privvmpages       pages  VmData+VmStk of the container's processes
shmpages          pages  SysV shm segments in its IPC namespace (by size) + other shmem (tmpfs)
numproc           count  pids.current (tasks, as OpenVZ counts them)
physpages         pages  v1 memory.usage_in_bytes; v2 memory.current
vmguarpages       pages  = privvmpages (the quantity the guarantee is about)
oomguarpages      pages  = physpages + swappages, as in OpenVZ
numtcpsock        count  TCP sockets (not TIME_WAIT) in its network namespace
numflock          count  /proc/locks entries of its processes
numpty            count  ptys allocated in its own devpts
numsiginfo        count  pending signals of its processes (SigPnd + ShdPnd bits)
tcpsndbuf         bytes  send queues of its TCP sockets
tcprcvbuf         bytes  receive queues of its TCP sockets
othersockbuf      bytes  send queues of its UDP sockets
dgramrcvbuf       bytes  receive queues of its UDP sockets
numothersock      count  UDP, raw, unix, packet and netlink (not kernel) sockets in its netns
dcachesize        bytes  v1 dentry/inode slabs (memory.kmem.slabinfo; None where the kernel leaves it
                         empty, as 6.18 does); v2 memory.stat slab_reclaimable
numfile           count  open file descriptors of its processes
numiptent         count  nftables rules (and legacy iptables rules) in its network namespace
swappages         pages  v1 memsw.usage - usage; v2 memory.swap.current
================  =====  ==================================================================

``maxheld`` is the larger of the kernel's own peak (where it keeps one) and
every ``held`` seen since the container started, kept in ``run/<name>/ubc.json``
(OpenVZ: the maximum over the container's life since its start).

``enforced`` says whether the kernel holds the container to a limit on that
parameter on this host. Where it has no mechanism, barrier and limit are
stored and reported, never applied, and ``enforced`` is false.

Root inside reads the table at ``/run/ovz/user_beancounters``. It is written
as a start returns (``quick``), after every limits change and at each ``ovz_info``
(``ContainerManager.beancounter_table``), unless the live view of ``bcd.py`` is
mounted over it. A restore does not write it: a full measurement would lengthen a
migration's frozen window by tens of milliseconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Set, Tuple

from ..base.errors import KernelUnsupported, OvzError
from ..base.files import atomic_file
from ..kernel import cgroups as cg
from ..kernel import namespaces as ns
from ..kernel.rootfs import GUEST_BEANCOUNTERS, mount_points
from .limits import PAGE_SIZE, UBC_UNITS, V1_UNLIMITED_FLOOR

UBC_ORDER = ("kmemsize", "lockedpages", "privvmpages", "shmpages", "numproc", "physpages", "vmguarpages",
             "oomguarpages", "numtcpsock", "numflock", "numpty", "numsiginfo", "tcpsndbuf", "tcprcvbuf",
             "othersockbuf", "dgramrcvbuf", "numothersock", "dcachesize", "numfile", "numiptent", "swappages")
LONG_MAX = 9223372036854775807
STATE_FILE = "ubc.json"
GUEST_FILE = "user_beancounters"

NO_MECHANISM = {
    "lockedpages": "no per-container limit: RLIMIT_MEMLOCK is per process and root inside has CAP_IPC_LOCK "
                   "(locked pages count against ram)",
    "privvmpages": "no per-cgroup limit on virtual memory (RLIMIT_AS is per process); ram limits what is used",
    "shmpages": "no per-container limit: kernel.shmall of its IPC namespace is root's to change inside; "
                "shm and tmpfs pages count against ram",
    "vmguarpages": "no allocation guarantees in the Linux kernel",
    "oomguarpages": "no OOM guarantees in the Linux kernel (memory.min/low protect from reclaim, not from the "
                    "OOM killer)",
    "numtcpsock": "no per-namespace or per-cgroup socket count limit",
    "numflock": "RLIMIT_LOCKS is not enforced by Linux",
    "numpty": "no per-container limit: its devpts is root's to remount inside (max=)",
    "numsiginfo": "RLIMIT_SIGPENDING is per user, and root inside is the host's root uid",
    "othersockbuf": "no per-cgroup limit for non-TCP socket buffers (they count against ram)",
    "dgramrcvbuf": "no per-cgroup limit for datagram receive buffers (they count against ram)",
    "numothersock": "no per-namespace or per-cgroup socket count limit",
    "dcachesize": "no separate dentry/inode cache limit (the caches count against ram)",
    "numfile": "RLIMIT_NOFILE is per process and fs.file-max host-wide",
    "numiptent": "no limit on the number of netfilter rules",
}


def _read(path: str) -> Optional[str]:
    try:
        return cg.read_file(path)
    except OSError:
        return None


def _int(path: str) -> Optional[int]:
    text = _read(path)
    if text is None:
        return None
    try:
        value = int(text.split()[0])
    except (ValueError, IndexError):
        return None
    return None if value >= V1_UNLIMITED_FLOOR else value


def _keyed(path: str) -> Dict[str, int]:
    """``key value`` lines (memory.stat, memory.events, pids.events)."""
    result: Dict[str, int] = {}
    for line in (_read(path) or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                result[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return result


def _subtree_sum(directory: str, filename: str, key: str) -> int:
    return sum(_keyed(os.path.join(sub, filename)).get(key, 0) for sub in _subdirs(directory))


def _pages(value: Optional[int]) -> Optional[int]:
    return None if value is None else -(-value // PAGE_SIZE)


def _subdirs(directory: str) -> List[str]:
    return [d for d, _dirs, _files in os.walk(directory)]


def container_pids(directory: str) -> List[int]:
    """Every process (thread group) in a cgroup directory and below."""
    pids: Set[int] = set()
    for sub in _subdirs(directory):
        text = _read(os.path.join(sub, "cgroup.procs"))
        if text:
            pids.update(int(p) for p in text.split())
    return sorted(pids)


# -- what the processes hold -------------------------------------------------------------
def process_counters(pids: Iterable[int]) -> Dict[str, int]:
    totals = {"lockedpages": 0, "privvmpages": 0, "numsiginfo": 0, "numfile": 0}
    for pid in pids:
        status = _read("/proc/%d/status" % pid)
        if status is None:
            continue
        fields = {}
        for line in status.splitlines():
            key, _sep, value = line.partition(":")
            fields[key] = value.strip()
        totals["lockedpages"] += _kb_pages(fields.get("VmLck"))
        totals["privvmpages"] += _kb_pages(fields.get("VmData")) + _kb_pages(fields.get("VmStk"))
        for key in ("SigPnd", "ShdPnd"):
            try:
                totals["numsiginfo"] += bin(int(fields.get(key, "0"), 16)).count("1")
            except ValueError:
                pass
        try:
            totals["numfile"] += len(os.listdir("/proc/%d/fd" % pid))
        except OSError:
            pass
    return totals


def _kb_pages(text: Optional[str]) -> int:
    if not text:
        return 0
    try:
        return int(text.split()[0]) * 1024 // PAGE_SIZE
    except (ValueError, IndexError):
        return 0


def file_locks(pids: Iterable[int], text: Optional[str] = None) -> int:
    """Entries of /proc/locks held by these processes (waiters, ``->`` lines, not counted)."""
    wanted = {str(p) for p in pids}
    if text is None:
        text = _read("/proc/locks") or ""
    count = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) > 4 and parts[1] != "->" and parts[4] in wanted:
            count += 1
    return count


def ptys(init_pid: int) -> int:
    try:
        names = os.listdir("/proc/%d/root/dev/pts" % init_pid)
    except OSError:
        return 0
    return sum(1 for n in names if n.isdigit())


# -- its network namespace ---------------------------------------------------------------
def parse_inet(text: str) -> List[Tuple[str, int, int]]:
    """(state, tx_queue, rx_queue) for each line of /proc/net/{tcp,udp,raw}[6]."""
    rows = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 5 or ":" not in parts[4]:
            continue
        tx, _sep, rx = parts[4].partition(":")
        try:
            rows.append((parts[3], int(tx, 16), int(rx, 16)))
        except ValueError:
            continue
    return rows


SOCKET_COUNTERS = ("numtcpsock", "tcpsndbuf", "tcprcvbuf", "numothersock", "othersockbuf", "dgramrcvbuf")


def socket_counters(init_pid: int) -> Dict[str, int]:
    base = "/proc/%d/net" % init_pid
    out = dict.fromkeys(SOCKET_COUNTERS, 0)
    for name in ("tcp", "tcp6"):
        for state, tx, rx in parse_inet(_read(os.path.join(base, name)) or ""):
            if state == "06":           # TIME_WAIT: no socket any more
                continue
            out["numtcpsock"] += 1
            if state != "0A":           # a listener's "queues" are its backlog
                out["tcpsndbuf"] += tx
                out["tcprcvbuf"] += rx
    for name in ("udp", "udp6", "udplite", "udplite6"):
        for _state, tx, rx in parse_inet(_read(os.path.join(base, name)) or ""):
            out["numothersock"] += 1
            out["othersockbuf"] += tx
            out["dgramrcvbuf"] += rx
    for name in ("raw", "raw6", "unix", "packet"):
        text = _read(os.path.join(base, name))
        if text:
            out["numothersock"] += max(0, len(text.splitlines()) - 1)
    for line in (_read(os.path.join(base, "netlink")) or "").splitlines()[1:]:
        parts = line.split()
        if len(parts) > 2 and parts[2] != "0":   # Pid 0: the kernel's own end
            out["numothersock"] += 1
    return out


def _run_in_ns(pid: int, kind: str, argv: List[str], timeout: float = 10.0) -> Optional[str]:
    """Run a host binary with one namespace of ``pid`` entered; its stdout, or None."""
    candidates = [shutil.which(argv[0]), "/usr/sbin/" + argv[0], "/sbin/" + argv[0]]
    binary = next((p for p in candidates if p and os.path.exists(p)), None)
    if binary is None:
        return None
    try:
        fd = os.open("/proc/%d/ns/%s" % (pid, kind), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        proc = subprocess.run([binary] + argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, timeout=timeout, check=False,
                              preexec_fn=lambda: ns.setns(fd, ns.NAMESPACE_FLAGS[kind]))
    except (OSError, subprocess.SubprocessError):
        return None
    finally:
        os.close(fd)
    return proc.stdout.decode(errors="replace") if proc.returncode == 0 else None


def netfilter_rules(init_pid: int) -> int:
    count = 0
    text = _run_in_ns(init_pid, "net", ["nft", "-j", "list", "ruleset"])
    if text:
        try:
            count += sum(1 for item in json.loads(text).get("nftables", []) if "rule" in item)
        except (ValueError, AttributeError):
            pass
    for names, save in (("ip_tables_names", "iptables-legacy-save"), ("ip6_tables_names", "ip6tables-legacy-save")):
        if _read("/proc/%d/net/%s" % (init_pid, names)):
            text = _run_in_ns(init_pid, "net", [save]) or ""
            count += sum(1 for line in text.splitlines() if line.startswith("-A "))
    return count


def sysv_shm(init_pid: int) -> Tuple[int, int]:
    """(pages by segment size, resident bytes) of the SysV shm segments in its IPC namespace."""
    text = _run_in_ns(init_pid, "ipc", ["cat", "/proc/sysvipc/shm"])
    if not text:
        return 0, 0
    lines = text.splitlines()
    header = lines[0].split() if lines else []
    try:
        size_col, rss_col = header.index("size"), header.index("rss")
    except ValueError:
        return 0, 0
    pages = resident = 0
    for line in lines[1:]:
        parts = line.split()
        if len(parts) > max(size_col, rss_col):
            pages += -(-int(parts[size_col]) // PAGE_SIZE)
            resident += int(parts[rss_col])
    return pages, resident


def slab_bytes(directory: str, names: Tuple[str, ...] = ("dentry", "inode_cache")) -> Optional[int]:
    """Bytes in the dentry/inode slabs charged to a v1 memory cgroup (memory.kmem.slabinfo), subtree summed."""
    total = 0
    found = False
    for sub in _subdirs(directory):
        for line in (_read(os.path.join(sub, "memory.kmem.slabinfo")) or "").splitlines():
            parts = line.split()
            if len(parts) < 4 or line.startswith(("#", "slabinfo")):
                continue
            found = True                         # newer kernels (6.18 here) leave the file empty
            if parts[0] in names or parts[0].endswith("inode_cache"):
                try:
                    total += int(parts[1]) * int(parts[3])
                except ValueError:
                    pass
    return total if found else None


# -- the table ----------------------------------------------------------------------------
def _pair(value: Optional[List[Optional[int]]]) -> Tuple[Optional[int], Optional[int]]:
    if not value:
        return None, None
    return value[0], value[1]


@dataclass
class Counters:
    """What one cgroup backend measures of the memory and pids controllers, by beancounter name."""

    held: Dict[str, Optional[int]] = field(default_factory=dict)
    peak: Dict[str, Optional[int]] = field(default_factory=dict)
    failcnt: Dict[str, int] = field(default_factory=dict)
    enforced: Dict[str, bool] = field(default_factory=dict)
    mechanism: Dict[str, str] = field(default_factory=lambda: dict(NO_MECHANISM))
    shmem: int = 0      # bytes of shared memory (tmpfs, SysV) charged to the container


def _memory_v1(mem: str, ubc: Mapping[str, Any], counters: Counters) -> None:
    held, peak, failcnt, enforced, mechanism = (counters.held, counters.peak, counters.failcnt, counters.enforced,
                                                counters.mechanism)
    usage = _int(os.path.join(mem, "memory.usage_in_bytes"))
    held["physpages"] = _pages(usage)
    peak["physpages"] = _pages(_int(os.path.join(mem, "memory.max_usage_in_bytes")))
    # This kernel does not count memory.failcnt any more (6.18: always 0), so the OOM kills
    # of the subtree count too; oom_control's oom_kill is local to the victim's cgroup on v1.
    failcnt["physpages"] = max(_int(os.path.join(mem, "memory.failcnt")) or 0,
                               _subtree_sum(mem, "memory.oom_control", "oom_kill"))
    enforced["physpages"], mechanism["physpages"] = True, "memory.limit_in_bytes"
    memsw = _int(os.path.join(mem, "memory.memsw.usage_in_bytes"))
    if memsw is not None:
        held["swappages"] = _pages(max(0, memsw - (usage or 0)))
        failcnt["swappages"] = _int(os.path.join(mem, "memory.memsw.failcnt")) or 0
        enforced["swappages"], mechanism["swappages"] = True, "memory.memsw.limit_in_bytes (ram+swap)"
    else:
        held["swappages"] = 0
        enforced["swappages"], mechanism["swappages"] = False, "no swap accounting (memory.memsw.*) on this host"
    held["kmemsize"] = _int(os.path.join(mem, "memory.kmem.usage_in_bytes"))
    peak["kmemsize"] = _int(os.path.join(mem, "memory.kmem.max_usage_in_bytes"))
    failcnt["kmemsize"] = _int(os.path.join(mem, "memory.kmem.failcnt")) or 0
    kmem = _pair(ubc.get("kmemsize"))[1]
    honoured = kmem is not None and _int(os.path.join(mem, "memory.kmem.limit_in_bytes")) == kmem
    enforced["kmemsize"] = honoured
    mechanism["kmemsize"] = "memory.kmem.limit_in_bytes" if honoured else \
        "memory.kmem.limit_in_bytes is ignored by this kernel (kernel memory counts against ram)" \
        if kmem is not None else "memory.kmem.limit_in_bytes, if this kernel honours it (checked once a " \
                                 "limit is set); kernel memory counts against ram"
    tcp_file = os.path.join(mem, "memory.kmem.tcp.limit_in_bytes")
    snd, rcv = _pair(ubc.get("tcpsndbuf"))[1], _pair(ubc.get("tcprcvbuf"))[1]
    joint = snd is not None and rcv is not None and _int(tcp_file) == snd + rcv
    tcp_fail = _int(os.path.join(mem, "memory.kmem.tcp.failcnt")) or 0
    for key in ("tcpsndbuf", "tcprcvbuf"):
        enforced[key] = joint
        failcnt[key] = tcp_fail if joint else 0
        mechanism[key] = ("memory.kmem.tcp.limit_in_bytes = tcpsndbuf + tcprcvbuf limits (jointly)" if joint
                          else "memory.kmem.tcp.limit_in_bytes, jointly, once both tcpsndbuf and tcprcvbuf "
                               "have a limit" if os.path.exists(tcp_file)
                          else "no TCP buffer limit in this kernel's memory cgroup")
    stat = _keyed(os.path.join(mem, "memory.stat"))
    counters.shmem = stat.get("total_shmem", stat.get("shmem", 0))
    held["dcachesize"] = slab_bytes(mem)


def _memory_v2(mem: str, ubc: Mapping[str, Any], counters: Counters) -> None:
    held, peak, failcnt, enforced, mechanism = (counters.held, counters.peak, counters.failcnt, counters.enforced,
                                                counters.mechanism)
    held["physpages"] = _pages(_int(os.path.join(mem, "memory.current")))
    peak["physpages"] = _pages(_int(os.path.join(mem, "memory.peak")))
    failcnt["physpages"] = _keyed(os.path.join(mem, "memory.events")).get("max", 0)
    enforced["physpages"], mechanism["physpages"] = True, "memory.max"
    swap_current = _int(os.path.join(mem, "memory.swap.current"))
    if swap_current is not None:
        held["swappages"] = _pages(swap_current)
        peak["swappages"] = _pages(_int(os.path.join(mem, "memory.swap.peak")))
        failcnt["swappages"] = _keyed(os.path.join(mem, "memory.swap.events")).get("fail", 0)
        enforced["swappages"], mechanism["swappages"] = True, "memory.swap.max"
    else:
        held["swappages"] = 0
        enforced["swappages"], mechanism["swappages"] = False, "no swap controller (memory.swap.*) on this host"
    stat = _keyed(os.path.join(mem, "memory.stat"))
    held["kmemsize"] = stat.get("kernel", sum(stat.get(k, 0) for k in (
        "slab", "kernel_stack", "pagetables", "percpu", "sock")))
    enforced["kmemsize"] = False
    mechanism["kmemsize"] = "cgroup v2 has no separate kernel memory limit (it counts against ram)"
    for key in ("tcpsndbuf", "tcprcvbuf"):
        enforced[key] = False
        mechanism[key] = "cgroup v2 has no separate socket buffer limit (it counts against ram)"
    counters.shmem = stat.get("shmem", 0)
    held["dcachesize"] = stat.get("slab_reclaimable")


def _numproc_failures_v1(pids_dir: str) -> int:
    # v1 counts failed forks in the cgroup of the forking task (payload, .ovz-exec).
    return _subtree_sum(pids_dir, "pids.events", "max")


def _numproc_failures_v2(pids_dir: str) -> int:
    # v2 before Linux 6.14 counts as v1 does; since 6.14 (which added pids.events.local) in the
    # cgroup whose pids.max was hit and its ancestors.
    if os.path.exists(os.path.join(pids_dir, "pids.events.local")):
        return _keyed(os.path.join(pids_dir, "pids.events")).get("max", 0)
    return _subtree_sum(pids_dir, "pids.events", "max")


# How each cgroup backend (by its version) is read: the memory controller, the failed forks.
READERS: Dict[int, Tuple[Callable[[str, Mapping[str, Any], Counters], None], Callable[[str], int]]] = {
    1: (_memory_v1, _numproc_failures_v1),
    2: (_memory_v2, _numproc_failures_v2),
}


def collect(cgroups: cg.ContainerCgroups, init_pid: int, limits: Mapping[str, Any],
            state_dir: Optional[str] = None, guest_dir: Optional[str] = None,
            ctid: str = "0", persist: bool = True, quick: bool = False) -> Dict[str, Dict[str, Any]]:
    """The beancounter table of a running container; ``held`` measured now.

    ``held`` is None where this host gives no way to measure it (v1
    ``dcachesize`` on kernels whose memory.kmem.slabinfo is empty).
    ``state_dir`` keeps ``maxheld`` between calls; ``guest_dir`` gets a
    ``user_beancounters`` snapshot that root inside reads at ``/run/ovz/user_beancounters``
    (``publish``: an OvzError names the file when it cannot be written).
    With ``persist`` false (check mode) neither file is written. ``quick``, for the table
    made as a start returns: the counters that walk the kernel's tables or need a helper
    process in the container's namespaces (sockets, file locks, firewall rules, SysV shm;
    about 30 ms here, /proc/net/tcp walks the whole host's hash) are given as 0, which is
    what the new namespaces of a container whose init has just been exec'd hold.
    """
    memory_of, numproc_failures = READERS[cgroups.backend.version]
    counters = Counters()
    held, peak, failcnt = counters.held, counters.peak, counters.failcnt

    def controller(kind: str) -> Optional[str]:
        try:
            return cgroups.controller_dir(kind)
        except (KernelUnsupported, KeyError):
            return None

    mem = controller("memory")
    pids_dir = controller("pids")
    ubc = limits.get("ubc") or {}
    if mem:
        memory_of(mem, ubc, counters)
    shmem = counters.shmem
    if pids_dir:
        held["numproc"] = _int(os.path.join(pids_dir, "pids.current"))
        peak["numproc"] = _int(os.path.join(pids_dir, "pids.peak"))
        failcnt["numproc"] = numproc_failures(pids_dir)
        counters.enforced["numproc"], counters.mechanism["numproc"] = True, "pids.max"
    procs_dir = pids_dir or mem or next(iter(cgroups.paths.values()))
    pids = container_pids(procs_dir)
    held.update(process_counters(pids))
    held["numpty"] = ptys(init_pid)
    if quick:
        held.update(dict.fromkeys(SOCKET_COUNTERS, 0), numflock=0, numiptent=0)
        sysv_pages, sysv_resident = 0, 0
    else:
        held["numflock"] = file_locks(pids)
        held.update(socket_counters(init_pid))
        held["numiptent"] = netfilter_rules(init_pid)
        sysv_pages, sysv_resident = sysv_shm(init_pid)
    held["shmpages"] = sysv_pages + (_pages(max(0, shmem - sysv_resident)) or 0)
    held["vmguarpages"] = held.get("privvmpages")
    held["oomguarpages"] = (held.get("physpages") or 0) + (held.get("swappages") or 0)

    # barrier and limit: what the operator set
    ram, swap = limits.get("ram"), limits.get("swap")
    pairs: Dict[str, Tuple[Optional[int], Optional[int]]] = {}
    for name in UBC_ORDER:
        pairs[name] = _pair(ubc.get(name))
    pairs["physpages"] = (_pages(ram), _pages(ram)) if ram is not None else (None, None)
    swap_limit = swap if swap is not None else (0 if ram is not None else None)
    pairs["swappages"] = (_pages(swap_limit), _pages(swap_limit)) if swap_limit is not None else (None, None)
    pairs["numproc"] = _pair(limits.get("numproc"))

    previous = _load_state(state_dir)
    table: Dict[str, Dict[str, Any]] = {}
    for name in UBC_ORDER:
        value = held.get(name)
        value = int(value) if value is not None else None
        maxheld = max([v for v in (value, peak.get(name), previous.get(name)) if v is not None] or [0])
        barrier, limit = pairs[name]
        table[name] = {
            "held": value,
            "maxheld": maxheld,
            "barrier": barrier,
            "limit": limit,
            "failcnt": int(failcnt.get(name, 0)),
            "enforced": bool(counters.enforced.get(name, False)),
            "unit": UBC_UNITS[name],
            "mechanism": counters.mechanism.get(name, ""),
        }
    if state_dir and persist:
        _save_state(state_dir, {k: v["maxheld"] for k, v in table.items()}, previous)
    if guest_dir and persist:
        publish(guest_dir, init_pid, table, ctid)
    return table


def publish(guest_dir: str, init_pid: int, table: Mapping[str, Mapping[str, Any]], ctid: str) -> bool:
    """Write ``table`` where root inside reads it (``/run/ovz/user_beancounters``, on the host ``guest_dir``);
    False when the live view of ``bcd.py`` is mounted there, and the snapshot under it is left alone."""
    if guest_view_mounted(init_pid):
        return False
    write_guest_file(guest_dir, render(table, ctid))
    return True


def guest_view_mounted(init_pid: int) -> bool:
    """Whether something (the live view of ovz-bcd) is mounted on /run/ovz/user_beancounters inside.

    The snapshot underneath is then left alone: renaming a new file over it
    would make the kernel detach that mount from the container.
    """
    return any(point == GUEST_BEANCOUNTERS for point, _fstype in mount_points("/proc/%d/mountinfo" % init_pid))


def _load_state(state_dir: Optional[str]) -> Dict[str, int]:
    if not state_dir:
        return {}
    try:
        with open(os.path.join(state_dir, STATE_FILE)) as handle:
            data = json.load(handle)
        return {k: int(v) for k, v in data.get("maxheld", {}).items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def _save_state(state_dir: str, maxheld: Dict[str, int], previous: Dict[str, int]) -> None:
    if maxheld == previous or not os.path.isdir(state_dir):
        return
    try:
        with atomic_file(os.path.join(state_dir, STATE_FILE), 0o600, durable=False, dir_mode=None) as handle:
            handle.write(json.dumps({"maxheld": maxheld}, sort_keys=True) + "\n")
    except OSError:
        pass


def write_guest_file(guest_dir: str, text: str) -> None:
    """The snapshot root inside reads at /run/ovz/user_beancounters (rename: a symlink placed inside is replaced,
    not followed). An OvzError names the file when it cannot be written."""
    path = os.path.join(guest_dir, GUEST_FILE)
    try:
        # An unprivileged container's root owns its guest dir (idmap.py) and must read the file as its owner.
        stat_dir = os.stat(guest_dir)
        owner = (stat_dir.st_uid, stat_dir.st_gid) if stat_dir.st_uid != 0 else None
        with atomic_file(path, 0o400, durable=False, owner=owner, dir_mode=None) as handle:
            handle.write(text)
    except OSError as exc:
        raise OvzError("writing the beancounter table that root inside reads at %s (%s on the host): %s"
                       % (GUEST_BEANCOUNTERS, path, exc.strerror or exc)) from None


def render(table: Mapping[str, Mapping[str, Any]], uid: str = "0") -> str:
    """The table in /proc/user_beancounters format (unlimited shown as LONG_MAX, as OpenVZ does)."""
    lines = ["Version: 2.5",
             "       uid  resource                     held              maxheld              barrier"
             "                limit              failcnt"]
    first = True
    for name in UBC_ORDER:
        row = table.get(name)
        if row is None:
            continue
        barrier = LONG_MAX if row["barrier"] is None else row["barrier"]
        limit = LONG_MAX if row["limit"] is None else row["limit"]
        lines.append("%10s  %-12s %20d %20d %20d %20d %20d" % (
            (str(uid) + ":") if first else "", name, row["held"] or 0, row["maxheld"], barrier, limit, row["failcnt"]))
        first = False
    return "\n".join(lines) + "\n"
