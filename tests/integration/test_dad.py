# -*- coding: utf-8 -*-
"""Duplicate-address detection on the real kernel: an address a neighbour holds is not taken.

The labs of ``support/netlab.py``: the module runs in a namespace that is the test's host
(``ovz-th<tag>``); its uplink ``ovzup<tag>`` (routed mode) or bridge ``ovzbr<tag>`` (bridged
mode) leads to a second namespace, the neighbour (``ovz-tx<tag>``), which holds the addresses
that are taken. Never the machine's own uplink; addresses only from 10.213.0.0/16 and
fd00:213::/64.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess

import pytest

from support import REPO
from support.netlab import (  # noqa: F401  pylint: disable=unused-import
    A4, HOST4, HOST6, Capture, bridged_lab, net_snapshot, node_snapshot, routed_lab, run_module_in)

OVZCTL = os.path.join(REPO, "scripts", "ovzctl")
TAKEN4, TAKEN6 = "10.213.1.50", "fd00:213::a:50"     # on the uplink's prefixes: announced by proxy ARP/NDP there
FREE4, FREE6 = "10.213.1.51", "fd00:213::a:51"


def hold(netns, ifname, address, prefix):
    """The neighbour takes ``address``: its kernel answers probes for it from now on."""
    netns.ip("addr", "add", "%s/%d" % (address, prefix), "dev", ifname, *(["nodad"] if ":" in address else []))


def assert_refused(result, address, mac):
    assert result.get("failed") is True, result
    assert "ip_address" in result["msg"] and address in result["msg"] and mac in result["msg"], result["msg"]


def probes_in(frames):
    """ARP probes (sender 0.0.0.0) and neighbour solicitations from :: among captured frames."""
    found = []
    for frame in frames:
        kind = struct.unpack_from("!H", frame, 12)[0] if len(frame) >= 14 else None
        if kind == 0x0806 and len(frame) >= 42 and frame[28:32] == bytes(4):
            found.append(("arp", socket.inet_ntoa(frame[38:42])))
        elif kind == 0x86DD and len(frame) >= 78 and frame[20] == 58 and frame[54] == 135 and frame[22:38] == bytes(16):
            found.append(("ns", socket.inet_ntop(socket.AF_INET6, frame[62:78])))
    return found


def test_routed_refuses_what_a_neighbour_holds_and_takes_a_free_address(routed_lab):
    lab = routed_lab
    far = "ovzx" + lab.node.tag
    hold(lab.outside, far, TAKEN4, 24)
    hold(lab.outside, far, TAKEN6, 64)
    theirs = lab.outside.mac(far)
    a = lab.create(ip_address=A4[:1])
    lab.start(a)
    for running in (True, False):
        before = (net_snapshot(lab, [a]), node_snapshot(lab.node))
        for taken in (TAKEN4, TAKEN6):
            for check in (True, False):
                assert_refused(lab.network(a, check=check, ip_address=A4[:1] + [taken]), taken, theirs)
        # Several new addresses at once: the refusal names each one taken.
        result = lab.network(a, ip_address=A4[:1] + [FREE4, TAKEN4, TAKEN6])
        assert_refused(result, TAKEN4, theirs)
        assert TAKEN6 in result["msg"] and FREE4 not in result["msg"], result["msg"]
        assert (net_snapshot(lab, [a]), node_snapshot(lab.node)) == before, "a refusal changed the host"
        if running:
            result = lab.network(a, ip_address=A4[:1] + [FREE4, FREE6])
            assert result["changed"] is True and not result.get("failed"), result
            assert lab.outside.ping(FREE4) and lab.outside.ping(FREE6)
            assert lab.network(a, ip_address=A4[:1] + [FREE4, FREE6])["changed"] is False
            lab.stop(a)
    assert lab.manager.load(a).network["ip_address"] == A4[:1] + [FREE4, FREE6]


def test_the_hosts_own_addresses_are_refused(routed_lab):
    lab = routed_lab
    lab.host.ip("link", "add", "ovzdm" + lab.node.tag, "type", "veth", "peer", "name", "ovzdn" + lab.node.tag)
    lab.host.ip("addr", "add", "10.213.9.1/24", "dev", "ovzdm" + lab.node.tag)
    a = lab.create()
    lab.start(a)
    before = (net_snapshot(lab, [a]), node_snapshot(lab.node))
    for own in (HOST4, HOST6, "10.213.9.1"):
        result = lab.network(a, ip_address=[own])
        assert result.get("failed") is True and "ip_address" in result["msg"] and own in result["msg"], result
    assert (net_snapshot(lab, [a]), node_snapshot(lab.node)) == before


def test_no_probe_at_start_even_when_the_address_was_taken_since(routed_lab):
    lab = routed_lab
    far = "ovzx" + lab.node.tag
    a = lab.create(ip_address=[FREE4, FREE6])     # probed here, and free
    hold(lab.outside, far, FREE4, 24)             # then a neighbour takes them
    hold(lab.outside, far, FREE6, 64)
    capture = Capture(lab.outside.path, far)
    lab.start(a)                                  # a start never probes, and so never refuses
    assert lab.manager.status(a) == "running"
    assert probes_in(capture.frames()) == []
    lab.stop(a)
    assert lab.network(a, ip_address=[FREE4, FREE6])["changed"] is False   # what it has is not probed again


def test_bridged_probes_on_the_bridge(bridged_lab):
    lab = bridged_lab
    hold(lab.outside, lab.far, "10.213.3.50", 24)
    hold(lab.outside, lab.far, "fd00:213::b:50", 64)
    theirs = lab.outside.mac(lab.far)
    a = lab.create(netif_mode="bridged", bridge=lab.bridge, ip_address=["10.213.3.10/24"])
    lab.start(a)
    before = (net_snapshot(lab, [a]), node_snapshot(lab.node))
    for taken in ("10.213.3.50", "fd00:213::b:50"):
        suffix = "/24" if "." in taken else "/64"
        result = lab.network(a, netif_mode="bridged", bridge=lab.bridge, ip_address=["10.213.3.10/24", taken + suffix])
        assert_refused(result, taken, theirs)
    assert (net_snapshot(lab, [a]), node_snapshot(lab.node)) == before
    result = lab.network(a, netif_mode="bridged", bridge=lab.bridge,
                         ip_address=["10.213.3.10/24", "10.213.3.51/24", "fd00:213::b:51/64"])
    assert result["changed"] is True and not result.get("failed"), result
    assert lab.outside.ping("10.213.3.51") and lab.outside.ping("fd00:213::b:51")


def test_dad_timeout_zero_sends_no_probe_and_bad_values_name_it(routed_lab):
    lab = routed_lab
    far = "ovzx" + lab.node.tag
    hold(lab.outside, far, TAKEN4, 24)
    a = lab.create()
    before = node_snapshot(lab.node)
    for bad in (-1, 31, "soon"):
        result = lab.network(a, ip_address=[FREE4], dad_timeout=bad)
        assert result.get("failed") is True and "dad_timeout" in result["msg"], result
    assert node_snapshot(lab.node) == before
    capture = Capture(lab.outside.path, far)
    result = lab.network(a, ip_address=[TAKEN4], dad_timeout=0)     # the operator's word: no probe
    assert result["changed"] is True and not result.get("failed"), result
    assert probes_in(capture.frames()) == []


def test_fleet_probes_every_new_address_before_any_change(routed_lab):
    lab = routed_lab
    far = "ovzx" + lab.node.tag
    hold(lab.outside, far, TAKEN6, 64)
    theirs = lab.outside.mac(far)
    c1, c2 = lab.node.name(), lab.node.name()

    def item(name, addresses):
        return dict(name=name, template=lab.template, layout="directory", state="stopped",
                    network=dict(ip_address=addresses))

    def fleet(items, check=False):
        return run_module_in(lab.host, "ovz_fleet", dict(containers=items, fleet="ovzdad", data_dir=lab.node.data_dir,
                                                         cgroup_parent=lab.node.cgroup_parent), check=check)

    before = (net_snapshot(lab), node_snapshot(lab.node))
    for check in (True, False):
        result = fleet([item(c1, [FREE4]), item(c2, [FREE6, TAKEN6])], check=check)
        assert_refused(result, TAKEN6, theirs)
        assert "containers[%s].network.ip_address" % c2 in result["msg"], result["msg"]
    assert lab.manager.layout.names() == []
    assert (net_snapshot(lab), node_snapshot(lab.node)) == before
    items = [item(c1, [FREE4]), item(c2, [FREE6])]
    first = fleet(items)
    assert first["changed"] is True and first["summary"]["created"] == 2, first
    hold(lab.outside, far, FREE4, 24)     # taken since: the addresses the node's containers have are not probed
    assert fleet(items)["changed"] is False


def ovzctl(lab, *argv):
    return subprocess.run(["nsenter", "--net=" + lab.host.path, OVZCTL, "--data-dir", lab.node.data_dir,
                           "--cgroup-parent", lab.node.cgroup_parent] + list(argv),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=120,
                          check=False)


def test_ovzctl_set_ipadd_probes_too(routed_lab):
    if subprocess.run(["/usr/bin/python3", "-c", "import pyroute2"], check=False).returncode != 0:
        pytest.skip("ovzctl runs /usr/bin/python3, which has no pyroute2 (python3-pyroute2) here")
    lab = routed_lab
    far = "ovzx" + lab.node.tag
    hold(lab.outside, far, TAKEN4, 24)
    theirs = lab.outside.mac(far)
    a = lab.create()
    lab.start(a)
    before = (net_snapshot(lab, [a]), node_snapshot(lab.node))
    refused = ovzctl(lab, "set", a, "--ipadd", TAKEN4)
    assert refused.returncode == 1, refused
    assert "ip_address" in refused.stderr and TAKEN4 in refused.stderr and theirs in refused.stderr, refused.stderr
    assert (net_snapshot(lab, [a]), node_snapshot(lab.node)) == before
    added = ovzctl(lab, "set", a, "--ipadd", FREE4, "--ipadd", FREE6)
    assert added.returncode == 0, added
    assert lab.manager.load(a).network["ip_address"] == [FREE4, FREE6]
    assert lab.outside.ping(FREE4) and lab.outside.ping(FREE6)
    assert ovzctl(lab, "set", a, "--ipdel", FREE4).returncode == 0
    assert lab.manager.load(a).network["ip_address"] == [FREE6]
    assert ovzctl(lab, "set", a, "--ipdel", "all").returncode == 0
    assert lab.manager.load(a).network["ip_address"] == []
