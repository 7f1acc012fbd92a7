#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: ovz_limits
short_description: Set CPU, memory, process, I/O and beancounter limits of a container, live
version_added: 0.1.0
description:
  - Sets a container's resource limits as C(vzctl set --save) does. A running container gets every change
    at once, with no restart; the limits are also stored in its configuration, so they hold from the first
    instruction of every later start. A stopped container only gets them stored.
  - Only the options given are changed; the others keep their values. V(unlimited) (or C(0) where noted)
    returns an option to its default.
  - Reads the kernel's values of a running container, so a limit changed behind its back is put back
    (and reported as a change).
  - Returns the container's user beancounters (C(held), C(maxheld), C(barrier), C(limit), C(failcnt) and
    whether the kernel enforces each on this host). A parameter without a kernel mechanism is stored and
    reported with C(enforced=false), never applied silently or dropped.
  - Inside a running container, root reads its beancounters in C(/proc/user_beancounters) format at
    C(/run/ovz/user_beancounters) (the kernel lets nobody create C(/proc/user_beancounters) itself).
    When the host runs the live view (C(ovzctl --data-dir DIR bcd start), a small FUSE daemon that the
    C(ovz_host) role can run as C(ovz-bcd.service)), that file is computed at every C(open()), so it is
    current at the moment of reading. Without it, the file is a snapshot, written as the container starts
    (socket, lock, firewall and SysV shm counters then 0, as its new namespaces hold), rewritten after every
    change of its limits (so it shows the new barriers and limits) and at every call of this module and of
    M(ovz.containers.ovz_info) for that container. After a restore it is there once one of them has run. A failure to write
    it is reported as a warning (the limits are in force all the same).
  - Inside, C(/proc/meminfo) (and so procps C(free) and C(top)), C(/proc/cpuinfo), C(/proc/stat),
    C(/proc/swaps), C(/proc/uptime) and C(/sys/devices/system/cpu/online) show the container's own memory
    limit and CPU set when LXCFS runs on the host (mounted at C(/var/lib/lxcfs), or at O(data_dir)C(/lxcfs)
    for one node) when the container starts. C(nproc) follows O(cpumask) in any case.
  - Busybox C(free) cannot show the container's memory. It takes total, free, shared and buffers from the
    C(sysinfo) system call, which the kernel answers from host-wide counters (no namespace or cgroup
    changes it, and no file is read that LXCFS could stand in for; only intercepting the system call
    with seccomp, as Incus can, would), and only buff/cache and available from C(/proc/meminfo). Use
    procps C(free), C(/proc/meminfo) with LXCFS, or C(physpages) in C(/run/ovz/user_beancounters).
notes:
  - 'Mapping, as option: cgroup v1 file / cgroup v2 file / conversion.'
  - 'O(cpuunits): C(cpu.shares) / C(cpu.weight) / shares = cpuunits * 1024 / 1000 (at most 262144),
    weight = cpuunits / 10 (1 to 10000); the default 1000 is the kernel default of both.'
  - 'O(cpulimit) and O(cpus): C(cpu.cfs_quota_us) (C(cpu.cfs_period_us) 100000) / C(cpu.max) /
    quota = percent * 1000 microseconds per 100 ms period, the lower of O(cpulimit) and O(cpus) * 100.'
  - 'O(cpumask): C(cpuset.cpus) / C(cpuset.cpus) / the CPU list.'
  - 'O(ram): C(memory.limit_in_bytes) / C(memory.max) / bytes.'
  - 'O(swap): C(memory.memsw.limit_in_bytes) = ram + swap / C(memory.swap.max) = swap / bytes.'
  - 'O(numproc): C(pids.max) / C(pids.max) / the limit of C(barrier:limit).'
  - 'O(ioprio): C(blkio.bfq.weight) / C(io.bfq.weight) / OpenVZ''s table: ioprio 0 to 7 =
    BFQ weight 320, 365, 410, 460, 500, 550, 600, 640.'
  - 'O(iolimit): C(blkio.throttle.read_bps_device) and C(write_bps_device) / C(io.max) C(rbps) and C(wbps) /
    bytes per second on the container''s block device: its loop device for the V(image) layout, the disk
    holding its directory for the V(directory) layout.'
  - 'O(iopslimit): C(blkio.throttle.read_iops_device) and C(write_iops_device) / C(io.max) C(riops) and
    C(wiops) / operations per second on the same device.'
  - 'O(ubc) C(tcpsndbuf) and C(tcprcvbuf): C(memory.kmem.tcp.limit_in_bytes) = the sum of both limits / none.'
  - 'O(ubc) C(kmemsize): C(memory.kmem.limit_in_bytes), where the kernel still honours it / none.'
  - 'The other O(ubc) parameters have no kernel mechanism: they are stored and reported, with
    C(enforced=false) and the reason in C(mechanism).'
  - 'Cgroup v1 blk-throttle is not hierarchical, so O(iolimit) and O(iopslimit) are written in each of the
    container''s v1 blkio cgroups; root inside the container could mount the v1 blkio hierarchy and lift
    them there. Cgroup v2 (C(io.max) on the container''s own cgroup) has no such gap.'
options:
  cpuunits:
    description:
      - The container's CPU weight in fair sharing, as in OpenVZ. Under contention containers get CPU time
        in proportion to their units. 8 to 500000; the default is 1000.
    type: int
  cpulimit:
    description:
      - The most CPU time the container may use, in percent of one CPU (C(200) is two whole CPUs).
      - C(0) removes the limit. At most 100 times the number of the host's CPUs.
    type: int
  cpus:
    description:
      - The number of CPUs' worth of time the container may use (C(vzctl set --cpus)), enforced as a CPU
        quota of O(cpus) * 100 percent (the lower of this and O(cpulimit) holds).
      - C(0) removes the limit. At most the number of the host's CPUs. It does not pin the container to
        particular CPUs; O(cpumask) does.
    type: int
  cpumask:
    description:
      - The CPUs the container's processes may run on, as a list such as C(0-3,6), or V(all).
      - Every CPU must exist on the host.
    type: str
  ram:
    description:
      - The container's memory limit (its C(physpages)), as a size such as C(512M) or C(2G), or V(unlimited).
      - When it is reached the kernel reclaims the container's own memory, and its own OOM killer acts inside
        the container only.
      - Lowering it below what the container uses now fails if the kernel cannot reclaim enough, and changes
        nothing.
    type: str
  swap:
    description:
      - How much swap the container may use on top of O(ram) (its C(swappages)), or V(unlimited).
      - When O(ram) is set and O(swap) is not, the container gets no swap, as with OpenVZ's VSwap.
      - On cgroup v1 it is enforced as C(memory.memsw.limit_in_bytes) = O(ram) + O(swap), so it needs O(ram),
        and the host's kernel must have swap accounting.
    type: str
  numproc:
    description:
      - The most processes and threads the container may have, as C(barrier:limit) or one number, or
        V(unlimited). The kernel enforces the limit (C(pids.max)); forks beyond it fail inside the container.
    type: str
  ioprio:
    description:
      - The container's I/O priority, 0 (lowest) to 7 (highest), as BFQ weights (see the mapping above).
      - Weights only act on devices that use the C(bfq) I/O scheduler; elsewhere the value is stored and
        reported in RV(not_enforced).
    type: int
  iolimit:
    description:
      - The container's disk bandwidth limit for reads and for writes, in bytes per second, as a size
        (C(10M) is 10 MiB/s). C(0) or V(unlimited) removes it.
    type: str
  iopslimit:
    description:
      - The container's limit of disk operations per second, for reads and for writes. C(0) removes it.
    type: int
  ubc:
    description:
      - 'Other user beancounters as C(name) to C(barrier:limit) (or one value for both), for instance
        C({numfile: "8192:8192", kmemsize: "64M"}). V(unlimited) removes one.'
      - Names are C(kmemsize), C(lockedpages), C(privvmpages), C(shmpages), C(vmguarpages), C(oomguarpages),
        C(numtcpsock), C(numflock), C(numpty), C(numsiginfo), C(tcpsndbuf), C(tcprcvbuf), C(othersockbuf),
        C(dgramrcvbuf), C(numothersock), C(dcachesize), C(numfile), C(numiptent). Use O(ram), O(swap) and
        O(numproc) for C(physpages), C(swappages) and C(numproc).
      - Values of C(*pages) parameters are pages, or bytes when given with a unit (C(64M)); C(*size) and
        C(*buf) parameters are bytes (sizes); the others are counts.
      - Parameters the kernel cannot enforce are stored and reported with C(enforced=false).
    type: dict
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
    description: Shows the container's limits before and after.
seealso:
  - module: ovz.containers.ovz_container
  - module: ovz.containers.ovz_info
author:
  - ovz.containers developers (@ovz-containers)
'''

EXAMPLES = r'''
- name: Twice the default CPU weight, at most one and a half CPUs, 1G of memory, no swap
  ovz.containers.ovz_limits:
    name: "101"
    cpuunits: 2000
    cpulimit: 150
    ram: 1G

- name: Pin to CPUs 0 and 1, at most 200 processes, low I/O priority, 20 MiB/s of disk bandwidth
  ovz.containers.ovz_limits:
    name: web1
    cpumask: "0-1"
    numproc: 200
    ioprio: 2
    iolimit: 20M

- name: Beancounters, and take the memory limit away again
  ovz.containers.ovz_limits:
    name: web1
    ram: unlimited
    ubc:
      numfile: "8192:8192"
      numtcpsock: 500
  register: limits

- name: Show what the container holds
  ansible.builtin.debug:
    msg: "{{ limits.beancounters.numfile.held }} files open"
'''

RETURN = r'''
limits:
  description: Every limit in force after the call, defaults filled in. Sizes are bytes, V(null) is unlimited.
  returned: always
  type: dict
  sample: {"cpuunits": 2000, "cpulimit": 150, "cpus": 0, "cpumask": "all", "ram": 1073741824, "swap": 0,
           "numproc": [200, 200], "ioprio": null, "iolimit": 0, "iopslimit": 0, "ubc": {}}
beancounters:
  description:
    - The container's user beancounters, by parameter, when it runs (empty when it is stopped).
    - C(held) is measured at the call (V(null) where this host offers no way to measure it), C(maxheld) is the
      highest value since the container started, C(barrier) and C(limit) are what is set (V(null) is unlimited),
      C(failcnt) counts the times the kernel refused the container because of the limit, C(enforced) says
      whether the kernel enforces a limit on it here, C(mechanism) how (or why not), C(unit) is pages, bytes
      or count.
  returned: always
  type: dict
  sample: {"numproc": {"held": 12, "maxheld": 30, "barrier": 100, "limit": 100, "failcnt": 0,
           "enforced": true, "unit": "count", "mechanism": "pids.max"}}
not_enforced:
  description: Options that are set but that the kernel cannot enforce for this container on this host, with the reason.
  returned: always
  type: dict
  sample: {"ioprio": "no device of the container uses the bfq I/O scheduler (loop3: none, vda: mq-deadline)"}
applied:
  description: Whether the change was applied to the running container (without restart).
  returned: always
  type: bool
  sample: true
'''

from ansible_collections.ovz.containers.plugins.module_utils._engine.base.diff import DifferenceTracker
from ansible_collections.ovz.containers.plugins.module_utils._ansible.argspec import NAME_ARGUMENT_SPEC, argument_spec
from ansible_collections.ovz.containers.plugins.module_utils._ansible.results import run_module
from ansible_collections.ovz.containers.plugins.module_utils._engine.node.config import validate_name
from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager
from ansible_collections.ovz.containers.plugins.module_utils._engine.ops.limits import update
from ansible_collections.ovz.containers.plugins.module_utils._engine.resources.limits import LIMIT_PARAMS, effective
from ansible_collections.ovz.containers.plugins.module_utils._ansible.argspec import LIMITS_OPTIONS
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.states import RUNNING_STATES


ARGUMENT_SPEC = argument_spec(**NAME_ARGUMENT_SPEC, **LIMITS_OPTIONS)


def set_limits(module, result):
    result.update(applied=False, limits={}, beancounters={}, not_enforced={})
    params = module.params
    name = validate_name(params['name'])
    manager = ContainerManager(params['data_dir'], params['cgroup_parent'])
    change = update(manager, name, dict((key, params[key]) for key in LIMIT_PARAMS), dry_run=module.check_mode,
                    warn=module.warn)
    tracker = DifferenceTracker()
    before, after = effective(change.before), effective(change.after)
    for key in sorted(after):
        tracker.add(key, before[key], after[key])
    if change.drift:
        tracker.add('kernel_differs', change.drift, [])
    result.update(changed=change.changed, applied=change.applied, not_enforced=change.not_enforced, limits=after,
                  diff=tracker.diff())
    runtime = manager.runtime(name) if manager.status(name) in RUNNING_STATES else None
    if change.beancounters is not None:
        result['beancounters'] = change.beancounters
    elif runtime is not None:
        result['beancounters'] = manager.beancounter_table(
            name, runtime, change.before if module.check_mode else change.after, persist=not module.check_mode,
            warn=module.warn)


def main():
    run_module(ARGUMENT_SPEC, set_limits)


if __name__ == '__main__':
    main()
