# -*- coding: utf-8 -*-
"""Fault injection: the module process is killed at each step of create, start, restore (a resume:
the start's bring-up, CRIU in the place of the init), network setup, limit change, stop and
destroy; a second run converges, and after the
container is destroyed no veth, route, nft rule, netns name, mount, loop device, cgroup or
half-written config is left.

The kill is the engine's test hook ``OVZ_FAULT=<step>`` (plugins/module_utils/_engine/base/faults.py):
the process SIGKILLs itself at that step, as an OOM kill or ``kill -9`` would. Every module
runs in the network namespace of a routed lab (tests/support/netlab.py), so that
the container's network is set up on each start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest

from support import COLLECTIONS_ROOT
from support.node import MODULES_DIR

from support import netlab
from support.netlab import routed_lab  # noqa: F401  pylint: disable=unused-import

from ansible_collections.ovz.containers.plugins.module_utils._engine.base import faults
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.criu import Criu, find_criu
from ansible_collections.ovz.containers.plugins.module_utils._engine.ops.checkpoint import Checkpointer
from ansible_collections.ovz.containers.plugins.module_utils._engine.resources import network as net

ADDRESSES = ["10.213.2.40", "fd00:213::a:40"]

# step -> (the state the container is in first, the module call that is killed at the step)
SCENARIOS = {
    "create.storage": ("absent", "ovz_container", {"state": "stopped"}),
    "create.extract": ("absent", "ovz_container", {"state": "stopped"}),
    "start.mount": ("stopped", "ovz_container", {"state": "started"}),
    "start.cgroups": ("stopped", "ovz_container", {"state": "started"}),
    "network.netns": ("stopped", "ovz_container", {"state": "started"}),
    "network.link": ("stopped", "ovz_container", {"state": "started"}),
    "network.host": ("stopped", "ovz_container", {"state": "started"}),
    "start.spawned": ("stopped", "ovz_container", {"state": "started"}),
    "restore.mount": ("suspended", "ovz_checkpoint", {"state": "resumed"}),
    "restore.cgroups": ("suspended", "ovz_checkpoint", {"state": "resumed"}),
    "restore.spawned": ("suspended", "ovz_checkpoint", {"state": "resumed"}),
    "limits.apply": ("running", "ovz_limits", {"ram": "96M", "numproc": 300}),
    "stop.halt": ("running", "ovz_container", {"state": "stopped", "timeout": 2}),
    "stop.cgroups": ("running", "ovz_container", {"state": "stopped", "timeout": 2}),
    "destroy.stopped": ("running", "ovz_container", {"state": "absent", "timeout": 2}),
    "destroy.storage": ("running", "ovz_container", {"state": "absent", "timeout": 2}),
}


def test_every_step_has_a_scenario():
    assert sorted(SCENARIOS) == sorted(faults.STEPS)


def run_killed(lab, module, args, step):
    """Run the module in the lab's host namespace with OVZ_FAULT=step; it must die of SIGKILL."""
    payload = dict(args, _ansible_check_mode=False, _ansible_diff=False)
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="ovz-args-", delete=False) as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": payload}, handle)
        args_file = handle.name
    try:
        env = dict(os.environ, PYTHONPATH=COLLECTIONS_ROOT)
        env[faults.FAULT_ENV] = step
        proc = subprocess.run(["nsenter", "--net=" + lab.host.path, sys.executable,
                               os.path.join(MODULES_DIR, module + ".py"), args_file],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=env,
                              timeout=120, check=False)
    finally:
        os.unlink(args_file)
    assert proc.returncode == -9, "the module did not reach %s (rc %d): %s %s" % (
        step, proc.returncode, proc.stdout, proc.stderr)


def give_network(lab, name):
    """What ovz_network does for a stopped container (plan, then store), without a module run."""
    config = lab.manager.load(name)
    desired = dict.fromkeys(("ip_address", "netif_mode", "bridge", "ifname", "host_ifname", "mac", "mtu", "routes",
                             "nameserver", "searchdomain", "mac_filter"))
    desired["ip_address"] = ADDRESSES
    plan = netlab.in_ns(lab.host.path, net.plan_network, name, lab.manager.layout.data_dir, desired, config.network,
                        None, False, [])
    config.network = plan.after
    lab.manager.store.save(config)


def read_cgroup(directory, filename):
    with open(os.path.join(directory, filename)) as handle:
        return handle.read().strip()


def ok(result):
    assert not result.get("failed"), result
    return result


def configs_are_whole(lab):
    conf_dir = lab.manager.layout.conf_dir()
    for entry in os.listdir(conf_dir) if os.path.isdir(conf_dir) else []:
        assert entry.endswith(".json") and not entry.startswith("."), "a half-written config: %s" % entry
        with open(os.path.join(conf_dir, entry)) as handle:
            json.load(handle)


def assert_clean(lab, name):
    """Nothing of the container is left: files, cgroups, mounts, loops, and its network."""
    snap = netlab.node_snapshot(lab.node)
    assert [f for f, kind in snap["files"].items() if kind != "dir"] == [], snap["files"]
    backend = lab.manager.backend
    tops = {os.path.join(backend.mountpoint(k), p.lstrip("/"))
            for k, p in backend.resolve_parent(lab.node.cgroup_parent).items()}
    assert [c for c in snap["cgroups"] if c not in tops] == []
    assert [m for m in snap["mounts"] if m.startswith(lab.node.data_dir)] == [] and snap["loops"] == []
    netlab.assert_nothing_left(lab, name, ADDRESSES)


@pytest.mark.parametrize("step", list(SCENARIOS))
def test_kill_at_step_then_converge(routed_lab, step):
    lab = routed_lab
    first, module, call = SCENARIOS[step]
    name = lab.node.name()
    base = lab.args(name)
    container = dict(base, template=lab.template, diskspace="64M")
    if first != "absent":
        lab.manager.create(name, lab.template, diskspace=[64 << 20, 64 << 20])
        give_network(lab, name)
    if first in ("running", "suspended"):
        lab.start(name)
    if first == "suspended":
        if not Criu(find_criu()).check()[0]:
            netlab.in_ns(lab.host.path, lab.manager.destroy, name)
            pytest.skip("criu check fails on this kernel")
        netlab.in_ns(lab.host.path, Checkpointer(lab.manager).suspend, name)
        assert lab.manager.status(name) == "suspended"
    args = dict(container if module == "ovz_container" else base, **call)

    run_killed(lab, module, args, step)
    configs_are_whole(lab)

    # The same call again converges (for limits, a third run then reports no change).
    ok(netlab.run_module_in(lab.host, module, args))
    if module == "ovz_limits":
        assert not ok(netlab.run_module_in(lab.host, module, args))["changed"]
    configs_are_whole(lab)
    state = call.get("state")
    if state in ("started", "resumed"):
        assert lab.manager.status(name) == "running"
        assert lab.manager.exec(name, ["true"]).rc == 0
        assert lab.runtime(name)["host_ifname"] in lab.host.ip("-o", "link")
    elif state in ("stopped", "absent"):
        assert lab.manager.status(name) == ("stopped" if state == "stopped" else "absent")
    else:   # limits: the kernel and the configuration agree
        stored = lab.manager.load(name).limits
        assert stored["ram"] == 96 << 20 and stored["numproc"] == [300, 300], stored
        # Read from the kernel's files, as an operator would (not judged by the engine's own drift()).
        cgroups = lab.manager.cgroups_for(lab.manager.runtime(name))
        ram_file = "memory.limit_in_bytes" if lab.manager.backend.version == 1 else "memory.max"
        assert read_cgroup(cgroups.controller_dir("memory"), ram_file) == str(96 << 20)
        assert read_cgroup(cgroups.controller_dir("pids"), "pids.max") == "300"

    if lab.manager.exists(name):
        netlab.in_ns(lab.host.path, lab.manager.destroy, name)
    assert_clean(lab, name)
