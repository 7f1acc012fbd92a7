# -*- coding: utf-8 -*-
"""The pure half of network.py: validation of every setting, and the plan of one call.

Nothing here opens a netlink socket: ``plan_network`` is given a ``HostView`` of fake links
(a bridge, a plain link, a host end of this collection), so the host checks run as well.
Every refusal is asserted by the message a user reads and the parameter it names.
"""

from __future__ import annotations

import ipaddress

import pytest

from support.fake_links import FakeLink, view
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.errors import InvalidParameter
from ansible_collections.ovz.containers.plugins.module_utils._engine.resources import network
from ansible_collections.ovz.containers.plugins.module_utils._engine.resources.network import (
    HostView, normalize_network, plan_network)


BRIDGE = FakeLink("br0", 3, kind="bridge", mtu=9000)
PLAIN = FakeLink("eth9", 4)
EMPTY = HostView({}, set(), [])


def refused(param, words, call, *args, **kwargs):
    """``call`` raises InvalidParameter naming ``param``, its message holding ``words``."""
    with pytest.raises(InvalidParameter) as caught:
        call(*args, **kwargs)
    assert caught.value.param == param, caught.value
    assert words in str(caught.value), str(caught.value)
    return caught.value


def addrs(*texts):
    return [ipaddress.ip_interface(t) for t in texts]


# -- names, MAC, MTU --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["eth0", "veth.1", "a", "x" * 15, "v@1", "e+-_"])
def test_valid_interface_names(name):
    assert network.validate_ifname(name) == name


@pytest.mark.parametrize("name", ["", "x" * 16, "lo", ".", "..", "eth 0", "eth/0", 5, None])
def test_invalid_interface_names_name_the_parameter(name):
    refused("ifname", "is not a valid interface name", network.validate_ifname, name)
    refused("bridge", "is not a valid interface name", network.validate_ifname, name, "bridge")


def test_host_ifname_must_carry_the_collection_prefix():
    assert network.validate_host_ifname("ovzweb") == "ovzweb"
    refused("host_ifname", "must start with 'ovz'", network.validate_host_ifname, "veth0")
    refused("host_ifname", "is not a valid interface name", network.validate_host_ifname, "ovz" + "x" * 13)


def test_mac_is_normalized():
    assert network.validate_mac(" 0E-12-34-56-78-9A ") == "0e:12:34:56:78:9a"


@pytest.mark.parametrize("mac, words", [
    ("0e:12:34:56:78", "is not a MAC address like 0e:12:34:56:78:9a"),
    ("0e:12:34:56:78:9g", "is not a MAC address"),
    (1234, "is not a MAC address"),
    ("01:00:5e:00:00:01", "is a multicast MAC address; a container needs a unicast one"),
    ("ff:ff:ff:ff:ff:ff", "is a multicast MAC address"),
    ("00:00:00:00:00:00", "is not a usable MAC address"),
])
def test_bad_macs(mac, words):
    refused("mac", words, network.validate_mac, mac)


def test_default_macs_are_stable_unicast_and_locally_administered(tmp_path):
    mac = network.default_mac(str(tmp_path), "ovzweb")
    assert mac == network.default_mac(str(tmp_path) + "/", "ovzweb")
    assert mac.startswith("0e:") and network.validate_mac(mac) == mac
    assert network.default_mac(str(tmp_path), "ovzweb", salt="host").startswith("fe:")
    assert network.default_mac(str(tmp_path), "ovzdb") != mac


def test_mtu():
    assert network.validate_mtu(None, []) is None
    assert network.validate_mtu(68, addrs("10.213.0.5")) == 68
    assert network.validate_mtu("9000", addrs("fd00:213::5")) == 9000
    refused("mtu", "67 is out of range 68-65535", network.validate_mtu, 67, [])
    refused("mtu", "1279 is out of range 1280-65535 (IPv6 needs at least 1280)",
            network.validate_mtu, 1279, addrs("10.213.0.5", "fd00:213::5"))
    refused("mtu", "65536 is out of range", network.validate_mtu, 65536, [])
    refused("mtu", "'big' is not a number", network.validate_mtu, "big", [])
    refused("mtu", "is not a number", network.validate_mtu, True, [])


# -- addresses ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, mode, canonical", [
    ("10.213.0.5", "routed", "10.213.0.5"),
    (" 10.213.0.5 ", "routed", "10.213.0.5"),
    ("10.213.0.5/32", "routed", "10.213.0.5"),
    ("fd00:213::5", "routed", "fd00:213::5"),
    ("fd00:213:0:0::5/128", "routed", "fd00:213::5"),
    ("10.213.0.5/24", "bridged", "10.213.0.5/24"),
    ("10.213.0.0/31", "bridged", "10.213.0.0/31"),
    ("fd00:213::5/64", "bridged", "fd00:213::5/64"),
    ("10.213.0.5", "bridged", "10.213.0.5"),
])
def test_addresses_parse_to_canonical_text(text, mode, canonical):
    assert network.format_address(network.parse_address(text, mode)) == canonical


@pytest.mark.parametrize("text, mode, words", [
    ("", "routed", "is not an IP address"),
    (None, "routed", "is not an IP address"),
    ("10.213.0.300", "routed", "is not an IPv4 or IPv6 address"),
    ("web", "routed", "is not an IPv4 or IPv6 address"),
    ("10.213.0.5/24", "routed", "routed mode gives each address a /32 host route; leave the prefix out"),
    ("fd00:213::5/64", "routed", "routed mode gives each address a /128 host route"),
    ("10.213.0.0/24", "bridged", "is the network or broadcast address of its prefix"),
    ("10.213.0.255/24", "bridged", "is the network or broadcast address of its prefix"),
    ("fd00:213::/64", "bridged", "is the network or broadcast address of its prefix"),
    ("0.0.0.0", "routed", "is the unspecified address"),
    ("::", "routed", "is the unspecified address"),
    ("127.0.0.2", "routed", "is a loopback address"),
    ("::1", "routed", "is a loopback address"),
    ("224.0.0.5", "routed", "is a multicast address"),
    ("ff02::1", "routed", "is a multicast address"),
    ("169.254.0.1", "routed", "link-local (the routed mode's gateways live there)"),
    ("fe80::1", "routed", "link-local"),
    ("255.255.255.255", "routed", "is a reserved address"),
    ("240.0.0.1", "routed", "is a reserved address"),
])
def test_bad_addresses_name_ip_address(text, mode, words):
    refused("ip_address", words, network.parse_address, text, mode)


def test_address_lists():
    assert network.normalize_addresses(["10.213.0.5", "10.213.0.5/32", "fd00:213::5"], "routed") == \
        ["10.213.0.5", "fd00:213::5"]
    refused("ip_address", "must be a list of addresses, got '10.213.0.5'",
            network.normalize_addresses, "10.213.0.5", "routed")
    refused("ip_address", "10.213.0.5 is listed twice with different prefixes",
            network.normalize_addresses, ["10.213.0.5/24", "10.213.0.5/25"], "bridged")


# -- routes -------------------------------------------------------------------------------------
def test_routes_normalize():
    mine = addrs("10.213.0.5/24", "fd00:213::5/64")
    assert network.normalize_route({"dst": "10.213.9.0/24", "via": "10.213.0.1", "metric": "10", "mtu": 1400},
                                   "bridged", mine) == \
        {"dst": "10.213.9.0/24", "via": "10.213.0.1", "mtu": 1400, "src": None, "metric": 10}
    assert network.normalize_route({"dst": "default", "via": "fe80::1"}, "bridged", mine)["dst"] == "default6"
    assert network.normalize_route({"dst": "default", "src": "10.213.0.5"}, "routed", mine)["dst"] == "default4"
    assert network.normalize_route({"dst": "default6"}, "routed", mine) == \
        {"dst": "default6", "via": None, "mtu": None, "src": None, "metric": None}


@pytest.mark.parametrize("route, mode, words", [
    ("10.213.9.0/24", "routed", "each route must be a dict with dst, via, mtu, src, metric"),
    ({"dst": "10.213.9.0/24", "gw": "10.213.0.1"}, "routed", "unknown route keys gw (known: dst, via, mtu, src, metric)"),
    ({"via": "10.213.0.1"}, "routed", "every route needs a dst (a CIDR or 'default'), got None"),
    ({"dst": "10.213.9.1/24"}, "routed", "dst '10.213.9.1/24' is not a network"),
    ({"dst": "default"}, "routed", "route 'default' needs a via or src to tell IPv4 from IPv6"),
    ({"dst": "10.213.9.0/24", "via": "fd00:213::1"}, "routed", "route 10.213.9.0/24 mixes IPv4 and IPv6"),
    ({"dst": "default4", "via": "gateway"}, "routed", "via 'gateway' of route default4 is not an IP address"),
    ({"dst": "default4", "via": "224.0.0.1"}, "routed", "via 224.0.0.1 of route default4 is not a usable gateway"),
    ({"dst": "default4", "via": "10.213.1.1"}, "bridged",
     "via 10.213.1.1 of route default4 is not on the link: no address of the container has a prefix that covers it"),
    ({"dst": "default4", "via": "10.213.0.5"}, "bridged", "via 10.213.0.5 of route default4 is the container's own address"),
    ({"dst": "default4", "src": "10.213.0.6"}, "routed", "src 10.213.0.6 of route default4 is not one of the container's"),
    ({"dst": "default4", "mtu": 67}, "routed", "mtu 67 of route default4 is out of range 68-65535"),
    ({"dst": "default6", "mtu": 1279}, "routed", "mtu 1279 of route default6 is out of range 1280-65535"),
    ({"dst": "default4", "mtu": "jumbo"}, "routed", "mtu 'jumbo' of route default4 is not a number"),
    ({"dst": "default4", "metric": -1}, "routed", "metric -1 of route default4 is out of range 0-4294967295"),
    ({"dst": "default4", "metric": True}, "routed", "metric True of route default4 is not a number"),
])
def test_bad_routes_name_routes(route, mode, words):
    refused("routes", words, network.normalize_route, route, mode, addrs("10.213.0.5/24"))


def test_route_lists():
    mine = addrs("10.213.0.5")
    refused("routes", "must be a list of route dicts", network.normalize_routes, {"dst": "default4"}, "routed", mine)
    refused("routes", "route default4 (metric 0) is listed twice", network.normalize_routes,
            [{"dst": "default4"}, {"dst": "default", "src": "10.213.0.5"}], "routed", mine)
    assert len(network.normalize_routes([{"dst": "default4"}, {"dst": "default4", "metric": 5}], "routed", mine)) == 2


# -- name servers, search domains ------------------------------------------------------------
def test_nameservers():
    assert network.normalize_nameservers(["10.213.0.1", " fd00:213::1", "10.213.0.1"]) == ["10.213.0.1", "fd00:213::1"]
    refused("nameserver", "must be a list of IP addresses", network.normalize_nameservers, "10.213.0.1")
    refused("nameserver", "'dns' is not an IP address", network.normalize_nameservers, ["dns"])
    refused("nameserver", "0.0.0.0 is not a usable name server", network.normalize_nameservers, ["0.0.0.0"])
    refused("nameserver", "ff02::1 is not a usable name server", network.normalize_nameservers, ["ff02::1"])


def test_searchdomains():
    assert network.normalize_searchdomains(["example.org", "lab.example.org.", "example.org"]) == \
        ["example.org", "lab.example.org."]
    refused("searchdomain", "must be a list of domain names", network.normalize_searchdomains, "example.org")
    refused("searchdomain", "'-bad.example' is not a domain name", network.normalize_searchdomains, ["-bad.example"])
    refused("searchdomain", "is not a domain name", network.normalize_searchdomains, ["a" * 64 + ".org"])
    refused("searchdomain", "is not a domain name", network.normalize_searchdomains, [5])
    many = ["d%03d.%s.org" % (i, "x" * 40) for i in range(30)]
    refused("searchdomain", "the search list is longer than resolv.conf allows (1024 characters)",
            network.normalize_searchdomains, many)


# -- the whole settings: modes and bridge rules ---------------------------------------------------
def test_defaults_are_derived_once_and_stored(tmp_path):
    data_dir = str(tmp_path)
    conf = normalize_network("ovzweb", data_dir, {"ip_address": ["10.213.0.5"]})
    assert conf == {
        "netif_mode": "routed", "ip_address": ["10.213.0.5"], "ifname": "eth0",
        "host_ifname": network.default_host_ifname(data_dir, "ovzweb"), "bridge": None,
        "mac": network.default_mac(data_dir, "ovzweb"), "mtu": None, "routes": [], "nameserver": [],
        "searchdomain": [], "mac_filter": True}
    assert conf["host_ifname"].startswith("ovz") and len(conf["host_ifname"]) == 13
    # None keeps what is stored; a value given replaces it.
    again = normalize_network("ovzweb", data_dir, {"ip_address": None, "mtu": 1400}, conf)
    assert again == dict(conf, mtu=1400)


@pytest.mark.parametrize("desired, current, param, words", [
    ({"gateway": "10.213.0.1"}, None, "gateway", "unknown network settings: gateway"),
    ({"netif_mode": "nat"}, None, "netif_mode", "must be one of routed, bridged, got 'nat'"),
    ({"mac_filter": "yes"}, None, "mac_filter", "must be true or false"),
    ({"mac_filter": False}, None, "mac_filter", "routed mode always filters spoofed sources; mac_filter=false is for bridged"),
    ({"bridge": "br0"}, None, "bridge", "a bridge is for netif_mode=bridged"),
    ({"netif_mode": "bridged"}, None, "bridge", "netif_mode=bridged needs a bridge"),
    ({"netif_mode": "bridged", "bridge": "b r"}, None, "bridge", "is not a valid interface name"),
    ({"ifname": "lo"}, None, "ifname", "'lo' is not a valid interface name"),
    ({"host_ifname": "veth1"}, None, "host_ifname", "must start with 'ovz'"),
    ({"mac": "01:02:03:04:05:06"}, None, "mac", "is a multicast MAC address"),
    ({"ip_address": ["fd00:213::5"], "mtu": 1000}, None, "mtu", "IPv6 needs at least 1280"),
    ({"routes": [{"dst": "default4", "src": "10.213.0.9"}]}, {"ip_address": ["10.213.0.5"]}, "routes",
     "src 10.213.0.9 of route default4 is not one of the container's addresses"),
    ({"nameserver": ["x"]}, None, "nameserver", "'x' is not an IP address"),
    ({"searchdomain": ["a..b"]}, None, "searchdomain", "'a..b' is not a domain name"),
    # Leaving bridged mode for routed keeps a prefix that routed mode refuses.
    ({"netif_mode": "routed"}, {"netif_mode": "bridged", "bridge": "br0", "ip_address": ["10.213.0.5/24"]},
     "ip_address", "routed mode gives each address a /32 host route"),
])
def test_bad_settings_name_their_parameter(tmp_path, desired, current, param, words):
    refused(param, words, normalize_network, "ovzweb", str(tmp_path), desired, current)


def test_bridged_mode_keeps_bridge_and_mac_filter_and_routed_drops_them(tmp_path):
    data_dir = str(tmp_path)
    bridged = normalize_network("ovzweb", data_dir, {"netif_mode": "bridged", "bridge": "br0", "mac_filter": False,
                                                     "ip_address": ["10.213.0.5/24"]})
    assert (bridged["bridge"], bridged["mac_filter"], bridged["ip_address"]) == ("br0", False, ["10.213.0.5/24"])
    routed = normalize_network("ovzweb", data_dir, {"netif_mode": "routed", "ip_address": ["10.213.0.5"]}, bridged)
    assert (routed["bridge"], routed["mac_filter"]) == (None, True)


def test_same_config_ignores_address_order():
    left = {"ip_address": ["10.213.0.5", "10.213.0.6"], "mtu": None}
    assert network.same_config(left, {"ip_address": ["10.213.0.6", "10.213.0.5"], "mtu": None})
    assert not network.same_config(left, dict(left, mtu=1400))
    assert network.same_config(None, {}) and not network.same_config(left, None)


def test_address_conflicts_with_other_containers(tmp_path):
    conf = normalize_network("ovzweb", str(tmp_path), {"ip_address": ["10.213.0.5", "fd00:213::5"]})
    network.check_address_conflicts("ovzweb", conf, [("ovzweb", conf), ("ovzdb", {}), ("ovzmail", {"ip_address": ["10.213.0.6"]})])
    refused("ip_address", "fd00:213::5 already used by container ovzdb", network.check_address_conflicts,
            "ovzweb", conf, [("ovzdb", {"ip_address": ["fd00:213::5/64"], "host_ifname": "ovzdb"})])
    refused("host_ifname", "%s is already the host end of container ovzdb" % conf["host_ifname"],
            network.check_address_conflicts, "ovzweb", conf, [("ovzdb", {"host_ifname": conf["host_ifname"]})])


# -- the plan -----------------------------------------------------------------------------------
def test_a_new_network_is_a_change_of_every_key(tmp_path):
    plan = plan_network("ovzweb", str(tmp_path), {"ip_address": ["10.213.0.5"]}, {}, None, False, view=EMPTY)
    assert plan.changed and not plan.live
    assert plan.before == {} and plan.after["ip_address"] == ["10.213.0.5"]
    # Every key the settings now have a value for; bridge and mtu stay unset (None on both sides).
    assert plan.changed_keys() == ["host_ifname", "ifname", "ip_address", "mac", "mac_filter", "nameserver",
                                   "netif_mode", "routes", "searchdomain"]


def test_the_same_settings_again_change_nothing(tmp_path):
    data_dir = str(tmp_path)
    current = normalize_network("ovzweb", data_dir, {"ip_address": ["10.213.0.5", "10.213.0.6"]})
    plan = plan_network("ovzweb", data_dir, {"ip_address": ["10.213.0.6", "10.213.0.5"]}, current, None, False,
                        view=EMPTY)
    assert not plan.changed and plan.changed_keys() == []
    assert plan.before == current and plan.before is not current


def test_a_changed_setting_names_only_its_key(tmp_path):
    data_dir = str(tmp_path)
    current = normalize_network("ovzweb", data_dir, {"ip_address": ["10.213.0.5"]})
    plan = plan_network("ovzweb", data_dir, {"ip_address": ["10.213.0.5", "fd00:213::5"], "mtu": 1500}, current,
                        None, False, view=EMPTY)
    assert plan.changed and plan.changed_keys() == ["ip_address", "mtu"]
    assert plan.before["ip_address"] == ["10.213.0.5"] and plan.after["ip_address"] == ["10.213.0.5", "fd00:213::5"]


def test_a_running_container_needs_live_work_until_its_applied_settings_match(tmp_path):
    data_dir = str(tmp_path)
    stored = normalize_network("ovzweb", data_dir, {"ip_address": ["10.213.0.5"]})
    # Stored and asked agree, but the running container was set up with something else.
    plan = plan_network("ovzweb", data_dir, {}, stored, {"config": dict(stored, mtu=1400)}, True, view=EMPTY)
    assert plan.live and plan.changed and plan.changed_keys() == []
    plan = plan_network("ovzweb", data_dir, {}, stored, {"config": stored}, True, view=EMPTY)
    assert not plan.live and not plan.changed
    # Stopped: nothing runs to change.
    plan = plan_network("ovzweb", data_dir, {}, stored, None, False, view=EMPTY)
    assert not plan.live and not plan.changed


def test_removing_the_network(tmp_path):
    data_dir = str(tmp_path)
    stored = normalize_network("ovzweb", data_dir, {"ip_address": ["10.213.0.5"]})
    plan = plan_network("ovzweb", data_dir, None, stored, {"config": stored}, True, view=EMPTY)
    assert plan.after == {} and plan.before == stored and plan.changed and plan.live
    assert not plan_network("ovzweb", data_dir, None, {}, None, False, view=EMPTY).changed


def test_the_plan_checks_other_containers(tmp_path):
    refused("ip_address", "10.213.0.5 already used by container ovzdb", plan_network, "ovzweb", str(tmp_path),
            {"ip_address": ["10.213.0.5"]}, {}, None, False, [("ovzdb", {"ip_address": ["10.213.0.5"]})], EMPTY)


def test_the_plan_checks_the_host(tmp_path):
    data_dir = str(tmp_path)
    bridged = {"netif_mode": "bridged", "bridge": "br0", "ip_address": ["10.213.0.5/24"]}
    assert plan_network("ovzweb", data_dir, bridged, {}, None, False, view=view(BRIDGE)).after["bridge"] == "br0"
    refused("bridge", "bridge br0 does not exist on this host", plan_network, "ovzweb", data_dir, bridged, {},
            None, False, view=EMPTY)
    refused("bridge", "eth9 is not a bridge (it is a plain link)", plan_network, "ovzweb", data_dir,
            dict(bridged, bridge="eth9"), {}, None, False, view=view(PLAIN))
    refused("bridge", "ovzv is not a bridge (it is a veth link)", plan_network, "ovzweb", data_dir,
            dict(bridged, bridge="ovzv"), {}, None, False, view=view(FakeLink("ovzv", 8, kind="veth")))
    refused("mtu", "1500 is below the MTU of bridge br0 (9000)", plan_network, "ovzweb", data_dir,
            dict(bridged, mtu=1500), {}, None, False, view=view(BRIDGE))
    refused("ip_address", "10.213.0.5 is an address of this host", plan_network, "ovzweb", data_dir,
            {"ip_address": ["10.213.0.5"]}, {}, None, False, view=view(local={"10.213.0.5"}))


def test_the_host_end_name_must_be_free_or_ours(tmp_path):
    data_dir = str(tmp_path)
    taken = FakeLink("ovzweb", 5)
    refused("host_ifname", "ovzweb already exists on this host and is not a container's host end", plan_network,
            "ovzweb", data_dir, {"host_ifname": "ovzweb"}, {}, None, False, view=view(taken))
    # A host end of this collection (by its alias), or this container's own, is not in the way.
    ours = FakeLink("ovzweb", 5, alias="ovz:/elsewhere:ovzweb")
    assert plan_network("ovzweb", data_dir, {"host_ifname": "ovzweb"}, {}, None, False, view=view(ours)).changed
    stored = {"host_ifname": "ovzweb"}
    assert plan_network("ovzweb", data_dir, {"host_ifname": "ovzweb"}, stored, None, False, view=view(taken)).changed


def test_an_address_routed_to_another_interface_is_refused(tmp_path):
    data_dir = str(tmp_path)
    elsewhere = view(FakeLink("ovzother", 6), routes=[("10.213.0.5", 32, 6)])
    refused("ip_address", "10.213.0.5 is already routed to another interface of this host (another container?)",
            plan_network, "ovzweb", data_dir, {"ip_address": ["10.213.0.5"]}, {}, None, False, view=elsewhere)
    # Routed to this container's own host end: it is this container's address already.
    stored = normalize_network("ovzweb", data_dir, {"ip_address": ["10.213.0.5"]})
    own = view(FakeLink(stored["host_ifname"], 7), routes=[("10.213.0.5", 32, 7)])
    plan = plan_network("ovzweb", data_dir, {"mtu": 1400}, stored, {"config": stored}, True, view=own)
    assert plan.live and plan.changed_keys() == ["mtu"]
    # A route to a wider prefix is no clash.
    plan_network("ovzweb", data_dir, {"ip_address": ["10.213.0.5"]}, {}, None, False,
                 view=view(routes=[("10.213.0.0", 24, 6)]))


def test_addresses_given_newly_are_the_ones_probed(tmp_path):
    data_dir = str(tmp_path)
    before = normalize_network("ovzweb", data_dir, {"ip_address": ["10.213.0.5"]})
    after = normalize_network("ovzweb", data_dir, {"ip_address": ["10.213.0.5", "fd00:213::5"]}, before)
    assert network.new_addresses(before, after) == [ipaddress.ip_address("fd00:213::5")]
    assert network.new_addresses(None, before) == [ipaddress.ip_address("10.213.0.5")]
    assert network.new_addresses(after, {}) == []
    bridged = dict(after, netif_mode="bridged", bridge="br0")
    assert network.dad_targets(bridged, network.new_addresses(before, after)) == \
        [(ipaddress.ip_address("fd00:213::5"), "br0")]
    assert network.dad_targets(after, []) == []
