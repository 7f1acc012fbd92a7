# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
name: ovz
short_description: Run tasks inside an ovz.containers container
version_added: 0.2.0
description:
  - Runs ordinary Ansible tasks (M(ansible.builtin.command), M(ansible.builtin.copy), M(ansible.builtin.template),
    M(ansible.builtin.apt), M(ansible.builtin.service), ...) inside a running container, as root, the way
    C(vzctl exec) does. Every command enters the container's cgroups and its time, cgroup, ipc, uts, net, pid and mount
    namespaces, with the container's capability bounding set. No SSH server or agent is needed inside.
  - Each command gets pipes made for it as its standard input, output and error, and nothing else of the
    controller's process (no other descriptor, no session, no keyring), as with M(ovz.containers.ovz_exec).
  - Without O(node_shell), the plugin acts on the kernel of the machine Ansible runs on, which must be the
    container's node (the engine is imported in-process, as root).
  - With O(node_shell), the container is on a remote node. Each command runs there as
    C(ovzctl exec) through that command line, for example C([ssh, -T, root@node1]), with its standard
    input and output passed through. The node needs C(ovzctl) (the role C(ovz.containers.ovz_host) installs it);
    the inventory plugin P(ovz.containers.ovz#inventory) sets O(node_shell) for the containers of remote nodes.
  - Files are copied with C(cat) inside the container, so a symlink inside cannot redirect a write to the host.
    A fetched file is written to its destination as it is read, never held in memory; a file put into the
    container passes through memory.
  - What a command inside prints is read with a bound, O(output_limit). A container may print without end, and
    the controller must not follow it.
  - Pipelining is supported (V(ansible_pipelining=true)); it saves the temporary files of each task.
  - A container that is not running makes the host unreachable, with a message that says its state.
options:
  remote_addr:
    description:
      - The container's name (its CTID), as in O(ovz.containers.ovz_container#module:name).
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ovz_container
      - name: ansible_ovz_container
  data_dir:
    description:
      - The data directory of the container's node.
    type: path
    default: /var/lib/ovz
    vars:
      - name: ovz_data_dir
      - name: ansible_ovz_data_dir
    env:
      - name: ANSIBLE_OVZ_DATA_DIR
  cgroup_parent:
    description:
      - The node's cgroup parent. Commands join the cgroups recorded when the container started, so this
        only has to be a valid value.
    type: str
    default: auto
    vars:
      - name: ovz_cgroup_parent
      - name: ansible_ovz_cgroup_parent
    env:
      - name: ANSIBLE_OVZ_CGROUP_PARENT
  node_shell:
    description:
      - For a container on a remote node, the command that runs one shell command line on that node, as a list
        (the C(ovzctl) command line is appended as one argument), for example C([ssh, -T, root@node1]).
      - Empty, the node is the machine Ansible runs on.
    type: list
    elements: str
    vars:
      - name: ovz_node_shell
      - name: ansible_ovz_node_shell
  ovzctl:
    description:
      - The path of C(ovzctl) on a remote node (with O(node_shell)).
    type: str
    default: /usr/local/sbin/ovzctl
    vars:
      - name: ovz_ovzctl
      - name: ansible_ovz_ovzctl
  timeout:
    description:
      - Seconds after which a command run inside is killed. V(0) waits forever.
    type: int
    default: 0
    vars:
      - name: ansible_ovz_timeout
  output_limit:
    description:
      - The most bytes of standard output (and of standard error) a command run inside may print, as a size
        (V(64M), bytes). A module's result comes back this way, so the limit must hold the largest result a
        task returns (a M(ansible.builtin.slurp) of a file is a third larger than the file).
      - A command that prints more is killed at once and the task fails, saying so; the plugin never holds more
        than about this much per stream. M(ansible.builtin.fetch) is not bound by it (the file is streamed to
        its destination).
    type: str
    default: 64M
    vars:
      - name: ansible_ovz_output_limit
notes:
  - The user inside is always root; C(become) is not needed (and C(sudo) is rarely installed in a container).
  - The inventory plugin P(ovz.containers.ovz#inventory) sets the variables of this plugin for every container it lists.
author:
  - ovz.containers developers (@ovz-containers)
'''

EXAMPLES = r'''
# Inventory (INI): the host name is the container name; data_dir is the node's.
#   [web]
#   ct101 ansible_connection=ovz.containers.ovz ovz_data_dir=/var/lib/ovz
#   app1 ansible_connection=ovz.containers.ovz ovz_container=102

- name: Configure a container from the inside
  hosts: web
  gather_facts: false
  vars:
    ansible_pipelining: true
  tasks:
    - name: Install a package shipped with the play
      ansible.builtin.apt:
        deb: /root/myapp_1.0_all.deb

    - name: Its configuration
      ansible.builtin.template:
        src: myapp.conf.j2
        dest: /etc/myapp.conf
        mode: "0644"

    - name: Running under the container's systemd
      ansible.builtin.service:
        name: myapp
        state: started
'''

import json
import os
import shlex

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

from ansible_collections.ovz.containers.plugins.module_utils._tools.cli import EXIT_NOT_FOUND
from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.errors import OvzError
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.process import OutputPolicy, run_bounded
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.sizes import parse_size
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.states import State

display = Display()

# What a failing fetch may say about itself (its stderr), kept from its end.
ERROR_LIMIT = 64 << 10


class Connection(ConnectionBase):
    """Commands and files inside a container: of this node through the engine, of a remote node through ovzctl."""

    transport = 'ovz.containers.ovz'
    has_pipelining = True
    default_user = 'root'

    def __init__(self, *args, **kwargs):
        super(Connection, self).__init__(*args, **kwargs)
        self._manager = None
        self._container = None

    def _connect(self):
        if self._connected:
            return self
        if self.get_option('node_shell'):
            return self._connect_remote()
        if os.geteuid() != 0:
            raise AnsibleConnectionFailure('the ovz connection enters container namespaces and must run as root '
                                           'on the container\'s node')
        name = to_text(self.get_option('remote_addr'))
        data_dir = self.get_option('data_dir')
        try:
            manager = ContainerManager(data_dir, self.get_option('cgroup_parent'))
            state = manager.status(name)
        except OvzError as exc:
            raise AnsibleConnectionFailure('ovz: %s: %s' % (exc.param or 'container', to_native(exc)))
        if state != State.RUNNING:
            raise AnsibleConnectionFailure('container %s in %s is %s; it must be running to run tasks inside '
                                           '(start it with ovz.containers.ovz_container state=started)'
                                           % (name, data_dir, state))
        self._manager = manager
        self._container = name
        self._connected = True
        display.vvv(u'ESTABLISH OVZ CONNECTION TO %s (data_dir %s)' % (name, data_dir), host=name)
        return self

    def _ovzctl(self, *argv):
        """The argv that runs ``ovzctl ARGV`` on the remote node."""
        line = [self.get_option('ovzctl'), '--data-dir', self.get_option('data_dir'),
                '--cgroup-parent', self.get_option('cgroup_parent')] + list(argv)
        return [to_native(a) for a in self.get_option('node_shell')] + [' '.join(shlex.quote(to_text(a)) for a in line)]

    def _output_limit(self):
        try:
            return parse_size(self.get_option('output_limit'), 'output_limit')
        except OvzError as exc:
            raise AnsibleConnectionFailure('ovz: output_limit: %s' % to_native(exc))

    def _remote(self, argv, stdin=None, output=None):
        timeout = self.get_option('timeout') or None
        policy = output or OutputPolicy(limit=self._output_limit(), end_on_overflow=True)
        try:
            result = run_bounded(argv, stdin, timeout, policy)
        except OSError as exc:
            raise AnsibleConnectionFailure('container %s: %s failed: %s' % (self._container, argv[0], to_native(exc)))
        return result

    def _connect_remote(self):
        name = to_text(self.get_option('remote_addr'))
        self._container = name
        status = self._remote(self._ovzctl('status', name))
        rc, stdout, stderr = status.rc, status.stdout, status.stderr
        try:
            # ovzctl exits EXIT_NOT_FOUND for a name that does not exist, and still says "absent".
            state = json.loads(to_text(stdout)).get('state') if rc in (0, EXIT_NOT_FOUND) else None
        except (ValueError, AttributeError):
            state = None
        if state is None:
            raise AnsibleConnectionFailure('container %s: "%s" exited %d: %s'
                                           % (name, ' '.join(self._ovzctl('status', name)), rc, to_native(stderr).strip()))
        if state != State.RUNNING:
            raise AnsibleConnectionFailure('container %s in %s is %s; it must be running to run tasks inside '
                                           '(start it with ovz.containers.ovz_container state=started)'
                                           % (name, self.get_option('data_dir'), state))
        self._connected = True
        display.vvv(u'ESTABLISH OVZ CONNECTION TO %s THROUGH %s' % (name, self.get_option('node_shell')), host=name)
        return self

    def _run(self, argv, stdin=None, output=None):
        """``argv`` inside the container, its output read within ``output`` (by default: at most
        ``output_limit`` bytes per stream, the command killed beyond); returns the engine's ExecResult."""
        policy = output or OutputPolicy(limit=self._output_limit(), end_on_overflow=True)
        if self.get_option('node_shell'):
            return self._remote(self._ovzctl('exec', self._container, *argv), stdin, policy)
        timeout = self.get_option('timeout') or None
        try:
            return self._manager.exec(self._container, argv, stdin=stdin, timeout=timeout, output=policy)
        except OvzError as exc:
            raise AnsibleConnectionFailure('container %s: %s' % (self._container, to_native(exc)))

    def exec_command(self, cmd, in_data=None, sudoable=False):
        super(Connection, self).exec_command(cmd, in_data=in_data, sudoable=sudoable)
        display.vvv(u'EXEC %s' % to_text(cmd), host=self._container)
        result = self._run(['/bin/sh', '-c', to_text(cmd, errors='surrogate_or_strict')], stdin=in_data)
        for stream, dropped in (('standard output', result.stdout_dropped), ('standard error', result.stderr_dropped)):
            if dropped:
                raise AnsibleConnectionFailure(
                    'container %s: the command printed more than output_limit (%s bytes) on its %s and was killed; '
                    'raise ansible_ovz_output_limit if a task really returns that much'
                    % (self._container, self._output_limit(), stream))
        return result.rc, result.stdout, result.stderr

    def put_file(self, in_path, out_path):
        super(Connection, self).put_file(in_path, out_path)
        display.vvv(u'PUT %s TO %s' % (in_path, out_path), host=self._container)
        b_in_path = to_bytes(in_path, errors='surrogate_or_strict')
        if not os.path.isfile(b_in_path):
            raise AnsibleFileNotFound('file or module does not exist: %s' % to_native(in_path))
        with open(b_in_path, 'rb') as handle:
            data = handle.read()
        # "$0" is the destination: no quoting of the path into a shell string.
        result = self._run(['/bin/sh', '-c', 'cat > "$0"', to_text(out_path)], stdin=data)
        rc, stderr = result.rc, result.stderr
        if rc != 0:
            raise AnsibleError('failed to transfer %s to %s inside %s (rc %d): %s'
                               % (in_path, out_path, self._container, rc, to_native(stderr).strip()))

    def fetch_file(self, in_path, out_path):
        super(Connection, self).fetch_file(in_path, out_path)
        display.vvv(u'FETCH %s TO %s' % (in_path, out_path), host=self._container)
        b_out_path = to_bytes(out_path, errors='surrogate_or_strict')
        tmp = b_out_path + b'.ovz-tmp'
        # The file goes to its destination as it is read: its size is the container's to choose.
        with open(tmp, 'wb') as handle:
            try:
                result = self._run(['/bin/sh', '-c', 'exec cat < "$0"', to_text(in_path)],
                                   output=OutputPolicy(limit=ERROR_LIMIT, stdout_to=handle.fileno()))
            except BaseException:
                os.unlink(tmp)
                raise
        if result.rc != 0:
            os.unlink(tmp)
            raise AnsibleError('failed to fetch %s from %s (rc %d): %s'
                               % (in_path, self._container, result.rc, to_native(result.stderr).strip()))
        os.rename(tmp, b_out_path)

    def reset(self):
        self.close()

    def close(self):
        self._connected = False
        self._manager = None
