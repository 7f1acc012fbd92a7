# -*- coding: utf-8 -*-
"""The seccomp filter and the keyrings: what root inside may not call, in both kinds of container.

Every process that starts in a container or enters it runs under a filter built with libseccomp
(``kernel/seccomp_filter.py``) and in a session keyring of its own. Each denied call answers EPERM
inside, shown call by call by a static probe (``seccomp_probe.c``); ``seccomp_allow`` lets a named
call through; host root's keys stay out of reach and its key quota untouched.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from support import COLLECTIONS_ROOT
from support.node import run_module, sh
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel import lsm, seccomp_filter

PROBE_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seccomp_probe.c")
PROBE = "/usr/bin/ovz-seccomp-probe"
KINDS = [pytest.param(False, id="privileged"), pytest.param(True, id="unprivileged")]
# The calls of the filter the probe makes (nfsservctl, _sysctl and the vm86 ones have no number on x86_64).
PROBED = ("init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "open_by_handle_at",
          "add_key", "request_key", "keyctl", "bpf", "perf_event_open", "userfaultfd", "iopl", "ioperm", "swapon",
          "swapoff", "settimeofday", "clock_settime", "clock_adjtime", "syslog", "acct", "uselib", "lookup_dcookie")
KEY_SPEC_USER_KEYRING = -4
KEYCTL_INVALIDATE = 21
_SYS_ADD_KEY = 248
_SYS_KEYCTL = 250

pytestmark = pytest.mark.skipif(os.uname().machine != "x86_64", reason="the probe's call numbers are x86_64's")


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    binary = str(tmp_path_factory.mktemp("probe") / "seccomp_probe")
    subprocess.run(["gcc", "-static", "-O2", "-o", binary, PROBE_SRC], check=True)
    return binary


@pytest.fixture
def started(node, busybox_template, probe):
    """A factory of started busybox containers holding the probe; each destroyed afterwards."""
    made = []

    def make(unprivileged, **settings):
        name = node.name()
        node.manager.create(name, busybox_template, layout="directory", unprivileged=unprivileged)
        made.append(name)
        if settings:
            node.manager.update(name, **settings)
        node.manager.start(name, wait_boot=True)
        target = os.path.join(node.manager.layout.root(name), PROBE.lstrip("/"))
        shutil.copy(probe, target)
        os.chmod(target, 0o755)
        return name

    yield make
    for name in made:
        node.manager.destroy(name)


def probe_calls(manager, name, calls):
    out = sh(manager, name, "%s call %s" % (PROBE, " ".join(calls))).stdout.decode()
    return {line.split()[0]: int(line.split()[1]) for line in out.splitlines()}


@pytest.mark.parametrize("unprivileged", KINDS)
def test_each_denied_call_answers_eperm_inside(node, started, unprivileged):
    name = started(unprivileged)
    results = probe_calls(node.manager, name, PROBED + ("getpid",))
    assert {call: results[call] for call in PROBED} == {call: errno.EPERM for call in PROBED}
    assert results["getpid"] == 0
    # The container's init and every command run inside are filtered.
    mode, filters = seccomp_filter.filter_state(node.manager.runtime(name).init_pid)
    assert mode == 2 and filters >= 1
    assert "Seccomp:\t2" in sh(node.manager, name, "grep Seccomp: /proc/self/status").stdout.decode()


@pytest.mark.parametrize("unprivileged", KINDS)
def test_a_call_allowed_by_seccomp_allow_works(node, started, unprivileged):
    name = started(unprivileged, seccomp_allow=["keyctl", "userfaultfd"])
    results = probe_calls(node.manager, name, ("keyctl", "userfaultfd", "perf_event_open", "add_key"))
    assert results["keyctl"] == 0            # KEYCTL_GET_KEYRING_ID of its own session keyring
    assert results["userfaultfd"] != errno.EPERM or unprivileged   # the kernel's own rule may still refuse it
    assert results["perf_event_open"] == errno.EPERM
    assert results["add_key"] == errno.EPERM


def _key_users_root():
    with open("/proc/key-users") as handle:
        for line in handle:
            if line.split(":")[0].strip() == "0":
                return int(line.split()[3].split("/")[0])     # qnkeys (of qnkeys/maxkeys)
    return 0


@pytest.mark.parametrize("unprivileged", KINDS)
def test_host_root_keys_are_out_of_reach_and_its_quota_untouched(node, started, unprivileged):
    libc = ctypes.CDLL(None, use_errno=True)
    description = "ovzsecret-%s" % uuid.uuid4().hex[:8]
    secret = b"host root's secret"
    key = libc.syscall(_SYS_ADD_KEY, b"user", description.encode(), secret, len(secret), KEY_SPEC_USER_KEYRING)
    assert key > 0, os.strerror(ctypes.get_errno())
    try:
        name = started(unprivileged)
        out = sh(node.manager, name, "%s read_key %s" % (PROBE, description)).stdout.decode().split()
        assert out[0] == "read" and int(out[1]) == errno.EPERM and out[2] == "0", out
        before = _key_users_root()
        out = sh(node.manager, name, "%s fill_keys 5000" % PROBE).stdout.decode().split()
        assert out == ["filled", "0", str(errno.EPERM)]
        # Host root's count moves with the host's own work (each exec's fresh session keyring, other tests
        # beside this one), by a few keys, not by the 5000 the container asked for.
        assert _key_users_root() - before < 100
    finally:
        libc.syscall(_SYS_KEYCTL, KEYCTL_INVALIDATE, key)


def _module(node, check=False, diff=False, **args):
    args.update(data_dir=node.data_dir, cgroup_parent=node.cgroup_parent)
    return run_module("ovz_container", args, check=check, diff=diff)


def test_a_bad_seccomp_allow_fails_naming_it_and_changes_nothing(node, busybox_template):
    name = node.name()
    conf = node.manager.layout.conf(name)
    result = _module(node, name=name, template=busybox_template, state="present", seccomp_allow=["keyctl", "openat"])
    assert result["failed"] and "seccomp_allow" in result["msg"] and "openat" in result["msg"]
    assert not os.path.exists(conf)
    node.manager.create(name, busybox_template, layout="directory")
    try:
        with open(conf) as handle:
            saved = handle.read()
        result = _module(node, name=name, state="present", seccomp_allow=["nope"])
        assert result["failed"] and "seccomp_allow" in result["msg"]
        with open(conf) as handle:
            assert handle.read() == saved
    finally:
        node.manager.destroy(name)


def test_seccomp_allow_changed_unchanged_and_check_mode(node, busybox_template):
    name = node.name()
    try:
        result = _module(node, name=name, template=busybox_template, state="present", layout="directory",
                         seccomp_allow=["keyctl"])
        assert result["changed"] and node.manager.load(name).seccomp_allow == ["keyctl"]
        result = _module(node, name=name, state="present", seccomp_allow=["keyctl"])
        assert not result["changed"]
        result = _module(node, check=True, diff=True, name=name, state="present", seccomp_allow=["bpf", "keyctl"])
        assert result["changed"] and node.manager.load(name).seccomp_allow == ["keyctl"]
        assert "bpf" in json.dumps(result["diff"])
        result = _module(node, name=name, state="present", seccomp_allow=[])
        assert result["changed"] and node.manager.load(name).seccomp_allow == []
    finally:
        node.manager.destroy(name)


NO_BINDING = """
import json, sys
sys.modules["seccomp"] = None       # as on a host without python3-seccomp
sys.path.insert(0, %(root)r)
from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel import lsm, seccomp_filter
m = ContainerManager(%(data_dir)r, %(cgroup_parent)r)
out = {}
try:
    m.start(%(privileged)r)
    out["privileged"] = "started"
except Exception as exc:
    out["privileged"] = str(exc)
out["privileged_state"] = str(m.status(%(privileged)r))
m.start(%(unprivileged)r, wait_boot=True)
out["unprivileged"] = seccomp_filter.filter_state(m.runtime(%(unprivileged)r).init_pid)
print(json.dumps(out))
"""


def test_without_the_binding_a_privileged_container_does_not_start(node, busybox_template):
    privileged, unprivileged = node.name(), node.name()
    node.manager.create(privileged, busybox_template, layout="directory", unprivileged=False)
    node.manager.create(unprivileged, busybox_template, layout="directory", unprivileged=True)
    try:
        code = NO_BINDING % {"root": COLLECTIONS_ROOT, "data_dir": node.data_dir, "cgroup_parent": node.cgroup_parent,
                             "privileged": privileged, "unprivileged": unprivileged}
        proc = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=120, check=True)
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert "python3-seccomp" in out["privileged"]
        assert out["privileged_state"] == "stopped"
        assert out["unprivileged"][0] == 0     # runs, held by its user namespace, unfiltered
    finally:
        node.manager.destroy(privileged)
        node.manager.destroy(unprivileged)


def _host_root_warnings(result):
    """The module's warnings that say root inside is host root (ansible-core gives each as a string or an event)."""
    texts = [w if isinstance(w, str) else json.dumps(w) for w in result.get("warnings", [])]
    return [text for text in texts if "host root" in text]


def test_a_privileged_container_warns_once_while_no_lsm_profile_confines_it(node, busybox_template):
    privileged, unprivileged = node.name(), node.name()
    try:
        result = _module(node, name=privileged, template=busybox_template, state="present", layout="directory",
                         unprivileged=False)
        warned = _host_root_warnings(result)
        assert len(warned) == 1 and "unprivileged: container %s is privileged" % privileged in warned[0], result
        assert ("enforces no AppArmor or SELinux" in warned[0]) == (not lsm.confining())
        result = _module(node, name=privileged, state="present", unprivileged=False)
        assert not result["changed"] and _host_root_warnings(result) == []
        result = _module(node, name=unprivileged, template=busybox_template, state="present", layout="directory")
        assert _host_root_warnings(result) == []
    finally:
        for name in (privileged, unprivileged):
            if node.manager.exists(name):
                node.manager.destroy(name)
