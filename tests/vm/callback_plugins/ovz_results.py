# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test helper, not part of the collection's interface: record every task result of a play.

The VM tier (tests/vm/conftest.py) enables it with ANSIBLE_CALLBACKS_ENABLED=ovz_results and
reads the JSON file named by OVZ_RESULTS_FILE: {host: {task name: result}}, where each result
also carries "_status" (ok, failed, skipped, unreachable).
"""

from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "ovz_results"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.results = {}

    def _record(self, result, status):
        host = getattr(result, "host", None) or result._host  # pylint: disable=protected-access
        data = dict(result._result)  # pylint: disable=protected-access
        data["_status"] = status
        self.results.setdefault(host.get_name(), {})[result.task_name or result._task.get_name()] = data
        self._write(final=False)

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "failed")

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        self._write(final=True)

    def _write(self, final):
        """The results so far after every task (``<file>.partial``: what a play cut short by its
        timeout got done), and all of them at the end."""
        path = os.environ.get("OVZ_RESULTS_FILE")
        if not path:
            return
        target = path if final else path + ".partial"
        with open(target + ".tmp", "w", encoding="utf-8") as handle:
            json.dump(self.results, handle, default=str, sort_keys=True)
        os.replace(target + ".tmp", target)
