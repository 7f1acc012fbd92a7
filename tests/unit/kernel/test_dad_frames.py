# -*- coding: utf-8 -*-
"""Duplicate-address detection without a socket: the probe frames, the answers that claim an address, the wait."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel import dad
from ansible_collections.ovz.containers.plugins.module_utils._engine.resources import network
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.errors import InvalidParameter

OURS = bytes.fromhex("fe0000000001")
THEIRS = bytes.fromhex("0e0000000002")
V4 = ipaddress.IPv4Address("10.213.1.50")
V6 = ipaddress.IPv6Address("fd00:213::a:50")


def arp_frame(oper, sha, spa, tpa):
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, oper, sha, ipaddress.IPv4Address(spa).packed, bytes(6),
                       ipaddress.IPv4Address(tpa).packed)
    return b"\xff" * 6 + sha + b"\x08\x06" + body


def na_frame(src_mac, source, target, hops=255):
    icmp = struct.pack("!BBHI16s", 136, 0, 0, 0x20000000, target.packed) + b"\x02\x01" + src_mac
    head = struct.pack("!IHBB16s16s", 6 << 28, len(icmp), 58, hops, ipaddress.IPv6Address(source).packed,
                       ipaddress.IPv6Address("ff02::1").packed)
    return dad.ALL_NODES_MAC + src_mac + b"\x86\xdd" + head + icmp


def test_arp_probe_is_rfc5227():
    frame = dad.arp_probe(OURS, V4)
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == OURS and frame[12:14] == b"\x08\x06"
    htype, ptype, hlen, plen, oper = struct.unpack_from("!HHBBH", frame, 14)
    assert (htype, ptype, hlen, plen, oper) == (1, 0x0800, 6, 4, 1)
    assert frame[22:28] == OURS                       # sender hardware address: ours
    assert frame[28:32] == bytes(4)                   # sender IP 0.0.0.0: nobody learns anything from it
    assert frame[32:38] == bytes(6) and frame[38:42] == V4.packed


def test_ns_probe_is_rfc4862_dad():
    frame = dad.ns_probe(OURS, V6)
    group = ipaddress.IPv6Address("ff02::1:ff0a:50")
    assert frame[:6] == bytes.fromhex("3333ff0a0050") and frame[12:14] == b"\x86\xdd"
    assert frame[14 + 6] == 58 and frame[14 + 7] == 255
    assert frame[22:38] == bytes(16) and frame[38:54] == group.packed
    icmp = frame[54:]
    assert icmp[0] == 135 and icmp[8:24] == V6.packed and len(icmp) == 24   # no source link-layer option
    pseudo = bytes(16) + group.packed + struct.pack("!I3xB", len(icmp), 58)
    assert dad.internet_checksum(pseudo + icmp) == 0


def test_arp_answers_that_claim():
    assert dad.arp_claim(arp_frame(2, THEIRS, str(V4), "0.0.0.0"), OURS) == (V4, "0e:00:00:00:00:02")
    assert dad.arp_claim(arp_frame(1, THEIRS, str(V4), "10.213.1.1"), OURS) == (V4, "0e:00:00:00:00:02")
    # Another host probing for the same address at the same time (RFC 5227 2.1.1).
    assert dad.arp_claim(arp_frame(1, THEIRS, "0.0.0.0", str(V4)), OURS) == (V4, "0e:00:00:00:00:02")
    # Our own probe, and a truncated frame, claim nothing.
    assert dad.arp_claim(dad.arp_probe(OURS, V4), OURS) is None
    assert dad.arp_claim(arp_frame(2, THEIRS, str(V4), "0.0.0.0")[:30], OURS) is None


def test_nd_answers_that_claim():
    assert dad.nd_claim(na_frame(THEIRS, "fd00:213::a:50", V6), OURS) == (V6, "0e:00:00:00:00:02")
    assert dad.nd_claim(dad.ns_probe(THEIRS, V6), OURS) == (V6, "0e:00:00:00:00:02")
    assert dad.nd_claim(dad.ns_probe(OURS, V6), OURS) is None
    # A hop limit below 255 is from off the link (RFC 4861 7.1.2).
    assert dad.nd_claim(na_frame(THEIRS, "fd00:213::a:50", V6, hops=64), OURS) is None


@pytest.mark.parametrize("value, expected", [(None, 1.0), (0, 0.0), ("0.5", 0.5), (30, 30.0)])
def test_timeout(value, expected):
    assert dad.validate_timeout(value) == expected


@pytest.mark.parametrize("value", [-1, 31, "soon", True, float("nan"), float("inf")])
def test_bad_timeout_names_the_parameter(value):
    with pytest.raises(InvalidParameter) as info:
        dad.validate_timeout(value)
    assert info.value.param == "dad_timeout"


def test_nothing_to_probe_waits_for_nothing():
    assert dad.probe([], 5) == []
    assert dad.probe([(V4, "ovznosuch")], 0) == []


def test_only_new_addresses_are_probed():
    before = {"ip_address": ["10.213.1.10", "fd00:213::a:10"]}
    after = {"ip_address": ["10.213.1.10", "10.213.1.50", "fd00:213::a:50/64"]}
    assert network.new_addresses(before, after) == [V4, V6]
    assert network.new_addresses(after, after) == []
    assert network.new_addresses(None, before) == [ipaddress.ip_address("10.213.1.10"),
                                                   ipaddress.ip_address("fd00:213::a:10")]
    bridged = {"netif_mode": "bridged", "bridge": "ovzbr0", "host_ifname": "ovz0", "ip_address": []}
    assert network.dad_targets(bridged, [V4, V6]) == [(V4, "ovzbr0"), (V6, "ovzbr0")]


def test_refusal_names_the_parameter_the_address_and_the_holder():
    error = network.duplicates_error([dad.Holder("10.213.1.50", "ovzup1", "0e:00:00:00:00:02")])
    assert error.param == "ip_address"
    assert "10.213.1.50" in str(error) and "0e:00:00:00:00:02" in str(error) and "ovzup1" in str(error)
