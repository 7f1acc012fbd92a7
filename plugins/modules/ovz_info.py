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
    paths, limits and, for running ones, init PID, cgroups, disk usage and user beancounters.
  - It changes no container. Outside check mode it keeps the beancounters' C(maxheld) bookkeeping in
    O(data_dir)C(/run/<name>/) and refreshes the snapshot that root inside a container reads at
    C(/run/ovz/user_beancounters), as M(ovz.containers.ovz_limits) does (the live view of
    C(ovzctl bcd), where it runs, stays on top of that snapshot).
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
  returned: always
  type: list
  elements: dict
  sample: [{"name": "101", "state": "running", "hostname": "ct101", "init_pid": 4242,
            "limits": {"cpuunits": 1000, "ram": 536870912},
            "beancounters": {"numproc": {"held": 3, "maxheld": 5, "barrier": null, "limit": null,
                                         "failcnt": 0, "enforced": true, "unit": "count", "mechanism": "pids.max"}}}]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ovz.containers.plugins.module_utils.ansible_glue import argument_spec, fail_from_error
from ansible_collections.ovz.containers.plugins.module_utils.config import validate_name
from ansible_collections.ovz.containers.plugins.module_utils.container import ContainerManager


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(name=dict(type='list', elements='str', aliases=['ctid'])),
        supports_check_mode=True,
    )
    try:
        manager = ContainerManager(module.params['data_dir'], module.params['cgroup_parent'])
        names = module.params['name']
        if names:
            names = [validate_name(n) for n in names]
        else:
            names = manager.layout.names()
        containers = [manager.facts(n, beancounters=True, persist=not module.check_mode) for n in names]
    except Exception as exc:  # noqa: BLE001
        fail_from_error(module, exc)
    module.exit_json(changed=False, containers=containers)


if __name__ == '__main__':
    main()
