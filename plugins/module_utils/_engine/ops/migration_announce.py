# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Telling the network that addresses moved: gratuitous ARP and unsolicited neighbour advertisements
from the target's host side, so that neighbours stop sending to the old node."""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import TYPE_CHECKING, List

from ..base.errors import OvzError
from ..resources import network

if TYPE_CHECKING:  # pragma: no cover - annotations only: the code imports these where it needs them
    from ..container.manager import ContainerManager


def _link_mac(ifname: str) -> bytes:
    """The MAC of ``ifname`` in the caller's netns (netlink: /sys may show another netns)."""
    with network.netlink() as ipr:
        links = ipr.get_links(ifname=ifname)
        if not links:
            raise OvzError("interface %s is gone" % ifname)
        return bytes.fromhex(links[0].get_attr("IFLA_ADDRESS").replace(":", ""))


def gratuitous_arp(ifname: str, ip: str) -> None:
    mac = _link_mac(ifname)
    addr = socket.inet_aton(ip)
    frame = (b"\xff" * 6 + mac + struct.pack("!H", 0x0806)
             + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + addr + b"\x00" * 6 + addr)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)) as sock:
        sock.bind((ifname, 0x0806))
        sock.send(frame)


def unsolicited_na(ifname: str, ip: str) -> None:
    mac = _link_mac(ifname)
    target = socket.inet_pton(socket.AF_INET6, ip)
    # ICMPv6 type 136, code 0, checksum (the kernel fills it), flags: Override; target; option 2 (target lladdr).
    message = struct.pack("!BBHI", 136, 0, 0, 0x20000000) + target + struct.pack("!BB", 2, 1) + mac
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
        index = socket.if_nametoindex(ifname)
        sock.sendto(message, ("ff02::1", 0, 0, index))


def announce(manager: ContainerManager, name: str) -> List[List[str]]:
    """Tell the neighbours that the container's addresses are here now, on every proxy device."""
    runtime = network.load_runtime(network.runtime_path(manager.layout.run(name))) or {}
    sent = []
    for ip, dev in runtime.get("proxy") or []:
        try:
            if ipaddress.ip_address(ip).version == 4:
                gratuitous_arp(dev, ip)
            else:
                unsolicited_na(dev, ip)
            sent.append([ip, dev])
        except OSError:
            continue
    return sent
