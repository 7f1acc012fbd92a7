"""Density section of bench/run_all: start 100, then 250, then 500 idle busybox containers (each
with its own network namespace and one routed IPv4 address), ours and LXC's, one system after
the other, and measure at each count:

- the time to start each container (until its startup scripts ran) and the total;
- the host processes the system keeps per container, outside the container (new processes in
  the host's pid namespace that belong to this run) and their PSS;
- unreclaimable kernel memory (SUnreclaim + KernelStack + PageTables + Percpu) grown since the
  first container, host-wide: it includes what the containers' own cgroups are charged for, and
  any other load on the machine; for ours, the kernel memory charged to the containers' own memory
  cgroups (memory.kmem.usage_in_bytes) is subtracted to get what stays outside them.

The containers' host is a network namespace of this run (ovzb<tag>h), so the machine's own
network never sees them. LXC (lxc-start, and every lxc-* command that talks to its monitor's
abstract socket) runs inside that namespace too, with `lxc.net.0.veth.mode = router`, the same
shape as ours. LXC has no memory cgroup here (lxc.cgroup.use keeps it out of the memory hierarchy).
"""

from __future__ import annotations

import os
import shutil
import sys
import time

import base as B  # pylint: disable=import-error
from base import C, Ctx  # pylint: disable=import-error

import start as S  # noqa: E402  pylint: disable=import-error,wrong-import-order

LXC_DENSITY_CONFIG = """\
lxc.net.0.type = veth
lxc.net.0.veth.mode = router
lxc.net.0.veth.pair = {pair}
lxc.net.0.flags = up
lxc.net.0.ipv4.address = {address}/32
lxc.net.0.ipv4.gateway = dev
lxc.apparmor.profile = unconfined
lxc.cgroup.dir.monitor = {name}.monitor
lxc.cgroup.dir.container = {name}.payload
lxc.cgroup.dir.monitor.pivot = {pivot}
"""
MARKER = ".ovzbooted"


def address(base: int, index: int) -> str:
    return "10.213.%d.%d" % (base + index // 250, index % 250 + 1)


def snapshot(system: str, count: int, before: set, kernel0: int, markers: list, kmem_kib: int | None) -> dict:
    time.sleep(1.0)  # let the last starts settle
    procs = B.host_processes(before, markers)
    pss = sum(p["pss_kib"] for p in procs)
    kernel = B.kernel_kib() - kernel0
    outside = kernel - kmem_kib if kmem_kib is not None else None
    row = {"count": count, "host_processes": len(procs), "host_pss_kib": pss,
           "host_pss_kib_per_ct": round(pss / count, 1),
           "kernel_delta_kib": kernel, "kernel_delta_kib_per_ct": round(kernel / count, 1),
           "kmem_in_own_cgroups_kib": kmem_kib,
           "kernel_outside_kib_per_ct": round(outside / count, 1) if outside is not None else None,
           "process_examples": procs[:3]}
    per_ct = row["host_pss_kib_per_ct"] + (row["kernel_outside_kib_per_ct"] if outside is not None
                                           else row["kernel_delta_kib_per_ct"])
    row["outside_kib_per_ct"] = round(max(per_ct, 0.0), 1)
    print("  %s %d: %d host processes, PSS %.0f KiB/ct, kernel +%.0f KiB/ct%s" % (
        system, count, len(procs), row["host_pss_kib_per_ct"], row["kernel_delta_kib_per_ct"],
        "" if outside is None else " (outside own cgroups %.0f)" % row["kernel_outside_kib_per_ct"]),
        file=sys.stderr, flush=True)
    return row


def ovz(ctx: Ctx, counts: list, host: B.Netns) -> dict:
    nsmod = ctx.engine()["namespaces"]
    manager = ctx.manager("density")
    names: list = []
    stop_ms: list = []

    def teardown() -> None:
        while names:
            name = names.pop()
            t0 = time.perf_counter()
            try:
                B.in_netns_call(nsmod, host.path, manager.destroy, name)
            except Exception as exc:  # noqa: BLE001 - keep going
                ctx.error("density", "destroy %s: %s" % (name, exc))
            stop_ms.append((time.perf_counter() - t0) * 1000)

    ctx.cleanups.append(teardown)
    try:
        return _ovz(ctx, counts, host, manager, names, stop_ms)
    finally:
        teardown()
        ctx.cleanups.remove(teardown)


def _ovz(ctx: Ctx, counts: list, host: B.Netns, manager, names: list, stop_ms: list) -> dict:
    net, nsmod = ctx.engine()["network"], ctx.engine()["namespaces"]
    before = B.all_pids()
    kernel0 = B.kernel_kib()
    start_ms, create_ms, rows = [], [], []
    t_all = time.perf_counter()
    for target in counts:
        while len(names) < target:
            index = len(names)
            name = "ovzb%sd%d" % (ctx.tag, index)
            t0 = time.perf_counter()
            manager.create(name, ctx.template, layout="directory")
            names.append(name)
            config = manager.load(name)
            config.network = net.normalize_network(name, manager.layout.data_dir,
                                                   {"ip_address": [address(64, index)]})
            manager.store.save(config)
            t1 = time.perf_counter()
            B.in_netns_call(nsmod, host.path, manager.start, name, wait_boot=True, timeout=60)
            t2 = time.perf_counter()
            create_ms.append((t1 - t0) * 1000)
            start_ms.append((t2 - t1) * 1000)
        kmem = 0
        for name in names:
            cgroups = manager.cgroups_for(manager.runtime(name))
            with open(os.path.join(cgroups.controller_dir("memory"), "memory.kmem.usage_in_bytes")) as handle:
                kmem += int(handle.read()) // 1024
        row = snapshot("ovz", target, before, kernel0, ["ovzb%sd" % ctx.tag, manager.layout.data_dir], kmem)
        row["elapsed_s"] = round(time.perf_counter() - t_all, 2)
        rows.append(row)
    check = check_ovz_address(manager, names, host)
    return {"rows": rows, "start_ms": start_ms, "create_ms": create_ms, "teardown_ms": stop_ms,
            "check": check}


def check_ovz_address(manager, names: list, host: B.Netns) -> str:
    """The last container has its address inside and a host route on the host side."""
    name = names[-1]
    pid = manager.runtime(name).init_pid
    inside = C.run(["nsenter", "--net=/proc/%d/ns/net" % pid, "ip", "-4", "-o", "addr"]).stdout
    routes = host.run(["ip", "-4", "route"]).stdout.count("\n")
    addresses = " ".join(line.split()[3] for line in inside.splitlines() if "inet" in line)
    return "%s: %s; host routes: %d" % (name, addresses, routes)


class LxcDensity:
    def __init__(self, ctx: Ctx, host: B.Netns) -> None:
        self.ctx = ctx
        self.host = host
        self.lxcpath = ctx.tmp / "lxc-density"
        self.pivot = "ovzb%sdl.pivot" % ctx.tag
        self.names: list = []
        self.cgroups = {self.pivot}
        self.base = "ovzb%sdbase" % ctx.tag
        self.base_config = ""
        self.stop_ms: list = []

    def lxc(self, *argv, check: bool = True, timeout: float = 60):
        return self.host.run([argv[0], "-P", str(self.lxcpath)] + list(argv[1:]), check=check, timeout=timeout)

    def prepare(self) -> None:
        why = S.ensure_lxc_conf(write=True)
        if why:
            raise C.StepError("LXC not run: " + why)
        self.lxcpath.mkdir(parents=True, exist_ok=True)
        conf = self.ctx.tmp / "lxc-density.conf"
        conf.write_text(LXC_DENSITY_CONFIG.format(pair="ovzlbase", address="10.213.79.1", name=self.base,
                                                  pivot=self.pivot))
        self.lxc("lxc-create", "-n", self.base, "-t", "busybox", "-f", str(conf), timeout=120)
        rcs = self.lxcpath / self.base / "rootfs" / "etc" / "init.d" / "rcS"
        # no DHCP client (it would wait for a server and drop the static address); then the marker
        lines = [line for line in rcs.read_text().splitlines() if "udhcpc" not in line]
        rcs.write_text("\n".join(lines + [": > /" + MARKER]) + "\n")
        self.base_config = (self.lxcpath / self.base / "config").read_text()

    def clone(self, index: int) -> str:
        """A copy of the base container (rootfs by cp -a, config with the new name and address)."""
        name = "ovzb%sl%d" % (self.ctx.tag, index)
        target = self.lxcpath / name
        target.mkdir()
        C.run(["cp", "-a", str(self.lxcpath / self.base / "rootfs"), str(target / "rootfs")])
        text = self.base_config.replace(self.base, name)
        text = text.replace("veth.pair = ovzlbase", "veth.pair = ovzl%d" % index)
        text = text.replace("10.213.79.1/32", address(80, index) + "/32")
        (target / "config").write_text(text)
        self.names.append(name)
        self.cgroups |= {name + ".monitor", name + ".payload"}
        return name

    def start(self, name: str) -> None:
        marker = self.lxcpath / name / "rootfs" / MARKER
        t0 = time.perf_counter()
        self.lxc("lxc-start", "-n", name, "-o", str(self.ctx.tmp / "lxc-density.log"), "-l", "ERROR")
        B.wait_for(marker.exists, 60, "%s startup scripts" % name, step=0.001)
        return t0

    def teardown(self) -> list:
        stop_ms = []
        while self.names:
            name = self.names.pop()
            t0 = time.perf_counter()
            self.lxc("lxc-stop", "-n", name, "-k", check=False, timeout=60)
            stop_ms.append((time.perf_counter() - t0) * 1000)
        self.stop_ms = self.stop_ms or stop_ms
        for name in os.listdir(self.lxcpath) if self.lxcpath.is_dir() else []:
            state = self.lxc("lxc-info", "-n", name, "-s", "-H", check=False).stdout.strip()
            if state not in ("STOPPED", ""):
                self.lxc("lxc-stop", "-n", name, "-k", check=False)
        stuck = C.remove_cgroup_dirs(self.cgroups)
        for path in stuck:
            self.ctx.error("density", "cgroup not removed: " + path)
        shutil.rmtree(self.lxcpath, ignore_errors=True)
        return stop_ms


def lxc(ctx: Ctx, counts: list, host: B.Netns) -> dict:
    peer = LxcDensity(ctx, host)
    ctx.cleanups.append(peer.teardown)
    try:
        data = _lxc(ctx, counts, peer)
    finally:
        peer.teardown()
        ctx.cleanups.remove(peer.teardown)
    data["teardown_ms"] = peer.stop_ms
    return data


def _lxc(ctx: Ctx, counts: list, peer: "LxcDensity") -> dict:
    peer.prepare()
    before = B.all_pids()
    kernel0 = B.kernel_kib()
    start_ms, create_ms, rows = [], [], []
    t_all = time.perf_counter()
    for target in counts:
        while len(peer.names) < target:
            t0 = time.perf_counter()
            name = peer.clone(len(peer.names))
            t1 = peer.start(name)
            t2 = time.perf_counter()
            create_ms.append((t1 - t0) * 1000)
            start_ms.append((t2 - t1) * 1000)
        row = snapshot("lxc", target, before, kernel0, [str(peer.lxcpath), "ovzb%sl" % ctx.tag], None)
        row["elapsed_s"] = round(time.perf_counter() - t_all, 2)
        rows.append(row)
    last = peer.names[-1]
    check = "%s: %s" % (last, peer.lxc("lxc-attach", "-n", last, "--", "ip", "-4", "-o", "addr").stdout.split())
    return {"rows": rows, "start_ms": start_ms, "create_ms": create_ms, "check": check[:200]}


def systems(ctx: Ctx) -> list:
    wanted = [("ovz", ovz), ("lxc", lxc)]
    return [(label, fn) for label, fn in wanted if label in ctx.args.density_systems.split(",")]


def run(ctx: Ctx) -> dict:
    counts = [5, 10, 20] if ctx.quick else [100, 250, 500]
    if ctx.args.density_max:
        counts = [c for c in counts if c <= ctx.args.density_max] or [ctx.args.density_max]
    out: dict = {"counts": counts, "systems": {}}
    host = B.Netns("ovzb%sh" % ctx.tag)
    ctx.cleanups.append(host.delete)
    try:
        for label, fn in systems(ctx):
            try:
                data = fn(ctx, counts, host)
            except Exception as exc:  # noqa: BLE001 - the other system still runs
                ctx.error("density", "%s: %s: %s" % (label, type(exc).__name__, exc))
                continue
            for key in ("start_ms", "create_ms", "teardown_ms"):
                data[key + "_summary"] = C.summarize(data[key])
                # per-container start time as the count grows: the summary of each batch
            data["start_by_batch"] = []
            low = 0
            for count in counts:
                data["start_by_batch"].append({"from": low + 1, "to": count,
                                               "start": C.summarize(data["start_ms"][low:count])})
                low = count
            out["systems"][label] = data
    finally:
        host.delete()
        ctx.cleanups.remove(host.delete)
    left = C.leftover_cgroups("ovzb%s" % ctx.tag)
    if left:
        ctx.error("density", "leftover cgroups: %s" % left[:5])
    return out
