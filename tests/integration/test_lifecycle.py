# -*- coding: utf-8 -*-
"""Start, stop, crash and restart: graceful stop, nothing left behind (issue: foundation)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from support.node import run_module, sh, wait_for
from support.snapshot import host_snapshot
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.cgroups import cgroup_dirname

STOP_SCRIPT = """#!/bin/sh
case "$1" in
    start) echo started > /root/s99.state ;;
    stop) echo stopped-gracefully > /root/s99.state ;;
esac
"""

STUBBORN_INIT = """#!/bin/sh
trap '' TERM USR1 USR2 PWR HUP INT
: > /run/ovz/booted
while :; do sleep 1; done
"""


def _leftovers(node, name):
    """Processes, mounts, loop devices and cgroups of ``name`` still on the host."""
    found = []
    root = node.manager.layout.root(name)
    with open("/proc/self/mountinfo") as handle:
        found += [line.split()[4] for line in handle if line.split()[4].startswith(root)]
    loops = subprocess.run(["losetup", "-a"], stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
    found += [line for line in loops.splitlines() if node.manager.layout.private(name) in line]
    for hierarchy in os.listdir("/sys/fs/cgroup"):
        for directory, dirs, _files in os.walk(os.path.join("/sys/fs/cgroup", hierarchy)):
            found += [os.path.join(directory, d) for d in dirs
                      if d in (cgroup_dirname(name, node.manager.layout.node_id()), cgroup_dirname(name, None))]
    return found


@pytest.mark.parametrize("layout", ["directory", "image"])
def test_stop_is_graceful_and_leaves_nothing(node, busybox_template, layout):
    manager = node.manager
    name = node.name()
    manager.create(name, busybox_template, layout=layout, diskspace=[64 << 20, 64 << 20])
    manager.start(name, wait_boot=True)
    script = os.path.join(manager.layout.root(name), "etc/init.d/S99state")
    with open(script, "w") as handle:
        handle.write(STOP_SCRIPT)
    os.chmod(script, 0o755)
    sh(manager, name, "/etc/init.d/S99state start && sleep 1000 > /dev/null 2>&1 &")
    runtime = manager.runtime(name)
    pids = manager.cgroups_for(runtime).pids()
    assert runtime.init_pid in pids and len(pids) >= 2
    assert _leftovers(node, name)  # mounted, with cgroups

    assert manager.stop(name) is True
    assert manager.status(name) == "stopped"
    assert _leftovers(node, name) == []
    for pid in pids:
        assert not os.path.exists("/proc/%d" % pid) or open("/proc/%d/stat" % pid).read().split()[2] == "Z"
    # The container's own stop scripts ran: the init got its shutdown signal.
    manager.storage(manager.load(name)).mount()
    try:
        with open(os.path.join(manager.layout.root(name), "root/s99.state")) as handle:
            assert handle.read() == "stopped-gracefully\n"
    finally:
        manager.storage(manager.load(name)).umount()
    assert _leftovers(node, name) == []


def test_stop_kills_after_timeout(node, busybox_template):
    manager = node.manager
    name = node.name()
    manager.create(name, busybox_template, layout="directory")
    init = os.path.join(manager.layout.private(name), "sbin/stubborn")
    with open(init, "w") as handle:
        handle.write(STUBBORN_INIT)
    os.chmod(init, 0o755)
    manager.update(name, init="/sbin/stubborn")
    manager.start(name, wait_boot=True)
    began = time.monotonic()
    assert manager.stop(name, timeout=1) is True
    elapsed = time.monotonic() - began
    assert elapsed > 0.9, elapsed     # it waited for the init's own shutdown first (an upper bound is load's)
    assert manager.status(name) == "stopped"
    assert _leftovers(node, name) == []


def test_start_of_running_and_stop_of_stopped_change_nothing(node, container):
    manager = node.manager
    before = manager.runtime(container)
    assert manager.start(container) is False
    assert manager.runtime(container) == before
    assert manager.stop(container) is True
    snapshot = host_snapshot(manager.layout.data_dir)
    assert manager.stop(container) is False
    assert host_snapshot(manager.layout.data_dir) == snapshot


@pytest.mark.parametrize("layout", ["directory", "image"])
def test_container_killed_from_outside_reports_stopped_and_starts_again(node, busybox_template, layout):
    manager = node.manager
    name = node.name()
    manager.create(name, busybox_template, layout=layout, diskspace=[64 << 20, 64 << 20])
    manager.start(name, wait_boot=True)
    sh(manager, name, "sleep 1000 > /dev/null 2>&1 &")
    runtime = manager.runtime(name)
    # A simulated host crash: every process of the container dies at once.
    for pid in manager.cgroups_for(runtime).pids():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # killing the init takes the rest of its pid namespace with it
    deadline = time.monotonic() + 5
    while manager.status(name) != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert manager.start(name, wait_boot=True) is True
    assert manager.status(name) == "running"
    assert manager.runtime(name).init_pid != runtime.init_pid
    assert sh(manager, name, "echo alive").stdout == b"alive\n"


def test_freeze_and_thaw(node, container):
    manager = node.manager
    # A ticker inside: a frozen container's processes make no progress, a thawed one's go on.
    tick = os.path.join(manager.layout.root(container), "tick")
    sh(manager, container, "i=0; while :; do i=$((i+1)); echo $i > /tick.new; mv /tick.new /tick; sleep 0.05; done "
       "</dev/null >/dev/null 2>&1 &")

    def ticks():
        with open(tick) as handle:
            return int(handle.read())

    wait_for(lambda: os.path.exists(tick) and ticks() > 0, "the ticker inside started")
    assert manager.freeze(container) is True
    assert manager.status(container) == "frozen"
    assert manager.freeze(container) is False
    held = ticks()
    time.sleep(1)      # twenty ticks' time: a single one would show the freeze did not hold
    assert ticks() == held, "a process of the frozen container ran on"
    assert manager.thaw(container) is True
    wait_for(lambda: ticks() > held, "the ticker ran on after the thaw")
    assert manager.status(container) == "running"
    assert sh(manager, container, "echo thawed").stdout == b"thawed\n"
    # A frozen container stops cleanly too.
    manager.freeze(container)
    assert manager.stop(container) is True
    assert _leftovers(node, container) == []


def test_destroy_removes_everything(node, busybox_template):
    manager = node.manager
    name = node.name()
    manager.create(name, busybox_template, layout="image", diskspace=[64 << 20, 64 << 20])
    manager.start(name, wait_boot=True)
    assert manager.destroy(name) is True
    assert manager.status(name) == "absent"
    assert _leftovers(node, name) == []
    for path in (manager.layout.conf(name), manager.layout.private(name), manager.layout.root(name),
                 manager.layout.run(name)):
        assert not os.path.exists(path), path
    assert manager.destroy(name) is False


def test_start_interrupted_before_recording_state_is_cleaned_up(node, busybox_template):
    """A start killed between creating cgroups and writing its state leaves nothing the next call keeps."""
    manager = node.manager
    name = node.name()
    manager.create(name, busybox_template, layout="directory")
    manager.start(name, wait_boot=True)
    runtime = manager.runtime(name)
    # Forget the runtime state, as if the process that started the container died right then.
    os.unlink(manager.state_path(name))
    assert manager.status(name) == "stopped"
    assert manager.start(name, wait_boot=True) is True
    assert manager.runtime(name).init_pid != runtime.init_pid
    assert not os.path.exists("/proc/%d" % runtime.init_pid) or \
        open("/proc/%d/stat" % runtime.init_pid).read().split()[2] == "Z"
    manager.stop(name)
    assert _leftovers(node, name) == []


def test_init_runs_the_startup_scripts_in_order(node, busybox_template):
    manager = node.manager
    name = node.name()
    manager.create(name, busybox_template, layout="image", diskspace=[64 << 20, 64 << 20])
    storage = manager.storage(manager.load(name))
    storage.mount()
    try:
        for number in ("20", "05"):
            path = os.path.join(storage.root, "etc/init.d/S%sorder" % number)
            with open(path, "w") as handle:
                handle.write("#!/bin/sh\n[ \"$1\" = start ] && echo S%s >> /root/boot.log\n" % number)
            os.chmod(path, 0o755)
    finally:
        storage.umount()
    manager.start(name, wait_boot=True)
    assert sh(manager, name, "cat /root/boot.log").stdout == b"S05\nS20\n"
    # S10loopback brought lo up.
    assert b"UP" in sh(manager, name, "ip -o link show lo").stdout
    assert sh(manager, name, "cat /proc/1/cmdline").stdout.startswith(b"init")  # busybox rewrites its argv


def test_exec_timeout_ends_the_command(node, container):
    """``ovz_exec``'s ``timeout`` ends the command itself (with its process group), not only the helper
    that entered the container: the call returns soon after the deadline and nothing of it runs on."""
    began = time.monotonic()
    result = run_module("ovz_exec", {"name": container, "command": "sleep 600; echo never", "timeout": 2,
                                     "data_dir": node.data_dir, "cgroup_parent": node.cgroup_parent})
    elapsed = time.monotonic() - began
    assert result.get("failed") and result["rc"] != 0 and "never" not in result["stdout"], result
    assert result["timed_out"] is True and "did not end within 2 s" in result["msg"], result    # not "status 137"
    assert elapsed < 300, elapsed       # soon after the deadline, not at the command's end (600 s)
    assert sh(node.manager, container, "ps -o args | grep -c '[s]leep 600' || true").stdout.decode().strip() == "0"


def test_exec_creates_and_removes_three_ways(node, container, tmp_path):
    """``creates``/``removes`` (paths inside the container) make ``ovz_exec`` idempotent, as with
    ansible.builtin.command: first run changed, second not, check mode reports and runs nothing."""
    base = {"name": container, "data_dir": node.data_dir, "cgroup_parent": node.cgroup_parent}
    inside = "/proc/%d/root" % node.manager.runtime(container).init_pid
    make = dict(base, command="echo made > /root/ovz-made", creates="/root/ovz-made")
    checked = run_module("ovz_exec", make, check=True)
    assert checked["changed"] and not checked.get("failed"), checked
    assert not os.path.exists(inside + "/root/ovz-made")   # check mode ran nothing
    first = run_module("ovz_exec", make)
    assert first["changed"] and first["rc"] == 0, first
    with open(inside + "/root/ovz-made") as handle:
        assert handle.read() == "made\n"
    second = run_module("ovz_exec", make)
    assert second["changed"] is False and second["stdout"] == "skipped, since /root/ovz-made exists", second
    assert run_module("ovz_exec", make, check=True)["changed"] is False
    drop = dict(base, argv=["rm", "/root/ovz-made"], removes="/root/ovz-made")
    assert run_module("ovz_exec", drop, check=True)["changed"] is True
    assert os.path.exists(inside + "/root/ovz-made")
    assert run_module("ovz_exec", drop)["changed"] is True and not os.path.exists(inside + "/root/ovz-made")
    assert run_module("ovz_exec", drop)["changed"] is False
    # A symlink the container plants is resolved inside it: a host file does not count as existing.
    host_file = tmp_path / "ovz-host-only"
    host_file.write_text("host")
    sh(node.manager, container, "ln -s %s /root/ovz-link" % host_file)
    try:
        linked = run_module("ovz_exec", dict(base, command="true", creates="/root/ovz-link"))
        assert linked["changed"] is True, linked
    finally:
        sh(node.manager, container, "rm -f /root/ovz-link")
    # Bad input: named, nothing run.
    bad = run_module("ovz_exec", dict(base, command="touch /root/ovz-never", creates="relative/path"))
    assert bad.get("failed") and bad["msg"].startswith("creates:") and bad.get("param") == "creates", bad
    assert not os.path.exists(inside + "/root/ovz-never")
    # Check mode on a container not running yet (an earlier task of the same check run would start it):
    # reported as would-run, not as a failure.
    missing = run_module("ovz_exec", dict(base, name="ovznotyet", command="true"), check=True)
    assert missing["changed"] and not missing.get("failed"), missing


SPIN = """#!/bin/sh
while :; do :; done
"""


def test_freeze_takes_tasks_that_were_stopping_meanwhile(node, container):
    """A task on its way into a stop when the freezer freezes (a SIGSTOP here; CRIU's detach after a
    lazy dump in a migration's cleanup) must be frozen all the same, not leave the freeze hanging."""
    manager = node.manager
    spin = os.path.join(manager.layout.root(container), "root", "spin")
    with open(spin, "w") as handle:
        handle.write(SPIN)
    os.chmod(spin, 0o755)
    sh(manager, container, "/root/spin </dev/null >/dev/null 2>&1 & /root/spin </dev/null >/dev/null 2>&1 &")
    cgroups = manager.cgroups_for(manager.runtime(container))

    def spinners():
        found = []
        for pid in cgroups.pids():
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as handle:
                    if b"/root/spin" in handle.read():
                        found.append(pid)
            except OSError:
                pass
        return found

    wait_for(lambda: len(spinners()) == 2, "both spinners run")
    pids = spinners()
    try:
        for _round in range(100):
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            # At once, so that the freeze meets the tasks on their way into the stop.
            cgroups.freeze()     # raised "the freezer did not reach FROZEN in 10 s" when it met one
            assert cgroups.frozen()
            cgroups.thaw()
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
