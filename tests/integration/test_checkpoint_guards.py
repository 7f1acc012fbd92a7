# -*- coding: utf-8 -*-
"""Checkpoint, suspend and resume never lose a container (busybox containers, real kernel, CRIU).

- Processes entered from the host (exec) join every namespace of the container's init, its time
  namespace included: after a resume that is the one CRIU made, and a process of another one could be
  dumped but never restored.
- A failure after the freeze thaws the container, and a full file system is named with the path
  that was being written.
- What CRIU would refuse is refused before anything is frozen, naming the process, with
  ``changed: false``.
- A suspended container is a state of its own, and a start resumes it with its memory.

Containers without a network (none is needed here); CRIU runs only where ``criu check`` passes.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess

import pytest

from support.node import run_module, sh_without_session, wait_for
from support.snapshot import host_snapshot
from support.criu import criu_binary  # noqa: F401 pylint: disable=unused-import
from support.ovzctl import OVZCTL, ovzctl

from ansible_collections.ovz.containers.plugins.module_utils._engine.ops.checkpoint import Checkpointer
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.process import process_tree, vfork_in_flight


pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

LOOP = "/root/busybox.loop"   # a copy of busybox (argv[0] starting with "busybox" runs the applet named next)
MEMORY = "/root/memory"


@pytest.fixture
def ct(node, busybox_template, criu_binary):  # noqa: F811 - the fixture imported above
    name = node.name()
    node.manager.create(name, busybox_template, layout="directory")
    node.manager.start(name, wait_boot=True, timeout=30)
    return name


def module(node, name, mod, check=False, **args):
    return run_module(mod, dict(args, name=name, data_dir=node.data_dir, cgroup_parent=node.cgroup_parent),
                      check=check)


def ok(result):
    assert result["changed"] and not result.get("failed"), result.get("msg", result)
    return result


def status_of(pid):
    with open("/proc/%d/status" % pid) as handle:
        return dict((line.split(":", 1)[0], line.split(":", 1)[1].split()) for line in handle if ":" in line)


def processes(manager, name, comm):
    """{host pid: pid inside} of the container's processes whose command is ``comm``."""
    runtime = manager.runtime(name)
    found = {}
    for pid in manager.cgroups_for(runtime).pids():
        try:
            with open("/proc/%d/comm" % pid) as handle:
                if handle.read().strip() == comm:
                    found[pid] = int(status_of(pid)["NSpid"][-1])
        except (OSError, KeyError):
            continue
    return found


def ns_of(pid, kind):
    info = os.stat("/proc/%d/ns/%s" % (pid, kind))
    return info.st_dev, info.st_ino


def assert_runs(manager, name):
    """Running, not frozen: its init alive, its processes not stopped, and a command inside works."""
    assert manager.status(name) == "running"
    runtime = manager.runtime(name)
    assert not manager.cgroups_for(runtime).frozen()
    states = {}
    for pid in manager.cgroups_for(runtime).pids():
        try:
            states[pid] = status_of(pid)["State"][0]
        except OSError:
            pass    # ended since it was listed (the loop's mv, say): it was not stopped
    assert states and not [pid for pid, state in states.items() if state in ("T", "t", "D")], states
    assert manager.exec(name, ["true"], timeout=30).rc == 0


def start_memory_loop(manager, name):
    """A shell inside that keeps a random value in its memory and writes it, with its pid and a counter."""
    root = manager.layout.root(name)
    subprocess.run(["cp", "/bin/busybox", root + LOOP], check=True)
    script = ('v=$RANDOM$RANDOM$RANDOM; n=0; while :; do n=$((n+1)); echo "$$ $v $n" > %s.tmp; mv %s.tmp %s; '
              'sleep 0.1; done' % (MEMORY, MEMORY, MEMORY))
    result = manager.exec(name, ["sh", "-c", "setsid %s sh -c '%s' </dev/null >/dev/null 2>&1 &" % (LOOP, script)])
    assert result.rc == 0, result
    return wait_for(lambda: read_memory(manager, name), "the loop writes its memory")


def read_memory(manager, name):
    """(pid inside, value in memory, counter) the loop last wrote, from the private area when not running."""
    path = manager.layout.private(name) + MEMORY
    try:
        with open(path) as handle:
            pid, value, count = handle.read().split()
        return int(pid), value, int(count)
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def small_tmpfs(path, size, full=False):
    """A tmpfs of ``size`` on ``path`` (made if missing), ``full`` to the last byte; unmounted afterwards."""
    made = not os.path.isdir(path)
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size, "ovz-test-full", path], check=True)
    try:
        if full:
            fill(path)
        yield path
    finally:
        if subprocess.run(["umount", path], check=False).returncode != 0:
            subprocess.run(["umount", "-l", path], check=False)
        if made:
            os.rmdir(path)


def fill(directory):
    """Fill the file system of ``directory`` to the last byte."""
    with open(os.path.join(directory, "filler"), "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass


def plant_job_without_session(manager, name, argv):
    """Start ``argv`` in the background inside, entered from the host *without* a session of its own
    (as exec itself never does): its session leader is the host's. Returns its host pid."""
    before = set(processes(manager, name, os.path.basename(argv[0])))
    sh_without_session(manager, name, " ".join(argv) + " </dev/null >/dev/null 2>&1 &")
    return wait_for(lambda: [pid for pid in processes(manager, name, os.path.basename(argv[0])) if pid not in before],
                    "the planted job runs")[0]


# ---------------------------------------------------------------------------------------------
# entering joins everything: exec-started daemons carry on through suspend/resume cycles
# ---------------------------------------------------------------------------------------------

def test_exec_started_daemons_carry_on_through_suspend_resume_cycles(node, ct):
    manager = node.manager
    ok(module(node, ct, "ovz_checkpoint", state="suspended"))
    ok(module(node, ct, "ovz_checkpoint", state="resumed"))
    init = manager.runtime(ct).init_pid
    # The restored init lives in the time namespace CRIU made for it.
    assert ns_of(init, "time") != ns_of(os.getpid(), "time")
    for command in ("setsid sleep 300 </dev/null >/dev/null 2>&1 &", "sleep 301 </dev/null >/dev/null 2>&1 &"):
        result = module(node, ct, "ovz_exec", command=command)
        assert result["rc"] == 0 and not result.get("failed"), result
    sleepers = wait_for(lambda: len(processes(manager, ct, "sleep")) == 2 and processes(manager, ct, "sleep"),
                        "both daemons run")
    inside = sorted(sleepers.values())
    for _cycle in range(2):
        ok(module(node, ct, "ovz_checkpoint", state="suspended"))
        ok(module(node, ct, "ovz_checkpoint", state="resumed"))
        assert manager.status(ct) == "running"
        # The same daemons carry on, with the same pids inside.
        assert sorted(processes(manager, ct, "sleep").values()) == inside
    init = manager.runtime(ct).init_pid
    for pid in processes(manager, ct, "sleep"):
        # They live in the init's time namespace, they and their children.
        assert ns_of(pid, "time") == ns_of(init, "time") == ns_of(pid, "time_for_children")


def test_exec_joins_the_init_s_cgroup_where_the_container_has_none_of_its_own(node, ct):
    """A host's named v1 hierarchy (name=systemd here): a command entered from a caller in another cgroup
    there (a login session's) sits beside the container's init, not in its caller's cgroup."""
    manager = node.manager
    named = [hier for hier in manager.backend.hierarchies if hier.version == 1 and hier.key.startswith("name=")]
    if not named:
        pytest.skip("no named cgroup v1 hierarchy on this host")
    caller = os.path.join(named[0].mountpoint, "ovz-t%s-caller" % node.tag)
    os.mkdir(caller)
    try:
        script = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
        result = subprocess.run(["sh", "-c", script, caller, OVZCTL, "--data-dir", node.data_dir,
                                 "--cgroup-parent", node.cgroup_parent, "exec", "-T", ct, "sh", "-c",
                                 "setsid sleep 306 </dev/null >/dev/null 2>&1 &"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60,
                                check=False)
        assert result.returncode == 0, result.stderr
        sleeper = list(wait_for(lambda: processes(manager, ct, "sleep"), "the daemon runs"))[0]

        def cgroups(pid):
            with open("/proc/%d/cgroup" % pid) as handle:
                return dict(line.split(":", 2)[1:] for line in handle.read().splitlines())

        assert cgroups(sleeper)[named[0].key] == cgroups(manager.runtime(ct).init_pid)[named[0].key]
    finally:
        manager.stop(ct, timeout=5)
        os.rmdir(caller)


# ---------------------------------------------------------------------------------------------
# a failure after the freeze thaws, and a full file system is named
# ---------------------------------------------------------------------------------------------

def test_suspend_into_a_full_file_system_leaves_the_container_running(node, ct):
    manager = node.manager
    dump = manager.layout.dump(ct)
    # Full to the last byte: the checkpoint's description cannot be written (after the freeze).
    with small_tmpfs(dump, "64k", full=True):
        before = host_snapshot(node.data_dir, node.cgroup_parent, [ct])
        result = module(node, ct, "ovz_checkpoint", state="suspended")
        assert result.get("failed"), result
        assert_runs(manager, ct)
        assert os.path.join(dump, "ovz-checkpoint.json") in result["msg"], result["msg"]
        assert "No space left on device" in result["msg"] and "runs on" in result["msg"], result["msg"]
        assert result["changed"] is False, result
        assert host_snapshot(node.data_dir, node.cgroup_parent, [ct]) == before
    # Room for the description, not for CRIU's images: CRIU fails half-way through the dump.
    with small_tmpfs(dump, "64k"):
        result = module(node, ct, "ovz_checkpoint", state="suspended")
        assert result.get("failed") and result["changed"] is False, result
        print("\nsuspend into a full dump directory says: %s" % result["msg"])
        assert "The file system of %s is full" % dump in result["msg"], result["msg"]
        assert "The container runs on." in result["msg"], result["msg"]
        assert_runs(manager, ct)
        assert not os.path.exists(os.path.join(dump, "ovz-checkpoint.json"))
    assert manager.status(ct) == "running"
    # With room again the same task converges.
    ok(module(node, ct, "ovz_checkpoint", state="suspended"))
    assert manager.status(ct) == "suspended"


def test_checkpoint_to_a_full_dump_file_lets_the_container_carry_on(node, ct, session_dir):
    manager = node.manager
    loop = start_memory_loop(manager, ct)
    place = os.path.join(session_dir, "ovz-full-%s" % ct)
    with small_tmpfs(place, "16k"):
        dumpfile = os.path.join(place, "ct.dump")
        result = module(node, ct, "ovz_checkpoint", state="checkpointed", dumpfile=dumpfile)
        assert result.get("failed"), result
        print("\ncheckpoint to a full file system says: %s" % result["msg"])
        assert_runs(manager, ct)
        assert dumpfile in result["msg"] and "No space left on device" in result["msg"], result["msg"]
        assert "carries on" in result["msg"] and result["changed"] is False, result
        assert not os.path.exists(dumpfile)
    # The same process, its memory intact, counting on.
    now = wait_for(lambda: (read_memory(manager, ct) or (0, "", 0))[2] > loop[2] + 3 and read_memory(manager, ct),
                   "the loop counts on")
    assert now[:2] == loop[:2]
    # Nothing left in the data dir (the scratch images are gone).
    scratch = os.path.join(node.data_dir, "dump")
    assert not [entry for entry in (os.listdir(scratch) if os.path.isdir(scratch) else []) if ct in entry]


def test_limits_on_a_full_file_system_name_the_path(node, ct):
    manager = node.manager
    conf = manager.layout.conf(ct)
    with open(conf) as handle:
        text = handle.read()
    cgroups = manager.runtime(ct).cgroups
    shares = os.path.join(cgroups["cpu"], "cpu.shares") if "cpu" in cgroups else \
        os.path.join(cgroups["unified"], "cpu.weight")
    with open(shares) as handle:
        kernel_before = handle.read()
    with small_tmpfs(os.path.dirname(conf), "16k"):
        with open(conf, "w") as handle:
            handle.write(text)
        fill(os.path.dirname(conf))
        result = module(node, ct, "ovz_limits", cpuunits=2000)
        assert result.get("failed"), result
        print("\novz_limits on a full file system says: %s" % result["msg"])
        assert conf in result["msg"] and "No space left on device" in result["msg"], result["msg"]
        assert "OSError" not in result["msg"]
        with open(conf) as handle:
            assert handle.read() == text
    with open(shares) as handle:
        assert handle.read() == kernel_before       # the live change was undone


# ---------------------------------------------------------------------------------------------
# checkpoint refuses early: what CRIU would refuse, before anything is frozen, changed: false
# ---------------------------------------------------------------------------------------------

def test_checkpoint_refuses_a_background_job_without_a_session_early(node, ct, session_dir):
    manager = node.manager
    job = plant_job_without_session(manager, ct, ["sleep", "1000"])
    inside = int(status_of(job)["NSpid"][-1])
    assert status_of(job)["NSsid"][-1] == "0"       # its session leader is outside the container
    images = os.path.join(session_dir, "%s-images" % ct)
    before = host_snapshot(node.data_dir, node.cgroup_parent, [ct])
    for args in ({"state": "checkpointed", "dump_dir": images}, {"state": "suspended"}):
        for check in (True, False):
            result = module(node, ct, "ovz_checkpoint", check=check, **args)
            assert result.get("failed") and result["changed"] is False, (args, check, result)
            assert "process %d (sleep)" % inside in result["msg"] and "session" in result["msg"], result["msg"]
            assert "nothing was frozen" in result["msg"], result["msg"]
            assert_runs(manager, ct)
            assert os.path.exists("/proc/%d" % job)
    print("\nrefused checkpoint says: %s" % result["msg"])
    assert host_snapshot(node.data_dir, node.cgroup_parent, [ct]) == before
    assert not os.path.exists(os.path.join(images, "ovz-checkpoint.json"))

    # Another namespace than the init's (here a UTS namespace of its own) is refused the same way.
    assert manager.exec(ct, ["kill", str(inside)]).rc == 0
    wait_for(lambda: not os.path.exists("/proc/%d" % job), "the job is gone")
    result = module(node, ct, "ovz_exec", command="setsid unshare -u sleep 1001 </dev/null >/dev/null 2>&1 &")
    assert result["rc"] == 0, result
    other = wait_for(lambda: processes(manager, ct, "sleep"), "the sleep in its own UTS namespace")
    result = module(node, ct, "ovz_checkpoint", state="checkpointed", dump_dir=images)
    assert result.get("failed") and result["changed"] is False, result
    assert "process %d (sleep)" % list(other.values())[0] in result["msg"], result["msg"]
    assert "another uts namespace" in result["msg"], result["msg"]
    assert_runs(manager, ct)

    # Without them the checkpoint works: they were the only obstacles.
    manager.exec(ct, ["sh", "-c", "kill %d" % list(other.values())[0]])
    wait_for(lambda: not processes(manager, ct, "sleep"), "the sleeps are gone")
    ok(module(node, ct, "ovz_checkpoint", state="checkpointed", dump_dir=images, leave_running=True))
    assert_runs(manager, ct)


# ---------------------------------------------------------------------------------------------
# a vfork in flight: waited out, or refused by name; never CRIU's timeout
# ---------------------------------------------------------------------------------------------

WAITER = "/root/vfork_waiter"


@pytest.fixture(scope="session")
def vfork_waiter(session_dir):
    out = os.path.join(session_dir, "vfork_waiter")
    if not os.path.exists(out):
        subprocess.run(["gcc", "-static", "-O1", "-Wall", "-o", out,
                        os.path.join(os.path.dirname(os.path.abspath(__file__)), "vfork_waiter.c")],
                       check=True, timeout=120)
    return out


def start_vfork_waiter(manager, name, binary, seconds):
    """The waiter started inside (a daemon of the container's init); its host pid, once it waits in vfork."""
    subprocess.run(["cp", binary, manager.layout.root(name) + WAITER], check=True)
    command = "setsid %s %s </dev/null >/dev/null 2>&1 &" % (WAITER, seconds)
    assert manager.exec(name, ["sh", "-c", command]).rc == 0
    parent = wait_for(lambda: [pid for pid in processes(manager, name, "vfork_waiter")
                               if status_of(pid)["PPid"][0] not in map(str, processes(manager, name, "vfork_waiter"))],
                      "the waiter runs")[0]
    wait_for(lambda: status_of(parent)["State"][0] == "D", "the waiter's parent sleeps in its vfork")
    return parent


def test_checkpoint_waits_out_a_vfork_in_flight(node, ct, vfork_waiter):
    """Caught by the freeze between vfork and exec, a process would hold CRIU until its timeout; the
    checkpoint lets the container run until the child has gone on, then freezes it again."""
    manager = node.manager
    parent = start_vfork_waiter(manager, ct, vfork_waiter, "4")
    inside = int(status_of(parent)["NSpid"][-1])
    ok(module(node, ct, "ovz_checkpoint", state="suspended"))
    ok(module(node, ct, "ovz_checkpoint", state="resumed"))
    assert inside in processes(manager, ct, "vfork_waiter").values()
    assert_runs(manager, ct)


def test_the_freeze_before_a_migration_s_dump_waits_out_a_vfork(node, ct, vfork_waiter):
    """A migration freezes the container itself before its final dump: that freeze, too, lets a vfork
    in flight end first, as the dump's own would (frozen mid-vfork, the dump would be refused)."""
    manager = node.manager
    start_vfork_waiter(manager, ct, vfork_waiter, "3")
    froze = Checkpointer(manager).freeze(ct)
    cgroups = manager.cgroups_for(manager.runtime(ct))
    try:
        assert froze is True and cgroups.frozen()
        assert vfork_in_flight(process_tree(manager.runtime(ct).init_pid)) == []
    finally:
        manager.thaw(ct)
    assert_runs(manager, ct)


def test_checkpoint_refuses_a_process_that_never_leaves_vfork(node, ct, vfork_waiter, session_dir):
    manager = node.manager
    parent = start_vfork_waiter(manager, ct, vfork_waiter, "100000")
    inside = int(status_of(parent)["NSpid"][-1])
    images = os.path.join(session_dir, "%s-images" % ct)
    before = host_snapshot(node.data_dir, node.cgroup_parent, [ct])
    result = module(node, ct, "ovz_checkpoint", state="checkpointed", dump_dir=images)
    assert result.get("failed") and result["changed"] is False, result
    assert "process %d (vfork_waiter)" % inside in result["msg"] and "vfork" in result["msg"], result["msg"]
    assert "runs on" in result["msg"], result["msg"]
    print("\nrefused checkpoint says: %s" % result["msg"])
    assert manager.status(ct) == "running" and not manager.cgroups_for(manager.runtime(ct)).frozen()
    assert manager.exec(ct, ["true"], timeout=30).rc == 0
    assert host_snapshot(node.data_dir, node.cgroup_parent, [ct]) == before
    assert not os.path.exists(os.path.join(images, "ovz-checkpoint.json"))


# ---------------------------------------------------------------------------------------------
# suspended is a state; start resumes it with its memory
# ---------------------------------------------------------------------------------------------

def listed_state(node, name):
    lines = [line.split() for line in ovzctl(node, "list").stdout.splitlines()]
    return next(line[1] for line in lines if line and line[0] == name)


def test_a_suspended_container_is_listed_suspended_and_start_resumes_it(node, ct, session_dir):
    manager = node.manager
    loop = start_memory_loop(manager, ct)
    # Where suspend keeps its state, a checkpoint that leaves the container running (and so goes stale) may not go.
    result = module(node, ct, "ovz_checkpoint", state="checkpointed", dump_dir=manager.layout.dump(ct),
                    leave_running=True)
    assert result.get("failed") and "dump_dir" in result["msg"] and result["changed"] is False, result
    older = os.path.join(session_dir, "%s-older" % ct)
    ok(module(node, ct, "ovz_checkpoint", state="checkpointed", dump_dir=older, leave_running=True))
    ok(module(node, ct, "ovz_checkpoint", state="suspended"))
    assert manager.status(ct) == "suspended"
    assert listed_state(node, ct) == "suspended"
    assert json.loads(ovzctl(node, "status", ct).stdout)["state"] == "suspended"
    info = run_module("ovz_info", {"data_dir": node.data_dir, "cgroup_parent": node.cgroup_parent, "name": [ct]})
    assert info["containers"][0]["state"] == "suspended", info
    suspended = read_memory(manager, ct)
    # Not running, as state=stopped asks: it stays suspended, its memory kept.
    result = module(node, ct, "ovz_container", state="stopped")
    assert result["changed"] is False and not result.get("failed"), result
    assert manager.status(ct) == "suspended"
    # Its state is resumed, not replaced by another checkpoint, nor left behind by a migration.
    for args in ({"state": "restored", "dump_dir": older}, {"state": "migrated", "target": "root@ovz-nowhere"}):
        for check in (True, False):
            result = module(node, ct, "ovz_checkpoint", check=check, **args)
            assert result.get("failed") and "is suspended" in result["msg"] and result["changed"] is False, result
    assert manager.status(ct) == "suspended"

    result = module(node, ct, "ovz_container", state="started", check=True)
    assert result["changed"] and manager.status(ct) == "suspended", result
    ok(module(node, ct, "ovz_container", state="started"))
    assert manager.status(ct) == "running"
    assert not os.path.exists(manager.layout.dump(ct))
    # Resumed, not booted afresh: the same process, the same value in its memory, counting on from where it was.
    now = wait_for(lambda: (read_memory(manager, ct) or (0, "", 0))[2] > suspended[2] + 3 and read_memory(manager, ct),
                   "the loop counts on")
    assert now[:2] == loop[:2]
    assert module(node, ct, "ovz_container", state="started")["changed"] is False

    # ovzctl start, the same; a resume that fails keeps the dump and says so.
    ok(module(node, ct, "ovz_checkpoint", state="suspended"))
    binary = manager.layout.private(ct) + LOOP
    os.rename(binary, binary + ".away")
    result = ovzctl(node, "start", ct)
    assert result.returncode == 1, result
    print("\nfailed resume says: %s" % result.stderr)
    assert "The suspended state of %s is kept in %s" % (ct, manager.layout.dump(ct)) in result.stderr, result.stderr
    assert manager.status(ct) == "suspended" and listed_state(node, ct) == "suspended"
    assert os.path.isfile(os.path.join(manager.layout.dump(ct), "ovz-checkpoint.json"))
    os.rename(binary + ".away", binary)
    result = ovzctl(node, "start", ct)
    assert result.returncode == 0 and "resumed" in result.stdout, result.stderr
    assert manager.status(ct) == "running"
    assert read_memory(manager, ct)[:2] == loop[:2]
