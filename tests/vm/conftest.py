# -*- coding: utf-8 -*-
"""The VM tier: the collection on Debian VMs, driven over SSH through Ansible.

What these VMs have and this build machine lacks: Debian's stock kernel with pure cgroup v2
and systemd as PID 1 (so ``cgroup_parent: auto`` is ``/ovz.slice``), Debian's CRIU, disk
quota (XFS on /var/lib/ovz, mounted usrquota,grpquota,prjquota), real reboots, and a second
host on a private link (10.213.0.0/16, fd00:213::/64). The VMs are Debian 12 (bookworm:
kernel 6.1, CRIU 3.17) unless ``OVZ_VM_RELEASE`` says ``trixie`` (Debian 13: kernel 6.12,
CRIU 4.1) or ``bookworm,trixie`` (one of each); ``Vm.release`` tells a test which it has.

``scripts/test`` boots the VMs once (``scripts/vm.py up 2``) and names the run in
``OVZ_VM_ID``; ``pytest tests/vm`` alone boots its own run (``OVZ_VM_RELEASE`` is passed on
to ``scripts/vm.py``) and takes it down at the end.

Fixtures (later issues add their test files beside the ones here and reuse these):

- ``vm_run``: the run (its inventory and ssh_config); ``vms``, ``vm1``, ``vm2``: one ``Vm`` each,
  with ``sh()`` (plain SSH, to observe the host side quickly), ``private_ip``/``private_ip6``
  (the private link: migration goes there) and ``reboot()`` (``scripts/vm.py reboot``; tests
  that reboot are marked ``vm_reboot`` and run after all others: onboot).
- ``collection``: the collection built with ``ansible-galaxy collection build`` and installed
  for the controller once; modules reach the VMs the way users' do, as AnsiballZ payloads
  run by /usr/bin/python3.
- ``ansible``: runs one batched play against the VMs and returns every task's result.
- ``vm_template``: the busybox template in every VM's /var/lib/ovz/templates.
- ``ct_names`` (per test) and ``ct_names_module`` (per file, for a module-scoped batched play):
  ``ct_names(n)`` gives fresh names; whatever was created under them is destroyed on every VM
  afterwards (one play).
- ``vm_workdir``: scratch space on the controller inside the run dir (removed by ``down``).

- ``vm_programs``: static helper programs (``ovz_hog``, ``ckpt_workload``) in every VM's /root.

The files: test_platform.py (the VMs themselves), test_container_v2.py and test_engine_v2.py
(lifecycle on cgroup v2 with systemd), test_limits_v2.py (ram/OOM/failcnt, cpuunits, cpulimit,
numproc, ioprio, all live), test_quota.py (project quota on ``directory``, second-level quota in
``image``), test_checkpoint_v2.py (criu 3.17 dump/restore), test_migration.py (vm1 -> vm2 over
the private link, an established TCP connection survives), test_onboot.py (``vm_reboot``).
test_debian_systemd.py: a Debian container of the VMs' own release (debian-12 on bookworm, debian-13
with ``OVZ_VM_RELEASE=trixie``) boots systemd, is checkpointed, restored and live-migrated.
test_mixed_release.py skips unless the run's VMs have the releases it needs (``VmRun.releases``,
``Vm.release``): ``OVZ_VM_RELEASE=bookworm,trixie``, migration between CRIU 3.17 and 4.1 in both
directions.
"""

from __future__ import annotations

import glob
import os
import subprocess

import pytest

from ansible_collections.ovz.containers.plugins.module_utils._engine.node.templates import build_busybox_template
from vmlib import BIN, REPO, VM_PY, VM_PYTHON, Ansible, VmRun, copy_to_vm, destroy_everywhere, fresh_names

# Opt-in files, by the variable that brings them in (README, "VM tier"): the roles' Molecule
# scenarios on these VMs, which take more than is left of the tier's 25-minute budget.
VM_OPT_IN = {"test_molecule_vm.py": "OVZ_VM_MOLECULE"}
collect_ignore = [name for name, variable in VM_OPT_IN.items() if os.environ.get(variable) != "1"]


_CONFIG = []


def pytest_configure(config):
    config.addinivalue_line("markers", "vm_reboot: reboots a VM; runs after every other VM test")
    _CONFIG.append(config)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: 1 if item.get_closest_marker("vm_reboot") else 0)


_TIMINGS = []


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report):
    """A failure is written out as it happens, not only in the summary: a tier stopped half-way (its
    time budget, an interrupt) still leaves the reason of each failure so far in its log."""
    reporter = _CONFIG[0].pluginmanager.get_plugin("terminalreporter") if _CONFIG else None
    if report.failed and reporter is not None:
        reporter.write_line("")
        reporter.write_line("FAILED %s (%s):" % (report.nodeid, report.when))
        for line in report.longreprtext[-6000:].splitlines():
            reporter.write_line(line)


def pytest_terminal_summary(terminalreporter):
    """The time each batched play took: the budget of the tier is watched here."""
    for runner in _TIMINGS:
        terminalreporter.section("VM tier: plays")
        for line in runner.timings:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def vm_run():
    run_id = os.environ.get("OVZ_VM_ID")
    own = not run_id
    if own:
        run_id = "pytest%d" % os.getpid()
        subprocess.run([VM_PYTHON, VM_PY, "up", "2", "--id", run_id, "--owner", str(os.getpid())],
                       check=True, timeout=1800)
    try:
        yield VmRun(run_id)
    finally:
        if own:
            subprocess.run([VM_PYTHON, VM_PY, "down", "--id", run_id], check=False, timeout=600)


@pytest.fixture(scope="session")
def vms(vm_run):
    return vm_run.vms


@pytest.fixture(scope="session")
def vm1(vms):
    return vms[0]


@pytest.fixture(scope="session")
def vm2(vms):
    if len(vms) < 2:
        pytest.skip("needs two VMs")
    return vms[1]


@pytest.fixture(scope="session")
def vm_workdir(vm_run):
    """Scratch space of the tier on the controller, inside the run dir (``scripts/vm down`` removes it)."""
    path = os.path.join(vm_run.dir, "tier")
    os.makedirs(path, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def collection(vm_workdir):
    """The collection as users install it: ansible-galaxy build, then install; returns the collections path."""
    build_dir = os.path.join(vm_workdir, "galaxy-build")
    path = os.path.join(vm_workdir, "collections")
    subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", REPO, "--output-path", build_dir,
                    "--force"], check=True, stdout=subprocess.PIPE, timeout=300)
    tarball = glob.glob(os.path.join(build_dir, "ovz-containers-*.tar.gz"))
    assert len(tarball) == 1, tarball
    subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", tarball[0], "-p", path, "--force"],
                   check=True, stdout=subprocess.PIPE, timeout=300)
    assert os.path.isfile(os.path.join(path, "ansible_collections", "ovz", "containers", "plugins", "modules",
                                       "ovz_container.py"))
    return path


@pytest.fixture(scope="session")
def ansible(vm_run, collection, vm_workdir):
    runner = Ansible(vm_run, collection, os.path.join(vm_workdir, "plays"))
    _TIMINGS.append(runner)
    return runner


@pytest.fixture(scope="session")
def vm_template(vms, vm_workdir):
    """The busybox template (built here, offline) in /var/lib/ovz/templates on every VM.

    Copied with scp: it is setup, not under test, and Ansible's copy costs half a minute here.
    """
    tarball = build_busybox_template(os.path.join(vm_workdir, "templates"))
    for vm in vms:
        vm.sh("mkdir -p /var/lib/ovz/templates")
        copy_to_vm(vm, tarball, "/var/lib/ovz/templates/busybox.tar.gz")
    return "busybox"


# Static helper programs, built on the controller and copied to /root/ on every VM: a test copies
# them into a container's root (busybox containers have no compiler and no libc to link against).
STATIC_PROGRAMS = {
    "ovz_hog": os.path.join(os.path.dirname(os.path.abspath(__file__)), "ovz_hog.c"),
    "ckpt_workload": os.path.join(REPO, "tests", "integration", "ckpt_workload.c"),
    "seccomp_probe": os.path.join(REPO, "tests", "security", "seccomp_probe.c"),
}


@pytest.fixture(scope="session")
def vm_programs(vms, vm_workdir):
    """``{name: path on every VM}`` of the static programs (``ovz_hog``: memory/fork/CPU hogs;
    ``ckpt_workload``: the checkpoint tests' counter with its TCP echo service)."""
    out = {}
    for name, source in STATIC_PROGRAMS.items():
        binary = os.path.join(vm_workdir, name)
        if not os.path.exists(binary):
            subprocess.run(["gcc", "-static", "-O1", "-Wall", "-o", binary, source], check=True, timeout=300)
        out[name] = "/root/" + name
        for vm in vms:
            copy_to_vm(vm, binary, out[name])
    return out


@pytest.fixture
def ct_names(ansible):
    """``ct_names(n)`` -> n fresh container names; destroyed on every VM after the test."""
    made = []

    def factory(count: int = 1) -> list:
        names = fresh_names(count)
        made.extend(names)
        return names

    yield factory
    destroy_everywhere(ansible, made)


@pytest.fixture(scope="module")
def ct_names_module(ansible):
    """Like ``ct_names``, for the module-scoped batched plays: ``ct_names_module(n)``."""
    made = []

    def factory(count: int = 1) -> list:
        names = fresh_names(count)
        made.extend(names)
        return names

    yield factory
    destroy_everywhere(ansible, made)
