# -*- coding: utf-8 -*-
"""The beancounter table as a container reads it (``/proc/user_beancounters``, bound from the live view)."""

from __future__ import annotations

from ansible_collections.ovz.containers.plugins.module_utils._engine.resources.beancounters import UBC_ORDER


GUEST = "/run/ovz/user_beancounters"


def parse(text, name):
    """A /proc/user_beancounters table: {resource: (held, maxheld, barrier, limit, failcnt)}; checks the format."""
    lines = text.splitlines()
    assert lines[0] == "Version: 2.5", text
    assert lines[1].split() == ["uid", "resource", "held", "maxheld", "barrier", "limit", "failcnt"], text
    rows = {}
    for index, line in enumerate(lines[2:]):
        fields = line.split()
        if index == 0:
            assert fields[0] == name + ":", line
            fields = fields[1:]
        assert len(fields) == 6, line
        rows[fields[0]] = tuple(int(v) for v in fields[1:])
    assert list(rows) == list(UBC_ORDER), text
    return rows
