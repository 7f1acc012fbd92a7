# -*- coding: utf-8 -*-
"""Reading ``molecule test`` output: one check for the local scenarios (tests/integration/test_molecule.py)
and the VM platform's (tests/vm/test_molecule_vm.py)."""

from __future__ import annotations

import re

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
RECAP = re.compile(r"^\s*(?:\d+\.\d+\s+)?[│|]?\s*(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def step_output(output: str, step: str) -> str:
    """The part of molecule's output between its lines ``[scenario > step] Executing`` and ``... Executed``
    (``scenario ➜ step: Executing`` with colours)."""
    match = re.search(r"(?:>|➜) %s\]?:? Executing(.*?)(?:>|➜) %s\]?:? Executed" % (step, step), output, re.S)
    return match.group(1) if match else ""


def assert_molecule_test_passed(returncode: int, raw_output: str) -> str:
    """``molecule test`` exited 0, its idempotence step changed nothing and verify succeeded; the plain output."""
    output = ANSI.sub("", raw_output)
    assert returncode == 0, output[-6000:]
    idempotence = step_output(output, "idempotence")
    recaps = RECAP.findall(idempotence)
    assert recaps, "no play recap in the idempotence step: " + idempotence[-3000:]
    changed = {host: int(count) for host, _ok, count, _u, _f in recaps if int(count)}
    assert not changed, "idempotence reported changed tasks: %s" % changed
    assert re.search(r"(?:>|➜) verify\]?:? Executed: Successful", output), output[-3000:]
    return output
