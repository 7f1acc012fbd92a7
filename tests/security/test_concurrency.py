# -*- coding: utf-8 -*-
"""Concurrency (issue 9): 20 module runs at once on one container and on 20 containers (processes,
as Ansible forks run them), and raw engine calls in threads and processes. Each config stays
valid JSON and agrees with the kernel; no run corrupts another.

The per-container ``flock`` (config.ContainerLock) serialises every mutating call on one
container; configs are written atomically (temp file, fsync, rename).
"""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from support.node import run_module
from support.snapshot import host_snapshot

from ansible_collections.ovz.containers.plugins.module_utils._engine.ops import limits as lim
from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager

RUNS = 20


def configs(node):
    """Every config under the node's conf/ parses, and no temp file is left."""
    conf_dir = node.manager.layout.conf_dir()
    found = {}
    for entry in sorted(os.listdir(conf_dir)):
        assert entry.endswith(".json") and not entry.startswith("."), "a temp file is left: %s" % entry
        with open(os.path.join(conf_dir, entry)) as handle:
            found[entry[:-5]] = json.load(handle)
    return found


def agrees_with_kernel(node, name):
    """The kernel holds the stored numproc and ram, read from the cgroup files themselves (not through the
    engine's own comparison: the code under test is not its oracle)."""
    manager = node.manager
    limits = manager.load(name).limits
    cgroups = manager.cgroups_for(manager.runtime(name))
    with open(os.path.join(cgroups.controller_dir("pids"), "pids.max")) as handle:
        assert handle.read().strip() == str(limits["numproc"][1]), limits
    if "ram" in limits:
        memory = cgroups.controller_dir("memory")
        ram_file = "memory.limit_in_bytes" if os.path.exists(os.path.join(memory, "memory.limit_in_bytes")) else "memory.max"
        with open(os.path.join(memory, ram_file)) as handle:
            assert int(handle.read()) == limits["ram"], limits


def test_20_module_runs_on_one_container(node, container):
    args = {"name": container, "data_dir": node.data_dir, "cgroup_parent": node.cgroup_parent}
    calls = []
    for index in range(RUNS):
        if index % 4 == 3:
            calls.append(("ovz_container", dict(args, state="started", hostname="h%d" % index)))
        elif index % 4 == 2:
            calls.append(("ovz_info", {"name": [container], "data_dir": node.data_dir,
                                       "cgroup_parent": node.cgroup_parent}))
        else:
            calls.append(("ovz_limits", dict(args, cpuunits=1000 + index, numproc=100 + index, ram="%dM" % (64 + index))))
    with ThreadPoolExecutor(max_workers=RUNS) as pool:
        results = list(pool.map(lambda call: run_module(*call), calls))
    for (module, _args), result in zip(calls, results):
        assert not result.get("failed"), (module, result)
    config = configs(node)[container]
    limits_asked = {(a["cpuunits"], a["numproc"]) for m, a in calls if m == "ovz_limits"}
    # Each call applied its whole set: the survivor is one caller's, never a mix.
    assert (config["limits"]["cpuunits"], config["limits"]["numproc"][1]) in limits_asked
    assert config["limits"]["ram"] == (64 + config["limits"]["cpuunits"] - 1000) << 20
    assert config["hostname"] in {a["hostname"] for m, a in calls if m == "ovz_container"}
    assert node.manager.status(container) == "running"
    agrees_with_kernel(node, container)


def test_20_module_runs_on_20_containers(node, busybox_template):
    clean = host_snapshot(node.data_dir)
    names = [node.name() for _index in range(RUNS)]
    base = {"data_dir": node.data_dir, "cgroup_parent": node.cgroup_parent}

    def bring_up(name):
        return run_module("ovz_container", dict(base, name=name, template=busybox_template, layout="directory",
                                                state="started", hostname=name))

    with ThreadPoolExecutor(max_workers=RUNS) as pool:
        results = list(pool.map(bring_up, names))
    assert all(not r.get("failed") and r["changed"] for r in results), [r for r in results if r.get("failed")]
    found = configs(node)
    assert sorted(found) == sorted(names)
    for name in names:
        assert found[name]["name"] == name and found[name]["hostname"] == name
        assert node.manager.status(name) == "running"
        assert node.manager.exec(name, ["hostname"]).stdout.strip() == name.encode()
    # Destroyed by raw engine calls, in threads at once.
    with ThreadPoolExecutor(max_workers=RUNS) as pool:
        assert all(pool.map(node.manager.destroy, names))
    after = host_snapshot(node.data_dir)
    assert [c for c in after["cgroups"] if c not in clean["cgroups"] and "/ovz-ovz" in c] == []
    assert after["mounts"] == [] and after["loops"] == [] and after["links"] == []
    assert [f for f, kind in after["files"].items() if kind != "dir"] == []


def _engine_limits(data_dir, cgroup_parent, name, index):
    manager = ContainerManager(data_dir, cgroup_parent)
    lim.update(manager, name, {"cpuunits": 2000 + index, "numproc": 200 + index})
    return manager.status(name)


def test_a_start_under_a_parent_that_another_start_has_just_made(node, busybox_template):
    """Two first starts on a node race to make its cgroup parent: one makes the v1 cpuset directory, the
    other finds it there before its CPUs and memory nodes are written (a new cpuset has none), and its
    container's cpuset would copy that emptiness: no task can join it (ENOSPC at the start)."""
    backend = node.manager.backend
    cpusets = [hier for hier in backend.used() if hier.version == 1 and "cpuset" in hier.controllers]
    if not cpusets:
        pytest.skip("no cgroup v1 cpuset hierarchy on this host")
    name = node.name()
    node.manager.create(name, busybox_template, layout="directory")
    parent = os.path.join(cpusets[0].mountpoint, backend.resolve_parent(node.cgroup_parent)[cpusets[0].key].lstrip("/"))
    assert not os.path.exists(parent)
    os.mkdir(parent)            # the other start's mkdir, its cpuset not filled in yet
    with open(os.path.join(parent, "cpuset.cpus")) as handle:
        assert handle.read().strip() == ""
    node.manager.start(name, wait_boot=True, timeout=30)
    assert node.manager.status(name) == "running"
    assert node.manager.exec(name, ["true"]).rc == 0


def test_raw_engine_calls_in_threads_and_processes(node, container):
    manager = node.manager

    def in_thread(index):
        if index % 2:
            return manager.facts(container)["state"]
        lim.update(manager, container, {"cpuunits": 1000 + index, "numproc": 100 + index})
        return manager.status(container)

    with ThreadPoolExecutor(max_workers=RUNS) as pool:
        states = list(pool.map(in_thread, range(RUNS)))
    assert set(states) == {"running"}
    agrees_with_kernel(node, container)

    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(RUNS // 2) as pool:
        states = pool.starmap(_engine_limits, [(node.data_dir, node.cgroup_parent, container, i) for i in range(RUNS)])
    assert set(states) == {"running"}
    limits = configs(node)[container]["limits"]
    assert limits["numproc"][1] - 200 == limits["cpuunits"] - 2000   # one caller's pair, never a mix
    agrees_with_kernel(node, container)
