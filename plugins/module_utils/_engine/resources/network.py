# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""A container's network: one veth pair, routed (like OpenVZ's venet) or bridged.

Netlink work (links, addresses, routes, proxy neighbours) goes through
pyroute2, sysctls through ``/proc/sys/net`` of the right network namespace,
and anti-spoofing through nftables (the ``nft`` binary, one atomic script per
change) in the project's own ``netdev ovz`` table.

Everything runs in the caller's network namespace (the "host") and in the
container's; the container's side is reached by ``setns`` of the calling
thread, which is undone before returning. Every host object is named or
tagged ``ovz`` and carries the identity of its data dir (``<node>``, see
``HostLayout.node_id``), so the containers of two data dirs never share one:

- the host end of the veth pair, ``ovz<10 hex>`` (a digest of node and name;
  or ``host_ifname``), with the alias ``ovz:<data_dir>:<name>``;
- the named netns ``ovz-<node>-<name>`` (a bind mount under ``/run/netns``);
- the nftables chains ``<host end>-in``/``<host end>-out`` in ``table netdev ovz-<node>``.

A container started before data dirs had an identity keeps what it was given
(the netns ``ovz-<name>``, its chains in ``table netdev ovz``) until it stops:
teardown works from what setup recorded.

Routed mode: the container's addresses are /32 and /128 on its interface,
its default routes go via the link-local gateways 169.254.0.1 (onlink) and
fe80::1, which the host end holds; the host has a /32 or /128 route to each
address via the host end, and proxy ARP/NDP entries on every host interface
whose own prefix covers the address (OpenVZ's ``NEIGHBOUR_DEVS=detect``).
Packets from the host end whose source is not one of the container's
addresses are dropped, always.

An address newly given to a container is first probed for where it will be announced (``dad.py``:
those interfaces in routed mode, the bridge in bridged mode), and refused when a neighbour
answers; a start, a restore or a migration never probes (the source still answers there).

Bridged mode: the host end joins ``bridge``; the container owns ``mac``. With
``mac_filter`` (the default) frames from the port with another source MAC,
packets with an unassigned source IP, forged ARP and neighbour
advertisements are dropped on the way in, and on the way out the port only
gets frames for the container's MAC, broadcasts (ARP only for its own
addresses) and multicast (solicited-node groups only for its own addresses),
so a container never sees the unicast traffic of others that a bridge floods.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import socket
import stat
import struct
import subprocess
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

from ..base import faults
from ..base.errors import InvalidParameter, KernelUnsupported, OvzError, StateConflict
from ..base.files import atomic_write_json, read_json
from ..kernel import dad
from ..kernel import namespaces as ns
from ..kernel.idmap import creating_as
from ..kernel.mounts import read_mountinfo
from ..node.config import HostLayout

# pyroute2 is imported on first use: importing it costs about half a second,
# which every container start and every module run would otherwise pay.
IPRoute: Any = None
NetlinkError: Any = None
PYROUTE2_IMPORT_ERROR: Optional[str] = None


def has_pyroute2() -> bool:
    """Import pyroute2 if not yet done; False (with PYROUTE2_IMPORT_ERROR set) when it is missing."""
    global IPRoute, NetlinkError, PYROUTE2_IMPORT_ERROR  # pylint: disable=global-statement
    if IPRoute is not None:
        return True
    try:
        from pyroute2 import IPRoute as _IPRoute, NetlinkError as _NetlinkError
    except ImportError:  # pragma: no cover - reported by the module with missing_required_lib
        PYROUTE2_IMPORT_ERROR = traceback.format_exc()
        return False
    IPRoute, NetlinkError = _IPRoute, _NetlinkError
    return True


IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPInterface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

NETIF_MODES = ("routed", "bridged")
DEFAULT_IFNAME = "eth0"
HOST_PREFIX = "ovz"
NETNS_DIR = "/run/netns"
NETNS_PREFIX = "ovz-"
NFT_TABLE = "ovz"       # the table of containers started before data dirs had an identity
NFT_LOCK_DIR = "/run/lock"
GATEWAY4 = "169.254.0.1"
GATEWAY6 = "fe80::1"
RUNTIME_FILE = "net.json"
RUNTIME_VERSION = 1
RESOLV_CONF = "etc/resolv.conf"
ROUTE_KEYS = ("dst", "via", "mtu", "src", "metric")
# Settings whose change replaces the interface (the container sees it go and come back).
STRUCTURAL = ("netif_mode", "ifname", "host_ifname", "bridge", "mac")

IFNAME_MAX = 15
IFNAME_RE = re.compile(r"[A-Za-z0-9_.@+-]{1,15}")
MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
DOMAIN_RE = re.compile(r"(?=.{1,253}\.?$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}"
                       r"[A-Za-z0-9_])?)*\.?")

AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6
IFA_F_NODAD = 0x02
NTF_PROXY = 0x08
RTNH_F_ONLINK = 0x04
RT_SCOPE_LINK = 253
RTPROT_STATIC = 4
MAIN_TABLE = 254
MS_SHARED = 1 << 20

DEFAULTS: Dict[str, Any] = {
    "netif_mode": "routed",
    "ip_address": [],
    "ifname": DEFAULT_IFNAME,
    "host_ifname": None,
    "bridge": None,
    "mac": None,
    "mtu": None,
    "routes": [],
    "nameserver": [],
    "searchdomain": [],
    "mac_filter": True,
}


# ---------------------------------------------------------------------------------------
# validation: everything here is pure and raises InvalidParameter naming the parameter
# ---------------------------------------------------------------------------------------

def validate_ifname(value: Any, param: str = "ifname") -> str:
    if not isinstance(value, str) or not IFNAME_RE.fullmatch(value) or value in (".", "..", "lo"):
        raise InvalidParameter("%r is not a valid interface name (1-%d characters from A-Z a-z 0-9 _ . @ + -, "
                               "not lo)" % (value, IFNAME_MAX), param)
    return value


def validate_host_ifname(value: Any) -> str:
    validate_ifname(value, "host_ifname")
    if not value.startswith(HOST_PREFIX):
        raise InvalidParameter("%r must start with %r: every host object of this collection does"
                               % (value, HOST_PREFIX), "host_ifname")
    return value


def validate_mac(value: Any) -> str:
    text = str(value).strip().lower().replace("-", ":") if isinstance(value, str) else ""
    if not MAC_RE.fullmatch(text):
        raise InvalidParameter("%r is not a MAC address like 0e:12:34:56:78:9a" % (value,), "mac")
    first = int(text[:2], 16)
    if first & 1:
        raise InvalidParameter("%s is a multicast MAC address; a container needs a unicast one" % text, "mac")
    if text == "00:00:00:00:00:00":
        raise InvalidParameter("00:00:00:00:00:00 is not a usable MAC address", "mac")
    return text


def _check_usable(ip: IPAddress, text: str, param: str) -> None:
    bad = None
    if ip.is_unspecified:
        bad = "the unspecified address"
    elif ip.is_loopback:
        bad = "a loopback address"
    elif ip.is_multicast:
        bad = "a multicast address"
    elif ip.is_link_local:
        bad = "link-local (the routed mode's gateways live there)"
    elif isinstance(ip, ipaddress.IPv4Address) and (ip == ipaddress.IPv4Address("255.255.255.255")
                                                    or ip in ipaddress.IPv4Network("240.0.0.0/4")):
        bad = "a reserved address"
    if bad:
        raise InvalidParameter("%r is %s" % (text, bad), param)


def parse_address(text: Any, mode: str = "routed") -> IPInterface:
    """One container address: ``10.0.0.5``, ``10.0.0.5/24`` (bridged), ``fd00::5``."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidParameter("%r is not an IP address" % (text,), "ip_address")
    try:
        iface = ipaddress.ip_interface(text.strip())
    except ValueError:
        raise InvalidParameter("%r is not an IPv4 or IPv6 address" % (text,), "ip_address") from None
    ip = iface.ip
    _check_usable(ip, text, "ip_address")
    full = ip.max_prefixlen
    if "/" in text and mode == "routed" and iface.network.prefixlen != full:
        raise InvalidParameter("%r: routed mode gives each address a /%d host route; leave the prefix out"
                               % (text, full), "ip_address")
    if "/" in text and iface.network.prefixlen < full - 1:
        if ip == iface.network.network_address or (ip.version == 4 and ip == iface.network.broadcast_address):
            raise InvalidParameter("%r is the network or broadcast address of its prefix" % (text,), "ip_address")
    return iface


def format_address(iface: IPInterface) -> str:
    """Canonical text: host prefixes are left out."""
    if iface.network.prefixlen == iface.ip.max_prefixlen:
        return str(iface.ip)
    return str(iface)


def normalize_addresses(values: Any, mode: str) -> List[str]:
    if not isinstance(values, (list, tuple)):
        raise InvalidParameter("must be a list of addresses, got %r" % (values,), "ip_address")
    seen: Dict[IPAddress, IPInterface] = {}
    result = []
    for value in values:
        iface = parse_address(value, mode)
        if iface.ip in seen:
            if seen[iface.ip] != iface:
                raise InvalidParameter("%s is listed twice with different prefixes" % iface.ip, "ip_address")
            continue
        seen[iface.ip] = iface
        result.append(format_address(iface))
    return result


def address_objects(netconf: Dict[str, Any]) -> List[IPInterface]:
    return [ipaddress.ip_interface(a) for a in netconf.get("ip_address") or []]


def validate_mtu(value: Any, addresses: Sequence[IPInterface]) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value))
        except ValueError:
            raise InvalidParameter("%r is not a number" % (value,), "mtu") from None
    low = 1280 if any(a.version == 6 for a in addresses) else 68
    if not low <= value <= 65535:
        raise InvalidParameter("%d is out of range %d-65535%s" % (
            value, low, " (IPv6 needs at least 1280)" if low == 1280 else ""), "mtu")
    return value


def _route_int(route: Dict[str, Any], key: str, low: int, high: int) -> Optional[int]:
    value = route.get(key)
    if value is None:
        return None
    try:
        number = int(str(value))
    except ValueError:
        raise InvalidParameter("%s %r of route %s is not a number" % (key, value, route.get("dst")), "routes") from None
    if isinstance(value, bool) or not low <= number <= high:
        raise InvalidParameter("%s %r of route %s is out of range %d-%d" % (key, value, route.get("dst"), low, high),
                               "routes")
    return number


def normalize_route(route: Any, mode: str, addresses: Sequence[IPInterface]) -> Dict[str, Any]:
    """One ``routes`` entry: ``dst`` (CIDR or ``default``), optional ``via``, ``mtu``, ``src``, ``metric``."""
    if not isinstance(route, dict):
        raise InvalidParameter("each route must be a dict with dst, via, mtu, src, metric; got %r" % (route,), "routes")
    unknown = sorted(set(route) - set(ROUTE_KEYS))
    if unknown:
        raise InvalidParameter("unknown route keys %s (known: %s)" % (", ".join(unknown), ", ".join(ROUTE_KEYS)),
                               "routes")
    dst_text = route.get("dst")
    if not isinstance(dst_text, str) or not dst_text:
        raise InvalidParameter("every route needs a dst (a CIDR or 'default'), got %r" % (dst_text,), "routes")
    family: Optional[int] = None
    dst: Optional[IPNetwork] = None
    if dst_text not in ("default", "default4", "default6"):
        try:
            dst = ipaddress.ip_network(dst_text.strip(), strict=True)
        except ValueError as exc:
            raise InvalidParameter("dst %r is not a network: %s" % (dst_text, exc), "routes") from None
        family = dst.version
    elif dst_text != "default":
        family = 4 if dst_text == "default4" else 6

    def address(key: str) -> Optional[IPAddress]:
        text = route.get(key)
        if text is None:
            return None
        try:
            value = ipaddress.ip_address(str(text).strip())
        except ValueError:
            raise InvalidParameter("%s %r of route %s is not an IP address" % (key, text, dst_text), "routes") from None
        return value

    via = address("via")
    src = address("src")
    for value in (via, src):
        if value is not None:
            if family is None:
                family = value.version
            elif value.version != family:
                raise InvalidParameter("route %s mixes IPv4 and IPv6" % dst_text, "routes")
    if family is None:
        raise InvalidParameter("route 'default' needs a via or src to tell IPv4 from IPv6; or use default4/default6",
                               "routes")
    if via is not None:
        if via.is_multicast or via.is_unspecified or via.is_loopback:
            raise InvalidParameter("via %s of route %s is not a usable gateway" % (via, dst_text), "routes")
        if mode == "bridged" and not via.is_link_local and \
                not any(a.version == family and via in a.network for a in addresses):
            raise InvalidParameter("via %s of route %s is not on the link: no address of the container has a "
                                   "prefix that covers it" % (via, dst_text), "routes")
        if any(via == a.ip for a in addresses):
            raise InvalidParameter("via %s of route %s is the container's own address" % (via, dst_text), "routes")
    if src is not None and not any(src == a.ip for a in addresses):
        raise InvalidParameter("src %s of route %s is not one of the container's addresses" % (src, dst_text),
                               "routes")
    low = 1280 if family == 6 else 68
    mtu = _route_int(route, "mtu", low, 65535)
    metric = _route_int(route, "metric", 0, 0xFFFFFFFF)
    return {
        "dst": "default%d" % family if dst is None else str(dst),
        "via": None if via is None else str(via),
        "mtu": mtu,
        "src": None if src is None else str(src),
        "metric": metric,
    }


def normalize_routes(values: Any, mode: str, addresses: Sequence[IPInterface]) -> List[Dict[str, Any]]:
    if not isinstance(values, (list, tuple)):
        raise InvalidParameter("must be a list of route dicts", "routes")
    result = [normalize_route(r, mode, addresses) for r in values]
    keys = [(r["dst"], r["metric"] or 0) for r in result]
    for key in set(keys):
        if keys.count(key) > 1:
            raise InvalidParameter("route %s (metric %d) is listed twice" % key, "routes")
    return result


def normalize_nameservers(values: Any) -> List[str]:
    if not isinstance(values, (list, tuple)):
        raise InvalidParameter("must be a list of IP addresses", "nameserver")
    result = []
    for value in values:
        try:
            ip = ipaddress.ip_address(str(value).strip())
        except ValueError:
            raise InvalidParameter("%r is not an IP address" % (value,), "nameserver") from None
        if ip.is_unspecified or ip.is_multicast:
            raise InvalidParameter("%s is not a usable name server" % ip, "nameserver")
        if str(ip) not in result:
            result.append(str(ip))
    return result


def normalize_searchdomains(values: Any) -> List[str]:
    if not isinstance(values, (list, tuple)):
        raise InvalidParameter("must be a list of domain names", "searchdomain")
    result = []
    for value in values:
        if not isinstance(value, str) or not DOMAIN_RE.fullmatch(value):
            raise InvalidParameter("%r is not a domain name" % (value,), "searchdomain")
        if value not in result:
            result.append(value)
    if len(" ".join(result)) > 1024:
        raise InvalidParameter("the search list is longer than resolv.conf allows (1024 characters)", "searchdomain")
    return result


def default_host_ifname(data_dir: str, name: str) -> str:
    """``ovz`` and 10 hex digits of the data dir's identity and the name: 13 characters, within IFNAMSIZ."""
    node = HostLayout(data_dir).node_id()
    if node is None:
        return legacy_host_ifname(data_dir, name)
    return HOST_PREFIX + hashlib.sha256(("%s\0%s" % (node, name)).encode()).hexdigest()[:10]


def legacy_host_ifname(data_dir: str, name: str) -> str:
    """The default host end of settings stored before data dirs had an identity (of the data dir's path)."""
    digest = hashlib.sha256(("%s\0%s" % (os.path.normpath(data_dir), name)).encode()).hexdigest()
    return HOST_PREFIX + digest[:10]


def is_default_host_ifname(data_dir: str, name: str, host_ifname: Optional[str]) -> bool:
    """Whether ``host_ifname`` is one this data dir derived for ``name`` (now or before), not the operator's choice."""
    return host_ifname in (default_host_ifname(data_dir, name), legacy_host_ifname(data_dir, name))


def default_mac(data_dir: str, name: str, salt: str = "ct") -> str:
    """A stable, locally administered unicast MAC (0e:... for the container, fe:... for the host end).

    Host ends use fe:, above any real NIC's MAC, so a bridge never takes its address from them.
    """
    digest = hashlib.sha256(("%s\0%s\0%s" % (salt, os.path.normpath(data_dir), name)).encode()).digest()
    first = "fe" if salt == "host" else "0e"
    return ":".join([first] + ["%02x" % b for b in digest[:5]])


def normalize_network(name: str, data_dir: str, desired: Dict[str, Any],
                      current: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The complete network settings: ``desired`` over ``current`` (None keeps a value), validated.

    Defaults that must stay stable (``host_ifname``, ``mac``) are derived once and stored.
    """
    base = dict(DEFAULTS)
    base.update(current or {})
    unknown = sorted(k for k in desired if k not in DEFAULTS)
    if unknown:
        raise InvalidParameter("unknown network settings: %s" % ", ".join(unknown), unknown[0])
    for key, value in desired.items():
        if value is not None:
            base[key] = value
    mode = base["netif_mode"]
    if mode not in NETIF_MODES:
        raise InvalidParameter("must be one of %s, got %r" % (", ".join(NETIF_MODES), mode), "netif_mode")
    addresses_text = normalize_addresses(base["ip_address"], mode)
    addresses = [ipaddress.ip_interface(a) for a in addresses_text]
    if not isinstance(base["mac_filter"], bool):
        raise InvalidParameter("must be true or false", "mac_filter")
    if mode == "routed":
        if desired.get("mac_filter") is False:
            raise InvalidParameter("routed mode always filters spoofed sources; mac_filter=false is for bridged mode",
                                   "mac_filter")
        if desired.get("bridge") is not None:
            raise InvalidParameter("a bridge is for netif_mode=bridged", "bridge")
        base["bridge"] = None
        base["mac_filter"] = True
    else:
        if not base["bridge"]:
            raise InvalidParameter("netif_mode=bridged needs a bridge", "bridge")
        validate_ifname(base["bridge"], "bridge")
    result = {
        "netif_mode": mode,
        "ip_address": addresses_text,
        "ifname": validate_ifname(base["ifname"] or DEFAULT_IFNAME),
        "host_ifname": validate_host_ifname(base["host_ifname"] or default_host_ifname(data_dir, name)),
        "bridge": base["bridge"],
        "mac": validate_mac(base["mac"] or default_mac(data_dir, name)),
        "mtu": validate_mtu(base["mtu"], addresses),
        "routes": normalize_routes(base["routes"], mode, addresses),
        "nameserver": normalize_nameservers(base["nameserver"]),
        "searchdomain": normalize_searchdomains(base["searchdomain"]),
        "mac_filter": base["mac_filter"],
    }
    return result


def same_config(left: Optional[Dict[str, Any]], right: Optional[Dict[str, Any]]) -> bool:
    """Equal settings; the address list is a set (its order does not matter)."""
    if not left or not right:
        return not left and not right

    def key(conf: Dict[str, Any]) -> Dict[str, Any]:
        data = dict(conf)
        data["ip_address"] = sorted(conf.get("ip_address") or [])
        return data
    return key(left) == key(right)


def check_address_conflicts(name: str, netconf: Dict[str, Any],
                            others: Iterable[Tuple[str, Dict[str, Any]]]) -> None:
    """Fail if an address (or the host end's name) is already another container's."""
    mine = {a.ip for a in address_objects(netconf)}
    for other, conf in others:
        if other == name or not conf:
            continue
        theirs = {ipaddress.ip_interface(a).ip for a in conf.get("ip_address") or []}
        both = sorted(str(ip) for ip in mine & theirs)
        if both:
            raise InvalidParameter("%s already used by container %s" % (", ".join(both), other), "ip_address")
        if conf.get("host_ifname") == netconf["host_ifname"]:
            raise InvalidParameter("%s is already the host end of container %s" % (netconf["host_ifname"], other),
                                   "host_ifname")


# ---------------------------------------------------------------------------------------
# the plan: what a call would change (touches nothing)
# ---------------------------------------------------------------------------------------

class NetworkPlan:
    """Before/after settings of one call, and whether the running container needs work."""

    def __init__(self, before: Dict[str, Any], after: Dict[str, Any], live: bool) -> None:
        self.before = before
        self.after = after
        self.live = live

    @property
    def changed(self) -> bool:
        return not same_config(self.before, self.after) or self.live

    def changed_keys(self) -> List[str]:
        keys = sorted(set(self.before) | set(self.after))
        return [k for k in keys if not same_config({k: self.before.get(k)}, {k: self.after.get(k)})]


def plan_network(name: str, data_dir: str, desired: Optional[Dict[str, Any]], current: Dict[str, Any],
                 runtime: Optional[Dict[str, Any]], running: bool,
                 others: Iterable[Tuple[str, Dict[str, Any]]] = (), view: Optional["HostView"] = None) -> NetworkPlan:
    """Validate ``desired`` (None: remove the network) against the stored settings and the host.

    ``runtime`` is what ``setup_network`` recorded for the running container (or None);
    ``view`` a ``host_view()`` to check against instead of reading the host again (for many
    containers in one call).
    """
    before = dict(current) if current else {}
    if desired is None:
        after: Dict[str, Any] = {}
    else:
        after = normalize_network(name, data_dir, desired, current or None)
        check_address_conflicts(name, after, others)
        check_host(after, runtime, before, view)
    applied = (runtime or {}).get("config") or {}
    live = running and not same_config(applied, after)
    return NetworkPlan(before, after, live)


class HostView:
    """This host's links (by name), local addresses and main-table routes, read once."""

    def __init__(self, links: Dict[str, Any], local: Set[str], routes: List[Tuple[Any, int, Any]]) -> None:
        self.links = links
        self.local = local
        self.routes = routes


def host_view() -> HostView:
    with netlink() as ipr:
        links = {link.get_attr("IFLA_IFNAME"): link for link in ipr.get_links()}
        local = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr()}
        routes = [(r.get_attr("RTA_DST"), r["dst_len"], r.get_attr("RTA_OIF"))
                  for family in (AF_INET, AF_INET6) for r in ipr.get_routes(family=family, table=MAIN_TABLE)]
    return HostView(links, local, routes)


def check_host(netconf: Dict[str, Any], runtime: Optional[Dict[str, Any]] = None,
               current: Optional[Dict[str, Any]] = None, view: Optional[HostView] = None,
               moving_from: Optional[str] = None) -> None:
    """Read-only checks against this host's kernel (or ``view`` of it): the bridge, the host end's name,
    address clashes. ``moving_from``: the owner alias of the container's host end in the data dir it
    migrates from on this same host, whose addresses move along (its host end keeps its own name)."""
    mine = {conf.get("host_ifname") for conf in (runtime, current) if conf and conf.get("host_ifname")}
    if view is None:
        view = host_view()
    links, local, routes = view.links, view.local, view.routes
    if netconf["netif_mode"] == "bridged":
        bridge = links.get(netconf["bridge"])
        if bridge is None:
            raise InvalidParameter("bridge %s does not exist on this host" % netconf["bridge"], "bridge")
        if _link_kind(bridge) != "bridge":
            kind = _link_kind(bridge) or "plain"
            raise InvalidParameter("%s is not a bridge (it is a %s link)" % (netconf["bridge"], kind), "bridge")
        bridge_mtu = bridge.get_attr("IFLA_MTU")
        if netconf["mtu"] is not None and netconf["mtu"] < bridge_mtu:
            raise InvalidParameter("%d is below the MTU of bridge %s (%d); the port would lower the bridge's MTU "
                                   "for every port" % (netconf["mtu"], netconf["bridge"], bridge_mtu), "mtu")
    host_ifname = netconf["host_ifname"]
    existing = links.get(host_ifname)
    if existing is not None and host_ifname not in mine and not _is_ours(existing):
        raise InvalidParameter("%s already exists on this host and is not a container's host end" % host_ifname,
                               "host_ifname")
    if existing is not None and moving_from and existing.get_attr("IFLA_IFALIAS") == moving_from:
        raise InvalidParameter("%s is the host end of the container in the data dir it leaves on this host, which "
                               "keeps it until the move is done: leave host_ifname to its default, which differs "
                               "per data dir" % host_ifname, "host_ifname")
    ours = {links[ifname]["index"] for ifname in mine | {host_ifname} if ifname in links}
    ours |= {link["index"] for link in links.values() if moving_from and link.get_attr("IFLA_IFALIAS") == moving_from}
    for iface in address_objects(netconf):
        ip = str(iface.ip)
        if ip in local:
            raise InvalidParameter("%s is an address of this host" % ip, "ip_address")
        for dst, dst_len, oif in routes:
            if dst == ip and dst_len == iface.ip.max_prefixlen and oif not in ours:
                raise InvalidParameter("%s is already routed to another interface of this host (another container?)"
                                       % ip, "ip_address")


def new_addresses(before: Optional[Dict[str, Any]], after: Optional[Dict[str, Any]]) -> List[IPAddress]:
    """The addresses ``after`` gives the container that ``before`` did not (an address it has is never probed again)."""
    have = {a.ip for a in address_objects(before or {})}
    return [a.ip for a in address_objects(after or {}) if a.ip not in have]


def dad_targets(netconf: Dict[str, Any], addresses: Iterable[IPAddress]) -> List[Tuple[IPAddress, str]]:
    """(address, interface) pairs where a holder of each address would answer: the bridge in bridged mode; in
    routed mode every host interface whose own prefix covers the address, where its proxy ARP/NDP entry goes
    (an address no interface's prefix covers is only routed, and no neighbour asks for it)."""
    addresses = list(addresses)
    if not addresses:
        return []
    if netconf["netif_mode"] == "bridged":
        return [(ip, netconf["bridge"]) for ip in addresses]
    with netlink() as ipr:
        return [(ip, dev) for ip in addresses
                for dev in _proxy_devices(ipr, ipaddress.ip_interface(str(ip)), skip=(netconf["host_ifname"],))]


def duplicates_error(holders: Sequence[dad.Holder]) -> InvalidParameter:
    found = "; ".join("%s is held by %s on %s" % (h.address, h.mac, h.ifname) for h in holders)
    return InvalidParameter("%s: answered a duplicate-address probe; an address in use on the segment is not taken "
                            "(free it there, or choose another)" % found, "ip_address")


def find_holders(targets: Sequence[Tuple[IPAddress, str]], timeout: float) -> List[dad.Holder]:
    """``dad.probe``, its failures (no CAP_NET_RAW) reported against ``ip_address``."""
    try:
        return dad.probe(targets, timeout)
    except OSError as exc:
        where = ", ".join(sorted({t[1] for t in targets}))
        raise OvzError("the duplicate-address probe on %s failed: %s" % (where, exc.strerror or exc),
                       "ip_address") from None


def check_duplicates(plan: NetworkPlan, timeout: float) -> None:
    """Refuse the addresses ``plan`` newly gives that someone on their segment already holds (probes for
    ``timeout`` seconds; 0 skips the probe). Sends probes, changes nothing."""
    if timeout <= 0 or not plan.after:
        return
    holders = find_holders(dad_targets(plan.after, new_addresses(plan.before, plan.after)), timeout)
    if holders:
        raise duplicates_error(holders)


def _link_kind(link: Any) -> Optional[str]:
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def _is_ours(link: Any) -> bool:
    alias = link.get_attr("IFLA_IFALIAS") or ""
    return link.get_attr("IFLA_IFNAME", "").startswith(HOST_PREFIX) and alias.startswith(HOST_PREFIX + ":")


def owner_alias(data_dir: str, name: str) -> str:
    return "%s:%s:%s" % (HOST_PREFIX, os.path.normpath(data_dir), name)


# ---------------------------------------------------------------------------------------
# kernel access: netlink in a namespace, sysctls, nft
# ---------------------------------------------------------------------------------------

def require_pyroute2() -> None:
    if not has_pyroute2():
        raise KernelUnsupported("the Python library pyroute2 is missing on this host "
                                "(Debian: apt-get install python3-pyroute2)")


@contextmanager
def in_netns(pid: Optional[int]) -> Iterator[None]:
    """Run the block with the calling thread in ``pid``'s network namespace (None: stay)."""
    if pid is None:
        yield
        return
    target = os.open("/proc/%d/ns/net" % pid, os.O_RDONLY | os.O_CLOEXEC)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        ns.setns(target, ns.CLONE_NEWNET)
        try:
            yield
        finally:
            ns.setns(home, ns.CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(home)


@contextmanager
def netlink(pid: Optional[int] = None) -> Iterator[Any]:
    """An ``IPRoute`` bound to ``pid``'s network namespace (None: the caller's, the host)."""
    require_pyroute2()
    with in_netns(pid):
        ipr = IPRoute()  # the socket belongs to the namespace it was made in
    try:
        yield ipr
    finally:
        ipr.close()


def _ignore(codes: Sequence[int], call: Any, *args: Any, **kwargs: Any) -> None:
    try:
        call(*args, **kwargs)
    except NetlinkError as exc:
        if exc.code not in codes:
            raise


def read_sysctl(path: str) -> Optional[str]:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def write_sysctl(path: str, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _conf(family: str, ifname: str, key: str) -> str:
    return "/proc/sys/net/%s/conf/%s/%s" % (family, ifname, key)


def nft_binary() -> str:
    found = shutil.which("nft") or next((p for p in ("/usr/sbin/nft", "/sbin/nft") if os.access(p, os.X_OK)), None)
    if not found:
        raise KernelUnsupported("the nft binary (package nftables) is missing; it filters spoofed traffic",
                                "netif_mode")
    return found


def nft(script: str) -> None:
    result = subprocess.run([nft_binary(), "-f", "-"], input=script, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, check=False)
    if result.returncode != 0:
        raise OvzError("nft failed: %s" % (result.stderr.strip() or result.stdout.strip()), "netif_mode")


def nft_table(node: Optional[str]) -> str:
    """The node's own table, ``ovz-<node>`` (no node: the table shared before data dirs had an identity)."""
    return "%s-%s" % (NFT_TABLE, node) if node else NFT_TABLE


def nft_chains(table: str = NFT_TABLE) -> List[str]:
    """Chains of ``table netdev <table>`` in the caller's netns ([] when the table does not exist)."""
    result = subprocess.run([nft_binary(), "-j", "list", "table", "netdev", table], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, check=False)
    if result.returncode != 0:
        return []
    try:
        items = json.loads(result.stdout).get("nftables", [])
    except ValueError:
        return []
    return [item["chain"]["name"] for item in items if "chain" in item]


def nft_lock_path(table: str) -> str:
    return os.path.join(NFT_LOCK_DIR, "%s-nft.lock" % table)


@contextmanager
def nft_lock(table: str) -> Iterator[Callable[[], None]]:
    """One writer at a time for ``table`` (it is removed when its last chain goes). Yields a function that
    removes the lock file with the table, so no node leaves one behind; whoever waited on the removed
    file takes the lock again on a new one, as ``ContainerLock`` does."""
    path = nft_lock_path(table)
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)

    def forget() -> None:
        if table != NFT_TABLE:   # the old shared table's lock may be held by an engine of before
            _unlink(path)
    try:
        yield forget
    finally:
        os.close(fd)


def _set(items: Iterable[str]) -> str:
    return "{ %s }" % ", ".join(items)


def eui64_link_local(mac: str) -> str:
    octets = [int(x, 16) for x in mac.split(":")]
    octets[0] ^= 0x02
    eui = octets[:3] + [0xFF, 0xFE] + octets[3:]
    return str(ipaddress.IPv6Address(bytes([0xFE, 0x80] + [0] * 6 + eui)))


def solicited_node_mac(ip: ipaddress.IPv6Address) -> str:
    tail = ip.packed[-3:]
    return "33:33:ff:%02x:%02x:%02x" % (tail[0], tail[1], tail[2])


def nft_chain_names(host_ifname: str) -> Tuple[str, str]:
    return host_ifname + "-in", host_ifname + "-out"


def nft_ruleset(netconf: Dict[str, Any], table_name: str = NFT_TABLE) -> str:
    """The container's filter chains, as one nft script that replaces them atomically."""
    host = netconf["host_ifname"]
    chain_in, chain_out = nft_chain_names(host)
    bridged = netconf["netif_mode"] == "bridged"
    mac = netconf["mac"]
    v4 = [str(a.ip) for a in address_objects(netconf) if a.version == 4]
    v6 = [str(a.ip) for a in address_objects(netconf) if a.version == 6]
    own6 = v6 + [eui64_link_local(mac)]
    table = "netdev %s" % table_name
    lines = [
        "add table %s" % table,
        "add chain %s %s { type filter hook ingress device \"%s\" priority -300 ; policy drop ; }"
        % (table, chain_in, host),
        "flush chain %s %s" % (table, chain_in),
    ]
    rule = "add rule %s %s " % (table, chain_in)
    if bridged:
        lines.append(rule + "ether saddr != %s drop" % mac)
    arp_check = "arp htype 1 arp ptype ip arp hlen 6 arp plen 4 "
    if bridged:
        arp_check += "arp saddr ether %s " % mac
    lines.append(rule + arp_check + "arp saddr ip %s accept" % _set(["0.0.0.0"] + v4))
    if v4:
        lines.append(rule + "ip saddr %s accept" % _set(v4))
    lines.append(rule + "icmpv6 type { nd-router-advert, nd-redirect } drop")
    targets = ["0x" + ipaddress.IPv6Address(a).packed.hex() for a in own6]
    lines.append(rule + "icmpv6 type nd-neighbor-advert @th,64,128 != %s drop" % _set(targets))
    lines.append(rule + "ip6 saddr %s accept" % _set(own6))
    lines.append(rule + "ip6 saddr :: icmpv6 type { nd-neighbor-solicit, nd-router-solicit, mld2-listener-report, "
                        "mld-listener-report } accept")
    if bridged:
        lines += [
            "add chain %s %s { type filter hook egress device \"%s\" priority -300 ; policy accept ; }"
            % (table, chain_out, host),
            "flush chain %s %s" % (table, chain_out),
        ]
        out = "add rule %s %s " % (table, chain_out)
        lines.append(out + "ether daddr %s accept" % mac)
        if v4:
            lines.append(out + "ether daddr ff:ff:ff:ff:ff:ff arp daddr ip != %s drop" % _set(v4))
        else:
            lines.append(out + "ether daddr ff:ff:ff:ff:ff:ff meta protocol arp drop")
        solicited = sorted({solicited_node_mac(ipaddress.IPv6Address(a)) for a in own6})
        lines.append(out + "ether daddr & ff:ff:ff:00:00:00 == 33:33:ff:00:00:00 ether daddr != %s drop"
                     % _set(solicited))
        lines.append(out + "ether daddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 accept")
        lines.append(out + "drop")
    return "\n".join(lines) + "\n"


def nft_install(netconf: Dict[str, Any], table: str) -> None:
    with nft_lock(table) as forget:
        try:
            nft(nft_ruleset(netconf, table))
        except OvzError:
            if not nft_chains(table):
                forget()
            raise


def nft_remove(host_ifname: str, table: str) -> None:
    """Delete the container's chains, and the table once no chain is left in it."""
    with nft_lock(table) as forget:
        chains = nft_chains(table)
        mine = [c for c in nft_chain_names(host_ifname) if c in chains]
        script = "".join("delete chain netdev %s %s\n" % (table, c) for c in mine)
        if chains and len(mine) == len(chains):
            script = "delete table netdev %s\n" % table
        if script:
            nft(script)
        if not chains or len(mine) == len(chains):
            forget()


# ---------------------------------------------------------------------------------------
# the named netns and resolv.conf
# ---------------------------------------------------------------------------------------

def netns_path(name: str, node: Optional[str]) -> str:
    """``/run/netns/ovz-<node>-<name>`` (no node: the name given before data dirs had an identity)."""
    return os.path.join(NETNS_DIR, "%s%s-%s" % (NETNS_PREFIX, node, name) if node else NETNS_PREFIX + name)


def _is_mountpoint(path: str) -> bool:
    try:
        return any(mount.mount_point == path for mount in read_mountinfo())
    except OSError:
        return False


def _prepare_netns_dir() -> None:
    """``/run/netns`` as iproute2 makes it: a shared mount, so unmounts reach every mount namespace."""
    os.makedirs(NETNS_DIR, mode=0o755, exist_ok=True)
    try:
        ns.mount("", NETNS_DIR, "none", MS_SHARED | ns.MS_REC)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        ns.mount(NETNS_DIR, NETNS_DIR, "none", ns.MS_BIND | ns.MS_REC)
        ns.mount("", NETNS_DIR, "none", MS_SHARED | ns.MS_REC)


def bind_netns(name: str, pid: int, node: Optional[str]) -> Optional[str]:
    """Name the container's netns ``ovz-<node>-<name>`` for ``ip netns exec``; None if the name is taken."""
    path = netns_path(name, node)
    _prepare_netns_dir()
    if _is_mountpoint(path):
        return None
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0))
    except FileExistsError:
        pass  # an empty file left by a crash
    try:
        ns.mount("/proc/%d/ns/net" % pid, path, None, ns.MS_BIND)
    except OSError:
        _unlink(path)
        raise
    return path


def unbind_netns(path: str) -> None:
    if _is_mountpoint(path):
        ns.umount(path, ns.MNT_DETACH)
    _unlink(path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def resolv_conf_text(netconf: Dict[str, Any]) -> Optional[str]:
    if not netconf.get("nameserver") and not netconf.get("searchdomain"):
        return None
    lines = ["# Written by ovz.containers (ovz_network: nameserver, searchdomain)"]
    if netconf.get("searchdomain"):
        lines.append("search " + " ".join(netconf["searchdomain"]))
    lines += ["nameserver " + server for server in netconf.get("nameserver") or []]
    return "\n".join(lines) + "\n"


def write_resolv_conf(root: str, text: str) -> None:
    """Write ``etc/resolv.conf`` under ``root`` (a directory, or ``/proc/<pid>/root``), never outside it.

    A missing file is created as the owner of the container's ``/`` (its root): on an unprivileged
    container's idmapped root mount, a file host root creates has no owner the mount can map."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY
        try:
            try:
                fd = ns.open_in_root(root_fd, RESOLV_CONF, flags, needed_for="to write resolv.conf safely",
                                     param="nameserver")
            except FileNotFoundError:
                owner = os.fstat(root_fd)
                with creating_as(owner.st_uid, owner.st_gid):
                    fd = ns.open_in_root(root_fd, RESOLV_CONF, flags | os.O_CREAT, 0o644,
                                         needed_for="to write resolv.conf safely", param="nameserver")
        except OSError as exc:
            if isinstance(exc, OvzError):
                raise
            raise OvzError("cannot write the container's /etc/resolv.conf: %s" % exc.strerror, "nameserver") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OvzError("the container's /etc/resolv.conf is not a regular file", "nameserver")
            os.ftruncate(fd, 0)
            data = text.encode()
            while data:
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)
    finally:
        os.close(root_fd)


# ---------------------------------------------------------------------------------------
# runtime state
# ---------------------------------------------------------------------------------------

def runtime_path(run_dir: str) -> str:
    return os.path.join(run_dir, RUNTIME_FILE)


def load_runtime(path: str) -> Optional[Dict[str, Any]]:
    try:
        data = read_json(path)
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("version") == RUNTIME_VERSION else None


def _save(path: Optional[str], runtime: Dict[str, Any]) -> None:
    if path:
        atomic_write_json(path, runtime, durable=False)


def _new_runtime(netconf: Dict[str, Any], owner: str, node: Optional[str]) -> Dict[str, Any]:
    return {"version": RUNTIME_VERSION, "config": dict(netconf), "host_ifname": netconf["host_ifname"],
            "owner": owner, "netns": None, "proxy": [], "nft": False, "nft_table": nft_table(node), "warnings": []}


def _runtime_table(runtime: Optional[Dict[str, Any]]) -> str:
    """The table the container's chains went into (a runtime of before has none recorded: the shared one)."""
    return (runtime or {}).get("nft_table") or NFT_TABLE


# ---------------------------------------------------------------------------------------
# routes inside the container
# ---------------------------------------------------------------------------------------

def container_routes(netconf: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Every route the container gets: the link-local defaults (routed) and ``routes``."""
    routed = netconf["netif_mode"] == "routed"
    families = {a.version for a in address_objects(netconf)}
    user = netconf.get("routes") or []
    result: List[Dict[str, Any]] = []
    for family in (4, 6):
        if routed and family in families and not any(r["dst"] == "default%d" % family and not r["metric"]
                                                     for r in user):
            result.append({"dst": "default%d" % family, "via": None, "mtu": None, "src": None, "metric": None})
    result += user
    specs = []
    for route in result:
        if route["dst"].startswith("default"):
            family, dst, dst_len = int(route["dst"][-1]), None, 0
        else:
            net = ipaddress.ip_network(route["dst"])
            family, dst, dst_len = net.version, str(net.network_address), net.prefixlen
        via = route["via"]
        onlink = False
        if routed and via is None:
            via = GATEWAY4 if family == 4 else GATEWAY6
        if routed and family == 4:
            onlink = True
        specs.append({"family": family, "dst": dst, "dst_len": dst_len, "via": via, "onlink": onlink,
                      "src": route["src"], "mtu": route["mtu"], "metric": route["metric"]})
    return specs


def _route_args(spec: Dict[str, Any], oif: int) -> Dict[str, Any]:
    family = AF_INET if spec["family"] == 4 else AF_INET6
    args: Dict[str, Any] = {"family": family, "dst": spec["dst"] or ("0.0.0.0" if family == AF_INET else "::"),
                            "dst_len": spec["dst_len"], "oif": oif, "table": MAIN_TABLE, "proto": RTPROT_STATIC}
    if spec["via"]:
        args["gateway"] = spec["via"]
        if spec["onlink"]:
            args["flags"] = RTNH_F_ONLINK
    else:
        args["scope"] = RT_SCOPE_LINK
    if spec["src"]:
        args["prefsrc"] = spec["src"]
    if spec["mtu"]:
        args["metrics"] = {"mtu": spec["mtu"]}
    if spec["metric"] is not None:
        args["priority"] = spec["metric"]
    return args


def _route_key(spec: Dict[str, Any]) -> Tuple[Any, ...]:
    return (spec["family"], spec["dst"], spec["dst_len"], spec["metric"] or 0)


# ---------------------------------------------------------------------------------------
# setup, live changes, teardown
# ---------------------------------------------------------------------------------------

def _link_index(ipr: Any, ifname: str) -> Optional[int]:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def _get_link(ipr: Any, ifname: str) -> Optional[Any]:
    """The link called ``ifname``, or None; a veth pair may vanish at any moment once its netns is released."""
    index = _link_index(ipr, ifname)
    if index is None:
        return None
    try:
        links = ipr.get_links(index)
    except NetlinkError as exc:
        if exc.code in (errno.ENODEV, errno.ENOENT):
            return None
        raise
    return links[0] if links else None


def _netlink_error(exc: BaseException, what: str, param: str) -> OvzError:
    message = getattr(exc, "args", [None, None])
    detail = message[1] if len(message) > 1 else str(exc)
    return OvzError("%s: %s" % (what, detail), param)


# rtnetlink constants for the address dump below (linux/netlink.h, linux/rtnetlink.h, linux/if_addr.h)
_NLMSG_ERROR, _NLMSG_DONE, _RTM_NEWADDR, _RTM_GETADDR = 2, 3, 20, 22
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_IFA_ADDRESS = 1
_NLMSG_HEADER = struct.Struct("=LHHLL")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTATTR = struct.Struct("=HH")


def interface_addresses(family: int) -> List[Tuple[int, str, int]]:
    """(link index, address, prefix length) of every address of ``family`` in the caller's network namespace.

    A plain RTM_GETADDR dump read with ``struct``: pyroute2 decodes each message in Python (about
    0.4 ms), and a host has one or two addresses per running container (the gateways on the host
    ends), so going through it made every start slower the more containers ran.
    """
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)  # NETLINK_ROUTE
    try:
        sock.bind((0, 0))
        sock.send(_NLMSG_HEADER.pack(_NLMSG_HEADER.size + _IFADDRMSG.size, _RTM_GETADDR, _NLM_F_REQUEST | _NLM_F_DUMP,
                                     1, 0) + _IFADDRMSG.pack(family, 0, 0, 0, 0))
        found: List[Tuple[int, str, int]] = []
        while True:
            data = sock.recv(1 << 16)
            offset = 0
            while offset + _NLMSG_HEADER.size <= len(data):
                length, kind = _NLMSG_HEADER.unpack_from(data, offset)[:2]
                if kind == _NLMSG_DONE:
                    return found
                if kind == _NLMSG_ERROR:
                    code = -struct.unpack_from("=i", data, offset + _NLMSG_HEADER.size)[0]
                    raise OSError(code, "RTM_GETADDR: %s" % os.strerror(code))
                if kind == _RTM_NEWADDR:
                    af, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(data, offset + _NLMSG_HEADER.size)
                    position = offset + _NLMSG_HEADER.size + _IFADDRMSG.size
                    while position + _RTATTR.size <= offset + length:
                        size, attribute = _RTATTR.unpack_from(data, position)
                        if size < _RTATTR.size:
                            break
                        if attribute == _IFA_ADDRESS:
                            found.append((index, socket.inet_ntop(af, data[position + 4:position + size]), prefixlen))
                        position += (size + 3) & ~3
                if length < _NLMSG_HEADER.size:
                    break
                offset += (length + 3) & ~3
    finally:
        sock.close()


def _proxy_devices(ipr: Any, iface: IPInterface, skip: Iterable[str]) -> List[str]:
    """Host interfaces whose own (non-link-local) prefix covers ``iface``: neighbours there ask for it.

    ``ipr`` is bound to the caller's network namespace, where the addresses are read too.
    """
    devices = []
    for index, address, prefixlen in interface_addresses(AF_INET if iface.version == 4 else AF_INET6):
        prefix = ipaddress.ip_interface("%s/%d" % (address, prefixlen))
        if prefix.ip.is_link_local or prefix.network.prefixlen == prefix.ip.max_prefixlen:
            continue
        if iface.ip not in prefix.network:
            continue
        try:
            links = ipr.get_links(index)
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                continue
            raise
        name = links[0].get_attr("IFLA_IFNAME") if links else None
        if not name or name == "lo" or name in skip:
            continue
        if name not in devices:
            devices.append(name)
    return devices


def _host_warnings(netconf: Dict[str, Any], proxy: List[List[str]]) -> List[str]:
    warnings: List[str] = []
    if netconf["netif_mode"] != "routed":
        return warnings
    families = {a.version for a in address_objects(netconf)}
    if 4 in families and read_sysctl("/proc/sys/net/ipv4/ip_forward") == "0":
        warnings.append("net.ipv4.ip_forward is 0 on this host: the container is reachable from this host and "
                        "other containers, not beyond (the ovz_host role enables forwarding)")
    if 6 in families and read_sysctl("/proc/sys/net/ipv6/conf/all/forwarding") == "0":
        warnings.append("net.ipv6.conf.all.forwarding is 0 on this host: IPv6 reaches the container from this host "
                        "only (the ovz_host role enables forwarding)")
    for ip, dev in proxy:
        if ":" in ip and read_sysctl(_conf("ipv6", dev, "proxy_ndp")) == "0" and \
                read_sysctl("/proc/sys/net/ipv6/conf/all/proxy_ndp") == "0":
            warnings.append("proxy_ndp is off on %s: neighbours there cannot find %s (sysctl "
                            "net.ipv6.conf.%s.proxy_ndp=1)" % (dev, ip, dev))
    return warnings


def _container_side(netconf: Dict[str, Any], pid: int, old: Optional[Dict[str, Any]] = None) -> None:
    """Addresses, MTU and routes inside the container (a fresh interface when ``old`` is None)."""
    ifname = netconf["ifname"]
    want_routes = {_route_key(s): s for s in container_routes(netconf)}
    have_routes = {_route_key(s): s for s in container_routes(old)} if old else {}
    want_addr = {a.ip: a for a in address_objects(netconf)}
    have_addr = {a.ip: a for a in address_objects(old)} if old else {}
    with netlink(pid) as ipr:
        index = _link_index(ipr, ifname)
        if index is None:
            raise OvzError("the container's interface %s is gone (was it renamed inside?)" % ifname, "ifname")
        if old is None:
            lo = _link_index(ipr, "lo")
            if lo is not None:
                ipr.link("set", index=lo, state="up")
            with in_netns(pid):
                for setting in ("accept_dad", "dad_transmits"):
                    path = _conf("ipv6", ifname, setting)
                    if os.path.exists(path):
                        write_sysctl(path, "0")
            link: Dict[str, Any] = {"address": netconf["mac"]}
            if netconf["mtu"]:
                link["mtu"] = netconf["mtu"]
            ipr.link("set", index=index, **link)
        elif netconf["mtu"] != old.get("mtu") and netconf["mtu"]:
            ipr.link("set", index=index, mtu=netconf["mtu"])
        for key, spec in have_routes.items():
            if key not in want_routes or want_routes[key] != spec:
                _ignore((errno.ESRCH, errno.ENOENT), ipr.route, "del", **_route_args(spec, index))
        # New addresses first: removing the last IPv4 address flushes the interface's IPv4 routes.
        for ip, iface in want_addr.items():
            if have_addr.get(ip) != iface:
                if ip in have_addr:
                    _ignore((errno.EADDRNOTAVAIL, errno.ENOENT), ipr.addr, "del", index=index, address=str(ip),
                            prefixlen=have_addr[ip].network.prefixlen)
                _ignore((errno.EEXIST,), ipr.addr, "add", index=index, address=str(ip),
                        prefixlen=iface.network.prefixlen, flags=IFA_F_NODAD if iface.version == 6 else 0)
        for ip, iface in have_addr.items():
            if ip not in want_addr:
                _ignore((errno.EADDRNOTAVAIL, errno.ENOENT), ipr.addr, "del", index=index, address=str(ip),
                        prefixlen=iface.network.prefixlen)
        if old is None:
            ipr.link("set", index=index, state="up")
        # Every wanted route is (re)placed: address changes may have flushed some.
        for spec in want_routes.values():
            try:
                ipr.route("replace", **_route_args(spec, index))
            except NetlinkError as exc:
                raise _netlink_error(exc, "route %s/%s inside the container" % (spec["dst"] or "default",
                                                                                spec["dst_len"]), "routes")


def _host_side(netconf: Dict[str, Any], runtime: Dict[str, Any], old: Optional[Dict[str, Any]] = None) -> None:
    """The host end's addresses (routed), host routes and proxy neighbours."""
    host = netconf["host_ifname"]
    routed = netconf["netif_mode"] == "routed"
    want = {a.ip for a in address_objects(netconf)} if routed else set()
    have = {a.ip for a in address_objects(old)} if old and old["netif_mode"] == "routed" else set()
    with netlink() as ipr:
        index = _link_index(ipr, host)
        if index is None:
            raise OvzError("the host end %s is gone" % host, "host_ifname")
        if old is not None and netconf["mtu"] != old.get("mtu") and netconf["mtu"]:
            ipr.link("set", index=index, mtu=netconf["mtu"])
        # The link-local gateways, for the families the container has (a host may have no IPv6).
        for version in sorted({ip.version for ip in want}):
            gateway = {"address": GATEWAY4, "prefixlen": 32, "scope": RT_SCOPE_LINK} if version == 4 else \
                {"address": GATEWAY6, "prefixlen": 64, "flags": IFA_F_NODAD}
            try:
                ipr.addr("add", index=index, **gateway)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise _netlink_error(exc, "gateway %s on %s" % (gateway["address"], host), "ip_address")
        for ip in have - want:
            family = AF_INET if ip.version == 4 else AF_INET6
            _ignore((errno.ESRCH, errno.ENOENT), ipr.route, "del", family=family, dst=str(ip),
                    dst_len=ip.max_prefixlen, oif=index, table=MAIN_TABLE, scope=RT_SCOPE_LINK)
        keep = []
        for entry in runtime["proxy"]:
            if ipaddress.ip_address(entry[0]) in want:
                keep.append(entry)
                continue
            _del_proxy(ipr, entry)
        runtime["proxy"] = keep
        for ip in sorted(want - have, key=str):
            family = AF_INET if ip.version == 4 else AF_INET6
            try:
                ipr.route("replace", family=family, dst=str(ip), dst_len=ip.max_prefixlen, oif=index,
                          scope=RT_SCOPE_LINK, table=MAIN_TABLE, proto=RTPROT_STATIC)
            except NetlinkError as exc:
                raise _netlink_error(exc, "host route to %s" % ip, "ip_address")
        proxied = {entry[0] for entry in runtime["proxy"]}
        for ip in sorted(want, key=str):
            if str(ip) in proxied:
                continue
            iface = ipaddress.ip_interface(str(ip))
            for dev in _proxy_devices(ipr, iface, skip=(host,)):
                dev_index = _link_index(ipr, dev)
                family = AF_INET if ip.version == 4 else AF_INET6
                _ignore((errno.EEXIST,), ipr.neigh, "add", family=family, dst=str(ip), ifindex=dev_index,
                        flags=NTF_PROXY)
                runtime["proxy"].append([str(ip), dev])


def _routed_elsewhere(ipr: Any, own_index: Optional[int]) -> Set[str]:
    """Addresses whose host route goes through another link than the host end ``own_index``: the container
    moved to another data dir of this host (a migration), whose host end now answers for them, and
    the proxy neighbours the two share are the new owner's."""
    found = set()
    for family in (AF_INET, AF_INET6):
        for route in ipr.get_routes(family=family, table=MAIN_TABLE):
            dst = route.get_attr("RTA_DST")
            if dst and route["dst_len"] == (32 if family == AF_INET else 128) and \
                    route.get_attr("RTA_OIF") != own_index:
                found.add(str(ipaddress.ip_address(dst)))
    return found


def reclaim_addresses(runtime: Optional[Dict[str, Any]]) -> None:
    """Point the host routes of a running routed container back at its host end and put back its proxy
    neighbours. A failed migration to another data dir of this host took them along: the target's
    host end held the routes, and its undo removed the proxy neighbours the two shared."""
    netconf = (runtime or {}).get("config") or {}
    if netconf.get("netif_mode") != "routed" or not has_pyroute2():
        return
    with netlink() as ipr:
        index = _link_index(ipr, netconf["host_ifname"])
        if index is None:
            return
        for iface in address_objects(netconf):
            family = AF_INET if iface.version == 4 else AF_INET6
            ipr.route("replace", family=family, dst=str(iface.ip), dst_len=iface.ip.max_prefixlen, oif=index,
                      scope=RT_SCOPE_LINK, table=MAIN_TABLE, proto=RTPROT_STATIC)
        for ip, dev in (runtime or {}).get("proxy") or []:
            dev_index = _link_index(ipr, dev)
            if dev_index is not None:
                _ignore((errno.EEXIST,), ipr.neigh, "add", family=AF_INET6 if ":" in ip else AF_INET, dst=ip,
                        ifindex=dev_index, flags=NTF_PROXY)


def _del_proxy(ipr: Any, entry: Sequence[str]) -> None:
    ip, dev = entry
    index = _link_index(ipr, dev)
    if index is None:
        return
    family = AF_INET6 if ":" in ip else AF_INET
    _ignore((errno.ENOENT, errno.ESRCH, errno.EINVAL), ipr.neigh, "del", family=family, dst=ip, ifindex=index,
            flags=NTF_PROXY)


def _free_host_end(ipr: Any, name: str, netconf: Dict[str, Any], owner: str) -> Tuple[Optional[int], Optional[int]]:
    """Remove a stale host end of this container (refuse someone else's); returns (bridge index, MTU)."""
    host = netconf["host_ifname"]
    stale = _get_link(ipr, host)
    if stale is not None:
        if stale.get_attr("IFLA_IFALIAS") != owner_alias(owner, name):
            raise StateConflict("%s already exists on this host and is not this container's host end" % host,
                                "host_ifname")
        _ignore((errno.ENODEV, errno.ENOENT), ipr.link, "del", index=stale["index"])
    bridge_index = None
    mtu = netconf["mtu"]
    if netconf["netif_mode"] == "bridged":
        bridge_index = _link_index(ipr, netconf["bridge"])
        if bridge_index is None:
            raise InvalidParameter("bridge %s does not exist on this host" % netconf["bridge"], "bridge")
        if mtu is None:
            mtu = ipr.get_links(bridge_index)[0].get_attr("IFLA_MTU")
    return bridge_index, mtu


def prepare_host_end(name: str, netconf: Dict[str, Any], owner: str) -> None:
    """Before a restore makes the veth pair (CRIU does): the host end's name is free, the bridge exists."""
    require_pyroute2()
    with netlink() as ipr:
        _free_host_end(ipr, name, netconf, owner)


def precreate_pair(name: str, netconf: Dict[str, Any], owner: str) -> str:
    """Before the restore of an unprivileged container: its veth pair, both ends on the host, the host end
    configured; the name of the container's end, which CRIU moves into the container and renames.

    CRIU makes the pair itself from inside the restored network namespace, which belongs to the container's
    user namespace: there it may not put the other end on the host. It moves a pair made beforehand instead
    (``--external netdev[...]``, through its helper that keeps host root's rights)."""
    host = netconf["host_ifname"]
    inner = HOST_PREFIX + "r" + hashlib.sha256(("%s\0%s" % (host, name)).encode()).hexdigest()[:10]
    with netlink() as ipr:
        bridge_index, mtu = _free_host_end(ipr, name, netconf, owner)
        stale = _link_index(ipr, inner)
        if stale is not None:
            ipr.link("del", index=stale)
        try:
            ipr.link("add", ifname=host, kind="veth", peer={"ifname": inner}, address=default_mac(owner, name, "host"))
        except NetlinkError as exc:
            raise _netlink_error(exc, "creating the veth pair %s/%s" % (host, inner), "host_ifname")
        _configure_host_end(ipr, name, netconf, owner, bridge_index, mtu)
    return inner


def _create_link(name: str, netconf: Dict[str, Any], pid: int, owner: str) -> None:
    host = netconf["host_ifname"]
    with netlink() as ipr:
        bridge_index, mtu = _free_host_end(ipr, name, netconf, owner)
        peer: Dict[str, Any] = {"ifname": netconf["ifname"], "net_ns_pid": pid}
        try:
            ipr.link("add", ifname=host, kind="veth", peer=peer, address=default_mac(owner, name, "host"))
        except NetlinkError as exc:
            raise _netlink_error(exc, "creating the veth pair %s/%s" % (host, netconf["ifname"]), "host_ifname")
        _configure_host_end(ipr, name, netconf, owner, bridge_index, mtu)


def _configure_host_end(ipr: Any, name: str, netconf: Dict[str, Any], owner: str, bridge_index: Optional[int],
                        mtu: Optional[int], mac: Optional[str] = None) -> None:
    host = netconf["host_ifname"]
    bridged = netconf["netif_mode"] == "bridged"
    index = _link_index(ipr, host)
    if index is None:
        raise OvzError("the host end %s is gone" % host, "host_ifname")
    settings: Dict[str, Any] = {"ifalias": owner_alias(owner, name)}
    if mtu:
        settings["mtu"] = mtu
    if mac:
        settings["address"] = mac
    ipr.link("set", index=index, **settings)
    if bridged:
        disable = _conf("ipv6", host, "disable_ipv6")
        if os.path.exists(disable):
            write_sysctl(disable, "1")  # a bridge port has no addresses of its own
        ipr.link("set", index=index, master=bridge_index)
    else:
        for family in ("ipv4", "ipv6"):
            if os.path.exists(_conf(family, host, "forwarding")):
                write_sysctl(_conf(family, host, "forwarding"), "1")
        for key in ("accept_dad", "accept_ra"):
            if os.path.exists(_conf("ipv6", host, key)):
                write_sysctl(_conf("ipv6", host, key), "0")


def _bring_up_host_end(netconf: Dict[str, Any]) -> None:
    with netlink() as ipr:
        index = _link_index(ipr, netconf["host_ifname"])
        if index is None:
            raise OvzError("the host end %s is gone" % netconf["host_ifname"], "host_ifname")
        ipr.link("set", index=index, state="up")


def _new_saved_runtime(netconf: Dict[str, Any], owner: str, state_path: Optional[str],
                       node: Optional[str]) -> Dict[str, Any]:
    require_pyroute2()
    runtime = _new_runtime(netconf, owner, node)
    _save(state_path, runtime)
    return runtime


def _name_netns(name: str, init_pid: int, runtime: Dict[str, Any], state_path: Optional[str],
                node: Optional[str]) -> None:
    """Name the container's netns (``ip netns``), or warn that the name is taken; saved."""
    runtime["netns"] = bind_netns(name, init_pid, node)
    if runtime["netns"] is None:
        runtime["warnings"].append("the netns name %s is taken; use nsenter --net=/proc/%d/ns/net instead"
                                   % (netns_path(name, node), init_pid))
    _save(state_path, runtime)


def setup_network(name: str, netconf: Dict[str, Any], init_pid: int, owner: str, root: Optional[str] = None,
                  state_path: Optional[str] = None, *, node: Optional[str]) -> Dict[str, Any]:
    """Give the container of ``init_pid`` its network; returns (and saves) the runtime state.

    Runs while the container's namespaces exist and before its init is exec'd, or live.
    ``owner`` is the node's data_dir and ``node`` its identity (``HostLayout.node_id``), which the
    names of the netns and the nftables table carry; ``root`` the container's root directory on
    the host (default ``/proc/<init_pid>/root``). Undoes its own work if a step fails.
    """
    runtime = _new_saved_runtime(netconf, owner, state_path, node)
    table = runtime["nft_table"]
    try:
        _name_netns(name, init_pid, runtime, state_path, node)
        faults.point("network.netns")
        _create_link(name, netconf, init_pid, owner)
        faults.point("network.link")
        if netconf["mac_filter"]:
            runtime["nft"] = True
            _save(state_path, runtime)
            nft_install(netconf, table)  # before the port is up: no unfiltered moment
        _container_side(netconf, init_pid)
        _bring_up_host_end(netconf)
        _host_side(netconf, runtime)
        faults.point("network.host")
        text = resolv_conf_text(netconf)
        if text is not None:
            write_resolv_conf(root or "/proc/%d/root" % init_pid, text)
        runtime["warnings"] += _host_warnings(netconf, runtime["proxy"])
        _save(state_path, runtime)
    except BaseException:
        try:
            teardown_network(name, netconf, runtime, owner)
        except Exception:  # noqa: BLE001 - the first error is the one to report
            pass
        if state_path:
            _unlink(state_path)
        raise
    return runtime


def adopt_network(name: str, netconf: Dict[str, Any], init_pid: int, owner: str,
                  state_path: Optional[str] = None, *, node: Optional[str]) -> Dict[str, Any]:
    """The host side of a restored container's network (checkpoint/restore, issue 7).

    CRIU restored the container's side (interface, MAC, addresses, routes) and made the
    veth pair with its host end named ``host_ifname`` (in ``bridge`` when bridged). This
    adds what ``setup_network`` gives the host: the owner tag, MAC and sysctls of the
    host end, the anti-spoofing rules, the host routes and proxy neighbours, and the netns
    name. Undoes its own work (and removes the pair) if a step fails.
    """
    runtime = _new_saved_runtime(netconf, owner, state_path, node)
    try:
        _name_netns(name, init_pid, runtime, state_path, node)
        with netlink() as ipr:
            bridge_index = _link_index(ipr, netconf["bridge"]) if netconf["netif_mode"] == "bridged" else None
            mtu = netconf["mtu"]
            if bridge_index is not None and mtu is None:
                mtu = ipr.get_links(bridge_index)[0].get_attr("IFLA_MTU")
            _configure_host_end(ipr, name, netconf, owner, bridge_index, mtu, default_mac(owner, name, "host"))
        if netconf["mac_filter"]:
            runtime["nft"] = True
            _save(state_path, runtime)
            nft_install(netconf, runtime["nft_table"])
        _bring_up_host_end(netconf)
        _host_side(netconf, runtime)
        runtime["warnings"] += _host_warnings(netconf, runtime["proxy"])
        _save(state_path, runtime)
    except BaseException:
        runtime["host_ifname"] = netconf["host_ifname"]
        try:
            teardown_network(name, netconf, runtime, owner)
        except Exception:  # noqa: BLE001 - the first error is the one to report
            pass
        if state_path:
            _unlink(state_path)
        raise
    return runtime


def apply_network_live(name: str, netconf: Optional[Dict[str, Any]], init_pid: int, owner: str,
                       runtime: Optional[Dict[str, Any]], state_path: Optional[str] = None, *,
                       node: Optional[str]) -> Optional[Dict[str, Any]]:
    """Bring a running container's network to ``netconf`` (None or {}: no network), without a restart.

    Changes in place keep the names the container was given (its recorded table); a new interface
    gets this ``node``'s names."""
    old = (runtime or {}).get("config") or None
    if not netconf:
        if old or runtime:
            teardown_network(name, old or {}, runtime, owner, node)
        if state_path:
            _unlink(state_path)
        return None
    if old is None or runtime is None or any(old.get(k) != netconf.get(k) for k in STRUCTURAL):
        if old is not None or runtime is not None:
            teardown_network(name, old or {}, runtime, owner, node)
        return setup_network(name, netconf, init_pid, owner, None, state_path, node=node)
    runtime = dict(runtime)
    runtime["proxy"] = [list(e) for e in runtime.get("proxy") or []]
    runtime["nft_table"] = _runtime_table(runtime)
    if netconf["mac_filter"]:
        runtime["nft"] = True
        nft_install(netconf, runtime["nft_table"])
    elif runtime.get("nft"):
        nft_remove(netconf["host_ifname"], runtime["nft_table"])
        runtime["nft"] = False
    _container_side(netconf, init_pid, old)
    _host_side(netconf, runtime, old)
    text = resolv_conf_text(netconf)
    if text is not None and text != resolv_conf_text(old):
        write_resolv_conf("/proc/%d/root" % init_pid, text)
    runtime["config"] = dict(netconf)
    runtime["warnings"] = _host_warnings(netconf, runtime["proxy"])
    _save(state_path, runtime)
    return runtime


def teardown_network(name: str, netconf: Dict[str, Any], runtime: Optional[Dict[str, Any]], owner: str,
                     node: Optional[str] = None) -> None:
    """Remove every host object of the container's network, whether its init still runs or not.

    Works from ``runtime`` (what setup recorded; it is written before anything is made)
    and falls back to ``netconf`` and the names of ``node``. Only objects tagged as this
    container's (``owner`` is the node's data_dir) are removed. Keeps going past failures;
    raises the first at the end.
    """
    host = (runtime or {}).get("host_ifname") or (netconf or {}).get("host_ifname")
    errors: List[BaseException] = []
    if runtime and runtime.get("netns"):
        try:
            unbind_netns(runtime["netns"])
        except OSError as exc:
            errors.append(exc)
    try:
        _teardown_host_objects(name, host, owner, runtime, node)
    except Exception as exc:  # noqa: BLE001 - report after the rest is done
        errors.append(exc)
    if errors:
        first = errors[0]
        if isinstance(first, OvzError):
            raise first
        raise OvzError("removing the network of %s: %s" % (name, first), "name")


def _teardown_host_objects(name: str, host: Optional[str], owner: str, runtime: Optional[Dict[str, Any]],
                           node: Optional[str]) -> None:
    if not has_pyroute2():
        return
    with netlink() as ipr:
        link = _get_link(ipr, host) if host else None
        ours = link is not None and link.get_attr("IFLA_IFALIAS") == owner_alias(owner, name)
        moved = _routed_elsewhere(ipr, link["index"] if link is not None and ours else None)
        for entry in (runtime or {}).get("proxy") or []:
            if entry[0] not in moved:
                _del_proxy(ipr, entry)
        if host and (runtime or {}).get("nft"):
            nft_remove(host, _runtime_table(runtime))
        elif host and runtime is None and ours:
            # Nothing recorded: its chains are in this node's table, or in the old shared one.
            for table in [nft_table(node)] + ([NFT_TABLE] if node else []):
                if nft_chains(table):
                    nft_remove(host, table)
        if link is not None and ours:
            # Deleting one end deletes the pair; the host routes via it go with it.
            _ignore((errno.ENODEV, errno.ENOENT), ipr.link, "del", index=link["index"])


def network_facts(netconf: Dict[str, Any], runtime: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    facts = dict(netconf or {})
    if runtime:
        facts["runtime"] = {"host_ifname": runtime.get("host_ifname"), "netns": runtime.get("netns"),
                            "proxy": runtime.get("proxy") or []}
    return facts
