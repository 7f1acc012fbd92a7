# -*- coding: utf-8 -*-
"""The beancounter table inside a container (/run/ovz/user_beancounters), without the live view.

It is there as soon as a start returns, and it follows every change of the container's
limits: root inside reads the barrier and limit that are in force. A table the host
cannot write is reported, never dropped in silence.
"""

from __future__ import annotations

import errno
import json
import os

from support.node import run_module
from support.beancounters import GUEST, parse

PAGE = 4096


def args(node, name, **extra):
    return dict(name=name, data_dir=node.data_dir, cgroup_parent=node.cgroup_parent, **extra)


def table_inside(node, name):
    result = node.manager.exec(name, ["cat", GUEST], timeout=30)
    assert result.rc == 0, "%s is not readable inside: %s" % (GUEST, result.stderr.decode(errors="replace"))
    return parse(result.stdout.decode(), name)


def barrier_limit(rows, key):
    return rows[key][2:4]


def test_table_inside_from_the_start(node, busybox_template):
    name = node.name()
    node.manager.create(name, busybox_template, layout="directory")
    stored = run_module("ovz_limits", args(node, name, numproc="100:120", ram="128M"))
    assert stored["changed"] is True and not stored.get("failed"), stored
    for _round in range(2):      # the first start, and a start after a stop (a new tmpfs each time)
        node.manager.start(name)
        rows = table_inside(node, name)
        assert barrier_limit(rows, "numproc") == (100, 120)
        assert barrier_limit(rows, "physpages") == ((128 << 20) // PAGE,) * 2
        assert rows["numproc"][0] >= 1, rows["numproc"]
        node.manager.stop(name, timeout=5)


def test_table_inside_follows_every_limits_change(container, node):
    name = container
    first = table_inside(node, name)
    checked = run_module("ovz_limits", args(node, name, numproc="150:200"), check=True)
    assert checked["changed"] is True and not checked.get("failed"), checked
    assert barrier_limit(table_inside(node, name), "numproc") == barrier_limit(first, "numproc"), "check mode wrote"

    result = run_module("ovz_limits", args(node, name, numproc="150:200", ram="96M", ubc={"numfile": "500:600"}))
    assert result["changed"] is True and not result.get("failed"), result
    rows = table_inside(node, name)
    assert barrier_limit(rows, "numproc") == (150, 200)
    assert barrier_limit(rows, "physpages") == ((96 << 20) // PAGE,) * 2
    assert barrier_limit(rows, "numfile") == (500, 600)
    assert result["beancounters"]["numproc"]["limit"] == 200
    assert run_module("ovz_limits", args(node, name, numproc="150:200"))["changed"] is False

    again = run_module("ovz_limits", args(node, name, numproc="90"))
    assert again["changed"] is True
    assert barrier_limit(table_inside(node, name), "numproc") == (90, 90)


def fill(path):
    """Write ``path`` until its filesystem has not one byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)


def test_a_table_that_cannot_be_written_is_reported(container, node):
    """The host's tmpfs under the container's /run/ovz is full: the change holds, and says what was not written."""
    name = container
    filler = os.path.join(node.manager.layout.volatile(name), "ovz-filler")
    try:
        fill(filler)
        result = run_module("ovz_limits", args(node, name, numproc="77"))
        assert result["changed"] is True and not result.get("failed"), result
        warnings = json.dumps(result.get("warnings") or [])
        assert "user_beancounters" in warnings and node.manager.layout.guest(name) in warnings, result
        assert result["beancounters"]["numproc"]["limit"] == 77
        info = run_module("ovz_info", dict(name=[name], data_dir=node.data_dir, cgroup_parent=node.cgroup_parent))
        assert not info.get("failed") and "user_beancounters" in json.dumps(info.get("warnings") or []), info
    finally:
        try:
            os.unlink(filler)
        except FileNotFoundError:
            pass
    assert run_module("ovz_limits", args(node, name, numproc="78"))["changed"] is True
    assert barrier_limit(table_inside(node, name), "numproc") == (78, 78)
