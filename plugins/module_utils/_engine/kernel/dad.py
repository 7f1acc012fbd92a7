# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Duplicate-address detection: does anyone on a segment already hold an address?

Before an address is first given to a container, the host asks the segment it will be
announced on, as vzctl does with ``arpsend -D``:

- IPv4: an ARP probe (RFC 5227): a broadcast ARP request for the address whose sender
  address is 0.0.0.0, so that no neighbour learns anything from it;
- IPv6: a neighbour solicitation from the unspecified address to the address's
  solicited-node group (the duplicate-address detection of RFC 4862).

A holder answers (an ARP reply, a neighbour advertisement to all-nodes); a host probing
for the same address at the same moment counts as a holder too. Three probes are spread
over the wait, so that one lost frame does not hide a holder.

The frames go through a raw ``AF_PACKET`` socket bound to the interface: no tool is needed
on the host (arping and ndisc6 are not part of a stock install, and neither sends an
IPv6 probe from the unspecified address), and nothing the sockets do outlives them. Frames
this host sends itself (its own proxy ARP/NDP answers included) are never counted. The
probe reads and sends on the caller's network namespace and changes no state of the host.

Pure parts (frame builders and parsers) are separate from the socket loop, so they are
tested without root.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import select
import socket
import struct
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

from ..base.errors import InvalidParameter

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

DEFAULT_TIMEOUT = 1.0     # seconds: arping -D -w 1 and vzctl's arpsend wait as long
MAX_TIMEOUT = 30.0
PROBES = 3                # RFC 5227's PROBE_NUM, spread over the wait

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ARPHRD_ETHER = 1
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_MULTICAST = 0
SO_ATTACH_FILTER = 26
ICMPV6 = 58
ND_SOLICIT, ND_ADVERT = 135, 136
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"
BROADCAST = b"\xff" * 6
ETH_HEADER = 14
IPV6_HEADER = 40


@dataclass(frozen=True)
class Holder:
    """An answer to a probe: ``address`` is held by ``mac`` on ``ifname``."""

    address: str
    ifname: str
    mac: str


# ---------------------------------------------------------------------------------------
# frames (pure)
# ---------------------------------------------------------------------------------------

def internet_checksum(data: bytes) -> int:
    """The ones' complement sum of RFC 1071 (ICMPv6, UDP, IP headers)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def solicited_node(ip: ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(ipaddress.IPv6Address("ff02::1:ff00:0").packed[:13] + ip.packed[13:])


def multicast_mac(group: ipaddress.IPv6Address) -> bytes:
    return b"\x33\x33" + group.packed[12:]


def arp_probe(mac: bytes, ip: ipaddress.IPv4Address) -> bytes:
    """A broadcast ARP request for ``ip`` with sender address 0.0.0.0 (RFC 5227 2.1.1)."""
    body = struct.pack("!HHBBH6s4s6s4s", ARPHRD_ETHER, 0x0800, 6, 4, 1, mac, bytes(4), bytes(6), ip.packed)
    return BROADCAST + mac + struct.pack("!H", ETH_P_ARP) + body


def ns_probe(mac: bytes, ip: ipaddress.IPv6Address) -> bytes:
    """A neighbour solicitation for ``ip`` from :: to its solicited-node group, with no source link-layer
    option (RFC 4862 5.4.2)."""
    source, group = bytes(16), solicited_node(ip)
    icmp = struct.pack("!BBHI16s", ND_SOLICIT, 0, 0, 0, ip.packed)
    check = internet_checksum(source + group.packed + struct.pack("!I3xB", len(icmp), ICMPV6) + icmp)
    icmp = icmp[:2] + struct.pack("!H", check) + icmp[4:]
    head = struct.pack("!IHBB16s16s", 6 << 28, len(icmp), ICMPV6, 255, source, group.packed)
    return multicast_mac(group) + mac + struct.pack("!H", ETH_P_IPV6) + head + icmp


def _mac_text(raw: bytes) -> str:
    return ":".join("%02x" % b for b in raw)


def arp_claim(frame: bytes, own_mac: bytes) -> Optional[Tuple[IPAddress, str]]:
    """(address, MAC) that an ARP frame from another host claims or probes for, else None.

    A claim is any ARP packet whose sender address is set (a reply, a request, a gratuitous
    announcement); a probe of another host (sender 0.0.0.0) claims its target (RFC 5227 2.1.1).
    """
    if len(frame) < ETH_HEADER + 28:
        return None
    htype, ptype, hlen, plen, oper = struct.unpack_from("!HHBBH", frame, ETH_HEADER)
    if (htype, ptype, hlen, plen) != (ARPHRD_ETHER, 0x0800, 6, 4) or oper not in (1, 2):
        return None
    sha = frame[ETH_HEADER + 8:ETH_HEADER + 14]
    spa = ipaddress.IPv4Address(frame[ETH_HEADER + 14:ETH_HEADER + 18])
    tpa = ipaddress.IPv4Address(frame[ETH_HEADER + 24:ETH_HEADER + 28])
    if sha == own_mac:
        return None
    if not spa.is_unspecified:
        return spa, _mac_text(sha)
    if oper == 1:
        return tpa, _mac_text(sha)
    return None


def nd_claim(frame: bytes, own_mac: bytes) -> Optional[Tuple[IPAddress, str]]:
    """(address, MAC) that an IPv6 frame from another host claims (a neighbour advertisement) or probes
    for (a solicitation from ::), else None. Only ND messages with hop limit 255 count (RFC 4861 7.1)."""
    if len(frame) < ETH_HEADER + IPV6_HEADER + 24 or frame[6:12] == own_mac:
        return None
    offset = ETH_HEADER
    if frame[offset] >> 4 != 6 or frame[offset + 6] != ICMPV6 or frame[offset + 7] != 255:
        return None
    source = ipaddress.IPv6Address(frame[offset + 8:offset + 24])
    icmp = offset + IPV6_HEADER
    kind, code = frame[icmp], frame[icmp + 1]
    target = ipaddress.IPv6Address(frame[icmp + 8:icmp + 24])
    if code != 0:
        return None
    if kind == ND_ADVERT or (kind == ND_SOLICIT and source.is_unspecified):
        return target, _mac_text(frame[6:12])
    return None


# Classic BPF for the IPv6 socket: ICMPv6 (no extension header) of type 135 or 136, nothing else,
# so a busy uplink's IPv6 traffic never reaches Python.
_ND_FILTER = (
    (0x30, 0, 0, ETH_HEADER + 6),                  # ldb [20]: next header
    (0x15, 0, 4, ICMPV6),                          # jeq 58, else drop
    (0x30, 0, 0, ETH_HEADER + IPV6_HEADER),        # ldb [54]: ICMPv6 type
    (0x15, 1, 0, ND_SOLICIT),                      # jeq 135: accept
    (0x15, 0, 1, ND_ADVERT),                       # jeq 136: accept, else drop
    (0x06, 0, 0, 0xFFFF),                          # ret: accept
    (0x06, 0, 0, 0),                               # ret: drop
)


# ---------------------------------------------------------------------------------------
# the probe (sockets)
# ---------------------------------------------------------------------------------------

class _Port:
    """One raw socket on one interface for one family, and the addresses probed through it."""

    def __init__(self, ifname: str, version: int) -> None:
        self.ifname = ifname
        self.version = version
        self.proto = ETH_P_ARP if version == 4 else ETH_P_IPV6
        self.addresses: List[IPAddress] = []
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.htons(self.proto))
        try:
            self.sock.bind((ifname, self.proto))
            _name, _proto, _kind, hatype, mac = self.sock.getsockname()
            self.mac = mac
            # No neighbour discovery on a link without Ethernet addresses (tun, wireguard, ppp): nobody to ask.
            self.usable = hatype == ARPHRD_ETHER and len(mac) == 6
            if self.usable and version == 6:
                self._attach_filter()
        except BaseException:
            self.sock.close()
            raise

    def _attach_filter(self) -> None:
        program = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in _ND_FILTER))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                             struct.pack("HL", len(_ND_FILTER), ctypes.addressof(program)))

    def join(self, ip: ipaddress.IPv6Address) -> None:
        """Receive all-nodes and the solicited-node group of ``ip`` even where the NIC filters multicast."""
        index = socket.if_nametoindex(self.ifname)
        for mac in (ALL_NODES_MAC, multicast_mac(solicited_node(ip))):
            self.sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP,
                                 struct.pack("iHH8s", index, PACKET_MR_MULTICAST, 6, mac))

    def send(self) -> None:
        for ip in self.addresses:
            frame = arp_probe(self.mac, ip) if isinstance(ip, ipaddress.IPv4Address) else \
                ns_probe(self.mac, ip)
            try:
                self.sock.send(frame)
            except OSError as exc:
                # A link that is down, or gone meanwhile: nobody on it can answer.
                if exc.errno not in (errno.ENETDOWN, errno.ENXIO, errno.ENODEV):
                    raise

    def receive(self) -> List[Tuple[IPAddress, str]]:
        """Claims for the probed addresses among the frames waiting on the socket."""
        found: List[Tuple[IPAddress, str]] = []
        while True:
            try:
                frame, address = self.sock.recvfrom(2048, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return found
            if address[2] == PACKET_OUTGOING:
                continue
            claim = arp_claim(frame, self.mac) if self.version == 4 else nd_claim(frame, self.mac)
            if claim is not None and claim[0] in self.addresses:
                found.append(claim)

    def close(self) -> None:
        self.sock.close()


def _open_ports(targets: Sequence[Tuple[IPAddress, str]]) -> List[_Port]:
    ports: Dict[Tuple[str, int], _Port] = {}
    try:
        for ip, ifname in targets:
            key = (ifname, ip.version)
            if key not in ports:
                try:
                    ports[key] = _Port(ifname, ip.version)
                except OSError as exc:
                    if exc.errno in (errno.ENODEV, errno.ENXIO):   # the interface went away meanwhile
                        continue
                    raise
            port = ports[key]
            if port.usable and ip not in port.addresses:
                port.addresses.append(ip)
                if ip.version == 6:
                    port.join(ip)
    except BaseException:
        for port in ports.values():
            port.close()
        raise
    return [port for port in ports.values() if port.addresses]


def probe(targets: Sequence[Tuple[IPAddress, str]], timeout: float = DEFAULT_TIMEOUT) -> List[Holder]:
    """Ask each interface of ``targets`` (address, interface) whether someone holds the address there.

    Waits ``timeout`` seconds at most (less when every address has been claimed); returns
    who answered. Raises ``OSError`` when a socket cannot be made (a caller without CAP_NET_RAW).
    """
    if timeout <= 0 or not targets:
        return []
    ports = _open_ports(targets)
    found: Dict[Tuple[str, str], Holder] = {}
    wanted = {(str(ip), port.ifname) for port in ports for ip in port.addresses}
    try:
        began = time.monotonic()
        deadline = began + timeout
        sent = 0
        while ports and set(found) != wanted:
            now = time.monotonic()
            if now >= deadline:
                break
            next_send = began + sent * timeout / PROBES
            if sent < PROBES and now >= next_send:
                for port in ports:
                    port.send()
                sent += 1
                continue
            wake = min(deadline, began + sent * timeout / PROBES) if sent < PROBES else deadline
            ready, _w, _x = select.select([port.sock for port in ports], [], [], max(0.0, wake - now))
            for port in ports:
                if port.sock in ready:
                    for ip, mac in port.receive():
                        found.setdefault((str(ip), port.ifname), Holder(str(ip), port.ifname, mac))
    finally:
        for port in ports:
            port.close()
    return sorted(found.values(), key=lambda h: (h.address, h.ifname))


def validate_timeout(value: object, param: str = "dad_timeout") -> float:
    """Seconds to wait for an answer; 0 sends no probe. None gives the default."""
    if value is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidParameter("%r is not a number of seconds" % (value,), param) from None
    if isinstance(value, bool) or not 0 <= seconds <= MAX_TIMEOUT:
        raise InvalidParameter("%r is out of range 0-%g seconds" % (value, MAX_TIMEOUT), param)
    return seconds
