# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""A test hook: kill the calling process at a named step of an operation.

``OVZ_FAULT=<step>[,<step>...]`` in the environment makes the process that
reaches ``point(<step>)`` SIGKILL itself there, as a crash, an OOM kill or an
operator's ``kill -9`` would. Tests use it to check that the next call
converges and that nothing is left behind (tests/security/test_faults.py).
It is read at each point, so an unset variable costs one dictionary lookup.

Steps (in the order an operation reaches them):

    create.storage   the private area exists, the template is not unpacked
    create.extract   the template is unpacked, the image is still mounted, no config
    start.mount      the root is mounted, no cgroup yet
    start.cgroups    the cgroups exist with their limits, no process yet
    network.netns    the container's netns has its ovz-<node>-<name> name, no veth yet
    network.link     the veth pair exists, host routes and filters are not set
    network.host     the host side is complete, resolv.conf is not written
    start.spawned    the init runs, its state is not recorded
    restore.mount    (a restore, at the start's points) the root is mounted, no cgroup yet
    restore.cgroups  the cgroups exist with their limits, CRIU has not run
    restore.spawned  CRIU restored the processes, their state is not recorded
    limits.apply     new limits are in the kernel, not in the configuration
    stop.halt        the init is gone (or was told to go), cgroups and mounts remain
    stop.cgroups     the cgroups are removed, the network and the root mount remain
    destroy.stopped  the container is stopped, its private area still exists
    destroy.storage  the private area is removed, the configuration remains
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "OVZ_FAULT"
STEPS = ("create.storage", "create.extract", "start.mount", "start.cgroups", "network.netns", "network.link",
         "network.host", "start.spawned", "restore.mount", "restore.cgroups", "restore.spawned", "limits.apply", "stop.halt", "stop.cgroups", "destroy.stopped",
         "destroy.storage")


def point(step: str) -> None:
    """Die here with SIGKILL if ``OVZ_FAULT`` names ``step`` (a test hook; a no-op otherwise)."""
    wanted = os.environ.get(FAULT_ENV)
    if wanted and step in wanted.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
