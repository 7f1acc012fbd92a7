"""Overhead-inside section of bench/run_all.

- sysbench cpu and memory on the host and inside one of our busybox containers (directory layout;
  the host's sysbench and its libraries are copied into the container's tree), and inside an LXC
  busybox container and under systemd-nspawn (the same copy), pinned to the same CPU with
  `busybox taskset`, interleaved (host first on even rounds, containers first on odd ones): each
  round gives a ratio container/host, and the goal is judged on their median.
- fio and iperf3: bench/storage.py and bench/network.py. A full run runs them again with short
  settings (results/run_all-storage.json, results/run_all-network.json); --quick and --reuse-io use
  the JSON they last wrote (results/storage.json, results/network.json) and say so.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import base as B  # pylint: disable=import-error
from base import C, Ctx  # pylint: disable=import-error

import start as S  # noqa: E402  pylint: disable=import-error,wrong-import-order

SYSBENCH = "/usr/bin/sysbench"
CPU = "1"


def sysbench_argv(test: str, seconds: int) -> list:
    common = ["--threads=1", "--time=%d" % seconds]
    if test == "cpu":
        return [SYSBENCH, "cpu", "--cpu-max-prime=10000"] + common + ["run"]
    return [SYSBENCH, "memory", "--memory-block-size=1M", "--memory-total-size=1000G"] + common + ["run"]


def parse(test: str, text: str) -> tuple:
    """(rate per wall second, work done): events for cpu, MiB for memory."""
    if test == "cpu":
        rate = re.search(r"events per second:\s*([\d.]+)", text)
        work = re.search(r"total number of events:\s*([\d.]+)", text)
    else:
        rate = re.search(r"MiB transferred \(([\d.]+) MiB/sec\)", text)
        work = re.search(r"([\d.]+) MiB transferred", text)
    if not rate or not work:
        raise C.StepError("cannot parse sysbench %s output: %s" % (test, text[-300:]))
    return float(rate.group(1)), float(work.group(1))


def waited(argv: list) -> tuple:
    """(stdout, CPU seconds of the command and every descendant it waited for)."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,  # pylint: disable=consider-using-with
                            stderr=subprocess.DEVNULL)
    out = proc.stdout.read().decode()
    proc.stdout.close()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise C.StepError("rc %d: %s" % (proc.returncode, " ".join(argv)))
    return out, usage.ru_utime + usage.ru_stime


def cgroup_cpu_s(directory: str) -> float:
    """CPU seconds a cgroup used (v1 cpuacct.usage, v2 cpu.stat usage_usec)."""
    if os.path.exists(os.path.join(directory, "cpuacct.usage")):
        with open(os.path.join(directory, "cpuacct.usage")) as handle:
            return int(handle.read()) / 1e9
    with open(os.path.join(directory, "cpu.stat")) as handle:
        stat = dict(line.split() for line in handle)
    return int(stat["usage_usec"]) / 1e6


class Target:
    """run(argv) -> (stdout, CPU seconds the command used)."""
    label = "?"

    def run(self, argv: list) -> tuple:
        raise NotImplementedError


class Host(Target):
    label = "host"

    def run(self, argv):
        return waited(["taskset", "-c", CPU] + argv)


class Ovz(Target):
    label = "ovz"

    def __init__(self, ctx: Ctx) -> None:
        self.manager = ctx.manager("inside")
        self.name = "ovzb%si" % ctx.tag
        self.manager.create(self.name, ctx.template, layout="directory")
        ctx.cleanups.append(lambda: self.manager.destroy(self.name))
        self.manager.start(self.name, wait_boot=True, timeout=60)
        B.install_binary(self.manager.storage(self.manager.load(self.name)).root, SYSBENCH)

    def run(self, argv):
        cgroups = self.manager.cgroups_for(self.manager.runtime(self.name))
        directory = cgroups.controller_dir("cpuacct" if self.manager.backend.version == 1 else "cpu")
        before = cgroup_cpu_s(directory)
        res = self.manager.exec(self.name, ["/bin/busybox", "taskset", "-c", CPU] + argv, timeout=300)
        if res.rc != 0:
            raise C.StepError("sysbench in ovz: rc %d: %s" % (res.rc, res.stderr.decode()[-300:]))
        return res.stdout.decode(), cgroup_cpu_s(directory) - before


class Lxc(Target):
    label = "lxc"

    def __init__(self, ctx: Ctx) -> None:
        why = S.ensure_lxc_conf(write=True)
        if why:
            raise C.StepError("LXC not run: " + why)
        self.peer = S.Lxc(ctx.tmp, "ovzb%sil" % ctx.tag, stop_kill=True)
        self.peer.setup()
        self.name = "ovzb%sil0" % ctx.tag
        ctx.cleanups.append(self.peer.cleanup)
        conf = ctx.tmp / "lxc-conf" / (self.name + ".conf")
        conf.write_text(self.peer.config_text.format(name=self.name, pivot=self.peer.pivot))
        self.peer.created.add(self.name)
        self.peer.cgroups |= {self.name + ".monitor", self.name + ".payload"}
        lxc = self.peer._p  # pylint: disable=protected-access
        C.run(lxc("lxc-create", "-n", self.name, "-t", "busybox", "-f", str(conf)), timeout=120)
        B.install_binary(str(self.peer.lxcpath / self.name / "rootfs"), SYSBENCH)
        C.run(lxc("lxc-start", "-n", self.name))
        B.wait_for(lambda: self.peer._attach_ok(self.name, "true"), 30, "lxc-attach")  # pylint: disable=protected-access
        self.lxc = lxc

    def run(self, argv):
        directory = "/sys/fs/cgroup/cpuacct/%s.payload" % self.name
        if not os.path.isdir(directory):
            directory = "/sys/fs/cgroup/%s.payload" % self.name
        before = cgroup_cpu_s(directory)
        out = C.run(self.lxc("lxc-attach", "-n", self.name, "--", "/bin/busybox", "taskset", "-c", CPU) + argv,
                    timeout=300).stdout
        return out, cgroup_cpu_s(directory) - before


class Nspawn(Target):
    label = "nspawn"

    def __init__(self, ctx: Ctx) -> None:
        self.root = ctx.tmp / "nspawn-inside"
        self.root.mkdir()
        C.run(["tar", "-xzf", ctx.template, "-C", str(self.root)])
        (self.root / "etc" / "os-release").touch()
        B.install_binary(str(self.root), SYSBENCH)
        self.machine = "ovzb%sin" % ctx.tag

    def run(self, argv):
        return waited(["systemd-nspawn", "--keep-unit", "--register=no", "-q", "-M", self.machine, "-D",
                      str(self.root), "/bin/busybox", "taskset", "-c", CPU] + argv)


def sysbench(ctx: Ctx) -> dict:
    rounds = 2 if ctx.quick else 6
    seconds = 2 if ctx.quick else 3
    targets: list = [Host()]
    for cls in (Ovz, Lxc, Nspawn):
        try:
            targets.append(cls(ctx))
        except Exception as exc:  # noqa: BLE001 - the others still run
            ctx.error("inside", "%s: %s: %s" % (cls.label, type(exc).__name__, exc))
    out: dict = {"rounds": rounds, "seconds": seconds, "cpu_pinned": CPU, "tests": {}}
    for test in ("cpu", "memory"):
        values = {t.label: [] for t in targets}
        per_cpu = {t.label: [] for t in targets}
        for index in range(rounds):
            order = targets if index % 2 == 0 else targets[1:] + targets[:1]
            for target in order:
                text, cpu_s = target.run(sysbench_argv(test, seconds))
                rate, work = parse(test, text)
                values[target.label].append(rate)
                per_cpu[target.label].append(work / cpu_s if cpu_s > 0 else 0.0)
            print("  sysbench %s round %d/%d: per CPU-second %s" % (
                test, index + 1, rounds, {k: round(v[-1], 1) for k, v in per_cpu.items()}), file=sys.stderr, flush=True)
        out["tests"][test] = {
            "unit": "events/s" if test == "cpu" else "MiB/s",
            "values": values,
            "per_cpu_s": per_cpu,
            "median": {k: round(C.percentile(v, 50), 2) for k, v in values.items()},
            "median_per_cpu_s": {k: round(C.percentile(v, 50), 2) for k, v in per_cpu.items()},
            "ratio_vs_host_wall": {k: B.ratio_stats([a / b for a, b in zip(v, values["host"])])
                                   for k, v in values.items() if k != "host"},
            "ratio_vs_host": {k: B.ratio_stats([a / b for a, b in zip(v, per_cpu["host"])])
                              for k, v in per_cpu.items() if k != "host"},
        }
    return out


def reuse(name: str) -> dict:
    path = C.RESULTS_DIR / name
    data = json.loads(path.read_text())
    return {"source": "bench/results/%s (not re-run: %s)" % (name, data["machine"]["date"]), "data": data}


def storage(ctx: Ctx) -> dict:
    if ctx.quick or ctx.args.reuse_io:
        return reuse("storage.json")
    path = C.RESULTS_DIR / "run_all-storage.json"
    argv = [sys.executable, str(C.BENCH_DIR / "storage.py"), "--runtime", "4", "--size", "256M", "--repeat", "2",
            "--json", str(path)]
    print("  $ " + " ".join(argv), file=sys.stderr, flush=True)
    began = time.monotonic()
    proc = subprocess.run(argv, check=False, timeout=900)
    if proc.returncode != 0 or not path.exists() or path.stat().st_mtime < time.time() - (time.monotonic() - began):
        ctx.error("inside", "storage.py rc %d; using the last results" % proc.returncode)
        return reuse("storage.json")
    return {"source": "bench/results/run_all-storage.json (this run)", "data": json.loads(path.read_text())}


def network(ctx: Ctx) -> dict:
    if ctx.quick or ctx.args.reuse_io:
        return reuse("network.json")
    path = C.RESULTS_DIR / "run_all-network.json"
    argv = [sys.executable, str(C.BENCH_DIR / "network.py"), "--runs", "7", "--rounds", "1000", "--seconds", "1",
            "--concurrent", "1", "--json", str(path)]
    print("  $ " + " ".join(argv), file=sys.stderr, flush=True)
    began = time.monotonic()
    proc = subprocess.run(argv, check=False, timeout=900)
    if proc.returncode != 0 or not path.exists() or path.stat().st_mtime < time.time() - (time.monotonic() - began):
        ctx.error("inside", "network.py rc %d; using the last results" % proc.returncode)
        return reuse("network.json")
    return {"source": "bench/results/run_all-network.json (this run)", "data": json.loads(path.read_text())}


def run(ctx: Ctx) -> dict:
    out: dict = {}
    try:
        out["sysbench"] = sysbench(ctx)
    finally:
        ctx.run_cleanups()
    for key, fn in (("storage", storage), ("network", network)):
        try:
            out[key] = fn(ctx)
        except Exception as exc:  # noqa: BLE001 - recorded
            ctx.error("inside", "%s: %s: %s" % (key, type(exc).__name__, exc))
    return out
