# -*- coding: utf-8 -*-
"""A Debian container with systemd as its init on two VMs of one Debian release, the release of the
run's VMs: ``debian-12`` on the default tier's two bookworm VMs (systemd 252, CRIU 3.17, kernel 6.1),
``debian-13`` on two trixie VMs (``OVZ_VM_RELEASE=trixie``: systemd 257, CRIU 4.1, kernel 6.12).
systemd boots to ``running`` on cgroup2, the container is checkpointed and restored with the release's
own CRIU, and live-migrated VM 1 -> VM 2. Here on the build machine the same Debian checkpoint is a named
skip (root lacks CAP_SYS_RESOURCE: tests/integration/test_migration.py::test_live_migration_debian).

The template is built on the controller (``scripts/build-debian-template --release R``; a cache hit is
instant) and copied to both VMs. A run of mixed releases skips (tests/vm/test_mixed_release.py).

One batched play on VM 1 (VM 2's side through ``delegate_to``). A container of the default kind
(unprivileged: its own user namespace and id block; the VMs' root has CAP_SYS_RESOURCE, so CRIU dumps it
as host root, cgroups included) boots with ``wait_boot``; a transient unit started inside with
``systemd-run`` counts in memory and writes the count to ``/root/ovz-counter``. That unit exists only
in the memory of this boot's systemd: after the restore and after the migration the same unit (same
InvocationID) with the same main PID is still there, the counter carries on from where it was
dumped, and systemd still reports ``running`` with no failed unit: the same processes, not a new boot.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from vmlib import REPO, copy_to_vm

# What each release brings: its template's number, its systemd, the CRIU of its VMs.
RELEASES = {"bookworm": {"number": "12", "systemd": "252", "criu": "Version: 3.17"},
            "trixie": {"number": "13", "systemd": "257", "criu": "Version: 4.1"}}

BUILD = os.path.join(REPO, "scripts", "build-debian-template")
COUNTER = "/root/ovz-counter"
# A counter kept in the shell's memory; the file only shows it (written whole, then renamed).
PROBE_UNIT = ("systemd-run --unit=ovz-probe /bin/sh -c 'n=0; while :; do n=$((n+1)); echo $n > %s.new;"
              " mv %s.new %s; sleep 0.2; done' && echo started" % (COUNTER, COUNTER, COUNTER))


def probe(above) -> str:
    """A command inside: wait until the counter is above ``above``, then print what must not change."""
    return ("for i in $(seq 600); do n=$(cat %s 2>/dev/null); [ -n \"$n\" ] && [ \"$n\" -gt %s ] && break;"
            " sleep 0.2; done; echo counter=$(cat %s); echo system=$(systemctl is-system-running);"
            " echo failed=$(systemctl list-units --all --no-legend --plain --state=failed,auto-restart"
            " | cut -d' ' -f1 | paste -sd, -); echo probe=$(systemctl show -P MainPID ovz-probe.service);"
            " echo invocation=$(systemctl show -P InvocationID ovz-probe.service);"
            " echo journald=$(pidof systemd-journald); echo pid1=$(cat /proc/1/comm)" % (COUNTER, above, COUNTER))


def fields(text: str) -> dict:
    return dict(line.split("=", 1) for line in text.split("\n") if "=" in line)


@pytest.fixture(scope="module")
def release_pair(vm_run):
    releases = [vm.release for vm in vm_run.vms]
    if len(releases) < 2 or len(set(releases)) != 1 or releases[0] not in RELEASES:
        pytest.skip("needs two VMs of one Debian release; this run's VMs are %s (mixed releases: "
                    "tests/vm/test_mixed_release.py)" % ", ".join(releases))
    return vm_run.vms[:2]


@pytest.fixture(scope="module")
def debian_template(release_pair):
    """The release's Debian template, built here (or found in the build cache), in every VM's templates."""
    release = release_pair[0].release
    out = subprocess.run([BUILD, "--release", release], stdout=subprocess.PIPE, universal_newlines=True,
                         check=True, timeout=3600).stdout
    tarball = out.strip().splitlines()[-1]
    template = "debian-%s" % RELEASES[release]["number"]
    for vm in release_pair:
        vm.sh("mkdir -p /var/lib/ovz/templates")
        copy_to_vm(vm, tarball, "/var/lib/ovz/templates/%s.tar.zst" % template)
    return template


@pytest.fixture(scope="module")
def debian(ansible, release_pair, debian_template, ct_names_module):
    vm1, vm2 = release_pair
    name, = ct_names_module(1)
    private = "/var/lib/ovz/private/%s" % name
    dumpfile = "/var/lib/ovz/%s.ckpt.tar" % name
    ct = {"name": name}
    on_vm2 = {"delegate_to": vm2.name}
    migrate = {"name": name, "state": "migrated", "target": "root@{{ hostvars[vm2].ovz_private_ip }}",
               "target_python": "/usr/bin/python3", "identity_file": "/root/.ssh/id_ed25519",
               "known_hosts": "/root/.ssh/known_hosts"}
    tasks = [
        {"name": "criu", "ansible.builtin.raw": "criu --version | head -n 1"},
        {"name": "start", "ovz.containers.ovz_container": dict(
            ct, template=debian_template, layout="directory", state="started", wait_boot=True, timeout=900)},
        {"name": "system state", "ovz.containers.ovz_exec": dict(ct, command="systemctl is-system-running || true")},
        {"name": "inside", "ovz.containers.ovz_exec": dict(ct, command=(
            "systemctl --version | head -n 1; stat -fc %T /sys/fs/cgroup; . /etc/os-release; echo $VERSION_ID;"
            " readlink /proc/1/exe; systemctl list-units --all --no-legend --plain --state=failed,auto-restart"))},
        {"name": "probe unit", "ovz.containers.ovz_exec": dict(ct, command=PROBE_UNIT)},
        {"name": "before", "register": "before", "ovz.containers.ovz_exec": dict(ct, command=probe(5))},
        {"name": "checkpoint", "ovz.containers.ovz_checkpoint": dict(ct, state="checkpointed", dumpfile=dumpfile)},
        {"name": "dumped", "register": "dumped",
         "ansible.builtin.raw": "cat %s%s; sleep 3; cat %s%s" % (private, COUNTER, private, COUNTER)},
        {"name": "info stopped", "ovz.containers.ovz_info": {"name": [name]}},
        {"name": "restore", "register": "restore", "ovz.containers.ovz_checkpoint": dict(
            ct, state="restored", dumpfile=dumpfile)},
        {"name": "restored", "register": "restored", "ovz.containers.ovz_exec": dict(
            ct, command=probe("{{ dumped.stdout.split()[0] | int + 2 }}"))},
        {"name": "remove dump", "ansible.builtin.raw": "rm -f %s; echo ok" % dumpfile},
        # Only a running container: a stopped one would be migrated offline, which proves nothing here.
        {"name": "migrate", "when": "restore is succeeded", "ovz.containers.ovz_checkpoint": migrate},
        dict(on_vm2, name="on vm2", **{"ovz.containers.ovz_exec": dict(
            ct, command=probe("{{ (restored.stdout_lines | default(['counter=0']))[0].split('=')[1] | int + 2 }}"))}),
        {"name": "info vm1", "ovz.containers.ovz_info": {}},
        dict(on_vm2, name="info vm2", **{"ovz.containers.ovz_info": {"name": [name]}}),
        dict(on_vm2, name="destroy on vm2", **{"ovz.containers.ovz_container": dict(ct, state="absent")}),
        {"name": "left on vm1", "ansible.builtin.raw": "ls /var/lib/ovz/conf /var/lib/ovz/private; true"},
    ]
    began = time.monotonic()
    play = ansible.play(tasks, hosts=vm1.name, variables={"vm2": vm2.name})
    return play, vm1.name, name, time.monotonic() - began, RELEASES[vm1.release]


def assert_same_processes(before: dict, after: dict) -> None:
    assert after["pid1"] == "systemd", after
    for key in ("probe", "invocation", "journald"):
        assert after[key] and after[key] == before[key], (key, before, after)
    assert after["system"] == "running" and after["failed"] == "", after


def test_systemd_boots_to_running_on_cgroup_v2(debian):
    play, host, _name, _seconds, release = debian
    assert play.stdout(host, "criu").startswith(release["criu"]), play.stdout(host, "criu")
    play.ok(host, "start")
    assert play.stdout(host, "system state") == "running"
    lines = play.stdout(host, "inside").split("\n")
    assert len(lines) == 4, lines            # a fifth line would be a failed unit
    version, fstype, version_id, init = lines
    assert version.split()[:2] == ["systemd", release["systemd"]], version
    assert (fstype, version_id) == ("cgroup2fs", release["number"])
    assert init in ("/usr/lib/systemd/systemd", "/lib/systemd/systemd"), init
    before = fields(play.stdout(host, "before"))
    assert before["system"] == "running" and before["failed"] == "" and before["pid1"] == "systemd", before
    assert int(before["probe"]) > 1 and int(before["counter"]) > 5, before


def test_checkpoint_and_restore_keep_the_same_processes(debian):
    play, host, _name, _seconds, _release = debian
    done = play.ok(host, "checkpoint")
    assert done["changed"] is True and done["state"] == "stopped" and done["size"] > 0, done
    first, second = play.stdout(host, "dumped").split("\n")
    assert first == second, (first, second)            # stopped: the counter stands still
    assert play.ok(host, "info stopped")["containers"][0]["state"] == "stopped"
    restored = play.ok(host, "restore")
    assert restored["changed"] is True and restored["state"] == "running", restored
    before, after = fields(play.stdout(host, "before")), fields(play.stdout(host, "restored"))
    assert_same_processes(before, after)
    assert int(after["counter"]) > int(first) + 2, (first, after)     # carried on from the dump, not from 1
    print("checkpoint %s, restore %s" % (done.get("timings"), restored.get("timings")))


def test_live_migration_to_vm2_keeps_the_same_processes(debian):
    play, host, name, _seconds, _release = debian
    moved = play.get(host, "migrate")
    assert moved["_status"] == "ok", "migrate: %s" % moved
    assert moved["changed"] is True and moved["frozen_ms"] > 0, moved
    print("migration timings: %s, frozen %s ms" % (moved["timings"], moved["frozen_ms"]))
    before, restored = fields(play.stdout(host, "before")), fields(play.stdout(host, "restored"))
    after = fields(play.stdout(host, "on vm2"))
    assert_same_processes(before, after)
    assert int(after["counter"]) > int(restored["counter"]) + 2, (restored, after)
    assert name not in [c["name"] for c in play.ok(host, "info vm1")["containers"]]
    assert play.ok(host, "info vm2")["containers"][0]["state"] == "running"


def test_cleanup(debian):
    play, host, name, seconds, _release = debian
    assert play.ok(host, "destroy on vm2")["changed"] is True
    assert name not in play.stdout(host, "left on vm1")
    play.ok(host, "remove dump")
    print("Debian play: %.1f s" % seconds)
