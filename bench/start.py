"""Lifecycle benchmark: create, start (until the container's init ran its
startup scripts), exec, stop and destroy a busybox container, N times, for

  unshare        the bare baseline: one `unshare --fork --pid --mount --uts
                 --ipc --net --mount-proc true` per run (namespace set-up,
                 exec, teardown); shown in the start and total rows
  lxc            LXC from Debian: lxc-create -t busybox, lxc-start until
                 `lxc-attach -- true` works, lxc-attach -- true, lxc-stop,
                 lxc-destroy; lxcpath in a temporary ovz* directory
  ovz-directory  ours, through the engine's Python API, layout=directory
  ovz-image      ours, through the engine's Python API, layout=image
  ovz-cli-*      ours as a CLI, once ovz_cli_argv() returns a command

Runs are interleaved (run i of every system, then run i+1 ...), after
--warmup unrecorded runs per system. Every step is timed with
time.perf_counter around the call (subprocess spawn included for the
command-line systems).

    python3 bench/start.py                       # 20 runs, bench/results/start.json
    python3 bench/start.py --runs 5 --systems unshare,lxc

The LXC peer is kept out of the memory cgroup hierarchy, which belongs to the
machine's own tooling: /etc/lxc/lxc.conf must say
  lxc.cgroup.use = cpu,cpuacct,cpuset,devices,freezer,blkio,pids,name=systemd
The bench adds that line if no lxc.cgroup.use line exists (safe to repeat),
refuses to run LXC if a different one exists, and checks after every start
that the container's init is still in the caller's memory cgroup.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

STEPS = ["create", "start", "exec", "stop", "destroy"]
ROWS = ["create", "start", "start+rcS", "exec", "stop", "destroy", "total"]
MAX_FAILURES = 3
BOOT_TIMEOUT = 30.0

LXC_CONF = Path("/etc/lxc/lxc.conf")
LXC_CGROUP_USE = "cpu,cpuacct,cpuset,devices,freezer,blkio,pids,name=systemd"

# The container config passed to lxc-create -f (it replaces
# /etc/lxc/default.conf, whose veth on lxcbr0 does not exist here; the
# busybox template appends its own lines after these).
LXC_CONTAINER_CONFIG = """\
# ovz.containers bench/start.py: LXC busybox peer
# no network at all (only lo): nothing to set up, no lxcbr0 needed
lxc.net.0.type = empty
# the kernel here has no AppArmor; on hosts that have it, don't load a profile
lxc.apparmor.profile = unconfined
# cgroups named after the container (ovz prefix), not lxc.payload.*/lxc.pivot
lxc.cgroup.dir.monitor = {name}.monitor
lxc.cgroup.dir.container = {name}.payload
lxc.cgroup.dir.monitor.pivot = {pivot}
"""
BOOT_MARKER = "/tmp/.ovz-booted"


def ovz_cli_argv(step: str | None = None, name: str | None = None,
                 data_dir: str | None = None, template: str | None = None,
                 layout: str | None = None) -> list[str] | None:
    """Command line that performs `step` (create/start/exec/stop/destroy) on
    container `name` with our CLI, or None while there is no CLI.

    TODO: once `python3 -m ...` (or an ovzctl entry point) exists, return e.g.
      [sys.executable, "-m", "<cli module>", "--data-dir", data_dir, step, name, ...]
    with `--template`/`--layout` for create, `--wait-boot` for start and
    `-- true` for exec. The bench then adds ovz-cli-directory/ovz-cli-image columns.
    """
    return None


# --------------------------------------------------------------------------
# systems
# --------------------------------------------------------------------------

class System:
    label = "?"

    def setup(self) -> None:
        pass

    def one_run(self, name: str) -> dict:
        raise NotImplementedError

    def cleanup_one(self, name: str) -> None:
        pass

    def cleanup(self) -> list[str]:
        return []


class FatalSystemError(RuntimeError):
    """The system must not run any more (e.g. it touched the memory hierarchy)."""


class Unshare(System):
    label = "unshare"
    ARGV = ["unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--net",
            "--mount-proc", "true"]

    def one_run(self, name):
        ms, _result = C.timed(C.run, self.ARGV)
        return {"start": ms, "total": ms}


def lxc_conf_values(path: Path = LXC_CONF) -> list[str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    vals = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#") or "=" not in s:
            continue
        k, v = (x.strip() for x in s.split("=", 1))
        if k == "lxc.cgroup.use":
            vals.append(v)
    return vals


def _same_set(v: str) -> bool:
    return {x.strip() for x in v.split(",") if x.strip()} == set(LXC_CGROUP_USE.split(","))


def ensure_lxc_conf(write: bool) -> str | None:
    """Make sure LXC's global config keeps it out of the memory hierarchy.
    Returns None when fine, else why LXC must not run."""
    vals = lxc_conf_values()
    if vals and not all(_same_set(v) for v in vals):
        return (f"{LXC_CONF} has lxc.cgroup.use = {vals!r}; expected {LXC_CGROUP_USE} "
                "(not changing someone else's setting)")
    if not vals:
        if not write:
            return f"{LXC_CONF} lacks 'lxc.cgroup.use = {LXC_CGROUP_USE}' (--no-lxc-conf-write)"
        LXC_CONF.parent.mkdir(parents=True, exist_ok=True)
        with open(LXC_CONF, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # a concurrent bench may be doing the same
            f.seek(0)
            text = f.read()
            if not lxc_conf_values():
                prefix = "" if not text or text.endswith("\n") else "\n"
                f.write(f"{prefix}# added by ovz.containers bench: keep LXC out of the "
                        f"memory cgroup hierarchy\nlxc.cgroup.use = {LXC_CGROUP_USE}\n")
                f.flush()
                os.fsync(f.fileno())
                print(f"lxc: added lxc.cgroup.use to {LXC_CONF}")
        vals = lxc_conf_values()
        if not vals or not all(_same_set(v) for v in vals):
            return f"{LXC_CONF}: lxc.cgroup.use still not as required: {vals!r}"
    seen = C.cmd_output(["lxc-config", "lxc.cgroup.use"])
    if not seen or not _same_set(seen):
        return f"lxc-config lxc.cgroup.use says {seen!r}, expected {LXC_CGROUP_USE}"
    return None


class Lxc(System):
    label = "lxc"

    def __init__(self, tmp: Path, tag: str, stop_kill: bool):
        self.tmp = tmp
        self.lxcpath = tmp / "lxc"
        self.pivot = f"{tag}.pivot"
        self.stop_kill = stop_kill
        self.created: set[str] = set()      # containers that may exist
        self.cgroups: set[str] = {self.pivot}
        self.own_memcg = C.own_cgroups().get("memory")
        self.config_text = LXC_CONTAINER_CONFIG

    def setup(self):
        self.lxcpath.mkdir(parents=True, exist_ok=True)
        (self.tmp / "lxc-conf").mkdir(exist_ok=True)
        (self.tmp / "lxc-log").mkdir(exist_ok=True)

    def _p(self, *argv):
        return [argv[0], "-P", str(self.lxcpath), *argv[1:]]

    def _attach_ok(self, name, *cmd) -> bool:
        p = C.run(self._p("lxc-attach", "-n", name, "--", *cmd), check=False, timeout=10)
        return p.returncode == 0

    def _poll(self, name, deadline, *cmd):
        while not self._attach_ok(name, *cmd):
            if time.perf_counter() > deadline:
                raise C.StepError(f"{name}: `lxc-attach -- {' '.join(cmd)}` "
                                  f"did not succeed within {BOOT_TIMEOUT}s")
            time.sleep(0.001)
        return time.perf_counter()

    def one_run(self, name):
        r = {}
        conf = self.tmp / "lxc-conf" / f"{name}.conf"
        conf.write_text(self.config_text.format(name=name, pivot=self.pivot))
        self.created.add(name)
        self.cgroups |= {f"{name}.monitor", f"{name}.payload"}

        r["create"], _result = C.timed(C.run, self._p("lxc-create", "-n", name, "-t", "busybox", "-f", str(conf)))
        # untimed: the startup scripts leave a marker as their last act
        rcs = self.lxcpath / name / "rootfs" / "etc" / "init.d" / "rcS"
        with open(rcs, "a") as f:
            f.write(f": > {BOOT_MARKER}\n")

        log = self.tmp / "lxc-log" / f"{name}.log"
        t0 = time.perf_counter()
        C.run(self._p("lxc-start", "-n", name, "-o", str(log), "-l", "ERROR"))
        deadline = t0 + BOOT_TIMEOUT
        t_attach = self._poll(name, deadline, "true")
        t_boot = self._poll(name, deadline, "test", "-e", BOOT_MARKER)
        r["start"] = (t_attach - t0) * 1000
        r["start+rcS"] = (t_boot - t0) * 1000

        r["exec"], ok = C.timed(self._attach_ok, name, "true")
        if not ok:
            raise C.StepError(f"{name}: lxc-attach -- true failed")

        self._check_memory_cgroup(name)

        argv = self._p("lxc-stop", "-n", name) + (["-k"] if self.stop_kill else [])
        r["stop"], _result = C.timed(C.run, argv)
        r["destroy"], _result = C.timed(C.run, self._p("lxc-destroy", "-n", name))
        self.created.discard(name)
        r["total"] = r["create"] + r["start"] + r["stop"] + r["destroy"]
        return r

    def _check_memory_cgroup(self, name):
        pid = C.cmd_output(self._p("lxc-info", "-n", name, "-p", "-H"))
        if not pid or not pid.isdigit():
            raise C.StepError(f"{name}: no init pid from lxc-info")
        cg = C.own_cgroups(pid).get("memory")
        if cg != self.own_memcg:
            raise FatalSystemError(f"{name}: init is in memory cgroup {cg!r}, not the "
                                   f"caller's {self.own_memcg!r}: LXC touched the memory hierarchy")

    def cleanup_one(self, name):
        C.run(self._p("lxc-stop", "-n", name, "-k"), check=False, timeout=30)
        C.run(self._p("lxc-destroy", "-n", name, "-f"), check=False, timeout=60)
        if not (self.lxcpath / name).exists():
            self.created.discard(name)

    def cleanup(self):
        problems = []
        for name in sorted(self.created):
            self.cleanup_one(name)
            state = C.cmd_output(self._p("lxc-info", "-n", name, "-s", "-H"))
            if state and state not in ("STOPPED",) and "doesn't exist" not in state:
                problems.append(f"lxc container {name} is still {state}")
            # a stopped or half-created one goes with the temp dir
        stuck = C.remove_cgroup_dirs(self.cgroups)
        problems += [f"cgroup not removed: {d}" for d in stuck]
        return problems


def exec_rc(res):
    """Exit status from what ContainerManager.exec returns: (rc, out, err),
    or an object with .rc / .returncode."""
    for attr in ("rc", "returncode"):
        if hasattr(res, attr):
            return getattr(res, attr)
    if isinstance(res, (tuple, list)) and res:
        return res[0]
    return res


class OvzApi(System):
    def __init__(self, mods, tmp: Path, layout: str, template: str):
        self.label = f"ovz-{layout}"
        self.mods = mods
        self.layout = layout
        self.template = template
        self.data_dir = tmp / f"ovzdata-{layout}"
        self.created: set[str] = set()
        self.mgr = None

    def setup(self):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        CM = self.mods["container"].ContainerManager
        self.mgr = CM(data_dir=str(self.data_dir), cgroup_parent="auto")

    def one_run(self, name):
        r, m = {}, self.mgr
        self.created.add(name)
        r["create"], _result = C.timed(m.create, name, template=self.template, layout=self.layout)
        r["start"], _result = C.timed(m.start, name, wait_boot=True, timeout=BOOT_TIMEOUT)
        r["start+rcS"] = r["start"]  # wait_boot: returns after the startup scripts ran
        r["exec"], res = C.timed(m.exec, name, ["true"])
        rc = exec_rc(res)
        if rc != 0:
            raise C.StepError(f"{name}: exec true returned {res!r}")
        r["stop"], _result = C.timed(m.stop, name)
        r["destroy"], _result = C.timed(m.destroy, name)
        self.created.discard(name)
        r["total"] = r["create"] + r["start"] + r["stop"] + r["destroy"]
        return r

    def cleanup_one(self, name):
        for op in ("stop", "destroy"):
            with contextlib.suppress(Exception):
                getattr(self.mgr, op)(name)
        if not (self.data_dir / "conf" / f"{name}.json").exists():
            self.created.discard(name)

    def cleanup(self):
        for name in sorted(self.created):
            self.cleanup_one(name)
        return [f"{self.label}: container {n} may be left over" for n in sorted(self.created)]


class OvzCli(System):
    def __init__(self, tmp: Path, layout: str, template: str):
        self.label = f"ovz-cli-{layout}"
        self.layout = layout
        self.template = template
        self.data_dir = tmp / f"ovzdata-cli-{layout}"
        self.created: set[str] = set()

    def _argv(self, step, name):
        argv = ovz_cli_argv(step, name, str(self.data_dir), self.template, self.layout)
        if not argv:
            raise C.StepError(f"ovz_cli_argv gives no command for {step}")
        return argv

    def setup(self):
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def one_run(self, name):
        r = {}
        self.created.add(name)
        for step in STEPS:
            r[step], _result = C.timed(C.run, self._argv(step, name), timeout=BOOT_TIMEOUT + 30)
        self.created.discard(name)
        r["start+rcS"] = r["start"]
        r["total"] = r["create"] + r["start"] + r["stop"] + r["destroy"]
        return r

    def cleanup_one(self, name):
        for step in ("stop", "destroy"):
            with contextlib.suppress(Exception):
                C.run(self._argv(step, name), check=False, timeout=60)
        self.created.discard(name)

    def cleanup(self):
        for name in sorted(self.created):
            self.cleanup_one(name)
        return []


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def versions() -> dict:
    return {
        "lxc": C.cmd_output(["lxc-start", "--version"]),
        "lxc_deb": C.dpkg_version("lxc"),
        "util_linux": C.cmd_output(["unshare", "--version"]),
        "busybox": C.cmd_output(["busybox"]),
    }


def goals(results: dict) -> dict:
    out = {}
    ovz_systems = [s for s in ("ovz-directory", "ovz-image") if s in results]
    for step in STEPS:
        lxc = results.get("lxc", {}).get(step, {}).get("median_ms")
        by_layout = {s: results[s].get(step, {}).get("median_ms") for s in ovz_systems}
        vals = [v for v in by_layout.values() if v is not None]
        ovz = max(vals) if vals and len(vals) == len(by_layout) else None
        out[step] = {
            "lxc_ms": lxc,
            "ovz_ms": ovz,  # the slower layout: both must beat LXC
            "ovz_by_layout_ms": by_layout,
            "met": (ovz < lxc) if (ovz is not None and lxc is not None) else None,
        }
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20, help="recorded runs per system (20)")
    ap.add_argument("--warmup", type=int, default=1, help="unrecorded runs per system first (1)")
    ap.add_argument("--json", default=str(C.RESULTS_DIR / "start.json"),
                    help="where to write the results (bench/results/start.json)")
    ap.add_argument("--systems", default="unshare,lxc,ovz",
                    help="comma list of unshare, lxc, ovz (API, both layouts), "
                         "ovz-directory, ovz-image, ovz-cli")
    ap.add_argument("--repo-root", default=str(C.REPO_ROOT),
                    help="collection whose engine is measured (this checkout)")
    ap.add_argument("--tmpdir", default=None, help="where the ovzbench.* temp dir goes")
    ap.add_argument("--lxc-stop-kill", action="store_true",
                    help="lxc-stop -k (SIGKILL) instead of a clean halt; busybox init's "
                         "clean halt sleeps about 2 s by itself")
    ap.add_argument("--no-lxc-conf-write", action="store_true",
                    help=f"only check {LXC_CONF}, never add the lxc.cgroup.use line")
    a = ap.parse_args(argv)
    if a.runs < 1:
        ap.error("--runs must be >= 1")
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    C.install_interrupt_handlers()
    wanted = {s.strip() for s in args.systems.split(",") if s.strip()}
    if "ovz" in wanted:
        wanted |= {"ovz-directory", "ovz-image", "ovz-cli"}
    tag = f"ovzb{os.getpid()}"
    counter = iter(range(10**9))
    systems: list[System] = []
    errors: dict[str, list[str]] = {}
    samples: dict[str, dict[str, list[float]]] = {}
    skipped: dict[str, str] = {}
    tmp = None
    interrupted = False
    machine = C.machine_info(versions())
    print(f"machine: kernel {machine['kernel']}, {machine['cpus']} cpus, cgroup "
          f"{machine['cgroup_mode']}, load {machine['loadavg_start'][0]:.2f}; "
          f"lxc {machine['versions']['lxc']}")
    if machine["loadavg_start"][0] > 0.5 * (machine["cpus"] or 1):
        print(f"WARNING: the machine is busy (load {machine['loadavg_start'][0]:.2f}); "
              "expect noisy figures", file=sys.stderr)
    lxc_sys = None
    try:
        tmp = C.make_tmpdir("bench", args.tmpdir)
        if "unshare" in wanted:
            systems.append(Unshare())
        if "lxc" in wanted:
            why = ensure_lxc_conf(write=not args.no_lxc_conf_write)
            if why:
                print(f"lxc: NOT RUN: {why}")
                skipped["lxc"] = why
            else:
                lxc_sys = Lxc(tmp, tag, args.lxc_stop_kill)
                systems.append(lxc_sys)
        ovz_layouts = [l for l in ("directory", "image") if f"ovz-{l}" in wanted]
        if ovz_layouts or "ovz-cli" in wanted:
            tree = C.collections_tree(tmp / "collections", Path(args.repo_root))
            mods, why = C.import_engine(tree, "container", "templates")
            template = None
            if mods:
                try:
                    template = str(mods["templates"].build_busybox_template(str(tmp / "templates")))
                except Exception as e:  # noqa: BLE001
                    mods, why = None, f"build_busybox_template failed: {type(e).__name__}: {e}"
            if not mods:
                print("ovz: engine not available")
                print(f"  ({why})")
                for l in ovz_layouts:
                    skipped[f"ovz-{l}"] = f"engine not available: {why}"
            else:
                for l in ovz_layouts:
                    systems.append(OvzApi(mods, tmp, l, template))
            if "ovz-cli" in wanted:
                if ovz_cli_argv("create", "x", str(tmp), template, "directory") is None:
                    print("ovz-cli: no CLI yet (TODO in ovz_cli_argv), column skipped")
                    skipped["ovz-cli"] = "no CLI yet"
                elif template is None:
                    skipped["ovz-cli"] = "no template (engine not available)"
                else:
                    systems += [OvzCli(tmp, l, template) for l in ("directory", "image")]

        ready = []
        for s in systems:
            try:
                s.setup()
                ready.append(s)
            except Exception as e:  # noqa: BLE001
                skipped[s.label] = f"setup failed: {type(e).__name__}: {e}"
                print(f"{s.label}: setup failed: {e}")
        systems = ready
        for s in systems:
            samples[s.label] = {row: [] for row in ROWS}
            errors[s.label] = []

        active = list(systems)
        total_iters = args.warmup + args.runs
        for it in range(total_iters):
            recording = it >= args.warmup
            print(f"\r{'run' if recording else 'warmup'} {it + 1 - (args.warmup if recording else 0)}"
                  f"/{args.runs if recording else args.warmup}  ", end="", file=sys.stderr, flush=True)
            for s in list(active):
                name = f"{tag}{next(counter)}"
                try:
                    r = s.one_run(name)
                except FatalSystemError as e:
                    errors[s.label].append(str(e))
                    print(f"\n{s.label}: FATAL: {e}; not running it any more", file=sys.stderr)
                    s.cleanup_one(name)
                    active.remove(s)
                    continue
                except Exception as e:  # noqa: BLE001 - StepError or an engine bug
                    msg = f"{name}: {type(e).__name__}: {e}"
                    errors[s.label].append(msg)
                    print(f"\n{s.label}: run failed: {msg}", file=sys.stderr)
                    if not isinstance(e, C.StepError):
                        traceback.print_exc()
                    s.cleanup_one(name)
                    if len(errors[s.label]) >= MAX_FAILURES:
                        print(f"{s.label}: {MAX_FAILURES} failures, giving up on it", file=sys.stderr)
                        active.remove(s)
                    continue
                if recording:
                    for k, v in r.items():
                        samples[s.label][k].append(v)
        print(file=sys.stderr)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: cleaning up", file=sys.stderr)
    finally:
        with C.signals_deferred():
            problems = []
            for s in systems:
                try:
                    problems += s.cleanup()
                except Exception as e:  # noqa: BLE001
                    problems.append(f"{s.label} cleanup: {type(e).__name__}: {e}")
            problems += C.remove_tmpdir(tmp)
            for p in problems:
                print(f"WARNING: {p}", file=sys.stderr)
            C.warn_leftovers("ovz", mine=tag)

    results = {label: {row: C.summarize(v) for row, v in rows.items() if v}
               for label, rows in samples.items()}
    columns = [s.label for s in systems]
    for label in ("ovz-directory", "ovz-image"):
        if label in skipped and label not in columns:
            columns.append(label)
    C.print_table(ROWS, columns, results,
                  title=f"\nbusybox container lifecycle, {args.runs} runs "
                        f"({'lxc-stop -k' if args.lxc_stop_kill else 'clean lxc-stop'})")
    print("unshare: one whole `unshare ... true` per run (start and total rows).\n"
          "lxc start: lxc-start until `lxc-attach -- true` works; start+rcS: until the "
          "startup script's marker exists.\novz start: start(wait_boot=True), i.e. "
          "after the startup scripts. total = create+start+stop+destroy.")
    g = goals(results)
    for step, v in g.items():
        mark = {True: "met", False: "NOT met", None: "n/a"}[v["met"]]
        print(f"goal {step:8s} ovz < lxc: {mark} (lxc {v['lxc_ms']}, ovz {v['ovz_ms']})")
    if any(errors.values()):
        print("errors:", {k: len(v) for k, v in errors.items() if v})
    if interrupted:
        print("interrupted: results not written", file=sys.stderr)
        return 130
    path = C.write_results(
        args.json, machine, args.runs, results, goals=g,
        skipped=skipped, errors={k: v for k, v in errors.items() if v},
        settings={
            "warmup": args.warmup,
            "lxc_stop": "lxc-stop -k" if args.lxc_stop_kill else "lxc-stop (clean halt)",
            "lxc_global_conf": f"{LXC_CONF}: lxc.cgroup.use = {LXC_CGROUP_USE}",
            "lxc_container_config": LXC_CONTAINER_CONFIG,
            "unshare_argv": Unshare.ARGV,
            "rows": {
                "unshare": "start = total = one complete unshare ... true",
                "lxc.start": "lxc-start -d until lxc-attach -- true succeeds",
                "lxc.start+rcS": "lxc-start -d until the rcS marker exists (via lxc-attach)",
                "ovz.start": "ContainerManager.start(wait_boot=True)",
                "total": "create + start + stop + destroy",
            },
        })
    print(f"results: {path}")
    return 1 if any(errors.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
