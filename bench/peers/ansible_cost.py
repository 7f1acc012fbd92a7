"""Ansible section of bench/run_all: the cost of an idempotent no-op run of ovz_container and
ovz_limits next to ``ansible.builtin.command: true``, on localhost (connection local), in one
playbook whose tasks repeat command / ovz_container / ovz_limits N times, interleaved.

Each task's time is taken by a small callback plugin of this run (written into the temp dir):
from the task's start to its result, which includes what Ansible does for any module (the
worker fork, AnsiballZ, the interpreter start). Every timed ovz task must report changed=false.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from base import C, Ctx  # pylint: disable=import-error

CALLBACK = '''
from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "ovzbench_timer"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.started = {}
        self.rows = []

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.started[task._uuid] = time.perf_counter()

    def _done(self, result, status):
        task = result._task
        self.rows.append({"name": task.get_name(), "status": status,
                          "changed": bool(result._result.get("changed")),
                          "ms": (time.perf_counter() - self.started[task._uuid]) * 1000.0,
                          "msg": str(result._result.get("msg", ""))[:300]})

    def v2_runner_on_ok(self, result):
        self._done(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._done(result, "failed")

    def v2_playbook_on_stats(self, stats):
        with open(os.environ["OVZBENCH_TIMER_OUT"], "w") as handle:
            json.dump(self.rows, handle)
'''


def playbook(ctx: Ctx, data_dir: str, name: str, reps: int) -> str:
    python = sys.executable
    head = """- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: %s
  module_defaults:
    group/ovz.containers.all:
      data_dir: %s
      cgroup_parent: auto
  tasks:
    - name: setup container
      ovz.containers.ovz_container: {name: %s, template: %s, layout: directory, state: started}
    - name: setup limits
      ovz.containers.ovz_limits: {name: %s, cpuunits: 2000, ram: 256M}
""" % (python, data_dir, name, ctx.template, name)
    body = ""
    for index in range(reps):
        body += """    - name: command %d
      ansible.builtin.command: "true"
      changed_when: false
    - name: ovz_container %d
      ovz.containers.ovz_container: {name: %s, template: %s, layout: directory, state: started}
    - name: ovz_limits %d
      ovz.containers.ovz_limits: {name: %s, cpuunits: 2000, ram: 256M}
""" % (index, index, name, ctx.template, index, name)
    return head + body


def run(ctx: Ctx) -> dict:
    reps = 3 if ctx.quick else 11
    ctx.engine()
    work = ctx.tmp / "ansible"
    (work / "callbacks").mkdir(parents=True)
    (work / "callbacks" / "ovzbench_timer.py").write_text(CALLBACK)
    data_dir = ctx.tmp / "data-ansible"
    data_dir.mkdir()
    name = "ovzb%sa" % ctx.tag
    manager = ctx.engine()["container"].ContainerManager(data_dir=str(data_dir), cgroup_parent="auto")
    ctx.cleanups.append(lambda: manager.destroy(name))
    book = work / "bench.yml"
    book.write_text(playbook(ctx, str(data_dir), name, reps))
    out_file = work / "timings.json"
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ctx.tmp / "collections"),
               ANSIBLE_CALLBACK_PLUGINS=str(work / "callbacks"), ANSIBLE_CALLBACKS_ENABLED="ovzbench_timer",
               OVZBENCH_TIMER_OUT=str(out_file), ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ANSIBLE_HOME=str(work / "home"),
               ANSIBLE_LOCAL_TEMP=str(work / "tmp"), ANSIBLE_REMOTE_TEMP=str(work / "rtmp"))
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", str(book)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200, check=False)
        if proc.returncode != 0 or not out_file.exists():
            raise C.StepError("ansible-playbook rc %d: %s" % (proc.returncode, proc.stdout[-1500:]))
        rows = json.loads(out_file.read_text())
    finally:
        ctx.run_cleanups()
    samples: dict = {"command: true": [], "ovz_container (no-op)": [], "ovz_limits (no-op)": []}
    changed = []
    for row in rows:
        kind = row["name"].rsplit(" ", 1)[0]
        label = {"command": "command: true", "ovz_container": "ovz_container (no-op)",
                 "ovz_limits": "ovz_limits (no-op)"}.get(kind)
        if label is None:
            continue
        samples[label].append(row["ms"])
        if row["changed"] and label != "command: true":
            changed.append(row["name"])
    results = {k: C.summarize(v) for k, v in samples.items()}
    base = results["command: true"]["median_ms"]
    ratios = {k: round(v["median_ms"] / base, 3) for k, v in results.items() if v.get("n") and base}
    return {"reps": reps, "results": results, "ratio_vs_command": ratios, "changed_on_noop": changed,
            "ansible": C.cmd_output([str(Path(sys.executable).parent / "ansible"), "--version"])}
