"""Containment: a neighbour's request latency and throughput while another container misbehaves.

Two busybox containers made through the ovz.containers engine (``ContainerManager`` with
the bench's own data_dir and cgroup parent, limits through ``limits.update``, the code behind
``ovz_limits``), both with the same typical limits (``--ram``, ``--numproc``, cpuunits 1000,
``--iolimit``):

- the neighbour (numproc ``--neighbour-numproc``, see below) runs ``busybox httpd`` on 127.0.0.1:8080 inside its own network namespace
  (no address outside the container, no link to the host). Each request runs the CGI script
  ``/cgi-bin/work``: it writes 256 KiB from /dev/urandom to a file, hashes it with md5sum and
  removes it (CPU, memory, file system and process creation per request);
- the client is this bench's own process (``nsenter --net`` into the neighbour's network
  namespace, nothing else), outside both containers; it sends one request at a time (closed
  loop) for the length of a phase and records each request's latency.

Phases (the noisy container is restarted between phases, so each begins clean):

- quiet: the noisy container runs but stays idle;
- fork: a shell fork bomb, bounded by the container's numproc;
- memory: shells that double a string until the container's ram limit OOM-kills them, in a loop;
- io: ``dd`` writing 64 MiB files with O_DIRECT and buffered+fsync, in a loop (file size bounded),
  bounded by the container's iolimit;
- all: the three at once;
- quiet-after: idle again, to show how much the host itself drifted during the run.

Per phase: p50 and p99 latency, throughput (requests/s) and their ratio to quiet, against the
goal of issue 9: p50/p99 at most 10 % above quiet and throughput at most 10 % below. Also some
evidence that the bomb really ran (the noisy container's pids.current, memory failcnt, bytes
written). Output: a table and JSON (bench/results/containment.json).

Everything is ovz-named and removed in a finally, also on Ctrl-C, SIGTERM or the wall-clock
limit (``--max-seconds``): the temp dir /var/tmp/ovz-bench-containment-<random>, the cgroup
parent ovzcont<pid>, the containers ovzf<pid><n>.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402  pylint: disable=wrong-import-position
from fairness import Node, engine_node  # noqa: E402  pylint: disable=wrong-import-position

PORT = 8080
GOAL_PCT = 10.0
CGI = """#!/bin/sh
echo "Content-Type: text/plain"
echo
f=/root/ovz-req.$$
dd if=/dev/urandom of=$f bs=64k count=4 2>/dev/null
md5sum $f
rm -f $f
"""
BOMBS = {
    "fork": "f() { while :; do f & done; }; f",
    "memory": "while :; do sh -c 'x=ovzovzovzovz; while :; do x=$x$x; done'; done",
    "io": "while :; do dd if=/dev/zero of=/root/ovz-flood-d bs=1M count=64 oflag=direct; "
          "dd if=/dev/zero of=/root/ovz-flood-b bs=1M count=64 conv=fsync; rm -f /root/ovz-flood-*; done",
}
PHASES = ("quiet", "fork", "memory", "io", "all", "quiet-after")


class WallClock(Exception):
    """The run took longer than --max-seconds."""


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short phases (5 s), for a smoke run")
    ap.add_argument("--seconds", type=float, default=None, help="measured length of one phase (30; 5 with --quick)")
    ap.add_argument("--settle", type=float, default=None, help="wait after starting a bomb (3; 1 with --quick)")
    ap.add_argument("--phases", default=",".join(PHASES), help="phases to run (quiet is always run)")
    ap.add_argument("--ram", default="256M", help="ram of both containers (256M)")
    ap.add_argument("--numproc", default="256", help="numproc of the noisy container (256)")
    ap.add_argument("--neighbour-numproc", default="1024",
                    help="numproc of the neighbour (1024: busybox init reaps the orphaned CGI processes about once "
                         "a second, so at ~200 requests/s some 100-200 of them wait to be reaped)")
    ap.add_argument("--iolimit", default="10M", help="iolimit of both containers (10M bytes/s)")
    ap.add_argument("--max-seconds", type=float, default=600, help="wall-clock limit of the whole run (600)")
    ap.add_argument("--json", default=str(C.RESULTS_DIR / "containment.json"), help="JSON output")
    ap.add_argument("--tmpdir", default="/var/tmp", help="where the ovz-bench-containment-* temp dir goes")
    ap.add_argument("--repo-root", default=str(C.REPO_ROOT), help="the collection to import the engine from")
    ap.add_argument("--client", nargs=2, metavar=("PORT", "SECONDS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.seconds is None:
        args.seconds = 5.0 if args.quick else 30.0
    if args.settle is None:
        args.settle = 1.0 if args.quick else 3.0
    return args


# -------------------------------------------------------------------------- client (runs inside the neighbour's netns)
def request(port: int) -> float:
    """One HTTP/1.0 request to the CGI; its latency in ms. Raises OSError on a bad answer."""
    began = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /cgi-bin/work HTTP/1.0\r\nHost: ovz\r\n\r\n")
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    elapsed = (time.perf_counter() - began) * 1000.0
    answer = b"".join(chunks)
    if not answer.startswith(b"HTTP/1.") or b" 200 " not in answer.split(b"\r\n", 1)[0]:
        raise OSError("bad answer: %r" % answer[:80])
    return elapsed


def client_main(port: int, seconds: float) -> int:
    latencies, errors, kinds = [], 0, {}
    for _warm in range(3):
        try:
            request(port)
        except OSError:
            pass
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        try:
            latencies.append(request(port))
        except OSError as exc:
            errors += 1
            kind = str(exc)[:60]
            kinds[kind] = kinds.get(kind, 0) + 1
    elapsed = time.monotonic() - began
    json.dump({"latencies_ms": latencies, "errors": errors, "error_kinds": kinds, "elapsed_s": elapsed}, sys.stdout)
    return 0


def measure(pid: int, seconds: float) -> dict:
    argv = ["nsenter", "--net=/proc/%d/ns/net" % pid, "--", sys.executable, os.path.abspath(__file__),
            "--client", str(PORT), str(seconds)]
    out = C.run(argv, timeout=seconds + 60).stdout
    data = json.loads(out)
    lat = data["latencies_ms"]
    if not lat:
        raise C.StepError("no request succeeded (%d errors)" % data["errors"])
    return {"n": len(lat), "errors": data["errors"], "error_kinds": data["error_kinds"], "elapsed_s": round(data["elapsed_s"], 3),
            "p50_ms": round(C.percentile(lat, 50), 3), "p99_ms": round(C.percentile(lat, 99), 3),
            "mean_ms": round(statistics.mean(lat), 3), "max_ms": round(max(lat), 3),
            "throughput_rps": round(len(lat) / data["elapsed_s"], 3)}


# -------------------------------------------------------------------------- containers
def setup_neighbour(node: Node, limits: dict) -> str:
    name = node.container(limits)
    script = "mkdir -p /www/cgi-bin && cat > /www/cgi-bin/work && chmod 755 /www/cgi-bin/work"
    result = node.manager.exec(name, ["/bin/sh", "-c", script], stdin=CGI.encode(), timeout=30)
    if result.rc != 0:
        raise C.StepError("inside %s: writing the CGI: rc %d" % (name, result.rc))
    pid = node.manager.runtime(name).init_pid
    C.run(["nsenter", "--net=/proc/%d/ns/net" % pid, "--", "ip", "link", "set", "lo", "up"])
    node.sh(name, "httpd -p 127.0.0.1:%d -h /www </dev/null >/dev/null 2>&1" % PORT)
    deadline = time.monotonic() + 10
    while True:
        try:
            measure(pid, 0.05)
            return name
        except (C.StepError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def start_bombs(node: Node, name: str, kinds, seconds: float) -> None:
    """Start the bombs that are not running in the background inside the noisy container, each under
    busybox timeout (a wall-clock bound of its own) and remembered by a pid file."""
    script = []
    for kind in kinds:
        pidfile = "/root/ovz-bomb-%s.pid" % kind
        script.append("kill -0 $(cat %s 2>/dev/null) 2>/dev/null || { timeout -s KILL %d sh -c %s "
                      "</dev/null >/dev/null 2>&1 & echo $! > %s; }" % (pidfile, int(seconds) + 1,
                                                                        shell_quote(BOMBS[kind]), pidfile))
    node.sh(name, "; ".join(script))


class Relauncher(threading.Thread):
    """Starts the bombs again once a second while they are not running: a busybox shell exits when a fork
    fails, so a shell fork bomb dies once it reaches numproc (and takes the other bombs' shells with it)."""

    def __init__(self, node: Node, name: str, kinds, seconds: float):
        super().__init__(daemon=True)
        self.args = (node, name, kinds)
        self.until = time.monotonic() + seconds
        self.stopping = threading.Event()
        self.launches = 0
        self.failed = 0

    def run(self) -> None:
        while not self.stopping.wait(1.0) and time.monotonic() < self.until:
            try:
                start_bombs(*self.args, self.until - time.monotonic())
                self.launches += 1
            except Exception:  # noqa: BLE001 - the container is at its numproc: exec cannot fork either
                self.failed += 1

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)


def shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def restart_quiet(node: Node, name: str) -> None:
    """Stop (SIGKILL to the cgroup after the timeout) and start the noisy container again."""
    node.manager.stop(name, timeout=5)
    node.manager.start(name, wait_boot=True, timeout=60)
    node.sh(name, "rm -f /root/ovz-bomb-*.pid /root/ovz-flood-*")


def read_int(path: Path):
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def evidence(node: Node, name: str) -> dict:
    """What the noisy container did since it was started (read-only): its processes now and at most, its
    memory use at most, the bytes it wrote."""
    out = {}
    try:
        out["pids_current"] = read_int(node.cgfile(name, "pids", "pids.current"))
        out["pids_peak"] = read_int(node.cgfile(name, "pids", "pids.peak"))
        if node.manager.backend.version == 1:
            out["memory_peak_bytes"] = read_int(node.cgfile(name, "memory", "memory.max_usage_in_bytes"))
            text = node.cgfile(name, "blkio", "blkio.throttle.io_service_bytes_recursive").read_text()
            out["bytes_written"] = sum(int(line.split()[2]) for line in text.splitlines()
                                       if len(line.split()) == 3 and line.split()[1] == "Write")
        else:
            out["memory_peak_bytes"] = read_int(node.cgfile(name, "memory", "memory.peak"))
            out["bytes_written"] = sum(int(dict(item.split("=") for item in line.split()[1:]).get("wbytes", 0))
                                       for line in node.cgfile(name, "io", "io.stat").read_text().splitlines())
    except (OSError, ValueError, AttributeError) as exc:
        out["error"] = str(exc)
    return out


def ratios(phase: dict, quiet: dict) -> dict:
    r = {"p50": phase["p50_ms"] / quiet["p50_ms"], "p99": phase["p99_ms"] / quiet["p99_ms"],
         "throughput": phase["throughput_rps"] / quiet["throughput_rps"]}
    limit = 1 + GOAL_PCT / 100.0
    r = {k: round(v, 3) for k, v in r.items()}
    r["met"] = (r["p50"] <= limit and r["p99"] <= limit and r["throughput"] >= 1 - GOAL_PCT / 100.0
                and not phase["errors"])
    return r


def table(results: dict) -> str:
    lines = ["%-12s %8s %9s %9s %10s %8s %8s %8s  %s" % ("phase", "requests", "p50 ms", "p99 ms", "req/s",
                                                         "p50 x", "p99 x", "req/s x", "within 10 %")]
    for phase, item in results.items():
        r = item.get("ratio_to_quiet") or {}
        lines.append("%-12s %8d %9.2f %9.2f %10.1f %8s %8s %8s  %s" % (
            phase, item["n"], item["p50_ms"], item["p99_ms"], item["throughput_rps"],
            "%.2f" % r["p50"] if r else "-", "%.2f" % r["p99"] if r else "-",
            "%.2f" % r["throughput"] if r else "-", ("yes" if r["met"] else "NO") if r else "(baseline)"))
    return "\n".join(lines)


def run_phases(node: Node, neighbour: str, noisy: str, args, phases) -> dict:
    pid = node.manager.runtime(neighbour).init_pid
    results: dict = {}
    for phase in phases:
        kinds = list(BOMBS) if phase == "all" else [phase] if phase in BOMBS else []
        relauncher = None
        if kinds:
            start_bombs(node, noisy, kinds, args.settle + args.seconds + 5)
            relauncher = Relauncher(node, noisy, kinds, args.settle + args.seconds + 5)
            relauncher.start()
            time.sleep(args.settle)
        try:
            item = measure(pid, args.seconds)
            item["noisy"] = evidence(node, noisy)
        finally:
            if relauncher is not None:
                relauncher.stop()
        if relauncher is not None:
            item["noisy"].update(relaunch_checks=relauncher.launches, relaunch_exec_failed=relauncher.failed)
        if phase != "quiet" and "quiet" in results:
            item["ratio_to_quiet"] = ratios(item, results["quiet"])
        results[phase] = item
        print("%-12s %s" % (phase, json.dumps({k: v for k, v in item.items() if k != "noisy"})), flush=True)
        if kinds:
            restart_quiet(node, noisy)
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.client:
        return client_main(int(args.client[0]), float(args.client[1]))
    phases = ["quiet"] + [p for p in args.phases.split(",") if p and p != "quiet"]
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        print("ovz: unknown phase(s) %s; known: %s" % (",".join(unknown), ",".join(PHASES)), file=sys.stderr)
        return 2
    for tool in ("nsenter", "ip"):
        if not shutil.which(tool):
            print("ovz: %s not found" % tool, file=sys.stderr)
            return 2
    C.install_interrupt_handlers()

    def wall_clock(_signum, _frame):
        raise WallClock("wall-clock limit of %.0f s reached" % args.max_seconds)
    signal.signal(signal.SIGALRM, wall_clock)
    signal.alarm(max(1, int(args.max_seconds)))
    tmp = Path(tempfile.mkdtemp(prefix="ovz-bench-containment-", dir=args.tmpdir))
    node = None
    try:
        node, machine = engine_node(tmp, args.repo_root, "ovzcont%d" % os.getpid())
        if node is None:
            return 2
        limits = {"cpuunits": 1000, "ram": args.ram, "numproc": args.numproc, "iolimit": args.iolimit}
        neighbour = setup_neighbour(node, dict(limits, numproc=args.neighbour_numproc))
        noisy = node.container(limits)
        results, error = {}, None
        try:
            results = run_phases(node, neighbour, noisy, args, phases)
        except (C.StepError, OSError, ValueError) as exc:
            error = str(exc)
        measured = [p for p in results if p != "quiet"]
        summary = {"goal_pct": GOAL_PCT, "met": bool(measured) and all(
            results[p]["ratio_to_quiet"]["met"] for p in measured if p != "quiet-after")}
        print()
        print(table(results))
        print("goal: p50, p99 and throughput within %.0f %% of quiet under every bomb: %s"
              % (GOAL_PCT, "met" if summary["met"] else "NOT met"))
        C.write_results(args.json, machine, 1, results, summary=summary, error=error,
                        settings={"seconds": args.seconds, "settle": args.settle, "limits": limits,
                                  "neighbour_numproc": args.neighbour_numproc,
                                  "bombs": BOMBS, "cgi": CGI, "quick": args.quick})
        print("JSON: %s" % args.json)
        if error:
            print("error: %s" % error, file=sys.stderr)
        return 0 if not error else 1
    finally:
        signal.alarm(0)
        C.clean_up_run(node, tmp, mine="ovzcont")


if __name__ == "__main__":
    sys.exit(main())
