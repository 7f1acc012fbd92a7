#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: ovz_container
short_description: Create, start, stop, freeze and destroy OpenVZ-style system containers
version_added: 0.1.0
description:
  - Manages system containers on a stock Linux kernel, as C(vzctl create/start/stop/destroy) does.
  - A started container boots its own init and startup scripts, isolated in its own pid, mount, uts,
    ipc, net and cgroup namespaces, with its own C(/proc), a read-only C(/sys), a minimal
    C(/dev) with a private C(/dev/pts), and its own C(net.*) sysctls.
  - There is no daemon. Each call acts on the kernel directly and leaves the container running on its own.
options:
  state:
    description:
      - V(present) makes sure the container exists, leaving it running or stopped as it is.
      - V(started) makes sure it exists and runs (a frozen one is thawed).
      - V(stopped) stops it gracefully - the init's own shutdown signal, then O(timeout), then
        C(SIGKILL) to every process in its cgroup - and leaves no process, mount, loop device or cgroup.
      - V(restarted) always stops and starts it again.
      - V(frozen) freezes every process of a running container (C(vzctl suspend) without a dump).
      - V(absent) stops it if needed and removes its configuration and private area.
    type: str
    choices: [present, started, stopped, restarted, frozen, absent]
    default: started
  template:
    description:
      - The OS template the container is created from, used only when it does not exist yet.
      - A rootfs tarball (C(.tar), C(.tar.gz), C(.tgz), C(.tar.xz), C(.tar.zst), C(.tar.bz2)), a rootfs
        directory, or the name of either in O(data_dir)C(/templates).
    type: str
  hostname:
    description:
      - The container's hostname. Defaults to O(name) at creation.
      - Changed live on a running container, and written to its C(/etc/hostname).
    type: str
  onboot:
    description:
      - Whether the container starts when the host boots (the C(ovz_host) role's boot entry point).
    type: bool
  bootorder:
    description:
      - Containers with a higher boot order start first at host boot, as in vzctl.
    type: int
  labels:
    description:
      - Free-form labels (string keys and values), for example C(role=web). The inventory plugin
        P(ovz.containers.ovz#inventory) groups containers by them.
      - The dict is the complete set; V({}) removes every label.
    type: dict
  init:
    description:
      - The container's init, an absolute path inside it.
    type: str
    default: /sbin/init
  layout:
    description:
      - V(image) keeps the root filesystem in a sparse ext4 image loop-mounted at start, like OpenVZ's ploop.
      - V(directory) keeps it in a plain directory, bind-mounted at start, like simfs.
      - Defaults to V(image) at creation. It cannot be changed later.
    type: str
    choices: [image, directory]
  diskspace:
    description:
      - Initial disk space, as C(soft:hard) or one size for both (C(512M), C(10G), bytes).
      - For the V(image) layout the hard value is the image's size (default 2G).
      - For the V(directory) layout it is a project quota, put in force at start where the host has project quota
        (see M(ovz.containers.ovz_quota), which reports it as not enforced elsewhere).
      - Only used at creation; change it later with M(ovz.containers.ovz_quota).
    type: str
  diskinodes:
    description:
      - Initial inode count, as C(soft:hard) or one number for both.
      - For the V(image) layout the hard value is the filesystem's inode count.
      - Only used at creation; change it later with M(ovz.containers.ovz_quota).
    type: str
  wait_boot:
    description:
      - After a start, wait until the container's startup scripts have run. The templates of this
        collection report that by creating C(/run/ovz/booted) inside; other templates must do the same
        at the end of their boot for this to return.
    type: bool
    default: false
  timeout:
    description:
      - Seconds to wait for a graceful stop before killing, and for the boot with O(wait_boot).
    type: int
    default: 60
extends_documentation_fragment:
  - ovz.containers.common
  - ovz.containers.common.attributes
  - ovz.containers.common.name
attributes:
  check_mode:
    support: full
    description: Reports what would change and changes nothing.
  diff_mode:
    support: full
    description: Shows the container's state and settings before and after.
seealso:
  - module: ovz.containers.ovz_info
author:
  - ovz.containers developers (@ovz-containers)
'''

EXAMPLES = r'''
- name: Create and start container 101 from the busybox template
  ovz.containers.ovz_container:
    name: "101"
    template: busybox
    hostname: ct101.example.com
    onboot: true
    bootorder: 10
    labels:
      role: web

- name: Stop it
  ovz.containers.ovz_container:
    name: "101"
    state: stopped

- name: A Debian container in a plain directory, waiting for its boot
  ovz.containers.ovz_container:
    name: web1
    template: /var/cache/ovz/templates/debian-12.tar.zst
    layout: directory
    wait_boot: true

- name: Remove it
  ovz.containers.ovz_container:
    name: web1
    state: absent
'''

RETURN = r'''
container:
  description: The container's facts after the call.
  returned: always
  type: dict
  contains:
    name:
      description: The container's name.
      type: str
      sample: "101"
    state:
      description: One of V(absent), V(stopped), V(running), V(frozen).
      type: str
      sample: running
    init_pid:
      description: The PID of its init as the host sees it, when running.
      type: int
      sample: 4242
    hostname:
      description: Its hostname.
      type: str
      sample: ct101
    ip_address:
      description: Its IP addresses.
      type: list
      elements: str
      sample: []
    paths:
      description: Its configuration file, private area, root mount point, runtime and dump directories.
      type: dict
      sample: {"config": "/var/lib/ovz/conf/101.json", "root": "/var/lib/ovz/root/101"}
    cgroups:
      description: Its cgroup directories, by hierarchy, when running.
      type: dict
      sample: {"memory": "/sys/fs/cgroup/memory/ovz-101"}
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ovz.containers.plugins.module_utils.ansible_glue import (
    DifferenceTracker, argument_spec, fail_from_error)
from ansible_collections.ovz.containers.plugins.module_utils.config import validate_labels, validate_name
from ansible_collections.ovz.containers.plugins.module_utils.container import (
    ContainerManager, validate_hostname)
from ansible_collections.ovz.containers.plugins.module_utils.errors import OvzError, StateConflict
from ansible_collections.ovz.containers.plugins.module_utils.sizes import parse_pair

RUNNING = ('running', 'frozen')
SETTINGS = ('hostname', 'onboot', 'bootorder', 'init', 'labels')


def desired_run_state(wanted, current):
    """The run state after the call, or raise for a transition that cannot be made."""
    if wanted == 'absent':
        return 'absent'
    if wanted in ('started', 'restarted'):
        return 'running'
    if wanted == 'stopped':
        return 'stopped'
    if wanted == 'frozen':
        if current not in RUNNING:
            raise StateConflict('only a running container can be frozen; %s is %s'
                                % ('it' if current == 'absent' else 'the container', current), 'state')
        return 'frozen'
    return 'stopped' if current == 'absent' else current  # present


def plan(module, manager, name):
    """Validate everything and describe the changes; touches nothing."""
    params = module.params
    current = manager.status(name)
    wanted = desired_run_state(params['state'], current)
    tracker = DifferenceTracker()
    tracker.add('state', current, wanted)
    settings = {}
    if params['hostname'] is not None:
        validate_hostname(params['hostname'])
    create_config = None
    if current == 'absent' and wanted != 'absent':
        create_config = manager.plan_create(
            name, params['template'], layout=params['layout'] or 'image', hostname=params['hostname'], init=params['init'],
            onboot=bool(params['onboot']),
            diskspace=parse_pair(params['diskspace'], 'diskspace') if params['diskspace'] else None,
            diskinodes=parse_pair(params['diskinodes'], 'diskinodes', as_size=False) if params['diskinodes'] else None)
        if params['bootorder'] is not None:
            create_config.bootorder = params['bootorder']
        if params['labels'] is not None:
            create_config.labels = params['labels']
        for key in SETTINGS:
            tracker.add(key, None, getattr(create_config, key))
        tracker.add('layout', None, create_config.layout)
    elif current != 'absent':
        config = manager.load(name)
        if params['layout'] is not None and params['layout'] != config.layout:
            raise StateConflict('the layout of an existing container cannot be changed (it is %s)'
                                % config.layout, 'layout')
        for key in SETTINGS:
            value = params[key]
            if value is None or wanted == 'absent':
                tracker.add(key, getattr(config, key), getattr(config, key) if wanted != 'absent' else None)
                continue
            tracker.add(key, getattr(config, key), value)
            if getattr(config, key) != value:
                settings[key] = value
    restart = params['state'] == 'restarted'
    return current, wanted, tracker, settings, create_config, restart


def apply(module, manager, name, current, wanted, settings, create_config, restart):
    params = module.params
    if wanted == 'absent':
        manager.destroy(name)
        return
    if create_config is not None:
        manager.create(name, params['template'], layout=create_config.layout, hostname=create_config.hostname,
                       init=create_config.init, onboot=create_config.onboot,
                       diskspace=create_config.diskspace, diskinodes=create_config.diskinodes)
        if create_config.bootorder or create_config.labels:
            manager.update(name, bootorder=create_config.bootorder, labels=create_config.labels)
        current = 'stopped'
    if settings:
        manager.update(name, **settings)
    if restart and current in RUNNING:
        manager.stop(name, timeout=params['timeout'])
        current = 'stopped'
    if wanted in RUNNING and current == 'stopped':
        manager.start(name, wait_boot=params['wait_boot'], timeout=params['timeout'])
        current = 'running'
    if wanted == 'running' and current == 'frozen':
        manager.thaw(name)
    elif wanted == 'frozen' and current == 'running':
        manager.freeze(name)
    elif wanted == 'stopped' and current in RUNNING:
        manager.stop(name, timeout=params['timeout'])


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            name=dict(type='str', required=True, aliases=['ctid']),
            state=dict(type='str', default='started',
                       choices=['present', 'started', 'stopped', 'restarted', 'frozen', 'absent']),
            template=dict(type='str'),
            hostname=dict(type='str'),
            onboot=dict(type='bool'),
            bootorder=dict(type='int'),
            labels=dict(type='dict'),
            init=dict(type='str', default='/sbin/init'),
            layout=dict(type='str', choices=['image', 'directory']),
            diskspace=dict(type='str'),
            diskinodes=dict(type='str'),
            wait_boot=dict(type='bool', default=False),
            timeout=dict(type='int', default=60),
        ),
        supports_check_mode=True,
    )
    params = module.params
    result = dict(changed=False)
    try:
        name = validate_name(params['name'])
        if params['labels'] is not None:
            params['labels'] = validate_labels(params['labels'])
        if params['timeout'] < 0:
            raise OvzError('must not be negative, got %d' % params['timeout'], 'timeout')
        manager = ContainerManager(params['data_dir'], params['cgroup_parent'])
        current, wanted, tracker, settings, create_config, restart = plan(module, manager, name)
        changed = tracker.changed or restart
        if changed and not module.check_mode:
            apply(module, manager, name, current, wanted, settings, create_config, restart)
        result['changed'] = changed
        if module._diff:
            result['diff'] = tracker.diff()
        result['container'] = manager.facts(name) if not module.check_mode else dict(
            manager.facts(name), state=wanted if changed else current)
    except Exception as exc:  # noqa: BLE001 - every failure is reported with its parameter
        fail_from_error(module, exc, **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
