"""bench/run_all (issue 10): every side-by-side benchmark, ours against LXC 5.0, systemd-nspawn
and the bare `unshare` baseline, on this machine in one run; writes bench/REPORT.md, the JSON
bench/results/peers.json and the plots bench/results/peers-*.png.

    bench/run_all             # the full run (about 15-25 minutes on 2 cores)
    bench/run_all --quick     # small counts, a few minutes: for development
    bench/run_all --only lifecycle,limits

Sections: lifecycle, density, inside, limits, checkpoint, ansible (see bench/README.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
from importlib import metadata
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import base as B  # noqa: E402  pylint: disable=wrong-import-position,import-error
from base import C  # noqa: E402  pylint: disable=wrong-import-position,import-error
import report  # noqa: E402  pylint: disable=wrong-import-position,import-error

SECTIONS = ("lifecycle", "density", "inside", "limits", "checkpoint", "ansible")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small counts and few repetitions (development)")
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma list of sections (all)")
    ap.add_argument("--density-max", type=int, default=0, help="largest container count of the density section")
    ap.add_argument("--density-systems", default="ovz,lxc", help="systems of the density section (ovz,lxc)")
    ap.add_argument("--reuse-io", action="store_true",
                    help="do not re-run bench/storage.py and bench/network.py; use their last JSON")
    ap.add_argument("--lxc-as-created", action="store_true",
                    help="checkpoint LXC's busybox container as lxc-create makes it (getty on tty1, a console): "
                         "CRIU then fails on its ttys")
    ap.add_argument("--report", default=str(C.BENCH_DIR / "REPORT.md"), help="where the report goes")
    ap.add_argument("--json", default=str(C.RESULTS_DIR / "peers.json"), help="where the JSON goes")
    ap.add_argument("--plots", default=str(C.RESULTS_DIR), help="directory of the peers-*.png plots")
    args = ap.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SECTIONS)
    if unknown:
        ap.error("unknown sections: %s" % ", ".join(sorted(unknown)))
    return args


def versions() -> dict:
    out = {
        "lxc": C.dpkg_version("lxc"),
        "criu": C.cmd_output(["criu", "--version"]),
        "systemd_nspawn": C.cmd_output(["systemd-nspawn", "--version"]),
        "util_linux": C.cmd_output(["unshare", "--version"]),
        "busybox": C.cmd_output(["busybox"]),
        "sysbench": C.cmd_output(["sysbench", "--version"]),
        "fio": C.cmd_output(["fio", "--version"]),
        "iperf3": C.dpkg_version("iperf3"),
        "ansible_core": None,
        "matplotlib": None,
    }
    # versions by package metadata, not by import: importing matplotlib (numpy) starts native
    # threads, and the engine forks; the plots import it only after every container is gone
    for key, dist in (("ansible_core", "ansible-core"), ("matplotlib", "matplotlib")):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def run_section(ctx: B.Ctx, name: str, data: dict) -> None:
    # imported here so that one broken section cannot stop the others from loading
    import importlib  # pylint: disable=import-outside-toplevel
    module = {"lifecycle": "lifecycle", "density": "density", "inside": "inside", "limits": "control",
              "checkpoint": "control", "ansible": "ansible_cost"}[name]
    load0 = os.getloadavg()
    began = time.monotonic()
    with B.section(ctx, name):
        mod = importlib.import_module(module)
        fn = getattr(mod, name if module == "control" else "run")
        try:
            data[name] = fn(ctx)
        finally:
            ctx.run_cleanups()
    if name in data:
        data[name]["seconds"] = round(time.monotonic() - began, 1)
        data[name]["loadavg"] = {"start": load0, "end": os.getloadavg()}


def main(argv=None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench/run_all must run as root (namespaces, cgroups, LXC)", file=sys.stderr)
        return 2
    C.install_interrupt_handlers()
    began = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="ovz-bench-", dir="/var/tmp"))
    ctx = B.Ctx(args, tmp)
    machine = C.machine_info(versions())
    machine["loadavg_samples"] = [list(os.getloadavg())]
    print("bench/run_all%s: kernel %s, %s cpus, load %.2f, temp dir %s" % (
        " --quick" if args.quick else "", machine["kernel"], machine["cpus"], machine["loadavg_start"][0], tmp),
        file=sys.stderr, flush=True)
    data: dict = {}
    interrupted = False
    try:
        try:
            ctx.engine()
        except Exception as exc:  # noqa: BLE001 - the peers still run; ours are reported missing
            ctx.error("engine", str(exc))
        for name in SECTIONS:
            if name in args.only.split(","):
                run_section(ctx, name, data)
                machine["loadavg_samples"].append(list(os.getloadavg()))
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: cleaning up", file=sys.stderr)
    finally:
        with C.signals_deferred():
            ctx.run_cleanups()
            problems = C.remove_tmpdir(tmp)
            for problem in problems:
                ctx.error("cleanup", problem)
            left = C.leftover_cgroups("ovzb%s" % ctx.tag)
            if left:
                ctx.error("cleanup", "leftover cgroups: %s" % left)
            if os.path.exists("/run/netns/ovzb%sh" % ctx.tag):
                ctx.error("cleanup", "network namespace ovzb%sh left" % ctx.tag)
    if interrupted:
        return 130
    machine["loadavg_end"] = os.getloadavg()
    machine["duration_s"] = round(time.monotonic() - began, 1)
    machine["command"] = "bench/run_all " + " ".join(sys.argv[1:] if argv is None else argv)
    machine["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    machine["platform"] = platform.platform()
    goals = report.goals(data)
    payload = {"machine": machine, "quick": args.quick, "sections": data, "goals": goals, "errors": ctx.errors}
    C.write_json(args.json, payload)
    plots = report.plots(data, Path(args.plots))
    text = report.markdown(payload, plots, Path(args.report).parent)
    Path(args.report).write_text(text)
    print(report.summary_lines(goals), flush=True)
    print("report: %s\njson: %s\nplots: %s" % (args.report, args.json, ", ".join(plots)), flush=True)
    print("took %.0f s" % machine["duration_s"], flush=True)
    return 1 if ctx.errors else 0


if __name__ == "__main__":
    sys.exit(main())
