# -*- coding: utf-8 -*-
"""A Debian 12 container boots systemd as PID 1 and its root can change anything
and install software (issue: foundation)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from conftest import sh

pytestmark = pytest.mark.debian


def wait_system_running(manager, name, timeout=120.0):
    deadline = time.monotonic() + timeout
    state = b""
    while time.monotonic() < deadline:
        state = manager.exec(name, ["systemctl", "is-system-running"], timeout=30).stdout.strip()
        if state in (b"running", b"degraded"):
            return state
        time.sleep(0.2)
    raise AssertionError("systemd reached only %r" % state)


@pytest.fixture
def debian(node, debian_template):
    name = node.name()
    node.manager.create(name, debian_template, layout="directory", hostname="deb.ovz.test")
    node.manager.start(name)
    wait_system_running(node.manager, name)
    return name


def test_systemd_is_pid_1_and_reaches_running(node, debian):
    manager = node.manager
    assert sh(manager, debian, "readlink /proc/1/exe").stdout.strip() == b"/usr/lib/systemd/systemd"
    assert sh(manager, debian, "systemctl is-system-running").stdout.strip() in (b"running", b"degraded")
    failed = sh(manager, debian, "systemctl --failed --no-legend --plain", check=False).stdout.decode()
    assert failed.strip() == "", failed
    assert sh(manager, debian, "hostname").stdout.strip() == b"deb.ovz.test"
    assert sh(manager, debian, "cat /etc/hostname").stdout.strip() == b"deb.ovz.test"
    assert sh(manager, debian, "systemd-detect-virt --container").stdout.strip() in (b"container-other", b"ovz")
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
    sh(manager, debian, "systemctl start --no-block ovz-test-sleep.service 2>/dev/null || "
                        "systemd-run --unit=ovz-test-sleep sleep 1000")
    began = time.monotonic()
    assert manager.stop(debian, timeout=30) is True
    assert time.monotonic() - began < 25  # systemd halted by itself, no timeout
    assert manager.status(debian) == "stopped"
    # The journal was flushed and closed by systemd's own shutdown.
    private = manager.layout.private(debian)
    assert os.path.isdir(os.path.join(private, "var/log"))
