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
      - V(present) makes sure the container exists, leaving it running, stopped or suspended as it is.
      - V(started) makes sure it exists and runs (a frozen one is thawed). A suspended one (see
        M(ovz.containers.ovz_checkpoint)) is resumed with its memory, as C(vzctl start) does, not booted
        afresh; a resume that fails keeps its suspended state and says so.
      - V(stopped) stops it gracefully - the init's own shutdown signal, then O(timeout), then
        C(SIGKILL) to every process in its cgroup - and leaves no process, mount, loop device or cgroup.
        A suspended container is not running either; it stays suspended, its memory kept.
      - V(restarted) always stops and starts it again (a suspended one is resumed).
      - V(frozen) freezes every process of a running container (C(vzctl suspend) without a dump).
      - V(absent) stops it if needed and removes its configuration and private area.
    type: str
    choices: [present, started, stopped, restarted, frozen, absent]
    default: started
  template:
    description:
      - The OS template the container is created from, used only when it does not exist yet (given for an
        existing container made from another template, the task warns).
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
      - Only used at creation (another value for an existing container warns); change it later with M(ovz.containers.ovz_quota).
    type: str
  diskinodes:
    description:
      - Initial inode count, as C(soft:hard) or one number for both.
      - For the V(image) layout the hard value is the filesystem's inode count.
      - Only used at creation; change it later with M(ovz.containers.ovz_quota).
    type: str
  unprivileged:
    description:
      - Run the container in its own user namespace, like Incus C(security.idmap.isolated). Its uids and gids 0 to
        65535 are a block of 65536 host ids of its own, taken from root's ranges in C(/etc/subuid) and C(/etc/subgid)
        (or from 1000000000 up where root has none) and given back when the container is destroyed. Its root is
        root inside only, and an unprivileged user on the host; its mount, pid, uts, ipc, net and cgroup namespaces
        belong to that user namespace, so root inside cannot remount host-wide C(/proc/sys) entries, mount host
        block devices or v1 cgroup hierarchies, or create device nodes (the host's allowed nodes are bound in).
      - The files keep their ownership on disk and are seen through an idmapped mount where the kernel and
        filesystem allow it (Linux 5.12 or later; ext4, XFS, Btrfs). Elsewhere they are shifted into the block
        (C(chown), keeping setuid bits, ACLs and file capabilities) and back when made privileged again.
        The returned C(container.idmap) says which is used.
      - The container's payload cgroup is delegated to its root, as systemd's C(Delegate=yes) does.
      - Its user namespace is owned by the block's first uid on the host, not by host root, so the kernel's
        per-user counts of its processes (inotify instances and watches, processes, pending signals, mqueue bytes,
        nested namespaces) are that user's own, with the host's per-user limits (for example
        C(user.max_inotify_instances)); exhausting them inside leaves host root its own.
      - Defaults to V(true) at creation (earlier releases defaulted to V(false)); set V(false) for a privileged
        container, whose root is host root confined by capabilities and cgroups only. An existing container keeps
        what it was created with, and can only be changed while it is stopped.
      - Checkpoint, suspend, restore and live migration work as for privileged containers. After a restore the
        kernel counts the container's per-user counts against host root again until it restarts (CRIU makes the
        user namespace as host root). A lazy migration needs C(vm.unprivileged_userfaultfd=1) on the target.
    type: bool
  seccomp_allow:
    description:
      - System calls that every process of the container may make after all, out of those its seccomp filter
        denies. The filter (built with libseccomp; Debian's C(python3-seccomp), which the
        P(ovz.containers.ovz_host#role) role installs) answers C(EPERM) inside to what LXC's and Docker's default
        profiles deny - kernel modules (C(init_module), C(finit_module), C(delete_module)), kexec
        (C(kexec_load), C(kexec_file_load)), C(open_by_handle_at), the keyring calls (C(add_key),
        C(request_key), C(keyctl)), C(bpf), C(perf_event_open), C(userfaultfd), raw I/O ports (C(iopl),
        C(ioperm)), swap (C(swapon), C(swapoff)), the clock (C(settimeofday), C(clock_settime),
        C(clock_adjtime)), the kernel log (C(syslog)), C(acct) and obsolete calls (C(uselib),
        C(lookup_dcookie), C(nfsservctl), C(_sysctl), C(vm86), C(vm86old)) - in both kinds of container.
      - A call allowed here still needs what the kernel asks of it otherwise, the capability root inside may
        lack among them. In a privileged container, allowing the keyring calls gives its root host root's own
        user keyring.
      - Without the binding, a privileged container does not start (the error names the package); an
        unprivileged one runs without the filter.
      - The list is the complete set; V([]) allows none. Commands run with P(ovz.containers.ovz_exec#module)
        get a change at once; the container's own processes at its next start.
    type: list
    elements: str
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

- name: An unprivileged container (its own user namespace and id block)
  ovz.containers.ovz_container:
    name: ct102
    template: busybox
    unprivileged: true

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
      description:
        - One of V(absent), V(stopped), V(suspended), V(running), V(frozen).
        - V(suspended) is a stopped container whose memory waits in O(data_dir)C(/dump/<name>) (C(vzctl suspend)).
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
      sample: {"memory": "/sys/fs/cgroup/memory/ovz-3f9a01c2-101"}
    unprivileged:
      description: Whether it runs in its own user namespace.
      type: bool
      sample: true
    idmap:
      description:
        - The id block of an unprivileged container - its first host uid and gid, the count, and whether its files
          are seen through an idmapped mount (V(idmapped)) or were shifted on disk (V(shifted)); null otherwise.
      type: dict
      sample: {"uid": 1000000000, "gid": 1000000000, "count": 65536, "mode": "idmapped"}
'''

from ansible_collections.ovz.containers.plugins.module_utils._ansible.argspec import NAME_ARGUMENT_SPEC, argument_spec
from ansible_collections.ovz.containers.plugins.module_utils._ansible.results import run_module
from ansible_collections.ovz.containers.plugins.module_utils._engine.node.config import validate_labels, validate_name
from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager
from ansible_collections.ovz.containers.plugins.module_utils._engine.ops.converge import apply_container, plan_container
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.errors import OvzError
from ansible_collections.ovz.containers.plugins.module_utils._ansible.argspec import CONTAINER_OPTIONS


ARGUMENT_SPEC = argument_spec(**NAME_ARGUMENT_SPEC, unprivileged=dict(type='bool'),
                              **CONTAINER_OPTIONS)


def converge(module, result):
    params = module.params
    name = validate_name(params['name'])
    if params['labels'] is not None:
        params['labels'] = validate_labels(params['labels'])
    if params['timeout'] < 0:
        raise OvzError('must not be negative, got %d' % params['timeout'], 'timeout')
    manager = ContainerManager(params['data_dir'], params['cgroup_parent'])
    plan = plan_container(manager, name, params)
    result['warnings'] = plan.warnings
    if plan.changed and not module.check_mode:
        apply_container(manager, plan, params)
    result.update(changed=plan.changed, diff=plan.tracker.diff())
    result['container'] = manager.facts(name) if not module.check_mode else dict(
        manager.facts(name), state=plan.wanted if plan.changed else plan.current)


def main():
    run_module(ARGUMENT_SPEC, converge)


if __name__ == '__main__':
    main()
