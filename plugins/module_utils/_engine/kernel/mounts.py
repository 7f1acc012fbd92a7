# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""The one reader of ``/proc/<pid>/mountinfo`` (proc(5)): each line as a typed ``Mount``.

A line is ``<id> <parent> <major:minor> <root> <mount point> <options> [optional fields...] - <fstype>
<source> <super options>``. The optional fields (``shared:N``, ``master:N``, ...) come in any number,
which is why the ``" - "`` separator, not a column count, finds the filesystem type. The kernel escapes
space, tab, newline and backslash in paths as octal (``\\040``); the root and the mount point come back
unescaped, the source and the options as the kernel wrote them.

Pure: it reads a file and parses text, and touches nothing else.
"""

from __future__ import annotations

import re
from typing import List, NamedTuple, Optional, Tuple, Union

SELF = "self"


class Mount(NamedTuple):
    mount_id: int
    parent_id: int
    major_minor: str          # "8:1"; "0:N" for a filesystem with no block device (tmpfs, proc, overlay)
    root: str                 # the directory of the filesystem mounted here ("/" unless a bind of a subtree)
    mount_point: str
    options: str              # per-mount options: "rw,nosuid,relatime"
    optional: Tuple[str, ...]  # propagation: "shared:5", "master:1", ...
    fstype: str               # "ext4", "cgroup2", "fuse.lxcfs"
    source: str
    super_options: str        # per-superblock options: "rw,memory"


_MOUNT_ESCAPE = re.compile(r"\\([0-7]{3})")


def unescape_mount_path(text: str) -> str:
    """Undo the kernel's octal escapes in /proc/*/mountinfo (\\040 space, \\012 newline, ...)."""
    if "\\" not in text:
        return text   # nearly always: mountinfo is read on every start, one line per mount of the host
    return _MOUNT_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), text)


def parse_line(line: str) -> Optional[Mount]:
    """One mountinfo line as a ``Mount``; None for a line the kernel would not write (too few fields)."""
    left, sep, right = line.partition(" - ")
    parts, fs = left.split(), right.split()
    if not sep or len(parts) < 6 or not parts[0].isdigit() or not parts[1].isdigit() or not fs:
        return None
    return Mount(int(parts[0]), int(parts[1]), parts[2], unescape_mount_path(parts[3]),
                 unescape_mount_path(parts[4]), parts[5], tuple(parts[6:]),
                 fs[0], fs[1] if len(fs) > 1 else "", fs[2] if len(fs) > 2 else "")


def parse_mountinfo(text: str) -> List[Mount]:
    """Every mount in a mountinfo text, in the kernel's order (a parent before the mounts on it)."""
    return [mount for mount in map(parse_line, text.splitlines()) if mount is not None]


def read_mountinfo(pid: Union[int, str] = SELF) -> List[Mount]:
    """The mounts ``pid`` (default: this process) sees; OSError if its mountinfo cannot be read."""
    with open("/proc/%s/mountinfo" % pid) as handle:
        return parse_mountinfo(handle.read())
