"""Fleet convergence: N busybox containers with limits and addresses through ansible-playbook
and the ovz.containers.ovz_fleet role, then the idempotent second run (issue 8).

The nodes are those of the multi-node harness (tests/support/multinode.py): network namespaces on
this kernel, each with its own sshd, data_dir and cgroup parent; ansible-playbook runs from
the harness's hub over real SSH, one play for all nodes (the containers are spread evenly).
Container addresses are 10.213.201.<i> (the harness's container range). Goals: first run
under 60 s, second run under 10 s with zero changed tasks, for 100 containers on 2 CPUs.

Everything lives under /var/tmp/ovz-bench-fleet-*, containers are named ovzf<NNN>, and all
is removed in a finally (the harness destroys the containers, sshd, namespaces, cgroups).

    python3 bench/fleet.py                    # 100 containers, 2 nodes, bench/results/fleet.json
    python3 bench/fleet.py --containers 20 --nodes 1 --layout image
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time

import common as C
from support.multinode import Harness

GOALS_S = {"first": 60.0, "second": 10.0}
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
SUMMARY = re.compile(r"'created': (\d+), 'changed': (\d+), 'unchanged': (\d+), 'removed': (\d+)")
TIMINGS = re.compile(r"module seconds \{'plan': ([0-9.]+)(?:, 'apply': ([0-9.]+))?\}")

PLAYBOOK = """---
- name: Converge the fleet
  hosts: ovz_nodes
  gather_facts: false
  roles:
    - role: ovz.containers.ovz_fleet
      vars:
        ovz_fleet_name: bench
        ovz_fleet_data_dir: "{{ ovz_data_dir }}"
        ovz_fleet_cgroup_parent: "{{ ovz_cgroup_parent }}"
"""


def fleet(count, nodes, template, layout):
    items = []
    for i in range(count):
        items.append({
            "name": "ovzf%03d" % i,
            "node": "node%d" % (1 + i % nodes),
            "template": template,
            "layout": layout,
            "limits": {"cpuunits": 1000 + 10 * i, "ram": "64M", "numproc": 128},
            "network": {"ip_address": ["10.213.201.%d" % (1 + i)]},
        })
    return items


def playbook_run(harness, playbook, varsfile, log):
    start = time.monotonic()
    proc = harness.playbook(playbook, ["-e", "@" + varsfile], timeout=1800)
    seconds = time.monotonic() - start
    with open(log, "w") as handle:
        handle.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise C.StepError("ansible-playbook exited %d, see %s:\n%s" % (proc.returncode, log, proc.stdout[-3000:]))
    recap = dict((m.group(1), {"ok": int(m.group(2)), "changed": int(m.group(3)), "unreachable": int(m.group(4)),
                               "failed": int(m.group(5))}) for m in RECAP.finditer(proc.stdout))
    summary = [0, 0, 0, 0]
    for match in SUMMARY.finditer(proc.stdout):
        summary = [a + int(b) for a, b in zip(summary, match.groups())]
    module = [float(m.group(1)) + float(m.group(2) or 0) for m in TIMINGS.finditer(proc.stdout)]
    return {"seconds": round(seconds, 3), "changed_tasks": sum(r["changed"] for r in recap.values()), "recap": recap,
            "containers": dict(zip(("created", "changed", "unchanged", "removed"), summary)),
            "module_seconds_per_node": module, "loadavg_after": os.getloadavg()}


def check_fleet(harness, items):
    """Every container runs on its node, with its memory limit in the kernel; a sample answers ping from the hub."""
    running = 0
    for node in harness.nodes:
        facts = node.engine("[(f['name'], f['state'], open(f['cgroups']['memory'] + '/memory.limit_in_bytes').read())"
                            " for f in manager.list()]")
        mine = sorted(i["name"] for i in items if i["node"] == node.name)
        if sorted(f[0] for f in facts) != mine:
            raise C.StepError("%s has %s, expected %s" % (node.name, [f[0] for f in facts], mine))
        for name, state, ram in facts:
            if state != "running" or int(ram) != 64 << 20:
                raise C.StepError("%s: %s, memory limit %s" % (name, state, ram.strip()))
        running += len(facts)
    sample = [items[0], items[len(items) // 2], items[-1]]
    unanswered = [i["name"] for i in sample if not harness.hub.ping(i["network"]["ip_address"][0])]
    if unanswered:
        raise C.StepError("no answer from %s" % unanswered)
    return running


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--containers", type=int, default=100)
    ap.add_argument("--nodes", type=int, default=2, help="harness nodes the containers are spread over (1-9)")
    ap.add_argument("--layout", default="directory", choices=["directory", "image"])
    ap.add_argument("--json", default=str(C.RESULTS_DIR / "fleet.json"))
    args = ap.parse_args()
    if not 1 <= args.containers <= 250:
        ap.error("--containers: 1 to 250 (addresses 10.213.201.1-250)")
    C.install_interrupt_handlers()
    machine = C.machine_info()
    work = tempfile.mkdtemp(prefix="ovz-bench-fleet-", dir="/var/tmp")
    results = {}
    errors = []
    try:
        with Harness(os.path.join(work, "mn"), args.nodes) as harness:
            template = harness.nodes[0].engine(
                "__import__('ansible_collections.ovz.containers.plugins.module_utils._engine.node.templates', fromlist=['x'])"
                ".build_busybox_template(%r)" % os.path.join(work, "templates"))
            items = fleet(args.containers, args.nodes, template, args.layout)
            varsfile = os.path.join(work, "fleet.json")
            with open(varsfile, "w") as handle:
                json.dump({"ovz_fleet_containers": items}, handle)
            playbook = os.path.join(work, "fleet.yml")
            with open(playbook, "w") as handle:
                handle.write(PLAYBOOK)
            machine["loadavg_before_first"] = os.getloadavg()
            results["first"] = playbook_run(harness, playbook, varsfile, os.path.join(work, "first.log"))
            results["running"] = check_fleet(harness, items)
            machine["loadavg_before_second"] = os.getloadavg()
            results["second"] = playbook_run(harness, playbook, varsfile, os.path.join(work, "second.log"))
            start = time.monotonic()
        results["teardown_seconds"] = round(time.monotonic() - start, 3)
    except C.StepError as exc:
        errors.append(str(exc))
        print("error: %s" % exc, file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    goals = {}
    for run, limit in GOALS_S.items():
        measured = results.get(run, {}).get("seconds")
        zero = run != "second" or results.get(run, {}).get("changed_tasks") == 0
        goals[run] = {"goal_s": limit, "measured_s": measured,
                      "met": None if measured is None else bool(measured < limit and zero),
                      "gap_s": None if measured is None else round(max(0.0, measured - limit), 3)}
    head = (args.containers, args.layout, args.nodes) + tuple(machine["loadavg_start"])
    print("\novz_fleet: %d busybox containers (%s layout) with limits and an address, %d node(s), ansible-playbook "
          "over SSH; load average at start %.2f %.2f %.2f" % head)
    print("%-8s %10s %9s %14s %8s %-22s %s" % ("run", "seconds", "goal", "changed tasks", "met", "module s per node",
                                               "containers"))
    for run in ("first", "second"):
        data = results.get(run)
        if data:
            per_node = " ".join("%.1f" % s for s in data["module_seconds_per_node"]) or "-"
            row = (run, data["seconds"], GOALS_S[run], data["changed_tasks"], goals[run]["met"], per_node,
                   data["containers"])
            print("%-8s %10.2f %8.0fs %14d %8s %-22s %s" % row)
    if "teardown_seconds" in results:
        print("(teardown of %d containers, sshd and namespaces: %.1f s)"
              % (results.get("running", 0), results["teardown_seconds"]))
    leftovers = C.warn_leftovers()
    path = C.write_results(args.json, machine, 1, results, goals=goals, errors=errors, leftovers=leftovers,
                           settings={"containers": args.containers, "nodes": args.nodes, "layout": args.layout,
                                     "limits": {"ram": "64M", "numproc": 128, "cpuunits": "1000 + 10 i"},
                                     "addresses": "10.213.201.<1+i>"})
    print("wrote %s" % path)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
