# -*- coding: utf-8 -*-
"""The escape suite: each attack runs as root inside a default container and must fail,
and the host is checked unchanged afterwards.

``test_attack[<kind>-<attack>]`` lists every attack with its result, against a privileged container
and an unprivileged one (``unprivileged: true``: its own user namespace and id block), and
``test_network_attack[<attack>-<kind>]`` the network ones. An attack that succeeds on a stock
kernel is marked ``xfail(strict=True)`` with the exact reason, so that the day it is prevented
the mark must go: the CAP_SYS_ADMIN, blkio v1 and host root's per-user counts holes are marked for
privileged containers only (a user namespace closes them, which the unprivileged runs prove). The README's "Security"
section is the table of these results.

Attacks run two ways, both as the container's root: shell commands through ``exec`` (what
a user inside types), and Python code run by ``inside()`` in a process that joined the
container exactly as ``exec`` does (its cgroups, its namespaces, the same capability set a
process that root executes there has), for system calls busybox has no applet for.
Related checks that already exist stay where they are: tests/integration/test_isolation.py
(read-only host sysctls, /dev allow-list, device cgroup, capability set) and
tests/integration/test_network.py (sniffing, spoofing, forged MACs and ARP, which the
network attacks below run).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import signal
import subprocess
import time
import traceback


import pytest

from support.node import sh

from ansible_collections.ovz.containers.plugins.module_utils._engine.ops import limits as lim
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel import namespaces as ns
from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import PAYLOAD
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.process import enter_container, join_cgroups
from ansible_collections.ovz.containers.plugins.module_utils._engine.ops.checkpoint import Checkpointer

from support import netlab
from support.netlab import bridged_lab, routed_lab  # noqa: F401  pylint: disable=unused-import

DISKSPACE = 64 << 20
LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
SYS_INIT_MODULE, SYS_FINIT_MODULE, SYS_PTRACE, SYS_KEXEC_LOAD = 175, 313, 101, 246
SYS_ADD_KEY, SYS_KEYCTL, SYS_PERF_EVENT_OPEN, SYS_BPF = 248, 250, 298, 321
KEY_SPEC_USER_KEYRING, KEYCTL_SEARCH, KEYCTL_READ, KEYCTL_INVALIDATE = -4, 10, 11, 21
PTRACE_ATTACH = 16
IN_CLOEXEC = 0o2000000


class SetupError(Exception):
    """An attack could not be staged: neither its success nor its failure (not an AssertionError)."""


CAP_SYS_ADMIN_HOLE = (
    "a privileged container keeps CAP_SYS_ADMIN in the initial user namespace (systemd inside needs it): its root may "
    "mount a fresh proc or remount /proc/sys read-write and write host-wide sysctls (core_pattern, sysrq-trigger), and "
    "mount an already mounted host block device (the kernel reuses the superblock without opening the device, so the "
    "device cgroup never sees it; a fresh devtmpfs gives the node). This kernel has no LSM to deny mounts; only a user "
    "namespace (unprivileged containers) or dropping CAP_SYS_ADMIN prevents it")
HOST_ROOT_COUNTS_HOLE = (
    "root of a privileged container is host root (uid 0 of the initial user namespace): the kernel's per-user counts "
    "(inotify instances and watches, RLIMIT_NPROC, pending signals, mqueue bytes) of its processes are host root's "
    "own, so exhausting them inside exhausts them for the host's root; only a user namespace owned by a user of its "
    "own (unprivileged containers) gives it counts of its own")
BLKIO_V1_HOLE = (
    "cgroup v1 blk-throttle is flat, so iolimit must sit on the payload cgroup itself, the root of the container's "
    "cgroup namespace; with CAP_SYS_ADMIN its root mounts the blkio hierarchy there and rewrites the limit "
    "(memory, CPU and pids limits sit one level up, out of reach); cgroup v2 io.max is hierarchical and nsdelegate "
    "protects the namespace root")


# ---------------------------------------------------------------------------------------
# running code inside, and the host's state
# ---------------------------------------------------------------------------------------

class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _become_container_root() -> None:
    """The capability sets root's execve gives inside the container: what the bounding set allows."""
    ns.drop_bounding_capabilities(ns.DEFAULT_DROPPED_CAPABILITIES)
    bounding = ns.bounding_set()
    header = _CapHeader(0x20080522, 0)
    data = (_CapData * 2)()
    for index in (0, 1):
        word = (bounding >> (32 * index)) & 0xffffffff
        data[index].effective = data[index].permitted = word
    if LIBC.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def inside(manager, name, fn, *args):
    """Run ``fn(*args)`` as root inside the container; returns its JSON-able result (or raises)."""
    runtime = manager.runtime(name)
    cgroups = manager.cgroups_for(runtime)
    procs, cgroup2 = cgroups.payload_procs(PAYLOAD), cgroups.exec_cgroup2(PAYLOAD)
    program = manager.seccomp_program(manager.load(name))   # what every process inside runs under
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        code = 1
        try:
            os.close(read_fd)
            join_cgroups(procs)
            if cgroup2:
                with open(os.path.join(cgroup2, "cgroup.procs"), "w") as handle:
                    handle.write("0")
            enter_container(runtime.init_pid)   # an unprivileged container's user namespace first
            grandchild = os.fork()
            if grandchild == 0:
                try:
                    os.chdir("/")
                    ns.join_new_session_keyring()
                    if program is not None:
                        program.install()
                    _become_container_root()
                    payload = {"value": fn(*args)}
                except BaseException:  # noqa: B036 - handed to the caller
                    payload = {"error": traceback.format_exc()}
                os.write(write_fd, json.dumps(payload).encode())
                os._exit(0)
            _pid, status = os.waitpid(grandchild, 0)
            code = os.waitstatus_to_exitcode(status)
        finally:
            os._exit(code & 0xff)
    os.close(write_fd)
    chunks = []
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_fd)
    os.waitpid(child, 0)
    result = json.loads(b"".join(chunks) or b'{"error": "the process inside died"}')
    if "error" in result:
        raise AssertionError("inside %s: %s" % (name, result["error"]))
    return result["value"]


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError as exc:
        return "<%s>" % errno.errorcode.get(exc.errno, exc.errno)


WATCHED = ("/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe", "/proc/sys/kernel/hostname",
           "/proc/sys/kernel/domainname", "/proc/sys/kernel/sysrq", "/proc/sys/kernel/pid_max",
           "/proc/sys/vm/overcommit_memory", "/proc/sys/vm/swappiness", "/proc/sys/net/ipv4/ip_forward",
           "/proc/sys/kernel/random/boot_id", "/sys/kernel/uevent_helper")


def host_state():
    """Host-wide values no container may change."""
    state = {path: _read(path) for path in WATCHED}
    for hierarchy in sorted(os.listdir("/sys/fs/cgroup")):
        agent = os.path.join("/sys/fs/cgroup", hierarchy, "release_agent")
        if os.path.exists(agent):
            state[agent] = _read(agent)
    state["modules"] = sorted(line.split()[0] for line in _read("/proc/modules").splitlines())
    state["clock"] = round(time.time() - time.monotonic())
    return state


def assert_host_unchanged(before):
    after = host_state()
    clock_before, clock_after = before.pop("clock"), after.pop("clock")
    assert abs(clock_after - clock_before) <= 2, "the host clock moved by %d s" % (clock_after - clock_before)
    assert after == before


PRIVILEGES = ("privileged", "unprivileged")


@pytest.fixture
def target(request, node, busybox_template):
    """A default container (image layout, 64M), privileged or unprivileged (``request.param``), started;
    the host's state is checked after the test. Containers an attack makes besides get the same kind."""
    node.unprivileged = getattr(request, "param", "privileged") == "unprivileged"
    name = node.name()
    node.manager.create(name, busybox_template, diskspace=[DISKSPACE, DISKSPACE], unprivileged=node.unprivileged)
    node.manager.start(name, wait_boot=True, timeout=20)
    before = host_state()
    yield node, name
    assert_host_unchanged(before)


def limit_node_pids(node, value=2048):
    """A safety net: the node's own cgroup parent caps the pids of all its containers."""
    backend = node.manager.backend
    for key, path in backend.resolve_parent(node.cgroup_parent).items():
        directory = os.path.join(backend.mountpoint(key), path.lstrip("/"))
        if os.path.exists(os.path.join(directory, "pids.max")):
            with open(os.path.join(directory, "pids.max"), "w") as handle:
                handle.write(str(value))


def cgroup_file(node, name, controller, filename, payload=False):
    cgroups = node.manager.cgroups_for(node.manager.runtime(name))
    directory = cgroups.controller_dir(controller)
    return _read(os.path.join(directory, PAYLOAD, filename) if payload else os.path.join(directory, filename))


def failed(result):
    return result.rc != 0


# ---------------------------------------------------------------------------------------
# the attacks: each returns normally when the attack failed
# ---------------------------------------------------------------------------------------

def attack_core_pattern_write(node, name):
    result = sh(node.manager, name, "echo '|/tmp/ovz-pwn %p' > /proc/sys/kernel/core_pattern", check=False)
    assert failed(result) and b"Read-only" in result.stderr


def attack_core_pattern_new_proc_mount(node, name):
    # Writes back the value it read: the host stays as it was even where the attack succeeds.
    result = sh(node.manager, name, "mkdir -p /tmp/p && mount -t proc proc /tmp/p && "
                "cat /tmp/p/sys/kernel/core_pattern > /tmp/cp && cat /tmp/cp > /tmp/p/sys/kernel/core_pattern",
                check=False)
    sh(node.manager, name, "umount /tmp/p", check=False)
    assert failed(result), "a fresh proc mount let root write /proc/sys/kernel/core_pattern"


def attack_proc_sys_remount_rw(node, name):
    result = sh(node.manager, name, "mount -o remount,rw /proc/sys && "
                "cat /proc/sys/kernel/core_pattern > /tmp/cp && cat /tmp/cp > /proc/sys/kernel/core_pattern",
                check=False)
    assert failed(result), "root remounted /proc/sys read-write and wrote core_pattern"


def attack_sysrq_trigger(node, name):
    # 'h' (help) is the one harmless key: if the write got through, it would only log.
    result = sh(node.manager, name, "echo h > /proc/sysrq-trigger", check=False)
    assert failed(result)   # read-only, or absent where the kernel has no magic SysRq


def attack_mknod_host_disk(node, name):
    device = os.stat(node.data_dir).st_dev
    major, minor = os.major(device), os.minor(device)
    result = sh(node.manager, name, "mknod /tmp/disk b %d %d && head -c 512 /tmp/disk" % (major, minor), check=False)
    assert failed(result) and b"Operation not permitted" in result.stderr


def attack_mount_host_disk(node, name):
    """The device cgroup guards open(), but mounting an already mounted block device reuses its
    superblock without opening the device again: only CAP_SYS_ADMIN stands in the way."""
    device = os.stat(node.data_dir).st_dev
    major, minor = os.major(device), os.minor(device)
    with open("/proc/self/mountinfo") as handle:
        fstype = [line.split(" - ")[1].split()[0] for line in handle if line.split()[2] == "%d:%d" % (major, minor)][0]
    # With its type given (probing would read the device, which the device cgroup refuses) and as the host
    # has it (read-write: a read-only mount of a read-write superblock is refused anyway); the attack only
    # lists the host's files and unmounts.
    result = sh(node.manager, name, "mknod /tmp/disk b %d %d; mkdir -p /tmp/m && mount -t %s /tmp/disk /tmp/m && "
                "ls /tmp/m >/dev/null" % (major, minor, fstype), check=False)
    sh(node.manager, name, "umount /tmp/m", check=False)
    assert failed(result), "the host's disk was mounted inside"


def attack_cgroup_release_agent(node, name):
    """CVE-2022-0492: mount a v1 hierarchy read-write and set its release_agent."""
    script = ("for c in memory cpu,cpuacct pids devices freezer blkio cpuset rdma none,name=ovzpwn; do "
              "d=/tmp/cg-${c%%,*}; mkdir -p $d; "
              "if mount -t cgroup -o $c cgroup $d 2>/dev/null; then "
              "echo /tmp/ovz-pwn > $d/release_agent 2>/dev/null && echo WROTE $c; "
              "echo 1 > $d/notify_on_release 2>/dev/null; umount $d; fi; done; true")
    out = sh(node.manager, name, script).stdout.decode()
    assert "WROTE" not in out, out
    # And the unified hierarchy: no release_agent, and its namespace root is not writable.
    result = sh(node.manager, name, "echo /tmp/ovz-pwn > /sys/fs/cgroup/release_agent", check=False)
    assert failed(result)


def attack_load_kernel_module(node, name):
    sh(node.manager, name, "head -c 4096 /dev/urandom > /tmp/evil.ko")
    result = sh(node.manager, name, "insmod /tmp/evil.ko", check=False)
    assert failed(result)

    def syscalls():
        fd = os.open("/tmp/evil.ko", os.O_RDONLY)
        outcomes = []
        for number, args in ((SYS_FINIT_MODULE, (fd, b"", 0)), (SYS_INIT_MODULE, (b"\0" * 64, 64, b""))):
            rc = LIBC.syscall(number, *args)
            outcomes.append(ctypes.get_errno() if rc != 0 else 0)
        return outcomes

    # EPERM: no CAP_SYS_MODULE; ENOSYS: a kernel built without module support refuses anyway.
    assert set(inside(node.manager, name, syscalls)) <= {errno.EPERM, errno.ENOSYS}


def attack_raise_own_limits(node, name):
    lim.update(node.manager, name, {"ram": "128M", "numproc": 100, "cpulimit": 50})
    watched = [("memory", "memory.limit_in_bytes"), ("pids", "pids.max"), ("cpu", "cpu.cfs_quota_us")]
    before = {f: cgroup_file(node, name, c, f) for c, f in watched}
    script = ("mkdir -p /tmp/cm /tmp/cp /tmp/cc; mount -t cgroup -o memory cgroup /tmp/cm; "
              "mount -t cgroup -o pids cgroup /tmp/cp; mount -t cgroup -o cpu,cpuacct cgroup /tmp/cc; "
              "echo -1 > /tmp/cm/memory.limit_in_bytes; echo max > /tmp/cp/pids.max; echo -1 > /tmp/cc/cpu.cfs_quota_us; "
              "echo $$ > /tmp/cm/../tasks; echo $$ > /tmp/cp/../../tasks; "
              "echo -1 > /tmp/cm/../memory.limit_in_bytes; "
              "echo max > /sys/fs/cgroup/pids.max; echo 'max 100000' > /sys/fs/cgroup/cpu.max; "
              "umount /tmp/cm /tmp/cp /tmp/cc; true")
    sh(node.manager, name, script)
    after = {f: cgroup_file(node, name, c, f) for c, f in watched}
    assert after == before
    # The limit still holds: 150 processes do not fit under numproc 100.
    result = sh(node.manager, name, "i=0; while [ $i -lt 150 ]; do sleep 30 >/dev/null 2>&1 & i=$((i+1)); done; "
                "echo started $i", check=False)
    sh(node.manager, name, "kill $(pidof sleep) 2>/dev/null; true", check=False)
    assert failed(result) or b"started 150" not in result.stdout


def attack_raise_iolimit_blkio_v1(node, name):
    if node.manager.backend.version != 1:
        pytest.skip("this host is cgroup v2: io.max is hierarchical; this attack is for v1 hosts")
    lim.update(node.manager, name, {"iolimit": "10M"})
    before = cgroup_file(node, name, "blkio", "blkio.throttle.write_bps_device", payload=True)
    if not before.strip():
        raise SetupError("iolimit is not on the payload")
    sh(node.manager, name, "mkdir -p /tmp/b && mount -t cgroup -o blkio cgroup /tmp/b && "
       "for d in $(cut -d' ' -f1 /tmp/b/blkio.throttle.write_bps_device); do "
       "echo \"$d 0\" > /tmp/b/blkio.throttle.write_bps_device; done; umount /tmp/b; true")
    assert cgroup_file(node, name, "blkio", "blkio.throttle.write_bps_device", payload=True) == before, \
        "the container lifted its own iolimit"


def attack_read_kernel_memory(node, name):
    for script in ("head -c 4096 /proc/kcore | wc -c", "mknod /tmp/mem c 1 1 && head -c 16 /tmp/mem | wc -c",
                   "mknod /tmp/kmem c 1 2 && head -c 16 /tmp/kmem | wc -c",
                   "mknod /tmp/port c 1 4 && head -c 1 /tmp/port | wc -c"):
        result = sh(node.manager, name, script, check=False)
        assert failed(result) or result.stdout.strip() == b"0", (script, result)
    # Kernel addresses are hidden (no CAP_SYSLOG): every symbol reads as 0.
    addresses = sh(node.manager, name, "head -n 50 /proc/kallsyms | cut -d' ' -f1 | sort -u").stdout.split()
    assert set(addresses) <= {b"0000000000000000"}, addresses
    result = sh(node.manager, name, "dmesg", check=False)
    assert failed(result)


def attack_host_process(node, name):
    victim = subprocess.Popen(["sleep", "300"])  # pylint: disable=consider-using-with
    try:
        listed = sh(node.manager, name, "ls /proc").stdout.split()
        pids = sorted(int(x) for x in listed if x.isdigit())
        assert len(pids) <= 4, pids   # init, sh, ls: nothing of the host
        result = sh(node.manager, name, "kill -9 %d" % victim.pid, check=False)
        assert failed(result)

        def signal_by_number(pid):
            try:
                os.kill(pid, signal.SIGKILL)
                return "killed"
            except OSError as exc:
                return errno.errorcode[exc.errno]

        inside(node.manager, name, signal_by_number, victim.pid)
        assert victim.poll() is None, "a host process was killed from inside"
        inside(node.manager, name, signal_by_number, -1)   # kill(-1): every process it may signal
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def attack_ptrace_other_container(node, name, busybox_template):
    other = node.name()
    node.manager.create(other, busybox_template, diskspace=[DISKSPACE, DISKSPACE], unprivileged=node.unprivileged)
    node.manager.start(other, wait_boot=True, timeout=20)
    victim = node.manager.runtime(other).init_pid
    own = set(sh(node.manager, name, "ls /proc").stdout.split())

    def attach(pid):
        rc = LIBC.syscall(SYS_PTRACE, PTRACE_ATTACH, pid, 0, 0)
        return 0 if rc == 0 else ctypes.get_errno()

    assert inside(node.manager, name, attach, victim) == errno.ESRCH
    # Every process it can name is its own.
    assert str(victim).encode() not in own
    with open("/proc/%d/stat" % victim) as handle:
        assert handle.read().split(") ")[1][0] in "SR", "the other container's init is stopped"
    assert sh(node.manager, other, "echo alive").stdout == b"alive\n"


def attack_open_by_handle_host_root(node, name, busybox_template):
    """Shocker: open_by_handle_at with the inode of the filesystem's root, from a directory-layout root."""
    shocked = node.name()
    node.manager.create(shocked, busybox_template, layout="directory", unprivileged=node.unprivileged)
    node.manager.start(shocked, wait_boot=True, timeout=20)

    def shocker():
        class Handle(ctypes.Structure):
            _fields_ = [("handle_bytes", ctypes.c_uint32), ("handle_type", ctypes.c_int),
                        ("f_handle", ctypes.c_uint32 * 2)]
        mount_fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
        handle = Handle(8, 1, (ctypes.c_uint32 * 2)(2, 0))   # FILEID_INO32_GEN, inode 2
        fd = LIBC.open_by_handle_at(mount_fd, ctypes.byref(handle), os.O_RDONLY | os.O_DIRECTORY)
        if fd < 0:
            return errno.errorcode[ctypes.get_errno()]
        opened, root = os.fstat(fd), os.stat("/")
        return "own root" if (opened.st_dev, opened.st_ino) == (root.st_dev, root.st_ino) else sorted(os.listdir(fd))

    outcome = inside(node.manager, shocked, shocker)
    assert outcome in ("EPERM", "ESTALE", "EACCES", "own root"), "the host filesystem's root was opened: %s" % (outcome,)


def attack_fill_host_disk(node, name):
    stats = os.statvfs(node.data_dir)
    free_before = stats.f_bavail * stats.f_frsize
    image = os.path.join(node.manager.layout.private(name), "root.img")
    result = sh(node.manager, name, "dd if=/dev/zero of=/fill bs=1M count=%d" % ((DISKSPACE >> 20) * 2), check=False)
    assert failed(result) and b"No space left on device" in result.stderr
    written = int(sh(node.manager, name, "stat -c %s /fill").stdout)
    assert written < DISKSPACE
    assert os.stat(image).st_size == DISKSPACE
    assert os.stat(image).st_blocks * 512 <= DISKSPACE + (1 << 20)   # the sparse image cannot grow past its size
    # The host's free space did not drop by what was written (others share this disk: only a bound is checked).
    stats = os.statvfs(node.data_dir)
    assert free_before - stats.f_bavail * stats.f_frsize < written + DISKSPACE
    sh(node.manager, name, "rm -f /fill")


def _host_file_growth(node, name, inside_path, host_path):
    """Write twice the disk space into a path that lands on the host; returns the bytes that landed."""
    sh(node.manager, name, "dd if=/dev/zero of=%s bs=1M count=%d 2>/dev/null; true"
       % (inside_path, (DISKSPACE >> 20) * 2))
    try:
        return os.stat(host_path).st_blocks * 512
    finally:
        sh(node.manager, name, "rm -f %s" % inside_path, check=False)


def _disk_free(node):
    stats = os.statvfs(node.data_dir)
    return stats.f_bavail * stats.f_frsize


def _volatile(node, name):
    """run/<name>/volatile, where /run/ovz and /dev/console land: a small tmpfs, not the host's disk."""
    volatile = node.manager.layout.volatile(name)
    fields = [line.split() for line in open("/proc/self/mountinfo") if line.split()[4] == volatile]
    assert fields and fields[-1][fields[-1].index("-") + 1] == "tmpfs", fields
    return os.statvfs(volatile)


def attack_fill_host_disk_via_run_ovz(node, name):
    host_path = os.path.join(node.manager.layout.guest(name), "fill")
    free_before = _disk_free(node)
    result = sh(node.manager, name, "dd if=/dev/zero of=/run/ovz/fill bs=1M count=%d" % ((DISKSPACE >> 20) * 2),
                check=False)
    try:
        assert b"No space left on device" in result.stderr, result
        volatile = _volatile(node, name)
        assert os.stat(host_path).st_blocks * 512 <= volatile.f_blocks * volatile.f_frsize
        assert free_before - _disk_free(node) < DISKSPACE, "/run/ovz wrote onto the host's disk"
    finally:
        sh(node.manager, name, "rm -f /run/ovz/fill", check=False)
    sh(node.manager, name, "touch /run/ovz/after && rm /run/ovz/after")   # usable again once freed


def attack_fill_host_disk_via_console(node, name):
    host_path = node.manager.layout.console(name)
    free_before = _disk_free(node)
    sh(node.manager, name, "dd if=/dev/zero of=/dev/console bs=1M count=%d 2>/dev/null; true"
       % ((DISKSPACE >> 20) * 2))
    landed = os.stat(host_path).st_blocks * 512
    volatile = _volatile(node, name)
    with open(host_path, "w"):
        pass   # give the room back at once
    assert landed <= volatile.f_blocks * volatile.f_frsize
    assert free_before - _disk_free(node) < DISKSPACE, "/dev/console wrote onto the host's disk"
    # The operator's path to the log still leads there.
    assert os.path.realpath(os.path.join(node.manager.layout.run(name), "console.log")) == host_path


def attack_fork_bomb(node, name):
    limit_node_pids(node)
    lim.update(node.manager, name, {"numproc": 200})
    result = sh(node.manager, name, "bomb() { bomb | bomb & }; bomb; sleep 2; echo survived", check=False)
    assert b"can't fork" in result.stderr, "the fork bomb never hit numproc"
    assert int(cgroup_file(node, name, "pids", "pids.current")) <= 200
    assert subprocess.run(["true"], check=False).returncode == 0   # the host still forks
    node.manager.stop(name, timeout=2)   # the bomb dies with its container
    assert node.manager.status(name) == "stopped"
    node.manager.start(name, wait_boot=True, timeout=20)
    assert sh(node.manager, name, "echo ok").stdout == b"ok\n"


def attack_memory_bomb(node, name):
    lim.update(node.manager, name, {"ram": "64M", "swap": 0})
    # Anonymous memory, then tmpfs pages (charged to the container too).
    for script in ("dd if=/dev/zero of=/dev/null bs=512M count=1", "dd if=/dev/zero of=/dev/shm/fill bs=1M count=256"):
        result = sh(node.manager, name, script, check=False)
        assert result.rc == 128 + signal.SIGKILL, (script, result)   # the OOM killer, inside the container
    peak = "memory.max_usage_in_bytes" if node.manager.backend.version == 1 else "memory.peak"
    assert int(cgroup_file(node, name, "memory", peak)) <= 64 << 20
    node.manager.restart(name, wait_boot=True, timeout=20)   # the full /dev/shm goes with its container
    assert sh(node.manager, name, "echo ok").stdout == b"ok\n"


def attack_set_host_clock(node, name):
    result = sh(node.manager, name, "date -s '2001-01-01 00:00'", check=False)
    assert b"Operation not permitted" in result.stderr

    def clock_calls():
        class Timespec(ctypes.Structure):
            _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]
        outcomes = []
        rc = LIBC.clock_settime(0, ctypes.byref(Timespec(978307200, 0)))
        outcomes.append(ctypes.get_errno() if rc else 0)
        rc = LIBC.settimeofday(ctypes.byref(Timespec(978307200, 0)), None)
        outcomes.append(ctypes.get_errno() if rc else 0)
        buf = ctypes.create_string_buffer(208)     # struct timex; modes = ADJ_OFFSET|ADJ_SETOFFSET
        ctypes.memmove(buf, (ctypes.c_uint32 * 1)(0x0100 | 0x0001), 4)
        rc = LIBC.adjtimex(buf)
        outcomes.append(ctypes.get_errno() if rc < 0 else 0)
        return outcomes

    assert inside(node.manager, name, clock_calls) == [errno.EPERM] * 3
    assert abs(time.time() - 978307200) > 10 ** 8


def attack_read_and_fill_host_root_keyring(node, name):
    """Host root keeps a secret in its user keyring (shared by every uid-0 process of the initial user
    namespace, a privileged container's root among them); the container reads it, or fills host root's key
    quota so that add_key fails on the host."""
    secret = b"ovz-host-secret"
    description = b"ovzescape-%d" % os.getpid()
    key = LIBC.syscall(SYS_ADD_KEY, b"user", description, secret, len(secret), KEY_SPEC_USER_KEYRING)
    if key < 0:
        raise SetupError("host root cannot add a key: %s" % os.strerror(ctypes.get_errno()))
    try:
        def keyring_calls():
            outcomes = []
            found = LIBC.syscall(SYS_KEYCTL, KEYCTL_SEARCH, KEY_SPEC_USER_KEYRING, b"user", description, 0)
            outcomes.append(ctypes.get_errno() if found < 0 else 0)
            buf = ctypes.create_string_buffer(64)
            read = LIBC.syscall(SYS_KEYCTL, KEYCTL_READ, key, buf, 64)
            outcomes.append(ctypes.get_errno() if read < 0 else 0)
            made = LIBC.syscall(SYS_ADD_KEY, b"user", b"ovzfill", b"x", 1, KEY_SPEC_USER_KEYRING)
            outcomes.append(ctypes.get_errno() if made < 0 else 0)
            return outcomes

        assert inside(node.manager, name, keyring_calls) == [errno.EPERM] * 3
    finally:
        LIBC.syscall(SYS_KEYCTL, KEYCTL_INVALIDATE, key)


def _closed_or_errno(fd):
    """0 for a call that gave a descriptor (closed at once), else its errno."""
    if fd >= 0:
        os.close(fd)
        return 0
    return ctypes.get_errno()


def attack_profile_host_with_perf(node, name):
    """perf_event_open on every task of CPU 0 (pid -1): kernel addresses and host command names."""
    def perf():
        attr = ctypes.create_string_buffer(128)     # struct perf_event_attr: PERF_TYPE_SOFTWARE, CPU clock
        ctypes.memmove(attr, (ctypes.c_uint32 * 2)(1, 128), 8)
        return _closed_or_errno(LIBC.syscall(SYS_PERF_EVENT_OPEN, attr, -1, 0, -1, 0))

    assert inside(node.manager, name, perf) == errno.EPERM


def attack_load_bpf_program(node, name):
    """bpf(2): tracing programs that read kernel memory, or a map to begin with."""
    def bpf():
        attr = (ctypes.c_uint32 * 5)(2, 4, 4, 1, 0)     # BPF_MAP_CREATE: an array of one 4-byte value
        return _closed_or_errno(LIBC.syscall(SYS_BPF, 0, attr, ctypes.sizeof(attr)))

    assert inside(node.manager, name, bpf) == errno.EPERM


def attack_swapon_file_inside(node, name):
    """A swap file inside, turned on: it would show in the host's /proc/swaps and hold host memory."""
    with open("/proc/swaps") as handle:
        before = handle.read()
    sh(node.manager, name, "dd if=/dev/zero of=/root/swapfile bs=1024 count=1024 2>/dev/null; "
       "chmod 600 /root/swapfile; mkswap /root/swapfile >/dev/null 2>&1; true")

    def swapon():
        rc = LIBC.swapon(b"/root/swapfile", 0)
        return ctypes.get_errno() if rc else 0

    try:
        assert inside(node.manager, name, swapon) == errno.EPERM
        with open("/proc/swaps") as handle:
            assert handle.read() == before
    finally:
        # An attack that worked leaves the host swapping to the container's file, which would hold its disk
        # (the loop device) past its destroy: taken off through the host's path to the same file.
        with open("/proc/swaps") as handle:
            if "/root/swapfile" in handle.read():
                LIBC.swapoff(os.path.join(node.manager.layout.root(name), "root", "swapfile").encode())


def attack_reboot_host(node, name):
    with open("/proc/sys/kernel/random/boot_id") as handle:
        boot_id = handle.read()

    def kexec():
        rc = LIBC.syscall(SYS_KEXEC_LOAD, 0, 0, 0, 0)
        return 0 if rc == 0 else ctypes.get_errno()

    assert inside(node.manager, name, kexec) != 0
    sh(node.manager, name, "reboot -f", check=False)
    deadline = time.monotonic() + 10
    while node.manager.status(name) == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    # The container's own init got the reboot (the kernel's pid namespace turns it into a signal
    # to that init); nothing supervises it, so the container is stopped, not restarted.
    assert node.manager.status(name) == "stopped"
    with open("/proc/sys/kernel/random/boot_id") as handle:
        assert handle.read() == boot_id
    node.manager.start(name, wait_boot=True, timeout=20)   # it starts again cleanly
    assert sh(node.manager, name, "echo ok").stdout == b"ok\n"


def _inotify_instances(limit):
    """Up to ``limit`` new inotify instances: their descriptors and the errno that stopped it (0: none did)."""
    fds = []
    while len(fds) < limit:
        fd = LIBC.inotify_init1(IN_CLOEXEC)
        if fd < 0:
            return fds, ctypes.get_errno()
        fds.append(fd)
    return fds, 0


def _exhaust_inotify_and_hold(ready_w, go_r):
    """Inside: make inotify instances until the kernel refuses, report, and hold them until told."""
    fds, err = _inotify_instances(4096)
    os.write(ready_w, json.dumps([len(fds), err]).encode())
    os.read(go_r, 1)
    for fd in fds:
        os.close(fd)
    return len(fds)


def attack_exhaust_host_root_inotify(node, name):
    """inotify instances are counted per user (``user.max_inotify_instances``, 128 by default). The
    container's root takes every instance it can get; host root must still get as many as before."""
    fds, _err = _inotify_instances(8)
    for fd in fds:
        os.close(fd)
    wanted = len(fds)
    if wanted == 0:
        pytest.skip("host root has no inotify instance left before the attack (something else on the host holds them)")
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        code = 1
        try:
            os.close(ready_r)
            os.close(go_w)
            inside(node.manager, name, _exhaust_inotify_and_hold, ready_w, go_r)
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(go_r)
    try:
        made, err = json.loads(os.read(ready_r, 256) or b"[0, 0]")
        fds, host_err = _inotify_instances(wanted)   # while the container holds its instances
        for fd in fds:
            os.close(fd)
    finally:
        os.close(go_w)
        os.close(ready_r)
        os.waitpid(child, 0)
    if not (made > 0 and err == errno.EMFILE):
        raise SetupError("the container did not reach its own bound: it made %d inotify instances (errno %d)" % (made, err))
    assert len(fds) == wanted, ("host root made %d of %d inotify instances (errno %d) while the container held %d"
                                % (len(fds), wanted, host_err, made))
    with open("/proc/sys/user/max_inotify_instances") as handle:
        assert made <= int(handle.read())   # the container's own count has the host's per-user bound


# The network attacks run the proofs of tests/integration/test_network.py (support/netlab.py) in their labs.
def attack_sniff_and_spoof_routed(lab):
    netlab.routed_no_snooping_and_no_spoofing(lab)


def attack_arp_poison_bridged(lab):
    netlab.bridged_no_snooping_no_spoofing_no_forged_mac(lab)


ATTACKS = [
    ("core_pattern_write", attack_core_pattern_write, None),
    ("core_pattern_via_new_proc_mount", attack_core_pattern_new_proc_mount, CAP_SYS_ADMIN_HOLE),
    ("proc_sys_remount_rw", attack_proc_sys_remount_rw, CAP_SYS_ADMIN_HOLE),
    ("sysrq_trigger", attack_sysrq_trigger, None),
    ("mknod_and_open_host_disk", attack_mknod_host_disk, None),
    ("mount_host_disk", attack_mount_host_disk, CAP_SYS_ADMIN_HOLE),
    ("cgroup_v1_release_agent", attack_cgroup_release_agent, None),
    ("load_kernel_module", attack_load_kernel_module, None),
    ("raise_own_cgroup_limits", attack_raise_own_limits, None),
    ("raise_own_iolimit_blkio_v1", attack_raise_iolimit_blkio_v1, BLKIO_V1_HOLE),
    ("read_kcore_mem_kmsg", attack_read_kernel_memory, None),
    ("see_or_signal_host_process", attack_host_process, None),
    ("ptrace_other_container", attack_ptrace_other_container, None),
    ("open_by_handle_host_root", attack_open_by_handle_host_root, None),
    ("fill_host_disk_image", attack_fill_host_disk, None),
    ("fill_host_disk_via_run_ovz", attack_fill_host_disk_via_run_ovz, None),
    ("fill_host_disk_via_console", attack_fill_host_disk_via_console, None),
    ("fork_bomb", attack_fork_bomb, None),
    ("memory_bomb", attack_memory_bomb, None),
    ("set_host_clock", attack_set_host_clock, None),
    ("reboot_host", attack_reboot_host, None),
    ("read_and_fill_host_root_keyring", attack_read_and_fill_host_root_keyring, None),
    ("profile_host_with_perf", attack_profile_host_with_perf, None),
    ("load_bpf_program", attack_load_bpf_program, None),
    ("swapon_file_inside", attack_swapon_file_inside, None),
    ("exhaust_host_root_inotify", attack_exhaust_host_root_inotify, HOST_ROOT_COUNTS_HOLE),
]
NEEDS_TEMPLATE = (attack_ptrace_other_container, attack_open_by_handle_host_root)
# The holes ATTACKS names are those of privileged containers. In an unprivileged container (its own user
# namespace, unprivileged: true) root has CAP_SYS_ADMIN only over its own namespaces: the CAP_SYS_ADMIN and
# blkio v1 holes are closed there (no mknod, no ext4 or cgroup v1 mount, /proc/sys entries of the host belong
# to the host's root), and its per-user counts are those of the block's user, who owns the namespace.
# None stays open for unprivileged containers.
UNPRIVILEGED_HOLES: dict = {}


def _params():
    for privilege in PRIVILEGES:
        for attack_id, function, hole in ATTACKS:
            if privilege == "unprivileged":
                hole = UNPRIVILEGED_HOLES.get(attack_id)
            # raises=AssertionError: only the attack's own check failing counts as the hole; a crash or a
            # SetupError (the attack could not be staged) is an error of the test.
            marks = [pytest.mark.xfail(strict=True, raises=AssertionError, reason=hole)] if hole else []
            yield pytest.param(function, privilege, id="%s-%s" % (privilege, attack_id), marks=marks)


@pytest.mark.parametrize("attack,target", list(_params()), indirect=["target"])
def test_attack(target, attack, busybox_template):
    node, name = target
    if attack in NEEDS_TEMPLATE:
        attack(node, name, busybox_template)
    else:
        attack(node, name)


@pytest.mark.parametrize("privilege", PRIVILEGES)
@pytest.mark.parametrize("attack", [pytest.param(attack_sniff_and_spoof_routed, id="sniff_and_spoof_routed"),
                                    pytest.param(attack_arp_poison_bridged, id="arp_poison_and_sniff_bridged")])
def test_network_attack(request, monkeypatch, attack, privilege):
    # The labs of support/netlab.py (imported above as fixtures): a host namespace, a third party, a bridge.
    lab = request.getfixturevalue("bridged_lab" if attack is attack_arp_poison_bridged else "routed_lab")
    # Every container the lab creates is of the kind asked for.
    monkeypatch.setattr(lab.manager, "create", functools.partial(lab.manager.create,
                                                                 unprivileged=privilege == "unprivileged"))
    before = host_state()
    attack(lab)
    names = lab.manager.layout.names()
    assert names and all(lab.manager.load(n).unprivileged == (privilege == "unprivileged") for n in names)
    assert_host_unchanged(before)


RESTORED_OWNER_HOLE = (
    "CRIU makes the user namespace of a restored container itself, as host root, so the kernel records host root "
    "as its owner and charges the per-user counts of the container's processes (inotify instances and watches, "
    "pending signals, mqueue bytes) to host root again, until the container restarts; CRIU has no way to make it "
    "for another owner (its --join-ns user is untested upstream and would leave the pid namespace outside it)")


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=RESTORED_OWNER_HOLE)
def test_attack_on_a_resumed_unprivileged_container_exhaust_host_root_inotify(node, busybox_template):
    """The per-user counts attack against an unprivileged container that was suspended and resumed (a
    migration's restore is the same). A restart gives the namespace back to the block's user."""
    node.unprivileged = True
    name = node.name()
    node.manager.create(name, busybox_template, diskspace=[DISKSPACE, DISKSPACE], unprivileged=True)
    node.manager.start(name, wait_boot=True, timeout=20)
    checkpointer = Checkpointer(node.manager)
    checkpointer.suspend(name)
    checkpointer.resume(name)
    before = host_state()
    try:
        attack_exhaust_host_root_inotify(node, name)
    finally:
        assert_host_unchanged(before)
