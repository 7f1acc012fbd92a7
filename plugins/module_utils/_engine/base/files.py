# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""JSON state files: written whole or not at all, read as absent when missing.

The configuration, the runtime state, the id map and the network's records all
go through these two, from whichever layer keeps them.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Optional

from .errors import HostFileError


def atomic_write_json(path: str, data: Any, mode: int = 0o600, durable: bool = True, what: str = "") -> None:
    """Write ``data`` so that readers see the old file or the new one, never a torn one.

    ``durable`` also survives a host crash (fsync of file and directory);
    runtime state, which a reboot makes stale anyway, skips it. A write the host's file
    system refuses (full, read-only) raises ``HostFileError`` naming ``path`` and ``what``.
    """
    try:
        _atomic_write_json(path, data, mode, durable)
    except HostFileError:
        raise
    except OSError as exc:
        # A failed write() names no file: the operator must learn which file system is full.
        raise HostFileError(path, what or "a file", exc) from None


def _atomic_write_json(path: str, data: Any, mode: int, durable: bool) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fchmod(handle.fileno(), mode)
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


def read_json(path: str) -> Optional[Any]:
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
