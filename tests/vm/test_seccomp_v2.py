# -*- coding: utf-8 -*-
"""The seccomp filter and the keyrings on the VMs' stock Debian kernel, one batched play on VM 1.

A privileged and an unprivileged busybox container (the default), each holding the static probe of
``tests/security/seccomp_probe.c``: every call of the filter answers EPERM inside, call by call; a
container with ``seccomp_allow: [keyctl]`` makes that call; host root's key stays unread and its key
quota untouched (the local suite, ``tests/security/test_seccomp.py``, shows the same on this host's
kernel).
"""

from __future__ import annotations

import errno
import json

import pytest

PROBE = "/usr/bin/ovz-seccomp-probe"
PROBED = ("init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "open_by_handle_at",
          "add_key", "request_key", "keyctl", "bpf", "perf_event_open", "userfaultfd", "iopl", "ioperm", "swapon",
          "swapoff", "settimeofday", "clock_settime", "clock_adjtime", "syslog", "acct", "uselib", "lookup_dcookie")
SECRET = "ovzvmsecret"


@pytest.fixture(scope="module")
def run(ansible, vm1, vm_template, vm_programs, ct_names_module):
    priv, unpriv, allowed = ct_names_module(3)
    made = ((priv, {"unprivileged": False}), (unpriv, {}), (allowed, {"seccomp_allow": ["keyctl"]}))
    tasks = []
    for name, extra in made:
        tasks.append({"name": "start %s" % name, "ovz.containers.ovz_container": dict(
            name=name, template=vm_template, state="started", wait_boot=True, **extra)})
    tasks += [
        {"name": "install probe", "ansible.builtin.raw":
            "for c in %s %s %s; do cp %s /var/lib/ovz/root/$c%s; done; echo ok"
            % (priv, unpriv, allowed, vm_programs["seccomp_probe"], PROBE)},
        {"name": "host key", "ansible.builtin.raw":
            "python3 -c 'import ctypes; l = ctypes.CDLL(None); "
            "print(l.syscall(248, b\"user\", b\"%s\", b\"secret\", 6, -4))'" % SECRET},
        {"name": "key users before", "ansible.builtin.raw": "awk '$1==\"0:\"{print $4}' /proc/key-users"},
    ]
    for name, _extra in made:
        tasks += [
            {"name": "probe %s" % name, "ovz.containers.ovz_exec": {
                "name": name, "command": "%s call %s getpid" % (PROBE, " ".join(PROBED))}},
            {"name": "read key %s" % name, "ovz.containers.ovz_exec": {
                "name": name, "command": "%s read_key %s" % (PROBE, SECRET)}},
            {"name": "fill keys %s" % name, "ovz.containers.ovz_exec": {
                "name": name, "command": "%s fill_keys 5000" % PROBE}},
            {"name": "filter of %s" % name, "ovz.containers.ovz_exec": {
                "name": name, "command": "grep Seccomp: /proc/1/status /proc/self/status"}},
        ]
    tasks += [
        {"name": "key users after", "ansible.builtin.raw": "awk '$1==\"0:\"{print $4}' /proc/key-users"},
        {"name": "drop host key", "ansible.builtin.raw":
            "python3 -c 'import ctypes; l = ctypes.CDLL(None); "
            "k = l.syscall(250, 10, -4, b\"user\", b\"%s\", 0); print(l.syscall(250, 21, k))'" % SECRET},
    ]
    for name, _extra in made:
        tasks.append({"name": "destroy %s" % name, "ovz.containers.ovz_container": {"name": name, "state": "absent"}})
    return ansible.play(tasks, hosts=vm1.name), vm1.name, priv, unpriv, allowed


def _calls(result):
    return {line.split()[0]: int(line.split()[1]) for line in result["stdout"].splitlines()}


def test_each_denied_call_answers_eperm_in_both_kinds(run):
    play, vm, priv, unpriv, _allowed = run
    for name in (priv, unpriv):
        results = _calls(play.ok(vm, "probe %s" % name))
        assert {call: results[call] for call in PROBED} == {call: errno.EPERM for call in PROBED}, name
        assert results["getpid"] == 0
        status = play.ok(vm, "filter of %s" % name)["stdout"]
        assert status.count("Seccomp:\t2") == 2, status    # its init and the command


def test_a_call_allowed_by_seccomp_allow_works(run):
    play, vm, _priv, _unpriv, allowed = run
    results = _calls(play.ok(vm, "probe %s" % allowed))
    assert results["keyctl"] == 0
    assert results["add_key"] == errno.EPERM and results["bpf"] == errno.EPERM


def test_host_root_keys_stay_unread_and_its_quota_untouched(run):
    play, vm, priv, unpriv, _allowed = run
    assert int(play.stdout(vm, "host key")) > 0
    for name in (priv, unpriv):
        assert play.ok(vm, "read key %s" % name)["stdout"].split() == ["read", str(errno.EPERM), "0"]
        assert play.ok(vm, "fill keys %s" % name)["stdout"].split() == ["filled", "0", str(errno.EPERM)]
    before = int(play.stdout(vm, "key users before").split("/")[0])
    after = int(play.stdout(vm, "key users after").split("/")[0])
    assert after - before < 100      # each exec's own session keyring, not the 5000 asked for
    assert play.stdout(vm, "drop host key") == "0"


def test_a_privileged_container_warns_that_no_profile_confines_it(run):
    play, vm, priv, unpriv, _allowed = run
    text = json.dumps(play.ok(vm, "start %s" % priv).get("warnings", []))
    assert "container %s is privileged" % priv in text and "host root" in text
    assert "host root" not in json.dumps(play.ok(vm, "start %s" % unpriv).get("warnings", []))
