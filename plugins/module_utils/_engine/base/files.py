# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Files written whole or not at all (``atomic_file``), and JSON state files read as absent when missing.

The configuration, the runtime state, the id map and the network's records all
go through the JSON pair; the dump archive, the beancounter tables, CRIU's caches
and kept logs through ``atomic_file``, from whichever layer keeps them.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from typing import IO, Any, Iterator, Optional, Tuple

from .errors import HostFileError


@contextmanager
def atomic_file(path: str, mode: int = 0o600, durable: bool = True, binary: bool = False,
                owner: Optional[Tuple[int, int]] = None, dir_mode: Optional[int] = 0o700) -> Iterator[IO[Any]]:
    """A handle on a new file that replaces ``path`` whole when the block ends, and vanishes if it raises.

    Readers see the old file or the new one, never a torn one; a symlink planted at ``path`` is
    replaced, not followed. ``durable`` also survives a host crash (fsync of the file and of its
    directory); runtime state, which a reboot makes stale anyway, skips it. ``owner`` is a
    (uid, gid) for the file; ``dir_mode`` creates missing directories with that mode (None: the
    directory must exist).
    """
    directory = os.path.dirname(os.path.abspath(path))
    if dir_mode is not None:
        os.makedirs(directory, mode=dir_mode, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            yield handle
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            if owner is not None:
                os.fchown(handle.fileno(), owner[0], owner[1])
            if durable:
                os.fsync(handle.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if not durable:
        return
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_json(path: str, data: Any, mode: int = 0o600, durable: bool = True, what: str = "") -> None:
    """``data`` as indented JSON, through ``atomic_file``.

    A write the host's file system refuses (full, read-only) raises ``HostFileError`` naming
    ``path`` and ``what``.
    """
    try:
        with atomic_file(path, mode, durable) as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
    except HostFileError:
        raise
    except OSError as exc:
        # A failed write() names no file: the operator must learn which file system is full.
        raise HostFileError(path, what or "a file", exc) from None


def read_json(path: str) -> Optional[Any]:
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
