# -*- coding: utf-8 -*-
"""The live beancounters view (issue 5): ``ovzctl bcd`` and /run/ovz/user_beancounters inside.

Each test runs its own daemon for its own node (mount point and pid file under the
node's data_dir in the test's work dir), so it never touches anyone else's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from support import REPO
from support.node import sh, wait_for
from support.beancounters import GUEST, parse
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.rootfs import BCD_FSTYPE, mount_points

OVZCTL = os.path.join(REPO, "scripts", "ovzctl")
INTERVAL = "0.2"


def ctl(node, *args, check=True):
    proc = subprocess.run([OVZCTL, "--data-dir", node.data_dir, "bcd"] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=60, check=False)
    if check and proc.returncode != 0:
        raise AssertionError("ovzctl bcd %s: rc %d: %s %s" % (args, proc.returncode, proc.stdout, proc.stderr))
    return proc


def status(node):
    proc = ctl(node, "status", check=False)
    assert proc.returncode in (0, 3), proc.stderr
    state = json.loads(proc.stdout)
    assert state["running"] == (proc.returncode == 0)
    return state


def host_bcd_mounts(node):
    return [p for p, t in mount_points() if t == BCD_FSTYPE and p.startswith(node.data_dir)]


def guest_bcd_mounts(node, name):
    pid = node.manager.runtime(name).init_pid
    return [t for p, t in mount_points("/proc/%d/mountinfo" % pid) if p == GUEST and t == BCD_FSTYPE]


def wait_pid_gone(pid, timeout=10.0):
    wait_for(lambda: not os.path.exists("/proc/%d" % pid) or _zombie(pid), "pid %d to exit" % pid, timeout)


def _zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture
def bcd_node(node):
    """The node; its daemon is stopped (by the CLI) before the node's containers go."""
    try:
        yield node
    finally:
        ctl(node, "stop", check=False)
        leftover = host_bcd_mounts(node)
        for point in leftover:
            subprocess.run(["umount", "-l", point], check=False)
        assert not leftover, "ovz-bcd left mounts behind: %s" % leftover


def boot(node, template):
    name = node.name()
    node.manager.create(name, template, layout="directory", unprivileged=False)   # the live view: privileged
    node.manager.start(name, wait_boot=True, timeout=20)
    return name


READ_ACT_READ = (
    "cat " + GUEST + " > /tmp/ovz-first; cat /tmp/ovz-first; echo ----;"
    " dd if=/dev/zero of=/dev/shm/ovz-live bs=1M count=8 2>/dev/null;"      # shm (tmpfs) pages
    " x=$(head -c 16000000 /dev/zero | tr '\\0' a);"                        # 16 MB held by this shell
    " exec 3</etc/passwd 4</etc/group 5</etc/hosts 6</etc/inittab;"          # open files
    " sleep 600 </dev/null >/dev/null 2>&1 &"                                # one more process
    # The kernel flushes memory-cgroup statistics (shmem among them) about every 2 s: the second
    # read waits (up to 10 s) for the shm pages to show, then reads the whole table.
    " a=$(grep shmpages /tmp/ovz-first); i=0;"
    " while [ $i -lt 10 ] && [ \"$(grep shmpages " + GUEST + ")\" = \"$a\" ]; do sleep 1; i=$((i+1)); done;"
    " cat " + GUEST + "; echo ${#x}")


def test_live_table_moves_with_no_call_in_between(bcd_node, busybox_template):
    node = bcd_node
    before_daemon = boot(node, busybox_template)            # bound in by the running daemon
    assert status(node)["running"] is False
    assert "started" in ctl(node, "start", "--interval", INTERVAL).stdout
    wait_for(lambda: guest_bcd_mounts(node, before_daemon), "the view bound into a running container")
    after_daemon = boot(node, busybox_template)             # bound in by its own start
    assert guest_bcd_mounts(node, after_daemon) == [BCD_FSTYPE]
    assert sorted(status(node)["bound"]) == sorted([before_daemon, after_daemon])
    for name in (before_daemon, after_daemon):
        out = sh(node.manager, name, READ_ACT_READ).stdout.decode()
        first, _sep, rest = out.partition("----\n")
        second, _sep, length = rest.rstrip("\n").rpartition("\n")
        assert length == "16000000", out
        before, after = parse(first, name), parse(second, name)
        for key in ("numfile", "numproc", "shmpages", "physpages", "privvmpages"):
            assert after[key][0] > before[key][0], (name, key, before[key], after[key])
        assert after["shmpages"][0] - before["shmpages"][0] >= (8 << 20) // 4096 - 16
        assert after["physpages"][0] - before["physpages"][0] >= (16 << 20) // 4096
        assert after["physpages"][1] >= after["physpages"][0]          # maxheld
    # ovz_info/ovz_limits refresh the snapshot underneath without knocking the live view off.
    node.manager.facts(before_daemon, beancounters=True)
    assert guest_bcd_mounts(node, before_daemon) == [BCD_FSTYPE]
    sh(node.manager, before_daemon, "kill $(pidof sleep); rm /dev/shm/ovz-live")
    text = sh(node.manager, before_daemon, "cat " + GUEST).stdout.decode()
    assert parse(text, before_daemon)["numproc"][0] <= parse(text, before_daemon)["numproc"][1]


def test_concurrent_readers_and_a_reader_that_never_reads(bcd_node, busybox_template):
    node = bcd_node
    ctl(node, "start", "--interval", INTERVAL)
    name = boot(node, busybox_template)
    script = ("exec 5<" + GUEST + ";"                      # opened, never read until the end
              " for i in 1 2 3 4 5 6 7 8; do cat " + GUEST + " > /tmp/ovz-r$i & done; wait;"
              " for i in 1 2 3 4 5 6 7 8; do cat /tmp/ovz-r$i; echo ====; done;"
              " sleep 600 </dev/null >/dev/null 2>&1 & dd bs=65536 <&5 2>/dev/null; echo ====")
    out = sh(node.manager, name, script).stdout.decode()
    tables = [t for t in out.split("====\n") if t.strip()]
    assert len(tables) == 9
    for text in tables:
        parse(text, name)
    # read(2) on fd 5 gives the table computed when it was opened, before the sleep began. (A reader
    # that splices, like busybox cat, reads through the page cache: the newest table, never an older one.)
    now = parse(sh(node.manager, name, "cat " + GUEST).stdout.decode(), name)
    assert parse(tables[-1], name)["numproc"][0] < now["numproc"][0]
    # Root inside cannot write it; like /proc/user_beancounters it is root's alone to read.
    assert sh(node.manager, name, "echo x > " + GUEST, check=False).rc != 0
    assert sh(node.manager, name, "ls -ln " + GUEST).stdout.decode().split()[:4] == ["-r--------", "1", "0", "0"]


def test_stop_by_pid_restart_and_kill_leave_no_mount_behind(bcd_node, busybox_template):
    node = bcd_node
    name = boot(node, busybox_template)
    ctl(node, "start", "--interval", INTERVAL)
    assert "already running" in ctl(node, "start").stdout
    wait_for(lambda: guest_bcd_mounts(node, name), "the view bound in")
    pid = status(node)["pid"]
    # SIGTERM by PID: the daemon unbinds itself from every container, unmounts, removes its pid file.
    os.kill(pid, signal.SIGTERM)
    wait_pid_gone(pid)
    assert host_bcd_mounts(node) == [] and guest_bcd_mounts(node, name) == []
    assert not os.path.exists(os.path.join(node.data_dir, "bcd.pid"))
    assert status(node)["running"] is False
    parse(sh(node.manager, name, "cat " + GUEST).stdout.decode(), name)     # the snapshot, refreshed at unbind
    # A new daemon binds in again; a SIGKILL leaves a dead view until `bcd stop` (or the next start) cleans up.
    ctl(node, "start", "--interval", INTERVAL)
    wait_for(lambda: guest_bcd_mounts(node, name), "the view bound in again")
    pid = status(node)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_pid_gone(pid)
    assert sh(node.manager, name, "cat " + GUEST, check=False).rc != 0       # ENOTCONN: the daemon is gone
    ctl(node, "stop")
    assert host_bcd_mounts(node) == [] and guest_bcd_mounts(node, name) == []
    parse(sh(node.manager, name, "cat " + GUEST).stdout.decode(), name)
    # A start after a SIGKILL cleans up by itself, and containers keep starting without a daemon.
    ctl(node, "start", "--interval", INTERVAL)
    wait_for(lambda: guest_bcd_mounts(node, name), "the view bound in a third time")
    pid = status(node)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_pid_gone(pid)
    other = boot(node, busybox_template)          # the dead mount is ignored: the start falls back to the snapshot
    assert guest_bcd_mounts(node, other) == []   # a dead view is never bound in
    ctl(node, "start", "--interval", INTERVAL)
    wait_for(lambda: guest_bcd_mounts(node, name) == [BCD_FSTYPE] and guest_bcd_mounts(node, other) == [BCD_FSTYPE],
             "one live view in each container after the restart")
    for each in (name, other):
        parse(sh(node.manager, each, "cat " + GUEST).stdout.decode(), each)
    ctl(node, "stop")
    assert host_bcd_mounts(node) == [] and guest_bcd_mounts(node, name) == [] and guest_bcd_mounts(node, other) == []
