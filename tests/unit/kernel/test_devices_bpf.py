# -*- coding: utf-8 -*-
"""The cgroup v2 device filter, parsed offline and enforced for real on this kernel.

The real test needs root and a cgroup2 mount at /sys/fs/cgroup/unified (the
hybrid layout here) or /sys/fs/cgroup. It makes one ``ovz-bpftest-<pid>``
cgroup, runs a forked child in it and removes the cgroup again, on failure too.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
import time

import pytest

from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.devices_bpf import (
    BPF_DEVCG_ACC_MKNOD, BPF_DEVCG_ACC_READ, BPF_DEVCG_ACC_WRITE, BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR,
    DeviceRule, attach_device_filter, build_program, parse_rule, query_device_filters)


def _cgroup2_root() -> str | None:
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype == "cgroup2":
                return fields[4]
    return None


# ---- parser (pure) ---------------------------------------------------------------------

def test_parse_rules():
    assert parse_rule("c 1:3 rwm") == DeviceRule(BPF_DEVCG_DEV_CHAR, 1, 3, 7)
    assert parse_rule("c 136:* rw") == DeviceRule(BPF_DEVCG_DEV_CHAR, 136, None,
                                                  BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE)
    assert parse_rule("b *:* m") == DeviceRule(BPF_DEVCG_DEV_BLOCK, None, None, BPF_DEVCG_ACC_MKNOD)
    assert parse_rule("a *:* r") == DeviceRule(None, None, None, BPF_DEVCG_ACC_READ)
    assert parse_rule("a") == DeviceRule(None, None, None, 7)
    assert parse_rule("b 4095:1048575 w") == DeviceRule(BPF_DEVCG_DEV_BLOCK, 4095, 1048575, BPF_DEVCG_ACC_WRITE)
    assert parse_rule("  c 1:5 r ") == DeviceRule(BPF_DEVCG_DEV_CHAR, 1, 5, BPF_DEVCG_ACC_READ)


@pytest.mark.parametrize("rule", ["", "c", "x 1:3 rwm", "c 1:3", "c 1:3 rwx", "c 1 rwm", "c -1:3 r",
                                  "c 1:3:4 r", "c a:b r", "c 4096:0 r", "c 1:1048576 r", "crwm 1:3"])
def test_bad_rules_name_the_rule(rule):
    with pytest.raises(ValueError) as info:
        parse_rule(rule)
    assert repr(rule) in str(info.value)


def test_bad_rule_fails_before_kernel():
    with pytest.raises(ValueError, match="'c 1:3 q'"):
        attach_device_filter("/nonexistent-ovz", ["c 1:5 r", "c 1:3 q"])


def test_program_shape():
    # 6 prologue insns + "r0 = 0; exit"; a full wildcard rule is just "r0 = 1; exit" and
    # ends the program (the verifier rejects unreachable code after it).
    assert len(build_program([])) == 8 * 8
    assert len(build_program(["a"])) == 8 * 8
    assert build_program(["a", "c 1:3 rwm"]) == build_program(["a *:* rwm"])
    # type + access (3) + major + minor + "r0 = 1; exit"
    assert len(build_program(["c 1:5 r"])) == (8 + 8) * 8


# ---- the real thing --------------------------------------------------------------------

def _child_probe(cgroup: str, tmpdir: str, write_fd: int) -> None:
    """Runs in the forked child: join the cgroup, try each access, report errno names."""
    results: dict[str, str] = {}
    try:
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as handle:
            handle.write("0")

        def attempt(name, func):
            try:
                func()
                results[name] = "ok"
            except OSError as exc:
                results[name] = errno.errorcode.get(exc.errno, str(exc.errno))

        attempt("null_rw", lambda: os.close(os.open("/dev/null", os.O_RDWR)))
        attempt("zero_r", lambda: os.close(os.open("/dev/zero", os.O_RDONLY)))
        attempt("zero_w", lambda: os.close(os.open("/dev/zero", os.O_WRONLY)))
        attempt("full_r", lambda: os.close(os.open("/dev/full", os.O_RDONLY)))
        attempt("mknod_c", lambda: os.mknod(os.path.join(tmpdir, "ovz-c"), stat.S_IFCHR | 0o600,
                                            os.makedev(1, 3)))
        attempt("mknod_b", lambda: os.mknod(os.path.join(tmpdir, "ovz-b"), stat.S_IFBLK | 0o600,
                                            os.makedev(7, 0)))
    except BaseException as exc:  # noqa: BLE001 - report anything to the parent
        results["error"] = repr(exc)
    os.write(write_fd, json.dumps(results).encode())


def _run_in_cgroup(cgroup: str, tmpdir: str) -> dict:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.close(read_fd)
            _child_probe(cgroup, tmpdir, write_fd)
        finally:
            os._exit(0)
    os.close(write_fd)
    chunks = []
    with os.fdopen(read_fd, "rb") as pipe:
        while True:
            chunk = pipe.read(4096)
            if not chunk:
                break
            chunks.append(chunk)
    _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(b"".join(chunks) or b"{}")


def _rmdir(path: str) -> None:
    # The exited child may leave the cgroup a moment after waitpid; retry briefly.
    for _attempt in range(50):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            time.sleep(0.02)
    os.rmdir(path)


@pytest.fixture
def bpf_cgroup():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    root = _cgroup2_root()
    if root is None:
        pytest.skip("no cgroup2 mount")
    path = os.path.join(root, "ovz-bpftest-%d" % os.getpid())
    os.mkdir(path)
    try:
        yield path
    finally:
        _rmdir(path)


@pytest.mark.kernel   # a real cgroup and BPF program on this kernel
def test_filter_enforced(bpf_cgroup):
    assert query_device_filters(bpf_cgroup) == 0
    assert attach_device_filter(bpf_cgroup, ["c 1:3 rwm", "c 1:5 r", "c *:* m"]) is True
    assert query_device_filters(bpf_cgroup) == 1
    tmpdir = tempfile.mkdtemp(prefix="ovz-bpftest-")
    try:
        results = _run_in_cgroup(bpf_cgroup, tmpdir)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    assert results == {
        "null_rw": "ok",
        "zero_r": "ok",
        "zero_w": "EPERM",
        "full_r": "EPERM",
        "mknod_c": "ok",
        "mknod_b": "EPERM",
    }
    # The parent (outside the cgroup) is not affected.
    os.close(os.open("/dev/full", os.O_RDONLY))


@pytest.mark.kernel   # a real cgroup and BPF program on this kernel
def test_multi_attach_keeps_both(bpf_cgroup):
    attach_device_filter(bpf_cgroup, ["a"])
    attach_device_filter(bpf_cgroup, ["c 1:3 rwm"])
    assert query_device_filters(bpf_cgroup) == 2
    tmpdir = tempfile.mkdtemp(prefix="ovz-bpftest-")
    try:
        results = _run_in_cgroup(bpf_cgroup, tmpdir)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    # Every attached program must allow: the "a" program cannot widen the stricter one.
    assert results["null_rw"] == "ok"
    assert results["zero_r"] == "EPERM"
    assert results["mknod_b"] == "EPERM"


@pytest.mark.kernel   # a real cgroup and BPF program on this kernel
def test_empty_list_denies_all(bpf_cgroup):
    attach_device_filter(bpf_cgroup, [])
    tmpdir = tempfile.mkdtemp(prefix="ovz-bpftest-")
    try:
        results = _run_in_cgroup(bpf_cgroup, tmpdir)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    assert set(results.values()) == {"EPERM"}, results


def test_not_a_cgroup2_dir():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with pytest.raises(OSError) as info:
        attach_device_filter(tempfile.gettempdir(), ["a"])
    assert info.value.errno == errno.EBADF
    assert "not a cgroup v2 directory" in str(info.value)
