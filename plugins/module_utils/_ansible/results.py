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
from typing import Any, NoReturn

from ansible.module_utils.basic import AnsibleModule

from .._engine.base.errors import OvzError


def fail_from_error(module: AnsibleModule, exc: BaseException, **result: Any) -> NoReturn:
    """Fail with the engine's message; it names the parameter at fault."""
    if isinstance(exc, OvzError):
        module.fail_json(msg=str(exc), param=exc.param, **result)
    module.fail_json(msg='%s: %s' % (type(exc).__name__, exc), exception=traceback.format_exc(), **result)
