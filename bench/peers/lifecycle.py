"""Lifecycle section of bench/run_all: bench/start.py (unshare, LXC, ovz, interleaved) run twice,
once with `lxc-stop -k` (LXC's own cost, the goal's comparison) and once with LXC's clean halt,
plus systemd-nspawn on the same busybox tree (it has no separate create/start/exec/stop: it runs
one command in a fresh container and tears it down)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from base import C, Ctx, summ  # pylint: disable=import-error

NSPAWN = ["systemd-nspawn", "--keep-unit", "--register=no", "-q"]


def start_py(ctx: Ctx, runs: int, extra: list, json_name: str, systems: str) -> dict:
    path = C.RESULTS_DIR / json_name
    argv = [sys.executable, str(C.BENCH_DIR / "start.py"), "--runs", str(runs), "--systems", systems,
            "--json", str(path), "--tmpdir", str(ctx.tmp)] + extra
    print("  $ " + " ".join(argv), file=sys.stderr, flush=True)
    proc = subprocess.run(argv, check=False, timeout=1200)
    if not path.exists():
        raise C.StepError("start.py wrote no results (rc %d)" % proc.returncode)
    data = json.loads(path.read_text())
    if proc.returncode != 0:
        ctx.error("lifecycle", "start.py %s: rc %d, errors %s" % (" ".join(extra), proc.returncode,
                                                                  data.get("errors")))
    return data


def nspawn(ctx: Ctx, runs: int) -> dict:
    """create = unpack the busybox template into a directory; run = systemd-nspawn ... /bin/true
    (namespaces, mounts, the command, teardown); destroy = remove the directory."""
    ctx.engine()
    samples: dict = {"create": [], "run (start+exec+stop)": [], "destroy": [], "total": []}
    base = ctx.tmp / "nspawn"
    base.mkdir(exist_ok=True)
    for i in range(runs + 1):
        machine = "ovzb%sn%d" % (ctx.tag, i)
        root = base / machine
        propagate = "/run/systemd/nspawn/propagate/" + machine
        try:
            t0 = time.perf_counter()
            root.mkdir()
            C.run(["tar", "-xzf", ctx.template, "-C", str(root)])
            (root / "etc" / "os-release").touch()
            t1 = time.perf_counter()
            C.run(NSPAWN + ["-M", machine, "-D", str(root), "/bin/true"], timeout=60)
            t2 = time.perf_counter()
            shutil.rmtree(root)
            t3 = time.perf_counter()
        finally:
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(propagate, ignore_errors=True)
        if i == 0:
            continue  # warm-up
        samples["create"].append((t1 - t0) * 1000)
        samples["run (start+exec+stop)"].append((t2 - t1) * 1000)
        samples["destroy"].append((t3 - t2) * 1000)
        samples["total"].append((t3 - t0) * 1000)
    version = C.cmd_output(["systemd-nspawn", "--version"])
    return {"results": {k: summ(v) for k, v in samples.items()}, "version": version}


def run(ctx: Ctx) -> dict:
    runs = 3 if ctx.quick else 11
    out: dict = {"runs": runs}
    out["kill"] = start_py(ctx, runs, ["--lxc-stop-kill"], "run_all-start.json", "unshare,lxc,ovz")
    out["clean"] = start_py(ctx, 2 if ctx.quick else 5, [], "run_all-start-lxc-clean.json", "lxc")
    try:
        out["nspawn"] = nspawn(ctx, runs)
    except Exception as exc:  # noqa: BLE001 - the other columns stand
        ctx.error("lifecycle", "systemd-nspawn: %s: %s" % (type(exc).__name__, exc))
    if os.path.isdir("/run/systemd/nspawn/propagate"):
        left = [d for d in os.listdir("/run/systemd/nspawn/propagate") if d.startswith("ovzb" + ctx.tag)]
        if left:
            ctx.error("lifecycle", "nspawn left %s" % left)
    return out
