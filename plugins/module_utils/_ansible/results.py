# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""What every module shares on the Ansible side: common options, error mapping, diffs.

This is the only file in module_utils that knows about Ansible; the engine
files never import it.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import traceback

COMMON_ARGUMENT_SPEC = dict(
    data_dir=dict(type='path', default='/var/lib/ovz'),
    cgroup_parent=dict(type='str', default='auto'),
)

NAME_ARGUMENT_SPEC = dict(
    name=dict(type='str', required=True, aliases=['ctid']),
)


def argument_spec(**extra):
    spec = dict(COMMON_ARGUMENT_SPEC)
    spec.update(extra)
    return spec


def fail_from_error(module, exc, **result):
    """Fail with the engine's message; it names the parameter at fault."""
    from ansible_collections.ovz.containers.plugins.module_utils._engine.base.errors import OvzError
    if isinstance(exc, OvzError):
        module.fail_json(msg=str(exc), param=exc.param, **result)
    module.fail_json(msg='%s: %s' % (type(exc).__name__, exc), exception=traceback.format_exc(), **result)


class DifferenceTracker(object):
    """Collects before/after values for diff mode, as community.docker does."""

    def __init__(self):
        self.before = {}
        self.after = {}
        self.changes = []

    def add(self, key, before, after):
        self.before[key] = before
        self.after[key] = after
        if before != after:
            self.changes.append(key)

    @property
    def changed(self):
        return bool(self.changes)

    def diff(self):
        return dict(before=self.before, after=self.after)
