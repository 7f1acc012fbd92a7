#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: ovz_checkpoint
short_description: Checkpoint, restore, suspend, resume and live-migrate a container with CRIU
version_added: 0.1.0
description:
  - Saves the whole state of a running container (its processes, their memory, open files, sockets,
    timers, pipes, SysV IPC and established TCP connections) with CRIU, and brings it back later, on this
    host or on another one, as C(vzctl chkpnt), C(vzctl restore), C(vzctl suspend), C(vzctl resume) and
    C(vzmigrate --online) do.
  - V(checkpointed) freezes the container, dumps it into O(dumpfile) (one archive file) or O(dump_dir) (a
    directory of CRIU images), then stops it; with O(leave_running) it carries on instead.
  - V(restored) starts the stopped container from such a dump. It continues where it was dumped; its
    established TCP connections carry on (the peers see a delay, not a reset).
  - V(suspended) checkpoints into O(data_dir)C(/dump/<name>) and stops the container; V(resumed) restores it
    from there and removes the dump. Until then the container's state is V(suspended) (in
    M(ovz.containers.ovz_info) and C(ovzctl list)), and starting it (M(ovz.containers.ovz_container) with
    V(started), C(ovzctl start)) resumes it with its memory as well, as C(vzctl start) does. A resume that
    fails leaves the container suspended, its dump kept, and says so.
  - V(migrated) moves the running (or stopped) container to O(target) over SSH, like C(vzmigrate --online).
    The private area is copied while it runs, memory is pre-copied with pre-dumps, then a short freeze, the
    final dump, copy and restore on the target. If any step fails the container runs on exactly one host.
  - A dump can only be restored with the same (or a newer) CRIU, on a kernel that offers what the dumped
    processes used, and with the same cgroup version. The container's configuration and private area must
    be present on the restoring node (M(ovz.containers.ovz_checkpoint) with V(migrated) copies them).
  - Before it freezes anything, a checkpoint (and a suspend or a migration) refuses what CRIU would refuse,
    naming each process (its PID inside the container and its command) or mount, and reports C(changed=false).
    Refused are a process whose session or process group leader is outside the container (a job started from
    the host without C(setsid)), a process in other namespaces than the container's init (but for mount and
    network namespaces), a traced process, descriptors CRIU cannot dump (io_uring, perf events, BPF programs,
    C(/dev/fuse), ...), and FUSE or other mounts it cannot take along.
  - A container whose checkpoint fails after the freeze is thawed and keeps running, and the failure says at
    which step and why, with the lines of CRIU's log (kept in the dump directory) that explain it. When the
    host's file system is full, the message names the path that was being written.
notes:
  - Processes started by M(ovz.containers.ovz_exec) that still run are not descendants of the container's
    init; CRIU cannot take them along, so the checkpoint is refused and names them. Daemons started from
    such commands are adopted by the container's init and are fine.
  - Files opened from outside the container (other than its console) and mounts added from the host cannot
    be checkpointed; the checkpoint fails and names them.
  - Pre-dumps only save time where the kernel tracks dirty memory (C(CONFIG_MEM_SOFT_DIRTY)); elsewhere each
    pre-dump copies all memory again.
options:
  state:
    description:
      - What to do with the container.
      - V(checkpointed) needs a running container and O(dumpfile) or O(dump_dir). Already done when the dump
        exists and the container is stopped (or running, with O(leave_running)), unless O(force).
      - V(restored) needs a stopped container and O(dumpfile) or O(dump_dir); a running container is left
        alone.
      - V(suspended) and V(resumed) use O(data_dir)C(/dump/<name>). A suspended container can only be resumed
        (not restored from another dump) and not migrated.
      - V(migrated) needs O(target).
    type: str
    required: true
    choices: [checkpointed, restored, suspended, resumed, migrated]
  dumpfile:
    description:
      - An absolute path to the dump as one file (an uncompressed tar archive of CRIU's images). Its
        directory must exist.
      - The container waits, stopped, until the file is written; if it cannot be (a full file system), the
        container carries on and the failure names the file.
      - Mutually exclusive with O(dump_dir).
    type: path
  dump_dir:
    description:
      - An absolute path to a directory for CRIU's images (and its logs). Made if missing.
      - O(data_dir)C(/dump/<name>) is where V(suspended) keeps the container's state; a checkpoint there with
        O(leave_running) is refused, and a restore from there is a resume.
      - Mutually exclusive with O(dumpfile).
    type: path
  leave_running:
    description:
      - With V(checkpointed), the container keeps running after the dump instead of stopping.
    type: bool
    default: false
  force:
    description:
      - With V(checkpointed), dump again even when the dump already exists.
    type: bool
    default: false
  tcp_established:
    description:
      - Checkpoint and restore established TCP connections (CRIU's C(--tcp-established)). Without it a
        container with established connections cannot be checkpointed.
    type: bool
    default: true
  target:
    description:
      - With V(migrated), the SSH destination, as C([user@]host[:port]).
    type: str
  target_data_dir:
    description:
      - The O(data_dir) on the target.
      - The target may be this same host with another data dir (a node of its own). The container's host end then
        gets the target data dir's default name; a host end name of the operator's own (C(host_ifname)) is refused
        there before anything is frozen, since both ends exist until the move is done.
    type: path
    default: /var/lib/ovz
  target_cgroup_parent:
    description:
      - The O(cgroup_parent) on the target.
    type: str
    default: auto
  target_python:
    description:
      - The Python interpreter on the target that runs the engine there.
    type: str
    default: python3
  identity_file:
    description:
      - The SSH private key for the target.
    type: path
  known_hosts:
    description:
      - A known hosts file for the target (SSH's C(UserKnownHostsFile)).
    type: path
  ssh_options:
    description:
      - More SSH options for the target, such as C(StrictHostKeyChecking=accept-new).
      - They come before the collection's own (C(ConnectTimeout), C(ServerAliveInterval=5),
        C(ServerAliveCountMax=6), C(Ciphers), C(Compression=no), C(StrictHostKeyChecking=yes) with
        O(known_hosts)), so they replace them; C(BatchMode=yes) stays (a migration never prompts).
    type: list
    elements: str
    default: []
  pre_dump_iterations:
    description:
      - With V(migrated), at most this many memory pre-dumps while the container runs; they stop earlier
        when the dirty pages stop shrinking. C(0) disables pre-copy.
      - Not given, 3 in a pre-copy migration and none in a lazy one. Given (above 0) for a migration that
        turns out lazy, none is made and the task warns.
    type: int
  lazy:
    description:
      - With V(migrated), post-copy (lazy) migration. The final dump leaves the memory with the stopped
        tasks, the container is restored on the target at once and its memory pages follow on demand
        from a page server on this host (CRIU lazy pages, C(userfaultfd)), through the SSH connection.
        The frozen time then no longer grows with the container's memory. The container counts as
        moved only once every page reached the target; a transfer broken before that rolls back
        (the incomplete copy on the target is killed and the container resumes here).
      - Unset (the default) uses it when C(criu check --feature uffd-noncoop) passes on both hosts;
        V(true) requires it (fails naming O(lazy) otherwise); V(false) copies all memory while the
        container is frozen (after pre-dumps, where the kernel can track dirty memory).
      - With lazy migration no pre-dumps are made.
      - An unprivileged container's restored tasks make their C(userfaultfd) in its user namespace, which the
        kernel allows only with C(vm.unprivileged_userfaultfd=1) on the target (a host-wide choice). Without it,
        unset means not lazy (the result's C(warnings) say why) and V(true) fails naming O(lazy).
    type: bool
  keep_source:
    description:
      - With V(migrated), keep the stopped container (configuration and private area) on this host.
    type: bool
    default: false
extends_documentation_fragment:
  - ovz.containers.common
  - ovz.containers.common.attributes
  - ovz.containers.common.name
attributes:
  check_mode:
    support: full
    description: Checks the request (container, dump, target) and reports what would change; changes nothing.
  diff_mode:
    support: full
    description: Shows the container's state (and where its dump is) before and after.
seealso:
  - module: ovz.containers.ovz_container
  - module: ovz.containers.ovz_info
author:
  - ovz.containers developers (@ovz-containers)
'''

EXAMPLES = r'''
- name: Checkpoint a container into one file, and stop it
  ovz.containers.ovz_checkpoint:
    name: "101"
    state: checkpointed
    dumpfile: /var/backups/ct101.dump

- name: Snapshot a running container, which keeps running
  ovz.containers.ovz_checkpoint:
    name: "101"
    state: checkpointed
    dump_dir: /var/backups/ct101
    leave_running: true

- name: Bring it back exactly where it was
  ovz.containers.ovz_checkpoint:
    name: "101"
    state: restored
    dumpfile: /var/backups/ct101.dump

- name: Suspend before host maintenance, resume afterwards
  ovz.containers.ovz_checkpoint:
    name: web1
    state: suspended

- name: Live-migrate to another host
  ovz.containers.ovz_checkpoint:
    name: web1
    state: migrated
    target: root@node2.example.com
    lazy: true
  register: moved

- name: How long the container was frozen
  ansible.builtin.debug:
    msg: "{{ moved.frozen_ms }} ms"
'''

RETURN = r'''
state:
  description: The container's state on this host after the call (V(suspended) after O(state=suspended)).
  returned: always
  type: str
  sample: stopped
dump:
  description: The dump written or read (a file, or a directory of CRIU images).
  returned: when a dump is involved
  type: str
  sample: /var/backups/ct101.dump
timings:
  description: Milliseconds per phase (C(prepare_ms), C(dump_ms), C(restore_ms), C(network_ms), C(pack_ms), C(total_ms), ...).
  returned: when something was done
  type: dict
  sample: {"prepare_ms": 80.1, "dump_ms": 213.8, "cleanup_ms": 120.5, "pack_ms": 3.2, "total_ms": 430.0}
frozen_ms:
  description: How long the container's processes were frozen for the dump, in milliseconds (CRIU's own figure).
  returned: when a dump was made or a migration done
  type: float
  sample: 156.8
size:
  description: The size of the dump in bytes.
  returned: when a dump was made
  type: int
  sample: 143211
checkpoint:
  description: Everything the engine reported (CRIU statistics such as C(pages_written), C(memdump_ms), C(restore_ms)).
  returned: when something was done
  type: dict
  sample: {"pages_written": 18, "memdump_ms": 1.1, "restore_ms": 190.2}
migration:
  description:
    - The migration's result (phases, frozen time, sizes, target) from the migration engine.
    - C(lazy) says whether the memory followed the restore (lazy migration); then C(timings.lazy_transfer)
      is the time from the restore until the target had every page.
  returned: when O(state=migrated)
  type: dict
  sample: {"mode": "online", "lazy": true, "frozen_time": 0.42, "pre_dump_iterations": 0,
           "timings": {"dump": 0.3, "sync": 0.6, "restore": 1.1, "lazy_transfer": 2.4}}
'''

from ansible_collections.ovz.containers.plugins.module_utils._ansible.argspec import NAME_ARGUMENT_SPEC, argument_spec
from ansible_collections.ovz.containers.plugins.module_utils._ansible.results import run_module
from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager
from ansible_collections.ovz.containers.plugins.module_utils._engine.node.config import validate_name
from ansible_collections.ovz.containers.plugins.module_utils._engine.ops.checkpoint_states import CheckpointRequest, reach

ARGUMENT_SPEC = argument_spec(
    **NAME_ARGUMENT_SPEC,
    state=dict(type='str', required=True, choices=['checkpointed', 'restored', 'suspended', 'resumed', 'migrated']),
    dumpfile=dict(type='path'),
    dump_dir=dict(type='path'),
    leave_running=dict(type='bool', default=False),
    force=dict(type='bool', default=False),
    tcp_established=dict(type='bool', default=True),
    target=dict(type='str'),
    target_data_dir=dict(type='path', default='/var/lib/ovz'),
    target_cgroup_parent=dict(type='str', default='auto'),
    target_python=dict(type='str', default='python3'),
    identity_file=dict(type='path'),
    known_hosts=dict(type='path'),
    ssh_options=dict(type='list', elements='str', default=[]),
    pre_dump_iterations=dict(type='int'),
    keep_source=dict(type='bool', default=False),
    lazy=dict(type='bool'),
)


def checkpoint(module, result):
    result['state'] = None
    params = module.params
    manager = ContainerManager(params['data_dir'], params['cgroup_parent'])
    reach(manager, validate_name(params['name']), CheckpointRequest.from_mapping(params), module.check_mode, result)


def main():
    run_module(ARGUMENT_SPEC, checkpoint, mutually_exclusive=[('dumpfile', 'dump_dir')],
               required_if=[('state', 'migrated', ('target',))])


if __name__ == '__main__':
    main()
