"""Fair CPU share, CPU limits and BFQ I/O priority: configured vs achieved.

Measures, on this host's real cgroups, through the ovz.containers engine
(``limits.update``, the code behind ``ovz_limits``):

- cpuunits: containers pinned to one CPU, each running a CPU hog, with
  cpuunits 1000:2000, 1000:2000:3000 and 1000:8000. Configured share =
  units / sum(units); achieved share = the container's CPU time (cpuacct.usage
  on v1, cpu.stat usage_usec on v2) / the sum over the set.
- cpulimit: one container with more hogs than its limit allows, at cpulimit
  10, 25, 50 and 150 (set live, one after the other). Achieved = CPU time /
  wall time, in percent of one CPU.
- ioprio: two containers on one ext4 on a loop device this bench makes and
  switches to the bfq scheduler (never the host's disk), each reading its own
  file with O_DIRECT in a loop, at ioprio 0 and 7 (BFQ weights 320 and 640,
  configured ratio 2.0) and at ioprio 4 and 7 (500 and 640, ratio 1.28).
  Achieved ratio = bytes the BFQ scheduler served each cgroup
  (blkio.bfq.io_service_bytes_recursive on v1, io.stat rbytes on v2).

Error = |achieved - configured| / configured, in percent, for each container
and run; the summary averages them. Goals (issue 5): cpuunits <= 3 %,
cpulimit <= 5 %.

Output: a text table, JSON (bench/results/fairness.json) and a PNG plot
(bench/results/fairness.png; needs matplotlib, pinned in requirements.txt).

Everything the bench makes is named ovz*: the temp dir ovzfair.<random>, the
cgroup parent ovzfair<pid> (below the caller's own cgroups), containers
ovzf<pid><n>, the loop device's backing file; all are removed in a finally,
also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402  pylint: disable=wrong-import-position

CPUUNIT_SETS = ((1000, 2000), (1000, 2000, 3000), (1000, 8000))
CPULIMITS = (10, 25, 50, 150)
IOPRIO_PAIRS = ((0, 7), (4, 7))
HOG = "(while :; do :; done) </dev/null >/dev/null 2>&1 &"
GOALS = {"cpuunits": 3.0, "cpulimit": 5.0}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="measurements per configuration (3)")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of one measurement (5 s)")
    ap.add_argument("--settle", type=float, default=1.0, help="wait after a change before measuring (1 s)")
    ap.add_argument("--only", default="cpuunits,cpulimit,ioprio", help="experiments to run")
    ap.add_argument("--node-weight", type=int, default=10,
                    help="the bench's cgroup parent gets this many times the default CPU weight, so that other "
                         "load on a shared host disturbs the measured limits less (10; 1 = default)")
    ap.add_argument("--json", default=str(C.RESULTS_DIR / "fairness.json"), help="JSON output")
    ap.add_argument("--png", default=str(C.RESULTS_DIR / "fairness.png"), help="PNG plot ('' for none)")
    ap.add_argument("--tmpdir", default="/var/tmp", help="where the ovzfair.* temp dir goes")
    ap.add_argument("--repo-root", default=str(C.REPO_ROOT), help="the collection to import the engine from")
    return ap.parse_args(argv)


class Node:
    """One ContainerManager with its own data_dir and cgroup parent (ovzfair<pid>)."""

    def __init__(self, mods, data_dir: Path, parent: str, template: str):
        self.mods = mods
        self.manager = mods["container"].ContainerManager(str(data_dir), parent)
        self.parent = parent
        self.template = template
        self.count = 0

    def container(self, limits: dict) -> str:
        self.count += 1
        name = "ovzf%d%d" % (os.getpid(), self.count)
        self.manager.create(name, self.template, layout="directory")
        self.mods["limits_op"].update(self.manager, name, limits)
        self.manager.start(name, wait_boot=True, timeout=30)
        return name

    def sh(self, name: str, script: str) -> str:
        result = self.manager.exec(name, ["/bin/sh", "-c", script], timeout=120)
        if result.rc != 0:
            raise C.StepError("inside %s: %s: rc %d %s" % (name, script, result.rc, result.stderr.decode()))
        return result.stdout.decode()

    def cgfile(self, name: str, controller: str, filename: str) -> Path:
        cgroups = self.manager.cgroups_for(self.manager.runtime(name))
        return Path(cgroups.controller_dir(controller)) / filename

    def cpu_ns(self, name: str) -> int:
        if self.manager.backend.version == 1:
            return int(self.cgfile(name, "cpuacct", "cpuacct.usage").read_text())
        stat = dict(line.split() for line in self.cgfile(name, "cpu", "cpu.stat").read_text().splitlines())
        return int(stat["usage_usec"]) * 1000

    def weight_parent(self, factor: int) -> None:
        """Give the node's own cgroup (ovzfair<pid>) ``factor`` times the default CPU weight."""
        if factor <= 1:
            return
        backend = self.manager.backend
        for key, rel in backend.resolve_parent(self.parent).items():
            base = Path(backend.mountpoint(key)) / rel.lstrip("/")
            for filename, value in (("cpu.shares", 1024 * factor), ("cpu.weight", min(10000, 100 * factor))):
                if (base / filename).exists() and os.path.basename(base).startswith("ovz"):
                    (base / filename).write_text(str(value))

    def destroy(self, name: str) -> None:
        self.manager.destroy(name)

    def cleanup(self) -> list:
        problems = []
        for name in self.manager.layout.names():
            try:
                self.manager.destroy(name)
            except Exception as exc:  # noqa: BLE001 - clean as much as possible
                problems.append("destroy %s: %s" % (name, exc))
        backend = self.manager.backend
        for key, rel in backend.resolve_parent(self.parent).items():
            directory = Path(backend.mountpoint(key)) / rel.lstrip("/")
            if directory.is_dir() and directory.name.startswith("ovz"):
                try:
                    directory.rmdir()
                except OSError as exc:
                    problems.append("rmdir %s: %s" % (directory, exc))
        return problems


def measure_cpu(node: Node, names, seconds: float):
    """CPU time of each container over ``seconds``, in CPUs (1.0 = one whole CPU)."""
    before = [node.cpu_ns(n) for n in names]
    began = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - began
    after = [node.cpu_ns(n) for n in names]
    return [(a - b) / 1e9 / elapsed for a, b in zip(after, before)]


def error_pct(achieved: float, configured: float) -> float:
    return abs(achieved - configured) / configured * 100.0


# -------------------------------------------------------------------------- experiments
def run_cpuunits(node: Node, args) -> list:
    cpu = str(sorted(os.sched_getaffinity(0))[-1])
    out = []
    for units in CPUUNIT_SETS:
        names = [node.container({"cpuunits": u, "cpumask": cpu}) for u in units]
        try:
            for name in names:
                node.sh(name, HOG)
            time.sleep(args.settle)
            configured = [u / sum(units) for u in units]
            runs = []
            for _run in range(args.runs):
                used = measure_cpu(node, names, args.seconds)
                runs.append([u / sum(used) for u in used])
            errors = [error_pct(a, c) for run in runs for a, c in zip(run, configured)]
            out.append({"units": list(units), "cpu": int(cpu), "configured_share": configured,
                        "achieved_share": runs, "error_pct": errors,
                        "mean_error_pct": statistics.mean(errors), "max_error_pct": max(errors)})
            print("cpuunits %-16s configured %s achieved %s  error %.2f %% (max %.2f)" % (
                ":".join(map(str, units)), " ".join("%.3f" % c for c in configured),
                " ".join("%.3f" % statistics.mean(r[i] for r in runs) for i in range(len(units))),
                out[-1]["mean_error_pct"], out[-1]["max_error_pct"]), flush=True)
        finally:
            for name in names:
                node.destroy(name)
    return out


def run_cpulimit(node: Node, args) -> list:
    out = []
    name = node.container({})
    try:
        hogs = max(2, -(-max(CPULIMITS) // 100) + 1)
        node.sh(name, " ".join([HOG] * hogs))
        for pct in CPULIMITS:
            node.mods["limits_op"].update(node.manager, name, {"cpulimit": pct})
            time.sleep(args.settle)
            achieved = [measure_cpu(node, [name], args.seconds)[0] * 100.0 for _run in range(args.runs)]
            errors = [error_pct(a, pct) for a in achieved]
            out.append({"cpulimit": pct, "hogs": hogs, "achieved_pct": achieved, "error_pct": errors,
                        "mean_error_pct": statistics.mean(errors), "max_error_pct": max(errors)})
            print("cpulimit %3d %%: achieved %s %%  error %.2f %% (max %.2f)" % (
                pct, " ".join("%.1f" % a for a in achieved), out[-1]["mean_error_pct"], out[-1]["max_error_pct"]),
                flush=True)
    finally:
        node.destroy(name)
    return out


class BfqDisk:
    """ext4 on a loop device over a file in the bench's temp dir, with the bfq scheduler."""

    def __init__(self, tmp: Path, size_mb: int = 1024):
        self.image = tmp / "ovzfair-bfq.img"
        self.mount = tmp / "bfq"
        self.device = None
        with open(self.image, "wb") as handle:
            handle.truncate(size_mb << 20)
        C.run(["mkfs.ext4", "-q", "-F", str(self.image)])
        # direct-io: the loop device reads the disk under it, not the host page cache, so it is slow
        # enough for I/O (not the CPU) to be the bottleneck, which BFQ weights need.
        self.device = C.run(["losetup", "--find", "--show", "--direct-io=on", str(self.image)]).stdout.strip()
        queue = Path("/sys/block/%s/queue" % os.path.basename(self.device))
        (queue / "scheduler").write_text("bfq")
        # BFQ's low_latency heuristics raise the weight of new and interactive queues for a while;
        # a weight measurement turns them off (on this loop device only) ...
        (queue / "iosched" / "low_latency").write_text("0")
        # ... and strict_guarantees makes it idle for the in-service queue as long as needed to keep weights.
        (queue / "iosched" / "strict_guarantees").write_text("1")
        self.mount.mkdir()
        C.run(["mount", self.device, str(self.mount)])

    def devno(self) -> str:
        st = os.stat(self.device)
        return "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))

    def close(self) -> list:
        problems = []
        if self.mount.is_dir():
            if subprocess.run(["umount", str(self.mount)], check=False, capture_output=True).returncode != 0:
                problems.append("cannot unmount %s" % self.mount)
        if self.device:
            subprocess.run(["losetup", "-d", self.device], check=False, capture_output=True)
        return problems


def read_bytes(node: Node, name: str, devno: str) -> int:
    if node.manager.backend.version == 1:
        text = node.cgfile(name, "blkio", "blkio.bfq.io_service_bytes_recursive").read_text()
        return sum(int(line.split()[2]) for line in text.splitlines()
                   if line.startswith(devno + " ") and line.split()[1] == "Read")
    for line in node.cgfile(name, "io", "io.stat").read_text().splitlines():
        if line.startswith(devno + " "):
            return int(dict(item.split("=") for item in line.split()[1:]).get("rbytes", 0))
    return 0


def run_ioprio(mods, tmp: Path, template: str, args) -> list:
    out = []
    disk = BfqDisk(tmp)
    node = Node(mods, disk.mount / "data", "ovzfair%dio" % os.getpid(), template)
    try:
        devno = disk.devno()
        weights = mods["limits"].IOPRIO_WEIGHTS
        for low, high in IOPRIO_PAIRS:
            names = [node.container({"ioprio": low}), node.container({"ioprio": high})]
            try:
                for name in names:
                    node.sh(name, "dd if=/dev/zero of=/root/ovz-data bs=1M count=128 2>/dev/null && sync")
                for name in names:
                    node.sh(name, "sh -c 'while :; do dd if=/root/ovz-data of=/dev/null bs=64k iflag=direct "
                                  "2>/dev/null; done' </dev/null >/dev/null 2>&1 &")
                time.sleep(args.settle)
                configured = weights[high] / weights[low]
                ratios = []
                for _run in range(args.runs):
                    before = [read_bytes(node, n, devno) for n in names]
                    time.sleep(args.seconds)
                    done = [read_bytes(node, n, devno) - b for n, b in zip(names, before)]
                    ratios.append(done[1] / done[0] if done[0] else float("nan"))
                    mb = [d / args.seconds / 1e6 for d in done]
                errors = [error_pct(r, configured) for r in ratios]
                out.append({"ioprio": [low, high], "weights": [weights[low], weights[high]],
                            "configured_ratio": configured, "achieved_ratio": ratios, "error_pct": errors,
                            "last_mb_per_s": mb, "mean_error_pct": statistics.mean(errors),
                            "max_error_pct": max(errors)})
                achieved = " ".join("%.2f" % r for r in ratios)
                print("ioprio %d:%d (weights %d:%d): configured ratio %.2f achieved %s  error %.1f %% "
                      "(%.0f + %.0f MB/s)" % (low, high, weights[low], weights[high], configured, achieved,
                                              out[-1]["mean_error_pct"], mb[0], mb[1]), flush=True)
            finally:
                for name in names:
                    node.destroy(name)
    finally:
        problems = node.cleanup()
        problems += disk.close()
        for problem in problems:
            print("cleanup: " + problem, file=sys.stderr)
    return out


# -------------------------------------------------------------------------- output
def summary(results: dict) -> dict:
    out = {}
    for key in ("cpuunits", "cpulimit", "ioprio"):
        if results.get(key):
            errors = [e for item in results[key] for e in item["error_pct"]]
            out[key] = {"mean_error_pct": round(statistics.mean(errors), 3), "max_error_pct": round(max(errors), 3),
                        "goal_pct": GOALS.get(key)}
            if key in GOALS:
                out[key]["met"] = out[key]["mean_error_pct"] <= GOALS[key]
    return out


def table(results: dict) -> str:
    lines = ["%-10s %-18s %-28s %-34s %s" % ("what", "setting", "configured", "achieved (mean of runs)",
                                             "error % mean / max")]
    for item in results.get("cpuunits", []):
        n = len(item["units"])
        achieved = [statistics.mean(r[i] for r in item["achieved_share"]) for i in range(n)]
        lines.append("%-10s %-18s %-28s %-34s %.2f / %.2f" % (
            "cpuunits", ":".join(map(str, item["units"])), " ".join("%.3f" % c for c in item["configured_share"]),
            " ".join("%.3f" % a for a in achieved), item["mean_error_pct"], item["max_error_pct"]))
    for item in results.get("cpulimit", []):
        lines.append("%-10s %-18s %-28s %-34s %.2f / %.2f" % (
            "cpulimit", "%d %%" % item["cpulimit"], "%d %% of a CPU" % item["cpulimit"],
            "%.2f %%" % statistics.mean(item["achieved_pct"]), item["mean_error_pct"], item["max_error_pct"]))
    for item in results.get("ioprio", []):
        lines.append("%-10s %-18s %-28s %-34s %.2f / %.2f" % (
            "ioprio", "%d:%d" % tuple(item["ioprio"]), "ratio %.3f" % item["configured_ratio"],
            "ratio %.3f" % statistics.mean(item["achieved_ratio"]), item["mean_error_pct"], item["max_error_pct"]))
    return "\n".join(lines)


def plot(results: dict, path: str) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return "no plot: %s (pip install -r requirements.txt)" % exc
    panels = [k for k in ("cpuunits", "cpulimit", "ioprio") if results.get(k)]
    if not panels:
        return "no plot: nothing measured"
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    for ax, key in zip(axes[0], panels):
        if key == "cpuunits":
            labels, conf, got, spread = [], [], [], []
            for item in results[key]:
                for i, units in enumerate(item["units"]):
                    values = [r[i] for r in item["achieved_share"]]
                    labels.append("%s\n%d" % (":".join(map(str, item["units"])), units))
                    conf.append(item["configured_share"][i])
                    got.append(statistics.mean(values))
                    spread.append([statistics.mean(values) - min(values), max(values) - statistics.mean(values)])
            xs = range(len(labels))
            ax.bar([x - 0.2 for x in xs], conf, 0.4, label="configured")
            ax.bar([x + 0.2 for x in xs], got, 0.4, yerr=list(zip(*spread)), capsize=3, label="achieved")
            ax.set_xticks(list(xs), labels, fontsize=7)
            ax.set_ylabel("share of the CPU")
            ax.set_title("cpuunits (one CPU shared)")
        elif key == "cpulimit":
            conf = [item["cpulimit"] for item in results[key]]
            got = [statistics.mean(item["achieved_pct"]) for item in results[key]]
            lo = [g - min(item["achieved_pct"]) for g, item in zip(got, results[key])]
            hi = [max(item["achieved_pct"]) - g for g, item in zip(got, results[key])]
            ax.plot([0, max(conf) * 1.1], [0, max(conf) * 1.1], color="grey", linewidth=0.8, label="configured")
            ax.errorbar(conf, got, yerr=[lo, hi], fmt="o", capsize=3, label="achieved")
            ax.set_xlabel("cpulimit (% of one CPU)")
            ax.set_ylabel("CPU used (% of one CPU)")
            ax.set_title("cpulimit")
        else:
            labels = ["%d:%d" % tuple(item["ioprio"]) for item in results[key]]
            conf = [item["configured_ratio"] for item in results[key]]
            got = [statistics.mean(item["achieved_ratio"]) for item in results[key]]
            xs = range(len(labels))
            ax.bar([x - 0.2 for x in xs], conf, 0.4, label="configured (weight ratio)")
            ax.bar([x + 0.2 for x in xs], got, 0.4, label="achieved (bytes ratio)")
            ax.set_xticks(list(xs), labels)
            ax.set_ylabel("bandwidth ratio high:low")
            ax.set_title("ioprio (BFQ)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def engine_node(tmp: Path, repo_root: str, cgroup_parent: str):
    """(a Node with the engine imported from ``repo_root`` and a busybox template, this machine's info);
    (None, None) with the reason on stderr when the engine cannot be imported."""
    tree = C.collections_tree(tmp / "collections", Path(repo_root))
    mods, why = C.import_engine(tree, "container", "limits", "limits_op", "templates")
    if mods is None:
        print("ovz: engine not available: %s" % why, file=sys.stderr)
        return None, None
    template = mods["templates"].build_busybox_template(str(tmp / "templates"))
    machine = C.machine_info({"busybox": C.dpkg_version("busybox-static")})
    return Node(mods, tmp / "data", cgroup_parent, template), machine


def main(argv=None) -> int:
    args = parse_args(argv)
    only = set(args.only.split(","))
    C.install_interrupt_handlers()
    tmp = C.make_tmpdir("fair", args.tmpdir)
    node = None
    results: dict = {}
    errors: dict = {}
    try:
        node, machine = engine_node(tmp, args.repo_root, "ovzfair%d" % os.getpid())
        if node is None:
            return 2
        if only & {"cpuunits", "cpulimit"}:
            warm = node.container({})
            node.weight_parent(args.node_weight)
            node.destroy(warm)
        for key, func in (("cpuunits", run_cpuunits), ("cpulimit", run_cpulimit)):
            if key in only:
                try:
                    results[key] = func(node, args)
                except C.StepError as exc:
                    errors[key] = str(exc)
        if "ioprio" in only:
            try:
                results["ioprio"] = run_ioprio(node.mods, tmp, node.template, args)
            except (C.StepError, OSError) as exc:
                errors["ioprio"] = str(exc)
        totals = summary(results)
        print()
        print(table(results))
        for key, value in totals.items():
            goal = " (goal <= %.0f %%: %s)" % (value["goal_pct"], "met" if value["met"] else "NOT met") \
                if value.get("goal_pct") else ""
            print("%-9s mean error %.2f %%, max %.2f %%%s"
                  % (key, value["mean_error_pct"], value["max_error_pct"], goal))
        C.write_results(args.json, machine, args.runs, results, summary=totals, errors=errors,
                        settings={"seconds": args.seconds, "settle": args.settle, "node_weight": args.node_weight,
                                  "cpuunit_sets": CPUUNIT_SETS, "cpulimits": CPULIMITS,
                                  "ioprio_pairs": IOPRIO_PAIRS})
        print("JSON: %s" % args.json)
        if args.png:
            problem = plot(results, args.png)
            print(problem or "PNG: %s" % args.png)
        return 0 if not errors else 1
    finally:
        C.clean_up_run(node, tmp, mine="ovzfair")


if __name__ == "__main__":
    sys.exit(main())
