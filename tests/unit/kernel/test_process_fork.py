# -*- coding: utf-8 -*-
"""``fork_in_cgroup``'s fallback (kernels without clone3 CLONE_INTO_CGROUP): the parent moves the child."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
import time

import pytest

from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel import namespaces as ns
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel import process


def _no_clone3(_fd):
    raise OSError(errno.ENOSYS, "clone3")


def test_fallback_moves_the_child_then_lets_it_run(tmp_path, monkeypatch):
    monkeypatch.setattr(process.ns, "fork_into_cgroup", _no_clone3)
    (tmp_path / "cgroup.procs").write_text("")
    pid = process.fork_in_cgroup(str(tmp_path))
    if pid == 0:
        os._exit(7)
    status = os.waitpid(pid, 0)[1]
    assert os.WEXITSTATUS(status) == 7
    assert (tmp_path / "cgroup.procs").read_text() == str(pid)


def test_fallback_refused_move_raises_once_in_the_parent_and_the_child_does_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(process.ns, "fork_into_cgroup", _no_clone3)
    (tmp_path / "cgroup.procs").mkdir()  # the write is refused
    marker = tmp_path / "child-ran"
    with pytest.raises(OSError):
        if process.fork_in_cgroup(str(tmp_path)) == 0:
            marker.write_text("the caller's code ran a second time")
            os._exit(0)
    assert not marker.exists()


class BusyThread:
    """Another Python thread that keeps asking for the GIL."""

    def __enter__(self):
        self.stop = threading.Event()
        self.worker = threading.Thread(target=self.busy)
        self.worker.start()
        return self

    def busy(self):
        while not self.stop.is_set():
            sum(range(1000))

    def __exit__(self, *_exc):
        self.stop.set()
        self.worker.join()


@pytest.mark.timeout(120)
def test_raw_fork_with_another_python_thread_running_never_hangs_the_child():
    # The child of a raw clone3 is a copy of one instant: it found the GIL drop request the
    # other thread had posted and waited forever for that thread (seen as a hung exec helper).
    with BusyThread():
        for _attempt in range(500):
            pid = ns.raw_fork()
            if pid == 0:
                os._exit(len([str(i) for i in range(100)]) - 100)
            assert os.WEXITSTATUS(os.waitpid(pid, 0)[1]) == 0


@pytest.mark.timeout(120)
def test_fork_in_cgroup_with_another_python_thread_running_forks_then_moves(tmp_path):
    (tmp_path / "cgroup.procs").write_text("")
    with BusyThread():
        for _attempt in range(100):
            pid = process.fork_in_cgroup(str(tmp_path))
            if pid == 0:
                os._exit(len([str(i) for i in range(100)]) - 100)
            assert os.WEXITSTATUS(os.waitpid(pid, 0)[1]) == 0
            assert (tmp_path / "cgroup.procs").read_text() == str(pid)


def test_end_processes_working_in_ends_only_those(tmp_path):
    """What a migration's target ends before it removes an incoming area: processes working in it
    (a leftover rsync receiver), also once the directory is gone; not others."""
    from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.process import end_processes_working_in
    area, elsewhere = tmp_path / "private" / "ct", tmp_path / "other"
    (area / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    below = subprocess.Popen(["sleep", "60"], cwd=str(area / "sub"))
    there = subprocess.Popen(["sleep", "60"], cwd=str(area))
    outside = subprocess.Popen(["sleep", "60"], cwd=str(elsewhere))
    try:
        time.sleep(0.1)
        shutil.rmtree(str(area))     # removed meanwhile: their cwd reads "... (deleted)"
        ended = end_processes_working_in([str(area)])
        assert sorted(ended) == sorted([below.pid, there.pid])
        assert below.wait(5) == -9 and there.wait(5) == -9 and outside.poll() is None
    finally:
        for proc in (below, there, outside):
            proc.kill()
            proc.wait()


def test_end_transfers_spares_the_master(tmp_path):
    """What the watchdog of a killed migration ends: processes using its ssh control socket, not the
    master (which still carries the call the target finishes)."""
    from ansible_collections.ovz.containers.plugins.module_utils._engine.ops.remote import RemoteSession
    control = str(tmp_path / "ovz-ssh-x")
    transfer = subprocess.Popen(["sh", "-c", "sleep 60; true", "-o", "ControlPath=%s/cm" % control])
    master = subprocess.Popen(["sh", "-c", "sleep 60; true", "-o", "ControlPath=%s/cm" % control, "-o", "ControlMaster=yes"])
    other = subprocess.Popen(["sh", "-c", "sleep 60; true", "-o", "ControlPath=%s-2/cm" % control])
    try:
        time.sleep(0.1)
        assert RemoteSession.end_transfers(control) == [transfer.pid]
        assert transfer.wait(5) == -9 and master.poll() is None and other.poll() is None
    finally:
        for proc in (transfer, master, other):
            proc.kill()
            proc.wait()
