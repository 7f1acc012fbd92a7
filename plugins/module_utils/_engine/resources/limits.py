# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Resource limits: OpenVZ parameters -> cgroup files, validation, live apply, read back.

The persisted form (``ContainerConfig.limits``) holds only what differs from
the defaults, so two equal dicts mean equal limits::

    cpuunits  int 8..500000 (default 1000, not stored)
    cpulimit  int, percent of one CPU (absent: unlimited)
    cpus      int, number of CPUs (absent: unlimited)
    cpumask   str, canonical CPU list such as "0-1,3" (absent: all)
    ram       int, bytes (absent: unlimited)
    swap      int, bytes (absent: 0 when ram is set, else unlimited)
    numproc   [barrier, limit] (absent: unlimited)
    ioprio    int 0..7 (absent: the kernel's default BFQ weight, 100)
    iolimit   int, bytes/s (absent: unlimited)
    iopslimit int, operations/s (absent: unlimited)
    ubc       {parameter: [barrier, limit]} for the other beancounters

Mapping (parameter -> cgroup v1 file -> cgroup v2 file -> conversion):

    cpuunits  cpu.shares             cpu.weight       shares = units*1024/1000 (max 262144);
                                                      weight = units/10 in 1..10000
    cpulimit  cpu.cfs_quota_us       cpu.max          quota = pct*1000 us per 100000 us period
    cpus      (same quota)           (same)           quota capped at cpus*100 %
    cpumask   cpuset.cpus            cpuset.cpus      CPU list, checked against the host's CPUs
    ram       memory.limit_in_bytes  memory.max       bytes
    swap      memory.memsw.limit_in_bytes = ram+swap  memory.swap.max = swap
    numproc   pids.max               pids.max         the limit of barrier:limit
    ioprio    blkio.bfq.weight       io.bfq.weight    OpenVZ's table 320,365,410,460,500,550,600,640
    iolimit   blkio.throttle.{read,write}_bps_device  io.max rbps/wbps   per backing device
    iopslimit blkio.throttle.{read,write}_iops_device io.max riops/wiops per backing device
              (v1 blk-throttle is flat, not hierarchical: its files are written in every
              cgroup of the container's subtree, ``payload`` included)
    ubc tcpsndbuf+tcprcvbuf  memory.kmem.tcp.limit_in_bytes (v1 only; the sum of both limits)
    ubc kmemsize             memory.kmem.limit_in_bytes (v1, where the kernel still honours it)

Every file is written through ``cgroups.write_file`` (one ``write()`` per
value) and read through ``cgroups.read_file``. The ``ovz_limits`` operation that
runs this for one container under its lock is ``ops/limits.py``.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from ..base.errors import InvalidParameter, KernelUnsupported, OvzError
from ..base.sizes import parse_count, parse_pair, parse_size
from ..kernel import cgroups as cg
from ..kernel.storage import Storage, mount_entry

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
CPUUNITS_MIN, CPUUNITS_MAX, CPUUNITS_DEFAULT = 8, 500000, 1000
CFS_PERIOD_US = 100000
V1_MAX_SHARES = 262144
V2_MAX_WEIGHT = 10000
# OpenVZ's own ioprio -> I/O weight table (kernel/bc/io_prio.c of the OpenVZ kernel).
IOPRIO_WEIGHTS = (320, 365, 410, 460, 500, 550, 600, 640)
UNLIMITED = ("unlimited", "max", "inf", "infinity", "none")
V1_UNLIMITED_FLOOR = 1 << 62          # v1 shows "no limit" as PAGE_COUNTER_MAX*PAGE_SIZE

LIMIT_PARAMS = ("cpuunits", "cpulimit", "cpus", "cpumask", "ram", "swap", "numproc", "ioprio", "iolimit",
                "iopslimit", "ubc")

# The beancounters set through ``ubc``; ram/swap/numproc have their own options.
UBC_UNITS: Dict[str, str] = {
    "kmemsize": "bytes", "lockedpages": "pages", "privvmpages": "pages", "shmpages": "pages",
    "numproc": "count", "physpages": "pages", "vmguarpages": "pages", "oomguarpages": "pages",
    "numtcpsock": "count", "numflock": "count", "numpty": "count", "numsiginfo": "count",
    "tcpsndbuf": "bytes", "tcprcvbuf": "bytes", "othersockbuf": "bytes", "dgramrcvbuf": "bytes",
    "numothersock": "count", "dcachesize": "bytes", "numfile": "count", "numiptent": "count",
    "swappages": "pages",
}
UBC_OWN_OPTION = {"physpages": "ram", "swappages": "swap", "numproc": "numproc"}


# -- host facts -------------------------------------------------------------------
def parse_cpu_list(text: str, param: str = "cpumask") -> Set[int]:
    """``0-3,6`` -> {0, 1, 2, 3, 6}."""
    cpus: Set[int] = set()
    text = str(text).strip()
    if not text:
        return cpus
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                low, high = part.split("-", 1)
                first, last = int(low), int(high)
                if first < 0 or last < first:
                    raise ValueError(part)
                cpus.update(range(first, last + 1))
            else:
                number = int(part)
                if number < 0:
                    raise ValueError(part)
                cpus.add(number)
        except ValueError:
            raise InvalidParameter("expected a CPU list such as 0-3,6 or 'all', got %r" % (text,), param) from None
    return cpus


def format_cpu_list(cpus: Iterable[int]) -> str:
    ordered = sorted(set(cpus))
    ranges: List[str] = []
    start: Optional[int] = None
    prev: Optional[int] = None
    for cpu in [*ordered, None]:
        if cpu is not None and prev is not None and cpu == prev + 1:
            prev = cpu
            continue
        if start is not None:
            ranges.append(str(start) if start == prev else "%s-%s" % (start, prev))
        start = prev = cpu
    return ",".join(ranges)


@dataclass
class HostInfo:
    """What validation needs to know about the host; read once, no side effects."""

    cpus: Set[int]
    cgroup_version: int
    memsw: bool = True           # v1: memory.memsw.* exists (swap accounting)

    @classmethod
    def probe(cls, backend: cg.CgroupBackend) -> "HostInfo":
        try:
            online = cg.read_file("/sys/devices/system/cpu/online")
        except OSError:
            online = ""
        cpus = parse_cpu_list(online) if online else set(range(os.cpu_count() or 1))
        memsw = True
        if backend.version == 1:
            try:
                memsw = os.path.exists(os.path.join(backend.mountpoint("memory"), "memory.memsw.limit_in_bytes"))
            except KeyError:
                memsw = False
        return cls(cpus=cpus, cgroup_version=backend.version, memsw=memsw)


# -- validation ---------------------------------------------------------------------
def _is_unlimited(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() in UNLIMITED


def _int_in(value: Any, param: str, low: int, high: Optional[int]) -> int:
    if isinstance(value, bool):
        raise InvalidParameter("expected a whole number, got %r" % (value,), param)
    try:
        number = int(str(value).strip())
    except ValueError:
        raise InvalidParameter("expected a whole number, got %r" % (value,), param) from None
    if number < low or (high is not None and number > high):
        upper = str(high) if high is not None else "any"
        raise InvalidParameter("must be between %d and %s, got %d" % (low, upper, number), param)
    return number


def parse_ubc_value(name: str, value: Any) -> List[Optional[int]]:
    """``barrier:limit`` in the parameter's unit: pages (a plain number, or a size with a unit), bytes, count."""
    param = "ubc"
    unit = UBC_UNITS[name]
    label = "ubc.%s" % name
    if isinstance(value, (list, tuple)) and len(value) == 2:
        text = "%s:%s" % tuple("unlimited" if v is None else v for v in value)
    else:
        text = str(value)
    parts = text.split(":")
    if unit == "pages":
        # OpenVZ: a plain number is pages, a number with a unit suffix is bytes.
        converted = []
        for part in parts:
            stripped = part.strip()
            if stripped.lower() in UNLIMITED:
                converted.append("unlimited")
            elif stripped.isdigit():
                converted.append(stripped)
            else:
                converted.append(str(-(-parse_size(stripped, label) // PAGE_SIZE)))
        text = ":".join(converted)
    try:
        barrier, limit = parse_pair(text, param, as_size=(unit == "bytes"))
    except InvalidParameter as exc:
        raise InvalidParameter("%s: %s" % (label, str(exc).replace("ubc: ", "")), param) from None
    return [barrier, limit]


def normalize_request(params: Mapping[str, Any]) -> Dict[str, Any]:
    """Validate every given parameter (``None`` = not given).

    Returns ``{param: value}`` in the persisted form; a value of ``None``
    means "back to the default" (unlimited, all CPUs, ...).
    """
    result: Dict[str, Any] = {}
    for key in params:
        if key not in LIMIT_PARAMS:
            raise InvalidParameter("unknown limit %r" % (key,), key)
    value = params.get("cpuunits")
    if value is not None:
        units = _int_in(value, "cpuunits", CPUUNITS_MIN, CPUUNITS_MAX)
        result["cpuunits"] = None if units == CPUUNITS_DEFAULT else units
    value = params.get("cpulimit")
    if value is not None:
        pct = _int_in(str(value).rstrip("%"), "cpulimit", 0, None)
        result["cpulimit"] = pct or None
    value = params.get("cpus")
    if value is not None:
        number = 0 if _is_unlimited(value) else _int_in(value, "cpus", 0, None)
        result["cpus"] = number or None
    value = params.get("cpumask")
    if value is not None:
        text = str(value).strip()
        if text.lower() in ("all", "") or _is_unlimited(text):
            result["cpumask"] = None
        else:
            cpus = parse_cpu_list(text)
            if not cpus:
                raise InvalidParameter("an empty CPU list", "cpumask")
            result["cpumask"] = format_cpu_list(cpus)
    for key in ("ram", "swap"):
        value = params.get(key)
        if value is None:
            continue
        if _is_unlimited(value):
            result[key] = None
            continue
        size = parse_size(value, key)
        if key == "ram" and size < (1 << 20):
            raise InvalidParameter("must be at least 1M, got %d bytes" % size, key)
        result[key] = size
    value = params.get("numproc")
    if value is not None:
        barrier, limit = parse_pair(value, "numproc", as_size=False)
        if limit is not None and limit < 1:
            raise InvalidParameter("must be at least 1, got %d" % limit, "numproc")
        result["numproc"] = None if limit is None else [barrier, limit]
    value = params.get("ioprio")
    if value is not None:
        result["ioprio"] = _int_in(value, "ioprio", 0, len(IOPRIO_WEIGHTS) - 1)
    value = params.get("iolimit")
    if value is not None:
        rate = 0 if _is_unlimited(value) else parse_size(value, "iolimit")
        result["iolimit"] = rate or None
    value = params.get("iopslimit")
    if value is not None:
        rate = 0 if _is_unlimited(value) else parse_count(value, "iopslimit")
        result["iopslimit"] = rate or None
    value = params.get("ubc")
    if value is not None:
        if not isinstance(value, Mapping):
            raise InvalidParameter("expected a dict of name: 'barrier:limit', got %r" % (value,), "ubc")
        ubc: Dict[str, Optional[List[Optional[int]]]] = {}
        for name, pair in value.items():
            name = str(name).lower()
            if name in UBC_OWN_OPTION:
                raise InvalidParameter("set %s with the %s option, not in ubc" % (name, UBC_OWN_OPTION[name]), "ubc")
            if name not in UBC_UNITS:
                raise InvalidParameter("unknown beancounter %r; known: %s"
                                       % (name, ", ".join(sorted(n for n in UBC_UNITS if n not in UBC_OWN_OPTION))),
                                       "ubc")
            parsed = parse_ubc_value(name, pair)
            ubc[name] = None if parsed == [None, None] else parsed
        result["ubc"] = ubc
    return result


def merge(current: Mapping[str, Any], request: Mapping[str, Any]) -> Dict[str, Any]:
    """The persisted limits after applying ``request`` (from ``normalize_request``) to ``current``."""
    merged: Dict[str, Any] = {k: v for k, v in current.items() if k in LIMIT_PARAMS and k != "ubc"}
    ubc = dict(current.get("ubc") or {})
    for key, value in request.items():
        if key == "ubc":
            for name, pair in value.items():
                if pair is None:
                    ubc.pop(name, None)
                else:
                    ubc[name] = list(pair)
            continue
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    if ubc:
        merged["ubc"] = {k: ubc[k] for k in sorted(ubc)}
    return merged


def validate_combination(limits: Mapping[str, Any], host: HostInfo) -> None:
    """Checks that need the whole set, or the host."""
    ncpus = len(host.cpus) or 1
    if limits.get("cpulimit") is not None and limits["cpulimit"] > 100 * ncpus:
        raise InvalidParameter("%d%% is more than the host's %d CPUs give (%d%%)"
                               % (limits["cpulimit"], ncpus, 100 * ncpus), "cpulimit")
    if limits.get("cpus") is not None and limits["cpus"] > ncpus:
        raise InvalidParameter("the host has %d CPUs, asked for %d" % (ncpus, limits["cpus"]), "cpus")
    if limits.get("cpumask") is not None:
        wanted = parse_cpu_list(limits["cpumask"])
        missing = wanted - host.cpus
        if missing:
            raise InvalidParameter("CPUs %s are not among the host's CPUs (%s)"
                                   % (format_cpu_list(missing), format_cpu_list(host.cpus)), "cpumask")
    if limits.get("swap") is not None and host.cgroup_version == 1:
        if not host.memsw:
            raise KernelUnsupported("this host's cgroup v1 memory controller has no swap accounting "
                                    "(memory.memsw.*; boot with swapaccount=1)", "swap")
        if limits.get("ram") is None:
            raise InvalidParameter("on cgroup v1 swap is enforced as ram+swap (memory.memsw), so it needs ram",
                                   "swap")


def effective(limits: Mapping[str, Any]) -> Dict[str, Any]:
    """Every parameter with its value in force (defaults filled in), as reported to users."""
    ubc = limits.get("ubc") or {}
    return {
        "cpuunits": limits.get("cpuunits") or CPUUNITS_DEFAULT,
        "cpulimit": limits.get("cpulimit") or 0,
        "cpus": limits.get("cpus") or 0,
        "cpumask": limits.get("cpumask") or "all",
        "ram": limits.get("ram"),
        "swap": limits.get("swap") if limits.get("swap") is not None else (0 if limits.get("ram") else None),
        "numproc": list(limits["numproc"]) if limits.get("numproc") else None,
        "ioprio": limits.get("ioprio"),
        "iolimit": limits.get("iolimit") or 0,
        "iopslimit": limits.get("iopslimit") or 0,
        "ubc": {k: list(v) for k, v in sorted(ubc.items())},
    }


def cpu_quota_pct(limits: Mapping[str, Any]) -> Optional[int]:
    """The CPU cap in percent of one CPU from cpulimit and cpus (vzctl: the lower one)."""
    caps = [v for v in (limits.get("cpulimit"), (limits.get("cpus") or 0) * 100) if v]
    return min(caps) if caps else None


# -- cgroup settings ------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """One value in one cgroup file of the container (``key``: the MAJ:MIN line of keyed files).

    ``required``: the parameter is set and the kernel must have the file
    (else the call fails naming it). Files of unset parameters, and of
    parameters that are stored and reported as not enforced when the kernel
    lacks them (BFQ, blk-throttle, kmem), are skipped when absent.
    ``probe``: the kernel may silently ignore the value (v1 kmem): it is
    written, but never counts as drift and never fails.
    """

    param: str
    controller: str
    file: str
    write: str
    expect: str
    key: Optional[str] = None
    required: bool = False
    probe: bool = False


@dataclass
class Devices:
    """The block devices a container's I/O goes through."""

    throttle: List[str] = field(default_factory=list)   # MAJ:MIN for iolimit/iopslimit
    weight: List[str] = field(default_factory=list)     # MAJ:MIN where BFQ weights matter
    names: Dict[str, str] = field(default_factory=dict)  # MAJ:MIN -> kernel name (loop3, vda)


def _dev_name(devno: str) -> Optional[str]:
    try:
        return os.path.basename(os.readlink("/sys/dev/block/%s" % devno))
    except OSError:
        return None


def whole_disk(devno: str) -> str:
    """The whole disk of a partition (blk-throttle and BFQ act on whole disks)."""
    base = "/sys/dev/block/%s" % devno
    if os.path.exists(os.path.join(base, "partition")):
        try:
            return cg.read_file(os.path.join(base, "..", "dev"))
        except OSError:
            return devno
    return devno


def _devno_of_path(path: str) -> Optional[str]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    if major == 0:
        return None        # tmpfs, overlay, btrfs subvolume: no block device of its own
    return whole_disk("%d:%d" % (major, minor))


def container_devices(storage: Storage) -> Devices:
    """The loop device for the image layout (and the disk under its image), the disk for directories."""
    devices = Devices()
    if storage.layout == "image":
        entry = mount_entry(storage.root)
        source = entry.source if entry else None
        if source and source.startswith("/dev/"):
            try:
                st = os.stat(source)
                if stat.S_ISBLK(st.st_mode):
                    loop = "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
                    devices.throttle.append(loop)
                    devices.weight.append(loop)
            except OSError:
                pass
        backing = _devno_of_path(storage.image)
        if backing and backing not in devices.weight:
            devices.weight.append(backing)       # loop charges its I/O to the container's cgroup here
    else:
        disk = _devno_of_path(storage.private)
        if disk:
            devices.throttle.append(disk)
            devices.weight.append(disk)
    for devno in devices.throttle + devices.weight:
        name = _dev_name(devno)
        if name:
            devices.names[devno] = name
    return devices


def scheduler(devno: str) -> Optional[str]:
    """The active I/O scheduler of a device ("bfq", "mq-deadline", "none"), if it has one."""
    try:
        text = cg.read_file("/sys/dev/block/%s/queue/scheduler" % devno)
    except OSError:
        return None
    for word in text.split():
        if word.startswith("["):
            return word.strip("[]")
    return text.strip() or None


def _v1_max(value: Optional[int]) -> Tuple[str, str]:
    return ("-1", "max") if value is None else (str(value), str(value))


def build_settings(limits: Mapping[str, Any], version: int, devices: Optional[Devices] = None,
                   parent_cpus: str = "", memsw: bool = True) -> List[Setting]:
    """The cgroup writes that put ``limits`` in force (unset parameters back to their defaults)."""
    devices = devices or Devices()
    out: List[Setting] = []

    def add(param: str, controller: str, name: str, write: str, expect: str, key: Optional[str] = None,
            required: bool = False, probe: bool = False) -> None:
        out.append(Setting(param, controller, name, write, expect, key, required, probe))

    units = limits.get("cpuunits") or CPUUNITS_DEFAULT
    quota = cpu_quota_pct(limits)
    ram = limits.get("ram")
    swap = limits.get("swap")
    numproc = limits.get("numproc")
    pids_max = None if not numproc or numproc[1] is None else numproc[1]
    cpumask = limits.get("cpumask")
    ioprio = limits.get("ioprio")
    bps, iops = limits.get("iolimit"), limits.get("iopslimit")
    quota_param = "cpulimit" if limits.get("cpulimit") or not limits.get("cpus") else "cpus"
    if version == 1:
        shares = str(min(V1_MAX_SHARES, max(2, units * 1024 // 1000)))
        add("cpuunits", "cpu", "cpu.shares", shares, shares, required="cpuunits" in limits)
        if quota:
            period = str(CFS_PERIOD_US)
            add(quota_param, "cpu", "cpu.cfs_period_us", period, period, required=True)
            value = str(quota * CFS_PERIOD_US // 100)
            add(quota_param, "cpu", "cpu.cfs_quota_us", value, value, required=True)
        else:
            add("cpulimit", "cpu", "cpu.cfs_quota_us", "-1", "max")
        mask = cpumask or parent_cpus
        if mask:
            add("cpumask", "cpuset", "cpuset.cpus", mask, format_cpu_list(parse_cpu_list(mask)),
                required=cpumask is not None)
        write, expect = _v1_max(ram)
        add("ram", "memory", "memory.limit_in_bytes", write, expect, required=ram is not None)
        if memsw:
            total = None if ram is None else ram + (swap or 0)
            write, expect = _v1_max(total)
            add("swap", "memory", "memory.memsw.limit_in_bytes", write, expect, required=swap is not None)
        write = expect = "max" if pids_max is None else str(pids_max)
        add("numproc", "pids", "pids.max", write, expect, required=pids_max is not None)
        ubc = limits.get("ubc") or {}
        snd, rcv = ubc.get("tcpsndbuf"), ubc.get("tcprcvbuf")
        tcp = snd[1] + rcv[1] if snd and rcv and snd[1] is not None and rcv[1] is not None else None
        write, expect = _v1_max(tcp)
        add("ubc", "memory", "memory.kmem.tcp.limit_in_bytes", write, expect)
        kmem = ubc.get("kmemsize")
        if kmem and kmem[1] is not None:
            add("ubc", "memory", "memory.kmem.limit_in_bytes", str(kmem[1]), str(kmem[1]), probe=True)
        if ioprio is not None:
            weight = str(IOPRIO_WEIGHTS[ioprio])
            add("ioprio", "blkio", "blkio.bfq.weight", weight, weight)
        for devno in devices.throttle:
            for direction in ("read", "write"):
                for kind, param in (("bps", "iolimit"), ("iops", "iopslimit")):
                    rate = limits.get(param)
                    add(param, "blkio", "blkio.throttle.%s_%s_device" % (direction, kind),
                        "%s %d" % (devno, rate or 0), str(rate) if rate else "", key=devno)
    else:
        weight = str(min(V2_MAX_WEIGHT, max(1, (units + 5) // 10)))
        add("cpuunits", "cpu", "cpu.weight", weight, weight, required="cpuunits" in limits)
        value = "%d %d" % (quota * CFS_PERIOD_US // 100, CFS_PERIOD_US) if quota else "max %d" % CFS_PERIOD_US
        add(quota_param, "cpu", "cpu.max", value, value, required=bool(quota))
        mask = format_cpu_list(parse_cpu_list(cpumask)) if cpumask else ""
        add("cpumask", "cpuset", "cpuset.cpus", mask or "\n", mask, required=cpumask is not None)
        value = str(ram) if ram is not None else "max"
        add("ram", "memory", "memory.max", value, value, required=ram is not None)
        swap_max = swap if swap is not None else (0 if ram is not None else None)
        value = "max" if swap_max is None else str(swap_max)
        add("swap", "memory", "memory.swap.max", value, value, required=swap is not None)
        value = "max" if pids_max is None else str(pids_max)
        add("numproc", "pids", "pids.max", value, value, required=pids_max is not None)
        if ioprio is not None:
            weight = str(IOPRIO_WEIGHTS[ioprio])
            add("ioprio", "io", "io.bfq.weight", "default %s" % weight, weight, key="default")
        for devno in devices.throttle:
            line = "rbps=%s wbps=%s riops=%s wiops=%s" % (bps or "max", bps or "max", iops or "max", iops or "max")
            add("iolimit" if bps or not iops else "iopslimit", "io", "io.max", "%s %s" % (devno, line),
                line if (bps or iops) else "", key=devno)
    return out


def _parse_int(text: str) -> Optional[int]:
    try:
        return int(text)
    except ValueError:
        return None


def normalize(setting: Setting, text: str) -> str:
    """What a cgroup file shows, in the form of ``Setting.expect``."""
    name = setting.file
    text = text.strip()
    if setting.key is not None:
        for line in text.splitlines():
            head, _sep, rest = line.strip().partition(" ")
            if head == setting.key:
                rest = rest.strip()
                if name == "io.max":
                    fields = dict(item.split("=", 1) for item in rest.split() if "=" in item)
                    if all(fields.get(k, "max") == "max" for k in ("rbps", "wbps", "riops", "wiops")):
                        return ""
                    return "rbps=%s wbps=%s riops=%s wiops=%s" % tuple(
                        fields.get(k, "max") for k in ("rbps", "wbps", "riops", "wiops"))
                if rest == "0":
                    return ""
                return rest
        if name == "io.bfq.weight" and setting.key == "default" and text.isdigit():
            return text
        return ""
    if name == "cpuset.cpus":
        return format_cpu_list(parse_cpu_list(text)) if text else ""
    if name in ("cpu.max",):
        return " ".join(text.split())
    if name == "blkio.bfq.weight":
        words = text.split()
        return words[-1] if words else ""
    number = _parse_int(text)
    if number is not None:
        if number < 0 or number >= V1_UNLIMITED_FLOOR:
            return "max"
        return str(number)
    return text


def _dir(cgroups: cg.ContainerCgroups, controller: str) -> str:
    return cgroups.controller_dir(controller)


def _flat(cgroups: cg.ContainerCgroups, setting: Setting) -> bool:
    """v1 blk-throttle is not hierarchical: its limits must sit on every cgroup that issues I/O."""
    return cgroups.backend.version == 1 and setting.file.startswith("blkio.throttle.")


def _subtree(directory: str) -> List[str]:
    return [d for d, _dirs, _files in os.walk(directory)]


def read_setting(cgroups: cg.ContainerCgroups, setting: Setting) -> Optional[str]:
    """The current value of ``setting`` in the kernel, or None when the file does not exist.

    For flat (v1 blk-throttle) files, the first value in the container's
    subtree that differs from the wanted one, if any.
    """
    try:
        directory = _dir(cgroups, setting.controller)
        value = normalize(setting, cg.read_file(os.path.join(directory, setting.file)))
        if _flat(cgroups, setting) and value == setting.expect:
            for sub in _subtree(directory)[1:]:
                other = normalize(setting, cg.read_file(os.path.join(sub, setting.file)))
                if other != value:
                    return other
        return value
    except (OSError, KernelUnsupported):
        return None


def drift(cgroups: cg.ContainerCgroups, settings: Sequence[Setting]) -> List[Setting]:
    """The settings the kernel does not hold right now (absent optional files do not count)."""
    out = []
    for setting in settings:
        if setting.probe:
            continue
        current = read_setting(cgroups, setting)
        if current is None:
            if setting.required:
                out.append(setting)
        elif current != setting.expect:
            out.append(setting)
    return out


def _write(cgroups: cg.ContainerCgroups, setting: Setting) -> None:
    try:
        directory = _dir(cgroups, setting.controller)
    except KernelUnsupported:
        if setting.required:
            raise KernelUnsupported("the %s controller is not available to the container (needed for %s)"
                                    % (setting.controller, setting.param), setting.param) from None
        return
    path = os.path.join(directory, setting.file)
    if not os.path.exists(path):
        if not setting.required:
            return
        raise KernelUnsupported("this kernel has no %s for the container (needed for %s)"
                                % (setting.file, setting.param), setting.param)
    if setting.file == "cpuset.cpus" and cgroups.backend.version == 1:
        _write_v1_cpuset(directory, setting.write)
        return
    try:
        for target in (_subtree(directory) if _flat(cgroups, setting) else [directory]):
            cg.write_file(os.path.join(target, setting.file), setting.write)
    except OSError as exc:
        if setting.probe:
            return
        if setting.file in ("memory.limit_in_bytes", "memory.max") and exc.errno == errno.EBUSY:
            raise OvzError("cannot lower ram to %s bytes: the container uses more than that and it could not "
                           "be reclaimed" % setting.write, "ram") from None
        raise OvzError("writing %r to %s failed: %s" % (setting.write.strip(), path, exc.strerror),
                       setting.param) from None


def _write_v1_cpuset(directory: str, value: str) -> None:
    """v1 cpusets must stay within their parent: widen top-down, then narrow bottom-up."""
    tree = [d for d in _subtree(directory) if os.path.exists(os.path.join(d, "cpuset.cpus"))]
    wanted = parse_cpu_list(value)
    try:
        for path in tree:                        # top-down: parents before children
            current = parse_cpu_list(cg.read_file(os.path.join(path, "cpuset.cpus")))
            union = current | wanted
            if union != current:
                cg.write_file(os.path.join(path, "cpuset.cpus"), format_cpu_list(union))
        for path in reversed(tree):              # bottom-up: children before parents
            cg.write_file(os.path.join(path, "cpuset.cpus"), format_cpu_list(wanted))
    except OSError as exc:
        raise OvzError("setting cpuset.cpus to %s failed: %s (is it within the parent cgroup's CPUs?)"
                       % (value, exc.strerror), "cpumask") from None


def _ordered(cgroups: cg.ContainerCgroups, settings: Sequence[Setting]) -> List[Setting]:
    """v1 memory: memory.limit <= memsw.limit at every step, so raise memsw first when growing."""
    settings = list(settings)
    if cgroups.backend.version != 1:
        return settings
    names = [s.file for s in settings]
    if "memory.limit_in_bytes" not in names or "memory.memsw.limit_in_bytes" not in names:
        return settings
    mem = settings[names.index("memory.limit_in_bytes")]
    memsw = settings[names.index("memory.memsw.limit_in_bytes")]
    current_memsw = read_setting(cgroups, memsw)

    def size(text: Optional[str]) -> float:
        return float("inf") if text in (None, "max") else float(text)  # type: ignore[arg-type]

    if size(mem.expect) > size(current_memsw):
        settings.remove(memsw)
        settings.insert(names.index("memory.limit_in_bytes"), memsw)
    return settings


def apply_settings(cgroups: cg.ContainerCgroups, settings: Sequence[Setting],
                   rollback: Optional[Sequence[Setting]] = None, only_drift: bool = True) -> List[Setting]:
    """Write the settings the kernel does not hold yet; returns those written.

    On a failure the ``rollback`` settings (the previous limits) are written
    back, best effort, and the error is raised.
    """
    todo = drift(cgroups, settings) if only_drift else [s for s in settings if not s.probe]
    todo += [s for s in settings if s.probe]
    written: List[Setting] = []
    try:
        for setting in _ordered(cgroups, todo):
            _write(cgroups, setting)
            written.append(setting)
    except BaseException:
        if rollback is not None and written:
            for setting in _ordered(cgroups, rollback):
                try:
                    _write(cgroups, setting)
                except (OSError, OvzError):
                    pass
        raise
    return written


def not_enforced(limits: Mapping[str, Any], cgroups: Optional[cg.ContainerCgroups], version: int,
                 devices: Optional[Devices]) -> Dict[str, str]:
    """Set parameters the kernel cannot enforce here, with the reason (stored, reported, never dropped)."""
    out: Dict[str, str] = {}
    if limits.get("ioprio") is not None:
        weight_file = "blkio.bfq.weight" if version == 1 else "io.bfq.weight"
        controller = "blkio" if version == 1 else "io"
        if cgroups is not None:
            try:
                present = os.path.exists(os.path.join(cgroups.controller_dir(controller), weight_file))
            except KernelUnsupported:
                present = False
            if not present:
                out["ioprio"] = "the kernel has no BFQ cgroup weights (%s)" % weight_file
        if "ioprio" not in out and devices is not None:
            bfq = [d for d in devices.weight if scheduler(d) == "bfq"]
            if not bfq:
                out["ioprio"] = "no device of the container uses the bfq I/O scheduler (%s)" % ", ".join(
                    "%s: %s" % (devices.names.get(d, d), scheduler(d)) for d in devices.weight) if devices.weight \
                    else "the container's storage has no block device"
    for param in ("iolimit", "iopslimit"):
        if limits.get(param) and devices is not None and not devices.throttle:
            out[param] = "the container's storage has no block device to throttle"
    return out


def parent_cpus(cgroups: cg.ContainerCgroups) -> str:
    """The CPUs of the container's parent cpuset (v1): what "all" means for it."""
    if cgroups.backend.version != 1:
        return ""
    try:
        directory = cgroups.controller_dir("cpuset")
        return cg.read_file(os.path.join(os.path.dirname(directory), "cpuset.cpus"))
    except (OSError, KernelUnsupported):
        return ""


def memsw_present(cgroups: cg.ContainerCgroups) -> bool:
    if cgroups.backend.version != 1:
        return False
    try:
        return os.path.exists(os.path.join(cgroups.controller_dir("memory"), "memory.memsw.limit_in_bytes"))
    except KernelUnsupported:
        return False


def settings_for(cgroups: cg.ContainerCgroups, limits: Mapping[str, Any], devices: Optional[Devices]) -> List[Setting]:
    return build_settings(limits, cgroups.backend.version, devices, parent_cpus(cgroups), memsw_present(cgroups))


def apply_at_start(cgroups: cg.ContainerCgroups, limits: Mapping[str, Any], storage: Storage) -> None:
    """Put the stored limits in force on a new container's cgroups, before any of its processes exist."""
    if not limits:
        return
    devices = container_devices(storage)
    apply_settings(cgroups, settings_for(cgroups, limits, devices))
