# -*- coding: utf-8 -*-
"""Network labs on the real kernel: the "host" of a test is a network namespace the test makes.

The module runs in it (``nsenter --net``), and the engine's start/stop run in a thread that entered
it (``in_ns``). A second namespace is the host's network: a third party behind an uplink
(``routed_lab``) or on a bridge in hub mode (``bridged_lab``). Addresses come only from
10.213.0.0/16 and fd00:213::/64. Everything is removed in the fixtures' ``finally``, on failure too.

Also here: raw frames and captures, snapshots of a node's network, and the two proofs that a
container neither snoops nor spoofs (run by the network tests and by the escape tests' attacks).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading

import pytest

from . import COLLECTIONS_ROOT
from .node import MODULES_DIR, sh

from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel import dad
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel import namespaces as ns
from ansible_collections.ovz.containers.plugins.module_utils._engine.resources import network as net


ETH_P_ALL = 0x0003


UDP_PORT = 9999


A4 = ["10.213.1.10", "10.213.2.10"]           # 10.213.1.x: on the uplink's prefix (proxy ARP); 10.213.2.x: routed


A6 = ["fd00:213::a:10", "fd00:213::a:11"]


B4 = ["10.213.1.11", "10.213.2.11"]


B6 = ["fd00:213::b:10", "fd00:213::b:11"]


HOST4, HOST6 = "10.213.1.1", "fd00:213::1"


OUT4, OUT6 = "10.213.1.254", "fd00:213::fe"


def run(argv, check=True, timeout=60, input=None):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=timeout, check=False, input=input)
    if check and proc.returncode != 0:
        raise AssertionError("%s exited %d: %s %s" % (argv, proc.returncode, proc.stdout, proc.stderr))
    return proc


def in_ns(path, fn, *args, **kwargs):
    """Call ``fn`` in a thread that entered the network namespace at ``path``."""
    box = {}

    def target():
        fd = os.open(path, os.O_RDONLY)
        try:
            ns.setns(fd, ns.CLONE_NEWNET)
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


def socket_in(path, *args):
    """A socket that belongs to the network namespace at ``path`` (usable from any thread)."""
    return in_ns(path, socket.socket, *args)


class Netns:
    def __init__(self, name):
        self.name = name
        self.path = "/run/netns/" + name
        run(["ip", "netns", "add", name])
        self.ip("link", "set", "lo", "up")
        # Addresses usable at once, and snapshots free of "tentative" flags.
        self.sysctl("net.ipv6.conf.default.accept_dad", 0)

    def ip(self, *args, check=True):
        return run(["ip", "-n", self.name] + list(args), check=check).stdout

    def run(self, argv, check=True, timeout=60, input=None):
        return run(["nsenter", "--net=" + self.path] + list(argv), check=check, timeout=timeout, input=input)

    def sysctl(self, key, value):
        self.run(["sysctl", "-qw", "%s=%s" % (key, value)])

    def ping(self, address, wait=2):
        return self.run(["busybox", "ping", "-c1", "-W%d" % wait, address], check=False).returncode == 0

    def mac(self, ifname):
        return json.loads(self.ip("-j", "link", "show", "dev", ifname))[0]["address"]

    def delete(self):
        run(["ip", "netns", "del", self.name], check=False)


def python_env(interpreter):
    """PYTHONPATH for a module run: the collection, and for the system Python only Ansible's package."""
    paths = [COLLECTIONS_ROOT]
    if interpreter != sys.executable:
        import ansible
        shim = os.path.join(COLLECTIONS_ROOT, "..", "system-python-ansible")
        os.makedirs(shim, exist_ok=True)
        link = os.path.join(shim, "ansible")
        if not os.path.islink(link):
            os.symlink(os.path.dirname(ansible.__file__), link)
        paths.append(shim)
    return dict(os.environ, PYTHONPATH=":".join(paths))


def run_module_in(netns, module, args, check=False, diff=False, interpreter=None):
    """support.node.run_module, with the module in the test host's network namespace."""
    interpreter = interpreter or sys.executable
    payload = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="ovz-args-", delete=False) as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": payload}, handle)
        args_file = handle.name
    try:
        proc = subprocess.run(["nsenter", "--net=" + netns.path, interpreter,
                               os.path.join(MODULES_DIR, module + ".py"), args_file],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                              env=python_env(interpreter), timeout=300, check=False)
    finally:
        os.unlink(args_file)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise AssertionError("module %s printed no JSON (rc %d): %s %s"
                             % (module, proc.returncode, proc.stdout, proc.stderr)) from None


class Lab:
    """A node whose containers' host is the namespace ``host``; ``outside`` is the network beyond."""

    def __init__(self, node, template, host, outside):
        self.node = node
        self.manager = node.manager
        self.template = template
        self.host = host
        self.outside = outside

    def args(self, name, **extra):
        base = {"name": name, "data_dir": self.node.data_dir, "cgroup_parent": self.node.cgroup_parent}
        base.update(extra)
        return base

    def network(self, name, check=False, diff=False, interpreter=None, **settings):
        return run_module_in(self.host, "ovz_network", self.args(name, **settings), check=check, diff=diff,
                             interpreter=interpreter)

    def create(self, **settings):
        name = self.node.name()
        self.manager.create(name, self.template, layout="directory")
        if settings:
            result = self.network(name, **settings)
            assert not result.get("failed") and result["changed"], result
        return name

    def start(self, name):
        in_ns(self.host.path, self.manager.start, name, wait_boot=True, timeout=20)
        return self.pid(name)

    def stop(self, name):
        in_ns(self.host.path, self.manager.stop, name, timeout=5)

    def destroy(self, name):
        in_ns(self.host.path, self.manager.destroy, name)

    def pid(self, name):
        return self.manager.runtime(name).init_pid

    def runtime(self, name):
        return net.load_runtime(net.runtime_path(self.manager.layout.run(name)))

    def inside(self, name, argv, check=True):
        """A host binary (ip, nft) run in the container's network namespace: the container's view."""
        return run(["nsenter", "--net=/proc/%d/ns/net" % self.pid(name)] + list(argv), check=check)

    def ping_from(self, name, address, wait=2, tries=3):
        """Whether ``address`` answers from inside ``name``: a few tries, since on a loaded machine the
        first packet after a start may go before the neighbour entry is there (every caller expects a yes)."""
        return any(self.manager.exec(name, ["ping", "-c1", "-W%d" % wait, address], timeout=30).rc == 0
                   for _attempt in range(tries))

    def cleanup(self):
        for name in self.manager.layout.names():
            try:
                self.destroy(name)
            except Exception as exc:  # noqa: BLE001 - clean as much as possible
                print("destroying %s failed: %s" % (name, exc), file=sys.stderr)


@pytest.fixture
def routed_lab(node, busybox_template):
    tag = node.tag
    made = []
    lab = None
    try:
        host = Netns("ovz-th" + tag)
        made.append(host)
        outside = Netns("ovz-tx" + tag)
        made.append(outside)
        host.sysctl("net.ipv4.ip_forward", 1)
        host.sysctl("net.ipv6.conf.all.forwarding", 1)
        uplink, far = "ovzup" + tag, "ovzx" + tag
        host.ip("link", "add", uplink, "type", "veth", "peer", "name", far, "netns", outside.name)
        host.sysctl("net.ipv6.conf.%s.proxy_ndp" % uplink, 1)
        host.ip("addr", "add", HOST4 + "/24", "dev", uplink)
        host.ip("addr", "add", HOST6 + "/64", "dev", uplink, "nodad")
        host.ip("link", "set", uplink, "up")
        outside.ip("addr", "add", OUT4 + "/24", "dev", far)
        outside.ip("addr", "add", OUT6 + "/64", "dev", far, "nodad")
        outside.ip("link", "set", far, "up")
        outside.ip("route", "add", "10.213.2.0/24", "via", HOST4)
        lab = Lab(node, busybox_template, host, outside)
        lab.uplink = uplink
        yield lab
    finally:
        if lab is not None:
            lab.cleanup()
        for netns in reversed(made):
            netns.delete()


@pytest.fixture
def bridged_lab(node, busybox_template):
    """A bridge in hub mode (ageing 0: every unicast frame is flooded to every port),
    a third party on it, and a plain, unfiltered sniffer port that proves the flooding."""
    tag = node.tag
    made = []
    lab = None
    try:
        host = Netns("ovz-th" + tag)
        made.append(host)
        outside = Netns("ovz-tx" + tag)
        made.append(outside)
        sniffer = Netns("ovz-ts" + tag)
        made.append(sniffer)
        bridge = "ovzbr" + tag
        host.ip("link", "add", bridge, "type", "bridge", "ageing_time", "0")
        host.ip("addr", "add", "10.213.3.1/24", "dev", bridge)
        host.ip("addr", "add", HOST6 + "/64", "dev", bridge, "nodad")
        host.ip("link", "set", bridge, "up")
        for port, peer, netns in (("ovzxb" + tag, "ovzx" + tag, outside), ("ovzsn" + tag, "ovzs" + tag, sniffer)):
            host.ip("link", "add", port, "type", "veth", "peer", "name", peer, "netns", netns.name)
            host.ip("link", "set", port, "master", bridge, "up")
            netns.ip("link", "set", peer, "up")
        outside.ip("addr", "add", "10.213.3.254/24", "dev", "ovzx" + tag)
        outside.ip("addr", "add", OUT6 + "/64", "dev", "ovzx" + tag, "nodad")
        lab = Lab(node, busybox_template, host, outside)
        lab.bridge, lab.sniffer, lab.sniffer_if, lab.far = bridge, sniffer, "ovzs" + tag, "ovzx" + tag
        yield lab
    finally:
        if lab is not None:
            lab.cleanup()
        for netns in reversed(made):
            netns.delete()


def _mac(text):
    return bytes(int(x, 16) for x in text.split(":"))


def udp_frame(src_mac, dst_mac, src_ip, dst_ip, payload, sport=40000, dport=UDP_PORT):
    if ":" not in src_ip:
        src, dst = socket.inet_pton(socket.AF_INET, src_ip), socket.inet_pton(socket.AF_INET, dst_ip)
        udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, src, dst)
        head = head[:10] + struct.pack("!H", dad.internet_checksum(head)) + head[12:]
        return _mac(dst_mac) + _mac(src_mac) + b"\x08\x00" + head + udp
    src, dst = socket.inet_pton(socket.AF_INET6, src_ip), socket.inet_pton(socket.AF_INET6, dst_ip)
    length = 8 + len(payload)
    udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
    check = dad.internet_checksum(src + dst + struct.pack("!I3xB", length, 17) + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", check) + udp[8:]
    head = struct.pack("!IHBB16s16s", 6 << 28, length, 17, 64, src, dst)
    return _mac(dst_mac) + _mac(src_mac) + b"\x86\xdd" + head + udp


def arp_reply_frame(src_mac, dst_mac, sender_ip, target_ip):
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, _mac(src_mac), socket.inet_aton(sender_ip),
                       _mac(dst_mac), socket.inet_aton(target_ip))
    return _mac(dst_mac) + _mac(src_mac) + b"\x08\x06" + body


def na_frame(src_mac, dst_mac, src_ip, dst_ip, target):
    src, dst = socket.inet_pton(socket.AF_INET6, src_ip), socket.inet_pton(socket.AF_INET6, dst_ip)
    icmp = struct.pack("!BBHI16s", 136, 0, 0, 0x20000000, socket.inet_pton(socket.AF_INET6, target))
    icmp += b"\x02\x01" + _mac(src_mac)
    check = dad.internet_checksum(src + dst + struct.pack("!I3xB", len(icmp), 58) + icmp)
    icmp = icmp[:2] + struct.pack("!H", check) + icmp[4:]
    head = struct.pack("!IHBB16s16s", 6 << 28, len(icmp), 58, 255, src, dst)
    return _mac(dst_mac) + _mac(src_mac) + b"\x86\xdd" + head + icmp


def send_frames(nspath, ifname, frames):
    sock = socket_in(nspath, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.bind((ifname, 0))
        for frame in frames:
            sock.send(frame)
    finally:
        sock.close()


class Capture:
    """Every frame an AF_PACKET socket sees in a namespace (all its interfaces), like tcpdump -i any."""

    def __init__(self, nspath, ifname=None):
        self.sock = socket_in(nspath, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        if ifname:
            self.sock.bind((ifname, 0))
        self.sock.settimeout(0.3)

    def frames(self):
        found = []
        while True:
            try:
                found.append(self.sock.recv(65535))
            except socket.timeout:
                self.sock.close()
                return found


class TcpSink:
    """Accepts TCP connections on UDP_PORT in a namespace and keeps what they send (busybox nc has no -u)."""

    def __init__(self, netns):
        self.socks = []
        for family, address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            sock = socket_in(netns.path, family, socket.SOCK_STREAM)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, UDP_PORT))
            sock.listen(8)
            sock.settimeout(0.05)
            self.socks.append(sock)
        self.data = []
        self.done = False
        self.thread = threading.Thread(target=self._serve)
        self.thread.start()

    def _serve(self):
        while not self.done:
            for sock in self.socks:
                try:
                    conn, _peer = sock.accept()
                except socket.timeout:
                    continue
                conn.settimeout(2)
                try:
                    self.data.append(conn.recv(256))
                except OSError:
                    pass
                finally:
                    conn.close()

    def close(self):
        self.done = True
        self.thread.join()
        for sock in self.socks:
            sock.close()
        return self.data


def listeners(netns):
    socks = []
    for family, address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        sock = socket_in(netns.path, family, socket.SOCK_DGRAM)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, UDP_PORT))
        sock.settimeout(0.5)
        socks.append(sock)
    return socks


def received(socks):
    got = []
    for sock in socks:
        while True:
            try:
                got.append(sock.recv(2048))
            except socket.timeout:
                break
        sock.close()
    return got


def node_snapshot(node):
    """What support.snapshot.host_snapshot compares, restricted to this node (other runs change the machine's
    cgroups and mounts at the same time): files under data_dir, the node's cgroups, its mounts and loops."""
    snap = {"files": {}}
    for directory, dirs, names in os.walk(node.data_dir):
        dirs.sort()
        for entry in sorted(names) + [d + "/" for d in dirs]:
            path = os.path.join(directory, entry.rstrip("/"))
            rel = os.path.relpath(path, node.data_dir)
            if entry.endswith("/") or rel.endswith("lock"):
                snap["files"][rel] = "dir" if entry.endswith("/") else "lock"
                continue
            try:
                with open(path, "rb") as handle:
                    snap["files"][rel] = hash(handle.read())
            except OSError:
                snap["files"][rel] = "unreadable"
    backend = node.manager.backend
    cgroups = []
    for hierarchy, parent in backend.resolve_parent(node.cgroup_parent).items():
        top = os.path.join(backend.mountpoint(hierarchy), parent.lstrip("/"))
        cgroups += [d for d, _dirs, _files in os.walk(top)]
    snap["cgroups"] = sorted(cgroups)
    with open("/proc/self/mountinfo") as handle:
        snap["mounts"] = sorted(line.split()[4] for line in handle if node.data_dir in line or node.tag in line)
    loops = run(["losetup", "-a"]).stdout.splitlines()
    snap["loops"] = sorted(line for line in loops if node.data_dir in line)
    return snap


def packed(address):
    return socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)


def net_snapshot(lab, names=()):
    """The host namespace's network, the machine's own nft rules, and the containers' own view."""
    snap = {
        "links": sorted(line.split(":")[1].split("@")[0].strip() for line in lab.host.ip("-o", "link").splitlines()),
        "addrs": lab.host.ip("-o", "addr"),
        "routes4": lab.host.ip("route"),
        "routes6": lab.host.ip("-6", "route"),
        "proxy": lab.host.ip("neigh", "show", "proxy") + lab.host.ip("-6", "neigh", "show", "proxy"),
        "nft": lab.host.run(["nft", "list", "ruleset"]).stdout,
        "machine_nft": run(["nft", "list", "ruleset"]).stdout,
        # The lab's own namespaces: other test runs on this host add and remove theirs meanwhile.
        "netns": sorted(n for n in os.listdir("/run/netns") if lab.node.tag in n),
    }
    for name in names:
        if lab.manager.status(name) == "running":
            snap["in-" + name] = (lab.inside(name, ["ip", "-o", "addr"]).stdout
                                  + lab.inside(name, ["ip", "route"]).stdout
                                  + lab.inside(name, ["ip", "-6", "route"]).stdout)
    return snap


def assert_nothing_left(lab, name, addresses):
    """No veth, route, proxy entry, nft element or netns name of the container on the host."""
    links = [line.split(":")[1].split("@")[0].strip() for line in lab.host.ip("-o", "link").splitlines()]
    assert [n for n in links if n.startswith("ovz") and n[3:5] not in ("up", "br", "xb", "sn")] == [], links
    routes = lab.host.ip("route") + lab.host.ip("-6", "route")
    for address in addresses:
        assert address.split("/")[0] + " " not in routes, routes
    assert lab.host.ip("neigh", "show", "proxy").strip() == "" and lab.host.ip("-6", "neigh", "show", "proxy").strip() == ""
    assert "netdev ovz" not in lab.host.run(["nft", "list", "tables"]).stdout
    netns = net.netns_path(name, lab.manager.layout.node_id())
    assert not os.path.exists(netns)
    with open("/proc/self/mountinfo") as handle:
        assert netns not in handle.read()


def _b_talks_to_the_third_party(lab, b, b_addresses, third4, third6):
    sink = TcpSink(lab.outside)
    try:
        for address in (third4, third6):
            assert lab.ping_from(b, address)
            sh(lab.manager, b, "echo OVZ-B-SECRET | nc -w 2 %s %d" % (address, UDP_PORT))
        for address in b_addresses:
            assert lab.outside.ping(address)
    finally:
        got = sink.close()
    assert got == [b"OVZ-B-SECRET\n"] * 2, got


def _assert_sees_nothing_of(frames, b_addresses, b_mac):
    secrets = [f for f in frames if b"OVZ-B-SECRET" in f]
    assert secrets == [], "the capture saw B's payload"
    for address in b_addresses:
        raw = packed(address.split("/")[0])
        assert [f for f in frames if raw in f] == [], "the capture saw traffic of %s" % address
    # Link-wide multicast of B (its MLD reports to ff02::16) is not traffic with a third party;
    # unicast, broadcast and solicited-node multicast are.
    private = [f for f in frames if _mac(b_mac) in f[:12] and (not f[0] & 1 or f[:6] == b"\xff" * 6
                                                               or f[:3] == b"\x33\x33\xff")]
    assert private == [], "the capture saw frames of B's MAC"


def routed_no_snooping_and_no_spoofing(routed_lab):
    """A routed container neither sees another's traffic nor sends with another's (or any foreign) address."""
    lab = routed_lab
    a = lab.create(ip_address=A4 + A6)
    b = lab.create(ip_address=B4 + B6)
    lab.start(a)
    lab.start(b)
    a_pid = lab.pid(a)
    a_ns = "/proc/%d/ns/net" % a_pid
    # Snooping: A captures on all its interfaces while B talks to the third party.
    capture = Capture(a_ns)
    _b_talks_to_the_third_party(lab, b, B4 + B6, OUT4, OUT6)
    assert lab.host.ping(A4[0])   # a control: the capture works
    frames = capture.frames()
    assert [f for f in frames if packed(A4[0]) in f], "the capture saw nothing at all"
    _assert_sees_nothing_of(frames, B4 + B6, lab.manager.load(b).network["mac"])

    # Spoofing: nothing but nft stands in the way (rp_filter is off in the test host).
    host_end = lab.runtime(a)["host_ifname"]
    for key in ("all", host_end):
        assert lab.host.run(["sysctl", "-n", "net.ipv4.conf.%s.rp_filter" % key]).stdout.strip() == "0"
    a_mac = lab.manager.load(a).network["mac"]
    gw_mac = lab.host.mac(host_end)
    socks = listeners(lab.outside)
    frames = [udp_frame(a_mac, gw_mac, A4[0], OUT4, b"LEGIT-4"),
              udp_frame(a_mac, gw_mac, A6[0], OUT6, b"LEGIT-6"),
              udp_frame(a_mac, gw_mac, B4[0], OUT4, b"SPOOF-B4"),
              udp_frame(a_mac, gw_mac, B6[0], OUT6, b"SPOOF-B6"),
              udp_frame(a_mac, gw_mac, "10.213.9.9", OUT4, b"SPOOF-X4"),
              udp_frame(a_mac, gw_mac, "fd00:213::99", OUT6, b"SPOOF-X6")]
    send_frames(a_ns, "eth0", frames)
    got = received(socks)
    assert sorted(got) == [b"LEGIT-4", b"LEGIT-6"], got
    # A's root can add B's address inside A; packets from it still go nowhere.
    sh(lab.manager, a, "ip addr add %s/32 dev eth0" % B4[1])
    seen = Capture(lab.outside.path)
    assert sh(lab.manager, a, "ping -c1 -W1 -I %s %s" % (B4[1], OUT4), check=False).rc != 0
    assert [f for f in seen.frames() if packed(B4[1]) in f] == []
    assert lab.ping_from(b, OUT4) and lab.ping_from(a, OUT4)   # A's own address still works


def bridged_no_snooping_no_spoofing_no_forged_mac(bridged_lab):
    """A bridged container neither sees another's unicast traffic, nor spoofs addresses, nor forges its MAC."""
    lab = bridged_lab
    a4, a6, b4, b6 = ["10.213.3.10/24"], ["fd00:213::3:10/64"], ["10.213.3.11/24"], ["fd00:213::3:11/64"]
    common = dict(netif_mode="bridged", bridge=lab.bridge)
    a = lab.create(ip_address=a4 + a6, **common)
    b = lab.create(ip_address=b4 + b6, **common)
    lab.start(a)
    lab.start(b)
    for src, dst in ((a, "10.213.3.11"), (a, "fd00:213::3:11"), (b, "10.213.3.10"), (b, "fd00:213::3:10"),
                     (a, "10.213.3.1"), (b, HOST6), (a, "10.213.3.254"), (b, OUT6)):
        assert lab.ping_from(src, dst), "%s cannot reach %s" % (src, dst)
    a_ns = "/proc/%d/ns/net" % lab.pid(a)
    b_mac = lab.manager.load(b).network["mac"]
    # Snooping: the bridge floods every frame (hub mode); the plain sniffer port sees B's
    # traffic, A sees none of it.
    capture = Capture(a_ns)
    control = Capture(lab.sniffer.path)
    lab.host.ip("neigh", "flush", "all")
    lab.outside.ip("neigh", "flush", "all")
    _b_talks_to_the_third_party(lab, b, ["10.213.3.11", "fd00:213::3:11"], "10.213.3.254", OUT6)
    assert lab.host.ping("10.213.3.10")
    frames = capture.frames()
    flooded = control.frames()
    assert [f for f in flooded if b"OVZ-B-SECRET" in f], "the control port saw no flooded traffic of B"
    assert [f for f in frames if packed("10.213.3.10") in f], "the capture saw nothing at all"
    _assert_sees_nothing_of(frames, ["10.213.3.11", "fd00:213::3:11"], b_mac)

    # Spoofing: forged source IPs and MACs, a forged ARP reply and neighbour advertisement.
    a_mac = lab.manager.load(a).network["mac"]
    out_mac = lab.outside.mac(lab.far)
    forged = "0e:de:ad:be:ef:01"
    socks = listeners(lab.outside)
    seen = Capture(lab.outside.path)
    send_frames(a_ns, "eth0", [
        udp_frame(a_mac, out_mac, "10.213.3.10", "10.213.3.254", b"LEGIT-4"),
        udp_frame(a_mac, out_mac, "fd00:213::3:10", OUT6, b"LEGIT-6"),
        udp_frame(forged, out_mac, "10.213.3.10", "10.213.3.254", b"FORGED-MAC-4"),
        udp_frame(forged, out_mac, "fd00:213::3:10", OUT6, b"FORGED-MAC-6"),
        udp_frame(a_mac, out_mac, "10.213.3.11", "10.213.3.254", b"SPOOF-B4"),
        udp_frame(a_mac, out_mac, "fd00:213::3:11", OUT6, b"SPOOF-B6"),
        udp_frame(a_mac, out_mac, "10.213.3.99", "10.213.3.254", b"SPOOF-X4"),
        arp_reply_frame(a_mac, out_mac, "10.213.3.11", "10.213.3.254"),
        na_frame(a_mac, out_mac, net.eui64_link_local(a_mac), OUT6, "fd00:213::3:11"),
    ])
    got = received(socks)
    assert sorted(got) == [b"LEGIT-4", b"LEGIT-6"], got
    frames = seen.frames()
    # A forged claim: A's MAC as the sender of B's address (ARP sender fields; NA target). The bridge
    # floods, so A's and B's genuine replies about their own addresses are seen here too.
    poison4 = [f for f in frames if f[12:14] == b"\x08\x06" and f[22:28] == _mac(a_mac) and f[28:32] == packed("10.213.3.11")]
    poison6 = [f for f in frames if f[12:14] == b"\x86\xdd" and f[20] == 58 and f[54] == 136
               and f[6:12] == _mac(a_mac) and f[62:78] == packed("fd00:213::3:11")]
    assert poison4 == [] and poison6 == [], "a forged ARP reply or neighbour advertisement got through"
    neighbours = lab.outside.ip("neigh") + lab.outside.ip("-6", "neigh")
    assert a_mac not in [line.split()[4] for line in neighbours.splitlines()
                         if line.startswith(("10.213.3.11 ", "fd00:213::3:11 ")) and "lladdr" in line]
