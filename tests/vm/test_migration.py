# -*- coding: utf-8 -*-
"""Live migration VM 1 -> VM 2 over their private link, an established TCP connection surviving (issue 3).

One batched play on VM 1 (VM 2's side through ``delegate_to``). A routed busybox container on
VM 1 with an address of the private link's prefix (10.213.77.1: each host answers ARP for it on
eth1 while it runs there) runs ``ckpt_workload``, whose echo service listens on port 7000. A
client on VM 1's host side, bound to VM 1's private address, connects and exchanges a line every
half second, never reconnecting. ``ovz_checkpoint`` with ``state: migrated`` moves the container
to VM 2 (rsync and the engine over SSH on the private link: the platform gives both VMs the same
root key and a known_hosts entry for 10.213.*, which ``scripts/vm.py`` writes into the image).
Afterwards the container runs on VM 2 only, its workload is the same process (same PID inside,
the counter carried on, still one accepted connection) and the client's connection, now crossing
the link, goes on exchanging data on the same socket.
"""

from __future__ import annotations

import pytest

from support.vm_migration import (
    CLIENT, CLIENT_LOG, CLIENT_STOP, CT_IP, PORT, STATUS, client_after, client_start, status, wait_status)


# TCP reset counters of a host (diagnostics: who reset the client's connection, if it is reset).
RESETS = "nstat -asz 2>/dev/null | grep -E 'OutRsts|EstabResets|TCPAbort' | tr -s ' ' | tr '\\n' ';'; true"
RESETS_INSIDE = "grep -h -A1 -e '^Tcp:' -e '^TcpExt:' /proc/net/snmp /proc/net/netstat; true"


@pytest.fixture(scope="module")
def migration(ansible, vm1, vm2, vm_template, vm_programs, ct_names_module):
    name, = ct_names_module(1)
    private = "/var/lib/ovz/private/%s" % name
    ct = {"name": name}
    on_vm2 = {"delegate_to": vm2.name}
    forwarding = "sysctl -qw net.ipv4.ip_forward=1 && echo ok"
    cleanup = ("rm -f %s %s %s; ls /var/lib/ovz/conf /var/lib/ovz/private; ip route | grep -c %s; true"
               % (CLIENT, CLIENT_LOG, CLIENT_STOP, CT_IP))
    migrate = {"name": name, "state": "migrated", "target": "root@{{ hostvars[vm2].ovz_private_ip }}",
               "target_python": "/usr/bin/python3", "identity_file": "/root/.ssh/id_ed25519",
               "known_hosts": "/root/.ssh/known_hosts", "pre_dump_iterations": 1, "lazy": False}
    tasks = [
        {"name": "forwarding", "ansible.builtin.raw": forwarding},
        dict(on_vm2, name="forwarding vm2", **{"ansible.builtin.raw": forwarding}),
        {"name": "start", "ovz.containers.ovz_container": dict(
            ct, template=vm_template, layout="directory", state="started", wait_boot=True)},
        {"name": "address", "ovz.containers.ovz_network": dict(ct, ip_address=[CT_IP])},
        {"name": "install workload",
         "ansible.builtin.raw": "cp %s %s/usr/bin/ckpt_workload && echo ok" % (vm_programs["ckpt_workload"], private)},
        {"name": "run workload", "ovz.containers.ovz_exec": dict(
            ct, command="/usr/bin/ckpt_workload %d %s </dev/null >/dev/null 2>&1 &" % (PORT, STATUS))},
        {"name": "status before", "ansible.builtin.raw": wait_status(private, "5")},
        {"name": "client", "ansible.builtin.raw": client_start()},
        {"name": "status connected", "register": "connected", "ansible.builtin.raw": wait_status(private, "5")},
        {"name": "resets before vm1", "ignore_errors": True, "ansible.builtin.raw": RESETS},
        dict(on_vm2, name="resets before vm2", ignore_errors=True, **{"ansible.builtin.raw": RESETS}),
        {"name": "resets before inside", "ignore_errors": True, "ovz.containers.ovz_exec": dict(
            ct, command=RESETS_INSIDE)},
        {"name": "migrate check", "check_mode": True, "ovz.containers.ovz_checkpoint": migrate},
        {"name": "migrate", "ovz.containers.ovz_checkpoint": migrate},
        dict(on_vm2, name="status on vm2", **{"ansible.builtin.raw": wait_status(
            private, "{{ connected.stdout.split()[0].split('=')[1] | int }}")}),
        {"name": "client after", "ansible.builtin.raw": client_after()},
        {"name": "resets after vm1", "ignore_errors": True, "ansible.builtin.raw": RESETS},
        dict(on_vm2, name="resets after vm2", ignore_errors=True, **{"ansible.builtin.raw": RESETS}),
        dict(on_vm2, name="resets after inside", ignore_errors=True, **{"ovz.containers.ovz_exec": dict(
            ct, command=RESETS_INSIDE)}),
        {"name": "info vm1", "ovz.containers.ovz_info": {}},
        dict(on_vm2, name="info vm2", **{"ovz.containers.ovz_info": {"name": [name]}}),
        {"name": "migrate again", "ovz.containers.ovz_checkpoint": migrate},
        dict(on_vm2, name="destroy on vm2", **{"ovz.containers.ovz_container": dict(ct, state="absent")}),
        {"name": "cleanup vm1", "ansible.builtin.raw": cleanup},
    ]
    return ansible.play(tasks, hosts=vm1.name, variables={"vm2": vm2.name}), vm1.name, name


def test_live_migration_moves_the_running_container(migration):
    play, host, name = migration
    play.ok(host, "forwarding")
    play.ok(host, "forwarding vm2")
    checked = play.ok(host, "migrate check")
    assert checked["changed"] is True and checked["migration"]["target_info"]["criu_version"], checked
    moved = play.ok(host, "migrate")
    assert moved["changed"] is True and moved["frozen_ms"] > 0, moved
    # Pre-copy: Debian's kernel tracks dirty memory (soft-dirty), so the pre-dump asked for is made.
    assert moved["migration"]["pre_dump_iterations"] == 1 and not moved.get("warnings"), moved
    print("migration timings: %s, frozen %s ms" % (moved["timings"], moved["frozen_ms"]))
    assert name not in [c["name"] for c in play.ok(host, "info vm1")["containers"]]
    on_vm2 = play.ok(host, "info vm2")["containers"][0]
    assert on_vm2["state"] == "running", on_vm2
    assert play.ok(host, "migrate again")["changed"] is False


def test_the_workload_is_the_same_process_on_vm2(migration):
    play, host, _name = migration
    before = status(play.stdout(host, "status connected"))
    after = status(play.stdout(host, "status on vm2"))
    assert after["pid"] == before["pid"], (before, after)
    assert int(after["counter"]) > int(before["counter"]), (before, after)
    assert after["accepted"] == before["accepted"] == "1", (before, after)     # no new connection was made


def test_established_tcp_connection_survives(migration):
    play, host, _name = migration
    first = play.stdout(host, "client")
    assert first.startswith("connected local=") and "n=2" in first, first
    local = first.split("\n")[0].split("=", 1)[1]
    last, route = play.stdout(host, "client after").split("\n")
    resets = "; ".join("%s: %s" % (task, (play.get(host, task).get("stdout") or "").strip()) for task in (
        "resets before vm1", "resets after vm1", "resets before vm2", "resets after vm2", "resets before inside",
        "resets after inside"))
    print("TCP resets: %s" % resets)
    assert last.startswith("final-ok local=%s " % local), (last, resets)  # the same socket, never reconnected
    summary = dict(item.split("=", 1) for item in last.split()[1:])
    assert int(summary["n"]) >= 6, summary
    assert "dev eth1" in route, route        # VM 1 now reaches the container over the private link


def test_cleanup(migration):
    play, host, name = migration
    assert play.ok(host, "destroy on vm2")["changed"] is True
    left = play.stdout(host, "cleanup vm1")
    assert name not in left and left.split("\n")[-1] == "0", left
