# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build the offline busybox OS template (cached by content).

    build-busybox-template.py [DATA_DIR]                  into DATA_DIR/templates (default /var/lib/ovz)
    build-busybox-template.py --out DIR [--engine PATH]   into DIR

Writes ``busybox-<key>.tar.gz`` (``<key>``: a hash of the busybox binary and of
the files the engine adds) and the link ``busybox.tar.gz`` to it; a second run
with the same inputs builds nothing. The last line on stdout is the tarball's
path; stderr says ``built PATH`` when it was built now.

The build itself is the engine's ``templates.build_busybox_template``, found at
``--engine PATH`` (a ``plugins/module_utils`` directory, or an ``ovzctl`` zip as the
ovz_host role installs it), else in the collection this file belongs to
(``roles/ovz_template/files`` -> ``plugins/module_utils``), else in
``/usr/local/sbin/ovzctl``. Needs Debian's busybox-static (``/bin/busybox``).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import argparse
import importlib
import os
import sys
import types
import zipfile

PACKAGE = "ansible_collections.ovz.containers.plugins.module_utils"
TEMPLATES = "_engine.node.templates"     # the engine's OS template module, below PACKAGE
HERE = os.path.dirname(os.path.realpath(__file__))
CANDIDATES = (os.path.join(HERE, "..", "..", "..", "plugins", "module_utils"), "/usr/local/sbin/ovzctl")


def load_templates(engine):
    """The engine's ``templates`` module from a module_utils directory or an ovzctl zip."""
    paths = [engine] if engine else [os.path.normpath(path) for path in CANDIDATES]
    for path in paths:
        if os.path.isfile(os.path.join(path, *TEMPLATES.split(".")) + ".py"):
            # The directory as a package of its own: the engine's relative imports resolve inside it.
            package = types.ModuleType("ovz_engine")
            package.__path__ = [path]
            sys.modules["ovz_engine"] = package
            return importlib.import_module("ovz_engine." + TEMPLATES)
        if os.path.isfile(path) and zipfile.is_zipfile(path):
            sys.path.insert(0, path)
            return importlib.import_module(PACKAGE + "." + TEMPLATES)
    raise SystemExit("build-busybox-template: no engine (%s.py) at %s" % (TEMPLATES.replace(".", "/"), ", ".join(paths)))


def main(argv):
    parser = argparse.ArgumentParser(description="Build the offline busybox OS template (cached by content).")
    parser.add_argument("data_dir", nargs="?", default="/var/lib/ovz", help="build into DATA_DIR/templates")
    parser.add_argument("--out", help="the directory to build into (instead of DATA_DIR/templates)")
    parser.add_argument("--engine", help="plugins/module_utils directory or ovzctl zip of ovz.containers")
    parser.add_argument("--busybox", default="/bin/busybox", help="the static busybox binary to use")
    args = parser.parse_args(argv)
    out = args.out or os.path.join(args.data_dir, "templates")
    templates = load_templates(args.engine)
    before = set(os.listdir(out)) if os.path.isdir(out) else set()
    path = templates.build_busybox_template(out, args.busybox)
    if os.path.basename(path) not in before:
        sys.stderr.write("built %s\n" % path)
    sys.stdout.write(path + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
