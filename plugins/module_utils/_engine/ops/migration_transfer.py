# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Moving a migration's bytes: the private area and the images, by rsync over the session's ssh master, an
image file by its data blocks only, and small images packed into a request."""

from __future__ import annotations

import base64
import threading
import os
import re
import shlex
import shutil
import struct
import subprocess
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from ..base.errors import InvalidParameter, OvzError
from ..kernel.namespaces import syncfs
from .remote import Target

if TYPE_CHECKING:  # pragma: no cover - annotations only: the code imports these where it needs them
    from ..kernel.storage import Storage


RSYNC_OPTS = ["-aHAX", "--numeric-ids", "--stats"]


INLINE_IMAGES_MAX = 8 << 20  # images up to this size go inside the restore request: no rsync start-up while frozen


def tree_bytes(path: str) -> int:
    """Allocated bytes under ``path`` (sparse files count what they use, hard links once), like ``du``."""
    if os.path.isfile(path):
        return os.stat(path).st_blocks * 512
    total = 0
    seen = set()
    for directory, _dirs, files in os.walk(path):
        for entry in files:
            try:
                stat = os.lstat(os.path.join(directory, entry))
            except OSError:
                continue
            if stat.st_nlink > 1:
                if (stat.st_dev, stat.st_ino) in seen:
                    continue
                seen.add((stat.st_dev, stat.st_ino))
            total += stat.st_blocks * 512
    return total


def pages_bytes(images_dir: str) -> int:
    """Bytes of memory pages a (pre-)dump wrote into ``images_dir``."""
    total = 0
    for entry in os.listdir(images_dir):
        if entry.startswith("pages-") and entry.endswith(".img"):
            total += os.stat(os.path.join(images_dir, entry)).st_size
    return total


def pack_images(path: str, limit: int = INLINE_IMAGES_MAX) -> Optional[List[List[str]]]:
    """The files and symlinks of a flat images directory as [name, "file", base64] / [name, "link", target];
    None when they exceed ``limit`` bytes or there is anything else (those go by rsync)."""
    entries: List[List[str]] = []
    total = 0
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.is_symlink():
            entries.append([entry.name, "link", os.readlink(entry.path)])
        elif entry.is_file(follow_symlinks=False):
            total += entry.stat(follow_symlinks=False).st_size
            if total > limit:
                return None
            with open(entry.path, "rb") as handle:
                entries.append([entry.name, "file", base64.b64encode(handle.read()).decode("ascii")])
        else:
            return None
    return entries


def unpack_images(path: str, entries: List[List[str]]) -> int:
    """Write what ``pack_images`` packed into ``path`` (made afresh); the bytes written."""
    if os.path.lexists(path):
        shutil.rmtree(path)
    os.makedirs(path, mode=0o700)
    written = 0
    for name, kind, value in entries:
        if not name or "/" in name or name in (".", ".."):
            raise InvalidParameter("bad image name %r" % (name,), "images")
        target = os.path.join(path, name)
        if kind == "link":
            os.symlink(value, target)
            continue
        data = base64.b64decode(value)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        written += len(data)
    return written


def _rsync_argv(source: str, target: Target, destination: str, control_path: Optional[str],
                extra: List[str]) -> List[str]:
    return ["rsync"] + RSYNC_OPTS + extra + ["-e", target.ssh_command(control_path), source,
                                             target.remote_path(destination)]


def _rsync_result(proc: subprocess.Popen, source: str, target: Target, allow_vanished: bool = False) -> int:
    out, err = proc.communicate()
    # 24: files vanished while rsync ran; fine for a copy of a running container, which the final
    # sync (container frozen) completes.
    if proc.returncode != 0 and not (allow_vanished and proc.returncode == 24):
        raise OvzError("copying %s to %s failed (rsync exit %d): %s"
                       % (source, target.host, proc.returncode, err.strip()[-1000:]), "target")
    match = re.search(r"Total bytes sent:\s*([\d,.]+)", out)
    return int(re.sub(r"[,.]", "", match.group(1))) if match else 0


def start_rsyncs(jobs: List[Tuple[str, str, List[str]]], target: Target,
                 control_path: Optional[str]) -> List[Tuple[subprocess.Popen, str]]:
    return [(subprocess.Popen(_rsync_argv(source, target, destination, control_path, extra),  # pylint: disable=consider-using-with
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True), source) for source, destination, extra in jobs]


def finish_rsyncs(procs: List[Tuple[subprocess.Popen, str]], target: Target, allow_vanished: bool = False) -> List[int]:
    results = []
    error: Optional[OvzError] = None
    for proc, source in procs:
        try:
            results.append(_rsync_result(proc, source, target, allow_vanished))
        except OvzError as exc:
            error = error or exc
    if error is not None:
        raise error
    return results


def kill_rsyncs(procs: List[Tuple[subprocess.Popen, str]]) -> None:
    for proc, _source in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def rsync_many(jobs: List[Tuple[str, str, List[str]]], target: Target, control_path: Optional[str],
               allow_vanished: bool = False) -> List[int]:
    """rsync each (source, destination on the target, options) at once, over the session's ssh master;
    the bytes each one sent."""
    return finish_rsyncs(start_rsyncs(jobs, target, control_path), target, allow_vanished)


def rsync(source: str, target: Target, destination: str, control_path: Optional[str], extra: List[str],
          allow_vanished: bool = False) -> int:
    """rsync ``source`` to ``destination`` on the target over the session's ssh master; bytes sent."""
    return rsync_many([(source, destination, extra)], target, control_path, allow_vanished)[0]


# The receiving end of an image copy: a few lines run by the target's Python from ``-c``.
# Records on stdin: offset, length, kind (0 data, 1 hole, 2 end: length is the file size).
IMAGE_RECEIVER = r"""
import ctypes, os, struct, sys
path = sys.argv[1]
inp = sys.stdin.buffer
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
done = 0
while True:
    head = inp.read(17)
    if len(head) != 17:
        sys.exit(3)
    offset, length, kind = struct.unpack("!QQB", head)
    if kind == 2:
        os.ftruncate(fd, length)
        os.fsync(fd)
        break
    if kind == 1:
        if libc.fallocate(fd, 3, offset, length) != 0:
            os.pwrite(fd, bytes(length), offset)
        continue
    data = inp.read(length)
    if len(data) != length:
        sys.exit(3)
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
    done += length
os.close(fd)
sys.stdout.write("ok %d\n" % done)
"""


CHUNK = 1 << 20


def data_chunks(path: str) -> List[int]:
    """Indexes of the CHUNK-sized pieces of ``path`` that hold data (holes are skipped: SEEK_DATA/SEEK_HOLE)."""
    chunks: List[int] = []
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            first, last = start // CHUNK, (end - 1) // CHUNK
            if chunks and chunks[-1] >= first:
                first = chunks[-1] + 1
            chunks.extend(range(first, last + 1))
            offset = end
    finally:
        os.close(fd)
    return chunks


class ImageSync:
    """Copy a sparse image to the target, then only the chunks that changed since (like ploop's copy).

    The first ``send`` copies every chunk that holds data and remembers a digest of each;
    a later one (after the freeze and ``syncfs``) reads the data again and sends the chunks
    whose digest changed, and holes where data went away.
    """

    def __init__(self, image: str, target: Target, destination: str, control_path: Optional[str]) -> None:
        self.image = image
        self.target = target
        self.destination = destination
        self.control_path = control_path
        self.digests: Dict[int, bytes] = {}

    def send(self) -> int:
        import hashlib
        command = "exec %s -I -c %s %s" % (shlex.quote(self.target.python), shlex.quote(IMAGE_RECEIVER),
                                           shlex.quote(self.destination))
        argv = self.target.ssh_argv(self.control_path) + [self.target.destination, command]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,  # pylint: disable=consider-using-with
                                stderr=subprocess.PIPE)
        if proc.stdin is None:
            raise RuntimeError("ssh was started without a pipe for its input")
        sent = 0
        try:
            with open(self.image, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                present = data_chunks(self.image)
                for index in sorted(set(self.digests) - set(present)):
                    proc.stdin.write(struct.pack("!QQB", index * CHUNK, min(CHUNK, size - index * CHUNK), 1))
                    del self.digests[index]
                for index in present:
                    handle.seek(index * CHUNK)
                    data = handle.read(CHUNK)
                    digest = hashlib.blake2b(data, digest_size=16).digest()
                    if self.digests.get(index) == digest:
                        continue
                    proc.stdin.write(struct.pack("!QQB", index * CHUNK, len(data), 0))
                    proc.stdin.write(data)
                    self.digests[index] = digest
                    sent += len(data)
            proc.stdin.write(struct.pack("!QQB", 0, size, 2))
        except OSError:
            pass   # the receiver died: its exit status and stderr tell why
        out, err = proc.communicate()
        if proc.returncode != 0 or not out.startswith(b"ok"):
            self.digests.clear()
            raise OvzError("copying the image %s to %s failed (exit %s): %s"
                           % (self.image, self.target.host, proc.returncode, err.decode(errors="replace")[-1000:]),
                           "target")
        return sent


class FinalSync:
    """The last copy of the private area, started once its files are quiescent (frozen or stopped
    container), so that it runs while CRIU dumps; ``wait`` for the bytes sent."""

    def __init__(self, storage: Storage, image_sync: Optional[ImageSync], source_private: str, destination: str,
                 target: Target, control_path: Optional[str]) -> None:
        self.target = target
        self.sent = 0
        self.error: Optional[BaseException] = None
        self.thread: Optional[threading.Thread] = None
        self.procs: List[Tuple[subprocess.Popen, str]] = []
        if image_sync is None:
            # rsync reads the files through the page cache: nothing to write out first.
            self.procs = start_rsyncs([(source_private, destination, ["--delete"])], target, control_path)
            return
        if storage.mounted():
            syncfs(storage.root)   # the file system inside the image, down to the image
            with open(storage.image, "rb") as handle:
                os.fsync(handle.fileno())
                # The loop device writes the image with direct I/O: pages the first pass cached must not answer.
                os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        self.thread = threading.Thread(target=self._send, args=(image_sync,), name="ovz-image-sync", daemon=True)
        self.thread.start()

    def _send(self, image_sync: ImageSync) -> None:
        try:
            self.sent = image_sync.send()
        except BaseException as exc:  # noqa: BLE001 - handed to wait()
            self.error = exc

    def wait(self) -> int:
        if self.thread is not None:
            self.thread.join()
            if self.error is not None:
                raise self.error
            return self.sent
        procs, self.procs = self.procs, []
        return finish_rsyncs(procs, self.target)[0]

    def cancel(self) -> None:
        """After a failure: end what still runs."""
        kill_rsyncs(self.procs)
        self.procs = []
        if self.thread is not None:
            self.thread.join()
