# -*- coding: utf-8 -*-
"""ovz_network on the real kernel (issue 4).

The "host" of every test is a network namespace the test makes (``ovz-th<tag>``):
the module runs in it (``nsenter --net``), and the engine's start/stop run in a
thread that entered it. A second namespace (``ovz-tx<tag>``) is the host's
network: a third party behind an uplink (``ovzup<tag>``) or on the bridge
(``ovzbr<tag>``). Addresses come only from 10.213.0.0/16 and fd00:213::/64.
Everything is removed in the fixtures' ``finally``, on failure too.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from conftest import COLLECTIONS_ROOT, MODULES_DIR, Node, sh

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


# ---------------------------------------------------------------------------------------
# namespaces, sockets and modules in them
# ---------------------------------------------------------------------------------------

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
    """conftest.run_module, with the module in the test host's network namespace."""
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


# ---------------------------------------------------------------------------------------
# frames, captures, snapshots
# ---------------------------------------------------------------------------------------

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
    """What conftest.host_snapshot compares, restricted to this node (other runs change the machine's
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


# ---------------------------------------------------------------------------------------
# acceptance: reachability, live changes, idempotence
# ---------------------------------------------------------------------------------------

def test_routed_reachability_by_every_address_and_live_changes(routed_lab):
    lab = routed_lab
    # A is configured while stopped (applied at start), B while running (applied live).
    a = lab.create(ip_address=A4 + A6, nameserver=["10.213.1.1"], searchdomain=["ovz.test"])
    lab.start(a)
    b = lab.create()
    lab.start(b)
    result = lab.network(b, ip_address=B4 + B6)
    assert result["changed"] and not result.get("failed"), result
    assert sorted(result["network"]["ip_address"]) == sorted(B4 + B6)
    assert lab.network(b, ip_address=B6 + B4)["changed"] is False   # the list is a set
    assert sh(lab.manager, a, "cat /etc/resolv.conf").stdout.decode().splitlines()[1:] == [
        "search ovz.test", "nameserver 10.213.1.1"]
    assert lab.manager.facts(a)["ip_address"] == A4 + A6
    # Each container, the test host and the network beyond reach each other by every address.
    for src, targets in ((a, B4 + B6), (b, A4 + A6)):
        for address in targets + [HOST4, HOST6, OUT4, OUT6]:
            assert lab.ping_from(src, address), "%s cannot reach %s" % (src, address)
    for address in A4 + A6 + B4 + B6:
        assert lab.host.ping(address), "the host cannot reach %s" % address
        assert lab.outside.ping(address), "the host's network cannot reach %s" % address
    # Proxy ARP/NDP only where the uplink's prefix covers the address (10.213.1.x and the /64).
    proxy = lab.host.ip("neigh", "show", "proxy") + lab.host.ip("-6", "neigh", "show", "proxy")
    for address in ("10.213.1.10", "10.213.1.11") + tuple(A6 + B6):
        assert "%s dev %s proxy" % (address, lab.uplink) in proxy, proxy
    assert "10.213.2.10 " not in proxy
    # The named netns is there for operators.
    netns = os.path.basename(net.netns_path(a, lab.manager.layout.node_id()))
    assert "10.213.1.10/32" in run(["ip", "netns", "exec", netns, "ip", "-o", "addr"]).stdout

    # Live: add one address, remove another; no restart; the second run changes nothing.
    pid = lab.pid(a)
    new = A4[:1] + ["10.213.1.12"] + A6
    first = lab.network(a, ip_address=new, diff=True)
    assert first["changed"] is True and not first.get("failed"), first
    assert sorted(first["diff"]["before"]["ip_address"]) == sorted(A4 + A6)
    assert sorted(first["diff"]["after"]["ip_address"]) == sorted(new)
    assert lab.network(a, ip_address=new)["changed"] is False
    assert lab.pid(a) == pid and lab.manager.status(a) == "running"
    assert lab.outside.ping("10.213.1.12") and lab.ping_from(b, "10.213.1.12")
    assert not lab.outside.ping("10.213.2.10", wait=1) and not lab.host.ping("10.213.2.10", wait=1)
    assert "10.213.2.10" not in lab.inside(a, ["ip", "-o", "addr"]).stdout
    assert "10.213.2.10 " not in lab.host.ip("route")
    assert "10.213.1.12 dev %s proxy" % lab.uplink in lab.host.ip("neigh", "show", "proxy")
    # The stored settings hold after a restart.
    lab.stop(a)
    lab.start(a)
    assert sorted(lab.manager.facts(a)["ip_address"]) == sorted(new)
    assert lab.outside.ping("10.213.1.12") and lab.ping_from(a, B6[0])


def test_check_and_diff_mode_report_exactly_and_change_nothing(routed_lab):
    lab = routed_lab
    a = lab.create(ip_address=A4[:1])
    stopped_before = node_snapshot(lab.node)
    checked = lab.network(a, check=True, diff=True, ip_address=A4, mtu=1400)
    assert checked["changed"] is True and not checked.get("failed"), checked
    before, after = checked["diff"]["before"], checked["diff"]["after"]
    assert before["ip_address"] == A4[:1] and after["ip_address"] == A4
    assert (before["mtu"], after["mtu"]) == (None, 1400)
    assert {k for k in before if before[k] != after[k]} == {"ip_address", "mtu"}
    assert node_snapshot(lab.node) == stopped_before
    lab.start(a)
    snap = net_snapshot(lab, [a])
    files = node_snapshot(lab.node)
    route = {"dst": "10.213.50.0/24", "mtu": 1300}
    checked = lab.network(a, check=True, diff=True, ip_address=A4 + A6[:1], routes=[route])
    assert checked["changed"] is True
    assert checked["diff"]["before"]["ip_address"] == A4[:1] and checked["diff"]["after"]["ip_address"] == A4 + A6[:1]
    assert checked["diff"]["after"]["routes"] == [{"dst": "10.213.50.0/24", "via": None, "mtu": 1300, "src": None,
                                                   "metric": None}]
    assert net_snapshot(lab, [a]) == snap and node_snapshot(lab.node) == files
    done = lab.network(a, diff=True, ip_address=A4 + A6[:1], routes=[route])
    assert done["changed"] is True and done["diff"] == checked["diff"]
    again = lab.network(a, check=True, diff=True, ip_address=A4 + A6[:1])
    assert again["changed"] is False and again["diff"]["before"] == again["diff"]["after"]
    # state=absent removes the interface live; check mode first.
    snap = net_snapshot(lab, [a])
    assert lab.network(a, check=True, state="absent")["changed"] is True
    assert net_snapshot(lab, [a]) == snap
    gone = lab.network(a, state="absent", diff=True)
    assert gone["changed"] is True and gone["diff"]["after"] == {}
    assert "eth0" not in lab.inside(a, ["ip", "-o", "link"]).stdout
    assert_nothing_left(lab, a, A4 + A6)
    assert lab.network(a, state="absent")["changed"] is False


# ---------------------------------------------------------------------------------------
# acceptance: no snooping, no spoofing
# ---------------------------------------------------------------------------------------

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


def test_routed_no_snooping_and_no_spoofing(routed_lab):
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


def test_bridged_no_snooping_no_spoofing_no_forged_mac(bridged_lab):
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


# ---------------------------------------------------------------------------------------
# acceptance: firewall and routing inside
# ---------------------------------------------------------------------------------------

def _connects(lab, address, port):
    sock = socket_in(lab.host.path, socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(1.5)
    try:
        sock.connect((address, port))
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        return sock.recv(64).startswith(b"HTTP/")
    except OSError:
        return False
    finally:
        sock.close()


def test_firewall_inside_a_blocks_its_port_only(routed_lab):
    lab = routed_lab
    a = lab.create(ip_address=A4 + A6)
    b = lab.create(ip_address=B4 + B6)
    for name in (a, b):
        lab.start(name)
        sh(lab.manager, name, "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && "
                              "httpd -p 8080 -h /tmp/www && httpd -p 8081 -h /tmp/www")
    for address in (A4[0], A6[0], B4[0], B6[0]):
        assert _connects(lab, address, 8080) and _connects(lab, address, 8081)
    host_rules = lab.host.run(["nft", "list", "ruleset"]).stdout
    machine_rules = run(["nft", "list", "ruleset"]).stdout
    # A rule set inside A: the host's nft binary in A's network namespace.
    run(["nsenter", "--net=/proc/%d/ns/net" % lab.pid(a), "nft", "-f", "-"],
        input="table inet ovzfw {\n chain input {\n  type filter hook input priority 0; policy accept;\n"
              "  tcp dport 8080 drop\n }\n}\n")
    assert "dport 8080 drop" in lab.inside(a, ["nft", "list", "ruleset"]).stdout
    for address in (A4[0], A4[1], A6[0]):
        assert not _connects(lab, address, 8080), "A's 8080 still answers on %s" % address
        assert _connects(lab, address, 8081)
    for address in (B4[0], B6[0]):
        assert _connects(lab, address, 8080)
    get = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 %s %d"
    assert b"ok" not in sh(lab.manager, b, get % (A4[0], 8080), check=False).stdout
    assert sh(lab.manager, a, get % (B4[0], 8080)).stdout.endswith(b"ok\n")
    assert sh(lab.manager, b, get % (A4[0], 8081)).stdout.endswith(b"ok\n")
    assert lab.host.run(["nft", "list", "ruleset"]).stdout == host_rules
    assert run(["nft", "list", "ruleset"]).stdout == machine_rules
    assert "ovzfw" not in lab.host.run(["nft", "list", "tables"]).stdout


def test_routes_inside_with_mtu_and_src(routed_lab):
    lab = routed_lab
    routes = [{"dst": "10.213.50.0/24", "mtu": 1300, "src": A4[0]},
              {"dst": "10.213.60.0/24", "mtu": 1200, "src": A4[1], "metric": 7},
              {"dst": "fd00:213::5:0/112", "mtu": 1400, "src": A6[1]}]
    a = lab.create(ip_address=A4 + A6, routes=routes)
    lab.start(a)

    def route_get(dst):
        return lab.inside(a, ["ip", "route", "get", dst]).stdout

    first, second, third = route_get("10.213.50.1"), route_get("10.213.60.1"), route_get("fd00:213::5:1")
    assert "src %s" % A4[0] in first and "mtu 1300" in first, first
    assert "src %s" % A4[1] in second and "mtu 1200" in second, second
    assert "src %s" % A6[1] in third and "mtu 1400" in third, third
    assert "mtu" not in route_get(OUT4)
    # Inside, with the container's own tools.
    assert "src %s" % A4[0] in sh(lab.manager, a, "ip route get 10.213.50.1").stdout.decode()
    # Changed live, then not changed.
    routes[0]["mtu"] = 1350
    assert lab.network(a, ip_address=A4 + A6, routes=routes)["changed"] is True
    assert "mtu 1350" in route_get("10.213.50.1")
    assert lab.network(a, routes=routes)["changed"] is False
    assert lab.network(a, routes=routes[1:])["changed"] is True
    assert "mtu" not in route_get("10.213.50.1")


# ---------------------------------------------------------------------------------------
# acceptance: bad input fails naming the parameter, nothing changes
# ---------------------------------------------------------------------------------------

BAD_INPUTS = [
    ("invalid v4", dict(ip_address=["10.213.1.300"]), "ip_address"),
    ("invalid v6", dict(ip_address=["fd00:213::zz"]), "ip_address"),
    ("multicast", dict(ip_address=["224.0.0.5"]), "ip_address"),
    ("loopback", dict(ip_address=["127.0.0.2"]), "ip_address"),
    ("link-local", dict(ip_address=["169.254.0.1"]), "ip_address"),
    ("prefix in routed mode", dict(ip_address=["10.213.1.20/24"]), "ip_address"),
    ("conflicting prefixes", dict(netif_mode="bridged", bridge="@bridge",
                                  ip_address=["10.213.1.20/24", "10.213.1.20/25"]), "ip_address"),
    ("the host's own address", dict(ip_address=[HOST4]), "ip_address"),
    ("missing bridge", dict(netif_mode="bridged", bridge="ovznobridge", ip_address=["10.213.1.20/24"]), "bridge"),
    ("no bridge", dict(netif_mode="bridged", ip_address=["10.213.1.20/24"]), "bridge"),
    ("not a bridge", dict(netif_mode="bridged", bridge="lo", ip_address=["10.213.1.20/24"]), "bridge"),
    ("mtu too small", dict(mtu=67), "mtu"),
    ("mtu too large", dict(mtu=70000), "mtu"),
    ("mtu below IPv6's", dict(mtu=1000, ip_address=["fd00:213::20"]), "mtu"),
    ("route src not own", dict(routes=[{"dst": "10.213.50.0/24", "src": "10.213.1.99"}]), "routes"),
    ("route bad dst", dict(routes=[{"dst": "10.213.50.1/24"}]), "routes"),
    ("route mixed families", dict(routes=[{"dst": "10.213.50.0/24", "via": "fd00:213::1"}]), "routes"),
    ("route mtu", dict(routes=[{"dst": "fd00:213::5:0/112", "mtu": 1000}]), "routes"),
    ("multicast mac", dict(mac="01:00:5e:00:00:01"), "mac"),
    ("bad mac", dict(mac="zz:00"), "mac"),
    ("host_ifname without ovz", dict(host_ifname="veth101"), "host_ifname"),
    ("host_ifname too long", dict(host_ifname="ovz" + "x" * 13), "host_ifname"),
    ("host_ifname taken", dict(host_ifname="@uplink"), "host_ifname"),
    ("bad ifname", dict(ifname="eth/0"), "ifname"),
    ("mac_filter off in routed", dict(mac_filter=False), "mac_filter"),
    ("bad nameserver", dict(nameserver=["ns1"]), "nameserver"),
    ("bad searchdomain", dict(searchdomain=["bad domain"]), "searchdomain"),
    ("no such container", dict(name="ovznosuch"), "name"),
]


@pytest.mark.slow
@pytest.mark.parametrize("running", [True, False], ids=["running", "stopped"])
def test_bad_input_fails_naming_parameter_and_changes_nothing(routed_lab, running):
    lab = routed_lab
    a = lab.create(ip_address=A4[:1] + A6[:1])
    b = lab.create(ip_address=B4[:1])
    lab.host.ip("link", "add", "ovzbr" + lab.node.tag, "type", "bridge")
    if running:
        lab.start(a)
        lab.start(b)
    cases = BAD_INPUTS + [("another container's address", dict(ip_address=A4[:1] + B4[:1]), "ip_address")]
    before = (net_snapshot(lab, [a, b]), node_snapshot(lab.node))
    for label, override, param in cases:
        module_args = dict(override)
        if module_args.get("bridge") == "@bridge":
            module_args["bridge"] = "ovzbr" + lab.node.tag
        if module_args.get("host_ifname") == "@uplink":
            module_args["host_ifname"] = lab.uplink
        name = module_args.pop("name", a)
        result = lab.network(name, **module_args)
        assert result.get("failed") is True, (label, result)
        assert param in result["msg"], (label, result["msg"])
        if label == "another container's address":
            assert b in result["msg"], result["msg"]
        assert (net_snapshot(lab, [a, b]), node_snapshot(lab.node)) == before, label


def test_address_of_a_container_of_another_node_fails(routed_lab, session_dir):
    lab = routed_lab
    a = lab.create(ip_address=A4[:1])
    lab.start(a)
    tag = lab.node.tag[::-1]
    base = os.path.join(session_dir, "node-" + tag)
    os.makedirs(base)
    other = Node(base, tag)
    try:
        name = other.name()
        other.manager.create(name, lab.template, layout="directory")
        before = (net_snapshot(lab, [a]), node_snapshot(other))
        result = run_module_in(lab.host, "ovz_network", {"name": name, "data_dir": other.data_dir,
                                                         "cgroup_parent": other.cgroup_parent,
                                                         "ip_address": A4[:1]})
        assert result.get("failed") and "ip_address" in result["msg"] and A4[0] in result["msg"], result
        assert (net_snapshot(lab, [a]), node_snapshot(other)) == before
    finally:
        other.cleanup()
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# acceptance: nothing left after stop, crash and destroy
# ---------------------------------------------------------------------------------------

def test_nothing_left_after_stop_crash_and_destroy(routed_lab):
    lab = routed_lab
    a = lab.create(ip_address=A4 + A6, routes=[{"dst": "10.213.50.0/24", "mtu": 1300}])
    clean = net_snapshot(lab)
    lab.start(a)
    host_end = lab.runtime(a)["host_ifname"]
    assert host_end in lab.host.ip("-o", "link") and "netdev ovz" in lab.host.run(["nft", "list", "tables"]).stdout
    lab.stop(a)
    assert_nothing_left(lab, a, A4 + A6)
    assert net_snapshot(lab) == clean
    # A crash: the init is killed; the named netns still pins the veth pair until the cleanup.
    pid = lab.start(a)
    os.kill(pid, 9)
    deadline = time.monotonic() + 5
    while os.path.exists("/proc/%d" % pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert host_end in lab.host.ip("-o", "link")
    assert lab.manager.status(a) == "stopped"
    lab.stop(a)
    assert_nothing_left(lab, a, A4 + A6)
    lab.start(a)
    lab.destroy(a)
    assert_nothing_left(lab, a, A4 + A6)
    assert net_snapshot(lab) == clean


def test_bridged_nothing_left_after_stop_and_destroy(bridged_lab):
    lab = bridged_lab
    a = lab.create(ip_address=["10.213.3.10/24"], netif_mode="bridged", bridge=lab.bridge)
    clean = net_snapshot(lab)
    lab.start(a)
    host_end = lab.runtime(a)["host_ifname"]
    assert "master " + lab.bridge in lab.host.ip("-o", "link", "show", host_end)
    lab.stop(a)
    assert_nothing_left(lab, a, ["10.213.3.10"])
    assert net_snapshot(lab) == clean
    lab.start(a)
    lab.destroy(a)
    assert net_snapshot(lab) == clean


def test_system_python_with_debian_pyroute2(routed_lab):
    """The module as hosts run it: /usr/bin/python3 with Debian's python3-pyroute2 (0.7)."""
    if not os.path.exists("/usr/bin/python3") or run(["/usr/bin/python3", "-c", "import pyroute2"],
                                                     check=False).returncode != 0:
        pytest.skip("python3-pyroute2 is not installed")
    lab = routed_lab
    py = "/usr/bin/python3"
    a = lab.create()
    lab.start(a)
    first = lab.network(a, interpreter=py, ip_address=A4[:1] + A6[:1], nameserver=["10.213.1.1"])
    assert first["changed"] and not first.get("failed"), first
    assert lab.outside.ping(A4[0]) and lab.outside.ping(A6[0])
    second = lab.network(a, interpreter=py, ip_address=A4 + A6[:1], routes=[{"dst": "10.213.50.0/24", "mtu": 1300}])
    assert second["changed"] and lab.outside.ping(A4[1])
    assert "mtu 1300" in lab.inside(a, ["ip", "route", "get", "10.213.50.1"]).stdout
    assert lab.network(a, interpreter=py, ip_address=A4 + A6[:1])["changed"] is False
    assert lab.network(a, interpreter=py, state="absent")["changed"] is True
    assert_nothing_left(lab, a, A4 + A6)


ADDRESS_DUMP_CHECK = r"""
import json, subprocess
from pyroute2 import IPRoute
from ansible_collections.ovz.containers.plugins.module_utils._engine.resources import network as net
def sh(*argv):
    subprocess.run(argv, check=True)
sh("ip", "link", "set", "lo", "up")
for i in range(40):   # like host ends: many links, each with a gateway address
    sh("ip", "link", "add", "ovzdum%d" % i, "type", "veth", "peer", "name", "ovzdup%d" % i)
    sh("ip", "link", "set", "ovzdum%d" % i, "up")
    sh("ip", "addr", "add", "169.254.0.1/32", "dev", "ovzdum%d" % i)
    sh("ip", "addr", "add", "fe80::1/64", "dev", "ovzdum%d" % i, "nodad")
sh("ip", "addr", "add", "10.213.60.1/24", "dev", "ovzdum7")
sh("ip", "addr", "add", "10.213.61.1/28", "dev", "ovzdum7")
sh("ip", "addr", "add", "fd00:213::60:1/112", "dev", "ovzdum9", "nodad")
out = {}
with IPRoute() as ipr:
    for family in (net.AF_INET, net.AF_INET6):
        mine = sorted(net.interface_addresses(family))
        theirs = sorted((a["index"], a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(family=family))
        out[family] = [len(mine), mine == theirs]
    iface = __import__("ipaddress").ip_interface("10.213.60.9")
    out["proxy4"] = net._proxy_devices(ipr, iface, skip=())
    out["proxy6"] = net._proxy_devices(ipr, __import__("ipaddress").ip_interface("fd00:213::60:9"), skip=("ovzdum1",))
print(json.dumps(out))
"""


def test_address_dump_matches_pyroute2():
    """The raw address dump behind proxy ARP/NDP (fast with one host end per container) sees what pyroute2 sees."""
    proc = run(["env", "PYTHONPATH=" + COLLECTIONS_ROOT, "unshare", "--net", sys.executable, "-c", ADDRESS_DUMP_CHECK],
               timeout=120)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out[str(socket.AF_INET)] == [43, True] and out[str(socket.AF_INET6)][1] is True, out
    assert out[str(socket.AF_INET6)][0] >= 41, out
    assert out["proxy4"] == ["ovzdum7"] and out["proxy6"] == ["ovzdum9"], out
