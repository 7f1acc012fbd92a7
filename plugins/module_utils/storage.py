# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A container's private area and its root mount.

Two layouts:

``image`` (default, like OpenVZ 7's ploop)
    ``private/<name>/root.img`` is a sparse ext4 image; its size is the
    container's disk space and ``mkfs -N`` its inode count. It is attached to a
    loop device with LO_FLAGS_AUTOCLEAR and mounted on ``root/<name>``, so the
    loop device goes away by itself when the filesystem is unmounted.

``directory`` (like simfs)
    ``private/<name>`` is a plain directory, bind-mounted on ``root/<name>``.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
import subprocess
import time
from typing import Dict, List, Optional, Tuple

from . import namespaces
from .errors import InvalidParameter, OvzError

LAYOUTS = ("image", "directory")
IMAGE_FILE = "root.img"
DEFAULT_DISKSPACE = 2 << 30
MIN_DISKSPACE = 16 << 20
BYTES_PER_INODE_DEFAULT = 16384

LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LOOP_SET_CAPACITY = 0x4C07
LO_FLAGS_AUTOCLEAR = 4
LO_NAME_SIZE = 64


class LoopInfo64(ctypes.Structure):
    _fields_ = [
        ("lo_device", ctypes.c_uint64), ("lo_inode", ctypes.c_uint64), ("lo_rdevice", ctypes.c_uint64),
        ("lo_offset", ctypes.c_uint64), ("lo_sizelimit", ctypes.c_uint64), ("lo_number", ctypes.c_uint32),
        ("lo_encrypt_type", ctypes.c_uint32), ("lo_encrypt_key_size", ctypes.c_uint32),
        ("lo_flags", ctypes.c_uint32), ("lo_file_name", ctypes.c_char * LO_NAME_SIZE),
        ("lo_crypt_name", ctypes.c_char * LO_NAME_SIZE), ("lo_encrypt_key", ctypes.c_char * 32),
        ("lo_init", ctypes.c_uint64 * 2),
    ]


class LoopConfig(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_uint32), ("block_size", ctypes.c_uint32), ("info", LoopInfo64),
                ("reserved", ctypes.c_uint64 * 8)]


def validate_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise InvalidParameter("must be one of %s, got %r" % (", ".join(LAYOUTS), layout), "layout")
    return layout


def run(argv: List[str], param: Optional[str] = None, what: str = "") -> str:
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        last = detail[-1] if detail else "exit %d" % proc.returncode
        raise OvzError("%s failed (%s): %s" % (what or argv[0], " ".join(argv[:2]), last), param)
    return proc.stdout


def attach_loop(image: str, read_only: bool = False) -> Tuple[str, int]:
    """Attach ``image`` to a free loop device that detaches itself when released.

    Returns the device and an open descriptor on it: the caller closes the
    descriptor once the device is in use (mounted); closing it earlier
    releases, and so detaches, the device.
    """
    image_fd = os.open(image, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
    try:
        ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            for _attempt in range(64):
                number = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
                device = "/dev/loop%d" % number
                try:
                    loop_fd = os.open(device, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
                except FileNotFoundError:
                    time.sleep(0.001)
                    continue
                try:
                    config = LoopConfig()
                    config.fd = image_fd
                    config.info.lo_flags = LO_FLAGS_AUTOCLEAR | (1 if read_only else 0)
                    config.info.lo_file_name = os.fsencode(image)[:LO_NAME_SIZE - 1]
                    fcntl.ioctl(loop_fd, LOOP_CONFIGURE, bytes(config))
                    return device, loop_fd
                except OSError as exc:
                    os.close(loop_fd)
                    if exc.errno != errno.EBUSY:
                        raise
            raise OvzError("no free loop device could be attached after 64 attempts")
        finally:
            os.close(ctl)
    finally:
        os.close(image_fd)


def is_mountpoint(path: str) -> bool:
    return mount_entry(path) is not None


def mount_entry(path: str) -> Optional[Dict[str, str]]:
    """The mountinfo fields of the mount on ``path`` in this mount namespace, if any."""
    target = os.path.realpath(path)
    found = None
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            left, _sep, right = line.partition(" - ")
            parts = left.split()
            if namespaces.unescape_mount_path(parts[4]) == target:
                fs = right.split()
                found = {"fstype": fs[0], "source": fs[1], "root": parts[3], "options": parts[5]}
    return found


class Storage:
    """One container's private area; pure paths until a method is called."""

    def __init__(self, layout: str, private: str, root: str, mount_options: str = "") -> None:
        self.layout = validate_layout(layout)
        self.private = private
        self.root = root
        self.mount_options = mount_options  # ext4 data options of the image (quota.py: usrquota,grpquota)

    @property
    def image(self) -> str:
        return os.path.join(self.private, IMAGE_FILE)

    def exists(self) -> bool:
        return os.path.exists(self.image if self.layout == "image" else self.private)

    # -- creation ---------------------------------------------------------------
    def create(self, diskspace: Optional[int], diskinodes: Optional[int]) -> None:
        os.makedirs(os.path.dirname(self.private), mode=0o700, exist_ok=True)
        os.makedirs(self.root, mode=0o755, exist_ok=True)
        if self.layout == "directory":
            os.mkdir(self.private, 0o755)
            return
        size = diskspace or DEFAULT_DISKSPACE
        os.mkdir(self.private, 0o700)
        with open(self.image, "wb") as handle:
            handle.truncate(size)
        argv = ["mkfs.ext4", "-q", "-F", "-m", "0", "-b", "4096",
                "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", "-L", "ovz-root"]
        if diskinodes:
            argv += ["-N", str(diskinodes)]
        run(argv + [self.image], "diskspace", "mkfs.ext4")

    def destroy(self) -> None:
        if os.path.isdir(self.private):
            shutil.rmtree(self.private)
        elif os.path.lexists(self.private):
            os.unlink(self.private)
        try:
            os.rmdir(self.root)
        except FileNotFoundError:
            pass

    # -- mounting -----------------------------------------------------------------
    def mounted(self) -> bool:
        return is_mountpoint(self.root)

    def mount(self) -> None:
        if self.mounted():
            return
        os.makedirs(self.root, mode=0o755, exist_ok=True)
        if self.layout == "directory":
            namespaces.mount(self.private, self.root, None, namespaces.MS_BIND)
            return
        device, loop_fd = attach_loop(self.image)
        try:
            namespaces.mount(device, self.root, "ext4", namespaces.MS_NOATIME, self.mount_options or None)
        finally:
            os.close(loop_fd)  # the mount now holds the device; on failure this detaches it

    def umount(self) -> None:
        for _attempt in range(8):
            if not self.mounted():
                return
            try:
                namespaces.umount(self.root)
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    namespaces.umount(self.root, namespaces.MNT_DETACH)
                elif exc.errno not in (errno.EINVAL, errno.ENOENT):
                    raise

    def usage(self) -> Dict[str, int]:
        """Blocks and inodes used and available, from the mounted filesystem."""
        stats = os.statvfs(self.root if self.mounted() else self.private)
        return {
            "bytes_total": stats.f_blocks * stats.f_frsize,
            "bytes_used": (stats.f_blocks - stats.f_bfree) * stats.f_frsize,
            "bytes_free": stats.f_bavail * stats.f_frsize,
            "inodes_total": stats.f_files,
            "inodes_used": stats.f_files - stats.f_ffree,
            "inodes_free": stats.f_favail,
        }

    def image_size(self) -> Optional[int]:
        if self.layout != "image":
            return None
        try:
            return os.stat(self.image).st_size
        except FileNotFoundError:
            return None


def extract_template(source: str, target: str) -> None:
    """Unpack a rootfs tarball or copy a rootfs directory into ``target``."""
    if os.path.isdir(source):
        run(["cp", "-a", "--", source.rstrip("/") + "/.", target], "template", "copying the template directory")
        return
    run(["tar", "-x", "-p", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-f", source, "-C", target],
        "template", "unpacking the template")
