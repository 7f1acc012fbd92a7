# -*- coding: utf-8 -*-
"""The parts of the CRIU wrapper and the checkpoint engine that need no kernel (issue 7)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import struct
import tempfile
import time

import pytest


from ansible_collections.ovz.containers.plugins.module_utils._engine.ops import checkpoint as ckpt
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.criu import (
    IMG_SERVICE_MAGIC, STATS_MAGIC, TMPFS_MAGIC, Criu, CriuError, filesystem_type, find_criu, log_errors, read_stats)
from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.errors import InvalidParameter, KernelUnsupported


def varint(value):
    out = b""
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def field(number, value):
    if isinstance(value, bytes):
        return varint(number << 3 | 2) + varint(len(value)) + value
    return varint(number << 3) + varint(value)


def stats_file(path, which, fields):
    body = b"".join(field(k, v) for k, v in fields.items())
    entry = field(which, body)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<III", IMG_SERVICE_MAGIC, STATS_MAGIC, len(entry)) + entry)


def test_read_dump_and_restore_stats(tmp_path):
    stats_file(str(tmp_path / "stats-dump"), 1, {1: 800, 2: 156789, 3: 1100, 4: 120, 5: 4096, 6: 0, 7: 300, 9: 0})
    assert read_stats(str(tmp_path), "dump") == {
        "freezing_time": 800, "frozen_time": 156789, "memdump_time": 1100, "memwrite_time": 120,
        "pages_scanned": 4096, "pages_skipped_parent": 0, "pages_written": 300, "pages_lazy": 0}
    stats_file(str(tmp_path / "stats-restore"), 2, {1: 0, 2: 0, 3: 12, 4: 190200, 5: 18})
    assert read_stats(str(tmp_path), "restore")["restore_time"] == 190200
    assert read_stats(str(tmp_path / "missing"), "dump") == {}
    (tmp_path / "stats-dump").write_bytes(b"garbage")
    assert read_stats(str(tmp_path), "dump") == {}


def test_log_errors_prefers_error_lines(tmp_path):
    log = tmp_path / "dump.log"
    log.write_text("(00.01) Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self\n"
                   "(00.02) info\n(00.03) Error (criu/files-reg.c:1790): Can't lookup mount=27 for fd=1\n"
                   "(00.04) more info\n")
    assert log_errors(str(log)) == ["(00.03) Error (criu/files-reg.c:1790): Can't lookup mount=27 for fd=1"]
    log.write_text("one\ntwo\n")
    assert log_errors(str(log)) == ["one", "two"]
    assert log_errors(str(tmp_path / "none.log")) == []


def test_find_criu_names_the_problem(tmp_path, monkeypatch):
    with pytest.raises(KernelUnsupported, match="criu"):
        find_criu(str(tmp_path / "nothing"))
    fake = tmp_path / "criu"
    fake.write_text("#!/bin/sh\necho 'Version: 4.1.1'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("OVZ_CRIU", str(fake))
    criu = Criu()
    assert criu.binary == str(fake) and criu.version() == "4.1.1" and criu.version_tuple() == (4, 1, 1)


def test_failed_run_quotes_the_log(tmp_path):
    fake = tmp_path / "criu"
    fake.write_text("#!/bin/sh\necho '(00.1) Error (criu/x.c:1): it broke' > \"$3/$5\"\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(CriuError) as raised:
        Criu(str(fake)).run("dump", str(tmp_path), [], what="checkpoint of ct1")
    assert "checkpoint of ct1 failed" in str(raised.value) and "it broke" in str(raised.value)
    assert raised.value.log == os.path.join(str(tmp_path), "dump.log")


def test_pack_and_unpack_round_trip(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / ckpt.META_FILE).write_text(json.dumps({"version": ckpt.META_VERSION, "name": "ct1"}))
    (images / "pages-1.img").write_bytes(os.urandom(8192))
    dumpfile = str(tmp_path / "ct1.dump")
    assert ckpt.pack(str(images), dumpfile) == os.path.getsize(dumpfile)
    out = tmp_path / "out"
    out.mkdir()
    ckpt.unpack(dumpfile, str(out))
    assert (out / "pages-1.img").read_bytes() == (images / "pages-1.img").read_bytes()
    assert ckpt.load_meta(str(out))["name"] == "ct1"
    (tmp_path / "bad.dump").write_text("not a tar")
    with pytest.raises(InvalidParameter, match="dumpfile"):
        ckpt.unpack(str(tmp_path / "bad.dump"), str(out))
    with pytest.raises(InvalidParameter, match="dump_dir"):
        ckpt.load_meta(str(tmp_path))


def test_pre_dump_refused_without_dirty_tracking(tmp_path):
    class NoTracking(Criu):
        def feature(self, name):
            return name != "mem_dirty_track"

    checkpointer = ckpt.Checkpointer(ContainerManager(str(tmp_path / "data"), "ovz-tunit"), NoTracking("/bin/true"))
    with pytest.raises(KernelUnsupported, match="pre_dump_iterations.*CONFIG_MEM_SOFT_DIRTY"):
        checkpointer.pre_dump("ct1", str(tmp_path / "images"))
    assert not os.path.exists(str(tmp_path / "data"))


def test_answers_are_cached_per_binary_and_boot(tmp_path):
    calls = tmp_path / "calls"
    fake = tmp_path / "criu"
    fake.write_text("#!/bin/sh\necho \"$*\" >> %s\necho 'Version: 4.1.1'\n" % calls)
    fake.chmod(0o755)
    cache = str(tmp_path / "answers.json")
    first = Criu(str(fake), cache=cache)
    assert first.version() == "4.1.1" and first.feature("lazy_pages") is True
    # Another process (another Criu) asks nothing again: a migration asks while the container is frozen.
    second = Criu(str(fake), cache=cache)
    assert second.version() == "4.1.1" and second.feature("lazy_pages") is True
    assert calls.read_text().splitlines() == ["--version", "check --feature lazy_pages"]
    # A new binary (size or mtime) is asked afresh.
    fake.write_text(fake.read_text() + "exit 0\n")
    third = Criu(str(fake), cache=cache)
    assert third.feature("lazy_pages") is True
    assert calls.read_text().splitlines()[-1] == "check --feature lazy_pages" and len(calls.read_text().splitlines()) == 3
    # No cache: every instance asks.
    Criu(str(fake), cache=None).version()
    assert len(calls.read_text().splitlines()) == 4


FAKE_KDAT_CRIU = """#!/bin/sh
echo "$*" >> %s
# As CRIU: the cache is written only where its directory is a tmpfs.
if [ "$1" = check ] && [ "$(stat -f -c %%T "$OVZ_TEST_KDAT_DIR")" = tmpfs ]; then
    echo "kdat of $$" > "$OVZ_TEST_KDAT_DIR/criu.kdat"
fi
"""


@pytest.fixture
def disk_dir():
    """A directory that is not on a tmpfs (/var/tmp; pytest's tmp_path is under /tmp, a tmpfs on Debian 13)."""
    path = tempfile.mkdtemp(prefix="ovz-tests-kdat-", dir="/var/tmp")
    try:
        yield pathlib.Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="makes a mount namespace")
def test_kdat_cache_is_made_where_criu_would_not_keep_it(tmp_path, disk_dir, monkeypatch):
    calls = tmp_path / "calls"
    fake = tmp_path / "criu"
    fake.write_text(FAKE_KDAT_CRIU % calls)
    fake.chmod(0o755)
    run_dir = disk_dir / "run"   # not a tmpfs, as /run on this machine
    run_dir.mkdir()
    assert filesystem_type(str(run_dir)) != TMPFS_MAGIC
    monkeypatch.setenv("OVZ_TEST_KDAT_DIR", str(run_dir))
    cache = str(tmp_path / "answers.json")
    (run_dir / "criu.kdat.tmp").write_text("")
    os.utime(str(run_dir / "criu.kdat.tmp"), (time.time() - 120, time.time() - 120))
    made = Criu(str(fake), cache=cache).keep_kdat_cache(str(run_dir))
    assert made == str(run_dir / "criu.kdat")
    assert (run_dir / "criu.kdat").read_text().startswith("kdat of ")
    assert oct((run_dir / "criu.kdat").stat().st_mode & 0o777) == "0o600"
    assert not (run_dir / "criu.kdat.tmp").exists()   # a killed CRIU's leftover, gone
    assert sorted(os.listdir(str(run_dir))) == ["criu.kdat"]
    # Made once per binary and boot: the next run (another process) finds it in place.
    assert Criu(str(fake), cache=cache).keep_kdat_cache(str(run_dir)) == made
    assert calls.read_text().splitlines() == ["check"]
    # CRIU dropped it (another binary's): made again.
    (run_dir / "criu.kdat").unlink()
    assert Criu(str(fake), cache=cache).keep_kdat_cache(str(run_dir)) == made
    assert calls.read_text().splitlines() == ["check", "check"]
    # One this binary did not make in this boot (a previous boot's): replaced.
    (run_dir / "criu.kdat").write_text("from another boot")
    assert Criu(str(fake), cache=cache).keep_kdat_cache(str(run_dir)) == made
    assert (run_dir / "criu.kdat").read_text().startswith("kdat of ")
    assert calls.read_text().splitlines() == ["check", "check", "check"]
    # A new binary: its own cache.
    fake.write_text(fake.read_text() + "exit 0\n")
    assert Criu(str(fake), cache=cache).keep_kdat_cache(str(run_dir)) == made
    assert len(calls.read_text().splitlines()) == 4


@pytest.mark.skipif(os.geteuid() != 0, reason="runs as root only")
def test_kdat_cache_on_tmpfs_is_left_to_criu(tmp_path):
    run_dir = tempfile.mkdtemp(prefix="ovz-tests-kdat-", dir="/dev/shm")
    try:
        fake = tmp_path / "criu"
        fake.write_text("#!/bin/sh\necho called >> %s\n" % (tmp_path / "calls"))
        fake.chmod(0o755)
        stale = os.path.join(run_dir, "criu.kdat.tmp")
        open(stale, "w").close()
        os.utime(stale, (time.time() - 120, time.time() - 120))
        assert Criu(str(fake), cache=str(tmp_path / "a.json")).keep_kdat_cache(run_dir) is None
        assert not os.path.exists(stale) and not (tmp_path / "calls").exists()
        # One being written right now (a CRIU saving its cache) stays.
        open(stale, "w").close()
        Criu(str(fake), cache=str(tmp_path / "a.json")).keep_kdat_cache(run_dir)
        assert os.path.exists(stale)
    finally:
        shutil.rmtree(run_dir)


def test_log_follower_reads_only_what_is_new(tmp_path):
    log = tmp_path / "dump.log"
    follower = ckpt._LogFollower(str(log))
    assert follower.says("Starting lazy pages server") is False          # no log yet
    log.write_text("(00.01) one\n(00.02) Starting lazy ")
    assert follower.says("Starting lazy pages server") is False
    with open(str(log), "a") as handle:
        handle.write("pages server\n")                                   # the marker split across two reads
    assert follower.says("Starting lazy pages server") is True
    assert follower.offset == log.stat().st_size


def test_lend_follows_parent_images_but_never_out_of_their_directory(tmp_path):
    """The restore lends a checkpoint's images to the container's group: pre-dumps (``parent`` links to a
    sibling) too, but a link planted to somewhere else must not hand that place to the container's group."""
    if os.geteuid() != 0:
        pytest.skip("needs root (chown)")
    from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel import criu as criu_mod
    base = tmp_path / "images"
    pre, final, outside = base / "pre1", base / "final", tmp_path / "outside"
    for directory in (pre, final, outside):
        directory.mkdir(parents=True, mode=0o700)
        (directory / "pages-1.img").write_bytes(b"x")
        os.chmod(directory / "pages-1.img", 0o600)
    os.symlink("../pre1", final / "parent")
    os.symlink(str(outside), pre / "parent")          # planted: out of the images' directory
    block = 1000000000
    criu_mod.lend(str(final), block)
    for directory in (final, pre):
        assert (os.stat(directory).st_gid, os.stat(directory / "pages-1.img").st_gid) == (block, block)
        assert os.stat(directory / "pages-1.img").st_mode & 0o040
    assert os.stat(base).st_gid == block and os.stat(base).st_mode & 0o010      # searchable for ../pre1
    assert (os.stat(outside).st_gid, os.stat(outside / "pages-1.img").st_gid) == (0, 0)
    assert not os.stat(outside / "pages-1.img").st_mode & 0o077
    criu_mod.reclaim(str(final))
    for path in (base, pre, final, pre / "pages-1.img", final / "pages-1.img"):
        assert (os.stat(path).st_uid, os.stat(path).st_gid) == (0, 0), path
