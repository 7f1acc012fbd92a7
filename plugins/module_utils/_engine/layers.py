# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""The layers of ``plugins/``, lowest first: a file imports from its own layer and the ones below, never above.

    plugins    modules, connection, inventory, doc fragments       (Ansible's entry points)
       |
    adapters   _ansible (argument specs, errors -> fail_json),   _tools (ovzctl, bcd)
       |
    ops        lifecycle, limits, quota, converge, fleet, boot, checkpoint, migration, remote
       |
    container  the container manager: create, start, stop, freeze, destroy, exec
       |
    resources  limits, quota, beancounters, network: a container's settings -> kernel objects
       |
    node       the data dir: its layout, the configuration, locks, OS templates
       |
    kernel     one facility each: namespaces, processes, rootfs, storage, cgroups, CRIU, id maps, DAD
       |
    base       errors, fault points, sizes, state files, diffs

Within a layer files may import each other, but never in a cycle. Only the
Ansible-facing code (``ANSIBLE_IMPORTERS``) imports ``ansible``; the engine
(``_engine``) and the tools run without it (on a migration's target, in ovzctl).

``tests/unit/test_layers.py`` reads this table and walks every import of every
file under ``plugins/`` (function-level and ``TYPE_CHECKING`` ones included): an
import that points up a layer, a cycle, a file in no layer or an ``ansible`` import
outside ``ANSIBLE_IMPORTERS`` fails it, naming the files. Paths are relative to
``plugins/``; a directory holds every file below it.
"""

from __future__ import annotations

LAYERS = (
    ("base", ("module_utils/_engine/base", "module_utils/_engine/__init__.py", "module_utils/_engine/layers.py")),
    ("kernel", ("module_utils/_engine/kernel",)),
    ("node", ("module_utils/_engine/node",)),
    ("resources", ("module_utils/_engine/resources",)),
    ("container", ("module_utils/_engine/container",)),
    ("ops", ("module_utils/_engine/ops",)),
    ("adapters", ("module_utils/_ansible", "module_utils/_tools")),
    ("plugins", ("modules", "connection", "inventory", "doc_fragments")),
)

ANSIBLE_IMPORTERS = ("module_utils/_ansible", "modules", "connection", "inventory", "doc_fragments")
