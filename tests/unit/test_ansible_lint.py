# -*- coding: utf-8 -*-
"""ansible-lint with the production profile passes on the roles, playbooks and Molecule scenarios (issue 8)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from support import COLLECTIONS_ROOT, REPO
from support.node import hang_limit

pytestmark = pytest.mark.slow

LINT = os.path.join(os.path.dirname(sys.executable), "ansible-lint")


def test_production_profile_passes():
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_ROOT, NO_COLOR="1",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run([LINT, "--profile", "production", "--offline", "roles", "playbooks", "extensions"],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=hang_limit(900), check=False)
    assert proc.returncode == 0, proc.stdout
    assert "Profile 'production' was required, and it passed." in proc.stdout, proc.stdout
