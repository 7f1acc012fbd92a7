# -*- coding: utf-8 -*-
"""Limits and beancounters on cgroup v2, against the faked cgroupfs of support/cgroupfs.py.

The real v2 tests run later on VMs; here every v2 file the limits engine
writes is checked: names, values, order, idempotence, the defaults it puts
back, what it does when the kernel lacks a file, the rollback of a failed
change, and the beancounters read from v2 counters. One v1 test covers the
flat (non-hierarchical) blk-throttle files for comparison.
"""

from __future__ import annotations

import errno
import os

import pytest

from support.cgroupfs import (
    HYBRID_PROC_CGROUP, V1_FILES, V2_FILES, V2_MOUNTINFO, FakeCgroupFS, HYBRID_MOUNTINFO)
from ansible_collections.ovz.containers.plugins.module_utils._engine.resources import beancounters as bc
from ansible_collections.ovz.containers.plugins.module_utils._engine.resources import limits as lim
from ansible_collections.ovz.containers.plugins.module_utils._engine.ops import limits as limits_op
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.cgroups import (
    UNIFIED, ContainerCgroups, parse_proc_cgroup, select_backend)
from ansible_collections.ovz.containers.plugins.module_utils._engine.node.config import ContainerConfig
from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager, Runtime
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.errors import (
    InvalidParameter, KernelUnsupported, OvzError)
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.process import process_starttime

DEVICES = lim.Devices(throttle=["7:3"], weight=["7:3", "254:0"], names={"7:3": "loop3", "254:0": "vda"})
V2_EXTRA = {
    "cpu": {"cpu.stat": "usage_usec 0"},
    "io": {"io.bfq.weight": "default 100"},
    "memory": {"memory.current": "0", "memory.peak": "0", "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0",
               "memory.swap.current": "0", "memory.swap.peak": "0", "memory.swap.events": "high 0\nmax 0\nfail 0",
               "memory.stat": "anon 0\nfile 0\nkernel 0\nshmem 0\nslab_reclaimable 0"},
    "pids": {"pids.current": "0", "pids.peak": "0", "pids.events": "max 0"},
}


@pytest.fixture
def v2(tmp_path, monkeypatch):
    for controller, files in V2_EXTRA.items():
        monkeypatch.setitem(V2_FILES, controller, dict(V2_FILES[controller], **files))
    return FakeCgroupFS(tmp_path, V2_MOUNTINFO).install(monkeypatch)


@pytest.fixture
def ct(v2):
    backend = select_backend(mountinfo=v2.mountinfo, fs_root=v2.root, own={UNIFIED: "/"}, systemd=True)
    cgroups = ContainerCgroups(backend, backend.container_paths(backend.resolve_parent("auto"), "101"))
    cgroups.create()
    cgroups.create("payload")
    return cgroups


def files(fake, cgroups, *names):
    return {n: fake.read(os.path.join(cgroups.paths[UNIFIED], n)) for n in names}


ALL = dict(cpuunits=2000, cpulimit=150, cpumask="1", ram="512M", swap="128M", numproc="90:100", ioprio=7,
           iolimit="5M", iopslimit=300)


def limits_of(**params):
    return lim.merge({}, lim.normalize_request(params))


# --------------------------------------------------------------------------- the mapping
def test_v2_mapping_of_every_parameter(v2, ct):
    settings = lim.settings_for(ct, limits_of(**ALL), DEVICES)
    lim.apply_settings(ct, settings)
    assert files(v2, ct, "cpu.weight", "cpu.max", "cpuset.cpus", "memory.max", "memory.swap.max", "pids.max",
                 "io.bfq.weight", "io.max") == {
        "cpu.weight": "200",
        "cpu.max": "150000 100000",
        "cpuset.cpus": "1",
        "memory.max": str(512 << 20),
        "memory.swap.max": str(128 << 20),
        "pids.max": "100",
        "io.bfq.weight": "default 640",
        "io.max": "7:3 rbps=5242880 wbps=5242880 riops=300 wiops=300",
    }
    # v2 is hierarchical: everything on ovz-101, nothing in payload (root's to change inside)
    assert all(p.endswith("ovz.slice/ovz-101/" + os.path.basename(p)) for p, _v in v2.writes
               if not os.path.basename(p).startswith("cgroup."))
    # the kernel holds it all now: no drift, a second apply writes nothing
    assert lim.drift(ct, settings) == []
    count = len(v2.writes)
    assert lim.apply_settings(ct, settings) == []
    assert len(v2.writes) == count


@pytest.mark.parametrize("units,weight", [(8, "1"), (10, "1"), (1000, "100"), (1500, "150"), (2000, "200"),
                                          (100000, "10000"), (500000, "10000")])
def test_v2_cpuunits_to_cpu_weight(units, weight):
    (setting,) = [s for s in lim.build_settings(limits_of(cpuunits=units), 2) if s.file == "cpu.weight"]
    assert setting.write == weight


@pytest.mark.parametrize("params,expected", [
    (dict(cpulimit=25), "25000 100000"),
    (dict(cpus=1), "100000 100000"),
    (dict(cpus=2, cpulimit=50), "50000 100000"),        # the lower of the two
    (dict(cpus=1, cpulimit=150), "100000 100000"),
    (dict(), "max 100000"),
])
def test_v2_cpulimit_and_cpus_to_cpu_max(params, expected):
    (setting,) = [s for s in lim.build_settings(limits_of(**params), 2) if s.file == "cpu.max"]
    assert setting.write == expected


def test_v2_ram_without_swap_means_no_swap_and_swap_alone_is_allowed(v2, ct):
    host = lim.HostInfo(cpus={0, 1}, cgroup_version=2)
    only_ram = limits_of(ram="64M")
    lim.validate_combination(only_ram, host)
    lim.apply_settings(ct, lim.settings_for(ct, only_ram, None))
    assert files(v2, ct, "memory.max", "memory.swap.max") == {"memory.max": str(64 << 20), "memory.swap.max": "0"}
    only_swap = limits_of(swap="1G")
    lim.validate_combination(only_swap, host)           # v2 has its own swap limit: no ram needed
    lim.apply_settings(ct, lim.settings_for(ct, only_swap, None))
    assert files(v2, ct, "memory.max", "memory.swap.max") == {"memory.max": "max", "memory.swap.max": str(1 << 30)}
    with pytest.raises(InvalidParameter, match="swap"):
        lim.validate_combination(only_swap, lim.HostInfo(cpus={0, 1}, cgroup_version=1))


def test_v2_back_to_defaults_clears_every_file(v2, ct):
    lim.apply_settings(ct, lim.settings_for(ct, limits_of(**ALL), DEVICES))
    lim.apply_settings(ct, lim.settings_for(ct, {}, DEVICES))
    assert files(v2, ct, "cpu.weight", "cpu.max", "cpuset.cpus", "memory.max", "memory.swap.max", "pids.max") == {
        "cpu.weight": "100", "cpu.max": "max 100000", "cpuset.cpus": "", "memory.max": "max",
        "memory.swap.max": "max", "pids.max": "max"}
    assert v2.writes_to("io.max")[-1][1] == "7:3 rbps=max wbps=max riops=max wiops=max"
    # ioprio unset: the BFQ weight is left to the kernel's default, not written
    assert [v for _p, v in v2.writes_to("io.bfq.weight")] == ["default 640"]


def test_v2_missing_files_fail_only_for_what_was_asked(v2, ct):
    os.unlink(os.path.join(ct.paths[UNIFIED], "io.bfq.weight"))     # BFQ not built
    os.unlink(os.path.join(ct.paths[UNIFIED], "memory.swap.max"))   # no swap accounting
    settings = lim.settings_for(ct, limits_of(ioprio=3, ram="64M"), DEVICES)
    lim.apply_settings(ct, settings)                                 # ioprio: stored, not enforced
    assert lim.not_enforced(limits_of(ioprio=3), ct, 2, DEVICES)["ioprio"].startswith("the kernel has no BFQ")
    with pytest.raises(KernelUnsupported) as err:
        lim.apply_settings(ct, lim.settings_for(ct, limits_of(ram="64M", swap="64M"), DEVICES))
    assert err.value.param == "swap"


def test_v2_ioprio_without_bfq_device_is_reported(v2, ct, monkeypatch):
    monkeypatch.setattr(lim, "scheduler", lambda devno: {"7:3": "none", "254:0": "mq-deadline"}[devno])
    reason = lim.not_enforced(limits_of(ioprio=2), ct, 2, DEVICES)["ioprio"]
    assert "loop3: none" in reason and "vda: mq-deadline" in reason
    monkeypatch.setattr(lim, "scheduler", lambda devno: "bfq")
    assert lim.not_enforced(limits_of(ioprio=2), ct, 2, DEVICES) == {}
    assert "iolimit" in lim.not_enforced(limits_of(iolimit="1M"), ct, 2, lim.Devices())


# --------------------------------------------------------------------------- the operation
@pytest.fixture
def running(v2, ct, tmp_path):
    """A ContainerManager whose container "101" runs (this test process stands in for its init)."""
    manager = ContainerManager(str(tmp_path / "data"), "auto", backend=ct.backend)
    config = ContainerConfig(name="101", layout="directory")
    os.makedirs(manager.layout.private("101"))
    os.makedirs(manager.layout.guest("101"))     # its /run/ovz, where the beancounter table goes
    manager.store.save(config)
    pid = os.getpid()
    runtime = Runtime(pid, process_starttime(pid), ct.to_state(), 2, 0.0)
    from ansible_collections.ovz.containers.plugins.module_utils._engine.base.files import atomic_write_json
    atomic_write_json(manager.state_path("101"), runtime.__dict__)
    assert manager.status("101") == "running"
    return manager


def test_v2_update_applies_live_persists_and_is_idempotent(v2, ct, running):
    change = limits_op.update(running, "101", dict(cpuunits=3000, ram="1G", numproc=50), dry_run=True)
    assert change.changed and not change.applied and running.load("101").limits == {}
    assert v2.writes_to("cpu.weight") == []                          # check mode wrote nothing
    change = limits_op.update(running, "101", dict(cpuunits=3000, ram="1G", numproc=50))
    assert change.applied and change.after == {"cpuunits": 3000, "ram": 1 << 30, "numproc": [50, 50]}
    assert running.load("101").limits == change.after
    with open(os.path.join(running.layout.guest("101"), "user_beancounters")) as handle:
        row = next(line.split() for line in handle if " numproc " in line)   # the table inside follows
    assert row[-3:-1] == ["50", "50"] and change.beancounters["numproc"]["limit"] == 50
    assert files(v2, ct, "cpu.weight", "memory.max", "pids.max") == {
        "cpu.weight": "300", "memory.max": str(1 << 30), "pids.max": "50"}
    again = limits_op.update(running, "101", dict(cpuunits=3000, ram="1G", numproc=50))
    assert not again.changed and not again.applied
    v2.set(os.path.join(ct.paths[UNIFIED], "pids.max"), "max")       # changed behind our back
    fixed = limits_op.update(running, "101", dict(numproc=50))
    assert fixed.changed and fixed.drift == ["pids.max"] and fixed.before == fixed.after
    assert files(v2, ct, "pids.max") == {"pids.max": "50"}


def test_v2_failed_write_rolls_back_and_stores_nothing(v2, ct, running, monkeypatch):
    limits_op.update(running, "101", dict(cpuunits=2000, ram="1G"))
    real = v2._kernel_write

    def refuse_memory(path, value):
        if path.endswith("memory.max"):
            raise OSError(errno.EBUSY, "Device or resource busy", path)
        return real(path, value)

    monkeypatch.setattr(v2, "_kernel_write", refuse_memory)
    with pytest.raises(OvzError) as err:
        limits_op.update(running, "101", dict(cpuunits=4000, ram="1M"))
    assert err.value.param == "ram"
    assert files(v2, ct, "cpu.weight") == {"cpu.weight": "200"}     # put back
    assert running.load("101").limits == {"cpuunits": 2000, "ram": 1 << 30}


# --------------------------------------------------------------------------- beancounters
def test_v2_beancounters_from_v2_counters(v2, ct):
    base = ct.paths[UNIFIED]
    for name, value in {"memory.current": str(40 << 20), "memory.peak": str(50 << 20),
                        "memory.events": "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1",
                        "memory.swap.current": str(8 << 20), "memory.swap.events": "high 0\nmax 0\nfail 2",
                        "memory.stat": "anon 1\nkernel 123456\nshmem 8192\nslab_reclaimable 4096",
                        "pids.current": "12", "pids.peak": "30", "pids.events": "max 3"}.items():
        v2.set(os.path.join(base, name), value)
    limits = limits_of(ram="64M", numproc="100", ubc={"numfile": "10:20"})
    table = bc.collect(ct, os.getpid(), limits)
    assert list(table) == list(bc.UBC_ORDER)
    page = lim.PAGE_SIZE
    assert table["physpages"] == {"held": (40 << 20) // page, "maxheld": (50 << 20) // page,
                                  "barrier": (64 << 20) // page, "limit": (64 << 20) // page, "failcnt": 7,
                                  "enforced": True, "unit": "pages", "mechanism": "memory.max"}
    assert table["swappages"]["held"] == (8 << 20) // page and table["swappages"]["failcnt"] == 2
    assert table["swappages"]["limit"] == 0 and table["swappages"]["enforced"]   # ram without swap: none
    assert (table["numproc"]["held"], table["numproc"]["maxheld"], table["numproc"]["failcnt"]) == (12, 30, 3)
    assert table["kmemsize"]["held"] == 123456 and table["kmemsize"]["enforced"] is False
    assert table["dcachesize"]["held"] == 4096
    assert table["tcpsndbuf"]["enforced"] is False and "v2" in table["tcpsndbuf"]["mechanism"]
    assert (table["numfile"]["barrier"], table["numfile"]["limit"], table["numfile"]["enforced"]) == (10, 20, False)
    text = bc.render(table, "101")
    assert text.splitlines()[2].split()[:3] == ["101:", "kmemsize", "123456"]
    assert len(text.splitlines()) == 2 + len(bc.UBC_ORDER)


def test_v2_numproc_failcnt_before_and_since_hierarchical_pids_events(v2, ct):
    """Before Linux 6.14 a refused fork counts in the forking task's cgroup (the payload), since
    then (pids.events.local exists) in the cgroup whose pids.max was hit and its ancestors."""
    base = ct.paths[UNIFIED]
    payload = os.path.join(base, "payload")
    os.makedirs(payload, exist_ok=True)
    v2.set(os.path.join(base, "pids.events"), "max 0")
    v2.set(os.path.join(payload, "pids.events"), "max 4")
    limits = limits_of(numproc="40")
    assert bc.collect(ct, os.getpid(), limits)["numproc"]["failcnt"] == 4
    v2.set(os.path.join(base, "pids.events"), "max 5")
    v2.set(os.path.join(base, "pids.events.local"), "max 5")
    assert bc.collect(ct, os.getpid(), limits)["numproc"]["failcnt"] == 5


# --------------------------------------------------------------------------- v1, for comparison
def test_v1_blk_throttle_is_flat_so_every_level_gets_it(tmp_path, monkeypatch):
    throttle = {"blkio.throttle.%s_%s_device" % (d, k): "" for d in ("read", "write") for k in ("bps", "iops")}
    monkeypatch.setitem(V1_FILES, "blkio", dict(V1_FILES["blkio"], **throttle))
    fake = FakeCgroupFS(tmp_path, HYBRID_MOUNTINFO, v2_controllers="").install(monkeypatch)
    fake.makedirs(fake.path("/sys/fs/cgroup/memory/process_api/abc"))
    backend = select_backend(mountinfo=fake.mountinfo, fs_root=fake.root,
                             own=parse_proc_cgroup(HYBRID_PROC_CGROUP), systemd=False)
    cgroups = ContainerCgroups(backend, backend.container_paths(backend.resolve_parent("auto"), "101"))
    cgroups.create()
    cgroups.create("payload")
    settings = lim.build_settings(limits_of(iolimit="5M"), 1, DEVICES, parent_cpus="0-1", memsw=False)
    lim.apply_settings(cgroups, settings)
    blkio = cgroups.paths["blkio"]
    assert sorted(p for p, _v in fake.writes_to("blkio.throttle.write_bps_device")) == sorted(
        fake.rel(os.path.join(d, "blkio.throttle.write_bps_device")) for d in (blkio, blkio + "/payload"))
    assert lim.drift(cgroups, settings) == []
    fake.set(blkio + "/payload/blkio.throttle.write_bps_device", "")          # lost below: drift
    assert [s.file for s in lim.drift(cgroups, settings)] == ["blkio.throttle.write_bps_device"]
    assert fake.read(cgroups.paths["cpu"] + "/cpu.shares") == "1024"


# --------------------------------------------------------------------------- parsing (both backends)
def test_request_normalization_and_defaults():
    got = lim.normalize_request(dict(cpuunits=1000, cpulimit="25%", cpus=0, cpumask="1,0,3-4", ram="1.5G",
                                     numproc="100", iolimit="unlimited",
                                     ubc={"privvmpages": "1000:2G", "kmemsize": "64M", "numfile": 512}))
    assert got == {"cpuunits": None, "cpulimit": 25, "cpus": None, "cpumask": "0-1,3-4", "ram": 3 << 29,
                   "numproc": [100, 100], "iolimit": None,
                   "ubc": {"privvmpages": [1000, (2 << 30) // lim.PAGE_SIZE], "kmemsize": [64 << 20, 64 << 20],
                           "numfile": [512, 512]}}
    merged = lim.merge({"ram": 1, "ubc": {"numfile": [1, 2], "numpty": [5, 5]}}, got)
    assert "cpuunits" not in merged and merged["ubc"]["numpty"] == [5, 5] and merged["ubc"]["numfile"] == [512, 512]
    assert lim.merge(merged, lim.normalize_request({"ubc": {"numpty": "unlimited"}}))["ubc"].get("numpty") is None
    assert lim.effective({})["cpuunits"] == 1000 and lim.effective({"ram": 5})["swap"] == 0


@pytest.mark.parametrize("params,param", [
    (dict(cpuunits=7), "cpuunits"), (dict(cpuunits="x"), "cpuunits"), (dict(ioprio=8), "ioprio"),
    (dict(ram="-1M"), "ram"), (dict(ram="512"), "ram"), (dict(cpumask="3-1"), "cpumask"),
    (dict(numproc="5:3"), "numproc"), (dict(ubc={"bogus": 1}), "ubc"), (dict(ubc={"numproc": 5}), "ubc"),
    (dict(ubc={"numfile": "x"}), "ubc"), (dict(ubc="numfile=5"), "ubc"), (dict(iopslimit=-3), "iopslimit"),
])
def test_request_errors_name_the_parameter(params, param):
    with pytest.raises(InvalidParameter) as err:
        lim.normalize_request(params)
    assert err.value.param == param and param in str(err.value)


def test_combination_checks_against_the_host():
    host = lim.HostInfo(cpus={0, 1}, cgroup_version=1, memsw=False)
    for limits, param in ((dict(cpumask="2"), "cpumask"), (dict(cpus=3), "cpus"), (dict(cpulimit=201), "cpulimit")):
        with pytest.raises(InvalidParameter) as err:
            lim.validate_combination(limits, host)
        assert err.value.param == param
    with pytest.raises(KernelUnsupported) as err:         # v1 without swap accounting
        lim.validate_combination(dict(ram=1 << 30, swap=1 << 30), host)
    assert err.value.param == "swap"
    assert lim.format_cpu_list(lim.parse_cpu_list("7,0-2,4,5")) == "0-2,4-5,7"
