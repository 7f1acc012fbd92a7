# -*- coding: utf-8 -*-
"""The filter's inputs, and the compiled program loaded by a real process of this kernel."""

from __future__ import annotations

import ctypes
import errno
import json
import os

import pytest

from ansible_collections.ovz.containers.plugins.module_utils._engine.base.errors import InvalidParameter
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel import lsm, seccomp_filter

SYS_KEYCTL, SYS_BPF, SYS_GETPID = 250, 321, 39


def test_allowed_calls_must_be_denied_ones_and_are_kept_sorted_once():
    assert seccomp_filter.validate_allowed(["keyctl", "bpf", "keyctl"]) == ["bpf", "keyctl"]
    assert seccomp_filter.validate_allowed([]) == []
    for bad in (["openat"], ["keyctl", 3], "keyctl", None):
        with pytest.raises(InvalidParameter) as info:
            seccomp_filter.validate_allowed(bad)
        assert info.value.param == "seccomp_allow"


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the call numbers here are x86_64's")
def test_a_loaded_filter_denies_its_calls_with_eperm_and_lets_the_allowed_through():
    program = seccomp_filter.compile_filter(["bpf"])
    assert "keyctl" in program.denied and "bpf" not in program.denied
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            program.install()
            libc = ctypes.CDLL(None, use_errno=True)
            outcomes = []
            for number, args in ((SYS_KEYCTL, (0, -3, 0)), (SYS_BPF, (-1, 0, 0)), (SYS_GETPID, ())):
                rc = libc.syscall(number, *args)
                outcomes.append(ctypes.get_errno() if rc < 0 else 0)
            os.write(write_fd, json.dumps([outcomes, seccomp_filter.filter_state(os.getpid())]).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    outcomes, state = json.loads(os.read(read_fd, 4096))
    os.close(read_fd)
    os.waitpid(pid, 0)
    assert outcomes[0] == errno.EPERM            # keyctl: denied
    assert outcomes[1] not in (0, errno.EPERM)    # bpf: allowed, and refused by the kernel for its bad command
    assert outcomes[2] == 0
    assert state == [2, 1]
    assert seccomp_filter.filter_state(os.getpid())[0] == 0   # the caller itself stays unfiltered


def test_the_lsms_that_could_confine_a_container(tmp_path):
    path = tmp_path / "lsm"
    path.write_text("lockdown,capability,landlock,yama,apparmor,tomoyo,bpf\n")
    assert lsm.active(str(path))[-3:] == ["apparmor", "tomoyo", "bpf"]
    assert lsm.confining(str(path)) == ["apparmor", "tomoyo"]
    assert lsm.confining(str(tmp_path / "absent")) == []     # no securityfs, as on this machine's kernel
