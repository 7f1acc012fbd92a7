# -*- coding: utf-8 -*-
"""atomic_file (base/files.py), the one way the engine replaces a file whole; no kernel needed."""

from __future__ import annotations

import os

import pytest

from ansible_collections.ovz.containers.plugins.module_utils._engine.base.files import atomic_file


def _names(directory):
    return sorted(os.listdir(str(directory)))


def test_text_and_binary_replace_the_file_with_its_mode(tmp_path):
    path = str(tmp_path / "table")
    with atomic_file(path, 0o400, durable=False) as handle:
        handle.write("one\n")
    assert open(path).read() == "one\n" and os.stat(path).st_mode & 0o777 == 0o400
    with atomic_file(path, 0o644, binary=True) as handle:
        handle.write(b"\x00two")
    assert open(path, "rb").read() == b"\x00two" and os.stat(path).st_mode & 0o777 == 0o644
    assert _names(tmp_path) == ["table"]


def test_a_failing_block_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(str(path)) as handle:
            handle.write("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old"
    assert _names(tmp_path) == ["state.json"]


def test_a_planted_symlink_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("host file")
    guest = tmp_path / "guest"
    guest.mkdir()
    (guest / "user_beancounters").symlink_to(victim)
    with atomic_file(str(guest / "user_beancounters"), 0o400, durable=False, dir_mode=None) as handle:
        handle.write("table")
    assert victim.read_text() == "host file"
    assert not os.path.islink(str(guest / "user_beancounters"))
    assert (guest / "user_beancounters").read_text() == "table"


def test_directories_are_made_with_dir_mode_or_must_exist(tmp_path):
    with atomic_file(str(tmp_path / "a" / "b" / "cache.json"), 0o644, durable=False, dir_mode=0o755) as handle:
        handle.write("{}")
    assert os.stat(str(tmp_path / "a" / "b")).st_mode & 0o777 == 0o755
    with pytest.raises(FileNotFoundError):
        with atomic_file(str(tmp_path / "missing" / "x"), dir_mode=None) as handle:
            handle.write("x")
    assert not (tmp_path / "missing").exists()


def test_owner_is_given_to_the_new_file(tmp_path):
    path = str(tmp_path / "owned")
    # as root, the id an unprivileged container's root has on the host; otherwise one's own
    uid, gid = (100000, 100000) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    with atomic_file(path, 0o600, durable=False, owner=(uid, gid)) as handle:
        handle.write("x")
    info = os.stat(path)
    assert (info.st_uid, info.st_gid) == (uid, gid)
