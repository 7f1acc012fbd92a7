# -*- coding: utf-8 -*-
"""Checkpoint and restore with the distribution's CRIU (Debian 12: criu 3.17) on cgroup v2 (issue 3).

One batched play on VM 1. A busybox container (``directory`` layout) runs ``ckpt_workload``
(tests/integration/ckpt_workload.c, static), started inside through ``ovz_exec`` and adopted by
the container's init: a counter kept only in memory, timers, a pipe and a unix socket to a child,
SysV IPC and a listening TCP socket, with its status written every 50 ms to ``/root/status``.
``ovz_checkpoint`` dumps it to a file (check mode first, then for real, then again: unchanged),
the container is stopped and the counter stands still; the restore (three ways) brings the same
process back (the same PID inside) and the counter carries on from where it was dumped.
"""

from __future__ import annotations

import time

import pytest

STATUS = "/root/status"


def status(text: str) -> dict:
    return dict(item.split("=", 1) for item in text.split() if "=" in item)


@pytest.fixture(scope="module")
def ckpt(ansible, vm1, vm_template, vm_programs, ct_names_module):
    name, = ct_names_module(1)
    private = "/var/lib/ovz/private/%s" % name
    dumpfile = "/var/lib/ovz/%s.ckpt.tar" % name
    ct = {"name": name}
    wait = ("for i in $(seq 300); do s=$(cat %s%s 2>/dev/null); n=${s#counter=}; n=${n%%%% *};"
            " [ -n \"$n\" ] && [ \"$n\" -gt {{ above }} ] && break; sleep 0.2; done; cat %s%s"
            % (private, STATUS, private, STATUS))
    tasks = [
        {"name": "start", "register": "started", "ovz.containers.ovz_container": dict(
            ct, template=vm_template, layout="directory", state="started", wait_boot=True)},
        {"name": "install workload",
         "ansible.builtin.raw": "cp %s %s/usr/bin/ckpt_workload && echo ok" % (vm_programs["ckpt_workload"], private)},
        {"name": "run workload", "ovz.containers.ovz_exec": dict(
            ct, command="/usr/bin/ckpt_workload 7000 %s </dev/null >/dev/null 2>&1 &" % STATUS)},
        {"name": "status before", "ansible.builtin.raw": wait, "vars": {"above": 20}},
        {"name": "checkpoint check", "check_mode": True, "ovz.containers.ovz_checkpoint": dict(
            ct, state="checkpointed", dumpfile=dumpfile)},
        {"name": "state after check",
         "ansible.builtin.raw": "cat /var/lib/ovz/run/%s/state.json; ls %s 2>&1; true" % (name, dumpfile)},
        {"name": "checkpoint", "diff": True, "ovz.containers.ovz_checkpoint": dict(
            ct, state="checkpointed", dumpfile=dumpfile)},
        {"name": "checkpoint again", "ovz.containers.ovz_checkpoint": dict(
            ct, state="checkpointed", dumpfile=dumpfile)},
        {"name": "dumped status", "register": "dumped_status",
         "ansible.builtin.raw": "cat %s%s; sleep 3; cat %s%s; ls -l %s" % (private, STATUS, private, STATUS, dumpfile)},
        {"name": "info stopped", "ovz.containers.ovz_info": {"name": [name]}},
        {"name": "restore check", "check_mode": True, "ovz.containers.ovz_checkpoint": dict(
            ct, state="restored", dumpfile=dumpfile)},
        {"name": "restore", "ovz.containers.ovz_checkpoint": dict(ct, state="restored", dumpfile=dumpfile)},
        {"name": "restore again", "ovz.containers.ovz_checkpoint": dict(ct, state="restored", dumpfile=dumpfile)},
        {"name": "status after", "ansible.builtin.raw": wait,
         "vars": {"above": "{{ dumped_status.stdout.split()[0].split('=')[1] | int }}"}},
        {"name": "inside after", "ovz.containers.ovz_exec": dict(ct, command="cat %s" % STATUS)},
        {"name": "info restored", "ovz.containers.ovz_info": {"name": [name]}},
        {"name": "destroy", "ovz.containers.ovz_container": dict(ct, state="absent")},
        {"name": "remove dump", "ansible.builtin.raw": "rm -f %s; echo ok" % dumpfile},
    ]
    began = time.monotonic()
    result = ansible.play(tasks, hosts=vm1.name)
    return result, vm1.name, time.monotonic() - began


def test_checkpoint_to_a_file_stops_the_container(ckpt):
    play, host, _seconds = ckpt
    before = status(play.stdout(host, "status before"))
    assert int(before["counter"]) > 20, before
    check = play.ok(host, "checkpoint check")
    assert check["changed"] is True, check
    after_check = play.stdout(host, "state after check")
    assert "No such file" in after_check and '"init_pid"' in after_check, after_check
    done = play.ok(host, "checkpoint")
    assert done["changed"] is True and done["state"] == "stopped" and done["size"] > 0, done
    assert done["diff"]["before"]["state"] == "running" and done["diff"]["after"]["state"] == "stopped", done
    assert play.ok(host, "checkpoint again")["changed"] is False
    first, second = play.stdout(host, "dumped status").split("\n")[:2]
    assert first == second, (first, second)            # stopped: the counter stands still
    assert int(status(first)["counter"]) >= int(before["counter"])
    assert play.ok(host, "info stopped")["containers"][0]["state"] == "stopped"


def test_restore_carries_on_the_same_process(ckpt):
    play, host, _seconds = ckpt
    before = status(play.stdout(host, "status before"))
    dumped = status(play.stdout(host, "dumped status").split("\n")[0])
    assert play.ok(host, "restore check")["changed"] is True
    restored = play.ok(host, "restore")
    assert restored["changed"] is True and restored["state"] == "running", restored
    assert play.ok(host, "restore again")["changed"] is False
    after = status(play.stdout(host, "status after"))
    assert after["pid"] == before["pid"], (before, after)             # the same process inside
    assert int(after["counter"]) > int(dumped["counter"]), (dumped, after)
    for key in ("posix", "itimer", "timerfd", "pipe", "unix"):
        assert int(after[key]) > int(dumped[key]), (key, dumped, after)
    assert after["shm"] == "ok" and after["sem"] == "7" and after["msgq"] == "1", after
    inside = play.stdout(host, "inside after")
    assert status(inside)["pid"] == before["pid"], inside
    info = play.ok(host, "info restored")["containers"][0]
    assert info["state"] == "running" and info["init_pid"] > 0, info


def test_cleanup(ckpt):
    play, host, seconds = ckpt
    assert play.ok(host, "destroy")["changed"] is True
    play.ok(host, "remove dump")
    print("checkpoint play: %.1f s" % seconds)
