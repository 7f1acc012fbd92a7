# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every module shares on the Ansible side: common options, error mapping, diffs.

This is the only file in module_utils that knows about Ansible; the engine
files never import it.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import traceback
from typing import TYPE_CHECKING, Any, Dict, List, NoReturn

if TYPE_CHECKING:  # pragma: no cover - annotations only: the module object comes from the caller
    from ansible.module_utils.basic import AnsibleModule

COMMON_ARGUMENT_SPEC = dict(
    data_dir=dict(type='path', default='/var/lib/ovz'),
    cgroup_parent=dict(type='str', default='auto'),
)

NAME_ARGUMENT_SPEC = dict(
    name=dict(type='str', required=True, aliases=['ctid']),
)


def argument_spec(**extra: Any) -> Dict[str, Any]:
    spec = dict(COMMON_ARGUMENT_SPEC)
    spec.update(extra)
    return spec


def fail_from_error(module: "AnsibleModule", exc: BaseException, **result: Any) -> NoReturn:
    """Fail with the engine's message; it names the parameter at fault."""
    from ansible_collections.ovz.containers.plugins.module_utils.errors import OvzError
    if isinstance(exc, OvzError):
        module.fail_json(msg=str(exc), param=exc.param, **result)
    module.fail_json(msg='%s: %s' % (type(exc).__name__, exc), exception=traceback.format_exc(), **result)


class DifferenceTracker(object):
    """Collects before/after values for diff mode, as community.docker does."""

    def __init__(self) -> None:
        self.before: Dict[str, Any] = {}
        self.after: Dict[str, Any] = {}
        self.changes: List[str] = []

    def add(self, key: str, before: Any, after: Any) -> None:
        self.before[key] = before
        self.after[key] = after
        if before != after:
            self.changes.append(key)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def diff(self) -> Dict[str, Dict[str, Any]]:
        return dict(before=self.before, after=self.after)
