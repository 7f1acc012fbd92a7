# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Argument specs the modules share (Ansible side): the common options, and each module's own.

``ovz_container``, ``ovz_limits``, ``ovz_network`` and ``ovz_quota`` take these
options at the top level; ``ovz_fleet`` takes the same ones per container, as
``containers[]``, ``containers[].limits``, ``.network`` and ``.quota``, so the two
never drift apart.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from typing import Any, Dict

COMMON_ARGUMENT_SPEC = dict(
    data_dir=dict(type='path', default='/var/lib/ovz'),
    cgroup_parent=dict(type='str', default='auto'),
)

NAME_ALIASES = ['ctid']   # vzctl's word for the container's name

# ``name`` of the modules that act on one container, and of each of ovz_fleet's ``containers[]``.
NAME_ARGUMENT_SPEC = dict(
    name=dict(type='str', required=True, aliases=list(NAME_ALIASES)),
)

# ``name`` of ovz_info: several containers, or (omitted) all of them.
NAMES_ARGUMENT_SPEC = dict(
    name=dict(type='list', elements='str', aliases=list(NAME_ALIASES)),
)


def argument_spec(**extra: Any) -> Dict[str, Any]:
    spec = dict(COMMON_ARGUMENT_SPEC)
    spec.update(extra)
    return spec


CONTAINER_STATES = ['present', 'started', 'stopped', 'restarted', 'frozen', 'absent']

CONTAINER_OPTIONS = dict(
    state=dict(type='str', default='started', choices=CONTAINER_STATES),
    template=dict(type='str'),
    hostname=dict(type='str'),
    onboot=dict(type='bool'),
    bootorder=dict(type='int'),
    labels=dict(type='dict'),
    seccomp_allow=dict(type='list', elements='str'),
    init=dict(type='str', default='/sbin/init'),
    layout=dict(type='str', choices=['image', 'directory']),
    diskspace=dict(type='str'),
    diskinodes=dict(type='str'),
    wait_boot=dict(type='bool', default=False),
    timeout=dict(type='int', default=60),
)

LIMITS_OPTIONS = dict(
    cpuunits=dict(type='int'),
    cpulimit=dict(type='int'),
    cpus=dict(type='int'),
    cpumask=dict(type='str'),
    ram=dict(type='str'),
    swap=dict(type='str'),
    numproc=dict(type='str'),
    ioprio=dict(type='int'),
    iolimit=dict(type='str'),
    iopslimit=dict(type='int'),
    ubc=dict(type='dict'),
)

NETWORK_OPTIONS = dict(
    ip_address=dict(type='list', elements='str'),
    netif_mode=dict(type='str', choices=['routed', 'bridged']),
    bridge=dict(type='str'),
    ifname=dict(type='str'),
    host_ifname=dict(type='str'),
    mac=dict(type='str'),
    mtu=dict(type='int'),
    routes=dict(type='list', elements='dict', options=dict(
        dst=dict(type='str', required=True),
        via=dict(type='str'),
        mtu=dict(type='int'),
        src=dict(type='str'),
        metric=dict(type='int'),
    )),
    nameserver=dict(type='list', elements='str'),
    searchdomain=dict(type='list', elements='str'),
    mac_filter=dict(type='bool'),
    dad_timeout=dict(type='float'),
)

QUOTA_ENTRY = dict(name=dict(type='str', required=True), blocks=dict(type='str'), inodes=dict(type='str'))

QUOTA_OPTIONS = dict(
    diskspace=dict(type='str'),
    diskinodes=dict(type='str'),
    quotatime=dict(type='str'),
    quotaugidlimit=dict(type='int'),
    users=dict(type='list', elements='dict', options=QUOTA_ENTRY),
    groups=dict(type='list', elements='dict', options=QUOTA_ENTRY),
    restart=dict(type='bool', default=False),
)
