# -*- coding: utf-8 -*-
"""``molecule test`` of every role scenario that runs on this machine (issue 8).

A scenario in ``extensions/molecule/`` is *local* unless it runs on the VM platform: its
``molecule.yml`` sets ``OVZ_VM_ID`` in ``ansible.env`` or takes its create playbook from
``../vm/`` (``vm``, ``ovz_host``: tests/vm/test_molecule_vm.py runs those on the VM tier's VMs).
Local scenarios bring their own platform up and down in create/destroy (a Debian container
for ``ovz_host_local``, the multi-node harness of ``tests/support/multinode.py`` for the others).
Each run must exit 0, and its idempotence step must report zero changed tasks; when it
fails, ``molecule destroy`` runs again so that nothing is left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import yaml

from support import REPO
from support.node import debian_template_path
from support.molecule_output import assert_molecule_test_passed

pytestmark = [pytest.mark.multinode, pytest.mark.slow]

SCENARIOS = os.path.join(REPO, "extensions", "molecule")
BIN = os.path.dirname(sys.executable)


def is_local(name: str) -> bool:
    path = os.path.join(SCENARIOS, name, "molecule.yml")
    if not os.path.isfile(path):
        return False
    with open(path) as handle:
        config = yaml.safe_load(handle) or {}
    ansible = config.get("ansible") or {}
    create = str((ansible.get("playbooks") or {}).get("create", ""))
    return "OVZ_VM_ID" not in (ansible.get("env") or {}) and "../vm/" not in create and name != "vm"


def local_scenarios():
    return sorted(name for name in os.listdir(SCENARIOS) if is_local(name)) if os.path.isdir(SCENARIOS) else []


def molecule_env() -> dict:
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), NO_COLOR="1", PY_COLORS="0",
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", MOLECULE_NO_LOG="false")
    env["OVZ_DEBIAN_TEMPLATE"] = debian_template_path()   # ovz_host_local boots a Debian container
    return env


def test_scenarios_are_found():
    names = local_scenarios()
    assert "ovz_template" in names and "ovz_host_local" in names
    assert "vm" not in names and "ovz_host" not in names
    # Every role's scenario here has its twin on the VM platform (tests/vm/test_molecule_vm.py).
    roles = {name for name in names if name != "ovz_host_local"}
    assert roles and all(os.path.isfile(os.path.join(SCENARIOS, role + "_vm", "molecule.yml")) for role in roles), roles
    assert not [name for name in names if name.endswith("_vm")]


@pytest.mark.parametrize("scenario", local_scenarios())
def test_molecule_scenario(scenario):
    env = molecule_env()
    molecule = os.path.join(BIN, "molecule")
    start = time.monotonic()
    proc = subprocess.run([molecule, "test", "-s", scenario], cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=2400, check=False)
    elapsed = time.monotonic() - start
    try:
        assert_molecule_test_passed(proc.returncode, proc.stdout)
    finally:
        if proc.returncode != 0:
            subprocess.run([molecule, "destroy", "-s", scenario], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=600, check=False)
    print("molecule test -s %s: %.0f s" % (scenario, elapsed))
