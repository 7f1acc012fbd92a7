# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""What every module does with the engine's answer on the Ansible side: errors become ``fail_json``.

This package (``_ansible``) is the only part of module_utils that knows about
Ansible; the engine (``_engine``) never imports it.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import traceback
from typing import Any, Callable, Dict, NoReturn

from ansible.module_utils.basic import AnsibleModule

from .._engine.base.errors import OvzError


def fail_from_error(module: AnsibleModule, exc: BaseException, **result: Any) -> NoReturn:
    """Fail with the engine's message; it names the parameter at fault."""
    if isinstance(exc, OvzError):
        module.fail_json(msg=str(exc), param=exc.param, **result)
    module.fail_json(msg='%s: %s' % (type(exc).__name__, exc), exception=traceback.format_exc(), **result)


def run_module(argument_spec: Dict[str, Any], task: Callable[[AnsibleModule, Dict[str, Any]], None],
               **module_options: Any) -> None:
    """A module's whole ``main``: parse the parameters, let ``task(module, result)`` call the engine and
    fill ``result``, then report it. A failure keeps what ``result`` holds so far and names the parameter
    at fault. ``result['warnings']`` become Ansible warnings, ``result['diff']`` is shown in diff mode only,
    and a ``result['failed']`` set by the task (with ``msg``) fails the task with the rest of the result."""
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True, **module_options)
    result: Dict[str, Any] = dict(changed=False)
    try:
        task(module, result)
    except Exception as exc:  # noqa: BLE001 - every failure is reported with its parameter
        _report_aside(module, result)
        fail_from_error(module, exc, **result)
    _report_aside(module, result)
    if result.pop('failed', False):
        module.fail_json(**result)
    module.exit_json(**result)


def _report_aside(module: AnsibleModule, result: Dict[str, Any]) -> None:
    for warning in result.pop('warnings', None) or []:
        module.warn(warning)
    diff = result.pop('diff', None)
    if module._diff and diff is not None:
        result['diff'] = diff
