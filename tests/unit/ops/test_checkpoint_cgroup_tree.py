# -*- coding: utf-8 -*-
"""The container's own cgroup2 tree across a checkpoint (checkpoint.read_cgroup_tree and the
restore's action script), on plain directories standing in for cgroupfs. The real path, a
systemd 257 container restored on a cgroup2 host, is tests/vm/test_debian_systemd.py."""

from __future__ import annotations

import os
import subprocess

import pytest

from ansible_collections.ovz.containers.plugins.module_utils._engine.ops import checkpoint as ckpt
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.cgroups import ContainerCgroups
from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import PAYLOAD
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.errors import InvalidParameter, StateConflict


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


@pytest.fixture
def container(tmp_path):
    """An ovz-<name> directory with its payload, as the restore finds them before CRIU runs."""
    root = tmp_path / "ovz-ct"
    write(str(root / PAYLOAD / "cgroup.controllers"), "cpu memory pids\n")
    write(str(root / PAYLOAD / "cgroup.subtree_control"), "")
    return ContainerCgroups(None, {"unified": str(root)}), str(root / PAYLOAD)


def meta_for(tree):
    return {"cgroups": [{"controllers": "", "key": "unified", "path": "/ovz-ct/payload", "tree": tree}]}


def test_read_cgroup_tree_records_delegation_and_limits(tmp_path):
    payload = str(tmp_path / "payload")
    write(os.path.join(payload, "cgroup.subtree_control"), "memory pids\n")
    write(os.path.join(payload, "system.slice", "cgroup.subtree_control"), "memory\n")
    write(os.path.join(payload, "system.slice", "a.service", "memory.max"), "33554432\n")
    write(os.path.join(payload, "system.slice", "a.service", "cgroup.subtree_control"), "")
    tree = ckpt.read_cgroup_tree(payload)
    assert tree["."] == {"cgroup.subtree_control": "memory pids"}
    assert tree["system.slice"] == {"cgroup.subtree_control": "memory"}
    assert tree["system.slice/a.service"] == {"cgroup.subtree_control": "", "memory.max": "33554432"}


def test_the_script_makes_the_tree_and_gives_it_back_top_down(tmp_path, container):
    cgroups, payload = container
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    tree = {"system.slice/a b.service": {"memory.max": "33554432", "pids.max": "$(touch /tmp/x)"},
            ".": {"cgroup.subtree_control": "memory pids"},
            "system.slice": {"cgroup.subtree_control": "memory"}}
    script = ckpt.Checkpointer._prepare_cgroup_tree(run_dir, cgroups, meta_for(tree))  # pylint: disable=protected-access
    assert os.path.isdir(os.path.join(payload, "system.slice", "a b.service"))
    with open(script) as handle:
        text = handle.read()
    assert text.index(os.path.join(payload, "cgroup.subtree_control")) < \
        text.index(os.path.join(payload, "system.slice", "cgroup.subtree_control")) < text.index("memory.max")
    assert "touch" not in text        # a value that is not a cgroup value is left out
    # Run as CRIU would: only at post-setup-namespaces, and each write whole.
    subprocess.run([script], env={"CRTOOLS_SCRIPT_ACTION": "pre-restore"}, check=True)
    assert os.path.getsize(os.path.join(payload, "cgroup.subtree_control")) == 0
    subprocess.run([script], env={"CRTOOLS_SCRIPT_ACTION": "post-setup-namespaces"}, check=True)
    with open(os.path.join(payload, "cgroup.subtree_control")) as handle:
        assert handle.read() == "+memory +pids"
    with open(os.path.join(payload, "system.slice", "a b.service", "memory.max")) as handle:
        assert handle.read() == "33554432"


def test_nothing_to_give_back_makes_no_script(tmp_path, container):
    cgroups, _payload = container
    assert ckpt.Checkpointer._prepare_cgroup_tree(str(tmp_path), cgroups, meta_for({".": {}})) is None  # pylint: disable=protected-access
    assert ckpt.Checkpointer._prepare_cgroup_tree(str(tmp_path), cgroups, {"cgroups": []}) is None  # pylint: disable=protected-access


@pytest.mark.parametrize("rel", ["../escape", "/abs", "a/../../b"])
def test_a_path_outside_the_container_is_refused(tmp_path, container, rel):
    cgroups, payload = container
    with pytest.raises(InvalidParameter):
        ckpt.Checkpointer._prepare_cgroup_tree(str(tmp_path), cgroups, meta_for({rel: {}}))  # pylint: disable=protected-access
    assert sorted(os.listdir(os.path.dirname(payload))) == [PAYLOAD]


def test_a_controller_this_node_lacks_is_refused(tmp_path, container):
    cgroups, _payload = container
    with pytest.raises(StateConflict, match="io"):
        ckpt.Checkpointer._prepare_cgroup_tree(  # pylint: disable=protected-access
            str(tmp_path), cgroups, meta_for({".": {"cgroup.subtree_control": "memory io"}}))
