# -*- coding: utf-8 -*-
"""The collection as Ansible users meet it: ansible-doc pages, FQCNs, the action
group in module_defaults, and the demo playbook (issue: foundation)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from support import COLLECTIONS_ROOT, REPO
from support.snapshot import host_snapshot

BIN = os.path.dirname(sys.executable)
MODULES = sorted(f[:-3] for f in os.listdir(os.path.join(REPO, "plugins", "modules")) if f.endswith(".py"))


def ansible_env():
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_ROOT, ANSIBLE_NOCOLOR="1",
                ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
                ANSIBLE_STDOUT_CALLBACK="default")


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_renders(module):
    proc = subprocess.run([os.path.join(BIN, "ansible-doc"), "ovz.containers." + module], env=ansible_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "OPTIONS" in proc.stdout and "EXAMPLES" in proc.stdout and "RETURN VALUES" in proc.stdout
    assert "data_dir" in proc.stdout and "[WARNING]" not in proc.stderr


def test_ansible_doc_lists_every_module():
    proc = subprocess.run([os.path.join(BIN, "ansible-doc"), "-l", "ovz.containers", "-j"], env=ansible_env(),
                          stdout=subprocess.PIPE, universal_newlines=True, check=True)
    listed = sorted(name.split(".")[-1] for name in json.loads(proc.stdout))
    assert listed == MODULES


def playbook(path, extra_vars, check=False):
    # Modules run with the host's Python, as on a managed node (not a pyenv shim on PATH).
    argv = [os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", path,
            "-e", "ansible_python_interpreter=/usr/bin/python3", "-e", json.dumps(extra_vars)]
    if check:
        argv.append("--check")
    return subprocess.run(argv, env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=600, check=False)


def test_demo_playbook_shows_isolation(node, busybox_template):
    templates = os.path.join(node.data_dir, "templates")
    os.makedirs(templates, exist_ok=True)
    shutil.copy(busybox_template, os.path.join(templates, "busybox.tar.gz"))
    names = [node.name(), node.name()]
    variables = {"ovz_demo_data_dir": node.data_dir, "ovz_demo_cgroup_parent": node.cgroup_parent,
                 "ovz_demo_containers": names}
    before = host_snapshot(node.data_dir)
    checked = playbook(os.path.join(REPO, "playbooks", "demo.yml"), variables, check=True)
    assert checked.returncode == 0 and "failed=0" in checked.stdout, checked.stdout     # --check runs through
    assert host_snapshot(node.data_dir) == before and node.manager.layout.names() == []
    proc = playbook(os.path.join(REPO, "playbooks", "demo.yml"), variables)
    assert proc.returncode == 0, proc.stdout
    for name in names:
        assert "%s: hostname %s.ovz.test" % (name, name) in proc.stdout
    assert "failed=0" in proc.stdout
    assert node.manager.layout.names() == []  # the demo removes its containers at the end


def test_module_defaults_group_and_idempotence_through_ansible_playbook(node, busybox_template, tmp_path):
    name = node.name()
    play = tmp_path / "play.yml"
    play.write_text("""
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/ovz.containers.all:
      data_dir: %s
      cgroup_parent: %s
  tasks:
    - ovz.containers.ovz_container:
        name: %s
        template: %s
        layout: directory
        wait_boot: true
""" % (node.data_dir, node.cgroup_parent, name, busybox_template))
    checked = playbook(str(play), {}, check=True)
    assert checked.returncode == 0 and "changed=1" in checked.stdout, checked.stdout
    assert node.manager.status(name) == "absent"
    first = playbook(str(play), {})
    assert first.returncode == 0 and "changed=1" in first.stdout, first.stdout
    assert node.manager.status(name) == "running"
    second = playbook(str(play), {})
    assert second.returncode == 0 and "changed=0" in second.stdout, second.stdout
