# -*- coding: utf-8 -*-
"""Debian containers, both releases the ovz_template role builds (debian-12, debian-13), boot systemd as
PID 1 to ``running`` with no failed unit, and their root can change anything and install software
(issues: foundation; both Debian releases)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from support.node import sh
from support.debian import RELEASES, debian_release_template

pytestmark = pytest.mark.debian


@pytest.fixture(scope="session")
def debian_templates():
    """release name -> template path; a release is built (or found in the cache) when a test first asks for it,
    so a run selecting one release never builds the other."""
    built = {}

    def get(release: str) -> str:
        if release not in built:
            built[release] = debian_release_template(release)
        return built[release]
    return get


@pytest.fixture(params=sorted(RELEASES))
def release(request):
    return request.param


@pytest.fixture
def debian(node, debian_templates, release):
    """A started container of the release, booted: wait_boot returns once the template's ovz-booted.service
    has seen systemd finish starting up."""
    name = node.name()
    node.manager.create(name, debian_templates(release), layout="directory", hostname="deb.ovz.test")
    node.manager.start(name, wait_boot=True, timeout=120)
    return name


def test_systemd_is_pid_1_and_reaches_running(node, debian, release):
    manager = node.manager
    info = RELEASES[release]
    assert sh(manager, debian, "readlink /proc/1/exe").stdout.strip() == b"/usr/lib/systemd/systemd"
    # Booted means finished: running, not degraded, and nothing failed or waiting to be restarted (a unit that
    # fails over and over first shows as activating or auto-restart while the system reports running).
    assert sh(manager, debian, "systemctl is-system-running", check=False).stdout.strip() == b"running"
    failed = sh(manager, debian, "systemctl list-units --all --no-legend --plain --state=failed,auto-restart",
                check=False).stdout.decode()
    assert failed.strip() == "", failed
    errors = sh(manager, debian, "journalctl -b -q -p err --no-pager").stdout.decode()
    assert errors.strip() == "", errors
    # The engine binds a log file on /dev/console: the template's generator keeps agetty off it.
    assert sh(manager, debian, "systemctl show -P LoadState console-getty.service").stdout.strip() == b"masked"
    assert sh(manager, debian, "hostname").stdout.strip() == b"deb.ovz.test"
    assert sh(manager, debian, "cat /etc/hostname").stdout.strip() == b"deb.ovz.test"
    assert sh(manager, debian, "systemd-detect-virt --container").stdout.strip() in (b"container-other", b"ovz")
    # The release it claims to be: systemd 257 needs a unified hierarchy and gets one (the engine's cgroup2
    # mount), on this host's hybrid hierarchy too; PID 1 sits in its own init.scope there.
    assert sh(manager, debian, ". /etc/os-release && echo $VERSION_ID").stdout.strip() == info.version_id.encode()
    version = sh(manager, debian, "systemctl --version").stdout.split()[1]
    assert int(version) == info.systemd, version
    assert sh(manager, debian, "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'"
              ).stdout.strip() == info.python.encode()
    assert sh(manager, debian, "stat -fc %T /sys/fs/cgroup").stdout.strip() == b"cgroup2fs"
    assert b"0::/init.scope\n" in sh(manager, debian, "cat /proc/1/cgroup").stdout
    # journald and dbus run: units are started by the container's own systemd.
    assert sh(manager, debian, "systemctl is-active systemd-journald dbus").stdout.split() == [b"active"] * 2
    # Only the container's processes are visible.
    ps = sh(manager, debian, "ps -e -o pid=,comm=").stdout.decode().split("\n")
    assert all(int(line.split()[0]) < 1000 for line in ps if line.strip())


def test_root_can_edit_any_file_and_install_a_package(node, debian, tmp_path):
    manager = node.manager
    sh(manager, debian, "echo 'edited by root' >> /etc/issue && grep -q 'edited by root' /etc/issue")
    sh(manager, debian, "sed -i 's/^#*PermitRootLogin.*//' /etc/login.defs && echo ok")
    # A small package built here, installed inside with dpkg -i.
    pkg = tmp_path / "ovz-test-hello"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "usr/share/ovz-test-hello").mkdir(parents=True)
    (pkg / "DEBIAN/control").write_text(
        "Package: ovz-test-hello\nVersion: 1.0\nArchitecture: all\nMaintainer: ovz tests <root@localhost>\n"
        "Description: test package for ovz.containers\n")
    (pkg / "DEBIAN/postinst").write_text("#!/bin/sh\necho installed > /var/lib/ovz-test-hello.postinst\n")
    os.chmod(pkg / "DEBIAN/postinst", 0o755)
    (pkg / "usr/share/ovz-test-hello/hello").write_text("hello from a package\n")
    deb = tmp_path / "ovz-test-hello.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(pkg), str(deb)], check=True,
                   stdout=subprocess.DEVNULL)
    inside = os.path.join(manager.layout.root(debian), "root", "ovz-test-hello.deb")
    shutil.copy(deb, inside)
    result = sh(manager, debian, "dpkg -i /root/ovz-test-hello.deb")
    assert b"Setting up ovz-test-hello" in result.stdout
    assert sh(manager, debian, "dpkg-query -W -f '${Status}' ovz-test-hello").stdout == b"install ok installed"
    assert sh(manager, debian, "cat /usr/share/ovz-test-hello/hello").stdout == b"hello from a package\n"
    assert sh(manager, debian, "cat /var/lib/ovz-test-hello.postinst").stdout == b"installed\n"
    assert not os.path.exists("/usr/share/ovz-test-hello")


def test_systemd_container_stops_gracefully(node, debian):
    manager = node.manager
    # A persistent journal, so that the container's own account of its shutdown outlives it.
    sh(manager, debian, "mkdir -p /var/log/journal && journalctl --flush")
    sh(manager, debian, "systemd-run --unit=ovz-test-sleep sleep 1000")
    assert manager.stop(debian, timeout=300) is True
    assert manager.status(debian) == "stopped"
    # systemd stopped its units itself (the engine's SIGKILL after the timeout would leave no such line).
    journal = os.path.join(manager.layout.private(debian), "var/log/journal")
    log = subprocess.run(["journalctl", "-D", journal, "-o", "cat", "--no-pager"], stdout=subprocess.PIPE,
                         universal_newlines=True, check=True).stdout
    assert "Stopped ovz-test-sleep.service" in log, log[-3000:]
    assert "Stopped target multi-user.target" in log or "Stopped target Multi-User System" in log, log[-3000:]
