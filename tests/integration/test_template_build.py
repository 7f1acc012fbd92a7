# -*- coding: utf-8 -*-
"""The template builders the ovz_template role runs (roles/ovz_template/files), on their own."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from support import COLLECTIONS_ROOT, REPO
from support.debian import BUILD as DEBIAN, RELEASES, debian_release_template

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
    assert proc.returncode != 0 and "no engine (_engine/node/templates.py)" in proc.stderr
    assert os.listdir(str(tmp_path)) == []


def test_debian_build_refuses_an_unknown_release(tmp_path):
    proc = subprocess.run([DEBIAN, "--release", "buster", "--out", str(tmp_path / "out")], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, check=False)
    assert proc.returncode == 2 and "unknown release: buster" in proc.stderr
    assert proc.stdout == "" and not os.path.exists(str(tmp_path / "out"))


def tar_members(path):
    """name -> (type letter, link target) of a template's members, from tar's verbose listing."""
    listing = subprocess.run(["tar", "--zstd", "-tvf", path], stdout=subprocess.PIPE, universal_newlines=True,
                             check=True).stdout
    members = {}
    for line in listing.splitlines():
        fields = line.split(None, 5)
        name, _sep, target = fields[5].partition(" -> ")
        members[name] = (fields[0][0], target)
    return members


def tar_file(path, member):
    return subprocess.run(["tar", "--zstd", "-xOf", path, member], stdout=subprocess.PIPE, universal_newlines=True,
                          check=True).stdout


@pytest.mark.debian
@pytest.mark.parametrize("release", sorted(RELEASES))
def test_debian_build_is_named_by_release_and_cached(release):
    """debian-<N>-<hash>.tar.zst with debian-<N>.tar.zst linking to it; the release is part of the hash."""
    paths = {}
    for name, info in sorted(RELEASES.items()):
        proc = subprocess.run([DEBIAN, "--release", info.suite], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, check=True)
        paths[name] = proc.stdout.strip().splitlines()[-1]
        if name == release:
            # Again: a cache hit, which says nothing on stderr and builds nothing.
            again = subprocess.run([DEBIAN, "--release", info.version_id], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, universal_newlines=True, check=True)
            assert (again.stdout.strip(), again.stderr) == (paths[name], "")
    path = paths[release]
    assert re.fullmatch(r"%s-[0-9a-f]{12}\.tar\.zst" % re.escape(release), os.path.basename(path)), path
    assert os.readlink(os.path.join(os.path.dirname(path), release + ".tar.zst")) == os.path.basename(path)
    assert len({os.path.basename(p).split("-")[2] for p in paths.values()}) == len(RELEASES)


@pytest.mark.debian
@pytest.mark.parametrize("release", sorted(RELEASES))
def test_debian_template_has_the_checkpoint_dropin(release):
    path = debian_release_template(release)
    text = tar_file(path, "./etc/systemd/system/service.d/ovz-checkpoint.conf")
    settings = [line for line in text.splitlines() if line and not line.startswith("#")]
    # systemd 254+ (Debian 13) bind-mounts memory.pressure for MemoryPressureWatch=; 252 does not know the key.
    extra = ["MemoryPressureWatch=off"] if release == "debian-13" else []
    assert settings == ["[Service]", "ProtectHostname=no", "ProtectClock=no", "IPAddressDeny=", "IPAddressAllow=",
                        "DeviceAllow="] + extra


@pytest.mark.debian
@pytest.mark.parametrize("release", sorted(RELEASES))
def test_debian_template_apt_sources_masks_and_boot_units(release):
    path = debian_release_template(release)
    suite = RELEASES[release].suite
    members = tar_members(path)
    assert tar_file(path, "./etc/ovz-template").startswith("ovz %s template" % release)
    # The release's own suites, security included: deb822 for trixie, a sources.list for bookworm.
    if release == "debian-13":
        assert "./etc/apt/sources.list" not in members
        sources = tar_file(path, "./etc/apt/sources.list.d/debian.sources")
        assert "Suites: %s %s-updates\n" % (suite, suite) in sources
        assert "URIs: http://deb.debian.org/debian-security\nSuites: %s-security\n" % suite in sources
        assert sources.count("Signed-By: /usr/share/keyrings/debian-archive-keyring.pgp\n") == 2
    else:
        sources = tar_file(path, "./etc/apt/sources.list")
        assert "deb http://deb.debian.org/debian-security %s-security main\n" % suite in sources
    # Merged /usr, and the units that cannot work in a container masked.
    assert members["./lib"] == ("l", "usr/lib") and members["./bin"] == ("l", "usr/bin")
    for unit in ("systemd-udevd.service", "dev-hugepages.mount", "getty@tty1.service", "apt-daily.timer"):
        assert members["./etc/systemd/system/" + unit] == ("l", "/dev/null"), unit
    # What makes the boot end in "running": no getty on a console that is not a terminal, and the marker
    # wait_boot waits for.
    assert members["./etc/systemd/system-generators/ovz-console"][0] == "-"
    assert "console-getty.service" in tar_file(path, "./etc/systemd/system-generators/ovz-console")
    assert members["./etc/systemd/system/multi-user.target.wants/ovz-booted.service"] == (
        "l", "/etc/systemd/system/ovz-booted.service")
    assert "/run/ovz/booted" in tar_file(path, "./etc/systemd/system/ovz-booted.service")


def ansible_env():
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_ROOT, ANSIBLE_NOCOLOR="1",
                ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
                ANSIBLE_STDOUT_CALLBACK="default")


@pytest.mark.debian
def test_role_builds_both_debian_releases_then_changes_nothing(tmp_path):
    """The ovz_template role with debian-12 and debian-13 side by side, from the build cache (the builds the
    other tests made), distributed to a data dir; the second run changes nothing."""
    cache = {os.path.dirname(subprocess.run([DEBIAN, "--release", info.suite], stdout=subprocess.PIPE,
                                            universal_newlines=True, check=True).stdout.strip().splitlines()[-1])
             for info in RELEASES.values()}
    assert len(cache) == 1
    data_dir = tmp_path / "data"
    play = tmp_path / "play.yml"
    play.write_text("""
- hosts: localhost
  gather_facts: false
  roles:
    - role: ovz.containers.ovz_template
      vars:
        ovz_template_build: [debian-12, debian-13]
        ovz_template_build_packages: false
        ovz_template_cache_dir: %s
        ovz_template_data_dir: %s
""" % (json.dumps(cache.pop()), json.dumps(str(data_dir))))
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", "-c", "local",
            str(play), "-e", "ansible_python_interpreter=/usr/bin/python3"]
    runs = [subprocess.run(argv, env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True, timeout=900, check=False) for _run in range(2)]
    for proc in runs:
        assert proc.returncode == 0 and "failed=0" in proc.stdout, proc.stdout[-6000:]
    assert "changed=0" not in runs[0].stdout
    assert re.search(r"localhost\s+: ok=\d+\s+changed=0 ", runs[1].stdout), runs[1].stdout[-3000:]
    templates = data_dir / "templates"
    for release in RELEASES:
        target = os.readlink(str(templates / (release + ".tar.zst")))
        assert re.fullmatch(r"%s-[0-9a-f]{12}\.tar\.zst" % release, target), target
        assert (templates / target).stat().st_size > 10 << 20
