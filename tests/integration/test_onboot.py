# -*- coding: utf-8 -*-
"""onboot: the node's boot entry point (``ovzctl boot``) brings back exactly the onboot
containers, higher bootorder first, after a simulated crash (issue 8)."""

from __future__ import annotations

import json
import os
import signal
import time

from support.node import run_module
from support.ovzctl import ovzctl


def crash(node):
    """Kill every container process of the node, as a host crash would leave them: dead."""
    for name in node.manager.layout.names():
        runtime = node.manager.runtime(name)
        if runtime is not None and runtime.alive():
            os.kill(runtime.init_pid, signal.SIGKILL)  # the pid namespace dies with its init
    deadline = time.monotonic() + 30
    while any(node.manager.status(n) != "stopped" for n in node.manager.layout.names()):
        assert time.monotonic() < deadline, "container processes outlived SIGKILL"
        time.sleep(0.05)


def test_boot_starts_exactly_the_onboot_containers_in_boot_order(node, busybox_template):
    # name -> (onboot, bootorder); a later name sorts after an earlier one with the same order.
    wanted = {"ovzbootlow": (True, 1), "ovzboothigh": (True, 10), "ovzbootmid1": (True, 5),
              "ovzbootmid2": (True, 5), "ovzbootnone": (True, 0), "ovzbootoff": (False, 50)}
    for name, (onboot, bootorder) in wanted.items():
        result = run_module("ovz_container", dict(name=name, template=busybox_template, layout="directory",
                                                  onboot=onboot, bootorder=bootorder, state="started",
                                                  wait_boot=True, data_dir=node.data_dir,
                                                  cgroup_parent=node.cgroup_parent))
        assert result.get("changed") is True, result
        assert (result["container"]["onboot"], result["container"]["bootorder"]) == (onboot, bootorder)
    crash(node)
    assert {n: node.manager.status(n) for n in wanted} == dict.fromkeys(wanted, "stopped")

    booted = ovzctl(node, "boot", "--wait")
    assert booted.returncode == 0, booted.stderr
    order = ["ovzboothigh", "ovzbootmid1", "ovzbootmid2", "ovzbootlow", "ovzbootnone"]
    assert booted.stdout.splitlines() == [
        "Starting container ovzboothigh (bootorder 10)", "Starting container ovzbootmid1 (bootorder 5)",
        "Starting container ovzbootmid2 (bootorder 5)", "Starting container ovzbootlow (bootorder 1)",
        "Starting container ovzbootnone (bootorder 0)", "boot: 5 started, 0 already running, 0 failed"]
    states = {n: node.manager.status(n) for n in wanted}
    assert states == dict(dict.fromkeys(order, "running"), ovzbootoff="stopped")
    # The order they really started in: the recorded start times.
    started = sorted(order, key=lambda n: node.manager.runtime(n).started_at)
    assert started == order
    # Each one booted its own init and startup scripts again.
    for name in order:
        assert node.manager.exec(name, ["cat", "/proc/1/comm"]).stdout == b"init\n"

    # Idempotent: a second run starts nothing and touches no running container.
    pids = {n: node.manager.runtime(n).init_pid for n in order}
    again = ovzctl(node, "boot", "--json")
    assert again.returncode == 0, again.stderr
    assert [(e["name"], e["action"]) for e in json.loads(again.stdout)] == [(n, "running") for n in order]
    assert {n: node.manager.runtime(n).init_pid for n in order} == pids
    assert node.manager.status("ovzbootoff") == "stopped"


def test_boot_reports_a_container_that_cannot_start_and_starts_the_others(node, busybox_template):
    good, bad = node.name(), node.name()
    for name in (good, bad):
        node.manager.create(name, busybox_template, layout="directory", onboot=True)
    node.manager.update(bad, init="/sbin/ovz-no-such-init", bootorder=9)
    booted = ovzctl(node, "boot")
    assert booted.returncode == 1
    assert "container %s failed to start" % bad in booted.stderr
    assert "Starting container %s (bootorder 0)" % good in booted.stdout
    assert "boot: 1 started, 0 already running, 1 failed" in booted.stdout
    assert (node.manager.status(good), node.manager.status(bad)) == ("running", "stopped")


def test_boot_of_an_empty_node(node):
    booted = ovzctl(node, "boot")
    assert (booted.returncode, booted.stdout) == (0, "boot: 0 started, 0 already running, 0 failed\n")
