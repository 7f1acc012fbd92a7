#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: ovz_exec
short_description: Run a command inside a running container
version_added: 0.1.0
description:
  - Runs a command inside a running container, like C(vzctl exec), entering all of its namespaces and
    cgroups, with the container's capability bounding set.
  - Like M(ansible.builtin.command), it always reports a change (use C(changed_when) in the task to
    say otherwise), and it is skipped in check mode.
options:
  argv:
    description:
      - The command as a list of arguments, run without a shell.
      - Exactly one of O(argv) and O(command) is required.
    type: list
    elements: str
  command:
    description:
      - The command as a string, run with C(/bin/sh -c) inside the container.
    type: str
  stdin:
    description:
      - Data written to the command's standard input.
    type: str
  env:
    description:
      - Extra environment variables.
    type: dict
  timeout:
    description:
      - Seconds after which the command is killed. V(0) waits forever.
    type: int
    default: 0
extends_documentation_fragment:
  - ovz.containers.common
  - ovz.containers.common.attributes
  - ovz.containers.common.name
attributes:
  check_mode:
    support: none
    description: The command is not run in check mode.
  diff_mode:
    support: none
    description: Nothing to compare.
seealso:
  - module: ovz.containers.ovz_container
author:
  - ovz.containers developers (@ovz-containers)
'''

EXAMPLES = r'''
- name: List the processes a container sees
  ovz.containers.ovz_exec:
    name: "101"
    argv: [ps, -ef]
  register: ps

- name: A shell pipeline inside
  ovz.containers.ovz_exec:
    name: "101"
    command: "hostname && cat /etc/os-release | head -1"
  changed_when: false
'''

RETURN = r'''
rc:
  description: The command's exit status (125 when entering the container failed, 127 when not found).
  returned: when run
  type: int
  sample: 0
stdout:
  description: Its standard output, without trailing newlines.
  returned: when run
  type: str
  sample: "ct101"
stderr:
  description: Its standard error.
  returned: when run
  type: str
  sample: ""
stdout_lines:
  description: RV(stdout) split into lines.
  returned: when run
  type: list
  elements: str
  sample: ["ct101"]
'''

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_text

from ansible_collections.ovz.containers.plugins.module_utils.ansible_glue import argument_spec, fail_from_error
from ansible_collections.ovz.containers.plugins.module_utils.container import ContainerManager


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            name=dict(type='str', required=True, aliases=['ctid']),
            argv=dict(type='list', elements='str'),
            command=dict(type='str'),
            stdin=dict(type='str'),
            env=dict(type='dict'),
            timeout=dict(type='int', default=0),
        ),
        required_one_of=[('argv', 'command')],
        mutually_exclusive=[('argv', 'command')],
        supports_check_mode=False,
    )
    params = module.params
    argv = params['argv'] or ['/bin/sh', '-c', params['command']]
    try:
        manager = ContainerManager(params['data_dir'], params['cgroup_parent'])
        if params['timeout'] < 0:
            module.fail_json(msg='timeout: must not be negative, got %d' % params['timeout'], param='timeout')
        if manager.status(params['name']) not in ('running',):
            module.fail_json(msg='name: container %s is %s; it must be running'
                             % (params['name'], manager.status(params['name'])), param='name')
        env = dict((str(k), str(v)) for k, v in (params['env'] or {}).items())
        result = manager.exec(params['name'], argv, stdin=to_bytes(params['stdin']) if params['stdin'] else None,
                              env=env, timeout=params['timeout'] or None)
    except Exception as exc:  # noqa: BLE001
        fail_from_error(module, exc)
    # Trailing newlines are dropped, as ansible.builtin.command does.
    stdout = to_text(result.stdout, errors='surrogate_or_replace').rstrip('\r\n')
    stderr = to_text(result.stderr, errors='surrogate_or_replace').rstrip('\r\n')
    output = dict(changed=True, rc=result.rc, stdout=stdout, stderr=stderr, stdout_lines=stdout.splitlines(),
                  cmd=argv)
    if result.rc != 0:
        module.fail_json(msg='the command exited with status %d' % result.rc, **output)
    module.exit_json(**output)


if __name__ == '__main__':
    main()
