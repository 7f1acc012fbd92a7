# -*- coding: utf-8 -*-
"""ovzctl, the vzctl-style command line over the engine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from support import COLLECTIONS_ROOT, REPO
from support.node import run_module
from support.snapshot import host_snapshot
from support.ovzctl import OVZCTL, ovzctl
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.errors import NoSuchContainer
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.process import process_starttime

EXIT_NOT_FOUND, EXIT_RUNNING = 14, 32   # vzctl's VZ_NOVECONFIG and VZ_VE_RUNNING


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
    assert missing.returncode == EXIT_NOT_FOUND and "does not exist" in missing.stderr


def test_destroy_refuses_a_running_container_unless_forced(node, busybox_template):
    """vzctl's guard: "Container is currently running. Stop it first." (exit 32); --force stops, then destroys."""
    name = node.name()
    assert ovzctl(node, "create", name, "--ostemplate", busybox_template, "--layout", "directory").returncode == 0
    assert ovzctl(node, "start", name, "--wait").returncode == 0
    pid = node.manager.runtime(name).init_pid
    for state in ("running", "frozen"):
        if state == "frozen":
            assert ovzctl(node, "freeze", name).returncode == 0
        before = host_snapshot(node.data_dir)
        refused = ovzctl(node, "destroy", name)
        assert refused.returncode == EXIT_RUNNING, (refused.returncode, refused.stderr)
        assert "container %s is currently %s; stop it first" % (name, state) in refused.stderr
        assert "--force" in refused.stderr
        # Untouched: the same init, in the same state, and nothing of the node changed.
        assert node.manager.status(name) == state and node.manager.runtime(name).init_pid == pid
        assert process_starttime(pid) is not None
        assert host_snapshot(node.data_dir) == before
    assert ovzctl(node, "thaw", name).returncode == 0
    assert ovzctl(node, "exec", name, "true").returncode == 0
    cgroups = list(node.manager.runtime(name).cgroups.values())
    forced = ovzctl(node, "destroy", "--force", name)
    assert forced.returncode == 0, forced.stderr
    assert not node.manager.exists(name) and process_starttime(pid) is None
    assert cgroups and not any(os.path.isdir(path) for path in cgroups)
    assert name not in ovzctl(node, "list").stdout
    # A stopped container needs no --force.
    assert ovzctl(node, "create", name, "--ostemplate", busybox_template, "--layout", "directory").returncode == 0
    assert ovzctl(node, "destroy", name).returncode == 0 and not node.manager.exists(name)


UNKNOWN_NAME_COMMANDS = [["start"], ["stop"], ["restart"], ["suspend"], ["resume"], ["freeze"], ["thaw"],
                         ["destroy"], ["destroy", "--force"], ["status"], ["exec", "{}", "true"], ["enter"]]


def test_every_command_on_an_unknown_name_says_it_does_not_exist(node, container):
    """A typo is not a stopped container: every command says the name does not exist, and exits 14 (vzctl's
    VZ_NOVECONFIG), with the node unchanged."""
    typo = container + "x"
    before = host_snapshot(node.data_dir)
    for command in UNKNOWN_NAME_COMMANDS:
        argv = [part.format(typo) for part in command] if "{}" in command else command + [typo]
        result = ovzctl(node, *argv)
        assert result.returncode == EXIT_NOT_FOUND, (argv, result.returncode, result.stderr)
        assert "container %s does not exist" % typo in result.stderr, (argv, result.stderr)
        assert "not running" not in result.stderr, (argv, result.stderr)
    # status still prints what it knows, for scripts that read the state.
    assert json.loads(ovzctl(node, "status", typo).stdout)["state"] == "absent"
    assert host_snapshot(node.data_dir) == before
    assert node.manager.status(container) == "running"
    # So does the engine under it.
    with pytest.raises(NoSuchContainer, match="container %s does not exist" % typo):
        node.manager.exec(typo, ["true"])


def as_nobody(argv, **kwargs):
    """``argv`` as uid/gid 65534 with no groups, from a directory it may read."""
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + list(argv), cwd="/",
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=120,
                          check=False, **kwargs)


def test_a_caller_that_is_not_root_gets_one_line(node, container):
    """Not root: one line saying so, never a traceback, and never an unreadable node listed as empty.
    A checkout under /root is out of that user's reach: then the ovzctl that setup installed speaks."""
    def reachable(path):
        return as_nobody(["test", "-r", path, "-a", "-x", os.path.dirname(path)]).returncode == 0
    ovzctl_path = OVZCTL if reachable(OVZCTL) else "/usr/local/sbin/ovzctl"
    base = [ovzctl_path, "--data-dir", node.data_dir, "--cgroup-parent", node.cgroup_parent]
    for argv in (["list"], ["status", container], ["start", container], ["exec", container, "true"], ["bcd", "status"]):
        proc = as_nobody(base + argv)
        assert proc.returncode == 1 and proc.stdout == "", (argv, proc)
        assert proc.stderr.count("\n") == 1 and "as root" in proc.stderr and "Traceback" not in proc.stderr, (argv, proc)
    # A module run without become: it fails saying so.
    module = os.path.join(REPO, "plugins", "modules", "ovz_info.py")
    if not (reachable(module) and reachable(sys.executable)):
        print("the module part needs this checkout and its venv within reach of uid 65534 (%s)" % REPO)
        return
    args = json.dumps({"ANSIBLE_MODULE_ARGS": {"data_dir": node.data_dir, "cgroup_parent": node.cgroup_parent}})
    proc = as_nobody([sys.executable, module], input=args,
                     env=dict(os.environ, PYTHONPATH=COLLECTIONS_ROOT))
    result = json.loads(proc.stdout)
    assert result["failed"] is True and "become: true" in result["msg"] and "exception" not in result, result


def test_setup_puts_ovzctl_on_path(node, container):
    """scripts/setup installs the node's ovzctl (the engine as one zip, as ovz_host does) on root's PATH."""
    path = shutil.which("ovzctl", path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    assert path == "/usr/local/sbin/ovzctl", path
    proc = subprocess.run([path, "--data-dir", node.data_dir, "--cgroup-parent", node.cgroup_parent, "list", "--json"],
                          cwd="/", stdout=subprocess.PIPE, universal_newlines=True, timeout=60, check=True)
    assert [c["name"] for c in json.loads(proc.stdout)] == [container]


def test_exec_one_rule_timeout_and_a_frozen_container(node, container):
    """One argument is a command line for the shell inside (as vzctl exec, and ovz_exec's command); several
    are an argv run as it is (ovz_exec's argv). --timeout kills the command with exit 15 and says so. A
    frozen container is refused at once (it used to hang for ever)."""
    assert ovzctl(node, "exec", container, "echo one two | wc -w").stdout.strip() == "2"
    assert ovzctl(node, "exec", container, "echo", "a | wc -w").stdout == "a | wc -w\n"      # no shell
    proc = ovzctl(node, "exec", "--timeout", "1", container, "sleep 600; echo never")
    assert proc.returncode == 15 and "did not end within 1 s" in proc.stderr and "never" not in proc.stdout, proc
    assert ovzctl(node, "exec", container, "ps -o args | grep -c '[s]leep 600' || true").stdout.strip() == "0"
    node.manager.freeze(container)
    try:
        proc = ovzctl(node, "exec", container, "true")
        assert proc.returncode == 1 and "frozen" in proc.stderr and "thaw" in proc.stderr, proc
        changed = run_module("ovz_container", {"name": container, "hostname": "ovz-new", "data_dir": node.data_dir,
                                               "cgroup_parent": node.cgroup_parent})
        assert changed.get("failed") and "frozen" in changed["msg"] and "hostname" in changed["msg"], changed
        assert node.manager.load(container).hostname != "ovz-new"
    finally:
        node.manager.thaw(container)
