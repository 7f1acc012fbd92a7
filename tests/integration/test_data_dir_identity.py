# -*- coding: utf-8 -*-
"""Each data dir is a node of its own: two data dirs on one host, under the SAME cgroup parent (as
operators set it: both ``auto``, or one delegated slice), hold a container of the same name.

Starting, stopping, destroying one of them, or migrating a container between the two data dirs,
touches nothing of the other's: its init runs on (same pid, same start time), its cgroups, its
named netns (the same namespace), its host end and its nftables chains stay, and the hub still
reaches its address. Containers started before data dirs had an identity (bare ``ovz-<name>``
cgroup and netns, chains in ``netdev ovz``) keep working and get the new names at their next start.

Everything runs in one harness node's netns (tests/support/multinode.py: its own sshd, a hub beyond it), so
the host ends, routes, proxy neighbours and nftables tables are that namespace's, never the host's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid

import pytest

from support.multinode import S50_PLAIN, Harness, HarnessNode, process_starttime

from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.criu import Criu, find_criu
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.errors import OvzError

pytestmark = [pytest.mark.multinode, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

NAME = "ovzsame"


@pytest.fixture(scope="module")
def one_node(session_dir):
    """One node (a netns with its own sshd) and the hub: the host both data dirs share."""
    with Harness(os.path.join(session_dir, "mn-" + uuid.uuid4().hex[:6]), 1) as result:
        yield result


@pytest.fixture(scope="session")
def criu_works():
    try:
        ok, output = Criu(find_criu()).check()
    except OvzError as exc:
        pytest.skip(str(exc))
    if not ok:
        pytest.skip("criu check fails on this kernel: %s" % output.splitlines()[-1:])


@pytest.fixture
def pair(one_node, session_dir):  # pylint: disable=redefined-outer-name
    """Two data dirs of the harness node, with one cgroup parent: views of the node that differ only in
    ``data_dir``. Under ``<session>/node-*/data`` so that scripts/sweep.py finds them after a crash."""
    tag = uuid.uuid4().hex[:6]
    views = []
    for side in "ab":
        view = HarnessNode(one_node, 1, one_node.nodes[0].cgroup_parent)
        view.base = os.path.join(session_dir, "node-%s%s" % (tag, side))
        view.data_dir = os.path.join(view.base, "data")
        views.append(view)
    try:
        yield views
    finally:
        for view in views:
            view.destroy_containers()
        for view in views:
            shutil.rmtree(view.base, ignore_errors=True)


def call(view, expression, prelude=""):
    """``expression`` with ``manager`` (the view's ContainerManager), after ``prelude``, in the node's netns;
    its JSON value."""
    code = ("import json\n"
            "from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager\n"
            "from ansible_collections.ovz.containers.plugins.module_utils._engine.resources import network\n"
            "manager = ContainerManager(%r, %r)\n"
            "%s"
            "print('\\n' + json.dumps(%s, default=str))\n" % (view.data_dir, view.cgroup_parent, prelude, expression))
    return json.loads(view.python(code).stdout.strip().splitlines()[-1])


def make(view, template, ip, start=True, prelude=""):
    """A busybox container ``NAME`` (directory layout) with a routed address and the counter, started."""
    code = ("config = manager.create(%r, %r, layout='directory')\n"
            "config.network = network.normalize_network(%r, manager.layout.data_dir, {'ip_address': [%r]})\n"
            "manager.store.save(config)\n" % (NAME, template, NAME, ip))
    call(view, "True", prelude + code)
    init_d = os.path.join(view.data_dir, "private", NAME, "etc", "init.d", "S50counter")
    with open(init_d, "w") as handle:
        handle.write(S50_PLAIN)
    os.chmod(init_d, 0o755)
    if start:
        call(view, "manager.start(%r, wait_boot=True, timeout=60)" % NAME, prelude)
        counter(view, above=2)


def counter(view, above=0, timeout=30):
    """The counter's status once above ``above`` (read from the running container's root)."""
    path = os.path.join(view.data_dir, "root", NAME, "root", "status")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path) as handle:
                status = dict(item.split("=", 1) for item in handle.read().split() if "=" in item)
            if int(status.get("counter", 0)) > above:
                return status
        except (OSError, ValueError):
            pass
        assert time.monotonic() < deadline, "the counter of %s in %s stands still" % (NAME, view.data_dir)
        time.sleep(0.1)


def nft_chains(view, table):
    proc = view.netns.run(["nft", "-j", "list", "table", "netdev", table], check=False)
    if proc.returncode != 0:
        return []
    return sorted(item["chain"]["name"] for item in json.loads(proc.stdout)["nftables"] if "chain" in item)


def objects(view):
    """What the running container ``NAME`` of ``view`` holds on the host, checked to be alive and its own."""
    runtime = call(view, "manager.runtime(%r).__dict__" % NAME)
    net = call(view, "network.load_runtime(network.runtime_path(manager.layout.run(%r)))" % NAME)
    pid = runtime["init_pid"]
    assert process_starttime(pid) == runtime["init_starttime"] and os.path.exists("/proc/%d/ns/net" % pid), \
        "the init of %s in %s died" % (NAME, view.data_dir)
    with open("/proc/%d/cgroup" % pid) as handle:
        own = handle.read()
    for path in runtime["cgroups"].values():
        assert os.path.isdir(path), path
    assert any(os.path.basename(path) + "/payload" in own for path in runtime["cgroups"].values()), own
    netns = net["netns"]
    assert netns and os.stat(netns).st_ino == os.stat("/proc/%d/ns/net" % pid).st_ino, netns
    host_end = net["host_ifname"]
    assert host_end in view.netns.links()
    table = net.get("nft_table") or "ovz"
    assert {host_end + "-in"} <= set(nft_chains(view, table))
    return {"pid": pid, "starttime": runtime["init_starttime"], "cgroups": runtime["cgroups"], "netns": netns,
            "host_end": host_end, "table": table}


def assert_untouched(view, before, ip):
    assert objects(view) == before
    assert view.harness.hub.ping(ip), "%s is unreachable" % ip
    counter(view, above=int(counter(view)["counter"]))   # still counting


def assert_none_left(view):
    """Nothing of ``NAME`` in ``view``: no config, no host end, no netns name, no chains of its node."""
    assert call(view, "manager.status(%r)" % NAME) == "absent"
    node = call(view, "manager.layout.node_id()")
    assert not os.path.exists("/run/netns/ovz-%s-%s" % (node, NAME))
    assert nft_chains(view, "ovz-%s" % node) == []
    cgroups = subprocess.run(["find", "/sys/fs/cgroup", "-name", "ovz-%s-%s" % (node, NAME)], stdout=subprocess.PIPE,
                             universal_newlines=True, check=False).stdout
    assert cgroups.split() == []


# ---------------------------------------------------------------------------------------
# start, stop, destroy
# ---------------------------------------------------------------------------------------

def test_same_name_in_two_data_dirs_start_stop_destroy(pair, busybox_template):
    a, b = pair
    ip_a, ip_b = "10.213.201.71", "10.213.201.72"
    make(a, busybox_template, ip_a)
    objects_a = objects(a)
    # A never-started container of that name in B, destroyed.
    make(b, busybox_template, ip_b, start=False)
    assert call(b, "manager.destroy(%r)" % NAME) is True
    assert_untouched(a, objects_a, ip_a)
    # Started in B: both run, each with its own objects.
    make(b, busybox_template, ip_b)
    objects_b = objects(b)
    assert_untouched(a, objects_a, ip_a)
    for key in ("netns", "host_end", "table"):
        assert objects_a[key] != objects_b[key], key
    assert not set(objects_a["cgroups"].values()) & set(objects_b["cgroups"].values())
    node = call(a, "manager.layout.node_id()")
    assert {os.path.basename(path) for path in objects_a["cgroups"].values()} == {"ovz-%s-%s" % (node, NAME)}
    # Stopped and started again in B, then stopped in A and destroyed there.
    call(b, "manager.stop(%r, timeout=5)" % NAME)
    assert_untouched(a, objects_a, ip_a)
    call(b, "manager.start(%r, wait_boot=True, timeout=60)" % NAME)
    objects_b = objects(b)
    call(a, "manager.stop(%r, timeout=5)" % NAME)
    assert_untouched(b, objects_b, ip_b)
    assert call(a, "manager.destroy(%r)" % NAME) is True
    assert_untouched(b, objects_b, ip_b)
    assert_none_left(a)
    assert call(b, "manager.destroy(%r)" % NAME) is True
    assert_none_left(b)


# ---------------------------------------------------------------------------------------
# live migration between the two data dirs of one host
# ---------------------------------------------------------------------------------------

def migrate(view, target, hook=None):
    """``migration.migrate`` of ``NAME`` from ``view`` to ``target`` (another view), as its own process;
    ``hook``: a phase after which the migration raises (its undo runs)."""
    prelude = ("from ansible_collections.ovz.containers.plugins.module_utils._engine.ops import migration\n"
               "def hook(phase):\n"
               "    if phase == %r:\n"
               "        raise RuntimeError('test: failed after ' + phase)\n" % hook)
    expression = "migration.migrate(manager, %r, %r, hook=hook, pre_dump_iterations=1)" % (
        NAME, target.target(data_dir=target.data_dir, cgroup_parent=target.cgroup_parent))
    if hook is None:
        return call(view, expression, prelude)
    code = ("from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager\n"
            "manager = ContainerManager(%r, %r)\n"
            "%s"
            "try:\n"
            "    %s\n"
            "    print('\\nnot failed')\n"
            "except RuntimeError as exc:\n"
            "    print('\\n' + str(exc))\n" % (view.data_dir, view.cgroup_parent, prelude, expression))
    return view.python(code).stdout.strip().splitlines()[-1]


def test_live_migration_between_two_data_dirs_of_one_host(pair, busybox_template, criu_works):
    a, b = pair
    ip = "10.213.201.73"
    make(a, busybox_template, ip)
    before = counter(a)
    objects_a = objects(a)
    result = migrate(a, b)
    assert result["changed"] is True and result["mode"] == "online", result
    after = counter(b, above=int(before["counter"]))   # the counter went on in the same process
    assert after["pid"] == before["pid"]
    objects_b = objects(b)
    assert objects_b["host_end"] != objects_a["host_end"] and objects_b["netns"] != objects_a["netns"]
    assert not set(objects_a["cgroups"].values()) & set(objects_b["cgroups"].values())
    assert b.harness.hub.ping(ip)
    assert_none_left(a)
    assert os.path.exists(objects_b["netns"])
    # And back again, onto the same data dir's names as before.
    before = counter(b)
    result = migrate(b, a)
    assert result["changed"] is True, result
    assert counter(a, above=int(before["counter"]))["pid"] == before["pid"]
    back = objects(a)
    assert back["host_end"] == objects_a["host_end"] and back["netns"] == objects_a["netns"]
    assert a.harness.hub.ping(ip)
    assert_none_left(b)


def test_failed_migration_between_two_data_dirs_resumes_the_source_with_its_address(pair, busybox_template, criu_works):
    """The target restored the container (its host end took the routes, it added the proxy neighbours
    both share); then the migration fails and the target's undo removes its side: the source runs on,
    reachable by its address."""
    a, b = pair
    ip = "10.213.201.74"
    make(a, busybox_template, ip)
    before = counter(a)
    assert migrate(a, b, hook="restore") == "test: failed after restore"
    assert call(a, "manager.status(%r)" % NAME) == "running"
    assert counter(a, above=int(before["counter"]))["pid"] == before["pid"]
    objects(a)
    assert a.harness.hub.ping(ip), "the source lost its route or proxy neighbour to the target's undo"
    assert_none_left(b)


def test_own_host_end_name_refused_between_two_data_dirs_before_the_freeze(pair, busybox_template, criu_works):
    """Both host ends exist until the move is done, so a name of the operator's own cannot serve both: the
    preflight says so, naming host_ifname, and the container runs on untouched."""
    a, b = pair
    ip = "10.213.201.80"
    make(a, busybox_template, ip, start=False)
    host_end = "ovzx" + uuid.uuid4().hex[:8]
    call(a, "True",
         "config = manager.load(%r)\n"
         "config.network = network.normalize_network(%r, manager.layout.data_dir, {'host_ifname': %r}, config.network)\n"
         "manager.store.save(config)\n" % (NAME, NAME, host_end))
    call(a, "manager.start(%r, wait_boot=True, timeout=60)" % NAME)
    before = objects(a)
    assert before["host_end"] == host_end
    code = ("from ansible_collections.ovz.containers.plugins.module_utils._engine.ops import migration\n"
            "try:\n"
            "    migration.migrate(manager, %r, %r)\n"
            "    result = None\n"
            "except Exception as exc:\n"
            "    result = [getattr(exc, 'param', None), str(exc)]\n"
            % (NAME, b.target(data_dir=b.data_dir, cgroup_parent=b.cgroup_parent)))
    param, message = call(a, "result", code)
    assert param == "host_ifname" and host_end in message and "leave host_ifname to its default" in message, message
    assert_untouched(a, before, ip)
    assert call(b, "manager.status(%r)" % NAME) == "absent"


# ---------------------------------------------------------------------------------------
# containers started before data dirs had an identity
# ---------------------------------------------------------------------------------------

# What the engine named before: no node identity (bare ovz-<name> cgroups and netns, chains in
# netdev ovz, a host end derived from the data dir's path), and nothing recorded of it.
LEGACY = ("from ansible_collections.ovz.containers.plugins.module_utils._engine.node.config import HostLayout\n"
          "HostLayout.node_id = lambda self, record=False: None\n")


def make_legacy(view, template, ip):
    make(view, template, ip, prelude=LEGACY)
    path = os.path.join(view.data_dir, "run", NAME, "net.json")
    with open(path) as handle:
        runtime = json.load(handle)
    runtime.pop("nft_table", None)     # not recorded before
    with open(path, "w") as handle:
        json.dump(runtime, handle)
    found = objects(view)
    assert all(os.path.basename(p) == "ovz-" + NAME for p in found["cgroups"].values()), found
    assert found["netns"] == "/run/netns/ovz-" + NAME and found["table"] == "ovz"
    assert not os.path.exists(os.path.join(view.data_dir, "node.json"))
    return found


def test_legacy_container_keeps_working_and_moves_to_new_names_at_next_start(pair, busybox_template):
    a, b = pair
    ip_a, ip_b = "10.213.201.75", "10.213.201.76"
    legacy = make_legacy(a, busybox_template, ip_a)
    # Everyday calls find what it was given.
    assert call(a, "manager.status(%r)" % NAME) == "running"
    assert call(a, "manager.exec(%r, ['cat', '/proc/self/cgroup']).rc" % NAME) == 0
    assert call(a, "manager.facts(%r)['cgroups']" % NAME) == legacy["cgroups"]
    assert a.harness.hub.ping(ip_a)
    # A container of that name in another data dir, started and destroyed: the legacy one runs on.
    make(b, busybox_template, ip_b)
    assert_untouched(a, legacy, ip_a)
    assert call(b, "manager.destroy(%r)" % NAME) is True
    assert_untouched(a, legacy, ip_a)
    # Stopped: nothing of the old names is left; started: the new ones.
    call(a, "manager.stop(%r, timeout=5)" % NAME)
    assert not os.path.exists(legacy["netns"]) and legacy["host_end"] not in a.netns.links()
    assert all(not os.path.exists(path) for path in legacy["cgroups"].values())
    assert nft_chains(a, "ovz") == []
    call(a, "manager.start(%r, wait_boot=True, timeout=60)" % NAME)
    node = call(a, "manager.layout.node_id()")
    moved = objects(a)
    assert all(os.path.basename(p) == "ovz-%s-%s" % (node, NAME) for p in moved["cgroups"].values()), moved
    assert moved["netns"] == "/run/netns/ovz-%s-%s" % (node, NAME) and moved["table"] == "ovz-" + node
    assert moved["host_end"] == legacy["host_end"]     # stored in its configuration: kept
    assert a.harness.hub.ping(ip_a)
    with open(os.path.join(a.data_dir, "node.json")) as handle:
        assert json.load(handle)["id"] == node


def test_stale_legacy_state_does_not_kill_another_data_dirs_container(pair, busybox_template):
    """Before data dirs had an identity, a start in one data dir took over the ``ovz-<name>`` cgroup of the
    same name in another (the container there died, its state recording that cgroup). Now the live one's
    cgroup is another data dir's: the dead one's next start, stop or destroy leaves it alone."""
    a, b = pair
    ip_a, ip_b = "10.213.201.77", "10.213.201.78"
    legacy = make_legacy(a, busybox_template, ip_a)
    make(b, busybox_template, ip_b, start=False)
    state = os.path.join(b.data_dir, "run", NAME, "state.json")
    os.makedirs(os.path.dirname(state), exist_ok=True)
    with open(state, "w") as handle:   # the dead container's record: its init gone, the same cgroups
        json.dump({"init_pid": 999999999, "init_starttime": 1, "cgroups": legacy["cgroups"],
                   "cgroup_version": call(b, "manager.backend.version"), "started_at": 1.0}, handle)
    assert call(b, "manager.status(%r)" % NAME) == "stopped"
    call(b, "manager.start(%r, wait_boot=True, timeout=60)" % NAME)
    assert_untouched(a, legacy, ip_a)
    objects(b)
    assert call(b, "manager.destroy(%r)" % NAME) is True
    assert_untouched(a, legacy, ip_a)


def test_legacy_container_checkpointed_and_resumed_gets_new_names(pair, busybox_template, criu_works):
    """A suspend finds the old names (its freezer cgroup, its host end); the resume is a start of a kind:
    the container comes back, with its memory, under this data dir's names."""
    a, _b = pair
    ip = "10.213.201.79"
    legacy = make_legacy(a, busybox_template, ip)
    before = counter(a)
    checkpointer = "from ansible_collections.ovz.containers.plugins.module_utils._engine.ops.checkpoint import Checkpointer\n"
    assert call(a, "Checkpointer(manager).suspend(%r)['state']" % NAME, checkpointer) == "stopped"
    assert not os.path.exists(legacy["netns"]) and legacy["host_end"] not in a.netns.links()
    assert all(not os.path.exists(path) for path in legacy["cgroups"].values())
    assert nft_chains(a, "ovz") == []
    call(a, "bool(Checkpointer(manager).resume(%r))" % NAME, checkpointer)
    assert counter(a, above=int(before["counter"]))["pid"] == before["pid"]
    node = call(a, "manager.layout.node_id()")
    moved = objects(a)
    assert all(os.path.basename(p) == "ovz-%s-%s" % (node, NAME) for p in moved["cgroups"].values()), moved
    assert moved["netns"] == "/run/netns/ovz-%s-%s" % (node, NAME) and moved["table"] == "ovz-" + node
    assert a.harness.hub.ping(ip)
