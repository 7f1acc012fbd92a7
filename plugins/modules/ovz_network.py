#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: ovz_network
short_description: Give a container its addresses, routed (like venet) or bridged, with anti-spoofing
version_added: 0.1.0
description:
  - Manages a container's network interface, as C(vzctl set --ipadd/--ipdel/--netif_add/--nameserver/--searchdomain) does.
  - The container gets one veth pair. Its host end is named C(ovz<10 hex digits>) (or O(host_ifname)) and carries the
    alias C(ovz:<data_dir>:<name>); its network namespace is named C(ovz-<node>-<name>) for C(ip netns exec).
  - C(<node>) is the identity of the data dir (8 hex digits, recorded in C(<data_dir>/node.json)); the default host end
    name is derived from it and the name, so two data dirs on one host never share a host object.
  - Settings are stored in the container's configuration and applied at every start. On a running (or frozen)
    container they are also applied at once, without a restart; changing O(netif_mode), O(ifname), O(host_ifname),
    O(bridge) or O(mac) replaces the interface, other changes are made in place.
  - The first call with O(state=present) gives the container its interface; O(state=absent) removes it.
  - Everything the module makes on the host is removed when the container stops or is destroyed.
options:
  state:
    description:
      - V(present) makes sure the container has an interface with these settings.
      - V(absent) removes the interface and the stored network settings.
    type: str
    choices: [present, absent]
    default: present
  ip_address:
    description:
      - The container's IPv4 and IPv6 addresses. The list is the complete set; an address left out is removed.
      - In V(routed) mode give plain addresses (they become /32 and /128).
      - In V(bridged) mode an address may carry a prefix, as in C(10.0.0.5/24).
      - An address that another container of the same O(data_dir) has, or that this host owns or routes elsewhere, fails.
      - An address the container does not have yet is first probed for where it will be announced (duplicate-address
        detection, as C(vzctl) does with C(arpsend -D)) - an ARP probe from C(0.0.0.0) for IPv4, a neighbour
        solicitation from C(::) for IPv6, on every host interface whose prefix covers it in V(routed) mode (where the
        proxy ARP/NDP entry goes) and on O(bridge) in V(bridged) mode. When a neighbour answers, the call fails
        naming the address and the MAC that holds it, and changes nothing. See O(dad_timeout).
      - Addresses are never probed again at a start, restore or migration.
      - Omit to keep the current set.
    type: list
    elements: str
  netif_mode:
    description:
      - V(routed), like OpenVZ's venet. The container's addresses are host routes via the host end. Its default routes
        go via the link-local gateways C(169.254.0.1) and C(fe80::1). The host answers ARP and NDP for them
        (proxy entries) on every host interface whose own prefix covers them. Containers share no layer 2,
        and packets with a source address the container was not given are always dropped.
      - V(bridged) puts the host end into O(bridge); the container owns O(mac) on that segment.
      - Defaults to V(routed) for a container that has no interface yet.
    type: str
    choices: [routed, bridged]
  bridge:
    description:
      - The bridge the host end joins in V(bridged) mode. It must exist.
    type: str
  ifname:
    description:
      - The interface's name inside the container. Defaults to V(eth0).
    type: str
  host_ifname:
    description:
      - The name of the host end. It must start with C(ovz) and have at most 15 characters.
      - Defaults to C(ovz) and 10 hex digits derived from O(data_dir) and O(name).
    type: str
  mac:
    description:
      - The MAC address of the container's interface, a unicast address.
      - Defaults to a stable, locally administered address derived from O(data_dir) and O(name).
    type: str
  mtu:
    description:
      - The MTU of both ends, 68 to 65535 (at least 1280 with IPv6 addresses).
      - In V(bridged) mode it defaults to the bridge's MTU, and a lower value fails because it would lower the bridge's MTU.
    type: int
  routes:
    description:
      - Extra routes inside the container. The list is the complete set.
      - In V(routed) mode a route without O(routes[].via) goes via the link-local gateway.
    type: list
    elements: dict
    suboptions:
      dst:
        description:
          - The destination, a network in CIDR notation, or V(default4) / V(default6).
          - V(default) works when O(routes[].via) or O(routes[].src) tells the address family.
        type: str
        required: true
      via:
        description:
          - The gateway. In V(bridged) mode it must lie in the prefix of one of the container's addresses.
        type: str
      mtu:
        description:
          - The path MTU for this destination (C(ip route ... mtu)).
        type: int
      src:
        description:
          - The source address for this destination; one of O(ip_address).
        type: str
      metric:
        description:
          - The route's metric (priority).
        type: int
  nameserver:
    description:
      - Name servers written to the container's C(/etc/resolv.conf), at start and at once when they change.
      - The file is written inside the container's own root; a symbolic link there cannot lead out of it.
    type: list
    elements: str
  searchdomain:
    description:
      - Search domains written to the container's C(/etc/resolv.conf).
    type: list
    elements: str
  mac_filter:
    description:
      - In V(bridged) mode, drop frames from the container whose source MAC is not O(mac), packets whose source IP is not
        in O(ip_address), forged ARP and neighbour advertisements, and keep unicast for other MACs, and ARP and neighbour
        solicitations for other addresses, from reaching the container.
      - V(routed) mode always filters; V(false) is refused there.
      - Defaults to V(true).
    type: bool
  dad_timeout:
    description:
      - Seconds to wait for an answer to the duplicate-address probe of the addresses this call newly gives, 0 to 30.
        Three probes are spread over the wait.
      - Defaults to V(1), the wait of C(arping -D) and C(vzctl)'s C(arpsend -D). V(0) sends no probe (for a segment
        whose neighbours do not answer probes).
      - The wait is part of this call only, never of a start. It is also spent in check mode, which reports the refusal.
    type: float
extends_documentation_fragment:
  - ovz.containers.common
  - ovz.containers.common.attributes
  - ovz.containers.common.name
requirements:
  - pyroute2 (Debian package C(python3-pyroute2)) on the managed host.
  - The C(nft) binary (Debian package C(nftables)) on the managed host.
notes:
  - Anti-spoofing lives in the node's nftables table C(netdev ovz-<node>), one chain per direction and container, named after
    the host end. Containers started before data dirs had an identity keep C(netdev ovz) and C(ovz-<name>) until they stop.
  - The duplicate-address probe is sent through a raw packet socket (C(CAP_NET_RAW)); a neighbour that only proxies
    ARP for the address (Linux answers no ARP probe from a proxy entry) is not seen, as with C(arpsend -D).
  - Traffic beyond the host needs IP forwarding on the host (C(net.ipv4.ip_forward), C(net.ipv6.conf.all.forwarding)) and,
    for proxy NDP, C(net.ipv6.conf.<interface>.proxy_ndp); the module warns when they are off and leaves them alone.
attributes:
  check_mode:
    support: full
    description: Reports what would change and changes nothing.
  diff_mode:
    support: full
    description: Shows the container's network settings before and after.
seealso:
  - module: ovz.containers.ovz_container
author:
  - ovz.containers developers (@ovz-containers)
'''

EXAMPLES = r'''
- name: Two IPv4 and one IPv6 address, routed like venet, with DNS
  ovz.containers.ovz_network:
    name: "101"
    ip_address: [10.0.0.101, 10.0.1.101, "2001:db8::101"]
    nameserver: [10.0.0.1]
    searchdomain: [example.com]

- name: Remove one address live (the list is the complete set)
  ovz.containers.ovz_network:
    name: "101"
    ip_address: [10.0.0.101, "2001:db8::101"]

- name: A bridged container with its own MAC, and a route with its own MTU and source
  ovz.containers.ovz_network:
    name: web1
    netif_mode: bridged
    bridge: br0
    mac: 0e:00:00:00:01:01
    ip_address: [192.168.10.21/24]
    routes:
      - {dst: default4, via: 192.168.10.1}
      - {dst: 10.50.0.0/16, via: 192.168.10.254, mtu: 1400, src: 192.168.10.21}

- name: Take the interface away
  ovz.containers.ovz_network:
    name: web1
    state: absent
'''

RETURN = r'''
network:
  description: The container's network settings after the call, and where it runs, what the host holds for it.
  returned: always
  type: dict
  contains:
    netif_mode:
      description: V(routed) or V(bridged).
      type: str
      sample: routed
    ip_address:
      description: Its addresses (host prefixes left out).
      type: list
      elements: str
      sample: [10.0.0.101, "2001:db8::101"]
    host_ifname:
      description: The host end of its veth pair.
      type: str
      sample: ovz1f3a9c02de
    mac:
      description: The MAC address of its interface.
      type: str
      sample: 0e:8a:11:03:9c:4d
    routes:
      description: Its extra routes, normalized (V(default4)/V(default6) for default routes).
      type: list
      elements: dict
      sample: [{"dst": "10.50.0.0/16", "via": null, "mtu": 1400, "src": "10.0.0.101", "metric": null}]
    runtime:
      description: What the host holds for the running container - its host end, netns name and proxy neighbour entries.
      type: dict
      returned: when the container runs
      sample: {"host_ifname": "ovz1f3a9c02de", "netns": "/run/netns/ovz-3f9a01c2-101", "proxy": [["10.0.0.101", "eth0"]]}
'''

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.ovz.containers.plugins.module_utils._engine.resources import network
from ansible_collections.ovz.containers.plugins.module_utils._ansible.argspec import NAME_ARGUMENT_SPEC, argument_spec
from ansible_collections.ovz.containers.plugins.module_utils._ansible.results import run_module
from ansible_collections.ovz.containers.plugins.module_utils._engine.node.config import validate_name
from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager
from ansible_collections.ovz.containers.plugins.module_utils._engine.ops.converge import apply_network, plan_network
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.errors import StateConflict
from ansible_collections.ovz.containers.plugins.module_utils._ansible.argspec import NETWORK_OPTIONS


ARGUMENT_SPEC = argument_spec(**NAME_ARGUMENT_SPEC,
                              state=dict(type='str', default='present', choices=['present', 'absent']),
                              **NETWORK_OPTIONS)


def configure(module, result):
    if not network.has_pyroute2():
        module.fail_json(msg=missing_required_lib('pyroute2'), exception=network.PYROUTE2_IMPORT_ERROR)
    params = module.params
    name = validate_name(params['name'])
    manager = ContainerManager(params['data_dir'], params['cgroup_parent'])
    if not manager.exists(name):
        raise StateConflict('container %s does not exist; create it with ovz_container first' % name, 'name')
    with manager.lock(name):
        step = plan_network(manager, name, params)
        planned, running, runtime = step.plan, step.running, step.runtime
        if planned.changed and not module.check_mode:
            runtime = apply_network(manager, step, module.warn)
    result.update(changed=planned.changed, diff=dict(before=planned.before, after=planned.after))
    shown = planned.after if module.check_mode or planned.changed else planned.before
    result['network'] = network.network_facts(shown, runtime if running and not module.check_mode else None)


def main():
    run_module(ARGUMENT_SPEC, configure)


if __name__ == '__main__':
    main()
