"""Limits and checkpoint sections of bench/run_all.

limits: on a running busybox container, the time from the call (ours: the engine's
``limits.update``, the code behind ovz_limits; LXC: ``lxc-cgroup``) until a read of the
container's cgroup file shows the new value (the kernel enforces a cgroup limit from the
write on). CPU: cpulimit 50/60 % (cpu.cfs_quota_us); memory: ram 256M/320M
(memory.limit_in_bytes). LXC has no memory cgroup on this machine (lxc.cgroup.use keeps it
out of the memory hierarchy), so its memory column stays empty and the report says why.

checkpoint: dump (stopping the container) and restore of a busybox container, idle ("small")
and holding 256 MiB (bench/dirty.c, built statically, rate 0), ours (``Checkpointer.dump`` /
``restore``) and LXC's (``lxc-checkpoint -s`` / ``-r``). Frozen time is CRIU's own
(``frozen_time`` of stats-dump, the same file for both), dump and restore are the calls.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import base as B  # pylint: disable=import-error
from base import C, Ctx  # pylint: disable=import-error

import start as S  # noqa: E402  pylint: disable=import-error,wrong-import-order

S50 = """#!/bin/sh
case "$1" in
    start) /usr/bin/dirty %d 0 </dev/null >/dev/null 2>&1 & ;;
esac
exit 0
"""


def read(path: str) -> str:
    with open(path) as handle:
        return handle.read().strip()


def until(path: str, value: str, timeout: float = 5.0) -> float:
    return B.wait_for(lambda: read(path) == value, timeout, "%s = %s" % (path, value), step=0.0002)


class OvzCt:
    def __init__(self, ctx: Ctx, label: str, mib: int = 0) -> None:
        self.ctx = ctx
        self.manager = ctx.manager(label)
        self.name = "ovzb%s%s" % (ctx.tag, label[:1])
        self.manager.create(self.name, ctx.template, layout="directory")
        ctx.cleanups.append(self.destroy)
        if mib:
            storage = self.manager.storage(self.manager.load(self.name))
            storage.mount()
            try:
                shutil.copy(dirty_binary(ctx), os.path.join(storage.root, "usr/bin/dirty"))
                path = os.path.join(storage.root, "etc/init.d/S50dirty")
                with open(path, "w") as handle:
                    handle.write(S50 % mib)
                os.chmod(path, 0o755)
            finally:
                storage.umount()
        self.manager.start(self.name, wait_boot=True, timeout=60)
        if mib:
            wait_rss(self.manager.runtime(self.name).init_pid, mib)

    def cgfile(self, controller: str, filename: str) -> str:
        cgroups = self.manager.cgroups_for(self.manager.runtime(self.name))
        return os.path.join(cgroups.controller_dir(controller), filename)

    def destroy(self) -> None:
        self.manager.destroy(self.name)


class LxcCt:
    def __init__(self, ctx: Ctx, label: str, mib: int = 0, checkpointable: bool = False) -> None:
        why = S.ensure_lxc_conf(write=True)
        if why:
            raise C.StepError("LXC not run: " + why)
        self.name = "ovzb%sx%s" % (ctx.tag, label)
        self.peer = S.Lxc(ctx.tmp, self.name + "p", stop_kill=True)
        self.peer.setup()
        ctx.cleanups.append(self.peer.cleanup)
        conf = ctx.tmp / "lxc-conf" / (self.name + ".conf")
        conf.write_text(self.peer.config_text.format(name=self.name, pivot=self.peer.pivot))
        self.peer.created.add(self.name)
        self.peer.cgroups |= {self.name + ".monitor", self.name + ".payload"}
        self.p = self.peer._p  # pylint: disable=protected-access
        C.run(self.p("lxc-create", "-n", self.name, "-t", "busybox", "-f", str(conf)), timeout=120)
        if checkpointable:
            self.checkpointable()
        if mib:
            root = self.peer.lxcpath / self.name / "rootfs"
            shutil.copy(dirty_binary(ctx), str(root / "usr" / "bin" / "dirty"))
            with open(root / "etc" / "init.d" / "rcS", "a") as handle:
                # started by init's startup script, as ours: its session is inside the container
                handle.write("/usr/bin/dirty %d 0 </dev/null >/dev/null 2>&1 &\n" % mib)
        self.start()
        if mib:
            wait_rss(self.init_pid(), mib)

    def checkpointable(self) -> None:
        """What CRIU needs of a busybox LXC container: no getty on an LXC tty and no console (their
        pty masters stay with the monitor, outside: "tty: Unable to find a master"; ours has none either),
        and no AppArmor profile where the kernel has no AppArmor."""
        root = self.peer.lxcpath / self.name
        (root / "rootfs" / "etc" / "inittab").write_text("::sysinit:/etc/init.d/rcS\n")
        config = (root / "config").read_text().replace("lxc.tty.max = 5", "lxc.tty.max = 0")
        # with lxc.apparmor.profile set, lxc-checkpoint -r asks CRIU for an AppArmor profile, which this
        # kernel does not have ("apparmor LSM specified but apparmor not supported by kernel")
        # and the template's read-only binds of the host's /lib, /usr/lib ... (busybox is static): CRIU 4.1
        # cannot restore them ("mnt-v2: Failed to move_mount from /lib")
        config = "\n".join(line for line in config.splitlines()
                           if not line.startswith("lxc.apparmor.profile")
                           and not line.replace(" ", "").startswith("lxc.mount.entry=/")) + "\n"
        (root / "config").write_text(config + "lxc.console.path = none\n")

    def start(self) -> None:
        C.run(self.p("lxc-start", "-n", self.name, "-o", str(self.peer.tmp / "lxc-log" / (self.name + ".log")),
                     "-l", "ERROR"))
        B.wait_for(lambda: self.peer._attach_ok(self.name, "true"), 30, "lxc-attach")  # pylint: disable=protected-access

    def init_pid(self) -> int:
        return int(C.run(self.p("lxc-info", "-n", self.name, "-p", "-H")).stdout.strip())

    def cgfile(self, controller: str, filename: str) -> str:
        return "/sys/fs/cgroup/%s/%s.payload/%s" % (controller, self.name, filename)


def wait_rss(init_pid: int, mib: int) -> None:
    def holding() -> bool:
        for pid in descendants(init_pid):
            try:
                with open("/proc/%d/status" % pid) as handle:
                    for line in handle:
                        if line.startswith("VmRSS:") and int(line.split()[1]) >= mib * 1024 * 0.95:
                            return True
            except OSError:
                pass
        return False
    B.wait_for(holding, 120, "workload holding %d MiB" % mib, step=0.1)


def descendants(pid: int) -> list:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir("/proc/%d/task" % current):
                with open("/proc/%d/task/%s/children" % (current, task)) as handle:
                    todo.extend(int(p) for p in handle.read().split())
        except OSError:
            pass
    return found


def dirty_binary(ctx: Ctx) -> str:
    binary = str(ctx.tmp / "dirty")
    if not os.path.exists(binary):
        subprocess.run(["gcc", "-static", "-O2", "-o", binary, str(C.BENCH_DIR / "dirty.c")], check=True)
    return binary


# --------------------------------------------------------------------------
# limits
# --------------------------------------------------------------------------

def limits(ctx: Ctx) -> dict:
    runs = 5 if ctx.quick else 30
    limits_mod = ctx.engine()["limits_op"]
    out: dict = {"runs": runs, "results": {}, "notes": {}}
    ours = OvzCt(ctx, "limits")
    samples: dict = {"ovz": {"cpu": [], "memory": []}, "lxc": {"cpu": [], "memory": []}}
    period = int(read(ours.cgfile("cpu", "cpu.cfs_period_us")))
    peer = None
    try:
        peer = LxcCt(ctx, "limits")
    except Exception as exc:  # noqa: BLE001 - ours still measured
        ctx.error("limits", "lxc: %s: %s" % (type(exc).__name__, exc))
    for index in range(runs + 1):
        pct = 50 if index % 2 == 0 else 60
        ram = (256 if index % 2 == 0 else 320) << 20
        quota = str(pct * period // 100)
        t0 = time.perf_counter()
        limits_mod.update(ours.manager, ours.name, {"cpulimit": pct})
        t1 = until(ours.cgfile("cpu", "cpu.cfs_quota_us"), quota)
        t2 = time.perf_counter()
        limits_mod.update(ours.manager, ours.name, {"ram": str(ram)})
        t3 = until(ours.cgfile("memory", "memory.limit_in_bytes"), str(ram))
        if index:
            samples["ovz"]["cpu"].append((t1 - t0) * 1000)
            samples["ovz"]["memory"].append((t3 - t2) * 1000)
        if peer is not None:
            t0 = time.perf_counter()
            C.run(peer.p("lxc-cgroup", "-n", peer.name, "cpu.cfs_quota_us", quota))
            t1 = until(peer.cgfile("cpu", "cpu.cfs_quota_us"), quota)
            if index:
                samples["lxc"]["cpu"].append((t1 - t0) * 1000)
    out["results"] = {system: {kind: C.summarize(v) for kind, v in kinds.items() if v}
                      for system, kinds in samples.items()}
    out["notes"]["lxc_memory"] = ("not measurable: /etc/lxc/lxc.conf keeps LXC out of the memory hierarchy "
                                  "(lxc.cgroup.use), which belongs to the machine's own tooling")
    out["cpu_period_us"] = period
    ctx.run_cleanups()
    return out


# --------------------------------------------------------------------------
# checkpoint
# --------------------------------------------------------------------------

def ovz_checkpoint(ctx: Ctx, label: str, mib: int, runs: int) -> dict:
    ct = OvzCt(ctx, label, mib)
    # idle means idle: start(wait_boot=True) returns when the startup script has created its marker,
    # and the script's shell may still hold that file open for a moment; a dump then records the open
    # file, which the restore cannot reopen ("Can't open file run/ovz/booted on restore")
    time.sleep(1.0)
    ckpt = ctx.engine()["checkpoint"].Checkpointer(ct.manager)
    samples: dict = {"dump": [], "frozen": [], "restore": [], "images_mib": []}
    for index in range(runs):
        images = str(ctx.tmp / ("ovz-dump-%s-%d" % (label, index)))
        t0 = time.perf_counter()
        result = ckpt.dump(ct.name, images)
        t1 = time.perf_counter()
        ckpt.restore(ct.name, images)
        t2 = time.perf_counter()
        samples["dump"].append((t1 - t0) * 1000)
        samples["restore"].append((t2 - t1) * 1000)
        samples["frozen"].append(result["frozen_ms"])
        samples["images_mib"].append(result["size"] / 1048576.0)
        shutil.rmtree(images, ignore_errors=True)
        if mib:
            wait_rss(ct.manager.runtime(ct.name).init_pid, mib)
    ctx.run_cleanups()
    return {k: C.summarize(v) for k, v in samples.items()}


def lxc_checkpoint(ctx: Ctx, label: str, mib: int, runs: int) -> dict:
    read_stats = ctx.engine()["criu"].read_stats
    ct = LxcCt(ctx, "c" + label, mib, checkpointable=not ctx.args.lxc_as_created)
    samples: dict = {"dump": [], "frozen": [], "restore": [], "images_mib": []}
    try:
        for index in range(runs):
            images = ctx.tmp / ("lxc-dump-%s-%d" % (label, index))
            t0 = time.perf_counter()
            dump = lxc_checkpoint_run(ct.p("lxc-checkpoint", "-n", ct.name, "-D", str(images), "-s", "-v"),
                                      ctx.tmp / "lxc-checkpoint.out")
            t1 = time.perf_counter()
            if dump.returncode != 0:
                raise C.StepError("lxc-checkpoint -s failed (rc %d): %s | %s" % (
                    dump.returncode, explain(images, "dump"), (dump.stderr or "").strip()[-400:]))
            stats = read_stats(str(images), "dump")
            restore = lxc_checkpoint_run(ct.p("lxc-checkpoint", "-n", ct.name, "-D", str(images), "-r", "-v"),
                                         ctx.tmp / "lxc-checkpoint.out")
            t2 = time.perf_counter()
            if restore.returncode != 0:
                raise C.StepError("lxc-checkpoint -r failed (rc %d): %s | %s" % (
                    restore.returncode, explain(images, "restore"), (restore.stderr or "").strip()[-400:]))
            B.wait_for(lambda: ct.peer._attach_ok(ct.name, "true"), 30, "lxc-attach after restore")  # pylint: disable=protected-access
            samples["dump"].append((t1 - t0) * 1000)
            samples["restore"].append((t2 - t1) * 1000)
            samples["frozen"].append(stats.get("frozen_time", 0) / 1000.0)
            samples["images_mib"].append(sum(f.stat().st_size for f in images.iterdir()) / 1048576.0)
            shutil.rmtree(images, ignore_errors=True)
    finally:
        ctx.run_cleanups()
    return {k: C.summarize(v) for k, v in samples.items()}


def lxc_checkpoint_run(argv: list, out_path) -> subprocess.CompletedProcess:
    """lxc-checkpoint with its output in a file: after -r the restored container's monitor keeps
    the output open, so pipes would never reach EOF."""
    with open(out_path, "w+") as out:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=300, check=False)
        out.seek(0)
        return subprocess.CompletedProcess(argv, proc.returncode, "", out.read())


def explain(images, kind: str) -> str:
    """The last error lines of CRIU's log in the images dir."""
    for name in ("%s.log" % kind, "lxc.%s.log" % kind):
        path = os.path.join(str(images), name)
        if os.path.exists(path):
            with open(path, errors="replace") as handle:
                lines = [line.strip() for line in handle if "Error" in line or "error" in line]
            return "%s: %s" % (name, " / ".join(lines[-4:]))
    return "no CRIU log in %s" % images


def checkpoint(ctx: Ctx) -> dict:
    runs = 2 if ctx.quick else 5
    sizes = [("small", 0), ("256MiB", 64 if ctx.quick else 256)]
    out: dict = {"runs": runs, "sizes": dict(sizes), "results": {}, "criu": C.cmd_output(["criu", "--version"])}
    for label, mib in sizes:
        for system, fn in (("ovz", ovz_checkpoint), ("lxc", lxc_checkpoint)):
            print("  checkpoint %s %s" % (system, label), file=sys.stderr, flush=True)
            try:
                out["results"].setdefault(label, {})[system] = fn(ctx, label, mib, runs)
            except Exception as exc:  # noqa: BLE001 - reported as the reason
                out["results"].setdefault(label, {})[system] = {"error": "%s: %s" % (type(exc).__name__, exc)}
                ctx.error("checkpoint", "%s %s: %s" % (system, label, exc))
                ctx.run_cleanups()
    return out
