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
import sys
import time

import pytest

from support import COLLECTIONS_ROOT
from support.node import Node, sh
from support import netlab
from support.netlab import (
    A4, A6, B4, B6, HOST4, HOST6, OUT4, OUT6, assert_nothing_left, net_snapshot, node_snapshot, run, run_module_in, socket_in)
from support.netlab import bridged_lab, routed_lab  # noqa: F401 - fixtures  pylint: disable=unused-import

from ansible_collections.ovz.containers.plugins.module_utils._engine.resources import network as net


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

def test_routed_no_snooping_and_no_spoofing(routed_lab):
    netlab.routed_no_snooping_and_no_spoofing(routed_lab)


def test_bridged_no_snooping_no_spoofing_no_forged_mac(bridged_lab):
    netlab.bridged_no_snooping_no_spoofing_no_forged_mac(bridged_lab)


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
