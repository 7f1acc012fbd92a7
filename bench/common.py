"""Reusable pieces for the ovz.containers benchmarks (bench/*.py).

Nothing here changes the host except what a caller asks for explicitly:
temporary directories (all named ``ovz*``), the temporary collections tree,
and removal of cgroup directories whose names the caller passes in.

Used by bench/start.py; meant for the network, fairness, migration ... benches too:

    from common import (Bench, summarize, print_table, write_results,
                        machine_info, collections_tree, import_engine,
                        leftover_cgroups, warn_leftovers)
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
# The test suite's harnesses are the package ``support`` of tests/ (the multi-node harness: nodes with
# their own sshd); the benchmarks import it as the tests do, with tests/ on the path as pytest has it.
if str(REPO_ROOT / "tests") not in sys.path:
    sys.path.append(str(REPO_ROOT / "tests"))
RESULTS_DIR = BENCH_DIR / "results"
CGROUP_ROOT = Path("/sys/fs/cgroup")
# The memory hierarchy belongs to the machine's own tooling (DESIGN.md facts):
# the bench never creates, removes or writes anything there.
PROTECTED_HIERARCHIES = frozenset({"memory"})


# --------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------

def percentile(samples: Sequence[float], p: float) -> float:
    """Percentile with linear interpolation between order statistics
    (the same as numpy's default ``method='linear'``)."""
    if not samples:
        raise ValueError("no samples")
    xs = sorted(samples)
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * (p / 100.0)
    lo, hi = math.floor(k), math.ceil(k)
    if lo == hi:
        return xs[int(k)]
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summarize(samples_ms: Sequence[float]) -> dict:
    """Median and spread of samples given in milliseconds."""
    xs = [float(x) for x in samples_ms]
    if not xs:
        return {"n": 0, "median_ms": None, "p10_ms": None, "p90_ms": None,
                "p25_ms": None, "p75_ms": None, "min_ms": None, "max_ms": None,
                "mean_ms": None, "samples": []}

    def r(value):
        return round(value, 3)

    return {
        "n": len(xs),
        "median_ms": r(percentile(xs, 50)),
        "p10_ms": r(percentile(xs, 10)),
        "p90_ms": r(percentile(xs, 90)),
        "p25_ms": r(percentile(xs, 25)),
        "p75_ms": r(percentile(xs, 75)),
        "min_ms": r(min(xs)),
        "max_ms": r(max(xs)),
        "mean_ms": r(sum(xs) / len(xs)),
        "samples": [r(x) for x in xs],
    }


def _fmt_ms(v: float) -> str:
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def fmt_cell(summary: dict | None) -> str:
    """'median (p10–p90)' in ms, or '-' when there is nothing."""
    if not summary or not summary.get("n"):
        return "-"
    return (f"{_fmt_ms(summary['median_ms'])} "
            f"({_fmt_ms(summary['p10_ms'])}–{_fmt_ms(summary['p90_ms'])})")


def format_table(rows: Sequence[str], columns: Sequence[str],
                 results: dict, title: str = "", unit_note: str = "ms") -> str:
    """Text table: one row per step, one column per system.
    ``results[system][step]`` is a :func:`summarize` dict."""
    header = ["step"] + list(columns)
    body = [[row] + [fmt_cell(results.get(col, {}).get(row)) for col in columns]
            for row in rows]
    widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]
    out = []
    if title:
        out.append(title)
    out.append(f"(cells: median {unit_note} (p10–p90))")

    def fmt(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out.append(fmt(header))
    out.append("  ".join("-" * w for w in widths))
    out.extend(fmt(line) for line in body)
    return "\n".join(out)


def print_table(*args, **kwargs) -> None:
    print(format_table(*args, **kwargs), flush=True)


# --------------------------------------------------------------------------
# machine info and JSON output
# --------------------------------------------------------------------------

def cmd_output(argv: Sequence[str], first_line: bool = True) -> str | None:
    """stdout (or stderr) of a short command, None if it can't run."""
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (p.stdout or p.stderr).strip()
    if not text:
        return None
    return text.splitlines()[0].strip() if first_line else text


def dpkg_version(pkg: str) -> str | None:
    return cmd_output(["dpkg-query", "-W", "-f=${Version}", pkg])


def cgroup_mode() -> str:
    """'v1', 'v2' or 'hybrid', probed from /proc/self/mountinfo."""
    v1 = v2 = False
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fstype = line.split(" - ", 1)[1].split()[0]
            v1 |= fstype == "cgroup"
            v2 |= fstype == "cgroup2"
    return "hybrid" if v1 and v2 else "v1" if v1 else "v2" if v2 else "none"


def machine_info(versions: dict | None = None) -> dict:
    def cpu_model():
        with contextlib.suppress(OSError):
            for line in open("/proc/cpuinfo"):
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
        return None

    def mem_total_kib():
        with contextlib.suppress(OSError):
            for line in open("/proc/meminfo"):
                if line.startswith("MemTotal:"):
                    return int(line.split()[1])
        return None

    info = {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "mem_total_kib": mem_total_kib(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "cgroup_mode": cgroup_mode(),
        "loadavg_start": os.getloadavg(),
        "versions": {"python": platform.python_version()},
    }
    info["versions"].update(versions or {})
    return info


def write_json(path: str | os.PathLike, payload: dict) -> Path:
    """Write JSON atomically (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_results(path, machine: dict, runs: int, results: dict, **extra) -> Path:
    machine = dict(machine)
    machine["loadavg_end"] = os.getloadavg()
    payload = {"machine": machine, "runs": runs, "results": results}
    payload.update(extra)
    return write_json(path, payload)


# --------------------------------------------------------------------------
# timing helpers
# --------------------------------------------------------------------------

def timed(fn: Callable, *args, **kwargs) -> tuple[float, object]:
    """(elapsed ms, result) of one call, timed with time.perf_counter."""
    t0 = time.perf_counter()
    res = fn(*args, **kwargs)
    return (time.perf_counter() - t0) * 1000.0, res


class StepError(RuntimeError):
    pass


def run(argv: Sequence[str], timeout: float = 120, check: bool = True,
        quiet: bool = True) -> subprocess.CompletedProcess:
    """Run a command; stdout/stderr captured when quiet. Raises StepError on failure."""
    kw = {"capture_output": True, "text": True} if quiet else {}
    try:
        p = subprocess.run(list(argv), timeout=timeout, check=False, **kw)
    except subprocess.TimeoutExpired as e:
        raise StepError(f"timeout after {timeout}s: {' '.join(argv)}") from e
    if check and p.returncode != 0:
        err = (p.stderr or "").strip().splitlines()[-3:] if quiet else []
        raise StepError(f"rc={p.returncode}: {' '.join(argv)}: {' | '.join(err)}")
    return p


# --------------------------------------------------------------------------
# temporary directories and the collections tree
# --------------------------------------------------------------------------

def make_tmpdir(tag: str, base: str | None = None) -> Path:
    """A fresh directory named ovz<tag>.<random> (the ovz prefix makes leftovers easy to find)."""
    return Path(tempfile.mkdtemp(prefix=f"ovz{tag}.", dir=base))


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below path (this mount namespace), deepest first."""
    path = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].encode().decode("unicode_escape")
            if mp == path or mp.startswith(path + "/"):
                found.append(mp)
    return sorted(found, key=len, reverse=True)


def remove_tmpdir(path: Path | None) -> list[str]:
    """Remove a bench temp dir. Unmounts what is mounted below it first (only
    below it: those mounts were made by the bench or the engine it drove) and
    refuses to delete through a mount that stays. Returns problems."""
    problems = []
    if not path or not os.path.exists(path):
        return problems
    for mp in mounts_under(path):
        p = subprocess.run(["umount", mp], capture_output=True, text=True, check=False)
        if p.returncode != 0:
            p = subprocess.run(["umount", "-l", mp], capture_output=True, text=True, check=False)
            if p.returncode != 0:
                problems.append(f"cannot unmount {mp}: {p.stderr.strip()}")
    if mounts_under(path):
        problems.append(f"mounts remain under {path}; not deleting it")
        return problems
    shutil.rmtree(path, ignore_errors=True)
    if os.path.exists(path):
        problems.append(f"could not fully remove {path}")
    return problems


def collections_tree(tmp: Path, repo_root: Path = REPO_ROOT) -> Path:
    """Build <tmp>/ansible_collections/ovz/containers -> repo_root and
    return <tmp> (the directory to put on sys.path / ANSIBLE_COLLECTIONS_PATH)."""
    ns = Path(tmp) / "ansible_collections" / "ovz"
    ns.mkdir(parents=True, exist_ok=True)
    link = ns / "containers"
    if not link.is_symlink():
        link.symlink_to(Path(repo_root).resolve(), target_is_directory=True)
    return Path(tmp)


# The engine modules the benches name, by where they live in the layered engine (plugins/module_utils/_engine).
ENGINE_PATHS = {
    "container": "_engine.container.manager",
    "templates": "_engine.node.templates",
    "storage": "_engine.kernel.storage",
    "namespaces": "_engine.kernel.namespaces",
    "criu": "_engine.kernel.criu",
    "limits": "_engine.resources.limits",
    "network": "_engine.resources.network",
    "checkpoint": "_engine.ops.checkpoint",
    "limits_op": "_engine.ops.limits",      # limits.update, the code behind ovz_limits
}


def import_engine(tree: Path, *modules: str):
    """Import engine modules from the collections tree.

    Returns (dict name -> module, None) or (None, reason)."""
    import importlib
    if str(tree) not in sys.path:
        sys.path.insert(0, str(tree))
    importlib.invalidate_caches()
    loaded = {}
    for mod in modules:
        full = f"ansible_collections.ovz.containers.plugins.module_utils.{ENGINE_PATHS.get(mod, mod)}"
        try:
            loaded[mod] = importlib.import_module(full)
        except Exception as e:  # noqa: BLE001 - the engine may be half-written
            return None, f"{full}: {type(e).__name__}: {e}"
    return loaded, None


# --------------------------------------------------------------------------
# cgroups: own paths, leftovers, removal of the bench's own directories
# --------------------------------------------------------------------------

def hierarchies() -> dict[str, Path]:
    """Mounted cgroup hierarchies under /sys/fs/cgroup: name -> mount path."""
    out = {}
    if not CGROUP_ROOT.is_dir():
        return out
    for d in sorted(CGROUP_ROOT.iterdir()):
        if d.is_dir() and not d.is_symlink() and (d / "cgroup.procs").exists():
            out[d.name] = d
    if (CGROUP_ROOT / "cgroup.procs").exists():  # pure v2
        out[""] = CGROUP_ROOT
    return out


def own_cgroups(pid: int | str = "self") -> dict[str, str]:
    """/proc/<pid>/cgroup as {controller-or-name: path}; '' for the v2 entry."""
    res = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _hid, ctrls, path = line.rstrip("\n").split(":", 2)
            for c in (ctrls.split(",") if ctrls else [""]):
                res[c] = path
    return res


def _hierarchy_own_path(name: str, own: dict[str, str]) -> str:
    if name in own:
        return own[name]
    if name == "unified" or name == "":
        return own.get("", "/")
    if "name=" + name in own:
        return own["name=" + name]
    return "/"


def leftover_cgroups(prefix: str = "ovz") -> list[str]:
    """cgroup directories named prefix* at the top of each hierarchy and
    directly below this process's own cgroup in it (where
    cgroup_parent=auto nests containers). Read-only."""
    found = set()
    own = own_cgroups()
    for name, mnt in hierarchies().items():
        for base in sorted({mnt, mnt / _hierarchy_own_path(name, own).lstrip("/")}):
            with contextlib.suppress(OSError):
                for d in base.iterdir():
                    if d.is_dir() and d.name.startswith(prefix):
                        found.add(str(d))
    return sorted(found)


def remove_cgroup_dirs(names: Iterable[str]) -> list[str]:
    """rmdir (deepest first) the cgroup directories with exactly these names at
    the top of each non-protected hierarchy, and everything below them. Only
    for names the caller created (all must start with 'ovz'). Never touches
    the memory hierarchy. Returns what could not be removed."""
    names = set(names)
    bad = [n for n in names if not n.startswith("ovz") or "/" in n or n in (".", "..")]
    if bad:
        raise ValueError(f"refusing to remove cgroups {bad!r}")
    stuck = []
    for name, mnt in hierarchies().items():
        if name in PROTECTED_HIERARCHIES:
            continue
        try:
            tops = [d for d in mnt.iterdir() if d.is_dir() and d.name in names]
        except OSError:
            continue
        for top in tops:
            subdirs = [Path(entry[0]) for entry in os.walk(top)]
            for d in sorted(subdirs, key=lambda p: len(p.parts), reverse=True):
                for _attempt in range(20):
                    try:
                        os.rmdir(d)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.05)  # a monitor may still be leaving it
                else:
                    stuck.append(str(d))
    return stuck


def warn_leftovers(prefix: str = "ovz", mine: str | None = None) -> list[str]:
    left = leftover_cgroups(prefix)
    if left:
        print(f"WARNING: {len(left)} leftover {prefix}* cgroup(s):", file=sys.stderr)
        for d in left:
            tag = "  (this bench)" if mine and os.path.basename(d).startswith(mine) else ""
            print(f"  {d}{tag}", file=sys.stderr)
    else:
        print(f"cgroups: no leftover {prefix}* cgroups under {CGROUP_ROOT}/*/")
    return left


# --------------------------------------------------------------------------
# signals: make SIGTERM/SIGHUP behave like Ctrl-C so try/finally cleanup runs
# --------------------------------------------------------------------------

def install_interrupt_handlers() -> None:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt (also when SIGINT
    was inherited as ignored, e.g. in a background job)."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, handler)


@contextlib.contextmanager
def signals_deferred():
    """Ignore SIGINT/SIGTERM/SIGHUP while cleaning up, so a second Ctrl-C
    can't cut the cleanup short."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.getsignal(s) for s in sigs}
    for s in sigs:
        signal.signal(s, signal.SIG_IGN)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def clean_up_run(node, tmp, mine: str) -> None:
    """A bench's ``finally``: its node's containers and cgroups, its temp dir, then a warning for any
    ``ovz*`` cgroup left on the host (``mine``: the prefix of this run's own), with signals held back."""
    with signals_deferred():
        problems = node.cleanup() if node is not None else []
        problems += remove_tmpdir(tmp)
        for problem in problems:
            print("cleanup: " + problem, file=sys.stderr)
        warn_leftovers("ovz", mine=mine)
