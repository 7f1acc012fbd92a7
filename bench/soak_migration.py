"""A soak of consecutive live migrations back and forth between two harness nodes (issue 21).

Two nodes of the multi-node harness (tests/support/multinode.py: own netns, sshd, data_dir,
cgroup_parent) on this machine. For each container kind (privileged, unprivileged) and each mode
(lazy: post-copy over userfaultfd; pre-copy: ``lazy=False``, with pre-dumps where the kernel tracks
dirty memory, a plain dump where it does not), one busybox container running the C workload of the
tests (a counter, timers, an echo server) with an established TCP connection from the harness's
hub migrates N times, node 1 -> node 2 -> node 1 ... After each migration the same connection must
answer and the workload must be the same process with its counter gone on; anything else counts as
a failure (and the soak goes on from wherever the container is).

    python3 bench/soak_migration.py               # 50 of each mode, both kinds
    python3 bench/soak_migration.py --count 5 --kinds unprivileged --modes lazy

The lazy migration of an unprivileged container needs ``vm.unprivileged_userfaultfd = 1``: the soak
sets it for its run and puts the old value back. Prints the failures and the frozen-time spread per
kind and mode; writes bench/results/soak_migration.json.
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
from support.migration import PORT, WORKLOAD_SRC, addresses, echo, make_container, status_of
from support.multinode import Harness

UFFD = "/proc/sys/vm/unprivileged_userfaultfd"


def migrate(node, name, target, lazy):
    code = ("import json\n"
            "from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager\n"
            "from ansible_collections.ovz.containers.plugins.module_utils._engine.ops import migration\n"
            "try:\n"
            "    r = migration.migrate(ContainerManager(%r, %r), %r, %r, lazy=%r)\n"
            "except Exception as exc:\n"
            "    r = {'failed': True, 'msg': str(exc)}\n"
            "print('\\n' + json.dumps(r, default=str))\n" % (node.data_dir, node.cgroup_parent, name, target, lazy))
    proc = node.python(code, check=False, timeout=600)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"failed": True, "msg": "no result (rc %s): %s" % (proc.returncode, proc.stderr[-2000:])}


def where(harness, name):
    for node in harness.nodes[:2]:
        if node.engine("manager.status(%r)" % name) == "running":
            return node
    return None


def soak(harness, template, binary, kind, mode, count, index):
    node1, node2 = harness.nodes[:2]
    name = "ovzsk%s%s" % (kind[0], mode[0])
    ips = addresses(index)
    make_container(node1, name, template, binary, ips, tcp=True, unprivileged=kind == "unprivileged")
    conn = harness.tcp_connect(ips[0], PORT)
    frozen, failures, lazy_used = [], [], []
    try:
        assert echo(conn, "start") == "echo:start"
        before = status_of(node1, name)
        for number in range(count):
            source = where(harness, name)
            if source is None:
                failures.append({"n": number, "msg": "the container runs on no node"})
                break
            target = node2 if source is node1 else node1
            result = migrate(source, name, target.target(), mode == "lazy")
            problem = None
            if result.get("failed") or not result.get("changed"):
                problem = result.get("msg", result)
            else:
                frozen.append(result["frozen_time"] * 1000)
                lazy_used.append(bool(result.get("lazy")))
                try:
                    if echo(conn, "n%d" % number) != "echo:n%d" % number:
                        problem = "the connection answered wrong"
                    after = status_of(target, name)
                    if after["pid"] != before["pid"] or int(after["counter"]) <= int(before["counter"]):
                        problem = "not the same workload: %r then %r" % (before, after)
                    before = after
                except Exception as exc:  # noqa: BLE001 - counted as a failure of this migration
                    problem = "after the migration: %s" % exc
            if problem:
                failures.append({"n": number, "msg": str(problem)[:2000]})
                print("  %s %s #%d FAILED: %s" % (kind, mode, number, str(problem)[:300]), flush=True)
                try:
                    conn.close()
                    conn = harness.tcp_connect(ips[0], PORT)
                    before = status_of(where(harness, name) or node1, name)
                except Exception:  # noqa: BLE001 - the soak goes on if it can
                    pass
            elif number % 10 == 9:
                print("  %s %s: %d migrations, %d failed" % (kind, mode, number + 1, len(failures)), flush=True)
    finally:
        conn.close()
        for node in (node1, node2):
            node.engine("manager.destroy(%r)" % name)
    return {"kind": kind, "mode": mode, "count": count, "failures": failures, "lazy": lazy_used,
            "frozen": C.summarize(frozen)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    ap.add_argument("--count", type=int, default=50, help="migrations of each kind and mode")
    ap.add_argument("--kinds", default="privileged,unprivileged")
    ap.add_argument("--modes", default="lazy,precopy")
    ap.add_argument("--json", default=str(C.RESULTS_DIR / "soak_migration.json"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="ovz-tests-soak-", dir="/var/tmp")
    with open(UFFD) as handle:
        uffd_before = handle.read().strip()
    with open(UFFD, "w") as handle:
        handle.write("1")
    rows = []
    began = time.monotonic()
    try:
        binary = os.path.join(work, "ckpt_workload")
        subprocess.run(["gcc", "-static", "-O2", "-o", binary, WORKLOAD_SRC], check=True)
        with Harness(os.path.join(work, "mn-soak"), 2) as harness:
            node1 = harness.nodes[0]
            template = json.loads(node1.python(
                "import json\nfrom ansible_collections.ovz.containers.plugins.module_utils._engine.node.templates "
                "import build_busybox_template\nprint(json.dumps(build_busybox_template(%r)))"
                % os.path.join(work, "tpl")).stdout.strip().splitlines()[-1])
            index = 150
            for kind in args.kinds.split(","):
                for mode in args.modes.split(","):
                    index += 1
                    row = soak(harness, template, binary, kind, mode, args.count, index)
                    rows.append(row)
                    print("%-12s %-8s %d migrations, %d failed; frozen ms median %s p90 %s max %s (lazy: %d of %d)"
                          % (kind, mode, args.count, len(row["failures"]), row["frozen"]["median_ms"],
                             row["frozen"]["p90_ms"], row["frozen"]["max_ms"], sum(row["lazy"]), len(row["lazy"])),
                          flush=True)
    finally:
        with open(UFFD, "w") as handle:
            handle.write(uffd_before)
        shutil.rmtree(work, ignore_errors=True)
    path = C.write_results(args.json, C.machine_info(), 1, {"rows": rows},
                           seconds=round(time.monotonic() - began, 1))
    print("JSON: %s" % path)
    return 1 if any(row["failures"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
