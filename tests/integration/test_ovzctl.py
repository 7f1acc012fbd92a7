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
    # freeze / thaw: every process stopped in place, nothing saved.
    assert ovzctl(node, "freeze", name).returncode == 0
    assert json.loads(ovzctl(node, "status", name).stdout)["state"] == "frozen"
    assert ovzctl(node, "thaw", name).returncode == 0
    assert json.loads(ovzctl(node, "status", name).stdout)["state"] == "running"
    # suspend / resume as vzctl: a CRIU checkpoint to <data-dir>/dump/NAME, stopped in between. The hostname
    # set at run time lives only in the kernel's memory: a stop and start would lose it, a resume keeps it.
    assert ovzctl(node, "exec", name, "hostname", "ovz-suspended").returncode == 0
    result = ovzctl(node, "suspend", name)
    assert result.returncode == 0 and "suspended into" in result.stdout, result.stderr
    assert json.loads(ovzctl(node, "status", name).stdout)["state"] == "suspended"
    assert os.path.isfile(os.path.join(node.data_dir, "dump", name, "ovz-checkpoint.json"))
    result = ovzctl(node, "resume", name)
    assert result.returncode == 0 and "is resumed" in result.stdout, result.stderr
    assert json.loads(ovzctl(node, "status", name).stdout)["state"] == "running"
    assert ovzctl(node, "exec", name, "hostname").stdout == "ovz-suspended\n"
    assert not os.path.exists(os.path.join(node.data_dir, "dump", name))
    again = ovzctl(node, "resume", name)
    assert again.returncode == 1 and "no suspended state" in again.stderr, again.stderr
    assert ovzctl(node, "stop", name).returncode == 0
    assert ovzctl(node, "destroy", name).returncode == 0
    missing = ovzctl(node, "start", name)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
