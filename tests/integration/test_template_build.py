# -*- coding: utf-8 -*-
"""The template builders the ovz_template role runs (roles/ovz_template/files), on their own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO, debian_template_path

FILES = os.path.join(REPO, "roles", "ovz_template", "files")
BUSYBOX = os.path.join(FILES, "build-busybox-template.py")


def build(*args):
    proc = subprocess.run(["/usr/bin/python3", BUSYBOX] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1], proc.stderr


def test_busybox_build_is_cached_by_content(tmp_path):
    out = str(tmp_path / "cache")
    path, err = build("--out", out)
    assert err == "built %s\n" % path
    assert os.path.basename(path).startswith("busybox-") and path.endswith(".tar.gz")
    assert os.readlink(os.path.join(out, "busybox.tar.gz")) == os.path.basename(path)
    mtime = os.stat(path).st_mtime_ns
    again, err = build("--out", out)
    assert (again, err) == (path, "")
    assert os.stat(path).st_mtime_ns == mtime
    # The scripts/ entry is the same file, with its old interface (DATA_DIR/templates).
    assert os.path.realpath(os.path.join(REPO, "scripts", "build-busybox-template.py")) == os.path.realpath(BUSYBOX)
    legacy, _err = build(str(tmp_path / "data"))
    assert os.path.basename(legacy) == os.path.basename(path)
    assert os.path.dirname(legacy) == str(tmp_path / "data" / "templates")


def test_busybox_build_with_the_engine_of_an_ovzctl_zip(tmp_path):
    """A build host that is a node: the engine comes from the ovzctl zip the ovz_host role installs."""
    ovzctl = str(tmp_path / "ovzctl")
    subprocess.run([sys.executable, os.path.join(REPO, "roles", "ovz_host", "files", "ovzctl_zipapp.py"),
                    os.path.join(REPO, "plugins", "module_utils"), ovzctl], check=True)
    from_zip, _err = build("--out", str(tmp_path / "a"), "--engine", ovzctl)
    from_dir, _err = build("--out", str(tmp_path / "b"), "--engine", os.path.join(REPO, "plugins", "module_utils"))
    assert os.path.basename(from_zip) == os.path.basename(from_dir)
    listing = subprocess.run(["tar", "-tzf", from_zip], stdout=subprocess.PIPE, universal_newlines=True,
                             check=True).stdout.split()
    assert "./sbin/init" in listing and "./etc/init.d/rcS" in listing


def test_busybox_build_without_an_engine_fails_clearly(tmp_path):
    proc = subprocess.run(["/usr/bin/python3", BUSYBOX, "--out", str(tmp_path), "--engine", str(tmp_path / "none")],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    assert proc.returncode != 0 and "no engine (templates.py)" in proc.stderr
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.debian
def test_debian_template_has_the_checkpoint_dropin():
    path = debian_template_path()
    dropin = "./etc/systemd/system/service.d/ovz-checkpoint.conf"
    text = subprocess.run("zstd -dc %s | tar -xOf - %s" % (path, dropin), shell=True, stdout=subprocess.PIPE,
                          universal_newlines=True, check=True).stdout
    settings = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert settings == ["[Service]", "ProtectHostname=no", "ProtectClock=no", "IPAddressDeny=", "IPAddressAllow=",
                        "DeviceAllow="]
