# -*- coding: utf-8 -*-
"""scripts/sweep.py tells a running test session's work directory from a finished one."""

from __future__ import annotations

import json
import os

import support  # noqa: F401 - it puts scripts/ on sys.path  pylint: disable=unused-import
import sweep


def write_owner(path, pid, starttime):
    with open(os.path.join(str(path), sweep.SESSION_OWNER), "w") as handle:
        json.dump({"pid": pid, "starttime": starttime}, handle)


def test_this_process_owns_a_live_session(tmp_path):
    write_owner(tmp_path, os.getpid(), sweep.process_starttime(os.getpid()))
    assert sweep.session_is_live(str(tmp_path))


def test_a_reused_pid_or_no_owner_is_a_finished_session(tmp_path):
    assert not sweep.session_is_live(str(tmp_path))
    write_owner(tmp_path, os.getpid(), sweep.process_starttime(os.getpid()) - 1)
    assert not sweep.session_is_live(str(tmp_path))
    write_owner(tmp_path, 2 ** 22 + 1, 0)
    assert not sweep.session_is_live(str(tmp_path))
