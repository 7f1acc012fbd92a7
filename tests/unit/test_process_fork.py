# -*- coding: utf-8 -*-
"""``fork_in_cgroup``'s fallback (kernels without clone3 CLONE_INTO_CGROUP): the parent moves the child."""

from __future__ import annotations

import errno
import os
import threading

import pytest

from ansible_collections.ovz.containers.plugins.module_utils import namespaces as ns
from ansible_collections.ovz.containers.plugins.module_utils import process


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


@pytest.mark.timeout(120)
def test_raw_fork_with_another_python_thread_running_never_hangs_the_child():
    # The child of a raw clone3 is a copy of one instant: if another thread held the GIL
    # then, the child would wait for it forever (seen as a hung exec helper).
    stop = threading.Event()

    def busy():
        while not stop.is_set():
            sum(range(1000))

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        for _attempt in range(200):
            pid = ns.raw_fork()
            if pid == 0:
                os._exit(len([str(i) for i in range(100)]) - 100)
            assert os.WEXITSTATUS(os.waitpid(pid, 0)[1]) == 0
    finally:
        stop.set()
        worker.join()
