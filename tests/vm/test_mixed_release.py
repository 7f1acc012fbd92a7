# -*- coding: utf-8 -*-
"""A mixed fleet: live migration between a Debian 12 node (CRIU 3.17, kernel 6.1) and a Debian 13 node
(CRIU 4.1, kernel 6.12), in both directions, with a busybox container running ``ckpt_workload``.

Opt-in: it needs ``OVZ_VM_RELEASE=bookworm,trixie`` (VM 1 bookworm, VM 2 trixie) and skips on any other
run, such as the default tier's two bookworm VMs.

- trixie -> bookworm: the target's CRIU is older than the source's, so the preflight refuses before
  anything is frozen or copied, naming ``target``; the container runs on as before (the same process,
  its counter going on) and the target has nothing of it.
- bookworm -> trixie: refused at preflight as well, naming ``target`` (the same major.minor of CRIU is
  wanted): run as it was first written (the container moving as in test_migration.py), CRIU 4.1 failed
  to restore 3.17's images in its mount restore, after the source had been frozen. The container, its
  process and an established TCP connection from VM 1's host carry on untouched on VM 1.
"""

from __future__ import annotations

import pytest

from support.vm_migration import PORT, STATUS, client_after, client_start, status, wait_status

CT_IP = "10.213.77.2"


@pytest.fixture(scope="module")
def mixed_pair(vm_run):
    releases = [vm.release for vm in vm_run.vms]
    if releases[:2] != ["bookworm", "trixie"]:
        pytest.skip("needs a bookworm VM 1 and a trixie VM 2 (OVZ_VM_RELEASE=bookworm,trixie); this run's VMs "
                    "are %s" % ", ".join(releases))
    return vm_run.vms[:2]


def migrate_to(peer: str) -> dict:
    return {"state": "migrated", "target": "root@{{ hostvars[%s].ovz_private_ip }}" % peer,
            "target_python": "/usr/bin/python3", "identity_file": "/root/.ssh/id_ed25519",
            "known_hosts": "/root/.ssh/known_hosts"}


@pytest.fixture(scope="module")
def newer_to_older(ansible, mixed_pair, vm_template, vm_programs, ct_names_module):
    """On VM 2 (trixie): a container that asks to move to VM 1 (bookworm)."""
    bookworm, trixie = mixed_pair
    name, = ct_names_module(1)
    private = "/var/lib/ovz/private/%s" % name
    ct = {"name": name}
    migrate = dict(migrate_to("bookworm"), name=name)
    on_bookworm = {"delegate_to": bookworm.name}
    tasks = [
        {"name": "criu", "ansible.builtin.raw": "criu --version | head -n 1"},
        dict(on_bookworm, name="criu on target", **{"ansible.builtin.raw": "criu --version | head -n 1"}),
        {"name": "start", "ovz.containers.ovz_container": dict(
            ct, template=vm_template, layout="directory", state="started", wait_boot=True)},
        {"name": "install workload",
         "ansible.builtin.raw": "cp %s %s/usr/bin/ckpt_workload && echo ok" % (vm_programs["ckpt_workload"], private)},
        {"name": "run workload", "ovz.containers.ovz_exec": dict(
            ct, command="/usr/bin/ckpt_workload %d %s </dev/null >/dev/null 2>&1 &" % (PORT, STATUS))},
        {"name": "status before", "register": "before", "ansible.builtin.raw": wait_status(private, "5")},
        {"name": "migrate check", "check_mode": True, "ovz.containers.ovz_checkpoint": migrate},
        {"name": "migrate", "ovz.containers.ovz_checkpoint": migrate},
        {"name": "status after", "ansible.builtin.raw": wait_status(
            private, "{{ before.stdout.split()[0].split('=')[1] | int + 5 }}")},
        {"name": "info", "ovz.containers.ovz_info": {"name": [name]}},
        dict(on_bookworm, name="on target",
             **{"ansible.builtin.raw": "ls -a /var/lib/ovz/conf /var/lib/ovz/private /var/lib/ovz/dump 2>&1; true"}),
        {"name": "destroy", "ovz.containers.ovz_container": dict(ct, state="absent")},
    ]
    return ansible.play(tasks, hosts=trixie.name, variables={"bookworm": bookworm.name}), trixie.name, name


@pytest.fixture(scope="module")
def older_to_newer(ansible, mixed_pair, vm_template, vm_programs, ct_names_module):
    """On VM 1 (bookworm): a routed container with a client connected from VM 1's host, asked to move to VM 2 (trixie)."""
    bookworm, trixie = mixed_pair
    name, = ct_names_module(1)
    private = "/var/lib/ovz/private/%s" % name
    ct = {"name": name}
    on_trixie = {"delegate_to": trixie.name}
    forwarding = "sysctl -qw net.ipv4.ip_forward=1 && echo ok"
    migrate = dict(migrate_to("trixie"), name=name)
    tasks = [
        {"name": "forwarding", "ansible.builtin.raw": forwarding},
        dict(on_trixie, name="forwarding target", **{"ansible.builtin.raw": forwarding}),
        {"name": "start", "ovz.containers.ovz_container": dict(
            ct, template=vm_template, layout="directory", state="started", wait_boot=True)},
        {"name": "address", "ovz.containers.ovz_network": dict(ct, ip_address=[CT_IP])},
        {"name": "install workload",
         "ansible.builtin.raw": "cp %s %s/usr/bin/ckpt_workload && echo ok" % (vm_programs["ckpt_workload"], private)},
        {"name": "run workload", "ovz.containers.ovz_exec": dict(
            ct, command="/usr/bin/ckpt_workload %d %s </dev/null >/dev/null 2>&1 &" % (PORT, STATUS))},
        {"name": "status before", "ansible.builtin.raw": wait_status(private, "5")},
        {"name": "client", "ansible.builtin.raw": client_start(CT_IP)},
        {"name": "status connected", "register": "connected", "ansible.builtin.raw": wait_status(private, "5")},
        {"name": "migrate check", "check_mode": True, "ovz.containers.ovz_checkpoint": migrate},
        {"name": "migrate", "ovz.containers.ovz_checkpoint": migrate},
        {"name": "status after", "ansible.builtin.raw": wait_status(
            private, "{{ connected.stdout.split()[0].split('=')[1] | int + 5 }}")},
        {"name": "client after", "ansible.builtin.raw": client_after(CT_IP)},
        {"name": "info source", "ovz.containers.ovz_info": {}},
        dict(on_trixie, name="on target",
             **{"ansible.builtin.raw": "ls -a /var/lib/ovz/conf /var/lib/ovz/private /var/lib/ovz/dump 2>&1; true"}),
        {"name": "destroy", "ovz.containers.ovz_container": dict(ct, state="absent")},
        {"name": "cleanup source", "ansible.builtin.raw":
            "rm -f /root/ovz-mig-client.py /root/ovz-mig-client.log /root/ovz-mig-client.stop;"
            " ls /var/lib/ovz/conf /var/lib/ovz/private; ip route | grep -c %s; true" % CT_IP},
    ]
    return ansible.play(tasks, hosts=bookworm.name, variables={"trixie": trixie.name}), bookworm.name, name


def test_trixie_to_bookworm_is_refused_at_preflight(newer_to_older):
    play, host, name = newer_to_older
    assert play.stdout(host, "criu").startswith("Version: 4.1"), play.stdout(host, "criu")
    assert play.stdout(host, "criu on target").startswith("Version: 3.17"), play.stdout(host, "criu on target")
    for task in ("migrate check", "migrate"):
        refused = play.failed(host, task)
        assert refused.get("param") == "target", refused
        assert "CRIU 3.17" in refused["msg"] and "older than the source's 4.1" in refused["msg"], refused["msg"]
    before = status(play.stdout(host, "status before"))
    after = status(play.stdout(host, "status after"))
    assert after["pid"] == before["pid"] and int(after["counter"]) > int(before["counter"]), (before, after)
    assert play.ok(host, "info")["containers"][0]["state"] == "running"
    assert name not in play.stdout(host, "on target")
    assert play.ok(host, "destroy")["changed"] is True


def test_bookworm_to_trixie_is_refused_at_preflight(older_to_newer):
    """CRIU 4.1 failed to restore what 3.17 dumped (its mount restore: ``mnt-v2: Can't stat mountpoint
    .../devices/virtual/block``) after the source had been frozen; the preflight now refuses first."""
    play, host, name = older_to_newer
    play.ok(host, "forwarding")
    play.ok(host, "forwarding target")
    for task in ("migrate check", "migrate"):
        refused = play.failed(host, task)
        assert refused.get("param") == "target", refused
        assert "CRIU 4.1" in refused["msg"] and "newer than the source's 3.17" in refused["msg"], refused["msg"]
    before = status(play.stdout(host, "status connected"))
    after = status(play.stdout(host, "status after"))
    assert after["pid"] == before["pid"] and int(after["counter"]) > int(before["counter"]), (before, after)
    assert after["accepted"] == before["accepted"] == "1", (before, after)
    first = play.stdout(host, "client")
    assert first.startswith("connected local=") and "n=2" in first, first
    local = first.split("\n")[0].split("=", 1)[1]
    last, route = play.stdout(host, "client after").split("\n")
    assert last.startswith("final-ok local=%s " % local), last        # the connection was never broken
    assert "dev eth1" not in route, route                             # the container still runs here
    assert [c["state"] for c in play.ok(host, "info source")["containers"] if c["name"] == name] == ["running"]
    assert name not in play.stdout(host, "on target")
    assert play.ok(host, "destroy")["changed"] is True
    left = play.stdout(host, "cleanup source")
    assert name not in left and left.split("\n")[-1] == "0", left
