"""Shared pieces of bench/run_all (issue 10): the run context, private network namespaces,
host-side memory probes, paired-ratio statistics and a container rootfs helper.

Everything a section makes is named ovz* (containers ovzb<tag>..., namespaces ovzb<tag>...,
the temp dir /var/tmp/ovz-bench-*) and is registered in ``Ctx.cleanups`` so that it goes
again in a ``finally``, on Ctrl-C and SIGTERM too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

BENCH = Path(__file__).resolve().parent.parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
import common as C  # noqa: E402  pylint: disable=wrong-import-position,import-error

ENGINE_MODULES = ("container", "templates", "limits", "limits_op", "checkpoint", "network", "namespaces", "criu")


class Ctx:
    """One run of bench/run_all: settings, temp dir, engine modules, cleanups, results."""

    def __init__(self, args, tmp: Path) -> None:
        self.args = args
        self.quick = bool(args.quick)
        self.tmp = tmp
        self.tag = "%x" % (os.getpid() & 0xFFFF)
        self.mods: Optional[dict] = None
        self.engine_error: Optional[str] = None
        self.template: Optional[str] = None
        self.cleanups: List[Callable[[], None]] = []
        self.errors: Dict[str, List[str]] = {}

    def error(self, section: str, message: str) -> None:
        self.errors.setdefault(section, []).append(message)
        print("ERROR [%s]: %s" % (section, message), file=sys.stderr, flush=True)

    def engine(self) -> dict:
        """The engine's modules, imported once from a collections tree in the temp dir."""
        if self.mods is None and self.engine_error is None:
            tree = C.collections_tree(self.tmp / "collections")
            self.mods, self.engine_error = C.import_engine(tree, *ENGINE_MODULES)
            if self.mods:
                self.template = str(self.mods["templates"].build_busybox_template(str(self.tmp / "templates")))
        if self.mods is None:
            raise C.StepError("engine not available: %s" % self.engine_error)
        return self.mods

    def manager(self, label: str):
        """A ContainerManager with its own data_dir in the temp dir, cgroups nested under ours."""
        data = self.tmp / ("data-" + label)
        data.mkdir(parents=True, exist_ok=True)
        return self.engine()["container"].ContainerManager(data_dir=str(data), cgroup_parent="auto")

    def run_cleanups(self) -> None:
        while self.cleanups:
            step = self.cleanups.pop()
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - keep cleaning
                print("WARNING: cleanup: %s: %s" % (type(exc).__name__, exc), file=sys.stderr)


# --------------------------------------------------------------------------
# network namespaces of our own (the machine's own network is never touched)
# --------------------------------------------------------------------------

class Netns:
    def __init__(self, name: str) -> None:
        self.name = name
        self.path = "/run/netns/" + name
        C.run(["ip", "netns", "add", name])
        C.run(["ip", "-n", name, "link", "set", "lo", "up"])
        self.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])

    def argv(self, argv: List[str]) -> List[str]:
        return ["nsenter", "--net=" + self.path] + list(argv)

    def run(self, argv: List[str], check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return C.run(self.argv(argv), check=check, timeout=timeout)

    def delete(self) -> None:
        C.run(["ip", "netns", "del", self.name], check=False)


def in_netns_call(ns_module, path: str, fn: Callable, *args, **kwargs):
    """fn(*args, **kwargs) in a thread that joined the network namespace at path first."""
    box: dict = {}

    def target() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                ns_module.setns(fd, ns_module.CLONE_NEWNET)
            finally:
                os.close(fd)
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


# --------------------------------------------------------------------------
# host-side memory
# --------------------------------------------------------------------------

KERNEL_KEYS = ("SUnreclaim", "KernelStack", "PageTables", "Percpu")


def meminfo() -> Dict[str, int]:
    """/proc/meminfo in KiB."""
    out = {}
    with open("/proc/meminfo") as handle:
        for line in handle:
            key, rest = line.split(":", 1)
            out[key] = int(rest.split()[0])
    return out


def kernel_kib() -> int:
    """Unreclaimable kernel memory: unreclaimable slab, kernel stacks, page tables, per-cpu."""
    info = meminfo()
    return sum(info.get(key, 0) for key in KERNEL_KEYS)


def all_pids() -> set:
    return {int(p) for p in os.listdir("/proc") if p.isdigit()}


def pss_kib(pid: int) -> int:
    try:
        with open("/proc/%d/smaps_rollup" % pid) as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _read(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def host_processes(before: set, markers: List[str]) -> List[dict]:
    """Processes started since ``before`` that live in the host's pid namespace (not inside a
    container) and belong to this bench: their cgroup or command line names one of ``markers``."""
    own_ns = os.readlink("/proc/self/ns/pid")
    found = []
    for pid in sorted(all_pids() - before):
        try:
            if os.readlink("/proc/%d/ns/pid" % pid) != own_ns:
                continue
        except OSError:
            continue
        cmd = _read("/proc/%d/cmdline" % pid).replace("\0", " ").strip()
        cgroup = _read("/proc/%d/cgroup" % pid)
        if pid == os.getpid() or not any(m in cmd or m in cgroup for m in markers):
            continue
        found.append({"pid": pid, "cmd": cmd[:120], "pss_kib": pss_kib(pid)})
    return found


# --------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------

def ratio_stats(ratios: List[float]) -> dict:
    """Median, p10-p90 and min-max of paired ratios."""
    if not ratios:
        return {"n": 0, "median": None}
    return {"n": len(ratios), "median": round(statistics.median(ratios), 4),
            "p10": round(C.percentile(ratios, 10), 4), "p90": round(C.percentile(ratios, 90), 4),
            "min": round(min(ratios), 4), "max": round(max(ratios), 4),
            "samples": [round(r, 4) for r in ratios]}


def summ(samples: List[float]) -> dict:
    return C.summarize(samples)


# --------------------------------------------------------------------------
# putting host binaries into a container tree
# --------------------------------------------------------------------------

def install_binary(root: str, binary: str) -> None:
    """Copy a host binary and every library ldd lists into a container's tree."""
    out = C.run(["ldd", binary], check=False).stdout
    files = [binary] + [part for line in out.splitlines() for part in line.split() if part.startswith("/")]
    for path in files:
        target = os.path.join(root, path.lstrip("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            shutil.copy2(os.path.realpath(path), target)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.01) -> float:
    """Poll until predicate() is true; returns when (perf_counter). Raises StepError on timeout."""
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            raise C.StepError("%s: not within %.0f s" % (what, timeout))
        time.sleep(step)
    return time.perf_counter()


@contextlib.contextmanager
def section(ctx: Ctx, name: str):
    """Run one section; its errors are recorded, and the run goes on with the next section."""
    began = time.monotonic()
    print("== %s" % name, file=sys.stderr, flush=True)
    try:
        yield
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - recorded in the report
        ctx.error(name, "%s: %s" % (type(exc).__name__, exc))
        import traceback  # pylint: disable=import-outside-toplevel
        traceback.print_exc()
    finally:
        print("== %s done in %.0f s" % (name, time.monotonic() - began), file=sys.stderr, flush=True)
