# -*- coding: utf-8 -*-
"""The Debian templates (12 and 13, built by ``scripts/build-debian-template``, cached by content) and
waiting for a Debian container's systemd to finish starting up."""

from __future__ import annotations

import os
import subprocess
import time
from typing import NamedTuple

from . import REPO


BUILD = os.path.join(REPO, "scripts", "build-debian-template")


class Release(NamedTuple):
    suite: str          # build-debian-template --release
    env: str            # a prebuilt template's path (scripts/test exports it)
    version_id: str     # /etc/os-release
    systemd: int
    python: str


RELEASES = {
    "debian-12": Release("bookworm", "OVZ_DEBIAN_TEMPLATE", "12", 252, "3.11"),
    "debian-13": Release("trixie", "OVZ_DEBIAN13_TEMPLATE", "13", 257, "3.13"),
}


def wait_system_running(manager, name, timeout=120.0):
    """Poll until systemd has finished starting up (running or degraded); other test modules use it too."""
    deadline = time.monotonic() + timeout
    state = b""
    while time.monotonic() < deadline:
        state = manager.exec(name, ["systemctl", "is-system-running"], timeout=30).stdout.strip()
        if state in (b"running", b"degraded"):
            return state
        time.sleep(0.2)
    raise AssertionError("systemd reached only %r" % state)


def debian_release_template(release: str) -> str:
    """The release's template: its environment variable's, else the build's (cached by content: a hit is instant)."""
    info = RELEASES[release]
    path = os.environ.get(info.env)
    if not path or not os.path.exists(path):
        out = subprocess.run([BUILD, "--release", info.suite], stdout=subprocess.PIPE, universal_newlines=True,
                             check=True).stdout
        path = out.strip().splitlines()[-1]
    return path
