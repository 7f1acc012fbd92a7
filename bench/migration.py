"""Checkpoint and live-migration frozen time and total time, by memory size and pre-dumps (issue 7).

Two nodes of the multi-node harness (tests/support/multinode.py: own netns, sshd, data_dir,
cgroup_parent) on this machine; the migration runs over real SSH between them. In a
busybox container, bench/dirty.c holds SIZE MiB and keeps dirtying RATE MiB/s.

For each size and each number of pre-dumps:
- checkpoint: ``Checkpointer.dump(leave_running=True)`` (after the pre-dumps, when asked);
  frozen = CRIU's own frozen time; total = the call;
- migration: ``migration.migrate(lazy=False)`` node 1 -> node 2, all memory copied while frozen
  (after the pre-dumps); frozen = from the freeze to the end of the restore on the target;
  total = the whole call (pre-flight to cleanup);
- lazy migration: ``migration.migrate(lazy=True)`` of the same container back, node 2 -> node 1
  (post-copy: CRIU lazy pages over userfaultfd, the pages fetched from the source's page server
  after the restore); frozen as above (the pages still to come do not count: the container runs),
  total includes the page transfer. No pre-dumps with lazy migration.

    python3 bench/migration.py                        # 64,256,1024 MiB x 0,3 pre-dumps, both kinds
    python3 bench/migration.py --sizes 64 --runs 3
    python3 bench/migration.py --sizes 256 --predumps 0 --kinds privileged,unprivileged

Each size is measured for privileged and unprivileged containers side by side in the same run
(``--kinds``), and the table gives the unprivileged/privileged ratio of the frozen times. The lazy
migration of an unprivileged container needs ``vm.unprivileged_userfaultfd = 1``: the bench sets it
for its run and puts the old value back.

Writes bench/results/migration.json and bench/results/migration.png.
Pre-dumps need soft-dirty tracking (``criu check --feature mem_dirty_track``); where the
kernel lacks it they are skipped by the engine and the result says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import common as C
from support.multinode import Harness

GOAL_MS = 300.0
S50 = """#!/bin/sh
case "$1" in
    start) /usr/bin/dirty %d %d </dev/null >/dev/null 2>&1 & ;;
esac
exit 0
"""


def node_json(node, code):
    out = node.python(code, timeout=1800).stdout
    return json.loads(out.strip().splitlines()[-1])


def make(node, name, template, binary, size, rate, unprivileged=False):
    node.create_container(name, template, [], start=False, unprivileged=unprivileged)
    code = ("import os, shutil, json\n"
            "from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager\n"
            "m = ContainerManager(%r, %r)\n"
            "s = m.storage(m.load(%r))\n"
            "s.mount()\n"
            "shutil.copy(%r, os.path.join(s.root, 'usr/bin/dirty'))\n"
            "p = os.path.join(s.root, 'etc/init.d/S50dirty')\n"
            "open(p, 'w').write(%r)\n"
            "os.chmod(p, 0o755)\n"
            "s.umount()\n"
            "m.start(%r, wait_boot=True)\n"
            "print(json.dumps(m.runtime(%r).init_pid))\n"
            % (node.data_dir, node.cgroup_parent, name, binary, S50 % (size, rate), name, name))
    init_pid = node_json(node, code)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:     # until the workload holds its memory
        for pid in descendants(init_pid):
            if rss_mib(pid) >= size * 0.95:
                return
        time.sleep(0.2)
    raise RuntimeError("the workload of %s did not reach %d MiB" % (name, size))


def descendants(pid):
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


def rss_mib(pid):
    try:
        with open("/proc/%d/status" % pid) as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def checkpoint(node, name, predumps, scratch):
    code = ("import json, os, time\n"
            "from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager\n"
            "from ansible_collections.ovz.containers.plugins.module_utils._engine.ops.checkpoint import Checkpointer\n"
            "c = Checkpointer(ContainerManager(%r, %r))\n"
            "base = %r\n"
            "done, parent = 0, None\n"
            "began = time.monotonic()\n"
            "if %d and c.criu.feature('mem_dirty_track'):\n"
            "    for i in range(%d):\n"
            "        d = os.path.join(base, 'pre%%d' %% i)\n"
            "        c.pre_dump(%r, d, parent_dir=parent)\n"
            "        parent, done = d, done + 1\n"
            "r = c.dump(%r, os.path.join(base, 'final'), parent_dir=parent, leave_running=True)\n"
            "print(json.dumps({'frozen_ms': r['frozen_ms'], 'dump_ms': r['timings']['total_ms'],\n"
            "                  'total_ms': (time.monotonic() - began) * 1000, 'size': r['size'], 'predumps': done}))\n"
            % (node.data_dir, node.cgroup_parent, scratch, predumps, predumps, name, name))
    try:
        return node_json(node, code)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def migrate(node, name, target, predumps, lazy):
    code = ("import json\n"
            "from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager\n"
            "from ansible_collections.ovz.containers.plugins.module_utils._engine.ops import migration\n"
            "r = migration.migrate(ContainerManager(%r, %r), %r, %r, pre_dump_iterations=%d, lazy=%r)\n"
            "print(json.dumps(r, default=str))\n" % (node.data_dir, node.cgroup_parent, name, target, predumps, lazy))
    return node_json(node, code)


def migration_row(mig):
    return {"frozen_ms": (mig["frozen_time"] or 0) * 1000, "total_ms": mig["timings"]["total"] * 1000,
            "lazy": mig.get("lazy"), "predumps_done": mig["pre_dump_iterations"],
            "timings_ms": {k: v * 1000 for k, v in mig["timings"].items()},
            "sizes": mig["sizes"], "warnings": mig.get("warnings", []),
            "criu_dump_ms": mig.get("dump_timings"), "criu_restore_ms": mig.get("restore_timings")}


def plot(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return "no plot: %s" % exc
    sizes = sorted({r["size_mib"] for r in results})
    series = sorted({r["predumps"] for r in results})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    kinds = (("checkpoint", "checkpoint"), ("migration", "migration"), ("lazy", "lazy migration"))
    width = 0.8 / (len(kinds) * len(series))
    for ax, key, title in ((axes[0], "frozen_ms", "frozen time"), (axes[1], "total_ms", "total time")):
        for k, predumps in enumerate(series):
            for j, (kind, label) in enumerate(kinds):
                ys = []
                for size in sizes:
                    vals = [r[kind][key] for r in results if r["size_mib"] == size and r["predumps"] == predumps]
                    ys.append(sorted(vals)[len(vals) // 2] if vals else 0)
                xs = [i + (len(kinds) * k + j - len(kinds) * len(series) / 2 + 0.5) * width for i in range(len(sizes))]
                ax.bar(xs, ys, width, label="%s, %d pre-dumps" % (label, predumps))
        if key == "frozen_ms":
            ax.axhline(GOAL_MS, color="red", linestyle="--", linewidth=1, label="goal 300 ms")
        ax.set_xticks(range(len(sizes)))
        ax.set_xticklabels(["%d MiB" % s for s in sizes])
        ax.set_ylabel("ms")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.suptitle("ovz.containers: checkpoint and live migration (median of runs)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    ap.add_argument("--sizes", default="64,256,1024", help="memory held by the workload, MiB")
    ap.add_argument("--predumps", default="0,3", help="pre-dump iterations to compare")
    ap.add_argument("--rate", type=int, default=32, help="MiB/s the workload dirties")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--kinds", default="privileged,unprivileged", help="container kinds, side by side")
    ap.add_argument("--json", default=str(C.RESULTS_DIR / "migration.json"))
    ap.add_argument("--png", default=str(C.RESULTS_DIR / "migration.png"), help="PNG plot ('' for none)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    predump_list = [int(p) for p in args.predumps.split(",")]
    kinds = [k for k in args.kinds.split(",") if k]
    work = tempfile.mkdtemp(prefix="ovz-tests-bench-", dir="/var/tmp")
    results = []
    uffd = "/proc/sys/vm/unprivileged_userfaultfd"
    with open(uffd) as handle:
        uffd_before = handle.read().strip()
    if "unprivileged" in kinds:
        with open(uffd, "w") as handle:
            handle.write("1")
    try:
        binary = os.path.join(work, "dirty")
        subprocess.run(["gcc", "-static", "-O2", "-o", binary, str(C.BENCH_DIR / "dirty.c")], check=True)
        with Harness(os.path.join(work, "mn-bench"), 2) as harness:
            node1, node2 = harness.nodes
            template = node_json(node1, "import json\nfrom ansible_collections.ovz.containers.plugins.module_utils."
                                        "_engine.node.templates import build_busybox_template\n"
                                        "print(json.dumps(build_busybox_template(%r)))" % os.path.join(work, "tpl"))
            for run in range(args.runs):
                for size in sizes:
                    for predumps, kind in [(p, k) for p in predump_list for k in kinds]:
                        name = "ovzbm%s%d" % (kind[0], size)
                        make(node1, name, template, binary, size, args.rate, unprivileged=kind == "unprivileged")
                        try:
                            ckpt = checkpoint(node1, name, predumps, os.path.join(work, "ckpt"))
                            mig = migrate(node1, name, node2.target(), predumps, False)
                            lazy = migrate(node2, name, node1.target(), predumps, True)
                        finally:
                            for node in (node1, node2):
                                node.engine("manager.destroy(%r)" % name)
                        row = {"run": run, "size_mib": size, "predumps": predumps, "rate_mib_s": args.rate,
                               "kind": kind, "checkpoint": ckpt, "migration": migration_row(mig),
                               "lazy": migration_row(lazy)}
                        results.append(row)
                        print("%-12s " % kind, end="")
                        print("%5d MiB  %d pre-dumps: checkpoint frozen %8.1f ms total %8.1f ms | migration frozen "
                              "%8.1f ms total %8.1f ms (pre-dumps done %d) | lazy frozen %8.1f ms total %8.1f ms"
                              % (size, predumps, ckpt["frozen_ms"], ckpt["total_ms"], row["migration"]["frozen_ms"],
                                 row["migration"]["total_ms"], mig["pre_dump_iterations"], row["lazy"]["frozen_ms"],
                                 row["lazy"]["total_ms"]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        with open(uffd, "w") as handle:
            handle.write(uffd_before)
    rows, table = [], {}
    for row in results:
        key = "%d MiB, %d pre-dumps, %s" % (row["size_mib"], row["predumps"], row.get("kind", "privileged"))
        if key not in table:
            rows.append(key)
            table[key] = {"ckpt frozen": [], "ckpt total": [], "migr frozen": [], "migr total": [],
                          "lazy frozen": [], "lazy total": []}
        table[key]["ckpt frozen"].append(row["checkpoint"]["frozen_ms"])
        table[key]["ckpt total"].append(row["checkpoint"]["total_ms"])
        table[key]["migr frozen"].append(row["migration"]["frozen_ms"])
        table[key]["migr total"].append(row["migration"]["total_ms"])
        table[key]["lazy frozen"].append(row["lazy"]["frozen_ms"])
        table[key]["lazy total"].append(row["lazy"]["total_ms"])
    columns = ["ckpt frozen", "ckpt total", "migr frozen", "migr total", "lazy frozen", "lazy total"]
    print(C.format_table(rows, columns, {c: {r: C.summarize(table[r][c]) for r in rows} for c in columns},
                         title="checkpoint and live migration, %d MiB/s dirtied" % args.rate))
    ratios = {}
    for key in rows:
        if key.endswith(", unprivileged") and key.replace(", unprivileged", ", privileged") in table:
            base = table[key.replace(", unprivileged", ", privileged")]
            ratios[key[:-len(", unprivileged")]] = {
                column: round(C.summarize(table[key][column])["median_ms"] / C.summarize(base[column])["median_ms"], 3)
                for column in ("ckpt frozen", "migr frozen", "lazy frozen")
                if C.summarize(base[column])["median_ms"]}
    for key, values in ratios.items():
        print("unprivileged / privileged, %s: %s" % (key, ", ".join("%s %.2f" % kv for kv in values.items())))
    path = C.write_results(args.json, C.machine_info(), args.runs, {"rows": results, "ratios": ratios},
                           goal_frozen_ms=GOAL_MS, rate_mib_s=args.rate)
    print("JSON: %s" % path)
    if args.png:
        problem = plot(results, args.png)
        print(problem or "PNG: %s" % args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
