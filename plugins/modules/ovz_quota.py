#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: ovz_quota
short_description: Set a container's two-level disk quota, live where the layout allows
version_added: 0.1.0
description:
  - Sets a container's disk quota as C(vzctl set --diskspace --diskinodes --quotatime --quotaugidlimit --save)
    does, and reports its usage. Only the options given are changed; the others keep their values. The settings
    are stored in the container's configuration and put in force at every start.
  - 'First level, V(image) layout (the default): O(diskspace) (hard) is the size of the container''s own ext4
    filesystem. Raising it on a running container is live: the image file grows, the loop device''s capacity is
    refreshed and the mounted filesystem grows online, with no restart. The online grow needs the capability
    C(CAP_SYS_RESOURCE) (ext4 checks it), which root lacks in some environments (a container, a restricted VM):
    there it fails naming the capability and changes nothing, and O(restart=true) grows it stopped instead.
    Shrinking needs the filesystem unmounted:
    on a running container it fails and changes nothing, unless O(restart=true) lets the module stop the container,
    shrink it and start it again. O(diskinodes) is the inode count the filesystem was made with (C(mkfs -N)); it
    grows in proportion when O(diskspace) grows and cannot be changed otherwise, so a value above what the
    filesystem has (at the new size) fails. There is no soft limit and no grace on this layout: a soft value below
    the hard one is stored and reported in RV(not_enforced).'
  - 'First level, V(directory) layout: a project quota (XFS or ext4 mounted with C(prjquota)). The private
    directory gets a project ID (its inode number, stored in the configuration) with the PROJINHERIT flag, and
    O(diskspace), O(diskinodes) (soft and hard) and O(quotatime) are the project''s limits and grace time, all
    changed live. The grace time belongs to the filesystem, so it is shared by every container on it.'
  - 'Second level, V(image) layout only: O(quotaugidlimit) > 0 gives the container''s filesystem the ext4
    C(quota) feature and mounts it C(usrquota,grpquota); root inside the container then uses C(quota),
    C(setquota), C(repquota) as on any Linux host. Turning it on or off changes the filesystem, which needs it
    unmounted (the container stopped, or O(restart=true)). The container''s C(/dev) gets the one block node its
    C(/proc/mounts) names, for C(quotactl(2)) to look up; the device cgroup grants no read or write on it.
    The node is made at every start and, after a restore from a checkpoint, replaced by the one of the loop
    device the image is on now.
    O(users) and O(groups) set the same limits from the host; O(quotatime) is then the grace time of those
    limits.'
  - Where the kernel lacks quota support (no C(CONFIG_QFMT_V2) for ext4, no C(CONFIG_XFS_QUOTA) for XFS), every
    setting that needs it fails with a message naming the missing option, and nothing changes. The image
    layout's size and inode count need no quota support and work everywhere.
  - 'Usage is read from the kernel: C(statfs) of the mounted image (what C(df) shows inside), the superblock of
    a stopped one, the project quota of a directory (what C(du) counts), and C(Q_GETNEXTQUOTA) for users and
    groups.'
options:
  diskspace:
    description:
      - Disk space as C(soft:hard) or one size for both (C(512M), C(10G), bytes).
      - For the V(image) layout the hard value is the filesystem's size, a multiple of 4K and at least 16M.
      - A hard value below what the container uses now fails and changes nothing.
    type: str
  diskinodes:
    description:
      - Inodes as C(soft:hard) or one number for both.
      - For the V(image) layout see above; for V(directory) the project's inode limits.
    type: str
  quotatime:
    description:
      - Grace time for soft limits, in seconds or as C(90m), C(12h), C(7d).
      - V(directory) layout, the project quota's grace; V(image) layout, the second level's.
    type: str
  quotaugidlimit:
    description:
      - Turns the second level (per-user and per-group quota inside, V(image) layout) on with a number above 0,
        off with C(0). OpenVZ limits the number of IDs with it; the kernel has no such limit, so the number is
        stored and reported in RV(not_enforced).
    type: int
  users:
    description:
      - Per-user limits inside the container (second level). Users not listed keep theirs (root inside manages
        them too). V(unlimited) removes a limit.
      - Names are looked up in the container's own files while it runs. For a stopped container the limits are
        stored and set at its next start (a name the container does not know then is skipped).
    type: list
    elements: dict
    suboptions:
      name:
        description: A user name from the container's C(/etc/passwd), or a numeric ID.
        type: str
        required: true
      blocks:
        description: Disk space as C(soft:hard) or one size (default V(unlimited)).
        type: str
      inodes:
        description: Inodes as C(soft:hard) or one number (default V(unlimited)).
        type: str
  groups:
    description:
      - Per-group limits inside the container (second level), as O(users), with names from C(/etc/group).
    type: list
    elements: dict
    suboptions:
      name:
        description: A group name from the container's C(/etc/group), or a numeric ID.
        type: str
        required: true
      blocks:
        description: Disk space as C(soft:hard) or one size (default V(unlimited)).
        type: str
      inodes:
        description: Inodes as C(soft:hard) or one number (default V(unlimited)).
        type: str
  restart:
    description:
      - Allow the module to stop and start a running container for the changes that need its filesystem
        unmounted (shrinking an image, turning the second level on or off). Without it they fail and nothing
        changes.
    type: bool
    default: false
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
    description: Shows the container's quota settings before and after.
seealso:
  - module: ovz.containers.ovz_container
  - module: ovz.containers.ovz_info
author:
  - ovz.containers developers (@ovz-containers)
'''

EXAMPLES = r'''
- name: Give container 101 10G of disk, live
  ovz.containers.ovz_quota:
    name: "101"
    diskspace: 10G

- name: Directory layout, soft and hard limits with a day of grace
  ovz.containers.ovz_quota:
    name: web1
    diskspace: 9G:10G
    diskinodes: 180000:200000
    quotatime: 1d

- name: Second level, and a quota for one user inside
  ovz.containers.ovz_quota:
    name: "101"
    quotaugidlimit: 100
    restart: true
    users:
      - name: alice
        blocks: 900M:1G
        inodes: 10000
  register: quota

- name: Show the usage
  ansible.builtin.debug:
    msg: "{{ quota.usage.bytes_used }} of {{ quota.usage.bytes_total }} bytes used"
'''

RETURN = r'''
quota:
  description: The quota settings after the call (sizes in bytes, V(null) is unlimited).
  returned: always
  type: dict
  sample: {"diskspace": [10737418240, 10737418240], "diskinodes": [null, null], "quotatime": null,
           "quotaugidlimit": 0, "users": {}, "groups": {}}
usage:
  description:
    - The container's disk usage and limits, with C(source) saying where they come from.
    - For the image layout, C(bytes_hard) is the hard limit (the filesystem's size, C(image_bytes)) and
      C(bytes_total) what C(df) inside shows as the size (the hard limit less ext4's own metadata).
    - C(grace_blocks) and C(grace_inodes) give the grace state (C(none), C(running), C(expired)) and when it ends.
    - With the second level on and the container running, C(users) and C(groups) by ID, in the same form.
    - For a running image-layout container, C(loop_device) is the loop device its filesystem is on and
      C(direct_io) whether that device does direct I/O on the image file (V(false) where the host's filesystem
      refuses it; the module then warns, as the image's blocks are cached twice).
  returned: always
  type: dict
  sample: {"layout": "image", "source": "statfs", "bytes_used": 1204224, "bytes_total": 133152768, "bytes_hard": 134217728,
           "bytes_free": 131948544, "inodes_used": 512, "inodes_hard": 32768, "inodes_free": 32256,
           "bytes_soft": 134217728, "inodes_soft": null, "image_bytes": 134217728,
           "loop_device": "/dev/loop3", "direct_io": true,
           "grace_blocks": {"state": "none", "expires": null}, "grace_inodes": {"state": "none", "expires": null}}
not_enforced:
  description: Settings that are stored but that nothing in the kernel enforces for this container, with the reason.
  returned: always
  type: dict
  sample: {"diskspace": "soft limit: the image layout enforces only the hard limit (the filesystem's size)"}
actions:
  description: What the call did (or, in check mode, would do) beyond storing the settings.
  returned: always
  type: list
  elements: str
  sample: ["grow image online from 134217728 to 268435456 bytes"]
applied:
  description: Whether the change was applied to the running container.
  returned: always
  type: bool
  sample: true
restarted:
  description: Whether the container was stopped and started again (only with O(restart=true)).
  returned: always
  type: bool
  sample: false
'''

from ansible_collections.ovz.containers.plugins.module_utils._engine.base.diff import DifferenceTracker
from ansible_collections.ovz.containers.plugins.module_utils._ansible.argspec import NAME_ARGUMENT_SPEC, argument_spec
from ansible_collections.ovz.containers.plugins.module_utils._ansible.results import run_module
from ansible_collections.ovz.containers.plugins.module_utils._engine.node.config import validate_name
from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager
from ansible_collections.ovz.containers.plugins.module_utils._engine.ops.converge import quota_request
from ansible_collections.ovz.containers.plugins.module_utils._engine.ops.quota import update
from ansible_collections.ovz.containers.plugins.module_utils._engine.resources.quota import usage
from ansible_collections.ovz.containers.plugins.module_utils._ansible.argspec import QUOTA_OPTIONS
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.states import RUNNING_STATES


ARGUMENT_SPEC = argument_spec(**NAME_ARGUMENT_SPEC, **QUOTA_OPTIONS)


def set_quota(module, result):
    result.update(applied=False, restarted=False, quota={}, usage={}, not_enforced={}, actions=[])
    params = module.params
    name = validate_name(params['name'])
    manager = ContainerManager(params['data_dir'], params['cgroup_parent'])
    change = update(manager, name, quota_request(params), dry_run=module.check_mode)
    tracker = DifferenceTracker()
    for key in sorted(change.after):
        tracker.add(key, change.before[key], change.after[key])
    if change.drift:
        tracker.add('kernel_differs', change.drift, [])
    if change.actions:
        tracker.add('actions', [], change.actions)
    result.update(changed=change.changed, applied=change.applied, restarted=change.restarted, quota=change.after,
                  not_enforced=change.not_enforced, actions=change.actions, diff=tracker.diff())
    config = manager.load(name)
    storage = manager.storage(config)
    result['usage'] = usage(config, storage, manager.status(name) in RUNNING_STATES)
    if result['usage'].get('direct_io') is False:
        module.warn(storage.direct_io_note() or 'the loop device of the image does buffered I/O')


def main():
    run_module(ARGUMENT_SPEC, set_quota)


if __name__ == '__main__':
    main()
