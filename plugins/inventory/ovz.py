# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
name: ovz
short_description: The containers of an ovz.containers fleet as inventory hosts
version_added: 0.2.0
description:
  - Lists every container of the configured nodes as a host, grouped by node (C(ovz_node_<node>)), by state
    (C(ovz_state_running), C(ovz_state_stopped), C(ovz_state_suspended), C(ovz_state_frozen)) and by label
    (C(ovz_label_<key>_<value>), from O(ovz.containers.ovz_container#module:labels)); all of them are in
    C(ovz_containers).
  - Each host gets the container's facts (as M(ovz.containers.ovz_info) returns them, without beancounters)
    as C(ovz_<fact>) host variables, for example C(ovz_state), C(ovz_hostname), C(ovz_ip_address),
    C(ovz_labels), C(ovz_onboot), plus C(ovz_node), and is set up for the connection plugin
    P(ovz.containers.ovz#connection) (C(ansible_connection), C(ovz_container), C(ovz_data_dir),
    C(ovz_cgroup_parent), and for remote nodes C(ovz_node_shell) and C(ovz_ovzctl)).
  - How the containers are learned. A node without O(nodes[].shell) is local. Its data directory is read
    on this machine with the collection's engine (the configurations under C(conf/) and the runtime state
    under C(run/)). Nothing is started or changed.
  - A node with O(nodes[].shell) is remote. The plugin runs C(ovzctl --data-dir DIR list --json) through
    that command, for example C([ssh, -T, root@node1]). The role C(ovz.containers.ovz_host) installs
    C(ovzctl) on nodes.
  - Results can be cached with Ansible's inventory cache plugins (O(cache)), so that a large fleet is not asked
    on every run.
  - The file must end in C(ovz.yml) or C(ovz.yaml).
options:
  plugin:
    description: The name of this plugin.
    type: str
    required: true
    choices: [ovz.containers.ovz]
  nodes:
    description:
      - The nodes of the fleet.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The node's name, used in the group C(ovz_node_<name>) and the host variable C(ovz_node).
        type: str
        required: true
      data_dir:
        description: The node's data directory.
        type: str
        default: /var/lib/ovz
      cgroup_parent:
        description: The node's cgroup parent.
        type: str
        default: auto
      shell:
        description:
          - For a remote node, the command that runs one shell command line on the node, as a list
            (the C(ovzctl) command line is appended as one argument), for example C([ssh, -T, root@node1]).
          - Omitted or empty, the node is this machine.
        type: list
        elements: str
      ovzctl:
        description: The path of C(ovzctl) on a remote node.
        type: str
        default: /usr/local/sbin/ovzctl
      vars:
        description: Extra host variables for every container of this node.
        type: dict
  states:
    description:
      - Only list the containers in one of these states.
    type: list
    elements: str
    choices: [running, stopped, suspended, frozen]
    default: [running, stopped, suspended, frozen]
  set_connection:
    description:
      - Set C(ansible_connection=ovz.containers.ovz) and the plugin's variables on every host.
    type: bool
    default: true
extends_documentation_fragment:
  - constructed
  - inventory_cache
author:
  - ovz.containers developers (@ovz-containers)
'''

EXAMPLES = r'''
# fleet.ovz.yml: two nodes, one local, one over SSH; cached for 5 minutes.
plugin: ovz.containers.ovz
nodes:
  - name: node1
    data_dir: /var/lib/ovz
  - name: node2
    shell: [ssh, -T, -o, BatchMode=yes, root@node2.example.com]
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/ovz-inventory
cache_timeout: 300
keyed_groups:
  - key: ovz_hostname.split('.')[-1]
    prefix: domain
compose:
  ansible_python_interpreter: "'/usr/bin/python3'"

# ansible-inventory -i fleet.ovz.yml --graph
# ansible -i fleet.ovz.yml ovz_label_role_web -m ansible.builtin.command -a uptime
'''

import json
import shlex
import subprocess

from ansible.errors import AnsibleParserError
from ansible.inventory.group import to_safe_group_name
from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable

CONNECTION = 'ovz.containers.ovz'


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    """Containers of local and remote ovz.containers nodes."""

    NAME = 'ovz.containers.ovz'

    def verify_file(self, path):
        return super(InventoryModule, self).verify_file(path) and path.endswith(('ovz.yml', 'ovz.yaml'))

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path, cache)
        self._read_config_data(path)
        cache_key = self.get_cache_key(path)
        use_cache = self.get_option('cache') and cache
        update_cache = self.get_option('cache') and not cache
        fleet = None
        if use_cache:
            try:
                fleet = self._cache[cache_key]
            except KeyError:
                update_cache = True
        if fleet is None:
            fleet = [self._node_containers(node) for node in self._nodes()]
        if update_cache:
            self._cache[cache_key] = fleet
        self._populate(fleet)

    def _nodes(self):
        nodes = self.get_option('nodes')
        seen = set()
        for node in nodes:
            if not isinstance(node, dict) or not node.get('name'):
                raise AnsibleParserError('nodes: every node needs a name, got %r' % (node,))
            if node['name'] in seen:
                raise AnsibleParserError('nodes: node %s is listed twice' % node['name'])
            seen.add(node['name'])
            unknown = set(node) - {'name', 'data_dir', 'cgroup_parent', 'shell', 'ovzctl', 'vars'}
            if unknown:
                raise AnsibleParserError('nodes: node %s has unknown keys: %s' % (node['name'], ', '.join(sorted(unknown))))
        return [dict(dict(data_dir='/var/lib/ovz', cgroup_parent='auto', shell=None,
                          ovzctl='/usr/local/sbin/ovzctl', vars={}), **dict((k, v) for k, v in n.items() if v is not None))
                for n in nodes]

    def _node_containers(self, node):
        """{node: ..., containers: [facts, ...]} for one node."""
        if node['shell']:
            containers = self._remote_list(node)
        else:
            containers = self._local_list(node)
        return dict(node=node, containers=containers)

    @staticmethod
    def _local_list(node):
        from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager
        from ansible_collections.ovz.containers.plugins.module_utils._engine.base.errors import OvzError
        try:
            return ContainerManager(node['data_dir'], node['cgroup_parent']).list()
        except (OvzError, OSError) as exc:
            raise AnsibleParserError('node %s (%s): %s' % (node['name'], node['data_dir'], to_native(exc)))

    @staticmethod
    def _remote_list(node):
        line = ' '.join(shlex.quote(a) for a in [node['ovzctl'], '--data-dir', node['data_dir'],
                                                 '--cgroup-parent', node['cgroup_parent'], 'list', '--json'])
        argv = [to_native(a) for a in node['shell']] + [line]
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  timeout=300, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AnsibleParserError('node %s: %s failed: %s' % (node['name'], argv[0], to_native(exc)))
        if proc.returncode != 0:
            raise AnsibleParserError('node %s: "%s" exited %d: %s' % (node['name'], ' '.join(argv), proc.returncode,
                                                                      to_native(proc.stderr).strip()))
        try:
            containers = json.loads(to_text(proc.stdout))
        except ValueError:
            raise AnsibleParserError('node %s: ovzctl list --json printed no JSON: %s'
                                     % (node['name'], to_native(proc.stdout)[:200]))
        if not isinstance(containers, list):
            raise AnsibleParserError('node %s: ovzctl list --json printed no list' % node['name'])
        return containers

    def _populate(self, fleet):
        states = self.get_option('states')
        strict = self.get_option('strict')
        self.inventory.add_group('ovz_containers')
        where = {}
        for entry in fleet:
            node = entry['node']
            node_group = self.inventory.add_group(to_safe_group_name('ovz_node_%s' % node['name']))
            self.inventory.add_child('ovz_containers', node_group)
            for facts in entry['containers']:
                name = facts.get('name')
                if facts.get('state') not in states:
                    continue
                if name in where:
                    raise AnsibleParserError('container %s is listed by node %s and by node %s; container names '
                                             'must be unique in a fleet' % (name, where[name], node['name']))
                where[name] = node['name']
                host = self.inventory.add_host(name, group=node_group)
                self.inventory.add_host(name, group=self.inventory.add_group('ovz_state_%s' % facts['state']))
                for key, value in sorted((facts.get('labels') or {}).items()):
                    label_group = self.inventory.add_group(to_safe_group_name('ovz_label_%s_%s' % (key, value)))
                    self.inventory.add_host(name, group=label_group)
                hostvars = dict(('ovz_%s' % k, v) for k, v in facts.items() if k != 'name')
                hostvars['ovz_node'] = node['name']
                hostvars['ovz_container'] = name
                hostvars['ovz_data_dir'] = node['data_dir']
                hostvars['ovz_cgroup_parent'] = node['cgroup_parent']
                if self.get_option('set_connection'):
                    hostvars['ansible_connection'] = CONNECTION
                    if node['shell']:
                        hostvars['ovz_node_shell'] = list(node['shell'])
                        hostvars['ovz_ovzctl'] = node['ovzctl']
                hostvars.update(node.get('vars') or {})
                for key, value in hostvars.items():
                    self.inventory.set_variable(host, key, value)
                allvars = self.inventory.get_host(host).get_vars()
                self._set_composite_vars(self.get_option('compose'), allvars, host, strict=strict)
                self._add_host_to_composed_groups(self.get_option('groups'), allvars, host, strict=strict)
                self._add_host_to_keyed_groups(self.get_option('keyed_groups'), allvars, host, strict=strict)
