# -*- coding: utf-8 -*-
"""Pure parts of remote execution and migration: target parsing, the shipped engine, image chunks, journal."""

from __future__ import annotations

import io
import os
import subprocess
import zipfile

import pytest

from ansible_collections.ovz.containers.plugins.module_utils._engine.ops import migration
from ansible_collections.ovz.containers.plugins.module_utils._engine.ops import migration_shared, migration_target, migration_transfer
from ansible_collections.ovz.containers.plugins.module_utils._engine.ops import remote
from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.errors import InvalidParameter


@pytest.mark.parametrize("text, host, user, port", [
    ("node2", "node2", "root", 22),
    ("admin@node2:2222", "node2", "admin", 2222),
    ("10.213.200.12", "10.213.200.12", "root", 22),
    ("root@[fd00:213::200:12]:22", "fd00:213::200:12", "root", 22),
    ("fd00:213::200:12", "fd00:213::200:12", "root", 22),
])
def test_target_from_string(text, host, user, port):
    target = remote.Target.from_param(text, data_dir="/srv/ovz", identity_file=None)
    assert (target.host, target.user, target.port, target.data_dir) == (host, user, port, "/srv/ovz")
    assert target.remote_path("/x").endswith(":/x")


@pytest.mark.parametrize("value, param", [
    ("-oProxyCommand=touch /tmp/x", "target"), ("root@host:0", "target"), ("root@host:x", "target"),
    ("ro ot@host", "target"), ("", "target"), ({"host": "h", "colour": 1}, "target"),
    ({"host": "h", "identity_file": "relative/key"}, "ssh_key"), ({"host": "h", "data_dir": "rel"}, "data_dir"),
    ({"host": "h", "python": "python3; rm -rf /"}, "target_python"), (42, "target"),
])
def test_target_bad_values_name_the_parameter(value, param):
    with pytest.raises(InvalidParameter) as info:
        remote.Target.from_param(value)
    assert info.value.param == param


def test_ssh_argv_options():
    target = remote.Target.from_param({"host": "h", "port": 2200, "identity_file": "/k", "known_hosts": "/kh",
                                       "ssh_options": ["Foo=bar"]})
    argv = target.ssh_argv("/tmp/cm", master=True)
    assert argv[0] == "ssh" and "BatchMode=yes" in argv and "IdentitiesOnly=yes" in argv
    assert "UserKnownHostsFile=/kh" in argv and "StrictHostKeyChecking=yes" in argv and "Foo=bar" in argv
    assert "ControlPath=/tmp/cm" in argv and "ControlMaster=yes" in argv and argv[argv.index("-p") + 1] == "2200"


def test_the_operators_ssh_options_take_precedence_but_never_over_batch_mode():
    """ssh keeps the first value of an option: what ssh itself resolves (``ssh -G``) is what counts."""
    target = remote.Target.from_param({"host": "h", "known_hosts": "/kh", "ssh_options": [
        "ServerAliveCountMax=12", "StrictHostKeyChecking=accept-new", "BatchMode=no", "Ciphers=aes128-ctr"]})
    argv = target.ssh_argv()
    resolved = subprocess.run(argv[:1] + ["-G"] + argv[1:] + [target.host], stdout=subprocess.PIPE,
                              universal_newlines=True, check=True, timeout=30).stdout.splitlines()
    assert {"serveralivecountmax 12", "serveraliveinterval 5", "stricthostkeychecking accept-new",
            "batchmode yes", "ciphers aes128-ctr", "userknownhostsfile /kh"} <= set(resolved), resolved


def test_engine_zip_holds_the_engine():
    archive = zipfile.ZipFile(io.BytesIO(remote.engine_zip()))
    names = {os.path.basename(n) for n in archive.namelist()}
    assert {"migration.py", "remote.py", "manager.py", "checkpoint.py", "criu.py", "network.py"} <= names
    assert "ansible_collections/ovz/containers/plugins/module_utils/__init__.py" in archive.namelist()
    # the sub-packages go along, each with its __init__.py
    base = "ansible_collections/ovz/containers/plugins/module_utils/"
    assert {base + "_engine/__init__.py", base + "_engine/container/__init__.py", base + "_engine/container/manager.py",
            base + "_engine/ops/migration.py", base + "_engine/kernel/devices_bpf.py"} <= set(archive.namelist())


def test_remote_calls_are_an_explicit_table():
    assert set(migration_target.REMOTE_CALLS) == {"status", "preflight", "prepare", "restore", "announce", "commit", "abort", "lazy_wait"}
    with pytest.raises(InvalidParameter):
        remote.RemoteSession(remote.Target.from_param("h"), module="os")


def test_data_chunks_skip_holes(tmp_path):
    image = str(tmp_path / "img")
    with open(image, "wb") as handle:
        handle.truncate(64 * migration_transfer.CHUNK)
        handle.seek(3 * migration_transfer.CHUNK + 10)
        handle.write(b"x" * 100)
        handle.seek(40 * migration_transfer.CHUNK)
        handle.write(b"y" * (migration_transfer.CHUNK + 1))
    assert migration_transfer.data_chunks(image) == [3, 40, 41]


def test_tree_bytes_counts_hard_links_once(tmp_path):
    (tmp_path / "a").write_bytes(b"z" * 100000)
    os.link(str(tmp_path / "a"), str(tmp_path / "b"))
    assert migration_transfer.tree_bytes(str(tmp_path)) == os.stat(str(tmp_path / "a")).st_blocks * 512


def test_journal_round_trip(tmp_path):
    manager = ContainerManager(str(tmp_path), "ovz-tunit")
    assert migration_shared.read_journal(manager, "c1") is None
    journal = {"id": "x", "name": "c1"}
    migration_shared.write_journal(manager, journal, "copy")
    assert migration_shared.read_journal(manager, "c1")["phase"] == "copy"
    assert migration.recover(manager, "c2") is None
    assert not os.path.exists(manager.layout.dump("c2"))
    migration_shared.clear_journal(manager, "c1")
    assert not os.path.exists(manager.layout.dump("c1"))


def test_bad_pre_dump_iterations(tmp_path):
    manager = ContainerManager(str(tmp_path), "ovz-tunit")
    for value in (-1, 21, "3", True):
        with pytest.raises(InvalidParameter) as info:
            migration.migrate(manager, "c1", "node2", pre_dump_iterations=value)
        assert info.value.param == "pre_dump_iterations"
    assert os.listdir(str(tmp_path)) == []


def test_small_images_travel_inside_the_restore_request(tmp_path):
    final = tmp_path / "final"
    final.mkdir()
    (final / "pages-1.img").write_bytes(os.urandom(5000))
    (final / "inventory.img").write_bytes(b"\0\1\2")
    os.symlink("../pre2", str(final / "parent"))
    packed = migration_transfer.pack_images(str(final))
    assert [entry[:2] for entry in packed] == [["inventory.img", "file"], ["pages-1.img", "file"], ["parent", "link"]]
    out = tmp_path / "target" / "final"
    out.parent.mkdir()
    out.mkdir()
    (out / "stale.img").write_bytes(b"from an earlier attempt")
    assert migration_transfer.unpack_images(str(out), packed) == 5003
    assert sorted(os.listdir(str(out))) == ["inventory.img", "pages-1.img", "parent"]
    assert (out / "pages-1.img").read_bytes() == (final / "pages-1.img").read_bytes()
    assert os.readlink(str(out / "parent")) == "../pre2"
    # Big ones, and anything but files and symlinks, go by rsync.
    assert migration_transfer.pack_images(str(final), limit=4000) is None
    (final / "sub").mkdir()
    assert migration_transfer.pack_images(str(final)) is None
    with pytest.raises(InvalidParameter, match="images"):
        migration_transfer.unpack_images(str(out), [["../escape", "file", ""]])


class _FakeCriu:
    def __init__(self, version):
        self._version = version

    def version(self):
        return self._version

    def version_tuple(self):
        return tuple(int(p) for p in self._version.split("."))

    def check(self):
        return True, "Looks good."

    def feature(self, name):
        return name == "uffd-noncoop"


@pytest.mark.parametrize("target, source, refused", [
    ("3.17.1", [4, 1, 1], "older than the source's 4.1.1"),     # trixie -> bookworm
    ("4.1.1", [3, 17, 1], "newer than the source's 3.17.1"),    # bookworm -> trixie: 4.1 fails to restore 3.17's
    ("4.1.1", [4, 1, 0], None),                                 # the same major.minor
])
def test_preflight_wants_the_same_criu_major_minor(tmp_path, monkeypatch, target, source, refused):
    monkeypatch.setattr(migration_target, "local_criu", lambda: _FakeCriu(target))

    def call():
        return migration_target._remote_preflight({}, str(tmp_path / "ovz"), "ovz-tunit", "c1", {}, 0, source,  # pylint: disable=protected-access
                                                  "src")
    if refused is None:
        assert call()["criu_version"] == target
        return
    with pytest.raises(migration.OvzError) as info:
        call()
    assert info.value.param == "target" and refused in str(info.value), str(info.value)
    assert not os.path.exists(str(tmp_path / "ovz"))      # refused before anything was made on the target


def test_lazy_daemon_status_is_read_only_once_whole(tmp_path):
    """The status file of ``criu lazy-pages`` is renamed into place whole; one the shell has only opened
    (empty) is no status yet. Before, it read as exit -1: a migration whose pages had all arrived failed
    ("the target did not get every memory page (criu lazy-pages exit -1)", seen in a loaded run)."""
    images = str(tmp_path)
    rc_file = os.path.join(images, migration_shared.LAZY_RC)
    with open(rc_file, "w"):
        pass
    assert migration_target.lazy_daemon(images)["rc"] is None
    with open(rc_file, "w") as handle:
        handle.write("0\n")
    assert migration_target.lazy_daemon(images)["rc"] == 0
