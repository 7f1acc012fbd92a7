# -*- coding: utf-8 -*-
"""ovzctl, the vzctl-style command line over the engine."""

from __future__ import annotations

import json
import os
import subprocess

from conftest import REPO

OVZCTL = os.path.join(REPO, "scripts", "ovzctl")


def ovzctl(node, *argv):
    return subprocess.run([OVZCTL, "--data-dir", node.data_dir, "--cgroup-parent", node.cgroup_parent] + list(argv),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=120,
                          check=False)


def test_vzctl_vocabulary_end_to_end(node, busybox_template):
    name = node.name()
    assert ovzctl(node, "create", name, "--ostemplate", busybox_template, "--layout", "directory").returncode == 0
    assert ovzctl(node, "start", name, "--wait").returncode == 0
    assert json.loads(ovzctl(node, "status", name).stdout)["state"] == "running"
    assert name in ovzctl(node, "list").stdout
    result = ovzctl(node, "exec", name, "hostname")
    assert (result.returncode, result.stdout) == (0, name + "\n")
    assert ovzctl(node, "exec", name, "sh", "-c", "exit 3").returncode == 3
    assert ovzctl(node, "suspend", name).returncode == 0
    assert json.loads(ovzctl(node, "status", name).stdout)["state"] == "frozen"
    assert ovzctl(node, "resume", name).returncode == 0
    assert ovzctl(node, "stop", name).returncode == 0
    assert ovzctl(node, "destroy", name).returncode == 0
    missing = ovzctl(node, "start", name)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
