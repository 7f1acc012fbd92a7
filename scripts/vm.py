# -*- coding: utf-8 -*-
"""Debian 12 (bookworm) and Debian 13 (trixie) virtual machines under QEMU (TCG) for the VM test tier.

    python3 scripts/vm.py build [--release R] [--force]  # cached image of release R (debootstrap on the host)
    python3 scripts/vm.py up [N] [--id ID] [--release R[,R...]] [--internet] [--root-size S] [--memory MB]
                                                 # boot N VMs (default 2), wait for SSH, write an inventory
    python3 scripts/vm.py down [--id ID]         # poweroff, then SIGTERM/SIGKILL by recorded PID, remove all
    python3 scripts/vm.py reboot NAME [--id ID]  # a real reboot of one VM, wait for SSH again
    python3 scripts/vm.py ssh NAME [CMD...]      # a shell or a command on a VM
    python3 scripts/vm.py status | sweep         # list runs | down the runs whose owner process is gone
    python3 scripts/vm.py selftest [--release R] [--tests ARGS] [--log FILE] [--command CMD]
                                                 # README's two commands inside one VM, on a clean checkout

``scripts/vm`` is a wrapper that runs this file with /usr/bin/python3.

Releases: ``bookworm`` (the default; ``OVZ_VM_RELEASE`` changes the default) and ``trixie``.
``up --release bookworm,trixie`` boots one VM of each (a mixed fleet).

Image: debootstrap (minbase) of the release into a directory under /var/cache/ovz/vm,
configured for a serial console, DHCP on the user NIC (eth0), a static address of
10.213.0.0/16 and fd00:213::/64 on the private NIC (eth1, from the kernel command
line), root SSH with the platform key, and an XFS data disk mounted on /var/lib/ovz
with usrquota,grpquota,prjquota; then a raw ext4 root image made with
``mkfs.ext4 -d``. VMs boot the image's own kernel and initrd with -kernel/-initrd.
The cache key hashes the release, the package list, the build recipe and the kernel
package version; a build whose key exists returns at once. Each release keeps its own
newest image (building one never removes the other's).

Run: everything of one run is in /var/tmp/ovz-vm-<id>/ (state.json, pidfiles, qcow2
overlays, QMP sockets, console logs, inventory.ini, ssh_config, known_hosts). The
VMs get user-mode networking restricted to themselves (restrict=on: no outside
address is reachable) with SSH forwarded from a free 127.0.0.1 port, and a private
link: a QEMU socket netdev, VM 1 listening and VM 2 connecting on 127.0.0.1 (with
more than two VMs, all connect to a small frame hub run by this script).
``up --internet`` lifts the restriction (restrict=off) and gives the guests slirp's DNS
(10.0.2.3): opt-in, for runs that install packages from the Debian mirror and PyPI
(``selftest``). Such a guest can also reach the host's 127.0.0.1 services as 10.0.2.2.
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import hashlib
import json
import os
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("OVZ_VM_CACHE", "/var/cache/ovz/vm")
RUN_BASE = os.environ.get("OVZ_VM_RUN_BASE", "/var/tmp")
RUN_PREFIX = "ovz-vm-"
MIRROR = os.environ.get("OVZ_VM_MIRROR", "http://deb.debian.org/debian")
KEY_NAME = "id_ed25519"

# Bump when the recipe changes in a way the hashed texts below do not show.
BUILD_VERSION = "1"

PACKAGES = (
    # boot, init, logins
    "systemd-sysv", "dbus", "libpam-systemd", "udev", "kmod", "linux-image-amd64", "initramfs-tools",
    "openssh-server", "openssh-client",
    # what the collection needs on a host (the VMs have no outside network: everything is here)
    "python3", "python3-apt", "python3-pyroute2", "python3-seccomp", "criu", "iproute2", "nftables", "busybox-static",
    "e2fsprogs", "xfsprogs", "quota", "rsync", "zstd", "xz-utils", "ca-certificates", "lxcfs",
    # inspection in tests
    "procps", "psmisc", "iputils-ping", "netbase", "bpftool", "less",
)
ROOT_SIZE = "6G"        # sparse
DATA_SIZE = "16G"       # sparse; XFS on /var/lib/ovz
MEMORY_MB = int(os.environ.get("OVZ_VM_MEMORY_MB", "2048"))
SMP = int(os.environ.get("OVZ_VM_SMP", "2"))
CPU = os.environ.get("OVZ_VM_CPU", "qemu64")
MACHINE = os.environ.get("OVZ_VM_MACHINE", "q35")
PRIVATE_NET4 = "10.213.0.%d/16"
PRIVATE_NET6 = "fd00:213::%d/64"
PRIVATE_HOST_BASE = 10  # VM i gets 10.213.0.(10+i)
BOOT_TIMEOUT = 300

INITRAMFS_HOOK = r"""#!/bin/sh
# ovz VM image: the few modules a QEMU virtio guest needs to mount its root.
PREREQ=""
prereqs() { echo "$PREREQ"; }
case "$1" in prereqs) prereqs; exit 0 ;; esac
. /usr/share/initramfs-tools/hook-functions
for m in virtio_pci virtio_blk ext4; do
    manual_add_modules "$m"
    force_load "$m"
done
"""

FILES = {
    "etc/initramfs-tools/conf.d/ovz-vm": ("MODULES=list\n", 0o644),
    "etc/initramfs-tools/hooks/ovz-vm": (INITRAMFS_HOOK, 0o755),
    "etc/hostname": ("ovz-vm\n", 0o644),
    "etc/hosts": ("127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"
                  "ff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n", 0o644),
    "etc/resolv.conf": ("# ovz VM: no outside network, no DNS\n", 0o644),
    "etc/fstab": ("# ovz VM image\n"
                  "LABEL=ovzroot  /             ext4  rw,errors=remount-ro  0 1\n"
                  "LABEL=ovzdata  /var/lib/ovz  xfs   rw,usrquota,grpquota,prjquota,x-systemd.device-timeout=60s  0 2\n",
                  0o644),
    "etc/apt/sources.list": ("deb http://deb.debian.org/debian bookworm main\n", 0o644),
    "etc/systemd/network/10-ovz-user.network": (
        "# The user-mode (slirp) NIC: SSH from the host arrives here.\n"
        "[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n\n"
        "[DHCPv4]\nUseDNS=no\nUseNTP=no\nUseHostname=no\n", 0o644),
    "usr/local/sbin/ovz-vm-net": (r"""#!/bin/sh
# Private NIC (eth1): addresses from the kernel command line (ovz.priv4= ovz.priv6=),
# written for systemd-networkd before it starts.
set -eu
v4= v6=
for word in $(cat /proc/cmdline); do
    case "$word" in
        ovz.priv4=*) v4=${word#ovz.priv4=} ;;
        ovz.priv6=*) v6=${word#ovz.priv6=} ;;
    esac
done
mkdir -p /run/systemd/network
{
    printf '[Match]\nName=eth1\n\n[Link]\nRequiredForOnline=no\n\n[Network]\nLinkLocalAddressing=ipv6\nIPv6AcceptRA=no\n'
    [ -n "$v4" ] && printf 'Address=%s\n' "$v4"
    [ -n "$v6" ] && printf 'Address=%s\n' "$v6"
} > /run/systemd/network/20-ovz-private.network
""", 0o755),
    "etc/systemd/system/ovz-vm-net.service": (
        "[Unit]\nDescription=ovz VM: private NIC addresses from the kernel command line\n"
        "DefaultDependencies=no\nBefore=systemd-networkd.service network-pre.target\nWants=network-pre.target\n"
        "After=systemd-remount-fs.service\n\n"
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/local/sbin/ovz-vm-net\n\n"
        "[Install]\nWantedBy=sysinit.target\n", 0o644),
    "etc/systemd/system/ovz-vm-ready.service": (
        "[Unit]\nDescription=ovz VM: tell the host on the serial console that SSH is up\n"
        "After=ssh.service\nWants=ssh.service\n\n"
        "[Service]\nType=oneshot\nRemainAfterExit=yes\n"
        "ExecStart=/bin/sh -c 'echo \"ovz-vm-ready boot_id=$(cat /proc/sys/kernel/random/boot_id)\" > /dev/ttyS0'\n\n"
        "[Install]\nWantedBy=multi-user.target\n", 0o644),
    "etc/ssh/sshd_config.d/ovz-vm.conf": (
        "HostKey /etc/ssh/ssh_host_ed25519_key\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUseDNS no\nGSSAPIAuthentication no\n"
        "MaxStartups 50:30:100\nMaxSessions 50\nClientAliveInterval 30\n", 0o644),
    "etc/systemd/journald.conf.d/ovz-vm.conf": ("[Journal]\nSystemMaxUse=64M\nRuntimeMaxUse=32M\n", 0o644),
    "etc/sysctl.d/60-ovz-vm.conf": ("kernel.panic = 10\nkernel.printk = 4 4 1 7\n", 0o644),
}

ENABLE = ("systemd-networkd.service", "ovz-vm-net.service", "ssh.service", "ovz-vm-ready.service")
DISABLE = ("lxcfs.service",)   # the ovz_host role enables it
# Units a headless test VM does without (each costs seconds of boot under TCG).
MASK = ("systemd-networkd-wait-online.service", "apt-daily.timer", "apt-daily-upgrade.timer",
        "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer", "dpkg-db-backup.timer",
        "getty@tty1.service", "systemd-timesyncd.service", "man-db.timer", "modprobe@drm.service",
        "systemd-network-generator.service", "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount",
        "systemd-pstore.service", "modprobe@efi_pstore.service", "systemd-firstboot.service")

# The initrd the VMs boot: busybox and the handful of modules that mount the root disk, so that
# boot does not spend ~10 s of TCG time in initramfs-tools' udev (the distribution's initrd is
# kept in the image too: OVZ_VM_INITRD=distro boots it).
INITRD_MODULES = ("virtio_pci", "virtio_blk", "ext4")
INITRD_INIT = r"""#!/bin/busybox sh
# (the VM's console log shows this script's messages)
# ovz VM initrd: load the modules that reach the root disk, mount it, switch to it.
export PATH=/bin
busybox mkdir -p /proc /sys /dev /newroot
busybox mount -t proc proc /proc
busybox mount -t devtmpfs devtmpfs /dev
root=/dev/vda fstype=ext4 flags=rw
for word in $(busybox cat /proc/cmdline); do
    case "$word" in
        root=/dev/*) root=${word#root=} ;;
        rootfstype=*) fstype=${word#rootfstype=} ;;
        ro) flags=ro ;;
    esac
done
for module in $(busybox cat /modules.order); do
    busybox insmod "$module" 2>/dev/null || echo "ovz initrd: $module not loaded (CPU-specific variants may not apply)"
done
i=0
while [ ! -b "$root" ] && [ $i -lt 1000 ]; do busybox usleep 20000; i=$((i + 1)); done
if ! busybox mount -t "$fstype" -o "$flags" "$root" /newroot; then
    # Power off, so that QEMU exits and 'scripts/vm up' reports this at once.
    echo "ovz initrd: cannot mount $root ($fstype); powering off"
    busybox sleep 1
    busybox poweroff -f
fi
busybox umount /proc
busybox mount --move /dev /newroot/dev
exec busybox switch_root /newroot /sbin/init "$@"
"""

STAGE1 = r"""
ROOTFS=$1 SUITE=$2 MIRROR=$3 INCLUDE=$4 DEBS=$5
export LC_ALL=C DEBIAN_FRONTEND=noninteractive
debootstrap --foreign --variant=minbase --include="$INCLUDE" --cache-dir="$DEBS" "$SUITE" "$ROOTFS" "$MIRROR"
"""

# Runs in a private mount namespace: what debootstrap mounts (proc, sys) cannot outlive it.
STAGE2 = r"""
ROOTFS=$1
export LC_ALL=C DEBIAN_FRONTEND=noninteractive
chroot "$ROOTFS" /debootstrap/debootstrap --second-stage
"""

# The releases an image can be built of. FILES, PACKAGES, ENABLE, DISABLE and MASK above are
# bookworm's recipe, unchanged, so that a bookworm image's cache key stays what it was; a release
# lists only what differs from it ("files" replaces entries of FILES, "mask" adds units).
DEFAULT_RELEASE = os.environ.get("OVZ_VM_RELEASE", "bookworm")
RELEASES = {
    "bookworm": {"debian": "12", "files": {}, "mask": (), "append": ""},
    "trixie": {
        "debian": "13",
        "files": {"etc/apt/sources.list": ("deb http://deb.debian.org/debian trixie main\n", 0o644)},
        # xfs_scrub_all.timer: a weekly scrub of the data disk, like e2scrub_all (new in trixie's
        # xfsprogs); udev-load-credentials: no credentials here (systemd 257 wants it at boot)
        "mask": ("xfs_scrub_all.timer", "systemd-udev-load-credentials.service"),
        # systemd 257's ssh generator probes AF_VSOCK, which this machine model has not, and
        # fails in the journal at every boot; sshd is started by ssh.service as on bookworm.
        "append": "systemd.ssh_auto=no",
    },
}


def check_release(release: str) -> str:
    if release not in RELEASES:
        raise VmError("unknown release %r (known: %s)" % (release, ", ".join(sorted(RELEASES))))
    return release


def recipe(release: str) -> dict:
    """The build recipe of ``release``: bookworm's, with the release's differences applied."""
    spec = RELEASES[check_release(release)]
    files = dict(FILES)
    files.update(spec["files"])
    return {"files": files, "enable": ENABLE, "disable": DISABLE, "mask": MASK + tuple(spec["mask"]),
            "packages": PACKAGES}


# --------------------------------------------------------------------------------------------------
# small helpers

_T0 = time.monotonic()


def log(msg: str) -> None:
    sys.stderr.write("vm: %s\n" % msg)
    sys.stderr.flush()


class VmError(Exception):
    pass


def run(argv, check: bool = True, **kwargs):
    return subprocess.run(argv, check=check, **kwargs)


def write_file(path: str, text: str, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        handle.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def pid_alive_as(pid: int, marker: str) -> bool:
    """Whether ``pid`` is alive and its command line contains ``marker`` (guards against PID reuse)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            cmdline = handle.read()
        with open("/proc/%d/stat" % pid) as handle:
            stat = handle.read()
    except OSError:
        return False
    if stat[stat.rindex(")") + 2:].split()[0] in ("Z", "X"):
        return False
    return marker.encode() in cmdline


def read_pid(path: str) -> int:
    try:
        with open(path) as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    want = ":%04X" % port
    try:
        with open("/proc/net/tcp") as handle:
            next(handle)
            for line in handle:
                fields = line.split()
                if fields[1] == "0100007F" + want and fields[3] == "0A":
                    return True
    except OSError:
        pass
    return False


class Terminated(BaseException):
    """SIGTERM/SIGHUP, turned into an exception so that cleanups run."""


def _raise_terminated(signum, _frame):
    raise Terminated("signal %d" % signum)


def handle_signals() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_terminated)


# --------------------------------------------------------------------------------------------------
# build

def platform_key() -> str:
    """The platform's SSH key (generated once), path of the private half."""
    os.makedirs(CACHE, exist_ok=True)
    key = os.path.join(CACHE, KEY_NAME)
    with open(os.path.join(CACHE, ".key.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (os.path.isfile(key) and os.path.isfile(key + ".pub")):
            for path in (key, key + ".pub"):
                if os.path.exists(path):
                    os.unlink(path)
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ovz-vm-platform", "-f", key])
    return key


def _host_apt_suite(release: str) -> bool:
    """Whether the host's own apt lists index ``release``'s binary packages (the host's release)."""
    try:
        with open("/etc/os-release") as handle:
            return "VERSION_CODENAME=%s" % release in handle.read().split()
    except OSError:
        return False


def release_apt(release: str, refresh: bool = False) -> list:
    """apt options for a private index of ``release``'s main (binary packages) under the cache.

    The host's /etc/apt stays as it is: a binary ``deb`` line of another release there would
    offer that release's libc to the host. The index is fetched when missing, and by ``build``
    once it is a day old (best effort: an old index serves when the mirror cannot be reached).
    """
    base = os.path.join(CACHE, "apt", release)
    opts = ["-o", "Dir::Etc::SourceList=%s/sources.list" % base, "-o", "Dir::Etc::SourceParts=-",
            "-o", "Dir::Etc::Preferences=%s/preferences" % base, "-o", "Dir::Etc::PreferencesParts=-",
            "-o", "Dir::State::Lists=%s/lists" % base, "-o", "Dir::State::status=%s/status" % base,
            "-o", "Dir::Cache=%s/cache" % base, "-o", "APT::Architecture=amd64",
            "-o", "APT::Architectures::=amd64", "-o", "Debug::NoLocking=1"]
    os.makedirs(os.path.join(base, "lists", "partial"), exist_ok=True)
    os.makedirs(os.path.join(base, "cache", "archives", "partial"), exist_ok=True)
    sources = "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n" % (MIRROR, release)
    try:
        with open(os.path.join(base, "sources.list")) as handle:
            same = handle.read() == sources
    except OSError:
        same = False
    if not same:
        write_file(os.path.join(base, "sources.list"), sources)
    if not os.path.exists(os.path.join(base, "status")):
        write_file(os.path.join(base, "status"), "")
    stamp = os.path.join(base, "lists", "ovz-updated")
    try:
        age = time.time() - os.stat(stamp).st_mtime
    except OSError:
        age = None
    if age is None or (refresh and age > 86400):
        with open(os.path.join(base, ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            result = run(["apt-get", "-q", "update"] + opts, check=False, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True)
            if result.returncode == 0:
                write_file(stamp, time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
            else:
                log("apt index of %s not refreshed (apt-get update: %s)"
                    % (release, result.stdout.strip().splitlines()[-1:] or "?"))
    return opts


def kernel_package_version(release: str = "bookworm", refresh: bool = False) -> str:
    """linux-image-amd64's version in the release's main: from the host's apt lists (no network)
    when the host runs that release, else from the release's private index (``release_apt``)."""
    opts = [] if _host_apt_suite(release) else release_apt(release, refresh)
    try:
        out = run(["apt-cache"] + opts + ["madison", "linux-image-amd64"], stdout=subprocess.PIPE,
                  stderr=subprocess.DEVNULL, universal_newlines=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    for line in out.splitlines():
        parts = [p.strip() for p in line.split("|")]
        # (madison also lists source packages of deb-src lines: only the binary package counts)
        if len(parts) == 3 and parts[0] == "linux-image-amd64" and parts[2].split()[1:2] == ["%s/main" % release] \
                and parts[2].endswith("Packages"):
            return parts[1]
    return "unknown"


def cache_key(pubkey: str, release: str = "bookworm", refresh: bool = False) -> dict:
    spec = recipe(release)
    text = json.dumps({"files": spec["files"], "enable": spec["enable"], "disable": spec["disable"],
                       "mask": spec["mask"], "initrd": [INITRD_MODULES, INITRD_INIT],
                       "stage1": STAGE1, "stage2": STAGE2, "root": ROOT_SIZE, "data": DATA_SIZE},
                      sort_keys=True)
    inputs = {
        "suite": release,
        "packages": sorted(set(spec["packages"])),
        "build_version": BUILD_VERSION,
        "recipe_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "kernel_package": kernel_package_version(release, refresh),
        "pubkey": pubkey.strip(),
    }
    inputs["key"] = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    return inputs


def image_dir(key: str) -> str:
    return os.path.join(CACHE, "images", key)


def build(release: str = DEFAULT_RELEASE, force: bool = False, refresh: bool = False) -> str:
    """Build the image of ``release`` if its key is not cached; return the image directory."""
    began = time.monotonic()
    check_release(release)
    key_path = platform_key()
    with open(key_path + ".pub") as handle:
        pubkey = handle.read()
    inputs = cache_key(pubkey, release, refresh)
    target = image_dir(inputs["key"])
    if not force and os.path.isfile(os.path.join(target, "meta.json")):
        log("build: cached %s image %s (%.1f s)" % (release, target, time.monotonic() - began))
        return target
    for tool in ("debootstrap", "mkfs.ext4", "mkfs.xfs", "unshare", "chroot", "qemu-img"):
        if shutil.which(tool) is None:
            raise VmError("%s is missing (apt-get install debootstrap e2fsprogs xfsprogs qemu-utils)" % tool)
    with open(os.path.join(CACHE, ".build.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # a second builder waits, then finds the image
        if not force and os.path.isfile(os.path.join(target, "meta.json")):
            log("build: cached %s image %s (built meanwhile)" % (release, target))
            return target
        _build_locked(inputs, key_path, pubkey, target)
    log("build: %s image %s built in %.1f s" % (release, target, time.monotonic() - began))
    return target


def _build_locked(inputs: dict, key_path: str, pubkey: str, target: str) -> None:
    release = inputs["suite"]
    spec = recipe(release)
    debs = os.path.join(CACHE, "debs")
    os.makedirs(debs, exist_ok=True)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    work = tempfile.mkdtemp(prefix=".build-", dir=os.path.dirname(target))
    rootfs = os.path.join(work, "rootfs")
    out = os.path.join(work, "image")
    os.mkdir(out)
    try:
        step = time.monotonic()
        include = ",".join(sorted(set(spec["packages"])))
        log("build: debootstrap --foreign --variant=minbase %s (%d extra packages)"
            % (release, len(spec["packages"])))
        run(["unshare", "--mount", "--propagation", "private", "--", "bash", "-euo", "pipefail", "-c", STAGE1,
             "stage1", rootfs, release, MIRROR, include, debs], stdout=sys.stderr)
        for rel, (text, mode) in spec["files"].items():
            if rel.startswith("etc/initramfs-tools/"):
                write_file(os.path.join(rootfs, rel), text, mode)
        log("build: debootstrap first stage %.1f s; second stage" % (time.monotonic() - step))
        step = time.monotonic()
        run(["unshare", "--mount", "--propagation", "private", "--", "bash", "-euo", "pipefail", "-c", STAGE2,
             "stage2", rootfs], stdout=sys.stderr)
        log("build: second stage %.1f s" % (time.monotonic() - step))
        step = time.monotonic()
        _configure(rootfs, key_path, pubkey, spec)
        meta = dict(inputs)
        meta.update(_versions(rootfs))
        _copy_boot(rootfs, out)
        log("build: configured in %.1f s; making the disks" % (time.monotonic() - step))
        step = time.monotonic()
        run(["mkfs.ext4", "-q", "-F", "-L", "ovzroot", "-d", rootfs, os.path.join(out, "root.raw"), ROOT_SIZE])
        data = os.path.join(out, "data.raw")
        with open(data, "wb") as handle:
            handle.truncate(_size_bytes(DATA_SIZE))
        run(["mkfs.xfs", "-q", "-f", "-L", "ovzdata", data])
        with open(os.path.join(rootfs, "etc", "ssh", "ssh_host_ed25519_key.pub")) as handle:
            meta["host_key"] = " ".join(handle.read().split()[:2])
        meta["built_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_file(os.path.join(out, "meta.json"), json.dumps(meta, indent=2, sort_keys=True) + "\n")
        log("build: disks in %.1f s" % (time.monotonic() - step))
        if os.path.isdir(target):
            shutil.rmtree(target)
        os.rename(out, target)
        _point_current(target, release)
        _prune_images(keep=target, release=release)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _size_bytes(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def _configure(rootfs: str, key_path: str, pubkey: str, spec: dict) -> None:
    for rel, (text, mode) in spec["files"].items():
        path = os.path.join(rootfs, rel)
        if os.path.islink(path):
            os.unlink(path)
        write_file(path, text, mode)
    os.makedirs(os.path.join(rootfs, "var", "lib", "ovz"), exist_ok=True)
    # root: no password (key login only), the platform key authorized; the same key and the
    # shared host key let the VMs reach each other over the private link (migration).
    run(["chroot", rootfs, "usermod", "-p", "*", "root"])
    ssh_dir = os.path.join(rootfs, "root", ".ssh")
    os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
    write_file(os.path.join(ssh_dir, "authorized_keys"), pubkey, 0o600)
    shutil.copyfile(key_path, os.path.join(ssh_dir, KEY_NAME))
    os.chmod(os.path.join(ssh_dir, KEY_NAME), 0o600)
    for path in glob.glob(os.path.join(rootfs, "etc", "ssh", "ssh_host_*")):
        os.unlink(path)
    host_key = os.path.join(rootfs, "etc", "ssh", "ssh_host_ed25519_key")
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "root@ovz-vm", "-f", host_key])
    with open(host_key + ".pub") as handle:
        host_pub = " ".join(handle.read().split()[:2])
    write_file(os.path.join(ssh_dir, "known_hosts"), "10.213.*,fd00:213::* %s\n" % host_pub, 0o644)
    # units
    run(["chroot", rootfs, "systemctl", "enable", "--quiet"] + list(spec["enable"]))
    run(["chroot", rootfs, "systemctl", "disable", "--quiet"] + list(spec["disable"]))
    run(["chroot", rootfs, "systemctl", "mask", "--quiet"] + list(spec["mask"]))
    run(["chroot", rootfs, "systemctl", "set-default", "--quiet", "multi-user.target"])
    # leftovers of the build
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*",
                    "var/log/*.log", "var/log/apt/*", "tmp/*", "var/tmp/*", "etc/machine-id",
                    "var/lib/dbus/machine-id"):
        for path in glob.glob(os.path.join(rootfs, pattern)):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
    os.makedirs(os.path.join(rootfs, "var", "lib", "apt", "lists", "partial"), exist_ok=True)
    # An empty machine-id: systemd makes a new one at each VM's first boot.
    write_file(os.path.join(rootfs, "etc", "machine-id"), "", 0o444)
    write_file(os.path.join(rootfs, "etc", "ovz-vm-image"), "ovz VM image, built %s\n"
               % time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    # /etc and /var are up to date with /usr: no ConditionNeedsUpdate= units (ldconfig, hwdb,
    # sysusers, catalog) at the first boot of every VM.
    usr_ns = os.stat(os.path.join(rootfs, "usr")).st_mtime_ns
    for rel in ("etc/.updated", "var/.updated"):
        path = os.path.join(rootfs, rel)
        write_file(path, "# ovz VM image\nTIMESTAMP_NSEC=%d\n" % usr_ns)
        os.utime(path, ns=(usr_ns, usr_ns))


def _versions(rootfs: str) -> dict:
    out = run(["dpkg-query", "--admindir=%s/var/lib/dpkg" % rootfs, "-W", "-f", "${Package} ${Version}\\n",
               "linux-image-amd64", "criu", "systemd", "python3"],
              stdout=subprocess.PIPE, universal_newlines=True).stdout
    return {"installed": dict(line.split(" ", 1) for line in out.splitlines() if " " in line)}


def _copy_boot(rootfs: str, out: str) -> None:
    kernels = sorted(glob.glob(os.path.join(rootfs, "boot", "vmlinuz-*")))
    if not kernels:
        raise VmError("no kernel in the image's /boot")
    version = os.path.basename(kernels[-1])[len("vmlinuz-"):]
    initrd = os.path.join(rootfs, "boot", "initrd.img-" + version)
    if not os.path.isfile(initrd):
        raise VmError("no initrd for kernel %s" % version)
    shutil.copyfile(kernels[-1], os.path.join(out, "vmlinuz"))
    shutil.copyfile(initrd, os.path.join(out, "initrd.img"))
    write_file(os.path.join(out, "kernel-release"), version + "\n")
    _extract_vmlinux(os.path.join(out, "vmlinuz"), os.path.join(out, "vmlinux"))
    _make_initrd(rootfs, version, os.path.join(out, "initrd-ovz.img"))


def _extract_vmlinux(bzimage: str, target: str) -> None:
    """The uncompressed kernel (an ELF with a PVH entry), which QEMU boots without the ~5 s that
    the bzImage spends decompressing itself under TCG. Skipped if the kernel is not XZ/PVH."""
    import lzma
    with open(bzimage, "rb") as handle:
        data = handle.read()
    start = data.find(b"\xfd7zXZ\x00")
    if start >= 0:
        try:
            elf = lzma.LZMADecompressor().decompress(data[start:])
        except lzma.LZMAError:
            return
    else:
        elf = _zstd_payload(data)     # trixie's kernel
    if elf[:4] != b"\x7fELF":
        return
    with open(target + ".tmp", "wb") as handle:
        handle.write(elf)
    # XEN_ELFNOTE_PHYS32_ENTRY (0x12): the PVH entry point QEMU needs to boot an ELF kernel.
    notes = run(["readelf", "-n", "-W", target + ".tmp"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                universal_newlines=True, check=False).stdout
    if re.search(r"^\s*Xen\s+0x[0-9a-f]+\s+Unknown note type: \(0x00000012\)", notes, re.M):
        os.rename(target + ".tmp", target)
    else:
        os.unlink(target + ".tmp")


def _zstd_payload(data: bytes) -> bytes:
    """The kernel in a zstd-compressed bzImage (b"" if it is not one): the boot protocol's setup
    header locates the payload, which ends with the uncompressed size (4 bytes, little-endian)."""
    if len(data) < 0x250 or data[0x202:0x206] != b"HdrS":
        return b""
    protected = ((data[0x1f1] or 4) + 1) * 512
    offset, length = struct.unpack_from("<II", data, 0x248)
    payload = data[protected + offset:protected + offset + length]
    if payload[:4] != b"\x28\xb5\x2f\xfd" or shutil.which("zstd") is None:
        return b""
    size = struct.unpack("<I", payload[-4:])[0]
    out = run(["zstd", "-dcq"], input=payload[:-4], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
              check=False).stdout
    return out if out and len(out) == size else b""


def _make_initrd(rootfs: str, version: str, target: str) -> None:
    out = run(["chroot", rootfs, "modprobe", "--all", "--show-depends", "--set-version", version]
              + list(INITRD_MODULES), stdout=subprocess.PIPE, universal_newlines=True).stdout
    modules = []
    for line in out.splitlines():
        words = line.split()
        if words and words[0] == "insmod" and words[1] not in modules:
            modules.append(words[1])
    # busybox's insmod loads plain .ko files: compressed modules (trixie's kernel ships .ko.xz)
    # are stored decompressed, under the name without the suffix.
    plain = [_plain_module_name(m) for m in modules]
    order = "".join(m + "\n" for m in plain).encode()
    entries = [("init", INITRD_INIT.encode(), 0o100755), ("modules.order", order, 0o100644)]
    with open(os.path.join(rootfs, "bin", "busybox"), "rb") as handle:
        entries.append(("bin/busybox", handle.read(), 0o100755))
    for module, name in zip(modules, plain):
        entries.append((name.lstrip("/"), _module_bytes(os.path.join(rootfs, module.lstrip("/"))), 0o100644))
    directories = sorted({os.path.dirname(name)[:i] for name, _d, _m in entries
                          for i in [len(os.path.dirname(name))] if os.path.dirname(name)})
    dirs = set()
    for name in directories:
        parts = name.split("/")
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    with open(target, "wb") as handle:
        inode = 1
        for name in sorted(dirs) + ["dev", "proc", "sys", "newroot"]:
            handle.write(_cpio_entry(name, b"", 0o40755, inode))
            inode += 1
        for name, data, mode in entries:
            handle.write(_cpio_entry(name, data, mode, inode))
            inode += 1
        handle.write(_cpio_entry("TRAILER!!!", b"", 0, 0))


def _plain_module_name(path: str) -> str:
    for suffix in (".xz", ".zst", ".gz"):
        if path.endswith(".ko" + suffix):
            return path[:-len(suffix)]
    if not path.endswith(".ko"):
        raise VmError("module %s: the initrd builder handles .ko, .ko.xz, .ko.zst and .ko.gz" % path)
    return path


def _module_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        data = handle.read()
    if path.endswith(".ko.xz"):
        import lzma
        return lzma.decompress(data)
    if path.endswith(".ko.gz"):
        import gzip
        return gzip.decompress(data)
    if path.endswith(".ko.zst"):
        return run(["zstd", "-dc", path], stdout=subprocess.PIPE).stdout
    return data


def _cpio_entry(name: str, data: bytes, mode: int, inode: int) -> bytes:
    """One record of a "newc" cpio archive (the format the kernel unpacks as an initramfs)."""
    encoded = name.encode() + b"\0"
    fields = (inode, mode, 0, 0, 2 if mode & 0o40000 else 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    record = header + encoded
    record += b"\0" * (-len(record) % 4)
    record += data
    record += b"\0" * (-len(record) % 4)
    return record


def _point_current(target: str, release: str) -> None:
    """``current`` names the newest bookworm image (as it always did), ``current-<release>`` the others'."""
    link = os.path.join(CACHE, "current" if release == "bookworm" else "current-" + release)
    tmp = link + ".tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.relpath(target, CACHE), tmp)
    os.replace(tmp, link)


def image_release(path: str) -> str:
    try:
        with open(os.path.join(path, "meta.json")) as handle:
            return json.load(handle).get("suite", "")
    except (OSError, ValueError):
        return ""


def _prune_images(keep: str, release: str) -> None:
    """Remove the older images of ``release`` that no run on this host still boots from."""
    in_use = set()
    for state in glob.glob(os.path.join(RUN_BASE, RUN_PREFIX + "*", "state.json")):
        try:
            with open(state) as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            continue
        in_use.add(os.path.realpath(data.get("image", "")))
        in_use.update(os.path.realpath(vm.get("image", "")) for vm in data.get("vms", []))
    for path in glob.glob(os.path.join(CACHE, "images", "*")):
        if os.path.realpath(path) in in_use or os.path.realpath(path) == os.path.realpath(keep):
            continue
        # an image without meta.json is a broken one: any build may remove it
        if image_release(path) in (release, ""):
            log("build: removing the old image %s" % path)
            shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# runs

def run_dir(run_id: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,40}", run_id):
        raise VmError("bad run id %r" % run_id)
    return os.path.join(RUN_BASE, RUN_PREFIX + run_id)


def load_state(rdir: str) -> dict:
    try:
        with open(os.path.join(rdir, "state.json")) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def save_state(rdir: str, state: dict) -> None:
    write_file(os.path.join(rdir, "state.json"), json.dumps(state, indent=2, sort_keys=True) + "\n")


def vm_names(count: int, names=None):
    if names:
        if len(names) != count:
            raise VmError("%d names for %d VMs" % (len(names), count))
        for name in names:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,30}", name):
                raise VmError("bad VM name %r" % name)
        return list(names)
    return ["ovz-vm%d" % (i + 1) for i in range(count)]


def qemu_argv(image: str, rdir: str, vm: dict, private: list) -> list:
    name = vm["name"]
    index = vm["index"]
    distro_initrd = os.environ.get("OVZ_VM_INITRD") == "distro" or \
        not os.path.isfile(os.path.join(image, "initrd-ovz.img"))
    kernel = os.path.join(image, "vmlinux")
    if not os.path.isfile(kernel) or os.environ.get("OVZ_VM_KERNEL") == "bzimage":
        kernel = os.path.join(image, "vmlinuz")
    append = ("root=%s rootfstype=ext4 rw console=ttyS0,115200 net.ifnames=0 quiet loglevel=4 "
              "mitigations=off cryptomgr.notests=1 systemd.show_status=error systemd.hostname=%s "
              "systemd.machine_id=%s ovz.priv4=%s ovz.priv6=%s %s %s"
              % ("LABEL=ovzroot" if distro_initrd else "/dev/vda", name, vm["machine_id"], vm["private_cidr"],
                 vm["private6_cidr"], RELEASES.get(vm.get("release", "bookworm"), {}).get("append", ""),
                 os.environ.get("OVZ_VM_APPEND", "")))
    argv = [
        "qemu-system-x86_64", "-name", "%s,process=%s" % (name, name),
        "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
        "-machine", MACHINE, "-accel", "tcg,thread=multi", "-cpu", CPU, "-smp", str(SMP), "-m", str(vm.get("memory_mb", MEMORY_MB)),
        "-kernel", kernel, "-initrd", os.path.join(image, "initrd.img" if distro_initrd else "initrd-ovz.img"),
        "-append", append,
        "-drive", "file=%s,if=virtio,format=qcow2,cache=unsafe,discard=unmap" % vm["root_overlay"],
        "-drive", "file=%s,if=virtio,format=qcow2,cache=unsafe,discard=unmap" % vm["data_overlay"],
        "-netdev", "user,id=user0,restrict=%s,hostfwd=tcp:127.0.0.1:%d-:22"
        % ("off" if vm.get("internet") else "on", vm["ssh_port"]),
        "-device", "virtio-net-pci,netdev=user0,mac=52:54:00:00:01:%02x" % index,
        "-device", "virtio-rng-pci",
        "-serial", "file:%s" % os.path.join(rdir, name + ".console.log"),
        "-qmp", "unix:%s,server=on,wait=off" % os.path.join(rdir, name + ".qmp"),
        "-pidfile", os.path.join(rdir, name + ".qemu.pid"),
    ]
    argv += ["-netdev", "socket,id=priv0,%s" % private[index - 1],
             "-device", "virtio-net-pci,netdev=priv0,mac=52:54:00:21:30:%02x" % index]
    return argv


def ssh_base(rdir: str, name: str, options=()) -> list:
    return ["ssh", "-F", os.path.join(rdir, "ssh_config")] + list(options) + [name]


def ssh(rdir: str, name: str, command: str, timeout: float = 60, check: bool = False, quiet: bool = True,
        options=()):
    argv = ssh_base(rdir, name, options) + [command]
    try:
        return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE if quiet else None,
                              universal_newlines=True, timeout=timeout, check=check, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 255, "", "timeout")


def write_access_files(rdir: str, state: dict) -> None:
    key = state["key"]
    known = os.path.join(rdir, "known_hosts")
    cpdir = os.path.join(rdir, "cp")
    os.makedirs(cpdir, mode=0o700, exist_ok=True)
    write_file(known, "".join("[127.0.0.1]:%d %s\n" % (vm["ssh_port"], vm.get("host_key", state["host_key"]))
                              for vm in state["vms"]))
    config = []
    for vm in state["vms"]:
        config.append("Host %s\n  HostName 127.0.0.1\n  Port %d\n  User root\n  IdentityFile %s\n"
                      "  IdentitiesOnly yes\n  UserKnownHostsFile %s\n  StrictHostKeyChecking yes\n"
                      "  BatchMode yes\n  LogLevel ERROR\n  ConnectTimeout 10\n  ServerAliveInterval 15\n"
                      "  ControlMaster auto\n  ControlPath %s/ssh-%%C\n  ControlPersist 300\n"
                      % (vm["name"], vm["ssh_port"], key, known, cpdir))
    write_file(os.path.join(rdir, "ssh_config"), "\n".join(config))
    common = "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes" % known
    lines = ["# ovz VM platform, run %s (scripts/vm.py); removed by 'scripts/vm down'" % state["id"],
             "[ovz_vms]"]
    for vm in state["vms"]:
        lines.append("%s ansible_host=127.0.0.1 ansible_port=%d ovz_private_ip=%s ovz_private_ip6=%s ovz_vm_index=%d"
                     " ovz_vm_release=%s"
                     % (vm["name"], vm["ssh_port"], vm["private_ip"], vm["private_ip6"], vm["index"],
                        vm.get("release", "bookworm")))
    lines += ["", "[ovz_vms:vars]",
              "ansible_user=root",
              "ansible_ssh_private_key_file=%s" % key,
              "ansible_python_interpreter=/usr/bin/python3",
              "ansible_ssh_common_args='%s'" % common,
              "ansible_ssh_args='-o ControlMaster=auto -o ControlPersist=300s -o ServerAliveInterval=15'",
              "ansible_control_path_dir=%s" % cpdir,
              "ansible_ssh_pipelining=true",
              "ovz_private_prefix=16",
              "ovz_private_prefix6=64",
              "ovz_vm_run_dir=%s" % rdir, ""]
    write_file(os.path.join(rdir, "inventory.ini"), "\n".join(lines))


def console_ready(rdir: str, name: str, old_boot_id: str = "") -> bool:
    """Whether the VM's console shows the ready line (ovz-vm-ready.service) of a boot other than ``old_boot_id``."""
    try:
        with open(os.path.join(rdir, name + ".console.log"), "rb") as handle:
            text = handle.read()
    except OSError:
        return False
    ids = re.findall(rb"ovz-vm-ready boot_id=([0-9a-f-]+)", text)
    return bool(ids) and ids[-1].decode() != old_boot_id


def wait_ssh(rdir: str, vms: list, procs: dict, timeout: float = BOOT_TIMEOUT, boot_ids: dict = None) -> dict:
    """Wait until every VM answers over SSH (with a boot id other than ``boot_ids``); {name: seconds}.

    The guest prints a line on its serial console once sshd listens; SSH is tried then (and,
    as a fallback, every 15 s), so early tries do not pile up in slirp and load the booting guest.
    """
    boot_ids = boot_ids or {}
    began = time.monotonic()
    ready = {}
    pending = {vm["name"]: vm for vm in vms}
    last_try = {}
    while pending:
        for name in list(pending):
            vm = pending[name]
            pid = procs.get(name)
            if pid and not pid_alive_as(pid, rdir):
                raise VmError("QEMU of %s exited during boot; see %s\n%s"
                              % (name, os.path.join(rdir, name + ".qemu.log"), tail(rdir, name)))
            now = time.monotonic()
            if not console_ready(rdir, name, boot_ids.get(name, "")) and now - last_try.get(name, began) < 15:
                continue
            last_try[name] = now
            result = ssh(rdir, name, "cat /proc/sys/kernel/random/boot_id", timeout=30,
                         options=("-o", "ConnectTimeout=20"))
            boot_id = result.stdout.strip() if result.returncode == 0 else ""
            if boot_id and boot_id != boot_ids.get(name):
                ready[name] = time.monotonic() - began
                vm["boot_id"] = boot_id
                del pending[name]
                log("%s: SSH ready after %.1f s (127.0.0.1:%d)" % (name, ready[name], vm["ssh_port"]))
        if not pending:
            break
        if time.monotonic() - began > timeout:
            raise VmError("no SSH from %s within %.0f s\n%s"
                          % (", ".join(sorted(pending)), timeout,
                             "\n".join(tail(rdir, n) for n in sorted(pending))))
        time.sleep(0.2)
    return ready


def tail(rdir: str, name: str, lines: int = 30) -> str:
    path = os.path.join(rdir, name + ".console.log")
    try:
        with open(path, errors="replace") as handle:
            text = handle.read().splitlines()[-lines:]
    except OSError:
        return "(no console log %s)" % path
    return "--- last lines of %s ---\n%s" % (path, "\n".join(text))


def parse_releases(text: str, count: int) -> list:
    """``bookworm`` (every VM) or ``bookworm,trixie`` (one per VM, in order) -> one release per VM."""
    releases = [check_release(r.strip()) for r in (text or DEFAULT_RELEASE).split(",")]
    if len(releases) == 1:
        return releases * count
    if len(releases) != count:
        raise VmError("%d releases for %d VMs (give one, or one per VM)" % (len(releases), count))
    return releases


def up(count: int, run_id: str, names=None, owner: int = 0, keep_on_failure: bool = False,
       releases=None, internet: bool = False, root_size: str = "", memory_mb: int = 0) -> str:
    """Boot ``count`` VMs. ``releases``: one per VM (default: DEFAULT_RELEASE for all).
    ``internet``: user network without restrict=on, DNS from slirp. ``root_size``: the root
    overlay's size (grown online after boot; the image's is ROOT_SIZE). ``memory_mb``: per VM."""
    began = time.monotonic()
    rdir = run_dir(run_id)
    releases = list(releases or [DEFAULT_RELEASE] * count)
    if len(releases) != count:
        raise VmError("%d releases for %d VMs" % (len(releases), count))
    if root_size and _size_bytes(root_size) < _size_bytes(ROOT_SIZE):
        raise VmError("--root-size %s is below the image's %s" % (root_size, ROOT_SIZE))
    if os.path.isdir(rdir):
        state = load_state(rdir)
        if any(pid_alive_as(read_pid(p), rdir) for p in glob.glob(os.path.join(rdir, "*.pid"))):
            raise VmError("run %s is up (%s): 'scripts/vm down --id %s' first" % (run_id, rdir, run_id))
        log("removing the stale run dir %s" % rdir)
        down(run_id)
    images = {}
    metas = {}
    for release in releases:
        if release not in images:
            images[release] = build(release)
            with open(os.path.join(images[release], "meta.json")) as handle:
                metas[release] = json.load(handle)
    os.makedirs(rdir, mode=0o755)
    first = releases[0]
    state = {"id": run_id, "image": images[first], "key": os.path.join(CACHE, KEY_NAME),
             "host_key": metas[first]["host_key"], "release": ",".join(sorted(set(releases))),
             "internet": bool(internet), "owner": owner, "created": time.time(), "vms": []}
    save_state(rdir, state)
    try:
        for index, name in enumerate(vm_names(count, names), start=1):
            host = PRIVATE_HOST_BASE + index
            release = releases[index - 1]
            state["vms"].append({
                "name": name, "index": index, "ssh_port": 0,
                "machine_id": hashlib.sha256(("%s/%s/%f" % (run_id, name, time.time())).encode()).hexdigest()[:32],
                "private_ip": (PRIVATE_NET4 % host).split("/")[0], "private_cidr": PRIVATE_NET4 % host,
                "private_ip6": (PRIVATE_NET6 % host).split("/")[0], "private6_cidr": PRIVATE_NET6 % host,
                "root_overlay": os.path.join(rdir, name + "-root.qcow2"),
                "data_overlay": os.path.join(rdir, name + "-data.qcow2"),
                "release": release, "debian": RELEASES[release]["debian"], "image": images[release],
                "host_key": metas[release]["host_key"], "internet": bool(internet),
                "memory_mb": memory_mb or MEMORY_MB,
            })
        for vm in state["vms"]:
            for disk, base in (("root_overlay", "root.raw"), ("data_overlay", "data.raw")):
                size = [root_size] if root_size and disk == "root_overlay" else []
                run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", os.path.join(vm["image"], base), "-F", "raw",
                     vm[disk]] + size)
        private = _private_links(rdir, state)
        save_state(rdir, state)
        procs = {}
        for vm in state["vms"]:
            procs[vm["name"]] = _start_qemu(vm["image"], rdir, vm, private)
            save_state(rdir, state)
            if vm["index"] == 1 and len(state["vms"]) == 2:
                _wait_listening(state["private_port"], procs[vm["name"]], rdir, vm["name"])
        write_access_files(rdir, state)
        log("booting %d VM(s) (%s) under TCG%s" % (count, ",".join(releases),
                                                   " with outside access (restrict=off)" if internet else ""))
        times = wait_ssh(rdir, state["vms"], procs)
        state["boot_seconds"] = times
        save_state(rdir, state)
        _after_boot(rdir, state, grow_root=bool(root_size))
        log("up: %d VM(s) in %.1f s; inventory %s" % (count, time.monotonic() - began,
                                                      os.path.join(rdir, "inventory.ini")))
    except BaseException as exc:
        if keep_on_failure:
            log("up failed (%s); kept %s for inspection ('scripts/vm down --id %s' removes it)" % (exc, rdir, run_id))
        else:
            log("up failed (%s); removing what it started" % (str(exc).splitlines()[0] if str(exc) else
                                                              type(exc).__name__))
            down(run_id, graceful=False)
        raise
    return rdir


# slirp's DNS forwarder: the guest's only name server when the run has outside access.
SLIRP_DNS = "10.0.2.3"


def _after_boot(rdir: str, state: dict, grow_root: bool) -> None:
    """What the image cannot know: outside access (a name server), a grown root disk, and the
    peers' host keys when the VMs boot different images (each image has its own host key)."""
    host_keys = {vm["host_key"] for vm in state["vms"]}
    for vm in state["vms"]:
        steps = []
        if vm.get("internet"):
            steps.append("printf '# ovz VM with outside access: slirp DNS\\nnameserver %s\\n' > /etc/resolv.conf"
                         % SLIRP_DNS)
        if grow_root:
            steps.append("resize2fs /dev/vda >/dev/null 2>&1")
        if len(host_keys) > 1:
            lines = "".join("%s,%s %s\\n" % (peer["private_ip"], peer["private_ip6"], peer["host_key"])
                            for peer in state["vms"])
            steps.append("printf '%s' > /root/.ssh/known_hosts" % lines)
        if not steps:
            continue
        result = ssh(rdir, vm["name"], " && ".join(steps), timeout=300)
        if result.returncode != 0:
            raise VmError("%s: set-up after boot failed: %s" % (vm["name"], result.stderr.strip()))


def _private_links(rdir: str, state: dict) -> list:
    """The socket netdev option of each VM's private NIC."""
    count = len(state["vms"])
    port = free_port()
    state["private_port"] = port
    if count == 1:
        return ["listen=127.0.0.1:%d" % port]
    if count == 2:
        return ["listen=127.0.0.1:%d" % port, "connect=127.0.0.1:%d" % port]
    # More than two: a hub this script runs, each VM connecting to it.
    log_path = os.path.join(rdir, "ovz-hub.log")
    with open(log_path, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-I", os.path.abspath(__file__), "_hub", "--run-dir", rdir,
                                 "--port", str(port)], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, close_fds=True)
    write_file(os.path.join(rdir, "ovz-hub.pid"), "%d\n" % proc.pid)
    _wait_listening(port, proc.pid, rdir, "hub")
    return ["connect=127.0.0.1:%d" % port] * count


def _wait_listening(port: int, pid: int, rdir: str, what: str) -> None:
    deadline = time.monotonic() + 30
    while not listening(port):
        if not pid_alive_as(pid, rdir):
            raise VmError("%s exited before listening on 127.0.0.1:%d\n%s" % (what, port, tail(rdir, what)))
        if time.monotonic() > deadline:
            raise VmError("%s does not listen on 127.0.0.1:%d" % (what, port))
        time.sleep(0.02)


def _start_qemu(image: str, rdir: str, vm: dict, private: list) -> int:
    name = vm["name"]
    for attempt in range(5):
        vm["ssh_port"] = free_port()
        argv = qemu_argv(image, rdir, vm, private)
        log_path = os.path.join(rdir, name + ".qemu.log")
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True, close_fds=True, cwd=rdir)
        write_file(os.path.join(rdir, name + ".pid"), "%d\n" % proc.pid)
        # QEMU fails at once if the forwarded port was taken meanwhile: then try another.
        time.sleep(0.3)
        if proc.poll() is None:
            return proc.pid
        with open(log_path, errors="replace") as handle:
            error = handle.read().strip()
        if "forwarding" not in error or attempt == 4:
            raise VmError("QEMU of %s failed: %s" % (name, error))
    raise VmError("unreachable")


def _stop_pid(pid: int, rdir: str, grace: float) -> None:
    """Wait ``grace`` seconds for ``pid`` to exit, then SIGTERM, then SIGKILL (only if it is still ours)."""
    deadline = time.monotonic() + grace
    while pid_alive_as(pid, rdir) and time.monotonic() < deadline:
        time.sleep(0.1)
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        if not pid_alive_as(pid, rdir):
            break
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while pid_alive_as(pid, rdir) and time.monotonic() < deadline:
            time.sleep(0.05)
    _reap(pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def down(run_id: str, graceful: bool = True) -> bool:
    """Stop every QEMU of the run, remove overlays and the run dir; returns whether anything was there."""
    began = time.monotonic()
    rdir = run_dir(run_id)
    if not os.path.isdir(rdir):
        log("down: %s: nothing to do" % rdir)
        return False
    state = load_state(rdir)
    names = [vm["name"] for vm in state.get("vms", [])]
    pids = {}
    # <name>.pid is written by this script right after the fork; <name>.qemu.pid by QEMU
    # itself (-pidfile): the same PID, and a fallback should an aborted 'up' have missed the first.
    for path in sorted(glob.glob(os.path.join(rdir, "*.pid")), key=lambda p: p.endswith(".qemu.pid")):
        base = os.path.basename(path)[:-len(".pid")]
        if base.endswith(".qemu"):
            base = base[:-len(".qemu")]
        pid = read_pid(path)
        if base not in pids and pid and pid_alive_as(pid, rdir):
            pids[base] = pid
    vms = [n for n in names if n in pids]
    if graceful and vms and os.path.isfile(os.path.join(rdir, "ssh_config")):
        # poweroff over SSH, all VMs at once; QEMU exits when the guest powers off
        procs = [subprocess.Popen(ssh_base(rdir, n) + ["systemctl poweroff --no-block"], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for n in vms]
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    _close_masters(rdir)
    grace = 30.0 if graceful else 0.0
    for name in vms:
        _stop_pid(pids[name], rdir, grace)
        grace = 2.0 if graceful else 0.0     # the others powered off in parallel
    for name, pid in pids.items():
        if name not in vms:
            _stop_pid(pid, rdir, 0.0)        # the hub, or a VM the state file does not name
    left = [n for n, p in pids.items() if pid_alive_as(p, rdir)]
    if left:
        raise VmError("down: %s still running; %s kept" % (", ".join(left), rdir))
    shutil.rmtree(rdir)
    log("down: %s removed in %.1f s (%d QEMU process(es) stopped)" % (rdir, time.monotonic() - began, len(vms)))
    return True


def _close_masters(rdir: str) -> None:
    for sock in glob.glob(os.path.join(rdir, "cp", "*")):
        subprocess.run(["ssh", "-o", "ControlPath=%s" % sock, "-O", "exit", "ovz-vm"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10, check=False)


def reboot(run_id: str, name: str, timeout: float = BOOT_TIMEOUT) -> float:
    rdir = run_dir(run_id)
    state = load_state(rdir)
    vm = next((v for v in state.get("vms", []) if v["name"] == name), None)
    if vm is None:
        raise VmError("no VM %s in run %s" % (name, run_id))
    result = ssh(rdir, name, "cat /proc/sys/kernel/random/boot_id", timeout=30)
    if result.returncode != 0:
        raise VmError("%s does not answer over SSH: %s" % (name, result.stderr.strip()))
    old = result.stdout.strip()
    began = time.monotonic()
    ssh(rdir, name, "systemctl reboot --no-block", timeout=30)
    # The old master connection dies with the VM's sshd; do not let it answer for the new boot.
    _close_masters(rdir)
    pid = read_pid(os.path.join(rdir, name + ".pid"))
    seconds = wait_ssh(rdir, [vm], {name: pid}, timeout, boot_ids={name: old})[name]
    log("reboot: %s back after %.1f s" % (name, time.monotonic() - began))
    return seconds


def list_runs() -> list:
    runs = []
    for rdir in sorted(glob.glob(os.path.join(RUN_BASE, RUN_PREFIX + "*"))):
        if not os.path.isdir(rdir):
            continue
        state = load_state(rdir)
        alive = [os.path.basename(p)[:-4] for p in glob.glob(os.path.join(rdir, "*.pid"))
                 if not p.endswith(".qemu.pid") and pid_alive_as(read_pid(p), rdir)]
        runs.append({"id": os.path.basename(rdir)[len(RUN_PREFIX):], "dir": rdir, "alive": alive,
                     "owner": state.get("owner", 0), "vms": [vm["name"] for vm in state.get("vms", [])]})
    return runs


def sweep() -> int:
    """Down the runs whose owner process is gone (an interrupted test run that could not clean up)."""
    count = 0
    for item in list_runs():
        owner = item["owner"]
        if owner and not os.path.exists("/proc/%d" % owner):
            log("sweep: run %s (owner %d is gone)" % (item["id"], owner))
            down(item["id"], graceful=False)
            count += 1
    return count


# --------------------------------------------------------------------------------------------------
# selftest: README's two commands inside one VM, on a clean checkout

SELFTEST_DIR = "/root/ovz.containers"     # the checkout inside the VM
SELFTEST_ROOT_SIZE = "48G"                # sparse: setup installs QEMU, LXC, compilers and builds templates
SELFTEST_MEMORY_MB = 6144
SELFTEST_FILES = "/root/ovz-selftest"     # .sh, .log, .pid, .rc in the guest
# The host's own extra CAs (a TLS-inspecting egress proxy's, for one): a machine behind such a
# proxy has them, and the guest reaches PyPI through the same proxy.
HOST_CA_GLOB = "/usr/local/share/ca-certificates/*.crt"

SELFTEST_SCRIPT = r"""#!/bin/bash
# ovz VM selftest (written by scripts/vm.py selftest): README's commands on a clean checkout.
echo $$ > %(files)s.pid
set -u
export LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive HOME=/root
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
cd %(dir)s || exit 2
began=$SECONDS
stamp() { printf '\n=== selftest %%s [%%s, +%%d s] %%s\n' "$(hostname)" "$(date -u +%%FT%%TZ)" $((SECONDS - began)) "$*"; }
stamp "guest: Debian $(cat /etc/debian_version), kernel $(uname -r), $(python3 --version 2>&1), $(nproc) CPUs, $(free -m | awk '/^Mem:/ {print $2}') MiB"
rc=0
if [ -n %(command)s ]; then
    stamp "command: "%(command)s
    bash -c %(command)s || rc=$?
else
    stamp "./scripts/setup --no-demo"
    ./scripts/setup --no-demo || rc=$?
    stamp "./scripts/setup exited $rc"
    if [ "$rc" = 0 ]; then
        # No per-test limit: under TCG a test takes 15-18 times as long as on a host.
        stamp "OVZ_VM_TIER=0 OVZ_TEST_TIMEOUT=0 ./scripts/test "%(tests_shown)s
        OVZ_VM_TIER=0 OVZ_TEST_TIMEOUT=0 ./scripts/test %(tests)s || rc=$?
        stamp "./scripts/test exited $rc"
    fi
fi
stamp "exit $rc"
echo "$rc" > %(files)s.rc.tmp && mv %(files)s.rc.tmp %(files)s.rc
"""


def _git(*args) -> str:
    return run(["git", "-C", REPO] + list(args), stdout=subprocess.PIPE, universal_newlines=True).stdout.strip()


def selftest(release: str, tests: str, log_path: str, command: str = "", ref: str = "HEAD", run_id: str = "",
             root_size: str = SELFTEST_ROOT_SIZE, memory_mb: int = SELFTEST_MEMORY_MB, host_ca: bool = True,
             seed_templates: bool = False) -> int:
    """Boot one VM of ``release`` with outside access, copy ``git archive ref`` in, run
    ``./scripts/setup --no-demo`` then ``OVZ_VM_TIER=0 ./scripts/test TESTS`` (or ``command``),
    stream the output to ``log_path`` and stdout, take the VM down whatever happens; the
    guest's exit status. ``seed_templates`` copies this host's Debian template tarballs into
    the guest's template cache first (see _selftest_seed_templates)."""
    import shlex
    check_release(release)
    run_id = run_id or "selftest%d" % os.getpid()
    commit = _git("rev-parse", "--verify", ref + "^{commit}")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    test_args = shlex.split(tests or "")
    began = time.monotonic()
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    with open(log_path, "w", encoding="utf-8", errors="replace") as out:
        def note(text: str) -> None:
            line = "selftest: %s\n" % text
            out.write(line)
            out.flush()
            sys.stdout.write(line)
            sys.stdout.flush()

        note("%s  release %s (Debian %s), commit %s%s" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                                          release, RELEASES[release]["debian"], commit,
                                                          " (the work tree's uncommitted changes are not in it)"
                                                          if dirty else ""))
        note("in the VM: %s" % (("bash -c %s" % shlex.quote(command)) if command else
                                "./scripts/setup --no-demo && OVZ_VM_TIER=0 OVZ_TEST_TIMEOUT=0 ./scripts/test %s"
                                % " ".join(shlex.quote(a) for a in test_args)))
        rc = 1
        try:
            rdir = up(1, run_id, owner=os.getpid(), releases=[release], internet=True, root_size=root_size,
                      memory_mb=memory_mb)
            state = load_state(rdir)
            vm = state["vms"][0]
            name = vm["name"]
            note("VM %s up in %.0f s (run %s, %d MiB, root %s, outside access through slirp)"
                 % (name, time.monotonic() - began, run_id, vm["memory_mb"], root_size))
            _selftest_prepare(rdir, name, host_ca, note)
            archive = subprocess.Popen(["git", "-C", REPO, "archive", "--format=tar",
                                        "--prefix=%s/" % os.path.basename(SELFTEST_DIR), commit],
                                       stdout=subprocess.PIPE)
            copied = subprocess.run(ssh_base(rdir, name) + ["rm -rf %s && tar -x -C %s" % (
                SELFTEST_DIR, os.path.dirname(SELFTEST_DIR))], stdin=archive.stdout, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, universal_newlines=True, check=False)
            archive.stdout.close()
            if archive.wait() != 0 or copied.returncode != 0:
                raise VmError("copying git archive %s into the VM failed: %s" % (commit, copied.stdout.strip()))
            # A clean clone, as on a build machine: scripts/sanity (the full ./scripts/test) lists the
            # files with git ls-files. git is the only package added before ./scripts/setup.
            made = ssh(rdir, name, "cd %s && { command -v git >/dev/null || { apt-get -q update >/dev/null && "
                       "DEBIAN_FRONTEND=noninteractive apt-get -q -y install --no-install-recommends git >/dev/null; }; }"
                       " && git init -q && git add -A && git -c user.name=ovz-selftest -c user.email=root@localhost "
                       "commit -q -m %s && git log --oneline | head -1" % (SELFTEST_DIR, shlex.quote(
                           "git archive of %s" % commit)), timeout=1800)
            if made.returncode != 0:
                raise VmError("making %s a git checkout failed: %s" % (SELFTEST_DIR, made.stderr.strip()[-2000:]))
            note("git archive %s copied to %s:%s (a git repository again: %s)"
                 % (commit[:12], name, SELFTEST_DIR, made.stdout.strip()))
            if seed_templates:
                _selftest_seed_templates(rdir, name, note)
            script = SELFTEST_SCRIPT % {
                "files": SELFTEST_FILES, "dir": SELFTEST_DIR, "command": shlex.quote(command),
                "tests": " ".join(shlex.quote(a) for a in test_args),
                "tests_shown": shlex.quote(" ".join(shlex.quote(a) for a in test_args))}
            put = subprocess.run(ssh_base(rdir, name) + ["cat > %s.sh && rm -f %s.rc %s.pid %s.log" % (
                (SELFTEST_FILES,) * 4)], input=script, universal_newlines=True, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, check=False)
            if put.returncode != 0:
                raise VmError("cannot write the selftest script: %s" % put.stdout.strip())
            # Detached in the guest (its own session): a dropped SSH connection does not end it,
            # the host reconnects and goes on reading the log where it left off.
            ssh(rdir, name, "setsid -f bash %s.sh > %s.log 2>&1 < /dev/null" % (SELFTEST_FILES, SELFTEST_FILES),
                timeout=120, check=True)
            rc = _selftest_follow(rdir, name, out)
        finally:
            note("taking the VM down")
            try:
                down(run_id)
            except VmError as exc:
                note("down: %s" % exc)
                rc = rc or 1
                raise
            finally:
                note("exit %s after %.0f s; log %s" % (rc, time.monotonic() - began, log_path))
    return rc


# Where scripts/build-debian-template keeps its tarballs, under a name that hashes its inputs.
TEMPLATE_CACHE = "/var/cache/ovz/templates"


def _selftest_seed_templates(rdir: str, name: str, note) -> None:
    """Copy the host's Debian 12 and 13 template tarballs into the guest's template cache.

    Under TCG, debootstrap of one template takes about half an hour. The tarball's name
    hashes every input of the build (release, packages, masked units, the build steps), so
    the guest's ``scripts/build-debian-template`` takes a copy only when the checkout would
    have built the same thing, and builds anew otherwise. The host builds what it lacks.
    """
    ssh(rdir, name, "mkdir -p %s" % TEMPLATE_CACHE, timeout=120, check=True)
    for release in ("bookworm", "trixie"):
        built = run([os.path.join(REPO, "scripts", "build-debian-template"), "--release", release],
                    stdout=subprocess.PIPE, universal_newlines=True)
        tarball = built.stdout.strip().splitlines()[-1]
        dest = os.path.join(TEMPLATE_CACHE, os.path.basename(tarball))
        with open(tarball, "rb") as handle:
            copied = subprocess.run(ssh_base(rdir, name) + ["cat > %s.part && mv %s.part %s" % (dest, dest, dest)],
                                    stdin=handle, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        if copied.returncode != 0:
            raise VmError("cannot copy %s into the VM: %s" % (tarball, copied.stdout.decode(errors="replace")))
        note("template cache seeded: %s (%d MiB, built on this host)"
             % (os.path.basename(tarball), os.path.getsize(tarball) >> 20))


def _selftest_prepare(rdir: str, name: str, host_ca: bool, note) -> None:
    if host_ca:
        cas = sorted(glob.glob(HOST_CA_GLOB))
        for path in cas:
            with open(path) as handle:
                text = handle.read()
            dest = "/usr/local/share/ca-certificates/ovz-host-%s" % os.path.basename(path)
            result = subprocess.run(ssh_base(rdir, name) + ["cat > %s" % dest], input=text, universal_newlines=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
            if result.returncode != 0:
                raise VmError("cannot copy %s into the VM: %s" % (path, result.stdout.strip()))
        if cas:
            # pip verifies with its own bundle unless told to use the system's
            result = ssh(rdir, name, "update-ca-certificates >/dev/null 2>&1 && printf "
                         "'[global]\\ncert = /etc/ssl/certs/ca-certificates.crt\\n' > /etc/pip.conf", timeout=300)
            if result.returncode != 0:
                raise VmError("update-ca-certificates failed in the VM: %s" % result.stderr.strip())
            note("the host's extra CAs trusted in the VM (system store and pip): %s"
                 % ", ".join(os.path.basename(p) for p in cas))


def _selftest_follow(rdir: str, name: str, out) -> int:
    """Copy the guest's log to ``out`` and stdout as it grows; the guest script's exit status."""
    offset = 0
    failures = 0
    while True:
        proc = subprocess.Popen(ssh_base(rdir, name, ("-o", "ServerAliveInterval=30", "-o", "ServerAliveCountMax=20"))
                                + ["while [ ! -s {f}.pid ]; do sleep 1; done; "
                                   "tail -c +{o} --pid=$(cat {f}.pid) -F {f}.log 2>/dev/null".format(
                                       f=SELFTEST_FILES, o=offset + 1)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            while True:
                chunk = proc.stdout.read1(65536) if hasattr(proc.stdout, "read1") else proc.stdout.read(4096)
                if not chunk:
                    break
                offset += len(chunk)
                text = chunk.decode("utf-8", errors="replace")
                out.write(text)
                out.flush()
                sys.stdout.write(text)
                sys.stdout.flush()
        finally:
            if proc.poll() is None:
                proc.terminate()
            proc.wait()
        done = ssh(rdir, name, "cat %s.rc" % SELFTEST_FILES, timeout=120)
        if done.returncode == 0 and done.stdout.strip().isdigit():
            # whatever the log got after tail's last read
            rest = subprocess.run(ssh_base(rdir, name) + ["tail -c +%d %s.log" % (offset + 1, SELFTEST_FILES)],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False)
            text = rest.stdout.decode("utf-8", errors="replace")
            out.write(text)
            sys.stdout.write(text)
            return int(done.stdout.strip())
        pid = read_pid(os.path.join(rdir, name + ".pid"))
        if not pid_alive_as(pid, rdir):
            raise VmError("the VM's QEMU exited during the selftest\n%s" % tail(rdir, name))
        failures += 1
        log("selftest: lost the log stream (%d); reconnecting" % failures)
        time.sleep(min(60, 5 * failures))


# --------------------------------------------------------------------------------------------------
# the private-link hub for more than two VMs: QEMU's socket netdev frames are a 4-byte
# big-endian length and the Ethernet frame; a hub repeats each frame to every other VM.

def hub(port: int) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(16)
    sel = selectors.DefaultSelector()
    sel.register(server, selectors.EVENT_READ)
    buffers = {}
    while True:
        for key, _mask in sel.select():
            if key.fileobj is server:
                conn, _addr = server.accept()
                sel.register(conn, selectors.EVENT_READ)
                buffers[conn] = b""
                continue
            conn = key.fileobj
            data = conn.recv(65536)
            if not data:
                sel.unregister(conn)
                del buffers[conn]
                conn.close()
                continue
            buffers[conn] += data
            while len(buffers[conn]) >= 4:
                length = struct.unpack("!I", buffers[conn][:4])[0]
                if len(buffers[conn]) < 4 + length:
                    break
                frame, buffers[conn] = buffers[conn][:4 + length], buffers[conn][4 + length:]
                for other in buffers:
                    if other is not conn:
                        try:
                            other.sendall(frame)
                        except OSError:
                            pass


# --------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/vm", description=__doc__.split("\n\n", maxsplit=1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="build the cached VM image")
    p_build.add_argument("--release", default=DEFAULT_RELEASE,
                         help="Debian release, or several: bookworm,trixie (default %(default)s; "
                              "OVZ_VM_RELEASE sets the default)")
    p_build.add_argument("--force", action="store_true")
    default_id = os.environ.get("OVZ_VM_ID", "default")
    p_up = sub.add_parser("up", help="boot N VMs")
    p_up.add_argument("count", nargs="?", type=int, default=2)
    p_up.add_argument("--id", default=default_id)
    p_up.add_argument("--names", help="comma-separated VM names (default ovz-vm1,ovz-vm2,...)")
    p_up.add_argument("--owner", type=int, default=0, help="PID whose end makes 'sweep' remove this run")
    p_up.add_argument("--keep-on-failure", action="store_true")
    p_up.add_argument("--release", default=DEFAULT_RELEASE,
                      help="release of every VM, or one per VM: bookworm,trixie (default %(default)s)")
    p_up.add_argument("--internet", action="store_true",
                      help="outside access: restrict=off and slirp's DNS (the Debian mirror, PyPI)")
    p_up.add_argument("--root-size", default="", help="grow each VM's root disk to this size (sparse), e.g. 40G")
    p_up.add_argument("--memory", type=int, default=0, help="MiB per VM (default %d)" % MEMORY_MB)
    p_down = sub.add_parser("down", help="stop the VMs of a run and remove it")
    p_down.add_argument("--id", default=default_id)
    p_down.add_argument("--force", action="store_true", help="no poweroff over SSH: signals only")
    p_reboot = sub.add_parser("reboot", help="reboot one VM and wait for SSH")
    p_reboot.add_argument("name")
    p_reboot.add_argument("--id", default=default_id)
    p_ssh = sub.add_parser("ssh", help="ssh to a VM")
    p_ssh.add_argument("name")
    p_ssh.add_argument("cmd", nargs=argparse.REMAINDER)
    p_ssh.add_argument("--id", default=default_id)
    p_self = sub.add_parser("selftest", help="README's setup and test commands inside one VM, on a clean checkout")
    p_self.add_argument("--release", default=DEFAULT_RELEASE, choices=sorted(RELEASES))
    p_self.add_argument("--tests", default="", help="arguments for ./scripts/test (pytest's), one shell-quoted string")
    p_self.add_argument("--command", dest="guest_command", default="",
                        help="run this shell command in the checkout instead (plumbing)")
    p_self.add_argument("--log", default="", help="log file (default /var/tmp/ovz-selftest-RELEASE-PID.log)")
    p_self.add_argument("--ref", default="HEAD", help="the commit of %s to copy in (git archive)" % REPO)
    p_self.add_argument("--id", default="")
    p_self.add_argument("--root-size", default=SELFTEST_ROOT_SIZE)
    p_self.add_argument("--memory", type=int, default=SELFTEST_MEMORY_MB, help="MiB (default %(default)s)")
    p_self.add_argument("--seed-templates", action="store_true",
                        help="copy this host's Debian template tarballs into the guest's cache (TCG debootstrap is slow)")
    p_self.add_argument("--no-host-ca", action="store_true",
                        help="do not copy the host's extra CAs (%s) into the VM" % HOST_CA_GLOB)
    sub.add_parser("status", help="list the runs on this host")
    sub.add_parser("sweep", help="down the runs whose owner process is gone")
    p_hub = sub.add_parser("_hub")
    p_hub.add_argument("--port", type=int, required=True)
    p_hub.add_argument("--run-dir", required=True)
    args = parser.parse_args(argv)

    if args.command == "_hub":
        hub(args.port)
        return 0
    if os.geteuid() != 0:
        log("run as root")
        return 1
    handle_signals()
    try:
        if args.command == "build":
            for release in dict.fromkeys(r.strip() for r in args.release.split(",")):
                print(build(check_release(release), args.force, refresh=True))
        elif args.command == "up":
            if args.count < 1 or args.count > 16:
                raise VmError("between 1 and 16 VMs")
            names = args.names.split(",") if args.names else None
            rdir = up(args.count, args.id, names, args.owner, args.keep_on_failure,
                      releases=parse_releases(args.release, args.count), internet=args.internet,
                      root_size=args.root_size, memory_mb=args.memory)
            print(os.path.join(rdir, "inventory.ini"))
        elif args.command == "down":
            down(args.id, graceful=not args.force)
        elif args.command == "reboot":
            reboot(args.id, args.name)
        elif args.command == "ssh":
            rdir = run_dir(args.id)
            os.execvp("ssh", ssh_base(rdir, args.name) + args.cmd)
        elif args.command == "status":
            for item in list_runs():
                print("%s  %s  vms=%s alive=%s owner=%s"
                      % (item["id"], item["dir"], ",".join(item["vms"]), ",".join(item["alive"]) or "-",
                         item["owner"] or "-"))
        elif args.command == "sweep":
            sweep()
        elif args.command == "selftest":
            log_path = args.log or os.path.join(RUN_BASE, "ovz-selftest-%s-%d.log" % (args.release, os.getpid()))
            return selftest(args.release, args.tests, log_path, command=args.guest_command, ref=args.ref,
                            run_id=args.id, root_size=args.root_size, memory_mb=args.memory,
                            host_ca=not args.no_host_ca, seed_templates=args.seed_templates)
    except VmError as exc:
        log("ERROR: %s" % exc)
        return 1
    except (KeyboardInterrupt, Terminated) as exc:
        log("interrupted (%s)" % (exc or "SIGINT"))
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
