# -*- coding: utf-8 -*-
"""What a started container sees from inside: its own processes, files, host name,
IPC, network, sysctls, devices and capabilities (issue: foundation)."""

from __future__ import annotations

import ctypes
import os
import stat
import time
import uuid

import pytest

from support.node import sh
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel import namespaces as ns


def test_ps_shows_only_own_processes_and_init_is_pid_1(node, container):
    out = sh(node.manager, container, "ps -o pid,comm").stdout.decode().split("\n")[1:]
    rows = [line.split() for line in out if line.strip()]
    pids = {int(r[0]) for r in rows}
    assert 1 in pids
    assert dict((int(r[0]), r[1]) for r in rows)[1] == "init"
    # Only the init, the shell and ps itself: nothing of the host.
    assert len(rows) <= 3, rows
    assert sh(node.manager, container, "readlink /proc/1/exe").stdout.decode().strip() == "/sbin/init"


def test_host_files_are_unreachable(node, container, session_dir):
    marker = os.path.join(session_dir, "ovz-host-marker-" + uuid.uuid4().hex)
    with open(marker, "w") as handle:
        handle.write("host secret")
    try:
        assert sh(node.manager, container, "test -e %s" % marker, check=False).rc != 0
        # The host's PID 1 is not in the container's pid namespace, so its root is out of reach.
        assert sh(node.manager, container, "ls /proc/1/root%s" % marker, check=False).rc != 0
        assert sh(node.manager, container, "cat /proc/1/root/etc/ovz-template").stdout.startswith(b"busybox")
        # The container's / is its own filesystem, not the host's.
        assert sh(node.manager, container, "test -e /etc/debian_version", check=False).rc != 0
    finally:
        os.unlink(marker)


def test_hostname_is_its_own(node, busybox_template):
    manager = node.manager
    first, second = node.name(), node.name()
    manager.create(first, busybox_template, layout="directory", hostname="alpha.ovz.test")
    manager.create(second, busybox_template, layout="directory", hostname="beta")
    manager.start(first, wait_boot=True)
    manager.start(second, wait_boot=True)
    assert sh(manager, first, "hostname").stdout.strip() == b"alpha.ovz.test"
    assert sh(manager, second, "hostname").stdout.strip() == b"beta"
    assert os.uname().nodename not in ("alpha.ovz.test", "beta")


def _make_shm_in(pid: int, key: int) -> None:
    child = os.fork()
    if child == 0:
        try:
            ns.enter_namespaces(pid, ["ipc"])
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            shmid = libc.shmget(key, 4096, 0o1000 | 0o600)  # IPC_CREAT
            os._exit(0 if shmid >= 0 else 1)
        except BaseException:
            os._exit(2)
    _pid, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_sysv_shm_is_private(node, busybox_template):  # pylint: disable=too-many-locals
    manager = node.manager
    first, second = node.name(), node.name()
    for name in (first, second):
        manager.create(name, busybox_template, layout="directory")
        manager.start(name, wait_boot=True)
    key = 0x0ffe1234
    _make_shm_in(manager.runtime(first).init_pid, key)

    # /proc/sysvipc/shm lists the segments of the reader's IPC namespace; keys are decimal there.
    def keys(text):
        return {line.split()[0] for line in text.splitlines()[1:] if line.strip()}

    assert str(key) in keys(sh(manager, first, "cat /proc/sysvipc/shm").stdout.decode())
    assert str(key) not in keys(sh(manager, second, "cat /proc/sysvipc/shm").stdout.decode())
    with open("/proc/sysvipc/shm") as handle:
        assert str(key) not in keys(handle.read())  # nor on the host


def test_own_loopback_and_no_host_interface(node, container):
    links = sh(node.manager, container, "ip -o link").stdout.decode().strip().splitlines()
    assert len(links) == 1 and ": lo:" in links[0], links
    assert b"127.0.0.1" in sh(node.manager, container, "ip -o addr").stdout


def test_net_sysctl_is_per_container(node, container):
    with open("/proc/sys/net/ipv4/ip_forward") as handle:
        host_before = handle.read()
    inside_before = sh(node.manager, container, "cat /proc/sys/net/ipv4/ip_forward").stdout.decode()
    new = "0" if inside_before.strip() == "1" else "1"
    sh(node.manager, container, "echo %s > /proc/sys/net/ipv4/ip_forward" % new)
    assert sh(node.manager, container, "cat /proc/sys/net/ipv4/ip_forward").stdout.decode().strip() == new
    with open("/proc/sys/net/ipv4/ip_forward") as handle:
        assert handle.read() == host_before


@pytest.mark.parametrize("path", ["/proc/sys/kernel/domainname", "/proc/sys/kernel/core_pattern",
                                  "/proc/sys/kernel/pid_max", "/proc/sys/vm/swappiness"])
def test_host_wide_sysctls_are_read_only(node, container, path):
    with open(path) as handle:
        before = handle.read()
    result = sh(node.manager, container, "echo 7 > %s" % path, check=False)
    assert result.rc != 0
    assert b"Read-only file system" in result.stderr
    with open(path) as handle:
        assert handle.read() == before


def test_dev_holds_only_the_allow_list(node, container):
    listing = set(sh(node.manager, container, "ls /dev").stdout.decode().split())
    assert listing == {"console", "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr",
                       "stdin", "stdout", "tty", "urandom", "zero"}
    # A private devpts: the host's ptys are not there.
    assert sh(node.manager, container, "ls /dev/pts").stdout.decode().split() == ["ptmx"]
    assert b"devpts" in sh(node.manager, container, "grep devpts /proc/mounts").stdout


def test_device_cgroup_refuses_host_disk_even_after_mknod(node, container, busybox_template):
    """A privileged container's root makes the host disk's node and the device cgroup refuses its open;
    in an unprivileged one (the default) the kernel refuses the node itself (no mknod in a user namespace)."""
    root_dev = os.stat("/").st_dev
    major, minor = os.major(root_dev), os.minor(root_dev)
    refused = sh(node.manager, container, "mknod /tmp/disk b %d %d" % (major, minor), check=False)
    assert node.manager.load(container).unprivileged is True
    assert refused.rc != 0 and b"Operation not permitted" in refused.stderr, refused
    privileged = node.name()
    node.manager.create(privileged, busybox_template, layout="directory", unprivileged=False)
    node.manager.start(privileged, wait_boot=True)
    sh(node.manager, privileged, "mknod /tmp/disk b %d %d" % (major, minor))
    result = sh(node.manager, privileged, "head -c 512 /tmp/disk > /dev/null", check=False)
    assert result.rc != 0
    assert b"Operation not permitted" in result.stderr
    result = sh(node.manager, privileged, "mknod /tmp/mem c 1 1 && head -c 1 /tmp/mem", check=False)
    assert result.rc != 0


def test_capability_bounding_set_lacks_host_wide_capabilities(node, container):
    status = sh(node.manager, container, "cat /proc/1/status").stdout.decode()
    bounding = int([line for line in status.splitlines() if line.startswith("CapBnd:")][0].split()[1], 16)
    for cap in ("sys_module", "sys_rawio", "sys_time"):
        assert not bounding & (1 << ns.CAPABILITIES[cap]), cap
    assert bounding & (1 << ns.CAPABILITIES["sys_admin"])  # systemd inside needs it
    result = sh(node.manager, container, "date -s '2001-01-01 00:00'", check=False)
    assert b"Operation not permitted" in result.stderr
    assert time.time() > 1700000000  # the host clock did not move


def test_processes_may_use_every_host_cpu(node, container):
    host_cpus = sorted(os.sched_getaffinity(0))
    status = sh(node.manager, container, "cat /proc/1/status").stdout.decode()
    allowed = [line for line in status.splitlines() if line.startswith("Cpus_allowed_list:")][0].split()[1]
    expected = "%d-%d" % (host_cpus[0], host_cpus[-1]) if len(host_cpus) > 1 else str(host_cpus[0])
    assert allowed == expected
    assert sh(node.manager, container, "nproc").stdout.strip() == str(len(host_cpus)).encode()


def test_root_filesystem_is_writable_and_private(node, container):
    sh(node.manager, container, "echo changed > /etc/motd && mkdir -p /opt/app && echo ok > /opt/app/x")
    assert sh(node.manager, container, "cat /opt/app/x").stdout == b"ok\n"
    assert not os.path.exists("/opt/app/x") or open("/opt/app/x").read() != "ok\n"
    assert stat.S_ISDIR(os.stat(node.manager.layout.private(container) + "/opt/app").st_mode)
