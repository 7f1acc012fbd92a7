# -*- coding: utf-8 -*-
"""The cgroup engine against faked cgroupfs trees (v1, hybrid, co-mounted, v2).

No kernel object is touched: every hierarchy lives under ``tmp_path`` and the
``os`` module the engine sees is a proxy (``support.cgroupfs.FakeCgroupFS``)
with the semantics of cgroupfs.
"""

from __future__ import annotations

import errno
import os

import pytest

from support.cgroupfs import (
    COMOUNT_MOUNTINFO, COMOUNT_PROC_CGROUP, HYBRID_MOUNTINFO, HYBRID_PROC_CGROUP, V2_MOUNTINFO, FakeCgroupFS)
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel import cgroups
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.cgroups import (
    UNIFIED, V1_CONTROLLERS, CgroupV1, CgroupV2, ContainerCgroups, parse_mountinfo, parse_proc_cgroup,
    probe_hierarchies, select_backend)
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.errors import (
    InvalidParameter, KernelUnsupported, OvzError)


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------
@pytest.fixture
def hybrid(tmp_path, monkeypatch):
    fake = FakeCgroupFS(tmp_path, HYBRID_MOUNTINFO, v2_controllers="").install(monkeypatch)
    fake.makedirs(fake.path("/sys/fs/cgroup/memory/process_api/abc"))
    fake.add_procs(fake.path("/sys/fs/cgroup/memory/process_api/abc"), 4242)
    return fake


def hybrid_backend(fake, systemd=False):
    return select_backend(mountinfo=fake.mountinfo, fs_root=fake.root, own=parse_proc_cgroup(HYBRID_PROC_CGROUP),
                          systemd=systemd)


@pytest.fixture
def v2(tmp_path, monkeypatch):
    return FakeCgroupFS(tmp_path, V2_MOUNTINFO).install(monkeypatch)


def v2_backend(fake, own="/", systemd=False):
    return select_backend(mountinfo=fake.mountinfo, fs_root=fake.root, own={UNIFIED: own}, systemd=systemd)


@pytest.fixture
def comount(tmp_path, monkeypatch):
    fake = FakeCgroupFS(tmp_path, COMOUNT_MOUNTINFO, v2_controllers="").install(monkeypatch)
    fake.makedirs(fake.path("/sys/fs/cgroup/memory/user.slice"))
    fake.makedirs(fake.path("/sys/fs/cgroup/cpu,cpuacct/user.slice"))
    fake.makedirs(fake.path("/sys/fs/cgroup/unified/user.slice/session-1.scope"))
    return fake


def cgroups_for(backend, parent, name):
    return ContainerCgroups(backend, backend.container_paths(backend.resolve_parent(parent), name))


# --------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------
def test_parse_mountinfo_keeps_only_cgroup_mounts():
    mounts = parse_mountinfo(HYBRID_MOUNTINFO)
    assert len(mounts) == 10
    assert ("/sys/fs/cgroup/memory", "cgroup", "/", "rw,memory") in mounts
    assert ("/sys/fs/cgroup/unified", "cgroup2", "/", "rw") in mounts
    assert all(m[1] in ("cgroup", "cgroup2") for m in mounts)


def test_parse_mountinfo_optional_fields_and_escaped_spaces():
    text = ("40 31 0:37 / /mnt/my\\040cgroups rw,relatime shared:5 master:1 - cgroup2 cgroup2 rw,nsdelegate\n"
            "41 31 0:38 /docker/abc /sys/fs/cgroup/memory rw shared:9 - cgroup cgroup rw,memory\n")
    assert parse_mountinfo(text) == [
        ("/mnt/my cgroups", "cgroup2", "/", "rw,nsdelegate"),
        ("/sys/fs/cgroup/memory", "cgroup", "/docker/abc", "rw,memory"),
    ]


@pytest.mark.parametrize("text", ["", "\n", "garbage\n", "1 2 3 - cgroup\n", "1 2 3 4 5 rw\n",
                                  "22 27 0:21 / /proc rw,relatime - proc proc rw\n"])
def test_parse_mountinfo_ignores_malformed_and_foreign_lines(text):
    assert parse_mountinfo(text) == []


def test_parse_proc_cgroup_hybrid():
    own = parse_proc_cgroup(HYBRID_PROC_CGROUP)
    assert own["memory"] == "/process_api/abc"
    assert own[UNIFIED] == "/"
    assert own["name=systemd"] == "/"
    assert set(V1_CONTROLLERS) <= set(own)


def test_parse_proc_cgroup_comounted_v2_and_edge_cases():
    own = parse_proc_cgroup(COMOUNT_PROC_CGROUP)
    assert own["cpu"] == own["cpuacct"] == "/user.slice"
    assert own["net_cls"] == own["net_prio"] == "/"
    assert own[UNIFIED] == "/user.slice/session-1.scope"
    assert parse_proc_cgroup("0::/user.slice/user-0.slice/session-3.scope\n") == {
        UNIFIED: "/user.slice/user-0.slice/session-3.scope"}
    # a path may itself contain ':'; broken lines are skipped
    assert parse_proc_cgroup("0::/a:b\nbogus\n\n") == {UNIFIED: "/a:b"}


def test_probe_ignores_bind_mounts_of_sub_cgroups(tmp_path):
    text = HYBRID_MOUNTINFO.replace("0:32 / /sys/fs/cgroup/memory", "0:32 /docker/abc /sys/fs/cgroup/memory")
    keys = {h.key for h in probe_hierarchies(text, str(tmp_path))}
    assert "memory" not in keys
    assert {"cpu", "cpuset", "freezer", UNIFIED, "name=systemd"} <= keys


def test_probe_reads_v2_controllers_and_tolerates_missing_file(tmp_path):
    (tmp_path / "sys/fs/cgroup").mkdir(parents=True)
    (hier,) = probe_hierarchies(V2_MOUNTINFO, str(tmp_path))
    assert (hier.key, hier.version, hier.controllers) == (UNIFIED, 2, ())
    (tmp_path / "sys/fs/cgroup/cgroup.controllers").write_text("cpu memory pids\n")
    (hier,) = probe_hierarchies(V2_MOUNTINFO, str(tmp_path))
    assert hier.controllers == ("cpu", "memory", "pids")
    assert hier.mountpoint == str(tmp_path) + "/sys/fs/cgroup"


# --------------------------------------------------------------------------
# backend selection
# --------------------------------------------------------------------------
def test_select_hybrid_is_v1(hybrid):
    backend = hybrid_backend(hybrid)
    assert isinstance(backend, CgroupV1) and backend.version == 1
    used = [h.key for h in backend.used()]
    assert used == list(V1_CONTROLLERS) + [UNIFIED]   # name=systemd carries no controller: not used


def test_select_v2_only_is_v2(v2):
    backend = v2_backend(v2)
    assert isinstance(backend, CgroupV2) and backend.version == 2
    (hier,) = backend.used()
    assert hier.mountpoint == v2.path("/sys/fs/cgroup")
    assert "memory" in hier.controllers


def test_select_v2_when_v1_has_only_a_named_hierarchy(tmp_path):
    text = V2_MOUNTINFO + "40 26 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n"
    assert isinstance(select_backend(mountinfo=text, fs_root=str(tmp_path), own={}, systemd=False), CgroupV2)


@pytest.mark.parametrize("text", ["", "22 27 0:21 / /proc rw - proc proc rw\n",
                                  "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n",
                                  "41 31 0:38 /sub /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"])
def test_select_without_cgroups_is_unsupported(tmp_path, text):
    with pytest.raises(KernelUnsupported):
        select_backend(mountinfo=text, fs_root=str(tmp_path), own={}, systemd=False)


def test_select_comounted_uses_one_directory_for_both(comount):
    backend = select_backend(mountinfo=comount.mountinfo, fs_root=comount.root,
                             own=parse_proc_cgroup(COMOUNT_PROC_CGROUP), systemd=False)
    assert isinstance(backend, CgroupV1)
    assert [h.key for h in backend.used()] == ["cpu", "cpuset", "memory", "freezer", UNIFIED]
    cg = cgroups_for(backend, "auto", "101")
    assert cg.controller_dir("cpuacct") == cg.controller_dir("cpu") == \
        comount.path("/sys/fs/cgroup/cpu,cpuacct/user.slice/ovz-101")
    assert cg.paths["memory"] == comount.path("/sys/fs/cgroup/memory/user.slice/ovz-101")
    with pytest.raises(KernelUnsupported, match="pids"):
        cg.controller_dir("pids")
    cg.create("payload")
    assert os.path.isdir(cg.controller_dir("cpuacct") + "/payload")
    cg.remove(timeout=0.1)
    assert not cg.exists()
    assert os.path.isdir(comount.path("/sys/fs/cgroup/cpu,cpuacct/user.slice"))


# --------------------------------------------------------------------------
# cgroup_parent
# --------------------------------------------------------------------------
def test_resolve_auto_non_systemd_is_own_cgroup_per_hierarchy(hybrid):
    parent = hybrid_backend(hybrid).resolve_parent("auto")
    assert parent["memory"] == "/process_api/abc"
    assert parent["cpu"] == parent["freezer"] == parent[UNIFIED] == "/"
    assert set(parent) == set(V1_CONTROLLERS) | {UNIFIED}


def test_resolve_auto_falls_back_to_root_when_own_lacks_a_hierarchy(hybrid):
    backend = select_backend(mountinfo=hybrid.mountinfo, fs_root=hybrid.root,
                             own={"memory": "/m", UNIFIED: "/u"}, systemd=False)
    parent = backend.resolve_parent("auto")
    assert parent["memory"] == "/m" and parent["pids"] == "/" and parent[UNIFIED] == "/u"


def test_resolve_auto_systemd_is_ovz_slice(hybrid, v2):
    assert set(hybrid_backend(hybrid, systemd=True).resolve_parent("auto").values()) == {"/ovz.slice"}
    assert v2_backend(v2, own="/user.slice/session-1.scope", systemd=True).resolve_parent("auto") == {
        UNIFIED: "/ovz.slice"}
    assert v2_backend(v2, systemd=True).resolve_parent("ovz-node1") == {UNIFIED: "/ovz.slice/ovz-node1"}


def test_resolve_absolute_and_relative(hybrid, v2):
    backend = hybrid_backend(hybrid)
    assert set(backend.resolve_parent("/x/y").values()) == {"/x/y"}
    assert set(backend.resolve_parent("/x/y/").values()) == {"/x/y"}
    assert set(backend.resolve_parent("/").values()) == {"/"}
    rel = backend.resolve_parent("ovz-node1")
    assert rel["memory"] == "/process_api/abc/ovz-node1"
    assert rel["cpu"] == rel[UNIFIED] == "/ovz-node1"
    assert v2_backend(v2, own="/a/b").resolve_parent("ovz-n/sub") == {UNIFIED: "/a/b/ovz-n/sub"}
    assert v2_backend(v2, own="/a/b").resolve_parent("auto") == {UNIFIED: "/a/b"}


@pytest.mark.parametrize("bad", ["../x", "", "a/../b", "/x/..", "x\0y", None, 7])
def test_resolve_bad_parent_names_the_parameter(hybrid, bad):
    with pytest.raises(InvalidParameter) as err:
        hybrid_backend(hybrid).resolve_parent(bad)
    assert err.value.param == "cgroup_parent"
    assert "cgroup_parent" in str(err.value)


def test_container_paths_are_named_ovz_name(hybrid, v2):
    backend = hybrid_backend(hybrid)
    paths = backend.container_paths(backend.resolve_parent("auto"), "101")
    assert paths["memory"] == hybrid.path("/sys/fs/cgroup/memory/process_api/abc/ovz-101")
    assert paths["cpuset"] == hybrid.path("/sys/fs/cgroup/cpuset/ovz-101")
    assert paths[UNIFIED] == hybrid.path("/sys/fs/cgroup/unified/ovz-101")
    assert all(os.path.basename(p) == "ovz-101" for p in paths.values())
    vb = v2_backend(v2, systemd=True)
    assert vb.container_paths(vb.resolve_parent("auto"), "web") == {
        UNIFIED: v2.path("/sys/fs/cgroup/ovz.slice/ovz-web")}
    # computing paths creates nothing
    assert not os.path.exists(v2.path("/sys/fs/cgroup/ovz.slice"))


# --------------------------------------------------------------------------
# v1: create, cpuset, payload, freeze, kill, devices, remove
# --------------------------------------------------------------------------
def test_v1_create_copies_cpuset_into_new_levels_only(hybrid):
    backend = hybrid_backend(hybrid)
    existing = hybrid.path("/sys/fs/cgroup/cpuset/ovz-node1")
    hybrid.makedirs(existing)
    hybrid.set(existing + "/cpuset.cpus", "1")   # an operator's restriction on the node
    hybrid.set(existing + "/cpuset.mems", "0")
    cg = cgroups_for(backend, "ovz-node1", "101")
    cg.create("payload")
    ct = cg.paths["cpuset"]
    assert ct == existing + "/ovz-101"
    assert hybrid.read(ct + "/cpuset.cpus") == "1" and hybrid.read(ct + "/cpuset.mems") == "0"
    assert hybrid.read(ct + "/payload/cpuset.cpus") == "1"
    assert hybrid.read(existing + "/cpuset.cpus") == "1"      # existing level untouched
    written = {p for p, _v in hybrid.writes_to("cpuset.cpus")}
    assert written == {hybrid.rel(ct + "/cpuset.cpus"), hybrid.rel(ct + "/payload/cpuset.cpus")}
    for key, path in cg.paths.items():
        assert os.path.isdir(os.path.join(path, "payload")), key
    # never a write outside the container's own ovz-* directories (process_api is not ours)
    assert all("/ovz-" in "/" + p for p, _v in hybrid.writes)


def test_v1_create_new_parent_gets_cpuset_from_root(hybrid):
    cg = cgroups_for(hybrid_backend(hybrid), "ovz-node1", "101")
    cg.create()
    assert hybrid.read(hybrid.path("/sys/fs/cgroup/cpuset/ovz-node1/cpuset.cpus")) == "0-1"
    assert hybrid.read(cg.paths["cpuset"] + "/cpuset.cpus") == "0-1"
    assert hybrid.read(cg.paths["cpuset"] + "/cpuset.mems") == "0"
    assert os.path.isdir(hybrid.path("/sys/fs/cgroup/memory/process_api/abc/ovz-node1/ovz-101"))


def test_v1_create_keeps_cpuset_filled_by_clone_children(hybrid):
    hybrid.set(hybrid.path("/sys/fs/cgroup/cpuset/cgroup.clone_children"), "1")
    cgroups_for(hybrid_backend(hybrid), "auto", "101").create()
    assert hybrid.writes_to("cpuset.cpus") == [] and hybrid.writes_to("cpuset.mems") == []


def test_v1_create_is_idempotent(hybrid):
    cg = cgroups_for(hybrid_backend(hybrid), "auto", "101")
    cg.create()
    cg.create("payload")
    count = len(hybrid.writes)
    cg.create()
    cg.create("payload")
    assert len(hybrid.writes) == count
    assert cg.exists()


def test_v1_payload_procs_and_cgroup2(hybrid):
    cg = cgroups_for(hybrid_backend(hybrid), "auto", "101")
    procs = cg.payload_procs("payload")
    assert len(procs) == len(V1_CONTROLLERS)
    assert all(p.endswith("/ovz-101/payload/tasks") for p in procs)
    assert not any("/unified/" in p for p in procs)
    assert hybrid.path("/sys/fs/cgroup/memory/process_api/abc/ovz-101/payload/tasks") in procs
    assert cg.payload_cgroup2("payload") == hybrid.path("/sys/fs/cgroup/unified/ovz-101/payload")


def test_v1_without_cgroup2_has_no_payload_cgroup2(comount):
    text = "\n".join(line for line in COMOUNT_MOUNTINFO.splitlines() if "cgroup2" not in line)
    backend = select_backend(mountinfo=text, fs_root=comount.root, own={}, systemd=False)
    cg = cgroups_for(backend, "auto", "x")
    assert cg.payload_cgroup2("payload") is None
    assert len(cg.payload_procs("payload")) == 4


def test_v1_freeze_thaw_and_kill_all(hybrid):
    cg = cgroups_for(hybrid_backend(hybrid), "auto", "101")
    cg.create("payload")
    freezer = cg.paths["freezer"]
    cg.freeze()
    assert hybrid.read(freezer + "/freezer.state") == "FROZEN" and cg.frozen()
    cg.thaw()
    assert hybrid.read(freezer + "/freezer.state") == "THAWED" and not cg.frozen()
    hybrid.add_procs(freezer + "/payload", 900001, 900002)
    hybrid.add_procs(cg.paths["memory"] + "/payload", 900001, 900002)
    assert cg.pids() == [900001, 900002] and cg.populated()
    cg.kill_all(timeout=1)
    assert sorted(hybrid.killed) == [900001, 900002]
    assert cg.pids() == [] and not cg.populated()
    states = [v for _p, v in hybrid.writes_to("freezer.state")]
    assert states[-2:] == ["FROZEN", "THAWED"]       # frozen while signalled, thawed after


def test_v1_without_freezer(tmp_path, monkeypatch):
    text = "\n".join(line for line in HYBRID_MOUNTINFO.splitlines() if "freezer" not in line)
    fake = FakeCgroupFS(tmp_path, text, v2_controllers="").install(monkeypatch)
    backend = select_backend(mountinfo=text, fs_root=fake.root, own={}, systemd=False)
    cg = cgroups_for(backend, "auto", "101")
    cg.create("payload")
    assert not cg.frozen()
    with pytest.raises(KernelUnsupported, match="freezer"):
        cg.freeze()
    fake.add_procs(cg.paths["pids"] + "/payload", 900003)
    cg.kill_all(timeout=1)                           # falls back to plain SIGKILL
    assert fake.killed == [900003]


def test_v1_device_policy(hybrid):
    cg = cgroups_for(hybrid_backend(hybrid), "auto", "101")
    cg.create()
    assert cg.apply_device_policy(["c 1:3 rwm", "c 5:2 rwm"]) is True
    devices = hybrid.rel(cg.paths["devices"])
    assert hybrid.writes[-3:] == [(devices + "/devices.deny", "a"), (devices + "/devices.allow", "c 1:3 rwm"),
                                  (devices + "/devices.allow", "c 5:2 rwm")]


def test_v1_attach_writes_every_hierarchy(hybrid):
    cg = cgroups_for(hybrid_backend(hybrid), "auto", "101")
    cg.create()
    cg.attach(900004)
    assert sorted(p for p, v in hybrid.writes_to("cgroup.procs") if v == "900004") == \
        sorted(hybrid.rel(p + "/cgroup.procs") for p in cg.paths.values())


def test_v1_remove_takes_only_the_container_never_parents(hybrid):
    backend = hybrid_backend(hybrid)
    a = cgroups_for(backend, "ovz-node1", "a")
    b = cgroups_for(backend, "ovz-node1", "b")
    a.create("payload")
    b.create("payload")
    node_mem = hybrid.path("/sys/fs/cgroup/memory/process_api/abc/ovz-node1")
    a.remove(timeout=0.1)
    assert not a.exists() and b.exists()
    assert os.path.isdir(node_mem)                   # still holds b
    b.remove(timeout=0.1)
    assert not b.exists()
    assert os.path.isdir(node_mem)                   # parents belong to the operator (or the test)
    assert os.path.isdir(hybrid.path("/sys/fs/cgroup/cpu/ovz-node1"))
    assert os.path.isdir(hybrid.path("/sys/fs/cgroup/memory/process_api/abc"))   # the caller's own stays
    b.remove(timeout=0.1)                            # idempotent


def test_v1_remove_keeps_every_parent(hybrid):
    sliced = cgroups_for(hybrid_backend(hybrid, systemd=True), "ovz-node1", "101")
    sliced.create("payload")
    sliced.remove(timeout=0.1)
    assert not sliced.exists()
    assert os.path.isdir(hybrid.path("/sys/fs/cgroup/pids/ovz.slice/ovz-node1"))
    other = cgroups_for(hybrid_backend(hybrid), "/machines/ovz-inner", "102")
    other.create()
    other.remove(timeout=0.1)
    assert not other.exists()
    assert os.path.isdir(hybrid.path("/sys/fs/cgroup/pids/machines/ovz-inner"))


def test_v1_remove_busy_cgroup_times_out(hybrid):
    cg = cgroups_for(hybrid_backend(hybrid), "auto", "101")
    cg.create("payload")
    hybrid.add_procs(cg.paths["pids"] + "/payload", 900005)
    with pytest.raises(OSError) as err:
        cg.remove(timeout=0.05)
    assert err.value.errno == errno.EBUSY
    assert os.path.isdir(cg.paths["pids"] + "/payload")


def test_remove_takes_nested_sub_cgroups_first(hybrid):
    cg = cgroups_for(hybrid_backend(hybrid), "auto", "101")
    cg.create("payload")
    hybrid.makedirs(cg.paths[UNIFIED] + "/payload/init.scope")   # made by systemd inside the container
    hybrid.makedirs(cg.paths[UNIFIED] + "/payload/system.slice/cron.service")
    cg.remove(timeout=0.1)
    assert not cg.exists()


# --------------------------------------------------------------------------
# v2: controllers, freeze, kill, payload, remove
# --------------------------------------------------------------------------
def _subtree(fake, rel):
    return fake.read(fake.path("/sys/fs/cgroup" + rel + "/cgroup.subtree_control")).split()


def test_v2_create_enables_controllers_down_to_the_container_not_payload(v2):
    cg = cgroups_for(v2_backend(v2, systemd=True), "auto", "101")
    cg.create("payload")
    wanted = ["cpuset", "cpu", "io", "memory", "pids"]
    for rel in ("", "/ovz.slice", "/ovz.slice/ovz-101"):
        assert _subtree(v2, rel) == wanted, rel
    assert _subtree(v2, "/ovz.slice/ovz-101/payload") == []
    assert not any(p.endswith("payload/cgroup.subtree_control") for p, _v in v2.writes)
    assert v2.writes_to("cgroup.subtree_control")[0][1] == "+cpu +cpuset +io +memory +pids"
    payload = cg.payload_cgroup2("payload")
    assert payload == v2.path("/sys/fs/cgroup/ovz.slice/ovz-101/payload")
    # the controllers reached the payload, so limits can be read there
    assert v2.read(payload + "/cgroup.controllers").split() == wanted
    assert os.path.exists(payload + "/memory.max")
    assert cg.payload_procs("payload") == []


def test_v2_create_without_payload_leaves_the_leaf_alone(v2):
    cg = cgroups_for(v2_backend(v2, systemd=True), "auto", "101")
    cg.create()
    assert _subtree(v2, "/ovz.slice") == ["cpuset", "cpu", "io", "memory", "pids"]
    assert _subtree(v2, "/ovz.slice/ovz-101") == []
    cg.create("payload")
    assert _subtree(v2, "/ovz.slice/ovz-101") == ["cpuset", "cpu", "io", "memory", "pids"]


def test_v2_enables_only_available_and_missing_controllers(tmp_path, monkeypatch):
    fake = FakeCgroupFS(tmp_path, V2_MOUNTINFO, v2_controllers="cpu memory hugetlb pids").install(monkeypatch)
    fake.set(fake.path("/sys/fs/cgroup/cgroup.subtree_control"), "memory")
    cg = cgroups_for(v2_backend(fake, systemd=True), "auto", "101")
    cg.create("payload")
    writes = fake.writes_to("cgroup.subtree_control")
    assert writes[0] == ("sys/fs/cgroup/cgroup.subtree_control", "+cpu +pids")
    assert all("cpuset" not in v and "io" not in v and "hugetlb" not in v for _p, v in writes)
    assert _subtree(fake, "/ovz.slice/ovz-101") == ["cpu", "memory", "pids"]
    count = len(fake.writes)
    cg.create("payload")                              # nothing left to enable: no writes
    assert len(fake.writes) == count


def test_v2_parent_holding_processes_fails_naming_cgroup_parent(v2):
    # systemd enabled the controllers down to the caller's scope, which holds the caller
    all_five = "cpuset cpu io memory pids"
    v2.set(v2.path("/sys/fs/cgroup/cgroup.subtree_control"), all_five)
    v2.makedirs(v2.path("/sys/fs/cgroup/user.slice"))
    v2.set(v2.path("/sys/fs/cgroup/user.slice/cgroup.subtree_control"), all_five)
    own = v2.path("/sys/fs/cgroup/user.slice/session-1.scope")
    v2.makedirs(own)
    v2.add_procs(own, 4242)
    assert v2.read(own + "/cgroup.controllers") == all_five
    cg = cgroups_for(v2_backend(v2, own="/user.slice/session-1.scope"), "auto", "101")
    with pytest.raises(OvzError) as err:
        cg.create()
    assert err.value.param == "cgroup_parent" and "cgroup_parent" in str(err.value)
    assert not cg.exists()


def test_v2_freeze_and_thaw(v2):
    cg = cgroups_for(v2_backend(v2, systemd=True), "auto", "101")
    cg.create("payload")
    assert not cg.frozen()
    cg.freeze()
    assert v2.read(cg.paths[UNIFIED] + "/cgroup.freeze") == "1"
    assert cg.frozen()
    cg.thaw()
    assert v2.read(cg.paths[UNIFIED] + "/cgroup.freeze") == "0"
    assert not cg.frozen()


def test_v2_freeze_times_out_when_the_kernel_never_confirms(v2, monkeypatch):
    cg = cgroups_for(v2_backend(v2, systemd=True), "auto", "101")
    cg.create("payload")
    v2.auto_freeze = False
    clock = iter(range(0, 10 ** 6, 4))

    class FastTime:
        monotonic = staticmethod(lambda: next(clock))
        sleep = staticmethod(lambda _s: None)

    monkeypatch.setattr(cgroups, "time", FastTime)
    with pytest.raises(OvzError, match="did not freeze"):
        cg.freeze()


def test_v2_frozen_is_false_when_events_unreadable(v2):
    cg = cgroups_for(v2_backend(v2, systemd=True), "auto", "101")
    assert not cg.frozen()                           # not created yet


def test_v2_kill_all_uses_cgroup_kill(v2):
    cg = cgroups_for(v2_backend(v2, systemd=True), "auto", "101")
    cg.create("payload")
    v2.add_procs(cg.paths[UNIFIED] + "/payload", 900011, 900012)
    cg.kill_all(timeout=1)
    assert v2.writes_to("cgroup.kill") == [(v2.rel(cg.paths[UNIFIED] + "/cgroup.kill"), "1")]
    assert v2.writes_to("cgroup.freeze") == []
    assert cg.pids() == []


def test_v2_kill_all_without_cgroup_kill_freezes_and_signals(v2):
    cg = cgroups_for(v2_backend(v2, systemd=True), "auto", "101")
    cg.create("payload")
    os.unlink(cg.paths[UNIFIED] + "/cgroup.kill")    # kernels before 5.14
    v2.add_procs(cg.paths[UNIFIED] + "/payload", 900013)
    cg.kill_all(timeout=1)
    assert v2.killed == [900013]
    assert [v for _p, v in v2.writes_to("cgroup.freeze")] == ["1", "0"]


def test_v2_remove_keeps_parents(v2):
    cg = cgroups_for(v2_backend(v2, systemd=True), "ovz-node1", "101")
    cg.create("payload")
    cg.remove(timeout=0.1)
    assert not cg.exists()
    assert os.path.isdir(v2.path("/sys/fs/cgroup/ovz.slice/ovz-node1"))


def test_v2_pids_walks_sub_cgroups(v2):
    cg = cgroups_for(v2_backend(v2, systemd=True), "auto", "101")
    cg.create("payload")
    v2.makedirs(cg.paths[UNIFIED] + "/payload/init.scope")
    v2.add_procs(cg.paths[UNIFIED] + "/payload/init.scope", 900021)
    v2.add_procs(cg.paths[UNIFIED] + "/payload", 900022)
    assert cg.pids() == [900021, 900022]
    assert cg.to_state() == cg.paths


def test_remove_keeps_the_shared_parent_a_concurrent_create_needs(hybrid, monkeypatch):
    """Two containers of one parent are created and removed under their own locks, concurrently: the
    removal of one, in the middle of the other's creation (between its parent and its own directory),
    leaves the parent, so the creation goes on. (The engine never removes a parent.)"""
    backend = hybrid_backend(hybrid)
    a = cgroups_for(backend, "ovz-node1", "a")
    b = cgroups_for(backend, "ovz-node1", "b")
    a.create()
    real_mkdir = hybrid.mkdir
    removed = []

    def racing_mkdir(path, mode=0o777):
        if path.endswith("/ovz-node1/ovz-b") and a.exists():
            a.remove(timeout=0.1)            # another process, holding a's lock, removes a
            removed.append(path)
        return real_mkdir(path, mode)

    monkeypatch.setattr(cgroups.os, "mkdir", racing_mkdir)
    b.create()
    assert removed and not a.exists()       # the race happened: a went while b was being made
    assert b.exists()
    assert all(os.path.isdir(os.path.dirname(path)) for path in a.paths.values())   # the parent stayed


def test_v2_exec_always_joins_a_leaf_below_the_payload(v2):
    # A helper in the payload itself would make systemd inside fail (EBUSY) when it enables
    # controllers there, so even before any delegation commands go to a leaf.
    cg = cgroups_for(v2_backend(v2, systemd=True), "auto", "101")
    cg.create("payload")
    payload = cg.payload_cgroup2("payload")
    leaf = cg.exec_cgroup2("payload")
    assert leaf == os.path.join(payload, ".ovz-exec") and os.path.isdir(leaf)
    with open(os.path.join(payload, "cgroup.subtree_control"), "w") as handle:
        handle.write("+memory")
    assert cg.exec_cgroup2("payload") == leaf  # idempotent
