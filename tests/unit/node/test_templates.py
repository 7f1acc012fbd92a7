# -*- coding: utf-8 -*-
"""Finding OS templates, and the cached offline busybox template."""

from __future__ import annotations

import os
import stat
import tarfile

import pytest

from ansible_collections.ovz.containers.plugins.module_utils._engine.base.errors import InvalidParameter, OvzError
from ansible_collections.ovz.containers.plugins.module_utils._engine.node.templates import (
    build_busybox_template, find_template, resolve_template)

BUSYBOX = "/bin/busybox"
needs_busybox = pytest.mark.skipif(not os.path.isfile(BUSYBOX), reason="busybox-static is not installed")


@pytest.fixture
def templates(tmp_path):
    path = tmp_path / "templates"
    path.mkdir()
    return path


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


# --------------------------------------------------------------------------
# resolve_template
# --------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.zst", ".tar.bz2"])
def test_tarball_path(templates, tmp_path, suffix):
    tarball = _touch(tmp_path / "elsewhere" / ("rootfs" + suffix))
    assert resolve_template(str(tarball), str(templates)) == str(tarball)


def test_relative_tarball_path_becomes_absolute(templates, tmp_path, monkeypatch):
    _touch(tmp_path / "rootfs.tar.gz")
    monkeypatch.chdir(tmp_path)
    assert resolve_template("./rootfs.tar.gz", str(templates)) == str(tmp_path / "rootfs.tar.gz")


def test_directory_path(templates, tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "sbin").mkdir(parents=True)
    assert resolve_template(str(rootfs), str(templates)) == str(rootfs)
    assert resolve_template(str(rootfs) + "/", str(templates)) == str(rootfs)


def test_name_in_templates_dir(templates):
    _touch(templates / "busybox.tar.gz")
    assert resolve_template("busybox", str(templates)) == str(templates / "busybox.tar.gz")


def test_name_follows_symlink_and_prefers_suffix_order(templates):
    _touch(templates / "busybox-abc.tar.gz")
    os.symlink("busybox-abc.tar.gz", str(templates / "busybox.tar.gz"))
    assert resolve_template("busybox", str(templates)) == str(templates / "busybox-abc.tar.gz")
    _touch(templates / "busybox.tar.zst")          # .tar.zst comes first in TEMPLATE_SUFFIXES
    assert resolve_template("busybox", str(templates)) == str(templates / "busybox.tar.zst")


def test_both_debian_releases_side_by_side(templates):
    """The ovz_template role's layout: each release's name links to its own content-named build."""
    for release, digest in (("debian-12", "0123456789ab"), ("debian-13", "ba9876543210")):
        _touch(templates / ("%s-%s.tar.zst" % (release, digest)))
        os.symlink("%s-%s.tar.zst" % (release, digest), str(templates / (release + ".tar.zst")))
    assert resolve_template("debian-12", str(templates)) == str(templates / "debian-12-0123456789ab.tar.zst")
    assert resolve_template("debian-13", str(templates)) == str(templates / "debian-13-ba9876543210.tar.zst")
    with pytest.raises(InvalidParameter) as err:
        resolve_template("debian-1", str(templates))
    _assert_names_template(err)


def test_name_of_a_directory_template(templates):
    (templates / "debian-12" / "sbin").mkdir(parents=True)
    assert resolve_template("debian-12", str(templates)) == str(templates / "debian-12")


def _assert_names_template(excinfo):
    assert excinfo.value.param == "template"
    assert "template" in str(excinfo.value)


def test_unknown_name(templates):
    _touch(templates / "busybox.tar.gz")
    with pytest.raises(InvalidParameter) as err:
        resolve_template("centos-7", str(templates))
    _assert_names_template(err)
    assert "centos-7" in str(err.value)
    assert find_template("centos-7", str(templates)) is None
    assert find_template("busybox", str(templates)) == str(templates / "busybox.tar.gz")


def test_missing_templates_dir(tmp_path):
    with pytest.raises(InvalidParameter) as err:
        resolve_template("busybox", str(tmp_path / "nope"))
    _assert_names_template(err)


@pytest.mark.parametrize("name", ["rootfs.txt", "rootfs.zip", "rootfs.gz", "image.img"])
def test_non_tarball_file(tmp_path, templates, name):
    path = _touch(tmp_path / name)
    with pytest.raises(InvalidParameter) as err:
        resolve_template(str(path), str(templates))
    _assert_names_template(err)
    assert "not a rootfs tarball" in str(err.value)


def test_missing_path(tmp_path, templates):
    with pytest.raises(InvalidParameter) as err:
        resolve_template(str(tmp_path / "gone.tar.gz"), str(templates))
    _assert_names_template(err)
    assert "does not exist" in str(err.value)


@pytest.mark.parametrize("bad", ["", None, 42, "a\0b", ["busybox"]])
def test_malformed_template(templates, bad):
    with pytest.raises(InvalidParameter) as err:
        resolve_template(bad, str(templates))
    _assert_names_template(err)


@pytest.mark.parametrize("name", ["..", "."])
def test_dot_names_are_not_templates(templates, name):
    with pytest.raises(InvalidParameter):
        resolve_template(name, str(templates))


def test_bare_name_of_non_tarball_file_is_refused(templates):
    _touch(templates / "notes")
    with pytest.raises(InvalidParameter):
        resolve_template("notes", str(templates))


# --------------------------------------------------------------------------
# build_busybox_template
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    dest = tmp_path_factory.mktemp("tpl")
    first = build_busybox_template(str(dest))
    return str(dest), first, os.stat(first).st_mtime_ns


@needs_busybox
def test_busybox_template_is_cached(built):
    dest, first, mtime = built
    second = build_busybox_template(dest)
    assert second == first
    assert os.stat(second).st_mtime_ns == mtime
    assert sorted(os.listdir(dest)) == sorted([os.path.basename(first), "busybox.tar.gz"])  # no work dirs left
    assert os.readlink(os.path.join(dest, "busybox.tar.gz")) == os.path.basename(first)
    assert resolve_template("busybox", dest) == first


@needs_busybox
def test_busybox_template_contents(built):
    _dest, tarball, _mtime = built
    with tarfile.open(tarball, "r:gz") as tar:
        members = {m.name[2:] if m.name.startswith("./") else m.name: m for m in tar.getmembers()}
        assert {"sbin/init", "etc/inittab", "etc/init.d/rcS", "etc/init.d/rcK", "bin/busybox",
                "bin/sh"} <= set(members)
        for name in ("etc/init.d/rcS", "etc/init.d/rcK", "bin/busybox"):
            assert members[name].mode & stat.S_IXUSR, name
        assert all(m.uid == 0 and m.gid == 0 for m in members.values())
        inittab = tar.extractfile(members["etc/inittab"]).read().decode()
        assert "::sysinit:/etc/init.d/rcS" in inittab
        rcs = tar.extractfile(members["etc/init.d/rcS"]).read().decode()
        assert rcs.startswith("#!/bin/sh") and "/run/ovz/booted" in rcs
        # sbin/init is busybox (a hard link to it, or the file itself)
        init = members["sbin/init"]
        assert init.islnk() or init.isfile()
        assert members["tmp"].mode & 0o1777 == 0o1777


@needs_busybox
def test_busybox_template_relinks_a_stale_symlink(built):
    dest, first, _mtime = built
    link = os.path.join(dest, "busybox.tar.gz")
    os.unlink(link)
    os.symlink("busybox-old.tar.gz", link)
    assert build_busybox_template(dest) == first
    assert os.readlink(link) == os.path.basename(first)


def test_busybox_missing(tmp_path):
    with pytest.raises(OvzError) as err:
        build_busybox_template(str(tmp_path / "tpl"), busybox=str(tmp_path / "no-busybox"))
    assert err.value.param == "busybox" and "busybox-static" in str(err.value)
    assert not (tmp_path / "tpl").exists()
