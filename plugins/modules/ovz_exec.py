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
  - Runs a command inside a running container, like C(vzctl exec), entering all of its namespaces (the time
    namespace of a resumed container included) and cgroups, with the container's capability bounding set.
  - Nothing of the host goes in with the command. Its standard input, output and error are pipes made for it
    (no other descriptor), it runs in a session of its own, with a fresh session keyring. The process that
    enters the container is non-dumpable and holds no capability the container lacks before the command is
    visible inside.
  - Like M(ansible.builtin.command), it reports a change whenever it runs the command (use C(changed_when) in
    the task to say otherwise); O(creates) and O(removes) make it idempotent, and are what check mode can
    judge. Without them the command is not run in check mode, and the task reports that it would have run.
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
      - Seconds after which the command is killed with its process group, and the task fails naming O(timeout).
        V(0) waits forever.
    type: int
    default: 0
  output_limit:
    description:
      - How much of each output stream (stdout, stderr) is kept, as a size (V(512K), V(1M), bytes). The command
        runs to its end; of a longer stream only the last O(output_limit) bytes are returned, and RV(stdout_truncated)
        and RV(stderr_truncated) say how many bytes were dropped before them.
      - The output comes from the container, which may print without end; this bound keeps the node's memory safe
        (the module never holds more than this per stream).
    type: str
    default: 1M
  creates:
    description:
      - An absolute path inside the container. If it exists there, the command is not run (V(changed=false)).
      - Resolved as the container sees it (its mounts, its symlinks kept inside it).
    type: path
  removes:
    description:
      - An absolute path inside the container. If it does not exist there, the command is not run
        (V(changed=false)).
    type: path
extends_documentation_fragment:
  - ovz.containers.common
  - ovz.containers.common.attributes
  - ovz.containers.common.name
attributes:
  check_mode:
    support: partial
    description: Reports whether the command would run, and runs nothing.
    details: The command is never run in check mode. With O(creates) or O(removes) the task reports whether it
      would run; without them it reports that it would have run (V(changed=true)).
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

- name: Run once (a second run, or check mode after it, changes nothing)
  ovz.containers.ovz_exec:
    name: "101"
    command: "ssh-keygen -A && touch /etc/ssh/.keys-made"
    creates: /etc/ssh/.keys-made
'''

RETURN = r'''
rc:
  description: The command's exit status (125 when entering the container failed, 127 when not found); V(0) when
    it was not run.
  returned: always
  type: int
  sample: 0
stdout:
  description: Its standard output, without trailing newlines; C(skipped, since PATH exists) (or C(does not exist))
    when O(creates) or O(removes) kept it from running.
  returned: always
  type: str
  sample: "ct101"
stderr:
  description: Its standard error.
  returned: always
  type: str
  sample: ""
stdout_truncated:
  description: How many bytes of the beginning of standard output were dropped to keep within O(output_limit)
    (V(0) when all of it is in RV(stdout)).
  returned: always
  type: int
  sample: 0
stderr_truncated:
  description: How many bytes of the beginning of standard error were dropped to keep within O(output_limit).
  returned: always
  type: int
  sample: 0
timed_out:
  description: Whether the command was killed (with its process group) at O(timeout); the task then fails
    saying so, and RV(rc) is that of the killed command (137).
  returned: when the command ran
  type: bool
  sample: false
stdout_lines:
  description: RV(stdout) split into lines.
  returned: always
  type: list
  elements: str
  sample: ["ct101"]
'''

from ansible_collections.ovz.containers.plugins.module_utils._ansible.argspec import NAME_ARGUMENT_SPEC, argument_spec
from ansible_collections.ovz.containers.plugins.module_utils._ansible.results import run_module
from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager
from ansible_collections.ovz.containers.plugins.module_utils._engine.ops.command import run_command

ARGUMENT_SPEC = argument_spec(
    **NAME_ARGUMENT_SPEC,
    argv=dict(type='list', elements='str'),
    command=dict(type='str'),
    stdin=dict(type='str'),
    env=dict(type='dict'),
    timeout=dict(type='int', default=0),
    output_limit=dict(type='str', default='1M'),
    creates=dict(type='path'),
    removes=dict(type='path'),
)
COMMAND_PARAMS = ('argv', 'command', 'stdin', 'env', 'timeout', 'output_limit', 'creates', 'removes')


def execute(module, result):
    params = module.params
    manager = ContainerManager(params['data_dir'], params['cgroup_parent'])
    result.update(run_command(manager, params['name'], check_mode=module.check_mode,
                              **dict((key, params[key]) for key in COMMAND_PARAMS)))


def main():
    run_module(ARGUMENT_SPEC, execute, required_one_of=[('argv', 'command')], mutually_exclusive=[('argv', 'command')])


if __name__ == '__main__':
    main()
