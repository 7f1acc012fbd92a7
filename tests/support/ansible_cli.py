# -*- coding: utf-8 -*-
"""Ansible's command-line tools run with this collection (``ANSIBLE_COLLECTIONS_PATH``), and their
PLAY RECAP read back."""

from __future__ import annotations

import os
import subprocess
import sys

from . import COLLECTIONS_ROOT


BIN = os.path.dirname(sys.executable)


def ansible_env(**extra):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_ROOT, ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
               ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_HOST_KEY_CHECKING="0", ANSIBLE_RETRY_FILES_ENABLED="0")
    env.update(extra)
    return env


def run(argv, **env):
    return subprocess.run(argv, env=ansible_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=900, check=False)


def recap(output):
    """{host: {ok: n, changed: n, ...}} from the PLAY RECAP."""
    result = {}
    for line in output.split("PLAY RECAP")[-1].splitlines()[1:]:
        if ":" not in line:
            continue
        host, counts = line.split(":", 1)
        result[host.strip()] = dict((k, int(v)) for k, v in (item.split("=") for item in counts.split()))
    return result
