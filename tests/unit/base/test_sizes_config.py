# -*- coding: utf-8 -*-
"""Sizes, names, the atomic JSON writer, the per-container lock and the config store."""

from __future__ import annotations

import fcntl
import json
import os
import select
import time

import pytest

from ansible_collections.ovz.containers.plugins.module_utils._engine.node import config as config_mod
from ansible_collections.ovz.containers.plugins.module_utils._engine.base import files as files_mod
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.files import atomic_write_json, read_json
from ansible_collections.ovz.containers.plugins.module_utils._engine.node.config import (
    ConfigStore, ContainerConfig, ContainerLock, HostLayout, iter_configs, validate_data_dir, validate_name)
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.errors import InvalidParameter
from ansible_collections.ovz.containers.plugins.module_utils._engine.base.sizes import (
    format_size, parse_count, parse_pair, parse_size)

K, M, G, T = 1 << 10, 1 << 20, 1 << 30, 1 << 40


# --------------------------------------------------------------------------
# sizes
# --------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("512M", 512 * M), ("10G", 10 * G), ("1.5G", 3 * G // 2), ("4096", 4096), (4096, 4096), (0, 0),
    ("1T", T), ("64k", 64 * K), (" 10G ", 10 * G), ("512MB", 512 * M), ("512MiB", 512 * M), ("2 G", 2 * G),
    ("100B", 100),
])
def test_parse_size(text, expected):
    assert parse_size(text, "ram") == expected


@pytest.mark.parametrize("bad", [-1, "-1", "-1G", "abc", "", "10X", "1..5G", "G", "1G2", True, False, None,
                                 "unlimited", "1G:2G"])
def test_parse_size_rejects_and_names_param(bad):
    with pytest.raises(InvalidParameter) as err:
        parse_size(bad, "diskspace")
    assert err.value.param == "diskspace"
    assert "diskspace" in str(err.value)


@pytest.mark.parametrize("text, expected", [(0, 0), (100, 100), ("100", 100), (" 7 ", 7)])
def test_parse_count(text, expected):
    assert parse_count(text, "numproc") == expected


@pytest.mark.parametrize("bad", [-1, "-5", "1.5", "1K", "abc", "", True, None])
def test_parse_count_rejects_and_names_param(bad):
    with pytest.raises(InvalidParameter) as err:
        parse_count(bad, "diskinodes")
    assert "diskinodes" in str(err.value)


@pytest.mark.parametrize("value, expected", [
    ("1G:2G", (G, 2 * G)), ("1G", (G, G)), (512 * M, (512 * M, 512 * M)), ("unlimited", (None, None)),
    ("max", (None, None)), ("1G:unlimited", (G, None)), ("unlimited:unlimited", (None, None)),
    ("2G:2G", (2 * G, 2 * G)), (["1G", "2G"], (G, 2 * G)), ((1, 2), (1, 2)), ("0:0", (0, 0)),
])
def test_parse_pair(value, expected):
    assert parse_pair(value, "swap") == expected


def test_parse_pair_counts():
    assert parse_pair("100:200", "numproc", as_size=False) == (100, 200)
    assert parse_pair(300, "numproc", as_size=False) == (300, 300)
    assert parse_pair("unlimited", "numproc", as_size=False) == (None, None)
    with pytest.raises(InvalidParameter, match="numproc"):
        parse_pair("1K:2K", "numproc", as_size=False)


@pytest.mark.parametrize("bad", ["2G:1G", "unlimited:1G", "1G:2G:3G", "-1G:1G", "1G:-1", "x:1G", ":", "1G:",
                                 True, ["1G"], ["1G", "2G", "3G"], "", "abc"])
def test_parse_pair_rejects_and_names_param(bad):
    with pytest.raises(InvalidParameter) as err:
        parse_pair(bad, "kmemsize")
    assert err.value.param == "kmemsize"
    assert "kmemsize" in str(err.value)


def test_parse_pair_barrier_above_limit_message():
    with pytest.raises(InvalidParameter, match="barrier .* above limit"):
        parse_pair("2G:1G", "ram")


@pytest.mark.parametrize("value, text", [(None, "unlimited"), (512 * M, "512M"), (10 * G, "10G"), (0, "0"),
                                         (1536, "1536"), (3 * K, "3K"), (2 * T, "2T")])
def test_format_size_round_trip(value, text):
    assert format_size(value) == text
    if value is not None:
        assert parse_size(text, "x") == value


# --------------------------------------------------------------------------
# names and paths
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["101", 101, "a", "ct-1.web_2", "A" * 64, "9" * 64, "x.y"])
def test_valid_names(name):
    assert validate_name(name) == str(name)


@pytest.mark.parametrize("name", ["a" * 65, ".x", "-x", "_x", "a/b", "", "a b", "ä", True, None, 1.5, "a\0b",
                                  ["a"]])
def test_invalid_names_name_the_param(name):
    with pytest.raises(InvalidParameter) as err:
        validate_name(name)
    assert err.value.param == "name" and "name" in str(err.value)


def test_invalid_name_uses_given_param():
    with pytest.raises(InvalidParameter, match="ctid"):
        validate_name("../etc", "ctid")


def test_name_with_trailing_newline_is_invalid():
    with pytest.raises(InvalidParameter):
        validate_name("abc\n")


def test_validate_data_dir():
    assert validate_data_dir("/var/lib/ovz/") == "/var/lib/ovz"
    for bad in ("relative", "", None, "/a\0b"):
        with pytest.raises(InvalidParameter, match="data_dir"):
            validate_data_dir(bad)


def test_host_layout_paths_touch_nothing(tmp_path):
    layout = HostLayout(str(tmp_path / "data"))
    assert layout.conf("101") == str(tmp_path / "data/conf/101.json")
    assert layout.private("101") == str(tmp_path / "data/private/101")
    assert layout.root("101") == str(tmp_path / "data/root/101")
    assert layout.dump("101") == str(tmp_path / "data/dump/101")
    assert layout.run("101") == str(tmp_path / "data/run/101")
    assert layout.templates() == str(tmp_path / "data/templates")
    assert layout.names() == []
    assert not (tmp_path / "data").exists()


# --------------------------------------------------------------------------
# atomic_write_json
# --------------------------------------------------------------------------
def _leftovers(directory):
    return [n for n in os.listdir(directory) if n.endswith(".tmp")]


def test_atomic_write_creates_dirs_mode_and_content(tmp_path):
    path = str(tmp_path / "a" / "b" / "x.json")
    atomic_write_json(path, {"k": [1, 2]})
    assert read_json(path) == {"k": [1, 2]}
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
    assert _leftovers(os.path.dirname(path)) == []
    atomic_write_json(path, {"k": 3}, mode=0o644)
    assert read_json(path) == {"k": 3}
    assert os.stat(path).st_mode & 0o777 == 0o644


@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_atomic_write_failure_keeps_old_content_and_no_temp(tmp_path, monkeypatch, exc):
    path = str(tmp_path / "conf" / "101.json")
    atomic_write_json(path, {"version": "old"})
    before = open(path).read()

    def boom(data, handle, **kwargs):
        handle.write('{"version": "ne')      # a torn write, then the failure
        raise exc

    monkeypatch.setattr(files_mod.json, "dump", boom)
    with pytest.raises(type(exc)):
        atomic_write_json(path, {"version": "new"})
    monkeypatch.undo()
    assert open(path).read() == before
    assert read_json(path) == {"version": "old"}
    assert _leftovers(os.path.dirname(path)) == []
    assert os.listdir(os.path.dirname(path)) == ["101.json"]


def test_atomic_write_failure_at_rename(tmp_path, monkeypatch):
    path = str(tmp_path / "x.json")
    atomic_write_json(path, [1])

    def bad_rename(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files_mod.os, "rename", bad_rename)
    with pytest.raises(OSError):
        atomic_write_json(path, [2])
    monkeypatch.undo()
    assert read_json(path) == [1]
    assert _leftovers(str(tmp_path)) == []


def test_read_json_missing_is_none(tmp_path):
    assert read_json(str(tmp_path / "nope.json")) is None


# --------------------------------------------------------------------------
# ContainerLock
# --------------------------------------------------------------------------
def _in_child(func):
    """Run ``func`` in a forked child; return (exit status, bytes it wrote to the pipe)."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(rfd)
            code = func(wfd)
        finally:
            os._exit(code)
    os.close(wfd)
    return pid, rfd


def _finish(pid, rfd, timeout=5.0):
    chunks = []
    deadline = time.monotonic() + timeout
    while True:
        ready, _writable, _errors = select.select([rfd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("child did not finish")
        data = os.read(rfd, 4096)
        if not data:
            break
        chunks.append(data)
    os.close(rfd)
    _pid, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks)


def _try_lock_nb(path):
    def child(wfd):
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 10
        return 0
    return _finish(*_in_child(child))[0]


def test_lock_is_exclusive_across_processes(tmp_path):
    layout = HostLayout(str(tmp_path / "data"))
    lock = ContainerLock(layout, "101")
    with lock:
        assert lock.fd is not None
        assert os.path.exists(lock.path)
        assert lock.path == os.path.join(layout.run("101"), "lock")
        assert _try_lock_nb(lock.path) == 10       # the child is locked out
    assert lock.fd is None
    assert _try_lock_nb(lock.path) == 0            # free again once released


def test_lock_waiter_gets_it_after_release(tmp_path):
    layout = HostLayout(str(tmp_path / "data"))
    holder = ContainerLock(layout, "101").__enter__()

    def child(wfd):
        os.close(holder.fd)  # a forked child shares the holder's open file description (and its flock)
        with ContainerLock(layout, "101"):
            os.write(wfd, b"got %f" % time.monotonic())
        return 0

    pid, rfd = _in_child(child)
    time.sleep(0.1)
    released = time.monotonic()
    holder.__exit__(None, None, None)
    code, out = _finish(pid, rfd)
    assert code == 0
    assert float(out.split()[1]) >= released       # it waited for the holder


def test_lock_survives_removal_of_the_lock_file(tmp_path):
    layout = HostLayout(str(tmp_path / "data"))
    first = ContainerLock(layout, "101").__enter__()
    old = os.fstat(first.fd)
    os.unlink(first.path)                          # destroy removes run/<name>/
    os.rmdir(os.path.dirname(first.path))
    with ContainerLock(layout, "101") as second:   # does not block on the orphaned file
        new = os.fstat(second.fd)
        assert not os.path.samestat(old, new)
        assert os.path.samestat(new, os.stat(second.path))
    assert os.fstat(first.fd).st_nlink == 0
    first.__exit__(None, None, None)


def test_lock_waiter_on_a_removed_file_retries_on_a_fresh_one(tmp_path):
    """A waiter blocked on the old file must not think it holds the lock once the file is gone."""
    layout = HostLayout(str(tmp_path / "data"))
    holder = ContainerLock(layout, "101").__enter__()
    old_ino = os.fstat(holder.fd).st_ino
    go_r, go_w = os.pipe()

    def child(wfd):
        os.close(holder.fd)  # a forked child shares the holder's open file description (and its flock)
        calls, links = [], []
        real_flock = fcntl.flock

        def flock(fd, op):
            calls.append(os.fstat(fd).st_ino)
            if len(calls) == 1:
                os.write(go_w, b"x")               # opened the old file; about to block on it
            result = real_flock(fd, op)
            links.append(os.fstat(fd).st_nlink)    # 0: the file we now hold was unlinked meanwhile
            return result

        config_mod.fcntl = type("F", (), {"flock": staticmethod(flock), "LOCK_EX": fcntl.LOCK_EX})
        with ContainerLock(layout, "101") as lock:
            same = os.path.samestat(os.fstat(lock.fd), os.stat(lock.path))
            os.write(wfd, json.dumps({"calls": calls, "links": links, "same": same}).encode())
        return 0

    pid, rfd = _in_child(child)
    os.close(go_w)
    assert select.select([go_r], [], [], 5)[0], "child never tried to lock"
    os.read(go_r, 1)
    os.close(go_r)
    time.sleep(0.05)
    os.unlink(holder.path)
    holder.__exit__(None, None, None)
    code, out = _finish(pid, rfd)
    assert code == 0
    report = json.loads(out)
    assert report["calls"][0] == old_ino           # first it locked the orphaned file...
    assert report["links"] == [0, 1]               # ...got it only after it was unlinked, noticed,
    assert report["same"]                          # ...and locked the fresh file the path names


# --------------------------------------------------------------------------
# ConfigStore / ContainerConfig
# --------------------------------------------------------------------------
def test_config_store_round_trip(tmp_path):
    layout = HostLayout(str(tmp_path / "data"))
    store = ConfigStore(layout)
    assert not store.exists("101") and store.load("101") is None
    config = ContainerConfig(name="101", layout="directory", hostname="ct101", onboot=True,
                             diskspace=[G, 2 * G], diskinodes=[None, 1000],
                             limits={"cpuunits": 2000, "ram": [None, None]},
                             network={"ip_address": ["10.213.0.2"]})
    store.save(config)
    assert store.exists("101")
    assert store.load("101") == config
    assert layout.names() == ["101"]
    assert os.stat(layout.conf("101")).st_mode & 0o777 == 0o600
    config.limits["cpuunits"] = 3000
    store.save(config)
    assert store.load("101").limits["cpuunits"] == 3000
    store.remove("101")
    store.remove("101")                            # idempotent
    assert not store.exists("101") and layout.names() == []


def test_config_defaults():
    config = ContainerConfig(name="x")
    assert (config.layout, config.init, config.onboot) == ("image", "/sbin/init", False)
    assert config.diskspace == [None, None]
    other = ContainerConfig(name="y")
    other.limits["a"] = 1
    assert config.limits == {}                     # no shared mutable defaults


def test_from_dict_ignores_unknown_keys():
    data = ContainerConfig(name="101", hostname="h").to_dict()
    data.update({"from_the_future": {"x": 1}, "ostemplate": "centos"})
    config = ContainerConfig.from_dict(data)
    assert config.name == "101" and config.hostname == "h"
    assert not hasattr(config, "from_the_future")
    assert ContainerConfig.from_dict({"name": "z", "junk": 1}) == ContainerConfig(name="z")


def test_names_and_iter_configs_skip_foreign_and_corrupt_files(tmp_path):
    layout = HostLayout(str(tmp_path / "data"))
    store = ConfigStore(layout)
    for name in ("b", "a"):
        store.save(ContainerConfig(name=name))
    conf = layout.conf_dir()
    open(os.path.join(conf, "broken.json"), "w").write("{not json")
    open(os.path.join(conf, ".a.json.x.tmp"), "w").write("{}")
    open(os.path.join(conf, "notes.txt"), "w").write("hi")
    os.mkdir(os.path.join(conf, "dir.json"))
    assert layout.names() == ["a", "b", "broken", "dir"]
    assert [c.name for c in iter_configs(layout)] == ["a", "b"]


@pytest.mark.parametrize("text", ["{}", "[]", '{"layout": "image"}'])
def test_iter_configs_skips_json_that_is_not_a_config(tmp_path, text):
    layout = HostLayout(str(tmp_path / "data"))
    ConfigStore(layout).save(ContainerConfig(name="a"))
    open(os.path.join(layout.conf_dir(), "foreign.json"), "w").write(text)
    assert [c.name for c in iter_configs(layout)] == ["a"]
