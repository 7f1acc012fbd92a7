"""Network benchmark: request/response latency and TCP throughput over ovz's routed path,
beside hand-made veth setups between bare network namespaces, measured in the same run.

Paths (runs are interleaved: run i of every path, then run i+1):

- bare-pair:    two bare namespaces joined by one veth pair (one hop);
- bare-routed:  two bare namespaces, each joined by a veth pair to a third that forwards
                (two hops and a forwarding step: the same shape as container<->container);
- ovz-ct-host:  a container (routed mode) and its host (169.254.0.1 on the host end): one hop
                plus the container's nftables anti-spoofing chain;
- ovz-ct-ct:    two routed containers through their host.

The "host" of the containers is itself a namespace the bench makes, so nothing touches
the machine's own network. The measuring programs (the host's python3 and iperf3) run in
the containers' network namespaces (nsenter --net), which is the path a container's own
process takes. Every object is named ovz* and removed in a finally, on Ctrl-C too.
Goal: ovz no more than 5% slower than its bare equivalent (our setup adds no hops).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time

import common as C

PORT_ECHO = 5201 + 100
PORT_IPERF = 5201 + 101
ECHO_SERVER = r"""
import socket, sys
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1])))
srv.listen(4)
print("ready", flush=True)
while True:
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        data = conn.recv(64)
        if not data:
            break
        conn.sendall(data)
    conn.close()
"""


def sh(argv, check=True, timeout=120):
    return C.run(argv, timeout=timeout, check=check)


class Netns:
    def __init__(self, name: str) -> None:
        self.name = name
        self.path = "/run/netns/" + name
        sh(["ip", "netns", "add", name])
        self.ip("link", "set", "lo", "up")
        self.run(["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"])

    def ip(self, *args):
        return sh(["ip", "-n", self.name, *args]).stdout

    def run(self, argv, check=True, timeout=120):
        return sh(["nsenter", "--net=" + self.path, *argv], check=check, timeout=timeout)

    def delete(self):
        sh(["ip", "netns", "del", self.name], check=False)


def socket_in(path: str, *args) -> socket.socket:
    box = {}

    def target():
        fd = os.open(path, os.O_RDONLY)
        try:
            box["ns"].setns(fd, box["ns"].CLONE_NEWNET)
        finally:
            os.close(fd)
        box["sock"] = socket.socket(*args)

    box["ns"] = _NS
    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "sock" not in box:
        raise C.StepError("cannot make a socket in " + path)
    return box["sock"]


class Path_:
    """One measured path: where the server runs, where the client runs, the server's address."""

    def __init__(self, label: str, server_ns: str, client_ns: str, address: str) -> None:
        self.label, self.server_ns, self.client_ns, self.address = label, server_ns, client_ns, address
        self.echo = None
        self.iperf = None

    def start_servers(self) -> None:
        self.echo = subprocess.Popen(["nsenter", "--net=" + self.server_ns, sys.executable, "-c", ECHO_SERVER,
                                      str(PORT_ECHO)], stdout=subprocess.PIPE, text=True)
        if self.echo.stdout.readline().strip() != "ready":
            raise C.StepError("echo server did not start for " + self.label)
        self.iperf = subprocess.Popen(["nsenter", "--net=" + self.server_ns, "iperf3", "-s", "-p", str(PORT_IPERF)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.2)

    def stop_servers(self) -> None:
        for proc in (self.echo, self.iperf):
            if proc is not None and proc.poll() is None:
                proc.kill()   # our own child, by PID
                proc.wait()

    def latency_us(self, rounds: int) -> float:
        """Round trip of a 32-byte request/response over one TCP connection, in µs (median of 10 batch means)."""
        sock = socket_in(self.client_ns, socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(10)
            sock.connect((self.address, PORT_ECHO))
            payload = b"x" * 32
            for _warm in range(200):  # warm-up
                sock.sendall(payload)
                sock.recv(64)
            batches = []
            size = max(1, rounds // 10)
            for _batch in range(10):   # the median of 10 batches: robust to a busy neighbour
                t0 = time.perf_counter()
                for _round in range(size):
                    sock.sendall(payload)
                    got = sock.recv(64)
                    while len(got) < len(payload):
                        got += sock.recv(64)
                batches.append((time.perf_counter() - t0) / size * 1e6)
            return C.percentile(batches, 50)
        finally:
            sock.close()

    def throughput_gbit(self, seconds: float) -> float:
        out = sh(["nsenter", "--net=" + self.client_ns, "iperf3", "-c", self.address, "-p", str(PORT_IPERF),
                  "-t", str(seconds), "-J"], timeout=seconds + 30).stdout
        return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def bare_setups(tag: str, made: list) -> list:
    a, b = Netns("ovzbn%sa" % tag), Netns("ovzbn%sb" % tag)
    made += [a, b]
    sh(["ip", "-n", a.name, "link", "add", "ovzbp0", "type", "veth", "peer", "name", "ovzbp1", "netns", b.name])
    a.ip("addr", "add", "10.213.200.1/30", "dev", "ovzbp0")
    b.ip("addr", "add", "10.213.200.2/30", "dev", "ovzbp1")
    a.ip("link", "set", "ovzbp0", "up")
    b.ip("link", "set", "ovzbp1", "up")
    r, c, d = Netns("ovzbn%sr" % tag), Netns("ovzbn%sc" % tag), Netns("ovzbn%sd" % tag)
    made += [r, c, d]
    r.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    for leaf, net, ifc in ((c, "10.213.201", "ovzbr0"), (d, "10.213.202", "ovzbr1")):
        sh(["ip", "-n", r.name, "link", "add", ifc, "type", "veth", "peer", "name", "ovzbl", "netns", leaf.name])
        r.ip("addr", "add", net + ".254/24", "dev", ifc)
        r.ip("link", "set", ifc, "up")
        leaf.ip("addr", "add", net + ".1/24", "dev", "ovzbl")
        leaf.ip("link", "set", "ovzbl", "up")
        leaf.ip("route", "add", "default", "via", net + ".254")
    return [Path_("bare-pair", b.path, a.path, "10.213.200.2"),
            Path_("bare-routed", d.path, c.path, "10.213.202.1")]


def in_netns_call(path: str, fn, *args, **kwargs):
    box = {}

    def target():
        fd = os.open(path, os.O_RDONLY)
        try:
            _NS.setns(fd, _NS.CLONE_NEWNET)
        finally:
            os.close(fd)
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: B036 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


_NS = None


def main(argv=None) -> int:
    global _NS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("--runs", type=int, default=11, help="recorded runs per path (11)")
    ap.add_argument("--rounds", type=int, default=3000, help="request/response round trips per latency run (3000)")
    ap.add_argument("--seconds", type=float, default=2.0, help="iperf3 seconds per throughput run (2)")
    ap.add_argument("--json", default=str(C.RESULTS_DIR / "network.json"), help="where the results go")
    ap.add_argument("--tmpdir", default=None, help="where the ovzbench.* temp dir goes")
    args = ap.parse_args(argv)
    C.install_interrupt_handlers()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    tag = "%x" % (os.getpid() & 0xFFFF)
    made: list = []
    paths: list = []
    tmp = None
    manager = None
    names: list = []
    host = None
    results = {"latency_us": {}, "throughput_gbit": {}}
    errors = []
    try:
        tmp = C.make_tmpdir("bench", args.tmpdir)
        tree = C.collections_tree(tmp / "collections")
        mods, why = C.import_engine(tree, "container", "network", "namespaces", "templates")
        if mods is None:
            print("ovz: engine not available: " + why, file=sys.stderr)
            return 1
        _NS = mods["namespaces"]
        paths += bare_setups(tag, made)
        # The containers' host: a namespace of its own, forwarding like a prepared host.
        host = Netns("ovzbn%sh" % tag)
        made.append(host)
        host.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        template = str(mods["templates"].build_busybox_template(str(tmp / "templates")))
        manager = mods["container"].ContainerManager(data_dir=str(tmp / "data"), cgroup_parent="auto")
        net = mods["network"]
        for i, address in enumerate(("10.213.210.1", "10.213.210.2")):
            name = "ovzb%s%d" % (tag, i)
            manager.create(name, template, layout="directory")
            names.append(name)
            config = manager.load(name)
            config.network = net.normalize_network(name, manager.layout.data_dir, {"ip_address": [address]})
            manager.store.save(config)
            in_netns_call(host.path, manager.start, name, wait_boot=True, timeout=30)
        pid = [manager.runtime(n).init_pid for n in names]
        paths.append(Path_("ovz-ct-host", host.path, "/proc/%d/ns/net" % pid[0], "169.254.0.1"))
        paths.append(Path_("ovz-ct-ct", "/proc/%d/ns/net" % pid[1], "/proc/%d/ns/net" % pid[0], "10.213.210.2"))
        machine = C.machine_info({"iperf3": C.dpkg_version("iperf3"), "nftables": C.dpkg_version("nftables")})
        for path in paths:
            path.start_servers()
            path.latency_us(200)
        for run_index in range(args.runs):
            for path in paths:
                results["latency_us"].setdefault(path.label, []).append(path.latency_us(args.rounds))
            for path in paths:
                results["throughput_gbit"].setdefault(path.label, []).append(path.throughput_gbit(args.seconds))
            print("run %d/%d done" % (run_index + 1, args.runs), file=sys.stderr, flush=True)
    except Exception as exc:  # noqa: BLE001 - reported, and the cleanup below runs
        errors.append("%s: %s" % (type(exc).__name__, exc))
        print("ERROR: %s" % exc, file=sys.stderr)
    finally:
        with C.signals_deferred():
            for path in paths:
                path.stop_servers()
            for name in names:
                try:
                    in_netns_call(host.path, manager.destroy, name)
                except Exception as exc:  # noqa: BLE001 - keep cleaning
                    errors.append("destroy %s: %s" % (name, exc))
            for netns in reversed(made):
                netns.delete()
            problems = C.remove_tmpdir(tmp)
            errors += problems
            C.warn_leftovers("ovz", mine="ovzb" + tag)
    if not results["latency_us"]:
        return 1
    summary = report(results, args)
    path = C.write_results(args.json, machine, args.runs, summary["results"], goals=summary["goals"],
                           errors=errors, settings={"rounds": args.rounds, "seconds": args.seconds,
                                                    "payload_bytes": 32, "tool_latency": "python TCP ping-pong",
                                                    "tool_throughput": "iperf3 -J, one stream"})
    print("results: %s" % path)
    return 0 if not errors else 1


def _median(values):
    return C.percentile(values, 50)


def report(results: dict, args) -> dict:
    labels = list(results["latency_us"])
    out = {"results": {}, "goals": {}}
    lines = ["network (routed path): median of %d runs (p10-p90)" % args.runs,
             "%-12s %24s %24s" % ("path", "latency µs (32 B rr)", "TCP Gbit/s (iperf3)"),
             "%-12s %24s %24s" % ("-" * 12, "-" * 24, "-" * 24)]
    for label in labels:
        lat, thr = results["latency_us"][label], results["throughput_gbit"][label]
        out["results"][label] = {
            "latency_us": {"median": round(_median(lat), 2), "p10": round(C.percentile(lat, 10), 2),
                           "p90": round(C.percentile(lat, 90), 2), "samples": [round(x, 2) for x in lat]},
            "throughput_gbit": {"median": round(_median(thr), 3), "p10": round(C.percentile(thr, 10), 3),
                                "p90": round(C.percentile(thr, 90), 3), "samples": [round(x, 3) for x in thr]},
        }
        lines.append("%-12s %24s %24s" % (
            label, "%.1f (%.1f-%.1f)" % (_median(lat), C.percentile(lat, 10), C.percentile(lat, 90)),
            "%.2f (%.2f-%.2f)" % (_median(thr), C.percentile(thr, 10), C.percentile(thr, 90))))
    lines.append("")
    for ours, bare in (("ovz-ct-host", "bare-pair"), ("ovz-ct-ct", "bare-routed"), ("ovz-ct-ct", "bare-pair")):
        if ours not in out["results"] or bare not in out["results"]:
            continue
        lat = out["results"][ours]["latency_us"]["median"] / out["results"][bare]["latency_us"]["median"]
        thr = out["results"][ours]["throughput_gbit"]["median"] / out["results"][bare]["throughput_gbit"]["median"]
        key = "%s_vs_%s" % (ours, bare)
        out["goals"][key] = {"latency_ratio": round(lat, 3), "throughput_ratio": round(thr, 3),
                             "met": lat <= 1.05 and thr >= 0.95}
        lines.append("%-26s latency x%.3f  throughput x%.3f  %s" % (
            ours + " vs " + bare, lat, thr, "met (<=5% slower)" if out["goals"][key]["met"] else "NOT met"))
    print("\n".join(lines), flush=True)
    return out


if __name__ == "__main__":
    sys.exit(main())
