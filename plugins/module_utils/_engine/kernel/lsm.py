# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Which Linux security modules the running kernel enforces."""

from __future__ import annotations

from typing import List

LSM_FILE = "/sys/kernel/security/lsm"
# The ones that can refuse a privileged container's mounts (a fresh proc, a host block device).
MANDATORY = ("apparmor", "selinux", "smack", "tomoyo")


def active(path: str = LSM_FILE) -> List[str]:
    """The kernel's active LSMs, in order (``[]`` where securityfs is absent, as on kernels built without one)."""
    try:
        with open(path) as handle:
            return [name for name in handle.read().strip().split(",") if name]
    except OSError:
        return []


def confining(path: str = LSM_FILE) -> List[str]:
    """The active LSMs that could confine a container's root beyond capabilities and seccomp."""
    return [name for name in active(path) if name in MANDATORY]
