# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):

    DOCUMENTATION = r'''
options:
  data_dir:
    description:
      - The node's data directory. It holds C(conf/<name>.json), C(private/<name>), C(root/<name>),
        C(dump/<name>), C(templates/) and C(run/<name>/).
      - Two data directories on one kernel behave as two separate nodes.
    type: path
    default: /var/lib/ovz
  cgroup_parent:
    description:
      - Where the container's cgroups go, in every hierarchy.
      - V(auto) picks C(/ovz.slice) on hosts whose PID 1 is systemd, and otherwise the cgroup the
        caller itself runs in (the delegation model, in which whoever supervises the caller keeps accounting
        for its containers).
      - A value starting with C(/) is absolute; any other value is a path below what V(auto) gives.
      - It is resolved when the container starts; the absolute paths are recorded in the container's
        runtime state, and later calls use the recorded paths.
    type: str
    default: auto
requirements:
  - Linux with namespaces and cgroups (v1 or v2), Python 3.8 or newer on the managed host.
  - Run as root on the managed host.
'''

    NAME = r'''
options:
  name:
    description:
      - The container's name, like the CTID of vzctl. C(101) is a valid name.
      - 1 to 64 characters from C(A-Z a-z 0-9 _ . -), starting with a letter or digit.
    type: str
    required: true
    aliases: [ctid]
'''

    ATTRIBUTES = r'''
attributes:
  platform:
    support: full
    platforms: posix
    description: Linux only; the module acts on the kernel of the host it runs on, as root.
  action_group:
    support: full
    membership: [ovz.containers.all]
    description: Use C(group/ovz.containers.all) in C(module_defaults) to set O(data_dir) and O(cgroup_parent) once.
'''
