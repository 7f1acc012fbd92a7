# -*- coding: utf-8 -*-
"""The multi-node harness's command line: ``multinode.py up DIR [COUNT]`` brings a harness up and
leaves it, ``multinode.py down DIR`` removes it (Molecule's create and destroy playbooks run this).

The harness itself is ``support/multinode.py``; its names are here too, for the callers that put
this directory on ``sys.path`` and import ``multinode`` (the ovz_template Molecule scenario).
"""

from __future__ import annotations

import sys

from support.multinode import Harness, HarnessNode, main  # noqa: F401  pylint: disable=unused-import

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
