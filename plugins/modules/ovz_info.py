#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: ovz_info
short_description: List the containers of a host with their state and configuration
version_added: 0.1.0
description:
  - Lists the containers of a node (one O(data_dir)), like C(vzlist -a), with their state, configuration,
    paths, limits, disk quota usage and, for running ones, init PID, cgroups, disk usage and user beancounters.
  - The state is V(running), V(frozen), V(stopped), V(suspended) (stopped, its memory kept in
    O(data_dir)C(/dump/<name>) by a suspend, and starting it resumes it) or V(absent).
  - It changes no container. Outside check mode it keeps the beancounters' C(maxheld) bookkeeping in
    O(data_dir)C(/run/<name>/) and refreshes the snapshot that root inside a container reads at
    C(/run/ovz/user_beancounters), as M(ovz.containers.ovz_limits) does (the live view of
    C(ovzctl bcd), where it runs, stays on top of that snapshot). A failure to write the snapshot is a warning.
options:
  name:
    description:
      - Only these containers. Unknown names are reported with state V(absent).
    type: list
    elements: str
    aliases: [ctid]
extends_documentation_fragment:
  - ovz.containers.common
  - ovz.containers.common.attributes
attributes:
  check_mode:
    support: full
    description: Reads only, so it behaves the same in check mode.
  diff_mode:
    support: none
    description: Nothing to compare.
seealso:
  - module: ovz.containers.ovz_container
  - module: ovz.containers.ovz_limits
author:
  - ovz.containers developers (@ovz-containers)
'''

EXAMPLES = r'''
- name: All containers of the host
  ovz.containers.ovz_info:
  register: ovz

- name: Names of the running ones
  ansible.builtin.debug:
    msg: "{{ ovz.containers | selectattr('state', 'equalto', 'running') | map(attribute='name') | list }}"
'''

RETURN = r'''
containers:
  description:
    - One entry per container, sorted by name, with the same keys as the C(container)
      return value of M(ovz.containers.ovz_container).
    - C(limits) holds the container's limits as M(ovz.containers.ovz_limits) returns them.
    - For a running or frozen container, C(beancounters) holds its user beancounters as
      M(ovz.containers.ovz_limits) returns them.
    - C(quota_usage) holds the container's disk usage and quota limits (bytes and inodes used, soft and hard
      limits, grace state) as the C(usage) return value of M(ovz.containers.ovz_quota); for the V(image) layout
      from C(statfs) of the mounted filesystem (running) or from its superblock (stopped), for the V(directory)
      layout from its project quota or, without one, from counting its files (C(source) says which). Where
      it cannot be read, it holds C(error) with the reason instead.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "101", "state": "running", "hostname": "ct101", "init_pid": 4242,
            "limits": {"cpuunits": 1000, "ram": 536870912},
            "quota_usage": {"layout": "image", "source": "statfs", "bytes_used": 1204224, "bytes_total": 133152768, "bytes_hard": 134217728,
                            "bytes_soft": null, "bytes_free": 131948544, "inodes_used": 512, "inodes_hard": 32768,
                            "inodes_soft": null, "inodes_free": 32256, "image_bytes": 134217728,
                            "loop_device": "/dev/loop3", "direct_io": true,
                            "grace_blocks": {"state": "none", "expires": null},
                            "grace_inodes": {"state": "none", "expires": null}},
            "beancounters": {"numproc": {"held": 3, "maxheld": 5, "barrier": null, "limit": null,
                                         "failcnt": 0, "enforced": true, "unit": "count", "mechanism": "pids.max"}}}]
'''

from ansible_collections.ovz.containers.plugins.module_utils._ansible.argspec import NAMES_ARGUMENT_SPEC, argument_spec
from ansible_collections.ovz.containers.plugins.module_utils._ansible.results import run_module
from ansible_collections.ovz.containers.plugins.module_utils._engine.node.config import validate_name
from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.errors import OvzError
from ansible_collections.ovz.containers.plugins.module_utils._engine.resources.quota import usage
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.states import RUNNING_STATES


def quota_usage(manager, entry):
    """The container's disk usage and quota limits, as ovz_quota reports them; a container whose usage
    cannot be read (its image half-made, a race with its removal) gets the reason, not a failed listing."""
    try:
        config = manager.load(entry['name'])
        return usage(config, manager.storage(config), entry['state'] in RUNNING_STATES)
    except (OvzError, OSError) as exc:
        return {'layout': entry.get('layout'), 'error': str(exc)}


ARGUMENT_SPEC = argument_spec(**NAMES_ARGUMENT_SPEC)


def gather(module, result):
    manager = ContainerManager(module.params['data_dir'], module.params['cgroup_parent'])
    names = [validate_name(n) for n in module.params['name']] if module.params['name'] else manager.layout.names()
    containers = [manager.facts(n, beancounters=True, persist=not module.check_mode, warn=module.warn) for n in names]
    for entry in containers:
        if entry['state'] != 'absent':
            entry['quota_usage'] = quota_usage(manager, entry)
    result['containers'] = containers


def main():
    run_module(ARGUMENT_SPEC, gather)


if __name__ == '__main__':
    main()
