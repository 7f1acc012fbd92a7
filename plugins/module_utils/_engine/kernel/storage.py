# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""A container's private area and its root mount.

Two layouts:

``image`` (default, like OpenVZ 7's ploop)
    ``private/<name>/root.img`` is a sparse ext4 image; its size is the
    container's disk space and ``mkfs -N`` its inode count. It is attached to a
    loop device with LO_FLAGS_AUTOCLEAR and mounted on ``root/<name>``, so the
    loop device goes away by itself when the filesystem is unmounted. The loop
    device does direct I/O on the image file (LO_FLAGS_DIRECT_IO): the blocks are
    cached once, by the container's ext4, not a second time in the host's page
    cache of the file. A backing filesystem that refuses direct I/O keeps the
    buffered mode (``Storage.direct_io_note`` says why). Tools that read or
    write the image file through the page cache (dumpe2fs, e2fsck, resize2fs,
    tune2fs, migration's chunk copy) flush it and drop its cached pages first
    (``drop_cached_pages``): pages cached before the loop device wrote around
    the cache can still show the old blocks (seen here with a superblock read
    while the container ran and read again after it stopped).

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

from ..base.errors import InvalidParameter, OvzError
from . import mounts, namespaces

LAYOUTS = ("image", "directory")
IMAGE_FILE = "root.img"
DEFAULT_DISKSPACE = 2 << 30
MIN_DISKSPACE = 16 << 20
BYTES_PER_INODE_DEFAULT = 16384

LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LOOP_SET_CAPACITY = 0x4C07
LOOP_SET_DIRECT_IO = 0x4C08
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_DIRECT_IO = 16
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


def attach_loop(image: str, read_only: bool = False, direct_io: bool = True) -> Tuple[str, int]:
    """Attach ``image`` to a free loop device that detaches itself when released.

    Returns the device and an open descriptor on it: the caller closes the
    descriptor once the device is in use (mounted); closing it earlier
    releases, and so detaches, the device. With ``direct_io`` the device reads
    and writes the image with direct I/O; where the backing filesystem refuses
    it (EINVAL) the device is configured buffered instead (``loop_direct_io``
    tells which mode a device is in).
    """
    if not read_only:
        bound = _hold_bound_loop(image)
        if bound is not None:
            return bound
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
                    _configure_loop(loop_fd, image_fd, image, read_only, direct_io)
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


def loops_of(image: str) -> List[str]:
    """The loop devices bound to this very image file (a deleted file of the same name shows as such)."""
    target = os.path.realpath(image)
    found = []
    for entry in sorted(os.listdir("/sys/block")):
        if not entry.startswith("loop"):
            continue
        try:
            with open("/sys/block/%s/loop/backing_file" % entry) as handle:
                backing = handle.read().rstrip("\n")
        except OSError:
            continue
        if backing == target:
            found.append("/dev/" + entry)
    return found


def _hold_bound_loop(image: str, timeout: float = 10.0) -> Optional[Tuple[str, int]]:
    """The loop device still bound to ``image``, held open, if there is one.

    An unmounted image can stay bound for a while: a mount namespace created elsewhere
    on the host (any container start, any service with a private /tmp) copied the mount
    and keeps its ext4 instance alive until it lets go. A second loop device on the same
    file would give a second ext4 instance on the same blocks, each blind to what the
    other has cached, which corrupts the filesystem (seen as "iget: checksum invalid").
    Mounting the same device again gets the kernel's existing instance instead.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        bound = loops_of(image)
        if not bound:
            return None
        try:
            fd = os.open(bound[0], os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            time.sleep(0.01)   # being torn down right now
            continue
        if bound[0] in loops_of(image):   # held open now: autoclear cannot take it away
            return bound[0], fd
        os.close(fd)
    raise OvzError("the image %s stays bound to %s while being released; try again" % (image, " ".join(loops_of(image))))


def wait_released(device: str, image: str, timeout: float = 5.0) -> bool:
    """Wait until loop ``device`` no longer serves ``image`` (its filesystem is shut down and
    written out); False if another mount namespace still holds a copy of the mount."""
    deadline = time.monotonic() + timeout
    while device in loops_of(image):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _configure_loop(loop_fd: int, image_fd: int, image: str, read_only: bool, direct_io: bool) -> None:
    """LOOP_CONFIGURE, with LO_FLAGS_DIRECT_IO if asked; buffered again if the kernel refuses that flag."""
    config = LoopConfig()
    config.fd = image_fd
    config.info.lo_file_name = os.fsencode(image)[:LO_NAME_SIZE - 1]
    flags = LO_FLAGS_AUTOCLEAR | (LO_FLAGS_READ_ONLY if read_only else 0)
    if direct_io:
        config.info.lo_flags = flags | LO_FLAGS_DIRECT_IO
        try:
            fcntl.ioctl(loop_fd, LOOP_CONFIGURE, bytes(config))
            return
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
    config.info.lo_flags = flags
    fcntl.ioctl(loop_fd, LOOP_CONFIGURE, bytes(config))


def drop_cached_pages(image: str) -> None:
    """Flush the image file and drop its pages from the host's page cache, before a tool reads it
    buffered: a direct-I/O loop device writes around the page cache, so pages a reader cached
    earlier (the superblock, read while the container ran) must not answer for what is on disk."""
    fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def loop_direct_io(device: str) -> Optional[bool]:
    """Whether loop ``device`` does direct I/O on its backing file (``losetup -O DIO``); None if unknown."""
    try:
        with open("/sys/block/%s/loop/dio" % os.path.basename(device)) as handle:
            return handle.read().strip() == "1"
    except OSError:
        return None


def is_mountpoint(path: str) -> bool:
    return mount_entry(path) is not None


def mount_entry(path: str) -> Optional[mounts.Mount]:
    """The mount on ``path`` in this mount namespace (the topmost, if several are stacked), if any."""
    target = os.path.realpath(path)
    found = None
    for mount in mounts.read_mountinfo():
        if mount.mount_point == target:
            found = mount
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
        device = self.loop_device()
        if device is not None:
            # Written out now, even if a copy of the mount elsewhere keeps the filesystem alive.
            namespaces.syncfs(self.root)
        for _attempt in range(8):
            if not self.mounted():
                if device is not None:
                    wait_released(device, self.image)
                return
            try:
                namespaces.umount(self.root)
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    namespaces.umount(self.root, namespaces.MNT_DETACH)
                elif exc.errno not in (errno.EINVAL, errno.ENOENT):
                    raise

    def loop_device(self) -> Optional[str]:
        """The loop device the mounted image is on (None: not mounted, or not the image layout)."""
        entry = mount_entry(self.root) if self.layout == "image" else None
        if entry is None or not entry.source.startswith("/dev/loop"):
            return None
        return entry.source

    def direct_io_note(self) -> Optional[str]:
        """Why the mounted image's loop device does buffered I/O, or None (direct I/O, or not mounted)."""
        device = self.loop_device()
        if device is None or loop_direct_io(device) is not False:
            return None
        try:
            fs = run(["findmnt", "-n", "-o", "FSTYPE", "-T", self.private]).strip() or "its filesystem"
        except OvzError:
            fs = "its filesystem"
        return ("%s does buffered I/O on %s: %s refused direct I/O (LO_FLAGS_DIRECT_IO), so the image's blocks are "
                "cached twice (in the container's ext4 and in the host's page cache of the file)" % (device, self.image, fs))

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
