#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: ovz_fleet
short_description: Converge many containers of a node in one run - lifecycle, limits, network and quota
version_added: 0.1.0
description:
  - Converges a list of containers on one node in a single module run, as if M(ovz.containers.ovz_container),
    M(ovz.containers.ovz_limits), M(ovz.containers.ovz_network) and M(ovz.containers.ovz_quota) had been called
    for each of them, through the same engine code. A fleet of a hundred containers costs one task, not one
    task per container and parameter.
  - Every container's request is validated against the node before anything changes. Bad input fails naming
    the container and the parameter (for example C(containers[web1].limits.ram)) and changes nothing.
  - A new container gets its network, limits and quota stored before its first start, so it starts with them.
    An existing one gets them live, as the single modules do.
  - Containers of the node that are not in the list are left alone, unless O(prune) removes those of the same
    O(fleet).
  - With O(nodes), an item whose O(containers[].node) is not one of them fails the run before anything changes,
    naming the item and the node. Every node checks the whole list, so under the role every node fails alike.
  - The role P(ovz.containers.ovz_fleet#role) runs this module on every node with the fleet declared once for the
    whole inventory.
options:
  containers:
    description:
      - The containers, each with the options of M(ovz.containers.ovz_container) and its limits, network and quota.
      - Names must be unique among the items this node converges.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The container's name, as O(ovz.containers.ovz_container#module:name).
        type: str
        required: true
        aliases: [ctid]
      node:
        description:
          - The node (inventory host) that runs the container. With O(node) set, only items whose node is O(node)
            are converged here; items without a node are converged on every node.
          - With O(nodes) set, it must be one of them.
        type: str
      state:
        description:
          - As O(ovz.containers.ovz_container#module:state); V(restarted) is left out because a fleet run must be
            idempotent.
        type: str
        choices: [present, started, stopped, frozen, absent]
        default: started
      template:
        description: The OS template a new container is created from, as O(ovz.containers.ovz_container#module:template).
        type: str
      hostname:
        description: Its hostname (defaults to the name at creation), changed live.
        type: str
      onboot:
        description: Whether it starts when the host boots.
        type: bool
      bootorder:
        description: Higher boot orders start first at host boot.
        type: int
      labels:
        description:
          - Free-form labels (the complete set). With O(fleet) the label C(ovz_fleet) is added.
          - Omit to keep the current labels.
        type: dict
      seccomp_allow:
        description:
          - Calls of the seccomp filter this container may make after all (the complete set), as
            P(ovz.containers.ovz_container#module)'s O(ovz.containers.ovz_container#module:seccomp_allow).
          - Omit to keep the current list.
        type: list
        elements: str
      init:
        description: The container's init, an absolute path inside it.
        type: str
        default: /sbin/init
      layout:
        description: V(image) or V(directory) at creation (default V(image)); it cannot be changed later.
        type: str
        choices: [image, directory]
      unprivileged:
        description:
          - Run the container in its own user namespace, as O(ovz.containers.ovz_container#module:unprivileged)
            (default V(true) at creation; an existing container changes only while stopped).
        type: bool
      wait_boot:
        description: After a start, wait until the container's startup scripts have run.
        type: bool
        default: false
      timeout:
        description: Seconds to wait for a graceful stop, and for the boot with O(containers[].wait_boot).
        type: int
        default: 60
      limits:
        description:
          - Resource limits, as the options of M(ovz.containers.ovz_limits); only the keys given change.
          - Omit to leave the limits alone.
        type: dict
        suboptions:
          cpuunits:
            description: CPU weight, 8 to 500000 (default 1000).
            type: int
          cpulimit:
            description: CPU time in percent of one CPU; C(0) removes the limit.
            type: int
          cpus:
            description: Number of CPUs' worth of time; C(0) removes the limit.
            type: int
          cpumask:
            description: The CPUs the container may run on, as C(0-3,6), or V(all).
            type: str
          ram:
            description: Memory limit, as C(512M) or V(unlimited).
            type: str
          swap:
            description: Swap on top of O(containers[].limits.ram), or V(unlimited).
            type: str
          numproc:
            description: Processes and threads, as C(barrier:limit), one number, or V(unlimited).
            type: str
          ioprio:
            description: I/O priority 0 to 7 (BFQ weights).
            type: int
          iolimit:
            description: Disk bandwidth in bytes per second, as C(10M); C(0) removes it.
            type: str
          iopslimit:
            description: Disk operations per second; C(0) removes it.
            type: int
          ubc:
            description: Other beancounters as C(name) to C(barrier:limit).
            type: dict
      network:
        description:
          - The container's interface, as the options of M(ovz.containers.ovz_network) with O(ovz.containers.ovz_network#module:state=present).
          - O(containers[].network.ip_address) is the complete set; addresses must not clash with other containers of
            the node, including those of this list.
          - Omit to leave the network alone.
        type: dict
        suboptions:
          ip_address:
            description: IPv4 and IPv6 addresses (the complete set).
            type: list
            elements: str
          netif_mode:
            description: V(routed) (default for a new interface) or V(bridged).
            type: str
            choices: [routed, bridged]
          bridge:
            description: The bridge the host end joins in V(bridged) mode.
            type: str
          ifname:
            description: The interface's name inside (default V(eth0)).
            type: str
          host_ifname:
            description: The host end's name, starting with C(ovz).
            type: str
          mac:
            description: The container's MAC address.
            type: str
          mtu:
            description: The MTU of both ends.
            type: int
          routes:
            description: Extra routes inside the container (the complete set).
            type: list
            elements: dict
            suboptions:
              dst:
                description: The destination network, or V(default4) / V(default6).
                type: str
                required: true
              via:
                description: The gateway.
                type: str
              mtu:
                description: The path MTU.
                type: int
              src:
                description: The source address, one of the container's.
                type: str
              metric:
                description: The route's metric.
                type: int
          nameserver:
            description: Name servers for the container's C(/etc/resolv.conf).
            type: list
            elements: str
          searchdomain:
            description: Search domains for the container's C(/etc/resolv.conf).
            type: list
            elements: str
          mac_filter:
            description: MAC and IP filtering in V(bridged) mode (default V(true)).
            type: bool
          dad_timeout:
            description:
              - Seconds to wait for an answer to the duplicate-address probe of the addresses this run newly gives
                (default V(1); V(0) sends no probe). All items are probed in one round, before any change, for as
                long as the longest value given; an address held on its segment fails the run, naming the item.
              - Addresses a container of the node holds before the run are not probed.
            type: float
      quota:
        description:
          - Disk quota, as the options of M(ovz.containers.ovz_quota). For a new container O(containers[].quota.diskspace)
            and O(containers[].quota.diskinodes) are its initial sizes (the image's size for the V(image) layout).
          - Omit to leave the quota alone.
        type: dict
        suboptions:
          diskspace:
            description: Disk space as C(soft:hard) or one size.
            type: str
          diskinodes:
            description: Inodes as C(soft:hard) or one number.
            type: str
          quotatime:
            description: Grace time for soft limits, as C(7d).
            type: str
          quotaugidlimit:
            description: Turns per-user and per-group quota inside on (above 0) or off (C(0)).
            type: int
          users:
            description: Per-user limits inside the container.
            type: list
            elements: dict
            suboptions:
              name:
                description: A user name or numeric ID.
                type: str
                required: true
              blocks:
                description: Disk space as C(soft:hard) or one size.
                type: str
              inodes:
                description: Inodes as C(soft:hard) or one number.
                type: str
          groups:
            description: Per-group limits inside the container.
            type: list
            elements: dict
            suboptions:
              name:
                description: A group name or numeric ID.
                type: str
                required: true
              blocks:
                description: Disk space as C(soft:hard) or one size.
                type: str
              inodes:
                description: Inodes as C(soft:hard) or one number.
                type: str
          restart:
            description: Allow a stop and start for changes that need the filesystem unmounted.
            type: bool
            default: false
  node:
    description:
      - This node's name (the role passes C(inventory_hostname)). Items of O(containers) whose
        O(containers[].node) is another node are skipped.
      - Omit to converge every item here.
    type: str
  nodes:
    description:
      - Every node an item may name (the role passes the inventory's hosts, C(groups['all'])).
      - An item whose O(containers[].node) is not one of them fails the run before anything changes, naming the
        item and the node. A misspelt node would otherwise leave the item converged on no node, and O(prune)
        would remove its container from the node that runs it. O(node) must be one of them too.
      - Omit to skip the check.
    type: list
    elements: str
  play_nodes:
    description:
      - The nodes converged in this run (the role passes C(ansible_play_hosts), which C(--limit) narrows).
      - With O(prune), a container of this node that the list now declares for another node is removed only when
        that node is one of these, so that it is created there in the same run; otherwise it is kept, with a
        warning, and listed in RV(prune_kept).
      - Omit to treat every node as part of the run.
    type: list
    elements: str
  fleet:
    description:
      - The fleet's name. Every container converged gets the label C(ovz_fleet) with this value, which
        O(prune) and the inventory plugin's label groups use.
    type: str
  prune:
    description:
      - Destroy the containers of this node whose label C(ovz_fleet) is O(fleet) but that are no longer
        in O(containers) for this node. Containers of other fleets or without the label are never touched.
      - A running container is stopped, then destroyed. RV(pruned) lists them; in check mode, those it would remove.
      - See O(nodes) and O(play_nodes) for the guards against a misspelt node and a partial (C(--limit)) run.
    type: bool
    default: false
extends_documentation_fragment:
  - ovz.containers.common
  - ovz.containers.common.attributes
attributes:
  check_mode:
    support: full
    description: Reports what would change for each container, and in RV(pruned) what O(prune) would remove, and changes nothing.
  diff_mode:
    support: full
    description: Shows the settings, limits, network and quota of each container that changes, before and after.
notes:
  - The containers are converged one after another in list order, after all of them were validated. A failure
    of the kernel or the host while applying (not of the input) stops the run; the containers before it are
    converged, the failing one is left as the single module would leave it, and the result lists them.
  - A container moved to another node in the declaration is created afresh there, and removed from its old node
    only with O(prune). Use M(ovz.containers.ovz_checkpoint) with V(migrated) to move a running container.
seealso:
  - module: ovz.containers.ovz_container
  - module: ovz.containers.ovz_limits
  - module: ovz.containers.ovz_network
  - module: ovz.containers.ovz_quota
author:
  - ovz.containers developers (@ovz-containers)
'''

EXAMPLES = r'''
- name: Two web containers and a database on this node
  ovz.containers.ovz_fleet:
    fleet: shop
    containers:
      - name: web1
        template: busybox
        layout: directory
        labels: {role: web}
        limits: {cpuunits: 2000, ram: 256M}
        network: {ip_address: [10.0.0.11]}
      - name: web2
        template: busybox
        labels: {role: web}
        limits: {cpuunits: 2000, ram: 256M}
        network: {ip_address: [10.0.0.12]}
      - name: db1
        template: debian-12
        onboot: true
        limits: {ram: 2G, numproc: 500}
        network: {ip_address: [10.0.0.20], nameserver: [10.0.0.1]}
        quota: {diskspace: 10G, diskinodes: 500000}
  register: fleet

- name: Show what changed
  ansible.builtin.debug:
    msg: "{{ fleet.containers | dict2items | selectattr('value.changed') | map(attribute='key') | list }}"

- name: Only this node's share of a fleet declared for the whole inventory, removing what left it
  ovz.containers.ovz_fleet:
    containers: "{{ fleet_containers }}"
    node: "{{ inventory_hostname }}"
    nodes: "{{ groups['all'] }}"
    play_nodes: "{{ ansible_play_hosts }}"
    fleet: shop
    prune: true
'''

RETURN = r'''
containers:
  description: For each container converged or removed here, what the call did.
  returned: always
  type: dict
  contains:
    changed:
      description: Whether anything changed (or would change, in check mode).
      type: bool
    changes:
      description:
        - What changed, as parameter names - V(created), V(removed), V(state), V(hostname), V(limits.ram),
          V(network.ip_address), V(quota.diskspace), V(limits.kernel_differs) when the kernel held other values.
      type: list
      elements: str
    state:
      description: Its state after the call (in check mode, the state it would have).
      type: str
  sample: {"web1": {"changed": true, "changes": ["created", "state", "limits.ram", "network.ip_address"],
                    "state": "running"},
           "web2": {"changed": false, "changes": [], "state": "running"}}
summary:
  description: How many containers were created, changed (not created), left unchanged and removed.
  returned: always
  type: dict
  sample: {"created": 1, "changed": 1, "unchanged": 1, "removed": 0}
timings:
  description: Seconds the module spent validating and planning every container (V(plan)) and changing them (V(apply)).
  returned: always
  type: dict
  sample: {"plan": 0.42, "apply": 9.8}
pruned:
  description: The containers O(prune) removed from this node (in check mode, those it would remove).
  returned: always
  type: list
  elements: str
  sample: ["web3"]
prune_kept:
  description:
    - The containers O(prune) left on this node because the list declares them for a node that is not in
      O(play_nodes), with that node.
  returned: always
  type: dict
  sample: {"web4": "node2"}
not_enforced:
  description: By container, the limits and quota set that the kernel cannot enforce here, with the reason.
  returned: always
  type: dict
  sample: {"web1": {"ioprio": "no device of the container uses the bfq I/O scheduler"}}
'''

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.ovz.containers.plugins.module_utils._engine.ops import fleet as ovz_fleet
from ansible_collections.ovz.containers.plugins.module_utils._engine.resources import network
from ansible_collections.ovz.containers.plugins.module_utils._ansible.argspec import argument_spec
from ansible_collections.ovz.containers.plugins.module_utils._ansible.results import run_module
from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager
from ansible_collections.ovz.containers.plugins.module_utils._ansible.argspec import (
    CONTAINER_OPTIONS, LIMITS_OPTIONS, NAME_ARGUMENT_SPEC, NETWORK_OPTIONS, QUOTA_OPTIONS)

ITEM_OPTIONS = dict((key, value) for key, value in CONTAINER_OPTIONS.items() if key not in ('diskspace', 'diskinodes'))
ITEM_OPTIONS.update(
    NAME_ARGUMENT_SPEC,
    node=dict(type='str'),
    unprivileged=dict(type='bool'),
    state=dict(type='str', default='started', choices=list(ovz_fleet.FLEET_STATES)),
    limits=dict(type='dict', options=LIMITS_OPTIONS),
    network=dict(type='dict', options=NETWORK_OPTIONS),
    quota=dict(type='dict', options=QUOTA_OPTIONS),
)


ARGUMENT_SPEC = argument_spec(
    containers=dict(type='list', elements='dict', required=True, options=ITEM_OPTIONS),
    node=dict(type='str'),
    nodes=dict(type='list', elements='str'),
    play_nodes=dict(type='list', elements='str'),
    fleet=dict(type='str'),
    prune=dict(type='bool', default=False),
)


def converge(module, result):
    params = module.params
    if any(item.get('network') is not None for item in params['containers']) and not network.has_pyroute2():
        module.fail_json(msg=missing_required_lib('pyroute2'), exception=network.PYROUTE2_IMPORT_ERROR)
    manager = ContainerManager(params['data_dir'], params['cgroup_parent'])
    ovz_fleet.converge_fleet(manager, params['containers'], node=params['node'], nodes=params['nodes'],
                             play_nodes=params['play_nodes'], fleet=params['fleet'], prune=params['prune'],
                             check_mode=module.check_mode, warn=module.warn, report=result)


def main():
    run_module(ARGUMENT_SPEC, converge)


if __name__ == '__main__':
    main()
