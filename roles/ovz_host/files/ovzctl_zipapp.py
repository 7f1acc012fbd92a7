# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build ``ovzctl`` for a node: one executable zip of the collection's engine.

    ovzctl_zipapp.py MODULE_UTILS_DIR OUTPUT

The output only changes when the engine's sources change (fixed timestamps,
sorted entries), so copying it to the nodes is idempotent. It runs with the
node's ``/usr/bin/python3 -I`` (isolated: nothing from the current directory
or the environment is imported) and needs nothing else from the collection.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import sys
import zipfile

PACKAGE = "ansible_collections/ovz/containers/plugins/module_utils"
MAIN = (
    "import sys\n"
    "from ansible_collections.ovz.containers.plugins.module_utils._tools.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
STAMP = (1980, 1, 1, 0, 0, 0)


def entry(archive, name, data):
    info = zipfile.ZipInfo(name, STAMP)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


def modules(source):
    """The engine's Python files below ``source`` (its sub-packages' ``__init__.py`` included), as sorted
    relative paths; the top ``__init__.py`` is left out, as the archive writes its own."""
    found = []
    for directory, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        for name in files:
            path = os.path.relpath(os.path.join(directory, name), source)
            if name.endswith(".py") and path != "__init__.py":
                found.append(path.replace(os.sep, "/"))
    return sorted(found)


def build(source, output):
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    tmp = output + ".tmp"
    with open(tmp, "wb") as handle:
        # -I: the operator's current directory, PYTHONPATH and user site never reach sys.path (the
        # archive itself stays on it, as the program's importer).
        handle.write(b"#!/usr/bin/python3 -I\n")
        with zipfile.ZipFile(handle, "w") as archive:
            entry(archive, "__main__.py", MAIN)
            parts = PACKAGE.split("/")
            for depth in range(1, len(parts) + 1):
                entry(archive, "/".join(parts[:depth]) + "/__init__.py", "")
            for name in modules(source):
                with open(os.path.join(source, name), "rb") as module:
                    entry(archive, PACKAGE + "/" + name, module.read())
    os.chmod(tmp, 0o755)
    os.rename(tmp, output)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.stderr.write(__doc__)
        sys.exit(2)
    build(sys.argv[1], sys.argv[2])
