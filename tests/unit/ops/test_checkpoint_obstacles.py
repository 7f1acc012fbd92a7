# -*- coding: utf-8 -*-
"""The pure parts of the checkpoint guards: what CRIU would refuse in a container's mounts, the
errors of a full host file system, and suspended as a run state. The real paths (busybox containers,
CRIU) are tests/integration/test_checkpoint_guards.py."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time

import pytest

from ansible_collections.ovz.containers.plugins.module_utils._engine.ops import checkpoint as ckpt
from ansible_collections.ovz.containers.plugins.module_utils._engine.base import files as ovz_files
from ansible_collections.ovz.containers.plugins.module_utils._engine.ops.converge import desired_run_state
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.errors import HostFileError, OvzError


def mount(target, fstype, root="/"):
    return {"id": "1", "parent": "0", "root": root, "target": target, "fstype": fstype}


def test_mounts_criu_cannot_take_along_are_named(monkeypatch):
    mounts = [mount("/", "ext4"), mount("/proc", "proc"), mount("/dev/console", "tmpfs", "/console.log"),
              mount("/run/ovz", "tmpfs", "/guest"), mount("/proc/kcore", "devtmpfs", "/null"),
              mount("/proc/meminfo", "fuse.lxcfs", "/proc/meminfo"), mount("/mnt/remote", "fuse.sshfs"),
              mount("/srv", "ext4", "/srv")]
    monkeypatch.setattr(ckpt, "_mountinfo", lambda pid: mounts)
    external, problems = ckpt.classify_mounts(42)
    assert [m["key"] for m in external] == [
        ckpt.CONSOLE_KEY, ckpt.GUEST_KEY, ckpt.NULL_PREFIX + "/proc/kcore", ckpt.LXCFS_PREFIX + "proc/meminfo"]
    assert len(problems) == 2
    assert "FUSE mount at /mnt/remote (fuse.sshfs)" in problems[0]
    assert "/srv (ext4, from /srv)" in problems[1]


def test_no_obstacle_in_a_plain_process():
    """A process started in a session of its own, taken as its own init: one session, the same namespaces,
    plain descriptors. (Not this test's own process: its session leader is whatever started pytest.)"""
    with subprocess.Popen(["sleep", "60"], start_new_session=True, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as init:
        try:
            assert ckpt.process_obstacles(init.pid, [init.pid]) == []
        finally:
            init.kill()


def test_a_process_whose_session_leader_is_outside_its_pid_namespace_is_an_obstacle():
    """A sleep that is pid 1 of a pid namespace of its own but still in the session of the command that
    started it: the kernel shows its session as 0 there, as for a job left by a command run inside without
    setsid."""
    with subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "sleep", "60"], stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as unshare:
        try:
            children = ""
            for _attempt in range(100):
                with open("/proc/%d/task/%d/children" % (unshare.pid, unshare.pid)) as listing:
                    children = listing.read().split()
                if children:
                    break
                time.sleep(0.05)
            sleeper = int(children[0])
            problems = ckpt.process_obstacles(sleeper, [sleeper])
            assert len(problems) == 1 and "session or process group leader is outside" in problems[0], problems
        finally:
            unshare.kill()


def test_a_failed_write_names_the_path_and_what_was_written(tmp_path, monkeypatch):
    path = str(tmp_path / "conf" / "ct1.json")

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(json, "dump", full)
    with pytest.raises(HostFileError) as raised:
        ovz_files.atomic_write_json(path, {"a": 1}, what="the configuration of ct1")
    error = raised.value
    assert str(error) == "writing the configuration of ct1 to %s failed: %s" % (path, os.strerror(errno.ENOSPC))
    # Still an OSError with its errno (callers that treat a write as best effort go on as before), and an
    # engine error (the modules report its message).
    assert isinstance(error, OSError) and isinstance(error, OvzError) and error.errno == errno.ENOSPC
    assert os.listdir(str(tmp_path / "conf")) == []      # no temporary file left


def test_a_full_file_system_is_said(monkeypatch, tmp_path):
    class Stat:
        f_files, f_ffree, f_frsize, f_blocks = 100, 50, 4096, 1000

    full = Stat()
    full.f_bfree = 3
    monkeypatch.setattr(os, "statvfs", lambda path: full)
    assert ckpt._space_note(str(tmp_path)) == \
        "The file system of %s is full (12288 bytes free): the images did not fit." % tmp_path
    roomy = Stat()
    roomy.f_bfree = 900
    monkeypatch.setattr(os, "statvfs", lambda path: roomy)
    assert ckpt._space_note(str(tmp_path)) == ""


def test_suspended_is_not_running_and_starts_by_resuming():
    assert desired_run_state("stopped", "suspended") == "suspended"
    assert desired_run_state("present", "suspended") == "suspended"
    assert desired_run_state("started", "suspended") == "running"
    assert desired_run_state("stopped", "running") == "stopped"
