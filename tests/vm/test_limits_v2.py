# -*- coding: utf-8 -*-
"""Limits on a real cgroup v2 host, changed live (issue 3: VM test platform), one batched play on VM 1.

Two running busybox containers, ``a`` and ``b``, get their limits through ``ovz.containers.ovz_limits``
while they run, and the hogs of ``ovz_hog`` (tests/vm/ovz_hog.c) push against them:

- ``cpuunits``: both pinned to CPU 0 (``cpumask``), 1000 against 2000, each burning CPU; the
  kernel's accounting (``cpu.stat`` ``usage_usec`` of each container's cgroup) shows b getting
  about twice what a gets.
- ``cpulimit``: a alone, 25 %: it gets at most about a quarter of a CPU (it had far more before).
- ``numproc``: a fork bomb (bounded: it stops at the first refused fork, then kills its children)
  is refused at ``pids.max``; ``pids.events`` and the ``numproc`` beancounter's ``failcnt`` move.
- ``ram``: a memory hog is OOM-killed inside the container; the container, its other container
  and the host carry on; ``memory.events`` and the ``physpages`` beancounter's ``failcnt`` move.
- ``ioprio``: stored but reported as not enforced while no device of the container has BFQ;
  with BFQ on the data disk, the weight (OpenVZ's table) is in ``io.bfq.weight``.

Every change is live: the container's init is the same process from start to end. Under TCG
the VM's CPUs are slow and the build machine is loaded, so the ratio tolerances are generous.
"""

from __future__ import annotations

import pytest

SLICE = "/sys/fs/cgroup/ovz.slice"
HOG = "/usr/bin/ovz_hog"
DISK = "/sys/block/vdb/queue/scheduler"      # the XFS data disk under /var/lib/ovz
MIB = 1 << 20


def usage_script(*cgroups: str, seconds: int) -> str:
    """A raw command printing the CPU time (usec) each cgroup used over ``seconds``, then the wall time (usec)."""
    reads = " ".join("$(awk '$1==\"usage_usec\"{print $2}' %s/cpu.stat)" % cg for cg in cgroups)
    return ("set -e; t0=$(date +%%s%%N); s0=\"%s\"; sleep %d; s1=\"%s\"; t1=$(date +%%s%%N);"
            " echo $s0; echo $s1; echo $(( (t1 - t0) / 1000 ))" % (reads, seconds, reads))


def usage(text: str) -> tuple:
    """The used CPU time per cgroup (usec) and the wall time (usec), from ``usage_script``'s output."""
    before, after, wall = text.split("\n")
    used = [int(b) - int(a) for a, b in zip(before.split(), after.split())]
    return used, int(wall)


@pytest.fixture(scope="module")
def limits(ansible, vm1, vm_template, vm_programs, ct_names_module):
    a, b = ct_names_module(2)
    # ovz-<node>-<name>: a shell glob in the raw commands (the node's identity is the VM's).
    cga, cgb = "%s/ovz-*-%s" % (SLICE, a), "%s/ovz-*-%s" % (SLICE, b)

    def limit(name, ct, **options):
        return {"name": name, "ovz.containers.ovz_limits": dict(options, name=ct), "diff": True}

    def run(name, ct, command):
        return {"name": name, "ovz.containers.ovz_exec": {"name": ct, "command": command, "timeout": 300}}

    spin = "%s spin 900 </dev/null >/dev/null 2>&1 &" % HOG

    tasks = [
        {"name": "start a", "register": "started", "ovz.containers.ovz_container": {
            "name": a, "template": vm_template, "state": "started", "wait_boot": True}},
        {"name": "start b", "ovz.containers.ovz_container": {
            "name": b, "template": vm_template, "state": "started", "wait_boot": True}},
        {"name": "install hog", "ansible.builtin.raw":
            "for c in %s %s; do cp %s /var/lib/ovz/root/$c%s; done; echo ok" % (a, b, vm_programs["ovz_hog"], HOG)},
        # --- cpuunits: both on CPU 0, 1000 against 2000
        limit("units a", a, cpuunits=1000, cpumask="0"),
        limit("units a again", a, cpuunits=1000, cpumask="0"),
        limit("units b", b, cpuunits=2000, cpumask="0"),
        {"name": "cpu files", "ansible.builtin.raw":
            "cat %s/cpu.weight %s/cpu.weight %s/cpuset.cpus %s/cpuset.cpus" % (cga, cgb, cga, cgb)},
        run("spin a", a, spin),
        run("spin b", b, spin),
        {"name": "shares", "ansible.builtin.raw": usage_script(cga, cgb, seconds=20)},
        run("stop spin b", b, "killall ovz_hog; echo stopped"),
        # --- cpulimit: a alone, unlimited, then 25 %
        {"name": "alone", "ansible.builtin.raw": usage_script(cga, seconds=6)},
        limit("cpulimit a", a, cpulimit=25),
        {"name": "cpu.max", "ansible.builtin.raw": "cat %s/cpu.max" % cga},
        {"name": "limited", "ansible.builtin.raw": usage_script(cga, seconds=12)},
        run("stop spin a", a, "killall ovz_hog; echo stopped"),
        # --- numproc: a bounded fork bomb against pids.max
        limit("numproc a", a, numproc=40),
        run("fork bomb", a, "%s fork 500; echo rc=$?" % HOG),
        # pids.max on the container's cgroup; the refused forks as pids.events counts them: before 6.14
        # (Debian 12 runs 6.1) in the forking task's own cgroup (.ovz-exec under the payload), so summed
        # over the container's subtree, as the numproc beancounter's failcnt is.
        {"name": "pids files", "ansible.builtin.raw": "cat %s/pids.max; find %s -name pids.events -exec cat {} + | "
                                                      "awk '$1 == \"max\" {n += $2} END {print \"max\", n}'" % (cga, cga)},
        run("alive after fork bomb", a, "echo alive"),
        # --- ram: a memory hog is OOM-killed inside, nothing else
        limit("ram a", a, ram="64M"),
        {"name": "memory files", "ansible.builtin.raw": "cat %s/memory.max %s/memory.swap.max" % (cga, cga)},
        run("memory hog", a, "%s mem 512; echo rc=$?" % HOG),
        {"name": "memory events", "ansible.builtin.raw": "cat %s/memory.events" % cga},
        run("alive after oom", a, "echo alive; cat /proc/1/comm"),
        run("b alive after oom", b, "echo alive"),
        {"name": "host after oom", "ansible.builtin.raw": "cat /proc/loadavg; free -m | awk '/^Mem/{print $7}'"},
        {"name": "info after", "ovz.containers.ovz_info": {"name": [a, b]}},
        # --- ioprio: not enforced without BFQ, the weight in io.bfq.weight with it
        {"name": "no bfq", "ansible.builtin.raw": "cat %s" % DISK},
        limit("ioprio without bfq", a, ioprio=2),
        {"name": "bfq on", "ansible.builtin.raw": "modprobe bfq && echo bfq > %s && cat %s" % (DISK, DISK)},
        limit("ioprio", a, ioprio=7),
        {"name": "io weight", "ansible.builtin.raw": "cat %s/io.bfq.weight" % cga},
        {"name": "bfq off", "ansible.builtin.raw": "echo none > %s; cat %s" % (DISK, DISK)},
        # --- the same container all along
        {"name": "init pid at the end", "ansible.builtin.raw": "cat /var/lib/ovz/run/%s/state.json" % a},
        {"name": "destroy a", "ovz.containers.ovz_container": {"name": a, "state": "absent"}},
        {"name": "destroy b", "ovz.containers.ovz_container": {"name": b, "state": "absent"}},
    ]
    return ansible.play(tasks, hosts=vm1.name), vm1.name


def test_cpuunits_share_cpu_two_to_one(limits):
    play, host = limits
    first = play.ok(host, "units a")
    assert first["changed"] is True and first["applied"] is True, first
    assert first["limits"]["cpuunits"] == 1000 and first["limits"]["cpumask"] == "0", first
    assert play.ok(host, "units a again")["changed"] is False
    assert play.ok(host, "units b")["limits"]["cpuunits"] == 2000
    assert play.stdout(host, "cpu files").split() == ["100", "200", "0", "0"]
    (used_a, used_b), wall = usage(play.stdout(host, "shares"))
    # Together they fill CPU 0 (at most one CPU's worth: both are pinned there) ...
    assert used_a + used_b <= 1.1 * wall, (used_a, used_b, wall)
    assert used_a + used_b >= 0.5 * wall, (used_a, used_b, wall)
    # ... and b gets about twice a's share.
    ratio = used_b / used_a
    assert 1.4 <= ratio <= 2.8, (used_a, used_b, ratio)


def test_cpulimit_caps_a_spinning_container(limits):
    play, host = limits
    (alone,), wall_alone = usage(play.stdout(host, "alone"))
    assert alone >= 0.6 * wall_alone, (alone, wall_alone)        # alone on CPU 0, it takes most of it
    result = play.ok(host, "cpulimit a")
    assert result["changed"] is True and result["applied"] is True and result["limits"]["cpulimit"] == 25
    assert play.stdout(host, "cpu.max") == "25000 100000"
    (limited,), wall = usage(play.stdout(host, "limited"))
    assert 0.05 * wall <= limited <= 0.35 * wall, (limited, wall)


def test_numproc_refuses_a_fork_bomb(limits):
    play, host = limits
    result = play.ok(host, "numproc a")
    assert result["changed"] is True and result["limits"]["numproc"] == [40, 40], result
    bomb = play.stdout(host, "fork bomb").split("\n")
    forked = dict(item.split("=") for item in bomb[0].split())
    assert forked["errno"] == "EAGAIN" and 20 < int(forked["forked"]) < 40, bomb
    assert bomb[-1] == "rc=0", bomb                   # the bomb cleaned up after itself
    pids = play.stdout(host, "pids files").split("\n")
    assert pids[0] == "40" and int(pids[1].split()[1]) > 0, pids
    assert play.stdout(host, "alive after fork bomb") == "alive"
    numproc = play.ok(host, "info after")["containers"][0]["beancounters"]["numproc"]
    assert numproc["failcnt"] > 0 and numproc["limit"] == 40 and numproc["enforced"] is True, numproc


def test_ram_oom_stays_inside_the_container(limits):
    play, host = limits
    result = play.ok(host, "ram a")
    assert result["changed"] is True and result["applied"] is True and result["limits"]["ram"] == 64 * MIB, result
    before = result["beancounters"]["physpages"]["failcnt"]
    assert play.stdout(host, "memory files").split() == [str(64 * MIB), "0"]
    hog = play.get(host, "memory hog")
    out = hog.get("stdout", "")
    assert "mem-done" not in out and "rc=137" in out, hog       # SIGKILL from the OOM killer
    assert out.count("mem=") <= 4, hog                          # killed near 64 MiB (printed every 16)
    events = dict(line.split() for line in play.stdout(host, "memory events").split("\n"))
    assert int(events["oom_kill"]) >= 1 and int(events["max"]) > 0, events
    assert play.stdout(host, "alive after oom").split("\n") == ["alive", "init"]
    assert play.stdout(host, "b alive after oom") == "alive"
    host_state = play.stdout(host, "host after oom").split("\n")
    assert int(host_state[1]) > 256, host_state                 # the VM kept its memory available
    info = {c["name"]: c for c in play.ok(host, "info after")["containers"]}
    assert all(c["state"] == "running" for c in info.values()), info
    physpages = [c for c in info.values() if c["limits"]["ram"]][0]["beancounters"]["physpages"]
    assert physpages["failcnt"] > before and physpages["limit"] == 64 * MIB // 4096, physpages


def test_ioprio_weights_written_where_bfq_runs(limits):
    play, host = limits
    assert "[none]" in play.stdout(host, "no bfq")
    stored = play.ok(host, "ioprio without bfq")
    assert stored["limits"]["ioprio"] == 2 and "ioprio" in stored["not_enforced"], stored
    assert "[bfq]" in play.stdout(host, "bfq on")
    result = play.ok(host, "ioprio")
    assert result["changed"] is True and result["applied"] is True, result
    assert "ioprio" not in result["not_enforced"], result
    assert play.stdout(host, "io weight").split() == ["default", "640"]     # OpenVZ's table: 7 -> 640
    assert "[none]" in play.stdout(host, "bfq off")


def test_all_changes_were_live(limits):
    import json
    play, host = limits
    init_pid = play.ok(host, "start a")["container"]["init_pid"]
    assert json.loads(play.stdout(host, "init pid at the end"))["init_pid"] == init_pid
    assert play.ok(host, "destroy a")["changed"] is True
    assert play.ok(host, "destroy b")["changed"] is True
