"""The goals, the plots and bench/REPORT.md of bench/run_all (issue 10)."""

from __future__ import annotations

import os
from pathlib import Path

from base import C  # pylint: disable=import-error

STEPS = ("create", "start", "exec", "stop", "destroy")
GOAL_MIB_PER_CT = 1.0
FLAT_FACTOR = 1.25          # per-container cost at the largest count within 25 % ...
FLAT_SLACK_KIB = 128.0      # ... or 128 KiB of the smallest count's
CPU_TOLERANCE = 0.01
IO_TOLERANCE = 0.05
LIMIT_MS = 50.0
ANSIBLE_FACTOR = 1.5


def _ms(value) -> str:
    if value is None:
        return "-"
    return C._fmt_ms(value)  # pylint: disable=protected-access


def cell(summary: dict | None) -> str:
    return C.fmt_cell(summary)


def goal(section: str, what: str, measured: str, met, gap: str = "", note: str = "") -> dict:
    verdict = {True: "met", False: "NOT met" + (": " + gap if gap else ""), None: "n/a" + (": " + gap if gap else "")}
    return {"section": section, "goal": what, "measured": measured, "met": met, "verdict": verdict[met],
            "note": note}


# --------------------------------------------------------------------------
# goals
# --------------------------------------------------------------------------

def lifecycle_goals(data: dict) -> list:
    out = []
    kill = data.get("kill") or {}
    for step in STEPS:
        g = (kill.get("goals") or {}).get(step) or {}
        ovz, lxc = g.get("ovz_ms"), g.get("lxc_ms")
        met = None if ovz is None or lxc is None else ovz < lxc
        gap = "" if met is not False else "%s ms slower (%+.0f%%)" % (_ms(ovz - lxc), (ovz / lxc - 1) * 100)
        if met is None:
            gap = "not measured"
        out.append(goal("lifecycle", "%s faster than LXC's" % step,
                        "ovz %s ms (slower layout) vs lxc %s ms" % (_ms(ovz), _ms(lxc)), met, gap))
    return out


def density_goals(data: dict) -> list:
    out = []
    ours = (data.get("systems") or {}).get("ovz")
    if not ours:
        return [goal("density", "host-side memory per idle container <= 1 MiB, flat to 500", "-", None,
                     "not measured")]
    rows = ours["rows"]
    worst = max(r["outside_kib_per_ct"] for r in rows)
    met = worst <= GOAL_MIB_PER_CT * 1024
    out.append(goal("density", "host-side memory per idle container <= 1 MiB",
                    ", ".join("%d: %.0f KiB" % (r["count"], r["outside_kib_per_ct"]) for r in rows), met,
                    "%.0f KiB at worst" % worst,
                    "host processes: %s" % ", ".join("%d: %d" % (r["count"], r["host_processes"]) for r in rows)))
    first, last = rows[0]["outside_kib_per_ct"], rows[-1]["outside_kib_per_ct"]
    limit = max(first * FLAT_FACTOR, first + FLAT_SLACK_KIB)
    out.append(goal("density", "flat as the count grows (largest count within 25% or 128 KiB of the smallest)",
                    "%.0f KiB at %d, %.0f KiB at %d" % (first, rows[0]["count"], last, rows[-1]["count"]),
                    last <= limit, "%.0f KiB more per container" % (last - first)))
    return out


def inside_goals(data: dict) -> list:
    out = []
    sysbench = (data.get("sysbench") or {}).get("tests") or {}
    for test, res in sysbench.items():
        r = (res.get("ratio_vs_host") or {}).get("ovz")
        if not r or not r.get("n"):
            out.append(goal("inside", "sysbench %s overhead <= 1%%" % test, "-", None, "not measured"))
            continue
        overhead = (1 - r["median"]) * 100
        out.append(goal("inside", "sysbench %s overhead <= 1%% (work per CPU-second)" % test,
                        "ovz/host %.4f (p10-p90 %.3f-%.3f): %+.2f%% overhead" % (r["median"], r["p10"], r["p90"],
                                                                                 overhead),
                        overhead <= CPU_TOLERANCE * 100, "%.2f%% overhead" % overhead))
    storage = ((data.get("storage") or {}).get("data") or {}).get("results") or {}
    source = (data.get("storage") or {}).get("source", "")
    for job, targets in storage.items():
        for target in ("directory", "image"):
            ratio = (targets.get(target) or {}).get("vs_host")
            if ratio is None:
                continue
            out.append(goal("inside", "fio %s in %s layout within 5%% of the host" % (job, target),
                            "x%.2f of the host" % ratio, ratio >= 1 - IO_TOLERANCE,
                            "%.0f%% slower" % ((1 - ratio) * 100), source))
    network = ((data.get("network") or {}).get("data") or {}).get("goals") or {}
    source = (data.get("network") or {}).get("source", "")
    for comparison, res in network.items():
        if "calibrate" in comparison or "+" in comparison:
            continue
        for key, label, good in (("concurrent_throughput_ratio", "throughput", lambda x: x >= 1 - IO_TOLERANCE),
                                 ("concurrent_latency_ratio", "latency", lambda x: x <= 1 + IO_TOLERANCE)):
            r = res.get(key)
            if not r:
                continue
            ci = r.get("ratio_ci95") or [None, None]
            verdict = r.get("verdict")
            met = True if verdict == "met" else False if verdict == "NOT met" else good(r["ratio_median"])
            out.append(goal("inside", "iperf3/TCP %s %s within 5%%" % (comparison.replace("_vs_", " vs "), label),
                            "x%.3f [95%% CI %s-%s] (run together)" % (r["ratio_median"], ci[0], ci[1]), met,
                            "x%.3f" % r["ratio_median"], source))
    return out


def limits_goals(data: dict) -> list:
    out = []
    res = data.get("results") or {}
    for kind in ("cpu", "memory"):
        s = (res.get("ovz") or {}).get(kind)
        if not s or not s.get("n"):
            out.append(goal("limits", "new %s limit in force within 50 ms" % kind, "-", None, "not measured"))
            continue
        lxc = (res.get("lxc") or {}).get(kind)
        peer = "; lxc-cgroup %s ms" % _ms(lxc["median_ms"]) if lxc and lxc.get("n") else ""
        out.append(goal("limits", "new %s limit in force within 50 ms (p90)" % kind,
                        "median %s ms, p90 %s ms%s" % (_ms(s["median_ms"]), _ms(s["p90_ms"]), peer),
                        s["p90_ms"] <= LIMIT_MS, "p90 %s ms" % _ms(s["p90_ms"])))
    return out


def checkpoint_goals(data: dict) -> list:
    out = []
    for label, systems in (data.get("results") or {}).items():
        ours, peer = systems.get("ovz") or {}, systems.get("lxc") or {}
        if "error" in ours or not ours:
            out.append(goal("checkpoint", "frozen time below LXC's (%s)" % label, "-", None,
                            "ours failed: %s" % ours.get("error")))
            continue
        mine = ours["frozen"]["median_ms"]
        if "error" in peer or not peer:
            out.append(goal("checkpoint", "frozen time below LXC's (%s)" % label,
                            "ovz %s ms; LXC failed" % _ms(mine), None, "lxc-checkpoint failed: %s" % peer.get("error")))
            continue
        theirs = peer["frozen"]["median_ms"]
        out.append(goal("checkpoint", "frozen time below LXC's (%s)" % label,
                        "ovz %s ms vs lxc %s ms" % (_ms(mine), _ms(theirs)), mine < theirs,
                        "%s ms longer" % _ms(mine - theirs)))
    return out


def ansible_goals(data: dict) -> list:
    out = []
    ratios = data.get("ratio_vs_command") or {}
    base = (data.get("results") or {}).get("command: true") or {}
    for label in ("ovz_container (no-op)", "ovz_limits (no-op)"):
        ratio = ratios.get(label)
        if ratio is None:
            out.append(goal("ansible", "%s within 1.5x of command: true" % label, "-", None, "not measured"))
            continue
        ms = data["results"][label]["median_ms"]
        changed = [n for n in data.get("changed_on_noop", []) if n.startswith(label.split()[0])]
        out.append(goal("ansible", "%s within 1.5x of command: true" % label,
                        "%s ms vs %s ms: x%.2f" % (_ms(ms), _ms(base.get("median_ms")), ratio),
                        ratio <= ANSIBLE_FACTOR and not changed,
                        "x%.2f" % ratio + ("; reported changed: %s" % changed if changed else "")))
    return out


def goals(data: dict) -> list:
    out = []
    for name, fn in (("lifecycle", lifecycle_goals), ("density", density_goals), ("inside", inside_goals),
                     ("limits", limits_goals), ("checkpoint", checkpoint_goals), ("ansible", ansible_goals)):
        if name in data:
            out += fn(data[name])
    return out


def summary_lines(goal_list: list) -> str:
    lines = ["goals:"]
    for g in goal_list:
        lines.append("  [%s] %s: %s -- %s" % (g["section"], g["goal"], g["measured"], g["verdict"]))
    return "\n".join(lines)


# --------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------

def _bars(ax, groups: list, series: dict, ylabel: str, title: str, log: bool = False) -> None:
    """Grouped bars: series[label] = [summary-or-None per group]; error bars p10-p90."""
    width = 0.8 / max(1, len(series))
    for i, (label, summaries) in enumerate(series.items()):
        xs, ys, lo, hi = [], [], [], []
        for j, s in enumerate(summaries):
            if not s or not s.get("n"):
                continue
            xs.append(j + (i - (len(series) - 1) / 2) * width)
            ys.append(s["median_ms"])
            lo.append(max(0.0, s["median_ms"] - s["p10_ms"]))
            hi.append(max(0.0, s["p90_ms"] - s["median_ms"]))
        if xs:
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=label)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=7)


def plots(data: dict, directory: Path) -> list:
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    except ImportError as exc:
        print("no plots: %s" % exc)
        return []
    directory.mkdir(parents=True, exist_ok=True)
    made = []

    def save(fig, name):
        path = directory / name
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        made.append(str(path))

    if "lifecycle" in data and data["lifecycle"].get("kill"):
        res = data["lifecycle"]["kill"]["results"]
        fig, ax = plt.subplots(figsize=(9, 4.5))
        series = {s: [res.get(s, {}).get(step) for step in STEPS] for s in ("lxc", "ovz-directory", "ovz-image")}
        series["unshare (whole run)"] = [None, res.get("unshare", {}).get("start"), None, None, None]
        nspawn = (data["lifecycle"].get("nspawn") or {}).get("results") or {}
        if nspawn:
            series["nspawn"] = [nspawn.get("create"), nspawn.get("run (start+exec+stop)"), None, None,
                                nspawn.get("destroy")]
        _bars(ax, list(STEPS), series, "ms (median, p10-p90)",
              "lifecycle of a busybox container (lxc-stop -k; nspawn 'start' = one whole run)", log=True)
        save(fig, "peers-lifecycle.png")
    if "density" in data and data["density"].get("systems"):
        systems = data["density"]["systems"]
        fig, axes = plt.subplots(1, 3, figsize=(13, 4))
        for label, d in systems.items():
            counts = [r["count"] for r in d["rows"]]
            axes[0].plot(counts, [r["outside_kib_per_ct"] for r in d["rows"]], "o-", label=label)
            axes[1].plot(counts, [r["elapsed_s"] for r in d["rows"]], "o-", label=label)
            xs = list(range(1, len(d["start_ms"]) + 1))
            axes[2].plot(xs, d["start_ms"], ".", markersize=2, alpha=0.5, label=label)
        axes[0].axhline(GOAL_MIB_PER_CT * 1024, color="red", linestyle="--", linewidth=0.8, label="goal 1 MiB")
        axes[0].set_title("host-side memory per container", fontsize=10)
        axes[0].set_xlabel("containers")
        axes[0].set_ylabel("KiB per container")
        axes[1].set_title("total time to start them", fontsize=10)
        axes[1].set_xlabel("containers")
        axes[1].set_ylabel("s")
        axes[2].set_title("start time of each container", fontsize=10)
        axes[2].set_xlabel("n-th container")
        axes[2].set_ylabel("ms")
        axes[2].set_yscale("log")
        for ax in axes:
            ax.legend(fontsize=7)
        save(fig, "peers-density.png")
    if "inside" in data:
        tests = ((data["inside"].get("sysbench") or {}).get("tests")) or {}
        storage = (((data["inside"].get("storage") or {}).get("data") or {}).get("results")) or {}
        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
        labels, values = [], {}
        for test, res in tests.items():
            labels.append("sysbench " + test)
            for system, r in (res.get("ratio_vs_host") or {}).items():
                values.setdefault(system, []).append(r)
        width = 0.8 / max(1, len(values))
        for i, (system, rs) in enumerate(values.items()):
            xs = [j + (i - (len(values) - 1) / 2) * width for j in range(len(rs))]
            ys = [r.get("median") or 0 for r in rs]
            err = [[max(0, (r.get("median") or 0) - (r.get("p10") or 0)) for r in rs],
                   [max(0, (r.get("p90") or 0) - (r.get("median") or 0)) for r in rs]]
            axes[0].bar(xs, ys, width, yerr=err, capsize=2, label=system)
        axes[0].axhline(1 - CPU_TOLERANCE, color="red", linestyle="--", linewidth=0.8, label="goal (-1%)")
        axes[0].set_xticks(range(len(labels)))
        axes[0].set_xticklabels(labels)
        axes[0].set_ylim(0.8, 1.1)
        axes[0].set_title("inside vs host (ratio, median, p10-p90)", fontsize=10)
        axes[0].legend(fontsize=7)
        jobs = list(storage)
        for i, target in enumerate(("directory", "image")):
            xs = [j + (i - 0.5) * 0.4 for j in range(len(jobs))]
            axes[1].bar(xs, [(storage[j].get(target) or {}).get("vs_host") or 0 for j in jobs], 0.4, label=target)
        axes[1].axhline(1 - IO_TOLERANCE, color="red", linestyle="--", linewidth=0.8, label="goal (-5%)")
        axes[1].set_xticks(range(len(jobs)))
        axes[1].set_xticklabels(jobs, fontsize=8)
        axes[1].set_title("fio inside vs host (ratio of medians)", fontsize=10)
        axes[1].legend(fontsize=7)
        save(fig, "peers-inside.png")
    if "limits" in data or "checkpoint" in data or "ansible" in data:
        fig, axes = plt.subplots(1, 3, figsize=(14, 4))
        res = (data.get("limits") or {}).get("results") or {}
        _bars(axes[0], ["cpu", "memory"], {s: [res.get(s, {}).get(k) for k in ("cpu", "memory")] for s in res},
              "ms", "new limit in force (goal 50 ms)")
        axes[0].axhline(LIMIT_MS, color="red", linestyle="--", linewidth=0.8)
        ck = (data.get("checkpoint") or {}).get("results") or {}
        groups, series = [], {"ovz": [], "lxc": []}
        for label, systems in ck.items():
            for key in ("frozen", "dump", "restore"):
                groups.append("%s\n%s" % (label, key))
                for system in series:
                    series[system].append((systems.get(system) or {}).get(key))
        _bars(axes[1], groups, series, "ms", "checkpoint and restore", log=True)
        an = (data.get("ansible") or {}).get("results") or {}
        _bars(axes[2], list(an), {"ansible task": list(an.values())}, "ms per task", "Ansible no-op run per task")
        save(fig, "peers-control.png")
    return made


# --------------------------------------------------------------------------
# markdown
# --------------------------------------------------------------------------

def table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _column in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_text(payload: dict) -> str:
    m = payload["machine"]
    v = m["versions"]
    loads = " → ".join("%.1f" % s[0] for s in m.get("loadavg_samples", []))
    return "\n".join([
        "- date: %s to %s (%.0f s), command `%s`" % (m["date"], m.get("finished"), m.get("duration_s", 0),
                                                     m.get("command")),
        "- machine: %s, kernel %s, %s CPUs (%s), %.1f GiB RAM, cgroup %s" % (
            m["hostname"], m["kernel"], m["cpus"], m["cpu_model"], (m["mem_total_kib"] or 0) / 1048576.0,
            m["cgroup_mode"]),
        "- load average (1 min) at the start of each section and at the end: %s; 1/5/15 min at the start %s, "
        "at the end %s" % (loads, tuple(round(x, 2) for x in m["loadavg_start"]),
                           tuple(round(x, 2) for x in m["loadavg_end"])),
        "- versions: Python %s, LXC %s, CRIU %s, %s, %s, %s, %s, iperf3 %s, ansible-core %s, busybox %s, "
        "matplotlib %s" % (v.get("python"), v.get("lxc"), v.get("criu"), v.get("systemd_nspawn"),
                           v.get("util_linux"), v.get("sysbench"), v.get("fio"), v.get("iperf3"),
                           v.get("ansible_core"), (v.get("busybox") or "").split(" (")[0], v.get("matplotlib")),
    ])


def img(plots_list: list, name: str, base: Path) -> str:
    for path in plots_list:
        if path.endswith(name):
            return "\n![%s](%s)\n" % (name, os.path.relpath(path, base))
    return ""


def lifecycle_md(d: dict, plots_list: list, base: Path) -> list:
    out = ["## Lifecycle", ""]
    kill = d.get("kill") or {}
    res = kill.get("results") or {}
    clean = (d.get("clean") or {}).get("results", {}).get("lxc", {})
    nspawn = (d.get("nspawn") or {}).get("results") or {}
    rows = []
    for step in ("create", "start", "start+rcS", "exec", "stop", "destroy", "total"):
        rows.append([step, cell(res.get("lxc", {}).get(step)), cell(clean.get(step)),
                     cell(res.get("ovz-directory", {}).get(step)), cell(res.get("ovz-image", {}).get(step)),
                     cell(res.get("unshare", {}).get(step)) if step in ("start", "total") else "-",
                     cell(nspawn.get({"start": "run (start+exec+stop)"}.get(step, step)))
                     if step in ("create", "start", "destroy", "total") else "-"])
    out.append("%d runs each, interleaved (`bench/start.py`); ms, median (p10–p90)." % d.get("runs", 0))
    out.append("")
    out.append(table(["step", "lxc (`lxc-stop -k`)", "lxc (clean stop)", "ovz directory", "ovz image",
                      "unshare", "systemd-nspawn"], rows))
    out += ["",
            "- lxc start = `lxc-start` until `lxc-attach -- true` works; start+rcS = until its startup script "
            "ran. ovz start = `start(wait_boot=True)`, which returns after the startup scripts ran (so it does "
            "more than LXC's plain start, against which the goal compares it).",
            "- ovz stop is a clean halt (the init's shutdown scripts run); the goal compares it with "
            "`lxc-stop -k` (SIGKILL, LXC's own cost); LXC's clean stop of busybox takes about 2 s because "
            "busybox init sleeps in its halt path.",
            "- systemd-nspawn has no separate start/exec/stop for a one-shot command: its `start` cell is a "
            "whole `systemd-nspawn --keep-unit --register=no -D <tree> /bin/true`; its `create` unpacks the "
            "same busybox template, `destroy` removes the tree. unshare: one whole `unshare --fork --pid "
            "--mount --uts --ipc --net --mount-proc true`."]
    if kill.get("errors"):
        out.append("- errors: %s" % kill["errors"])
    out.append(img(plots_list, "peers-lifecycle.png", base))
    return out


def density_md(d: dict, plots_list: list, base: Path) -> list:
    out = ["## Density", ""]
    out.append("Idle busybox containers, each with its own network namespace and one routed IPv4 address, "
               "started one after the other up to %s, ours (directory layout) and LXC's, one system after "
               "the other, in a network namespace of this run. Measured at each count:" % d.get("counts"))
    out += ["",
            "- *host processes*: processes in the host's pid namespace, started since the first container, "
            "that belong to these containers (outside them): for LXC its `lxc-start` monitor per container; "
            "*PSS* is theirs (`/proc/<pid>/smaps_rollup`).",
            "- *kernel*: growth of unreclaimable kernel memory (SUnreclaim + KernelStack + PageTables + Percpu, "
            "host-wide, so other load on the machine shows in it too) per container. For ours the kernel memory "
            "charged to the containers' own memory cgroups (`memory.kmem.usage_in_bytes`) is subtracted "
            "(*outside own cgroups*); LXC runs without a memory cgroup here, so its figure is the whole growth.",
            "- *outside per ct* = PSS of host processes + kernel outside own cgroups, per container: the goal's "
            "figure.", ""]
    rows = []
    for label, s in (d.get("systems") or {}).items():
        batches = {b["to"]: b["start"] for b in s.get("start_by_batch", [])}
        for r in s["rows"]:
            rows.append([label, r["count"], r["host_processes"], "%.0f" % r["host_pss_kib_per_ct"],
                         "%.0f" % r["kernel_delta_kib_per_ct"],
                         "-" if r["kernel_outside_kib_per_ct"] is None else "%.0f" % r["kernel_outside_kib_per_ct"],
                         "**%.0f**" % r["outside_kib_per_ct"], "%.1f" % r["elapsed_s"],
                         cell(batches.get(r["count"]))])
    out.append(table(["system", "containers", "host processes", "their PSS KiB/ct", "kernel KiB/ct",
                      "kernel outside own cgroups KiB/ct", "outside per ct KiB", "total start time s",
                      "start ms/ct in this batch"], rows))
    out.append("")
    for label, s in (d.get("systems") or {}).items():
        out.append("- %s: start per container %s ms, teardown per container %s ms (%s); check: `%s`" % (
            label, cell(s.get("start_ms_summary")), cell(s.get("teardown_ms_summary")),
            "ovz destroy" if label == "ovz" else "lxc-stop -k", s.get("check")))
    out.append(img(plots_list, "peers-density.png", base))
    return out


def inside_md(d: dict, plots_list: list, base: Path) -> list:
    out = ["## Overhead inside", ""]
    sb = d.get("sysbench") or {}
    if sb:
        out.append("sysbench, one thread pinned to CPU %s (`busybox taskset`), %d rounds of %d s, interleaved "
                   "(host first on even rounds). Two measures: the work per wall-clock second (what sysbench "
                   "prints; on a shared machine it mostly measures how much CPU the neighbours left), and the work "
                   "per CPU-second the run used (host and nspawn: `wait4` rusage of the command and what it waited "
                   "for; ovz and LXC: the container cgroup's `cpuacct.usage`). The goal is judged on the second: "
                   "it is the cost of the work inside vs outside. Ratios are container/host within a round." % (
                       sb.get("cpu_pinned"), sb.get("rounds", 0), sb.get("seconds", 0)))
        out.append("")
        rows = []
        for test, res in (sb.get("tests") or {}).items():
            for system, median in res["median"].items():
                r = (res.get("ratio_vs_host") or {}).get(system)
                w = (res.get("ratio_vs_host_wall") or {}).get(system)
                rows.append([test, system, "%.2f %s" % (median, res["unit"]),
                             "-" if not w else "%.4f (%.3f–%.3f)" % (w["median"], w["p10"], w["p90"]),
                             "%.2f" % (res.get("median_per_cpu_s") or {}).get(system, 0),
                             "-" if not r else "**%.4f** (%.3f–%.3f)" % (r["median"], r["p10"], r["p90"])])
        out.append(table(["test", "where", "median per wall second", "ratio vs host (p10–p90)",
                          "median per CPU-second", "ratio vs host per CPU-second (p10–p90)"], rows))
        out.append("")
    st = d.get("storage") or {}
    if st:
        out.append("fio (`bench/storage.py`, %s):" % st.get("source"))
        out.append("")
        rows = []
        for job, targets in (st.get("data") or {}).get("results", {}).items():
            host = targets.get("host") or {}
            unit = "MiB/s" if job.startswith("seq") else "IOPS"
            key = "mib_s" if unit == "MiB/s" else "iops"
            rows.append([job, "%s %s" % (host.get(key), unit)] + [
                "%s (x%.2f)" % ((targets.get(t) or {}).get(key), (targets.get(t) or {}).get("vs_host") or 0)
                for t in ("directory", "image")])
        out.append(table(["job", "host", "ovz directory", "ovz image"], rows))
        out.append("")
    nw = d.get("network") or {}
    if nw:
        out.append("iperf3 and TCP round trips (`bench/network.py`, %s): ours against the same bare veth "
                   "path without our setup; ratios ovz/bare, median [95%% CI], both paths run together "
                   "(so the machine's other load cancels) and alone:" % nw.get("source"))
        out.append("")
        rows = []
        for comparison, res in ((nw.get("data") or {}).get("goals") or {}).items():
            for key in ("concurrent_throughput_ratio", "concurrent_latency_ratio", "throughput_gbit", "latency_us"):
                r = res.get(key)
                if r:
                    ci = r.get("ratio_ci95") or [None, None]
                    rows.append([comparison, key, "x%.3f [%s–%s]" % (r["ratio_median"], ci[0], ci[1]), r.get("verdict")])
        out.append(table(["comparison", "measure", "ratio", "verdict of network.py"], rows))
    out.append(img(plots_list, "peers-inside.png", base))
    return out


def control_md(data: dict, plots_list: list, base: Path) -> list:
    out = []
    lim = data.get("limits")
    if lim:
        out += ["## Limits", "",
                "Time from the call (ours: the engine's `limits.update`, what `ovz_limits` runs; LXC: "
                "`lxc-cgroup`) until the container's cgroup file reads the new value, %d changes each "
                "(cpulimit 50/60 %% → `cpu.cfs_quota_us`; ram 256M/320M → `memory.limit_in_bytes`); ms, "
                "median (p10–p90)." % lim.get("runs", 0), ""]
        res = lim.get("results") or {}
        rows = [[kind, cell((res.get("ovz") or {}).get(kind)), cell((res.get("lxc") or {}).get(kind))]
                for kind in ("cpu", "memory")]
        out.append(table(["limit", "ovz (engine call)", "lxc (lxc-cgroup)"], rows))
        out.append("")
        out.append("- LXC memory: %s." % (lim.get("notes") or {}).get("lxc_memory"))
        out.append("")
    ck = data.get("checkpoint")
    if ck:
        out += ["## Checkpoint and restore", "",
                "Dump (the container stops) and restore, %d times each; frozen = CRIU's own `frozen_time` "
                "(stats-dump); dump and restore = the whole call (ours: `Checkpointer.dump`/`restore`; LXC: "
                "`lxc-checkpoint -s`/`-r`). CRIU: %s. ms, median (p10–p90); sizes in MiB: %s." % (
                    ck.get("runs", 0), ck.get("criu"), ck.get("sizes")), ""]
        rows = []
        for label, systems in (ck.get("results") or {}).items():
            for system in ("ovz", "lxc"):
                s = systems.get(system) or {}
                if "error" in s:
                    rows.append([label, system, "failed: %s" % s["error"][:300], "", "", ""])
                    continue
                rows.append([label, system] + [cell(s.get(k)) for k in ("frozen", "dump", "restore")] +
                            ["%.1f" % (s.get("images_mib") or {}).get("median_ms", 0)])
        out.append(table(["container", "system", "frozen", "dump", "restore", "images MiB"], rows))
        out.append("")
    an = data.get("ansible")
    if an:
        out += ["## Ansible", "",
                "One playbook on localhost (connection local), %d times each task, interleaved: `command: true`, "
                "then `ovz_container` (state started, nothing to change), then `ovz_limits` (the same limits). "
                "Per-task time from a callback plugin (task start to result). ms, median (p10–p90)." %
                an.get("reps", 0), ""]
        rows = [[label, cell(s), "x%.2f" % an["ratio_vs_command"].get(label, 0)]
                for label, s in (an.get("results") or {}).items()]
        out.append(table(["task", "time", "vs command: true"], rows))
        out.append("")
        changed = an.get("changed_on_noop") or "none"
        out.append("- no-op runs reporting changed: %s; %s" % (changed, (an.get("ansible") or "")[:60]))
    out.append(img(plots_list, "peers-control.png", base))
    return out


def markdown(payload: dict, plots_list: list, base: Path) -> str:
    data = payload["sections"]
    lines = ["# Side-by-side benchmarks: ovz.containers, LXC, systemd-nspawn, unshare", "",
             "Written by `bench/run_all%s` (issue 10); do not edit by hand. JSON: `results/peers.json`; plots "
             "`results/peers-*.png`. Every system ran on this machine in this one run." % (
                 " --quick" if payload.get("quick") else ""), ""]
    if payload.get("quick"):
        lines += ["**Quick mode**: small counts and few repetitions, for development; not the figures to quote.",
                  ""]
    lines += [machine_text(payload), ""]
    lines += ["## Goals", "", table(["section", "goal", "measured", "verdict"],
                                    [[g["section"], g["goal"], g["measured"], "**%s**" % g["verdict"]
                                      if g["met"] is not True else g["verdict"]]
                                     for g in payload["goals"]]), ""]
    if "lifecycle" in data:
        lines += lifecycle_md(data["lifecycle"], plots_list, base)
    if "density" in data:
        lines += density_md(data["density"], plots_list, base)
    if "inside" in data:
        lines += inside_md(data["inside"], plots_list, base)
    lines += control_md(data, plots_list, base)
    if payload.get("errors"):
        lines += ["## Errors", ""]
        for section, errs in payload["errors"].items():
            for err in errs:
                lines.append("- %s: %s" % (section, err.replace("\n", " ")[:600]))
        lines.append("")
    lines += ["## Section times", "",
              table(["section", "seconds", "load average at start → end"],
                    [[name, d.get("seconds"), "%.1f → %.1f" % (d["loadavg"]["start"][0], d["loadavg"]["end"][0])]
                     for name, d in data.items() if "loadavg" in d]), ""]
    return "\n".join(lines) + "\n"
