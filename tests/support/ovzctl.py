# -*- coding: utf-8 -*-
"""``scripts/ovzctl`` run against a test node, as an operator runs it."""

from __future__ import annotations

import os
import subprocess

from . import REPO


OVZCTL = os.path.join(REPO, "scripts", "ovzctl")


def ovzctl(node, *argv):
    return subprocess.run([OVZCTL, "--data-dir", node.data_dir, "--cgroup-parent", node.cgroup_parent] + list(argv),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=120,
                          check=False)
